"""What every session of a datagram listener has: its sender, counters, replies held back.

The listener (:mod:`.datagram_listener`) keeps one per sender; each relay's subclass adds its
way to the target (a datagram socket, :mod:`.datagram`; a stream, :mod:`.tunnel`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Loop

__all__ = ["Key", "Upstream"]

Key = Any  # a sender's sockaddr (tuple, str or bytes), or None for an unnamed unix sender


class Upstream:
    """What every datagram session has: its sender, counters, a reply waiting for the listener."""

    __slots__ = (
        "datagrams_to_client",
        "datagrams_to_target",
        "gso",
        "held",
        "id",
        "label",
        "peer",
        "pending_reply",
        "started",
        "to_client",
        "to_target",
    )

    def __init__(self, session_id: int, peer: Key, label: str) -> None:
        self.id = session_id
        self.peer = peer
        self.label = label
        self.started = time.monotonic()
        self.to_target = self.to_client = 0
        self.datagrams_to_target = self.datagrams_to_client = 0
        #: replies the listener could not send yet (EAGAIN), as (data, segment size, datagrams);
        #: the upstream is not read meanwhile
        self.pending_reply: tuple[bytes, int, int] | None = None
        #: a reply read from the upstream after the pending one was refused: it goes next
        self.held: bytes | None = None
        #: runs of datagrams may go to the target in one send (UDP GSO, until the kernel refuses)
        self.gso = False

    def close(self, loop: Loop) -> None:
        raise NotImplementedError

    def resume(self, relay: Any) -> None:
        """The pending reply went out: read the upstream again."""
        raise NotImplementedError

    def undelivered(self) -> int:
        """Datagrams this session holds that will never be delivered now that it ends (replies
        waiting for the listener): the relay counts them as dropped."""
        lost = self.pending_reply[2] if self.pending_reply is not None else 0
        return lost + (1 if self.held is not None else 0)

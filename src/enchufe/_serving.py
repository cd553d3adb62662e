"""What the sync and async serve loops share: statistics, logging, and the fd-exhaustion pause."""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass

from .address import SocketAddress
from .errors import NetworkError

log = logging.getLogger("enchufe.serve")

#: Connections one server handles at once unless told otherwise.  Beyond it, new clients are
#: closed at once (and counted) rather than queued: a client that waits silently looks hung.
DEFAULT_MAX_CONNECTIONS = 1024

#: How long to leave handlers to finish after a shutdown request, unless told otherwise.
DEFAULT_DRAIN_TIMEOUT = 10.0

#: After accept() fails for lack of descriptors or memory, pause before trying again, doubling
#: up to the maximum: the listener stays readable, so retrying at once would spin the CPU.
EXHAUSTION_PAUSE = 0.05
EXHAUSTION_PAUSE_MAX = 1.0

#: How long a datagram server waits for a unix peer whose queue is full before dropping the
#: datagram (as UDP would have dropped it).  A peer that makes us wait this long in vain has
#: stopped reading: until it takes a datagram again, the next ones for it are dropped at once,
#: so it costs the server one such wait, not one per datagram.
DELIVER_PATIENCE = 1.0

#: One unix peer may make a server wait for room in its queue at most :data:`DELIVER_PATIENCE`
#: per this many seconds, waits that ended with room included: a peer that lets its queue fill
#: and takes one datagram just before the patience runs out, again and again, would otherwise
#: hold every other peer's replies up for as long as it likes.
PATIENCE_WINDOW = 10.0

#: Peers remembered as not reading, per socket, before the memory is cleared.
MAX_STALLED_PEERS = 4096

_EXHAUSTION = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def is_exhaustion(exc: NetworkError) -> bool:
    """accept() failed because the process or system ran out of descriptors or memory."""
    return exc.errno in _EXHAUSTION


class StalledPeers:
    """The unix peers of one datagram socket that made a server wait in vain for room in their
    queue (see :data:`DELIVER_PATIENCE`): ``peer in stalled`` until they take a datagram again.

    At most :data:`MAX_STALLED_PEERS` are remembered; past that the memory is cleared, so a
    server that many peers stall stays small, and a peer forgotten costs one more wait.
    """

    __slots__ = ("_peers", "_waits")

    def __init__(self) -> None:
        self._peers: set[SocketAddress] = set()
        #: peer → [when its current PATIENCE_WINDOW began, seconds waited for it in it]
        self._waits: dict[SocketAddress, list[float]] = {}

    def patience(self, peer: SocketAddress, now: float) -> float:
        """How long ``peer``'s full queue may be waited for now: what is left of its
        :data:`DELIVER_PATIENCE` in its current :data:`PATIENCE_WINDOW` (0: drop at once)."""
        window = self._waits.get(peer)
        if window is None or now - window[0] >= PATIENCE_WINDOW:
            return DELIVER_PATIENCE
        return max(0.0, DELIVER_PATIENCE - window[1])

    def waited(self, peer: SocketAddress, started: float, seconds: float) -> None:
        """Count a wait for room in ``peer``'s queue that began at ``started``, whether it ended
        with room or in vain."""
        window = self._waits.get(peer)
        if window is None or started - window[0] >= PATIENCE_WINDOW:
            if len(self._waits) >= MAX_STALLED_PEERS:
                self._waits.clear()
            self._waits[peer] = [started, seconds]
        else:
            window[1] += seconds

    def __contains__(self, peer: SocketAddress) -> bool:
        return peer in self._peers

    def __len__(self) -> int:
        return len(self._peers)

    def recovered(self, peer: SocketAddress) -> None:
        """``peer`` took a datagram: the next ones for it wait for room again."""
        self._peers.discard(peer)

    def gave_up(self, peer: SocketAddress) -> None:
        """``peer`` made us wait :data:`DELIVER_PATIENCE` in vain: drop its next datagrams at once."""
        if len(self._peers) >= MAX_STALLED_PEERS:
            self._peers.clear()
        self._peers.add(peer)


class Refusals:
    """Says that clients were turned away for want of room, at most once per :attr:`interval`
    seconds, counting the ones not shown: each is worth a warning (nobody else would know),
    but a flood of them must not flood the log."""

    interval = 1.0

    def __init__(self) -> None:
        self._next = float("-inf")
        self._unsaid = 0

    def refused(self, peer: str, reason: str, now: float) -> None:
        if now < self._next:
            self._unsaid += 1
            return
        more = f" (and {self._unsaid} more since the last such line)" if self._unsaid else ""
        log.warning("refused %s: %s%s", peer, reason, more)
        self._next = now + self.interval
        self._unsaid = 0


@dataclass
class ServeStats:
    """What a server did; ``cut`` counts connections closed by shutdown before they finished."""

    accepted: int = 0
    refused: int = 0
    active: int = 0
    completed: int = 0
    idle_closed: int = 0
    failed: int = 0
    cut: int = 0
    exhaustion_pauses: int = 0
    datagrams: int = 0
    truncated: int = 0
    #: Replies dropped because a unix peer did not read (its queue stayed full).
    dropped: int = 0

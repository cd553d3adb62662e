"""``--send-proxy v2`` on a datagram relay: every datagram to the target starts with a PROXY
protocol version 2 header naming its sender (HAProxy's spec: over UDP, one header per datagram,
the family UDP4, UDP6 or UNIXGRAM), and the address it sent to.

The choice is made once per relay (:mod:`.server` makes a :class:`ProxiedDatagramRelay` only
with ``--send-proxy``): a relay without it keeps its batched paths and never looks at this
module.  This one takes the general paths, one datagram at a time (no GSO runs, no inline
request/response path): each datagram is copied behind its header.  Replies go back untouched.
The header is made once per session (a session is one sender); ``to_target`` counts the
client's bytes only, except for a datagram that had to wait for the target's socket (counted
with its header when it goes).
"""

from __future__ import annotations

import socket
from typing import Any

from ..address import SocketAddress, from_sockaddr
from ..proxyproto import encode_v2
from ..sessions import Session
from .datagram import DatagramRelay, DatagramUpstream
from .datagram_listener import DatagramListener, Key, Upstream

__all__ = ["ProxiedDatagramRelay", "proxy_header_v2", "sender_address"]


def sender_address(listener: socket.socket, peer: Key) -> SocketAddress | None:
    """A session's sender (its sockaddr, ``peer``) as an address; ``None`` for an unnamed unix one."""
    return from_sockaddr(listener.family, socket.SOCK_DGRAM, peer) if peer else None


def proxy_header_v2(listener: socket.socket, client: SocketAddress | None) -> bytes:
    """The PROXY v2 header of a datagram session for ``client`` (``None``: an unnamed unix
    sender), which sent to the listening address."""
    return encode_v2(client, from_sockaddr(listener.family, socket.SOCK_DGRAM, listener.getsockname()))


class ProxiedDatagramRelay(DatagramRelay):
    """Datagram LISTEN → datagram TARGET, each datagram behind a PROXY v2 header (see the module)."""

    runs_above = 1 << 30  # never runs: one datagram at a time, each behind its header

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        listener = self.listener
        #: where the senders sent to: the listening address
        self._local = from_sockaddr(listener.family, socket.SOCK_DGRAM, listener.getsockname())
        #: a session's id → its header
        self._headers: dict[int, bytes] = {}

    def _header(self, session: Upstream) -> bytes:
        header = self._headers.get(session.id)
        if header is None:
            header = self._headers[session.id] = encode_v2(self._client(session), self._local)
        return header

    def _client(self, session: Upstream) -> SocketAddress | None:
        """The client a session's header names: its sender (hook: a header's client)."""
        return sender_address(self.listener, session.peer)

    def _ended(self, entry: Session[Key, Upstream], why: str) -> None:
        self._headers.pop(entry.state.id, None)
        super()._ended(entry, why)

    def _on_listener(self, events: int) -> None:
        DatagramListener._on_listener(self, events)  # the general path: no inline one

    def _forward(self, session: Upstream, data: memoryview, raw: bool) -> None:
        assert isinstance(session, DatagramUpstream)
        header = self._header(session)
        datagram = header + data
        if session.pending:
            session.pending.append((datagram, len(datagram), 1))
            return
        stats = self.stats
        before = stats.datagrams_to_target
        self._send_up(session, datagram, len(datagram), 1)
        if stats.datagrams_to_target != before:  # sent now: the header is not the client's
            stats.to_target -= len(header)
            session.to_target -= len(header)

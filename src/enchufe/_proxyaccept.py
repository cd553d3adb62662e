"""``accept_proxy``: what a server behind a load balancer does with the PROXY protocol header at
the start of a stream connection (whom it trusts: :mod:`enchufe._proxypolicy`): how it reads one
without taking a byte of payload (:func:`step` when the socket is readable, for any loop;
:func:`take_header_blocking` in a thread), and what the connection's addresses become.

The header is read before anything else (before a TLS handshake, before the handler), from
the socket's receive queue with ``MSG_PEEK``: only the bytes that are header are taken, so the
payload stays in the kernel for whoever reads next (the TLS layer, an ``exec:`` child).  A
peer that is not a trusted proxy, a header missing, malformed, oversized, or not complete
within the timeout: the connection is closed, one log line says why, the server goes on.
"""

from __future__ import annotations

import math
import select
import socket
import time
from typing import Any

from ._proxypolicy import ProxyPolicy, ProxyRefused, refusal_line
from .address import InetAddress
from .errors import reason
from .i18n import _
from .proxyproto import NeedMore, ProxyHeader, Refused, Result, parse

#: A header read's result until there is one (immutable: one for every read).
_NEED_MORE = NeedMore()


class HeaderRead:
    """One connection's header being read: peek at what is queued, take only the header.

    The caller loops: wait until readable (up to the policy's timeout), ``peek`` up to
    :meth:`wanted` bytes with ``MSG_PEEK``, give them to :meth:`peeked`, then ``recv`` exactly
    the count it returns (bytes that are surely header) and give those to :meth:`took`; until
    :attr:`result` is no longer :class:`NeedMore`.
    """

    def __init__(self, policy: ProxyPolicy) -> None:
        self._policy = policy
        self._taken = bytearray()
        self.result: Result = _NEED_MORE
        self.bound = policy.bound

    def wanted(self) -> int:
        """How many bytes to peek at: never more than a header may have."""
        return max(1, self.bound - len(self._taken))

    def peeked(self, data: bytes) -> int:
        """What is queued now (``b""``: the peer closed): how many of those bytes to take."""
        if not data:
            self.result = Refused(
                _("closed before its PROXY header was complete")
                if self._taken
                else _("closed without sending a PROXY header")
            )
            return 0
        taken = self._taken
        self.result = result = parse(
            bytes(taken) + data if taken else data, max_v2_length=self._policy.max_v2_length
        )
        if isinstance(result, ProxyHeader):
            return result.consumed - len(taken)
        if isinstance(result, NeedMore):
            return len(data)  # all of it is header, and more is to come
        return 0

    def took(self, data: bytes) -> None:
        self._taken += data

    def timed_out(self) -> Refused:
        seconds = f"{self._policy.timeout:g}"
        if self._taken:
            line = _("no complete PROXY header within {seconds} s ({size} bytes of one came)")
        else:
            line = _("no complete PROXY header within {seconds} s")
        self.result = Refused(line.format(seconds=seconds, size=len(self._taken)))
        return self.result


def check_peer(conn: Any, policy: ProxyPolicy) -> HeaderRead:
    """A header read for ``conn``; ProxyRefused if its peer may not send one."""
    reason = policy.untrusted(conn.peer_address)
    if reason is not None:
        raise ProxyRefused(refusal_line(conn.peer_address, reason))
    return HeaderRead(policy)


def step(sock: socket.socket, read: HeaderRead) -> None:
    """The socket is readable: peek, and take what is surely header (see :class:`HeaderRead`).
    ``BlockingIOError`` goes through (the asyncio side waits again)."""
    try:
        # The first peek (most often the only one) wants the whole bound: no need to ask.
        take = read.peeked(sock.recv(read.wanted() if read._taken else read.bound, socket.MSG_PEEK))
        while take > 0:
            chunk = sock.recv(take)  # queued already: this neither waits nor comes up short
            if not chunk:
                break
            read._taken += chunk
            take -= len(chunk)
    except BlockingIOError:
        raise
    except OSError as exc:
        read.result = _failed(exc)


def take_first(sock: socket.socket, policy: ProxyPolicy) -> tuple[Result, bytes]:
    """A client's first bytes, read (not peeked) in one call, for a reader that passes on
    whatever follows the header itself (the relay writes it to the target first): a
    :class:`~enchufe.proxyproto.ProxyHeader` and the payload that came with it; a
    :class:`~enchufe.proxyproto.Refused` (the peer closed, failed, or sent no valid header);
    or :class:`~enchufe.proxyproto.NeedMore` and the bytes taken, all of them header (``b""``
    when nothing had come: go on with a :class:`HeaderRead`, given them with :meth:`~HeaderRead.took`)."""
    try:
        data = sock.recv(policy.bound)
    except BlockingIOError:
        return _NEED_MORE, b""
    except OSError as exc:
        return _failed(exc), b""
    if not data:
        return Refused(_("closed without sending a PROXY header")), b""
    result = parse(data, max_v2_length=policy.max_v2_length)
    if isinstance(result, ProxyHeader):
        return result, data[result.consumed :]
    return result, data if isinstance(result, NeedMore) else b""


def _failed(exc: OSError) -> Refused:
    return Refused(_("the connection failed during its PROXY header: {reason}").format(reason=reason(exc)))


def take_header_blocking(conn: Any, policy: ProxyPolicy) -> None:
    """Read ``conn``'s PROXY protocol header in this thread, waiting up to ``policy.timeout``
    (the sync servers' and ``listen``'s; asyncio has its own): then ``conn.peer_address`` is the
    client it names and ``conn.proxy_address`` the proxy.  :class:`ProxyRefused` (its message
    the log line) for a peer that is not a trusted proxy, and for a header missing, malformed,
    oversized or late; no payload byte is taken either way."""
    read = check_peer(conn, policy)
    deadline = time.monotonic() + policy.timeout
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    while isinstance(read.result, NeedMore):
        if not poller.poll(max(0, math.ceil((deadline - time.monotonic()) * 1000))):
            read.timed_out()
            break
        step(conn.socket, read)
    settle(conn, read)


def settle(conn: Any, read: HeaderRead) -> ProxyHeader:
    """The end of a header read: ``conn`` takes the header's addresses (see :func:`adopt`), or
    ProxyRefused with the line that says why."""
    if isinstance(read.result, ProxyHeader):
        adopt(conn, read.result)
        return read.result
    reason = read.result.reason if isinstance(read.result, Refused) else _("no PROXY header")
    raise ProxyRefused(refusal_line(conn.peer_address, reason))


def adopt(conn: Any, header: ProxyHeader) -> None:
    """The header's client becomes ``conn.peer_address`` (a LOCAL or UNKNOWN header keeps the
    connection's own); the proxy's address goes to ``conn.proxy_address``, the header to
    ``conn.proxy_header``."""
    conn.proxy_address = conn.peer_address
    conn.proxy_header = header
    if header.source is not None:
        source = header.source
        if isinstance(source, InetAddress) and source.transport != "tcp":
            source = InetAddress("tcp", source.host, source.port)
        conn.peer_address = source

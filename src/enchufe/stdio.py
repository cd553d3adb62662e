"""Standard input and output to a socket and back: the engine of ``listen``, ``connect``, ``send``.

A stream session pumps both directions in one thread with ``selectors``: reading stdin only
while nothing is waiting to be sent (backpressure), reading the socket whenever it has data so
that a peer that talks while we send never deadlocks against us.  Half-close is exact: stdin's
EOF becomes ``shutdown(SHUT_WR)`` and the socket is read on until the peer closes; the peer's
EOF ends the session once stdin is done too (or at once when stdin is a terminal, where no EOF
may ever come).
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import _calls
from ._buffer import DEFAULT_MAX_DATAGRAM
from .address import SocketAddress
from .errors import ConnectionReset, DatagramTruncated, TimedOut, translate
from .sync import Connection, DatagramSocket

__all__ = ["StreamResult", "pump_datagram", "pump_stream"]

#: Bytes moved per read from stdin or the socket: large enough to move bulk data with few
#: system calls, small enough that the one buffer we hold stays modest.
CHUNK = 65536


@dataclass
class StreamResult:
    """What a stream session moved: bytes from stdin to the peer and from the peer to stdout."""

    sent: int = 0
    received: int = 0
    peer_eof: bool = False
    stdin_eof: bool = False
    #: the session ended because nothing moved for ``idle_timeout`` seconds
    idle: bool = False


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def pump_stream(
    conn: Connection,
    *,
    stdin_fd: int | None = 0,
    stdout_fd: int = 1,
    stop_at_peer_eof: bool | None = None,
    idle_timeout: float | None = None,
    outgoing: Callable[[bytes], bytes] | None = None,
    on_data: Callable[[str, bytes], None] | None = None,
    result: StreamResult | None = None,
) -> StreamResult:
    """Copy ``stdin_fd`` → ``conn`` and ``conn`` → ``stdout_fd`` until both directions are done.

    ``stdin_fd=None`` means nothing to send: the write side is shut down at once.  When
    ``stop_at_peer_eof`` is true (default: stdin is a terminal) the session ends as soon as the
    peer closes.  Raises :class:`~enchufe.errors.ConnectionReset` if the peer resets.

    ``idle_timeout``: end the session (``result.idle``) once no byte has moved either way for
    that many seconds.  ``outgoing`` rewrites each stdin chunk before it is sent (it may keep
    state across chunks); ``on_data("out" | "in", chunk)`` sees every chunk sent or received.
    ``result``, when given, is filled as the session goes, so that a caller interrupted midway
    still knows what moved.
    """
    if result is None:
        result = StreamResult()
    if stop_at_peer_eof is None:
        stop_at_peer_eof = stdin_fd is not None and os.isatty(stdin_fd)
    sock = conn.socket
    where = str(conn.peer_address) if conn.peer_address else "the peer"
    pending = memoryview(b"")
    sel = selectors.PollSelector()  # poll, unlike epoll, accepts regular files and /dev/null
    sock_events = 0

    def want(events: int) -> None:
        nonlocal sock_events
        if events == sock_events:
            return
        if not sock_events:
            sel.register(sock, events)
        elif not events:
            sel.unregister(sock)
        else:
            sel.modify(sock, events)
        sock_events = events

    sock.setblocking(False)
    try:
        want(selectors.EVENT_READ)
        if stdin_fd is None:
            result.stdin_eof = True
            conn.shutdown_write()
        else:
            sel.register(stdin_fd, selectors.EVENT_READ)
        last_traffic = time.monotonic()
        while not (result.peer_eof and (result.stdin_eof or stop_at_peer_eof)):
            wait = None
            if idle_timeout is not None:
                wait = idle_timeout - (time.monotonic() - last_traffic)
                if wait <= 0:
                    result.idle = True
                    break
            events = sel.select(wait)
            if events:
                last_traffic = time.monotonic()
            for key, mask in events:
                if key.fileobj == stdin_fd:
                    assert stdin_fd is not None
                    data = _read_stdin(stdin_fd)
                    sel.unregister(stdin_fd)  # read more only once this is sent
                    if not data:
                        result.stdin_eof = True
                        conn.shutdown_write()
                        continue
                    if outgoing is not None:
                        data = outgoing(data)
                    if on_data is not None and data:
                        on_data("out", data)
                    if data:
                        pending = memoryview(data)
                        want(sock_events | selectors.EVENT_WRITE)
                    else:
                        sel.register(stdin_fd, selectors.EVENT_READ)
                    continue
                if mask & selectors.EVENT_WRITE:
                    try:
                        sent = _calls.send(sock, pending)
                    except BlockingIOError:
                        sent = 0
                    except OSError as exc:
                        raise translate(exc, f"send to {where}") from exc
                    result.sent += sent
                    pending = pending[sent:]
                    if not pending:
                        want(sock_events & ~selectors.EVENT_WRITE)
                        assert stdin_fd is not None
                        sel.register(stdin_fd, selectors.EVENT_READ)
                if mask & selectors.EVENT_READ:
                    try:
                        chunk = _calls.recv(sock, CHUNK)
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        raise translate(exc, f"receive from {where}") from exc
                    if chunk:
                        result.received += len(chunk)
                        if on_data is not None:
                            on_data("in", chunk)
                        _write_all(stdout_fd, chunk)
                    else:
                        # The peer half-closed; it may still read what stdin has left.
                        result.peer_eof = True
                        want(sock_events & ~selectors.EVENT_READ)
    finally:
        sel.close()
        with contextlib.suppress(OSError):
            sock.setblocking(True)
    return result


def _read_stdin(fd: int, size: int = CHUNK) -> bytes:
    try:
        return os.read(fd, size)
    except OSError as exc:
        if exc.errno in (errno.EIO, errno.EBADF):  # terminal gone, or stdin closed
            return b""
        raise


#: The largest payload one UDP datagram carries (65,535 less the IPv4 and UDP headers; IPv6's
#: header is not counted in its payload length).  A stdin read is sent as one datagram, so it
#: must not be larger; unix datagrams are limited only by the send buffer.
_MAX_UDP_PAYLOAD = {socket.AF_INET: 65507, socket.AF_INET6: 65527}

DatagramSink = Callable[[bytes, SocketAddress | None], None]
TruncationSink = Callable[[DatagramTruncated], None]


def pump_datagram(
    sock: DatagramSocket,
    on_datagram: DatagramSink,
    *,
    stdin_fd: int | None = 0,
    reply_to_last_sender: bool = False,
    linger: float | None = None,
    count: int | None = None,
    max_size: int = DEFAULT_MAX_DATAGRAM,
    on_truncated: TruncationSink | None = None,
    idle_timeout: float | None = None,
    outgoing: Callable[[bytes], bytes] | None = None,
    on_data: Callable[[str, bytes], None] | None = None,
) -> int:
    """Exchange datagrams between stdin, a datagram socket and ``on_datagram``.

    Each stdin read is sent as one datagram: to the connected peer, or with
    ``reply_to_last_sender`` to whoever sent the last datagram (stdin is not read before someone
    has).  Every datagram received is handed to ``on_datagram(payload, sender)``.  Ends after
    ``count`` datagrams, or, once stdin is done, when none has come for ``linger`` seconds
    (``None``: never), or when no datagram has moved either way for ``idle_timeout`` seconds.
    ``outgoing`` rewrites each stdin read before it is sent; ``on_data("out" | "in", payload)``
    sees every datagram sent or received.  Returns the number of datagrams received.
    """
    received = 0
    read_size = _MAX_UDP_PAYLOAD.get(sock.socket.family, CHUNK)
    last_sender: SocketAddress | None = None
    stdin_open = stdin_fd is not None
    sel = selectors.PollSelector()  # poll, unlike epoll, accepts regular files and /dev/null
    sel.register(sock.socket, selectors.EVENT_READ)
    if stdin_open and not reply_to_last_sender:
        assert stdin_fd is not None
        sel.register(stdin_fd, selectors.EVENT_READ)
    quiet_since = last_traffic = time.monotonic()
    try:
        while count is None or received < count:
            timeout = None
            if not stdin_open and linger is not None:
                timeout = linger - (time.monotonic() - quiet_since)
                if timeout <= 0:
                    break
            if idle_timeout is not None:
                idle_left = idle_timeout - (time.monotonic() - last_traffic)
                if idle_left <= 0:
                    break
                timeout = idle_left if timeout is None else min(timeout, idle_left)
            events = sel.select(timeout)
            if events:
                last_traffic = time.monotonic()
            for key, _mask in events:
                if key.fileobj is sock.socket:
                    try:
                        data, sender = sock.recvfrom(max_size)
                    except DatagramTruncated as exc:
                        if on_truncated is None:
                            raise
                        on_truncated(exc)
                        continue
                    received += 1
                    quiet_since = time.monotonic()
                    if on_data is not None:
                        on_data("in", data)
                    on_datagram(data, sender)
                    if reply_to_last_sender and sender is not None:
                        if last_sender is None and stdin_open:
                            assert stdin_fd is not None
                            sel.register(stdin_fd, selectors.EVENT_READ)
                        last_sender = sender
                    if count is not None and received >= count:
                        break
                else:
                    assert stdin_fd is not None
                    data = _read_stdin(stdin_fd, read_size)
                    if not data:
                        sel.unregister(stdin_fd)
                        stdin_open = False
                        quiet_since = time.monotonic()
                        continue
                    if outgoing is not None:
                        data = outgoing(data)
                    if on_data is not None:
                        on_data("out", data)
                    if reply_to_last_sender:
                        assert last_sender is not None
                        sock.sendto(data, last_sender)
                    else:
                        sock.send(data)
    finally:
        sel.close()
    return received


def drain_until_eof(conn: Connection, timeout: float, sink: Callable[[bytes], None] | None) -> bool:
    """Read until the peer closes, handing each chunk to ``sink``; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        conn.set_timeout(left)
        try:
            chunk = conn.recv(CHUNK)
        except TimedOut:
            return False
        except ConnectionReset:
            if sink is not None:
                raise  # the answer was cut short: not a clean end
            return True  # nothing was wanted from the peer; our data had been sent
        if not chunk:
            return True
        if sink is not None:
            sink(chunk)

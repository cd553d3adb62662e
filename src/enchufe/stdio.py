"""Standard input and output to a socket and back: the engine of ``listen``, ``connect``, ``send``.

A stream session pumps both directions in one thread with ``selectors``: reading stdin only
while nothing is waiting to be sent (backpressure), reading the socket whenever it has data so
that a peer that talks while we send never deadlocks against us.  Half-close is exact: stdin's
EOF becomes ``shutdown(SHUT_WR)`` and the socket is read on until the peer closes; the peer's
EOF ends the session once stdin is done too (or at once when stdin is a terminal, where no EOF
may ever come).  The policy (backpressure, half-close, the terminal's missing EOF, the idle
timeout, the ``--crlf`` and ``--hex`` hooks) is :mod:`enchufe._halfclose`'s, shared with
``listen --exec``; this module only waits and does the I/O.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from . import _calls, _wakeup
from ._buffer import DEFAULT_MAX_DATAGRAM
from ._halfclose import Flow, HalfClose
from ._notices import notices
from .address import SocketAddress
from .errors import DatagramTruncated, translate
from .i18n import _
from .sync import Connection, DatagramSocket, TLSConnection

if TYPE_CHECKING:
    from ._proxypolicy import ProxyPolicy

__all__ = ["StreamResult", "pump_datagram", "pump_stream"]

#: Bytes moved per read from stdin or the socket of a datagram session (a stdin read is one
#: datagram).
CHUNK = 65536
#: Bytes moved per read from stdin or the socket of a stream session: large enough that bulk
#: data takes few system calls and few turns of this module's Python (64 KiB: a quarter of the
#: TLS client's CPU time was Python's), small enough that the one buffer held per direction
#: stays modest.
STREAM_CHUNK = 256 * 1024
#: Reads of a regular file on stdin sent on at once, without a wait between, before the loop
#: looks at the socket's other direction again (8 MiB).
PUSH_ROUNDS = 32


@dataclass
class StreamResult:
    """What a stream session moved: bytes from stdin to the peer and from the peer to stdout."""

    sent: int = 0
    received: int = 0
    peer_eof: bool = False
    stdin_eof: bool = False
    #: the session ended because nothing moved for ``idle_timeout`` seconds
    idle: bool = False


def _watch_signals(sel: selectors.BaseSelector) -> int | None:
    """Watch the signal wake-up pipe in ``sel``: a stop signal that lands just before the wait
    still ends it (see :mod:`enchufe._wakeup`).  The pipe's descriptor, or ``None``."""
    fd = _wakeup.signal_fd()
    if fd is not None:
        sel.register(fd, selectors.EVENT_READ)
    return fd


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
    copy = HalfClose(
        Flow("out", rewrite=outgoing, observe=on_data),
        Flow("in", observe=on_data),
        stop_at_incoming_eof=stop_at_peer_eof,
        idle_timeout=idle_timeout,
    )
    if stdin_fd is None:
        copy.outgoing.read(b"")  # nothing to send: the write side is shut down at once
    _StreamPump(conn, copy, stdin_fd, stdout_fd, result).run()
    return result


class _StreamPump:
    """The selectors driver of a :class:`~enchufe._halfclose.HalfClose` between stdio and a
    socket: stdin → socket with backpressure, socket → stdout as it comes (written at once, so
    that a peer that talks while we send never deadlocks against us)."""

    def __init__(
        self, conn: Connection, copy: HalfClose, stdin_fd: int | None, stdout_fd: int, result: StreamResult
    ) -> None:
        self.conn = conn
        self.sock = conn.socket
        self.where = str(conn.peer_address) if conn.peer_address else _("the peer")
        self.copy = copy
        self.stdin_fd = stdin_fd
        #: A regular file is always readable: no wait is needed before reading it again.
        self.stdin_file = stdin_fd is not None and _regular(stdin_fd)
        self.stdout_fd = stdout_fd
        self.result = result
        #: where TLS plaintext is decrypted, made at the first read of a TLS connection
        self.received_into: memoryview | None = None
        self.sel = selectors.PollSelector()  # poll, unlike epoll, accepts regular files and /dev/null
        self.interest: dict[int, int] = {}
        self.wake = _watch_signals(self.sel)

    def run(self) -> None:
        copy = self.copy
        self.sock.setblocking(False)
        try:
            while True:
                self._pass_eofs()
                if copy.over:
                    break
                wait = copy.wait_for()
                if copy.idle:
                    self.result.idle = True
                    break
                self._want()
                events = self.sel.select(wait)
                if events:
                    copy.touch()
                for key, mask in events:
                    if key.fd == self.wake:
                        _wakeup.drain()  # a signal: its handler runs now, between two bytecodes
                    else:
                        self._ready(key.fd, mask)
        finally:
            self.sel.close()
            with contextlib.suppress(OSError):
                self.sock.setblocking(True)

    def _pass_eofs(self) -> None:
        if self.copy.outgoing.wants_shutdown:
            self.result.stdin_eof = True
            self.copy.outgoing.shutdown()
            if isinstance(self.conn, TLSConnection):
                # close_notify; what the kernel cannot take now goes when it is writable.
                self.conn.shutdown_write_nowait()
            else:
                with contextlib.suppress(BlockingIOError):
                    self.conn.shutdown_write()
        if self.copy.incoming.wants_shutdown:
            # The peer half-closed; it may still read what stdin has left.
            self.result.peer_eof = True
            self.copy.incoming.shutdown()

    def _want(self) -> None:
        """Register what the flows want now: stdin read, socket read and write."""
        out, in_ = self.copy.outgoing, self.copy.incoming
        owed = isinstance(self.conn, TLSConnection) and self.conn.wants_write
        sock_events = (selectors.EVENT_READ if in_.wants_read else 0) | (
            selectors.EVENT_WRITE if out.wants_write or owed else 0
        )
        self._set(self.sock.fileno(), sock_events)
        if self.stdin_fd is not None:
            self._set(self.stdin_fd, selectors.EVENT_READ if out.wants_read else 0)

    def _set(self, fd: int, events: int) -> None:
        had = self.interest.get(fd, 0)
        if events == had:
            return
        if not had:
            self.sel.register(fd, events)
        elif not events:
            self.sel.unregister(fd)
        else:
            self.sel.modify(fd, events)
        self.interest[fd] = events

    def _ready(self, fd: int, mask: int) -> None:
        if fd == self.stdin_fd:
            if self.copy.outgoing.wants_read:
                self.copy.outgoing.read(_read_stdin(fd, STREAM_CHUNK))
                self._push()
            return
        if mask & selectors.EVENT_WRITE:
            if self.copy.outgoing.wants_write:
                self._push()
            elif isinstance(self.conn, TLSConnection) and self.conn.wants_write:
                self.conn.flush_nowait()  # the close_notify the kernel had no room for
        if mask & selectors.EVENT_READ and self.copy.incoming.wants_read:
            if isinstance(self.conn, TLSConnection):
                self._receive_tls()
            else:
                self._receive()

    def _push(self) -> None:
        """stdin → socket while neither has to be waited for: what was read is sent at once
        (the socket's room is found by trying), and a regular file on stdin is read again as
        soon as all of it went, up to :data:`PUSH_ROUNDS` reads.  The wait comes when the
        kernel takes only part, or stdin is a pipe or terminal (readable only when poll says)."""
        out, fd = self.copy.outgoing, self.stdin_fd
        for _round in range(PUSH_ROUNDS):
            if out.wants_write:
                self._send()
                if out.wants_write:
                    return
            if fd is None or not (self.stdin_file and out.wants_read):
                return
            out.read(_read_stdin(fd, STREAM_CHUNK))

    def _send(self) -> None:
        try:
            if isinstance(self.conn, TLSConnection):
                sent = self.conn.send_nowait(memoryview(self.copy.outgoing.pending))
            else:
                sent = _calls.send(self.sock, self.copy.outgoing.pending)
        except BlockingIOError:
            return
        except OSError as exc:
            raise translate(exc, f"send to {self.where}") from exc
        self.copy.outgoing.wrote(sent)
        self.result.sent += sent

    def _receive(self) -> None:
        try:
            chunk = _calls.recv(self.sock, STREAM_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            raise translate(exc, f"receive from {self.where}") from exc
        self._received(chunk)

    def _receive_tls(self) -> None:
        """Every plaintext byte there is now: one read of the socket may bring more records than
        one chunk, and what stays in the TLS layer would never make the socket readable again.
        ``0`` is the peer's close_notify; a close without one raises TLSTruncated.  OpenSSL
        decrypts into this pump's own buffer, written out from there before the next read."""
        assert isinstance(self.conn, TLSConnection)
        if self.received_into is None:
            self.received_into = memoryview(bytearray(STREAM_CHUNK))
        buffer = self.received_into
        while self.copy.incoming.wants_read:
            got = self.conn.recv_into_nowait(buffer)
            if got is None:
                return
            self._received(buffer[:got])
            if not got:
                return

    def _received(self, chunk: bytes | memoryview) -> None:
        flow = self.copy.incoming
        flow.read(chunk)
        if chunk:
            self.result.received += len(chunk)
            _write_all(self.stdout_fd, flow.pending)
            flow.wrote(len(flow.pending))


def _regular(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def _read_stdin(fd: int, size: int = CHUNK) -> bytes:
    try:
        return os.read(fd, size)
    except OSError as exc:
        if exc.errno in (errno.EIO, errno.EBADF):  # terminal gone, or stdin closed
            return b""
        raise


#: The largest payload one UDP datagram carries (65,535 less the IPv4 and UDP headers; IPv6's is
#: not counted), which a stdin read, sent as one datagram, must not exceed (unix: the send buffer).
_MAX_UDP_PAYLOAD = {socket.AF_INET: 65507, socket.AF_INET6: 65527}


class DatagramSink(Protocol):
    """Each datagram received: payload, sender (with ``proxy``: the client), ``via`` the proxy."""

    def __call__(
        self, data: bytes, sender: SocketAddress | None, /, via: SocketAddress | None = None
    ) -> None: ...


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
    proxy: ProxyPolicy | None = None,
) -> int:
    """Exchange datagrams between stdin, a datagram socket and ``on_datagram``.

    Each stdin read is sent as one datagram: to the connected peer, or with
    ``reply_to_last_sender`` to whoever sent the last datagram (stdin is not read before someone
    has).  Every datagram received is handed to ``on_datagram(payload, sender)``.  Ends after
    ``count`` datagrams, or, once stdin is done, when none has come for ``linger`` seconds
    (``None``: never), or when no datagram has moved either way for ``idle_timeout`` seconds.
    ``outgoing`` rewrites each stdin read before it is sent; ``on_data("out" | "in", payload)``
    sees every datagram sent or received.  Returns the number of datagrams received.

    ``proxy`` (``--accept-proxy``): each datagram's PROXY v2 header is taken off, ``on_datagram``
    gets the client it names and the proxy (``via``), replies go to the proxy; a datagram without
    one, or not from a trusted proxy, is dropped (logged, not counted; never the one answered).
    """
    copy = HalfClose(Flow("out", rewrite=outgoing, observe=on_data), Flow("in"), idle_timeout=idle_timeout)
    pump = _DatagramPump(sock, on_datagram, copy, stdin_fd, reply_to_last_sender, max_size)
    pump.on_truncated, pump.on_data, pump.proxy = on_truncated, on_data, proxy
    try:
        with contextlib.closing(pump):
            pump.run(count, linger)
    finally:
        if proxy is not None:  # the count of drop lines held back, said at the end
            notices.flush()
    return pump.received


class _DatagramPump:
    """The selectors loop of :func:`pump_datagram`: stdin reads out as datagrams, datagrams in
    to a sink; stdin is read whenever it is readable (a datagram is sent at once, whole)."""

    def __init__(
        self,
        sock: DatagramSocket,
        on_datagram: DatagramSink,
        copy: HalfClose,
        stdin_fd: int | None,
        reply_to_last_sender: bool,
        max_size: int,
    ) -> None:
        self.sock = sock
        self.on_datagram = on_datagram
        self.stdin_fd = stdin_fd
        self.reply_to_last_sender = reply_to_last_sender
        self.max_size = max_size
        self.copy = copy
        self.outgoing = copy.outgoing
        self.on_truncated: TruncationSink | None = None
        self.on_data: Callable[[str, bytes], None] | None = None
        self.proxy: ProxyPolicy | None = None
        self.read_size = _MAX_UDP_PAYLOAD.get(sock.socket.family, CHUNK)
        self.last_sender: SocketAddress | None = None
        self.received = 0
        self.quiet_since = time.monotonic()
        self.sel = selectors.PollSelector()  # poll, unlike epoll, accepts regular files and /dev/null
        self.sel.register(sock.socket, selectors.EVENT_READ)
        self.wake = _watch_signals(self.sel)
        if stdin_fd is None:
            self.outgoing.eof = True
        elif not reply_to_last_sender:  # else: once someone has sent a datagram
            self.sel.register(stdin_fd, selectors.EVENT_READ)

    def close(self) -> None:
        self.sel.close()

    def run(self, count: int | None, linger: float | None) -> None:
        while count is None or self.received < count:
            timeout = self._wait_for(linger)
            if timeout is not None and timeout <= 0:
                return
            events = self.sel.select(timeout)
            if events:
                self.copy.touch()
            for key, _mask in events:
                if key.fd == self.wake:
                    _wakeup.drain()  # a signal: its handler runs now, between two bytecodes
                elif key.fileobj is not self.sock.socket:
                    self._from_stdin()
                elif self._receive() and count is not None and self.received >= count:
                    return

    def _wait_for(self, linger: float | None) -> float | None:
        """Seconds left before the linger after stdin's EOF or the idle timeout ends the
        exchange, whichever comes first (``None``: no limit; 0 or less: over)."""
        left = self.copy.wait_for()
        if self.outgoing.eof and linger is not None:
            lingering = linger - (time.monotonic() - self.quiet_since)
            left = lingering if left is None else min(left, lingering)
        return left

    def _receive(self) -> bool:
        """One datagram in; False if it was truncated and reported, or dropped over its PROXY
        header (neither counted)."""
        try:
            data, sender = self.sock.recvfrom(self.max_size)
        except DatagramTruncated as exc:
            if self.on_truncated is None:
                raise
            self.on_truncated(exc)
            return False
        client = sender
        if self.proxy is not None:
            from ._proxypolicy import datagram_header  # here: only behind a proxy

            header = datagram_header(self.proxy, sender, data)
            if header is None:  # dropped, and said
                return False
            data, client = data[header.consumed :], header.source or sender
        self.received += 1
        self.quiet_since = time.monotonic()
        if self.on_data is not None:
            self.on_data("in", data)
        self.on_datagram(data, client, via=None if self.proxy is None else sender)
        if self.reply_to_last_sender and sender is not None:  # behind a proxy: the proxy
            if self.last_sender is None and not self.outgoing.eof:
                assert self.stdin_fd is not None
                self.sel.register(self.stdin_fd, selectors.EVENT_READ)
            self.last_sender = sender
        return True

    def _from_stdin(self) -> None:
        assert self.stdin_fd is not None
        flow = self.outgoing
        flow.read(_read_stdin(self.stdin_fd, self.read_size))
        if flow.eof:
            self.sel.unregister(self.stdin_fd)
            self.quiet_since = time.monotonic()
        elif flow.pending:
            datagram = bytes(flow.pending)
            if self.reply_to_last_sender:
                assert self.last_sender is not None
                self.sock.sendto(datagram, self.last_sender)
            else:
                self.sock.send(datagram)
            flow.wrote(len(datagram))

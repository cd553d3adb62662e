"""Blocking stream endpoints: :class:`Connection` and :class:`Listener` for tcp and unix alike."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from types import TracebackType

from .. import _calls, _ranges, _unixfiles, framing
from .._buffer import DEFAULT_MAX_UNTIL, DEFAULT_RECV_SIZE, MAX_RECV_CHUNK, ReceiveBuffer
from ..address import SocketAddress, from_sockaddr
from ..errors import ClosedError, ConnectionReset, IncompleteRead, translate

__all__ = ["Connection", "Listener"]


class Connection:
    """A connected stream socket: TCP over IPv4 or IPv6, or a unix stream socket.

    * ``recv`` returns ``b""`` if and only if the peer has closed its sending side (EOF).
    * ``send_all`` returns once the kernel has taken every byte (backpressure: nothing is
      buffered in Python); it raises :class:`~enchufe.errors.ConnectionReset` if the peer is gone.
    * ``shutdown_write`` sends EOF to the peer and keeps the receiving side open (half-close).
    * ``close`` releases the socket; it is idempotent.  Further use raises
      :class:`~enchufe.errors.ClosedError`.

    Operating-system errors surface as :class:`~enchufe.errors.NetworkError` subclasses.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._buffer = ReceiveBuffer()  # bytes read past a delimiter by recv_until/recv_exactly
        self._closed = False
        self._write_shut = False
        self.local_address: SocketAddress | None = _name(sock, sock.getsockname)
        self.peer_address: SocketAddress | None = _name(sock, sock.getpeername)

    # -- plumbing

    @property
    def socket(self) -> socket.socket:
        """The underlying socket, for options enchufe does not wrap."""
        return self._sock

    def fileno(self) -> int:
        return self._fd

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("this connection is closed")

    def _where(self) -> str:
        return str(self.peer_address) if self.peer_address else "the peer"

    def set_timeout(self, seconds: float | None) -> None:
        """Make ``recv``/``send_all`` raise :class:`~enchufe.errors.TimedOut` after ``seconds``."""
        self._check()
        self._sock.settimeout(_ranges.seconds(seconds, "timeout", optional=True))

    @property
    def peer_credentials(self) -> _calls.Credentials | None:
        """For unix sockets, the peer's pid, uid and gid (SO_PEERCRED); ``None`` for TCP."""
        self._check()
        if self._sock.family != socket.AF_UNIX:
            return None
        return _calls.peer_credentials(self._sock)

    # -- sending

    def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send every byte of ``data``, calling ``send()`` as often as the kernel needs."""
        self._check()
        if self._write_shut:
            raise ClosedError("cannot send: this side's write half was shut down (shutdown_write)")
        view = memoryview(data).cast("B")
        try:
            while view:
                sent = _calls.send(self._sock, view)
                view = view[sent:]
        except OSError as exc:
            raise translate(exc, f"send to {self._where()}") from exc

    def shutdown_write(self) -> None:
        """Half-close: the peer reads EOF; we can still receive what it sends."""
        self._check()
        self._write_shut = True
        try:
            _calls.shutdown(self._sock, socket.SHUT_WR)
        except OSError as exc:
            raise translate(exc, f"shut down the write side towards {self._where()}") from exc

    def send_message(self, message: bytes, *, max_size: int = framing.DEFAULT_MAX_MESSAGE_SIZE) -> None:
        """Send one length-prefixed message (see :mod:`enchufe.framing`)."""
        self.send_all(framing.encode(message, max_size=max_size))

    # -- receiving

    def _recv_raw(self, max_bytes: int) -> bytes:
        self._check()
        try:
            return _calls.recv(self._sock, max_bytes)
        except OSError as exc:
            raise translate(exc, f"receive from {self._where()}") from exc

    def recv(self, max_bytes: int = DEFAULT_RECV_SIZE) -> bytes:
        """Up to ``max_bytes`` bytes, as soon as some are there; ``b""`` at EOF."""
        self._check()
        # "Up to": a huge max_bytes (a length the peer announced) is read in bounded chunks,
        # never allocated at once.
        max_bytes = min(_ranges.integer(max_bytes, "max_bytes", 1), MAX_RECV_CHUNK)
        if len(self._buffer):
            return self._buffer.take_some(max_bytes)
        return self._recv_raw(max_bytes)

    def recv_exactly(self, size: int) -> bytes:
        """Exactly ``size`` bytes; :class:`~enchufe.errors.IncompleteRead` if EOF comes first."""
        _ranges.integer(size, "size", 0)
        while (data := self._buffer.take_exactly(size)) is None:
            want = min(max(size - len(self._buffer), DEFAULT_RECV_SIZE), MAX_RECV_CHUNK)
            chunk = self._recv_raw(want)
            if not chunk:
                raise self._buffer.incomplete(size, self._where())
            self._buffer.feed(chunk)
        return data

    def recv_until(self, delimiter: bytes = b"\n", *, max_bytes: int = DEFAULT_MAX_UNTIL) -> bytes:
        """Bytes up to and including ``delimiter``.

        At EOF, returns what is left without a delimiter (``b""`` when nothing is), like a file's
        ``readline``.  :class:`~enchufe.errors.ProtocolError` if ``max_bytes`` pass without one.
        """
        while (data := self._buffer.take_until(delimiter, max_bytes, self._where())) is None:
            chunk = self._recv_raw(DEFAULT_RECV_SIZE)
            if not chunk:
                return self._buffer.take_rest()
            self._buffer.feed(chunk)
        return data

    def recv_message(self, *, max_size: int = framing.DEFAULT_MAX_MESSAGE_SIZE) -> bytes | None:
        """One length-prefixed message, or ``None`` at a clean EOF between messages.

        EOF inside a message raises :class:`~enchufe.errors.IncompleteRead`; an announced length
        above ``max_size`` raises :class:`~enchufe.errors.ProtocolError` before reading it.
        """
        framing._check_max_size(max_size)  # before waiting for a header
        try:
            header = self.recv_exactly(framing.HEADER_SIZE)
        except IncompleteRead as exc:
            if not exc.partial:
                return None
            raise
        return self.recv_exactly(framing.parse_header(header, max_size=max_size))

    # -- closing

    def close(self) -> None:
        """Close the socket.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            _calls.close(self._sock)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd {self._fd}"
        return f"<Connection {self.local_address} ↔ {self.peer_address} {state}>"


class Listener:
    """A passive stream socket.  ``accept()`` returns the next :class:`Connection`.

    Iterating yields connections until the listener is closed.  ``address`` is the real bound
    address (port 0 resolved).  ``close()`` may be called from another thread to stop a blocked
    ``accept()``, which then raises :class:`~enchufe.errors.ClosedError`.  A unix listener
    removes its socket file on close, if the file is still its own.
    """

    def __init__(
        self, sock: socket.socket, address: SocketAddress, owned: _unixfiles.SocketFile | None
    ) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._owned = owned
        self._closed = False
        self.address = address

    @property
    def socket(self) -> socket.socket:
        return self._sock

    def fileno(self) -> int:
        return self._fd

    def accept(self) -> Connection:
        """Wait for the next client and return its connection."""
        if self._closed:
            raise ClosedError(f"the listener on {self.address} is closed")
        try:
            conn, _peer = _calls.accept(self._sock)
        except OSError as exc:
            if self._closed:
                raise ClosedError(f"the listener on {self.address} was closed") from exc
            if exc.errno in _calls.ACCEPT_CLIENT_ERRORS:  # that client's failure, not ours
                raise ConnectionReset(
                    f"cannot accept on {self.address}: the client's connection failed before it "
                    f"was accepted ({(exc.strerror or str(exc)).lower()})",
                    errno=exc.errno,
                    action="accept",
                ) from exc
            raise translate(exc, f"accept on {self.address}") from exc
        try:
            return Connection(conn)
        except OSError as exc:  # ENOTCONN: the client reset before it was accepted
            conn.close()
            raise ConnectionReset(
                f"cannot accept on {self.address}: the client left before it was accepted",
                errno=exc.errno,
                action="accept",
            ) from exc

    def __iter__(self) -> Iterator[Connection]:
        while True:
            try:
                yield self.accept()
            except ClosedError:
                return
            except ConnectionReset:
                continue  # ECONNABORTED: that client left while queued; the next may come

    def close(self) -> None:
        """Stop listening, wake a blocked ``accept()``, remove our socket file.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        # close() alone does not wake a thread blocked in accept() on Linux; shutdown() does.
        with contextlib.suppress(OSError):
            _calls.shutdown(self._sock, socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            _calls.close(self._sock)
        if self._owned is not None:
            self._owned.release()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Listener:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Listener {self.address}{' closed' if self._closed else ''}>"


def _name(sock: socket.socket, getter: object) -> SocketAddress | None:
    assert callable(getter)
    return from_sockaddr(sock.family, sock.type, getter())

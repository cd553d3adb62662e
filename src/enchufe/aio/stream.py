"""Async stream endpoints: :class:`Connection` and :class:`Listener`, mirroring ``enchufe.sync``."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from types import TracebackType

from .. import _calls, _ranges, _unixfiles, framing
from .._buffer import DEFAULT_MAX_UNTIL, DEFAULT_RECV_SIZE, MAX_RECV_CHUNK, ReceiveBuffer
from ..address import SocketAddress, from_sockaddr
from ..errors import ClosedError, ConnectionReset, IncompleteRead, translate
from ._wait import Readiness

__all__ = ["Connection", "Listener"]


class Connection:
    """A connected stream socket for asyncio: TCP over IPv4/IPv6 or a unix stream socket.

    * ``await recv()`` returns ``b""`` if and only if the peer closed its sending side (EOF).
    * ``await send_all(data)`` returns once the kernel took every byte: there is no write
      buffer in Python, so a slow reader slows the writer down (backpressure).
    * ``await shutdown_write()`` sends EOF and keeps receiving (half-close).
    * ``await aclose()`` closes; idempotent.  Use after close raises
      :class:`~enchufe.errors.ClosedError`.

    Cancellation: a cancelled ``recv`` loses nothing (no bytes were taken); a cancelled
    ``send_all`` may have sent part of the data, so the connection should then be closed.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._buffer = ReceiveBuffer()
        self._ready = Readiness(sock)
        self._closed = False
        self._write_shut = False
        self.local_address: SocketAddress | None = from_sockaddr(sock.family, sock.type, sock.getsockname())
        self.peer_address: SocketAddress | None = from_sockaddr(sock.family, sock.type, sock.getpeername())
        #: Bytes taken from and given to the kernel so far (for "closed … after N bytes" lines).
        self.bytes_received = 0
        self.bytes_sent = 0

    @property
    def socket(self) -> socket.socket:
        return self._sock

    def fileno(self) -> int:
        return self._fd

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("this connection is closed")

    def _where(self) -> str:
        return str(self.peer_address) if self.peer_address else "the peer"

    def set_timeout(self, seconds: float | None) -> None:
        """Make ``recv``/``send_all`` raise :class:`~enchufe.errors.TimedOut` after ``seconds``
        without progress (``None``: wait forever)."""
        self._check()
        self._ready.timeout = _ranges.seconds(seconds, "timeout", optional=True)

    @property
    def peer_credentials(self) -> _calls.Credentials | None:
        """For unix sockets, the peer's pid, uid and gid (SO_PEERCRED); ``None`` for TCP."""
        self._check()
        if self._sock.family != socket.AF_UNIX:
            return None
        return _calls.peer_credentials(self._sock)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send every byte; returns once the kernel has them all."""
        self._check()
        if self._write_shut:
            raise ClosedError("cannot send: this side's write half was shut down (shutdown_write)")
        view = memoryview(data).cast("B")
        try:
            while view:
                try:
                    sent = _calls.send(self._sock, view)
                except BlockingIOError:
                    await self._ready.writable()
                    self._check()
                    continue
                view = view[sent:]
                self.bytes_sent += sent
        except OSError as exc:
            raise translate(exc, f"send to {self._where()}") from exc

    async def shutdown_write(self) -> None:
        """Half-close: the peer reads EOF; we can still receive."""
        self._check()
        self._write_shut = True
        try:
            _calls.shutdown(self._sock, socket.SHUT_WR)
        except OSError as exc:
            raise translate(exc, f"shut down the write side towards {self._where()}") from exc

    async def send_message(self, message: bytes, *, max_size: int = framing.DEFAULT_MAX_MESSAGE_SIZE) -> None:
        """Send one length-prefixed message (see :mod:`enchufe.framing`)."""
        await self.send_all(framing.encode(message, max_size=max_size))

    async def _recv_raw(self, max_bytes: int) -> bytes:
        while True:
            self._check()
            try:
                data = _calls.recv(self._sock, max_bytes)
            except BlockingIOError:
                await self._ready.readable()
            except OSError as exc:
                raise translate(exc, f"receive from {self._where()}") from exc
            else:
                self.bytes_received += len(data)
                return data

    async def recv(self, max_bytes: int = DEFAULT_RECV_SIZE) -> bytes:
        """Up to ``max_bytes`` bytes as soon as some are there; ``b""`` at EOF."""
        self._check()
        # "Up to": a huge max_bytes (a length the peer announced) is read in bounded chunks,
        # never allocated at once.
        max_bytes = min(_ranges.integer(max_bytes, "max_bytes", 1), MAX_RECV_CHUNK)
        if len(self._buffer):
            return self._buffer.take_some(max_bytes)
        return await self._recv_raw(max_bytes)

    async def recv_exactly(self, size: int) -> bytes:
        """Exactly ``size`` bytes; :class:`~enchufe.errors.IncompleteRead` if EOF comes first."""
        _ranges.integer(size, "size", 0)
        while (data := self._buffer.take_exactly(size)) is None:
            want = min(max(size - len(self._buffer), DEFAULT_RECV_SIZE), MAX_RECV_CHUNK)
            chunk = await self._recv_raw(want)
            if not chunk:
                raise self._buffer.incomplete(size, self._where())
            self._buffer.feed(chunk)
        return data

    async def recv_until(self, delimiter: bytes = b"\n", *, max_bytes: int = DEFAULT_MAX_UNTIL) -> bytes:
        """Bytes up to and including ``delimiter``; at EOF what is left (``b""`` if nothing)."""
        while (data := self._buffer.take_until(delimiter, max_bytes, self._where())) is None:
            chunk = await self._recv_raw(DEFAULT_RECV_SIZE)
            if not chunk:
                return self._buffer.take_rest()
            self._buffer.feed(chunk)
        return data

    async def recv_message(self, *, max_size: int = framing.DEFAULT_MAX_MESSAGE_SIZE) -> bytes | None:
        """One length-prefixed message, or ``None`` at a clean EOF between messages."""
        framing._check_max_size(max_size)  # before waiting for a header
        try:
            header = await self.recv_exactly(framing.HEADER_SIZE)
        except IncompleteRead as exc:
            if not exc.partial:
                return None
            raise
        return await self.recv_exactly(framing.parse_header(header, max_size=max_size))

    async def aclose(self) -> None:
        """Close the socket.  Idempotent."""
        self.close()

    def close(self) -> None:
        """Close at once (also usable from synchronous cleanup code)."""
        if self._closed:
            return
        self._closed = True
        self._ready.close()
        with contextlib.suppress(OSError):
            _calls.close(self._sock)

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd {self._fd}"
        return f"<aio.Connection {self.local_address} ↔ {self.peer_address} {state}>"


class Listener:
    """A passive stream socket for asyncio; ``await accept()`` gives the next :class:`Connection`.

    ``async for conn in listener`` yields connections until the listener is closed.  Closing
    wakes a pending ``accept()``, which raises :class:`~enchufe.errors.ClosedError`.
    """

    def __init__(
        self, sock: socket.socket, address: SocketAddress, owned: _unixfiles.SocketFile | None
    ) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._owned = owned
        self._ready = Readiness(sock)
        self._closed = False
        self.address = address

    @property
    def socket(self) -> socket.socket:
        return self._sock

    def fileno(self) -> int:
        return self._fd

    async def accept(self) -> Connection:
        while True:
            if self._closed:
                raise ClosedError(f"the listener on {self.address} is closed")
            try:
                conn, _peer = _calls.accept(self._sock)
            except BlockingIOError:
                await self._ready.readable()
                continue
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

    def __aiter__(self) -> AsyncIterator[Connection]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Connection]:
        while True:
            try:
                yield await self.accept()
            except ClosedError:
                return
            except ConnectionReset:
                continue

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening, remove our socket file.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._ready.close()
        with contextlib.suppress(OSError):
            _calls.close(self._sock)
        if self._owned is not None:
            self._owned.release()

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<aio.Listener {self.address}{' closed' if self._closed else ''}>"

"""Async stream endpoints: :class:`Connection` and :class:`Listener`, mirroring ``enchufe.sync``."""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import AsyncIterator

from .. import _ranges, _unixfiles, framing
from .._buffer import DEFAULT_MAX_UNTIL, DEFAULT_RECV_SIZE
from .._endpoint import AsyncClosing
from .._streams import ListenerCore, StreamCore
from .._tlsstream import NoLock, TLSSetup, TLSStreamCore
from ..address import SocketAddress
from ..errors import ClosedError, ConnectionReset, IncompleteRead
from ..tlsinfo import TLSInfo
from ._wait import Readiness

__all__ = ["Connection", "Listener", "TLSConnection"]


class Connection(StreamCore, AsyncClosing):
    """A connected stream socket for asyncio: TCP over IPv4/IPv6 or a unix stream socket.

    * ``await recv()`` returns ``b""`` if and only if the peer closed its sending side (EOF).
    * ``await send_all(data)`` returns once the kernel took every byte: there is no write
      buffer in Python, so a slow reader slows the writer down (backpressure).
    * ``await shutdown_write()`` sends EOF and keeps receiving (half-close).
    * ``await aclose()`` closes; idempotent.  Use after close raises
      :class:`~enchufe.errors.ClosedError`.

    Cancellation: a cancelled ``recv`` loses nothing (no bytes were taken); a cancelled
    ``send_all`` may have sent part of the data, so the connection should then be closed.
    A connection of a TLS address is a :class:`TLSConnection`, which keeps all of this.
    """

    _polled = True

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        super().__init__(sock)
        self._ready = Readiness(sock)
        #: Bytes taken from and given to the kernel so far (for "closed … after N bytes" lines).
        self.bytes_received = 0
        self.bytes_sent = 0

    @property
    def tls(self) -> TLSInfo | None:
        """What TLS negotiated (see :class:`TLSConnection`); ``None`` on a plain connection."""
        return None

    async def handshake(self) -> None:
        """Run the TLS handshake now (see :class:`TLSConnection`); nothing on a plain connection."""

    def set_timeout(self, seconds: float | None) -> None:
        """Make ``recv``/``send_all`` raise :class:`~enchufe.errors.TimedOut` after ``seconds``
        without progress (``None``: wait forever)."""
        self._check()
        self._ready.timeout = _ranges.seconds(seconds, "timeout", optional=True)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send every byte; returns once the kernel has them all."""
        self._check_send()
        view = memoryview(data).cast("B")
        while view:
            try:
                sent = self._send_once(view)
            except BlockingIOError:
                await self._ready.writable(lambda: f"send to {self._where()}")
                self._check()
                continue
            view = view[sent:]
            self.bytes_sent += sent

    async def shutdown_write(self) -> None:
        """Half-close: the peer reads EOF; we can still receive."""
        self._shutdown_write()

    async def send_message(self, message: bytes, *, max_size: int = framing.DEFAULT_MAX_MESSAGE_SIZE) -> None:
        """Send one length-prefixed message (see :mod:`enchufe.framing`)."""
        await self.send_all(framing.encode(message, max_size=max_size))

    async def _recv_raw(self, max_bytes: int) -> bytes:
        while True:
            try:
                data = self._recv_once(max_bytes)
            except BlockingIOError:
                await self._ready.readable(lambda: f"receive from {self._where()}")
            else:
                self.bytes_received += len(data)
                return data

    async def recv(self, max_bytes: int = DEFAULT_RECV_SIZE) -> bytes:
        """Up to ``max_bytes`` bytes as soon as some are there; ``b""`` at EOF."""
        max_bytes = self._recv_size(max_bytes)
        if len(self._buffer):
            return self._buffer.take_some(max_bytes)
        return await self._recv_raw(max_bytes)

    async def recv_exactly(self, size: int) -> bytes:
        """Exactly ``size`` bytes; :class:`~enchufe.errors.IncompleteRead` if EOF comes first."""
        _ranges.integer(size, "size", 0)
        while (data := self._buffer.take_exactly(size)) is None:
            chunk = await self._recv_raw(self._buffer.wanted(size))
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

    def _wake_waiters(self) -> None:
        self._ready.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd {self._fd}"
        return f"<aio.Connection {self.local_address} ↔ {self.peer_address} {state}>"


_NO_LOCK = NoLock()


class TLSConnection(TLSStreamCore, Connection):
    """A :class:`Connection` over TLS, as :class:`enchufe.sync.TLSConnection` is for the sync
    side: ``await connect()`` returns it with the handshake done; ``await accept()`` before the
    handshake, which runs at its first use or at ``await handshake()``, bounded by the
    address's ``handshake-timeout``.  ``bytes_sent``/``bytes_received`` count plaintext.
    """

    _state_lock = _NO_LOCK
    _send_lock = _NO_LOCK

    def __init__(self, sock: socket.socket, setup: TLSSetup) -> None:
        super().__init__(sock, setup)
        self._handshaking = asyncio.Lock()

    async def handshake(self, timeout: float | None = None) -> None:
        """Run the handshake if it has not run: returns once it is done and the peer accepted.
        Bounded by the address's ``handshake-timeout``, or by ``timeout`` seconds when that is
        shorter.  Two tasks may call it at once (one reading, one writing): both wait for the
        one run."""
        if self._channel.handshaken:
            return
        self._check()
        async with self._handshaking:
            self._bound = bound = self._handshake_bound(timeout)
            try:
                async with asyncio.timeout(bound[0]):
                    while not await self._handshake_step():
                        pass
            except TimeoutError:
                raise self._handshake_timed_out(bound) from None

    async def _handshake_step(self) -> bool:
        try:
            return self._handshake_once()
        except BlockingIOError:
            what = lambda: f"complete the TLS handshake with {self._where()}"  # noqa: E731
            if self._owes_peer:
                await self._ready.writable(what)
            else:
                await self._ready.readable(what)
            self._check()
            return False

    async def _flush_all(self) -> None:
        while True:
            try:
                self._flush()
                return
            except BlockingIOError:
                await self._ready.writable(lambda: f"send to {self._where()}")
                self._check()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.handshake()
        await super().send_all(data)

    async def shutdown_write(self) -> None:
        """Send close_notify (the peer reads EOF) and keep receiving."""
        await self.handshake()
        try:
            self._shutdown_write()
        except BlockingIOError:
            await self._flush_all()

    async def recv(self, max_bytes: int = DEFAULT_RECV_SIZE) -> bytes:
        await self.handshake()
        return await super().recv(max_bytes)

    async def recv_exactly(self, size: int) -> bytes:
        await self.handshake()
        return await super().recv_exactly(size)

    async def recv_until(self, delimiter: bytes = b"\n", *, max_bytes: int = DEFAULT_MAX_UNTIL) -> bytes:
        await self.handshake()
        return await super().recv_until(delimiter, max_bytes=max_bytes)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd {self._fd}"
        return f"<aio.TLSConnection {self.local_address} ↔ {self.peer_address} {state}>"


class Listener(ListenerCore, AsyncClosing):
    """A passive stream socket for asyncio; ``await accept()`` gives the next :class:`Connection`.

    ``async for conn in listener`` yields connections until the listener is closed.  Closing
    wakes a pending ``accept()``, which raises :class:`~enchufe.errors.ClosedError`.
    A TLS listener gives :class:`TLSConnection` objects before their handshake.
    """

    _polled = True

    def __init__(
        self,
        sock: socket.socket,
        address: SocketAddress,
        owned: _unixfiles.SocketFile | None,
        tls: TLSSetup | None = None,
    ) -> None:
        sock.setblocking(False)
        super().__init__(sock, address, owned, tls)
        self._ready = Readiness(sock)

    async def accept(self) -> Connection:
        while True:
            try:
                conn = self._accept_once()
            except BlockingIOError:
                await self._ready.readable(lambda: f"accept on {self.address}")
                continue
            setup = self._tls
            if setup is None:
                return self._wrap(conn, Connection)
            return self._wrap(conn, functools.partial(TLSConnection, setup=setup))

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

    def _wake_waiters(self) -> None:
        self._ready.close()

    def __repr__(self) -> str:
        return f"<aio.Listener {self.address}{' closed' if self._closed else ''}>"

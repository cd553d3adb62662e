"""Async datagram endpoint: :class:`DatagramSocket`, mirroring ``enchufe.sync.DatagramSocket``."""

from __future__ import annotations

import asyncio
import socket
from types import TracebackType

from .. import _ranges
from .._backoff import Backoff
from .._buffer import DEFAULT_MAX_DATAGRAM
from .._serving import StalledPeers
from ..address import SocketAddress
from ..errors import ClosedError, TimedOut
from ..sync.datagram import DatagramSocket as _SyncDatagramSocket
from ._wait import Readiness

__all__ = ["DatagramSocket"]


class DatagramSocket:
    """A datagram socket for asyncio (udp or unixgram); message boundaries are kept.

    The same contract as the sync :class:`enchufe.DatagramSocket`: ``recvfrom`` returns one
    datagram and its sender and raises :class:`~enchufe.errors.DatagramTruncated` rather than
    cut one silently; ``sendto`` raises :class:`~enchufe.errors.MessageTooLarge` for a datagram
    that cannot go in one piece.  Sending waits while the socket's buffer is full.
    Cancellation loses no datagram: it is either received and returned, or left queued.
    """

    def __init__(self, inner: _SyncDatagramSocket) -> None:
        # One implementation of addressing, truncation and errors: the sync socket's, made
        # non-blocking; this class only waits for readiness between attempts.
        inner.socket.setblocking(False)
        self._inner = inner
        self._ready = Readiness(inner.socket)

    @property
    def socket(self) -> socket.socket:
        return self._inner.socket

    @property
    def local_address(self) -> SocketAddress | None:
        return self._inner.local_address

    @property
    def peer_address(self) -> SocketAddress | None:
        return self._inner.peer_address

    @property
    def stalled_peers(self) -> StalledPeers:
        """Unix peers that made a server wait in vain (see :func:`enchufe.aio.serve.deliver`)."""
        return self._inner.stalled_peers

    @property
    def address(self) -> SocketAddress:
        """The address this socket is bound to (see :attr:`enchufe.DatagramSocket.address`)."""
        return self._inner.address

    def fileno(self) -> int:
        return self._inner.fileno()

    def set_timeout(self, seconds: float | None) -> None:
        """Make ``recvfrom``/``sendto`` raise :class:`~enchufe.errors.TimedOut` after ``seconds``."""
        if self._inner.closed:
            raise ClosedError("this datagram socket is closed")
        self._ready.timeout = _ranges.seconds(seconds, "timeout", optional=True)

    async def sendto(self, data: bytes, address: SocketAddress | str | None) -> int:
        """Send one datagram to ``address``, waiting while it cannot go now."""
        if self._inner.socket.family != socket.AF_UNIX:
            while True:
                try:
                    return self._inner.sendto(data, address)
                except BlockingIOError:
                    await self._ready.writable()
        # A unix datagram socket also waits when the *receiver's* queue is full
        # (net.unix.max_dgram_qlen), and poll() cannot tell: an unconnected socket stays
        # "writable" then, so waiting for writability would spin.  Back off instead.
        backoff = Backoff()
        waited = 0.0
        while True:
            try:
                return self._inner.sendto(data, address)
            except BlockingIOError:
                timeout = self._ready.timeout
                if timeout is not None and waited >= timeout:
                    raise TimedOut(f"timed out: could not send for {timeout:g} s") from None
                pause = backoff.next()
                await asyncio.sleep(pause)
                waited += pause

    def sendto_nowait(self, data: bytes, address: SocketAddress | str | None) -> bool:
        """Send one datagram to ``address`` if the kernel takes it now: ``True``; ``False`` if
        it would have to wait (our send buffer, or a unix receiver's queue, is full).

        For servers that must not let one peer that does not read hold up the others.
        """
        return self._inner.sendto_nowait(data, address)

    async def send(self, data: bytes) -> int:
        while True:
            try:
                return self._inner.send(data)
            except BlockingIOError:
                await self._ready.writable()

    async def recvfrom(self, max_size: int = DEFAULT_MAX_DATAGRAM) -> tuple[bytes, SocketAddress | None]:
        while True:
            try:
                return self._inner.recvfrom(max_size)
            except BlockingIOError:
                await self._ready.readable()

    async def recv(self, max_size: int = DEFAULT_MAX_DATAGRAM) -> bytes:
        return (await self.recvfrom(max_size))[0]

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if not self._inner.closed:
            self._ready.close()
        self._inner.close()

    @property
    def closed(self) -> bool:
        return self._inner.closed

    async def __aenter__(self) -> DatagramSocket:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<aio.{self._inner!r}"[:-1] + ">"

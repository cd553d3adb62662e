"""Async datagram endpoint: :class:`DatagramSocket`, mirroring ``enchufe.sync.DatagramSocket``."""

from __future__ import annotations

import asyncio
import socket

from .. import _ranges
from .._backoff import Backoff
from .._buffer import DEFAULT_MAX_DATAGRAM
from .._datagrams import DatagramCore
from .._endpoint import AsyncClosing
from .._unixfiles import SocketFile
from ..address import SocketAddress
from ..errors import translate
from ._wait import Readiness

__all__ = ["DatagramSocket"]


class DatagramSocket(DatagramCore, AsyncClosing):
    """A datagram socket for asyncio (udp or unixgram); message boundaries are kept.

    The same contract as the sync :class:`enchufe.DatagramSocket`: ``recvfrom`` returns one
    datagram and its sender and raises :class:`~enchufe.errors.DatagramTruncated` rather than
    cut one silently; ``sendto`` raises :class:`~enchufe.errors.MessageTooLarge` for a datagram
    that cannot go in one piece.  Sending waits while the socket's buffer is full.
    Cancellation loses no datagram: it is either received and returned, or left queued.
    """

    _label = "aio.DatagramSocket"

    def __init__(
        self,
        sock: socket.socket,
        *,
        owned: SocketFile | None = None,
        local_address: SocketAddress | None = None,
        peer_address: SocketAddress | None = None,
    ) -> None:
        # One implementation of addressing, truncation and errors, the core's, on a
        # non-blocking socket; this class only waits for readiness between attempts.
        sock.setblocking(False)
        super().__init__(sock, owned=owned, local_address=local_address, peer_address=peer_address)
        self._ready = Readiness(sock)

    def set_timeout(self, seconds: float | None) -> None:
        """Make ``recvfrom``/``sendto`` raise :class:`~enchufe.errors.TimedOut` after ``seconds``."""
        self._check()
        self._ready.timeout = _ranges.seconds(seconds, "timeout", optional=True)

    async def sendto(self, data: bytes, address: SocketAddress | str | None) -> int:
        """Send one datagram to ``address``, waiting while it cannot go now."""

        def what() -> str:
            return self._sending(data, self._target(address))

        if self._sock.family != socket.AF_UNIX:
            while True:
                try:
                    return self._sendto_once(data, address)
                except BlockingIOError:
                    await self._ready.writable(what)
        # A unix datagram socket also waits when the *receiver's* queue is full
        # (net.unix.max_dgram_qlen), and poll() cannot tell: an unconnected socket stays
        # "writable" then, so waiting for writability would spin.  Back off instead.
        backoff = Backoff()
        waited = 0.0
        while True:
            try:
                return self._sendto_once(data, address)
            except BlockingIOError:
                timeout = self._ready.timeout
                if timeout is not None and waited >= timeout:
                    raise translate(TimeoutError(), what()) from None
                pause = backoff.next()
                await asyncio.sleep(pause)
                waited += pause

    async def send(self, data: bytes) -> int:
        while True:
            try:
                return self._send_once(data)
            except BlockingIOError:
                await self._ready.writable(lambda: self._sending(data, self.peer_address))

    async def recvfrom(self, max_size: int = DEFAULT_MAX_DATAGRAM) -> tuple[bytes, SocketAddress | None]:
        while True:
            try:
                return self._recvfrom_once(max_size)
            except BlockingIOError:
                await self._ready.readable(self._receiving)

    async def recv(self, max_size: int = DEFAULT_MAX_DATAGRAM) -> bytes:
        return (await self.recvfrom(max_size))[0]

    def _wake_waiters(self) -> None:
        self._ready.close()

"""Waiting for a socket to become readable or writable on the running event loop.

Works on any asyncio loop with ``add_reader``/``add_writer`` (the default loop and uvloop).
The kernel forgets a closed descriptor without telling epoll's users, so closing a socket would
leave its waiters asleep forever: :meth:`Readiness.close` wakes them first (they then find the
socket closed), and unregisters them before the descriptor can be reused.  A cancelled waiter
unregisters itself; the socket is left as it was.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from ..errors import translate


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Readiness:
    """The readiness waits pending on one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._pending: dict[asyncio.Future[None], tuple[asyncio.AbstractEventLoop, bool]] = {}
        #: Seconds one wait may last before :class:`~enchufe.errors.TimedOut` (None: forever).
        self.timeout: float | None = None

    async def readable(self, what: Callable[[], str]) -> None:
        """Wait until the socket is readable; ``what()`` names the operation waiting
        (``"receive from …"``) for the :class:`~enchufe.errors.TimedOut` of a timeout."""
        await self._wait(what, reading=True)

    async def writable(self, what: Callable[[], str]) -> None:
        """Wait until the socket is writable (see :meth:`readable`)."""
        await self._wait(what, reading=False)

    async def _wait(self, what: Callable[[], str], *, reading: bool) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if reading:
            loop.add_reader(self._fd, _wake, future)
        else:
            loop.add_writer(self._fd, _wake, future)
        self._pending[future] = (loop, reading)
        try:
            if self.timeout is None:
                await future
            else:
                try:
                    async with asyncio.timeout(self.timeout):
                        await future
                except TimeoutError as exc:
                    # The words of a blocking socket's timeout: "cannot receive from …: timed out".
                    raise translate(exc, what()) from None
        finally:
            if self._pending.pop(future, None) is not None:
                self._unregister(loop, reading)

    def _unregister(self, loop: asyncio.AbstractEventLoop, reading: bool) -> None:
        if reading:
            loop.remove_reader(self._fd)
        else:
            loop.remove_writer(self._fd)

    def close(self) -> None:
        """Unregister and wake every waiter; call just before closing the socket."""
        pending, self._pending = self._pending, {}
        for future, (loop, reading) in pending.items():
            self._unregister(loop, reading)
            _wake(future)


async def wait_writable(sock: socket.socket) -> None:
    """Wait once for ``sock`` to become writable (for sockets nobody else closes meanwhile)."""
    await Readiness(sock).writable(lambda: "connect")

"""The asyncio form of :class:`~enchufe.faults.FaultyRelay`: the same relay (in its own thread,
off the event loop), started and stopped without blocking the loop.

::

    async with AsyncFaultyRelay("udp://127.0.0.1:5353", faults=["loss:probability=0.1"], seed=7) as relay:
        reader, writer = await asyncio.open_connection(...)   # or any client, to relay.address
        relay.set_faults([])                                  # no await: it only swaps a tuple
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from .api import FaultyRelay
from .relay_thread import STOP_TIMEOUT

__all__ = ["AsyncFaultyRelay"]


class AsyncFaultyRelay(FaultyRelay):
    """:class:`~enchufe.faults.FaultyRelay` for ``async with``: :meth:`astart` and :meth:`astop`
    run :meth:`start` and :meth:`stop` (binding, resolving the target, joining the relay's
    thread) in a worker thread.  Everything else (:attr:`address`, :meth:`set_faults`,
    :meth:`add`, :meth:`remove`, :attr:`stats`) is the same and does not block.  A task cancelled
    in ``async with`` still stops the relay (leaving the block awaits the stop)."""

    async def astart(self) -> AsyncFaultyRelay:
        await asyncio.to_thread(self.start)
        return self

    async def astop(self, timeout: float = STOP_TIMEOUT) -> None:
        await asyncio.to_thread(self.stop, timeout)

    async def __aenter__(self) -> AsyncFaultyRelay:
        return await self.astart()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.astop()

"""Doubling pauses, for waits that no readiness event announces.

A unix datagram receiver's full queue and a unix listener's full backlog make a non-blocking
sender or connector answer EAGAIN, and nothing tells it when there is room again (its own
socket stays "writable").  So it polls: quickly at first, a reader usually catches up within
milliseconds, then less and less often, so that a peer that never makes room costs little CPU::

    backoff = Backoff()
    while not try_again():
        sleep(backoff.next())       # 1, 2, 4 … 32, 50, 50 … ms
"""

from __future__ import annotations

__all__ = ["UNIX_RETRY_FIRST", "UNIX_RETRY_MAX", "Backoff"]

#: First and longest pause when polling for room in a unix receiver's queue or a unix listener's
#: backlog: at most 20 polls a second once the peer has made us wait 60 ms.
UNIX_RETRY_FIRST = 0.001
UNIX_RETRY_MAX = 0.05


class Backoff:
    """Pauses from ``first`` doubling up to ``ceiling``; :meth:`reset` starts again from ``first``."""

    __slots__ = ("_pause", "ceiling", "first")

    def __init__(self, first: float = UNIX_RETRY_FIRST, ceiling: float = UNIX_RETRY_MAX) -> None:
        self.first = first
        self.ceiling = ceiling
        self._pause = first

    def next(self) -> float:
        """The pause to take now, in seconds; the following one is twice as long (at most ``ceiling``)."""
        pause = self._pause
        self._pause = min(pause * 2, self.ceiling)
        return pause

    def reset(self) -> None:
        """After a success: the next wait starts short again."""
        self._pause = self.first

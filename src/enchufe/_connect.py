"""The retry policy of ``connect``, without I/O: shared by the sync and async endpoints.

::

    plan = ConnectPlan(address, retries=3, retry_delay=0.5)
    for delay in plan:              # one round per attempt; stops early on errors not worth retrying
        sleep(delay)                # 0 before the first attempt
        for target in resolve(address):
            try:
                return connect_new_socket(target)
            except OSError as exc:
                plan.failed(exc)
    raise plan.error()
"""

from __future__ import annotations

from collections.abc import Iterator

from . import _ranges
from .address import SocketAddress
from .errors import NetworkError, translate


class ConnectPlan:
    """Rounds of connection attempts: ``retries`` more after the first, ``retry_delay`` apart.

    Refused connections, socket files that do not exist yet and timeouts are worth another
    round; anything else (permission denied, no route…) ends the plan at once.  The final error
    is the last one, with every attempt's error in ``attempts``.
    """

    def __init__(self, address: SocketAddress, *, retries: int, retry_delay: float) -> None:
        self.address = address
        self.retries = _ranges.integer(retries, "retries", 0)
        self.retry_delay = _ranges.seconds(retry_delay, "retry_delay") or 0.0
        self.errors: list[NetworkError] = []

    def __iter__(self) -> Iterator[float]:
        for attempt in range(self.retries + 1):
            if attempt and not self.errors[-1].retryable:
                return
            yield self.retry_delay if attempt else 0.0

    def failed(self, exc: OSError, error: NetworkError | None = None) -> None:
        """Record one failed attempt: ``exc``, or ``error`` when the caller explained it better."""
        error = error or translate(exc, f"connect to {self.address}")
        error.__cause__ = exc
        self.errors.append(error)

    def error(self) -> NetworkError:
        """The error to raise once the plan is exhausted."""
        last = self.errors[-1]
        last.attempts = tuple(self.errors)
        if len(self.errors) > 1:
            last.args = (f"{last.args[0]} ({len(self.errors)} attempts)",)
        return last

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

from .address import SocketAddress
from .errors import NetworkError, UsageError, translate


class ConnectPlan:
    """Rounds of connection attempts: ``retries`` more after the first, ``retry_delay`` apart.

    Refused connections, socket files that do not exist yet and timeouts are worth another
    round; anything else (permission denied, no route…) ends the plan at once.  The final error
    is the last one, with every attempt's error in ``attempts``.
    """

    def __init__(self, address: SocketAddress, *, retries: int, retry_delay: float) -> None:
        if retries < 0:
            raise UsageError(f"retries must be 0 or more, not {retries}")
        if retry_delay < 0:
            raise UsageError(f"retry_delay must be 0 or more, not {retry_delay}")
        self.address = address
        self.retries = retries
        self.retry_delay = retry_delay
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

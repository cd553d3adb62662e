"""How the openers begin, without I/O: shared by the sync and async endpoints.

:func:`socket_address` checks that an address fits the opener it was given to; the retry
policy of ``connect`` is a :class:`ConnectPlan`::

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
from .address import Address, InetAddress, SocketAddress, UnixAddress, parse
from .errors import AddressError, NetworkError, translate
from .i18n import _

#: Seconds between connection attempts when retrying: long enough not to hammer a server that
#: is starting, short enough that a script waiting for one notices it quickly.
DEFAULT_RETRY_DELAY = 0.5


def socket_address(address: Address | str, *, stream: bool, role: str) -> SocketAddress:
    """``address`` parsed, if it is a socket address of the right kind for the opener ``role``
    (``listen``, ``connect``, ``bind_datagram``, ``connect_datagram``); else an
    :class:`~enchufe.errors.AddressError` saying which addresses that opener takes."""
    value = parse(address) if isinstance(address, str) else address
    if not isinstance(value, InetAddress | UnixAddress):
        raise AddressError(
            _("{address}: {role} needs a socket address (tcp://, udp://, unix:, unixgram:)").format(
                address=value, role=role
            )
        )
    if value.is_stream != stream:
        if stream:
            raise AddressError(
                _(
                    "{address}: {role} needs a stream address (tcp://, unix:); for datagrams use {opener}"
                ).format(
                    address=value,
                    role=role,
                    opener="bind_datagram" if role == "listen" else "connect_datagram",
                )
            )
        raise AddressError(
            _("{address}: {role} needs a datagram address (udp://, unixgram:)").format(
                address=value, role=role
            )
        )
    return value


class ConnectPlan:
    """Rounds of connection attempts: ``retries`` more after the first, ``retry_delay`` apart.

    Refused connections, socket files that do not exist yet and timeouts are worth another
    round; anything else (permission denied, no route…) ends the plan at once.  The final error
    is the last one, with every attempt's error in ``attempts``.
    """

    def __init__(self, address: SocketAddress, *, retries: int, retry_delay: float) -> None:
        if isinstance(retries, int) and retries < 0:  # bad input, like every argument error before a socket
            raise AddressError(_("retries must be 0 or more, not {value}").format(value=retries))
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
            last.args = (
                _("{message} ({count} attempts)").format(message=last.args[0], count=len(self.errors)),
            )
        return last

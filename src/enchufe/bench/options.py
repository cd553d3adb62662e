"""What ``enchufe bench`` may be asked: the options, their defaults and limits, checked.

:func:`parse_options` turns what the user wrote into :class:`Options`, or refuses it with one
line (:class:`~enchufe.errors.UsageError`, exit status 2) before any socket is opened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..address import InetAddress, Kind, SocketAddress, UnixAddress, parse
from ..errors import AddressError, UsageError
from ..i18n import _
from .results import Settings
from .sequence import HEADER_SIZE

__all__ = [
    "DEFAULT_COUNT",
    "DEFAULT_DURATION",
    "DEFAULT_PARALLEL",
    "MAX_COUNT",
    "MAX_DURATION",
    "MAX_PARALLEL",
    "MAX_STREAM_SIZE",
    "MODES",
    "Options",
    "parse_options",
]

MODES = ("throughput", "latency", "connect", "datagram")
STREAM_MODES = ("throughput", "latency", "connect")
DATAGRAM_MODES = ("latency", "datagram")

#: Seconds each timed test runs (throughput, connection rate, datagram rate): with six kinds the
#: whole default run stays well under a minute, and a second is already thousands of
#: connections or hundreds of thousands of datagrams on loopback.
DEFAULT_DURATION = 1.0
#: Longest --duration accepted: an hour per test is surely a typo already.
MAX_DURATION = 3600.0
#: Round trips a latency test times: enough for a p99 from 50 samples above it.
DEFAULT_COUNT = 5000
MAX_COUNT = 10_000_000
#: Connections of the parallel throughput test (-P): a few per core on common machines.
DEFAULT_PARALLEL = 4
MAX_PARALLEL = 64
#: Bytes per send() for throughput: what iperf3 writes by default for TCP (128 KiB).
THROUGHPUT_SIZE = 128 * 1024
#: Bytes per ping for latency: a small request, as in most request/response protocols.
LATENCY_SIZE = 64
#: Datagram payloads: a small message, and one that still fits an Ethernet frame's MTU.
DATAGRAM_SIZES = (64, 1400)
#: Largest UDP payload over IPv4 and IPv6 (65535 minus the IP and UDP headers).
MAX_UDP_PAYLOAD = {4: 65507, 6: 65527}
MAX_STREAM_SIZE = 64 * 1024 * 1024

#: Warm-up before a timed test: a fifth of its duration, at most this many seconds.  Enough for
#: TCP's window to open and for caches, page tables and CPU frequency to settle.
WARMUP_FRACTION = 0.2
WARMUP_MAX = 0.25
#: Warm-up round trips before latency: a tenth of the count, between these bounds.
LATENCY_WARMUP_MIN = 10
LATENCY_WARMUP_MAX = 200


@dataclass(frozen=True)
class Options:
    """A checked request: nothing in it can fail for being malformed."""

    addresses: tuple[SocketAddress, ...] = ()
    kinds: tuple[Kind, ...] = tuple(Kind)
    modes: tuple[str, ...] | None = None
    duration: float = DEFAULT_DURATION
    count: int = DEFAULT_COUNT
    size: int | None = None
    parallel: int = DEFAULT_PARALLEL
    sink: bool = False
    #: TLS kinds of the loopback run (``tls``, ``tls+unix``), each measured beside its plain twin.
    tls_kinds: tuple[str, ...] = ()

    @property
    def warmup(self) -> float:
        return min(WARMUP_MAX, self.duration * WARMUP_FRACTION)

    @property
    def latency_warmup(self) -> int:
        return max(LATENCY_WARMUP_MIN, min(LATENCY_WARMUP_MAX, self.count // 10))

    def modes_for(self, stream: bool) -> tuple[str, ...]:
        applicable = STREAM_MODES if stream else DATAGRAM_MODES
        if self.modes is None:
            return applicable
        return tuple(m for m in applicable if m in self.modes)

    def settings(self) -> Settings:
        return Settings(
            duration=self.duration,
            warmup=self.warmup,
            count=self.count,
            latency_warmup=self.latency_warmup,
            size=self.size,
            parallel=self.parallel,
            modes=self.modes or MODES,
        )


# ---------------------------------------------------------------------------- options


def _number(
    text: str | None, option: str, what: str, convert: Callable[[str], float], low: float, high: float
) -> float | None:
    if text is None:
        return None
    try:
        value = convert(text.strip())
    except ValueError:
        value = None
    if value is None or value != value or not low <= value <= high:  # value != value: NaN
        raise UsageError(
            _("{option} must be {accepted}, not {value}").format(
                option=option, accepted=what, value=repr(text)
            )
        )
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError
    return value


def parse_options(
    addresses: list[str] | tuple[str, ...] = (),
    *,
    mode: str | None = None,
    kinds: list[str] | tuple[str, ...] = (),
    duration: str | None = None,
    count: str | None = None,
    size: str | None = None,
    parallel: str | None = None,
    sink: bool = False,
) -> Options:
    """Check what the user asked for; :class:`~enchufe.errors.UsageError` (one line) if it
    cannot be done.  Everything is checked before any socket is opened."""
    modes: tuple[str, ...] | None = None
    if mode is not None:
        if mode not in MODES:
            raise UsageError(
                _("unknown --mode {mode}; one of {modes}").format(mode=repr(mode), modes=", ".join(MODES))
            )
        modes = (mode,)
    numbers = _numbers(duration=duration, count=count, parallel=parallel, size=size)
    targets = tuple(_target(text) for text in addresses)
    if targets and kinds:
        raise UsageError(
            _("--kind chooses the kinds of the loopback run; with an ADDRESS its scheme says the kind")
        )
    if sink and not targets:
        raise UsageError(
            _("--sink describes servers given as ADDRESS; bench's own throughput servers are sinks already")
        )
    plain_names, tls_kinds = _split_tls(kinds, modes)
    chosen = _kinds(plain_names, modes) if plain_names or not tls_kinds else ()
    options = Options(addresses=targets, kinds=chosen, modes=modes, sink=sink, tls_kinds=tls_kinds, **numbers)
    for target in targets:
        _check_mode(modes, target.is_stream, str(target))
        _check_size(options, target)
    for kind in options.kinds if not targets else ():
        _check_size(options, kind)
    return options


def _numbers(
    *, duration: str | None, count: str | None, parallel: str | None, size: str | None
) -> dict[str, Any]:
    """The numeric options given, checked (those not given keep the defaults of :class:`Options`)."""
    seconds = _number(
        duration, "--duration", _("a number of seconds above 0 (e.g. 0.5)"), _positive_float, 0, MAX_DURATION
    )
    rounds = _number(
        count,
        "--count",
        _("a whole number of round trips from 1 to {most}").format(most=f"{MAX_COUNT:,}"),
        int,
        1,
        MAX_COUNT,
    )
    conns = _number(
        parallel,
        "-P/--parallel",
        _("a whole number of connections from 1 to {most}").format(most=MAX_PARALLEL),
        int,
        1,
        MAX_PARALLEL,
    )
    chosen_size = _number(
        size,
        "--size",
        _("a whole number of bytes from 1 to {most}").format(most=MAX_STREAM_SIZE),
        int,
        1,
        MAX_STREAM_SIZE,
    )
    given = {"duration": seconds, "count": rounds, "parallel": conns, "size": chosen_size}
    return {
        name: value if name == "duration" else int(value)
        for name, value in given.items()
        if value is not None
    }


def _target(text: str) -> SocketAddress:
    address = parse(text)
    if not isinstance(address, InetAddress | UnixAddress):
        raise AddressError(
            _(
                "{address}: bench measures socket servers: tcp://, udp://, unix: or unixgram: addresses"
            ).format(address=repr(text))
        )
    if address.is_tls:
        raise AddressError(
            _(
                "{address}: bench measures TLS on loopback only, with its own servers: "
                "enchufe bench --kind tls,tls+unix"
            ).format(address=repr(text))
        )
    if isinstance(address, InetAddress) and address.is_wildcard:
        raise AddressError(
            _("{address}: bench needs a host to reach, e.g. {example}").format(
                address=repr(text), example=f"{address.scheme}://127.0.0.1:{address.port or 9000}"
            )
        )
    if isinstance(address, InetAddress) and address.port == 0:
        raise AddressError(
            _(
                "{address}: port 0 means 'any free port' when listening; give the port the server listens on"
            ).format(address=repr(text))
        )
    return address


#: The TLS kinds --kind takes besides the six (see :mod:`.tls`).
TLS_KIND_NAMES = ("tls", "tls+unix")


def _split_tls(
    names: list[str] | tuple[str, ...], modes: tuple[str, ...] | None
) -> tuple[list[str], tuple[str, ...]]:
    """The --kind names that are not TLS, and the TLS ones (checked against --mode)."""
    plain: list[str] = []
    tls: list[str] = []
    for name in names:
        for part in (p.strip() for p in name.split(",")):
            if part in TLS_KIND_NAMES:
                _check_mode(modes, True, part)
                if part not in tls:
                    tls.append(part)
            else:
                plain.append(part)
    return plain, tuple(tls)


def _kinds(names: list[str] | tuple[str, ...], modes: tuple[str, ...] | None) -> tuple[Kind, ...]:
    by_label = {k.label: k for k in Kind}
    chosen: list[Kind] = []
    for name in names:
        for part in name.split(","):
            if part.strip() not in by_label:
                known = ", ".join([*by_label, *TLS_KIND_NAMES])
                raise UsageError(
                    _("unknown --kind {kind}; one of {kinds}").format(kind=repr(part.strip()), kinds=known)
                )
            kind = by_label[part.strip()]
            if kind not in chosen:
                chosen.append(kind)
    if chosen:
        for kind in chosen:
            _check_mode(modes, kind.is_stream, kind.label)
        return tuple(chosen)
    if modes is None:
        return tuple(Kind)
    return tuple(k for k in Kind if set(modes) & set(STREAM_MODES if k.is_stream else DATAGRAM_MODES))


def _check_mode(modes: tuple[str, ...] | None, stream: bool, what: str) -> None:
    if modes is None:
        return
    mode = modes[0]
    if stream and mode == "datagram":
        raise UsageError(
            _(
                "--mode datagram measures datagram sockets; {target} is a stream "
                "(use --mode throughput, latency or connect)"
            ).format(target=what)
        )
    if not stream and mode in ("throughput", "connect"):
        raise UsageError(
            _(
                "--mode {mode} measures stream sockets; {target} is a datagram socket "
                "(use --mode datagram or latency)"
            ).format(mode=mode, target=what)
        )


def _check_size(options: Options, target: SocketAddress | Kind) -> None:
    size = options.size
    stream = target.is_stream
    if size is None or stream:
        return
    what = str(target) if not isinstance(target, Kind) else target.label
    if size < HEADER_SIZE:
        raise UsageError(
            _(
                "--size {size} is too small for {target}: each datagram carries bench's "
                "{header}-byte sequence header"
            ).format(size=size, target=what, header=HEADER_SIZE)
        )
    family = target.family if isinstance(target, InetAddress) else None
    if isinstance(target, Kind):
        family = {Kind.UDP4: 4, Kind.UDP6: 6}.get(target)
    if family is not None or (isinstance(target, InetAddress) and target.family is None):
        limit = MAX_UDP_PAYLOAD.get(family or 4, MAX_UDP_PAYLOAD[4])
        if size > limit:
            raise UsageError(
                _("--size {size} does not fit one UDP datagram to {target} (at most {most} bytes)").format(
                    size=size, target=what, most=limit
                )
            )

"""What a bench run does: check the options, plan the measures, run them, collect the figures.

Two arrangements:

* **loopback** (no address given): for each kind, bench starts its own servers in a separate
  process (:mod:`.process`): a sink for throughput, an echo server for latency, an
  accept-and-close server for the connection rate, a counting sink for datagram rate and loss;
* **external** (addresses given): the servers already run (``enchufe echo`` or any echo
  server).  Throughput reads the echo back (``--sink`` if the server discards instead);
  datagram rate counts the echoes that come back, so loss in either direction counts.

The client side of every measure runs in this process (one thread per connection).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..address import InetAddress, Kind, SocketAddress, UnixAddress, parse
from ..errors import AddressError, EnchufeError, UsageError
from . import measures
from .process import ServerProcess
from .results import BenchRun, Machine, Settings, TargetResult
from .sequence import HEADER_SIZE, Counts

__all__ = [
    "DEFAULT_COUNT",
    "DEFAULT_DURATION",
    "DEFAULT_PARALLEL",
    "MODES",
    "Options",
    "Progress",
    "parse_options",
    "run",
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

_LOOPBACK = {
    Kind.TCP4: "tcp://127.0.0.1:0",
    Kind.TCP6: "tcp://[::1]:0",
    Kind.UDP4: "udp://127.0.0.1:0",
    Kind.UDP6: "udp://[::1]:0",
}


class Progress(Protocol):
    """What the runner reports while it measures (the live progress bar)."""

    def begin(self, total: int) -> None: ...

    def step(self, label: str) -> None: ...

    def end(self) -> None: ...


class _Silent:
    def begin(self, total: int) -> None:
        pass

    def step(self, label: str) -> None:
        pass

    def end(self) -> None:
        pass


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
        raise UsageError(f"{option} must be {what}, not {text!r}")
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
            raise UsageError(f"unknown --mode {mode!r}; one of {', '.join(MODES)}")
        modes = (mode,)
    seconds = _number(
        duration, "--duration", "a number of seconds above 0 (e.g. 0.5)", _positive_float, 0, MAX_DURATION
    )
    rounds = _number(
        count, "--count", f"a whole number of round trips from 1 to {MAX_COUNT:,}", int, 1, MAX_COUNT
    )
    conns = _number(
        parallel,
        "-P/--parallel",
        f"a whole number of connections from 1 to {MAX_PARALLEL}",
        int,
        1,
        MAX_PARALLEL,
    )
    chosen_size = _number(
        size, "--size", f"a whole number of bytes from 1 to {MAX_STREAM_SIZE}", int, 1, MAX_STREAM_SIZE
    )
    targets = tuple(_target(text) for text in addresses)
    if targets and kinds:
        raise UsageError(
            "--kind chooses the kinds of the loopback run; with an ADDRESS its scheme says the kind"
        )
    if sink and not targets:
        raise UsageError(
            "--sink describes servers given as ADDRESS; bench's own throughput servers are sinks already"
        )
    chosen_kinds = _kinds(kinds, modes)
    options = Options(
        addresses=targets,
        kinds=chosen_kinds,
        modes=modes,
        duration=seconds if seconds is not None else DEFAULT_DURATION,
        count=int(rounds) if rounds is not None else DEFAULT_COUNT,
        size=int(chosen_size) if chosen_size is not None else None,
        parallel=int(conns) if conns is not None else DEFAULT_PARALLEL,
        sink=sink,
    )
    for target in targets:
        _check_mode(modes, target.is_stream, str(target))
        _check_size(options, target)
    for kind in options.kinds if not targets else ():
        _check_size(options, kind)
    return options


def _target(text: str) -> SocketAddress:
    address = parse(text)
    if not isinstance(address, InetAddress | UnixAddress):
        raise AddressError(
            f"{text!r}: bench measures socket servers: tcp://, udp://, unix: or unixgram: addresses"
        )
    if isinstance(address, InetAddress) and address.is_wildcard:
        raise AddressError(
            f"{text!r}: bench needs a host to reach, e.g. {address.scheme}://127.0.0.1:{address.port or 9000}"
        )
    if isinstance(address, InetAddress) and address.port == 0:
        raise AddressError(
            f"{text!r}: port 0 means 'any free port' when listening; give the port the server listens on"
        )
    return address


def _kinds(names: list[str] | tuple[str, ...], modes: tuple[str, ...] | None) -> tuple[Kind, ...]:
    by_label = {k.label: k for k in Kind}
    chosen: list[Kind] = []
    for name in names:
        for part in name.split(","):
            if part.strip() not in by_label:
                raise UsageError(f"unknown --kind {part.strip()!r}; one of {', '.join(by_label)}")
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
            f"--mode datagram measures datagram sockets; {what} is a stream "
            "(use --mode throughput, latency or connect)"
        )
    if not stream and mode in ("throughput", "connect"):
        raise UsageError(
            f"--mode {mode} measures stream sockets; {what} is a datagram socket "
            "(use --mode datagram or latency)"
        )


def _check_size(options: Options, target: SocketAddress | Kind) -> None:
    size = options.size
    stream = target.is_stream
    if size is None or stream:
        return
    what = str(target) if not isinstance(target, Kind) else target.label
    if size < HEADER_SIZE:
        raise UsageError(
            f"--size {size} is too small for {what}: each datagram carries bench's "
            f"{HEADER_SIZE}-byte sequence header"
        )
    family = target.family if isinstance(target, InetAddress) else None
    if isinstance(target, Kind):
        family = {Kind.UDP4: 4, Kind.UDP6: 6}.get(target)
    if family is not None or (isinstance(target, InetAddress) and target.family is None):
        limit = MAX_UDP_PAYLOAD.get(family or 4, MAX_UDP_PAYLOAD[4])
        if size > limit:
            raise UsageError(f"--size {size} does not fit one UDP datagram to {what} (at most {limit} bytes)")


# ---------------------------------------------------------------------------- plan


def _steps_for(options: Options, stream: bool) -> list[tuple[str, str]]:
    """(measure, label) pairs for one target, in the order they run."""
    steps: list[tuple[str, str]] = []
    for mode in options.modes_for(stream):
        if mode == "throughput":
            steps.append(("throughput", "throughput, 1 connection"))
            if options.parallel > 1:
                steps.append(("throughput-parallel", f"throughput, {options.parallel} connections"))
        elif mode == "latency":
            steps.append(("latency", "latency"))
        elif mode == "connect":
            steps.append(("connect", "connection rate"))
        else:
            for size in _datagram_sizes(options):
                steps.append((f"datagram-{size}", f"datagrams of {size} B"))
    return steps


def _datagram_sizes(options: Options) -> tuple[int, ...]:
    return (options.size,) if options.size is not None else DATAGRAM_SIZES


# ---------------------------------------------------------------------------- running


def run(options: Options, progress: Progress | None = None) -> BenchRun:
    """Measure; every failure of a measure is recorded in its target's ``errors``."""
    progress = progress or _Silent()
    started = time.perf_counter()
    bench = _run_external(options, progress) if options.addresses else _run_loopback(options, progress)
    bench.elapsed = time.perf_counter() - started
    return bench


def _measure(
    target: TargetResult,
    options: Options,
    address_for: Callable[[str], SocketAddress],
    counter: Callable[[int], Counts] | None,
    progress: Progress,
) -> None:
    """Run every step planned for ``target``; ``address_for(measure)`` is the server to use,
    ``counter(token)`` asks bench's counting sink (None: the server echoes)."""
    for measure, label in _steps_for(options, target.stream):
        progress.step(f"{target.name}: {label}")
        try:
            _one(target, measure, options, address_for(measure), counter)
        except EnchufeError as exc:
            target.errors.append(f"{label}: {exc}")


def _one(
    target: TargetResult,
    measure: str,
    options: Options,
    address: SocketAddress,
    counter: Callable[[int], Counts] | None,
) -> None:
    duration, warmup = options.duration, options.warmup
    if measure.startswith("throughput"):
        method = "echo" if target.server == "external" and not options.sink else "sink"
        target.throughput.append(
            measures.throughput(
                address,
                duration=duration,
                warmup=warmup,
                size=options.size or THROUGHPUT_SIZE,
                connections=options.parallel if measure == "throughput-parallel" else 1,
                method=method,
            )
        )
    elif measure == "latency":
        target.latency = measures.latency(
            address, count=options.count, warmup=options.latency_warmup, size=options.size or LATENCY_SIZE
        )
    elif measure == "connect":
        target.connect = measures.connect_rate(address, duration=duration, warmup=warmup)
    else:
        size = int(measure.split("-", 1)[1])
        target.datagram.append(
            measures.datagram_rate(address, duration=duration, warmup=warmup, size=size, counter=counter)
        )


def _run_external(options: Options, progress: Progress) -> BenchRun:
    bench = BenchRun(
        machine=Machine.here(),
        settings=options.settings(),
        arrangement={
            "server": "already running at the address given (not started by bench)",
            "client": f"this process (pid {os.getpid()}), one thread per connection"
            + (
                "; against an echo server a second thread per connection reads the echoes"
                if not options.sink
                else ""
            ),
        },
    )
    plans = [(address, _steps_for(options, address.is_stream)) for address in options.addresses]
    progress.begin(sum(len(steps) for _a, steps in plans) + len(plans))
    try:
        for address in options.addresses:
            kind = address.kind
            target = TargetResult(
                name=str(address),
                address=str(address),
                kind=kind.label if kind is not None else None,
                stream=address.is_stream,
                server="external",
            )
            bench.targets.append(target)
            progress.step(f"{address}: is a server there?")
            try:
                measures.probe(address)
            except EnchufeError as exc:
                target.errors.append(str(exc))
                for _step in _steps_for(options, target.stream):
                    progress.step(f"{address}: skipped")
                continue
            _measure(target, options, _constant(address), None, progress)
    finally:
        progress.end()
    return bench


def _constant(address: SocketAddress) -> Callable[[str], SocketAddress]:
    return lambda _measure: address


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


#: Which of bench's server roles each measure uses.
_ROLE_OF = {"throughput": "sink", "throughput-parallel": "sink", "latency": "echo", "connect": "close"}


def _run_loopback(options: Options, progress: Progress) -> BenchRun:
    folder = tempfile.mkdtemp(prefix="enchufe-bench-", dir="/tmp" if os.path.isdir("/tmp") else None)
    ipv6 = _has_ipv6_loopback()
    plans = [(kind, _steps_for(options, kind.is_stream)) for kind in options.kinds]
    progress.begin(sum(len(steps) for _k, steps in plans))
    try:
        with ServerProcess() as servers:
            bench = BenchRun(
                machine=Machine.here(),
                settings=options.settings(),
                arrangement={
                    "server": f"bench's own, in a separate process (pid {servers.pid}): "
                    "blocking sockets, one thread per connection; throughput into a sink",
                    "client": f"this process (pid {os.getpid()}), one thread per connection",
                },
            )
            for kind, steps in plans:
                target = TargetResult(
                    name=kind.label, address="", kind=kind.label, stream=kind.is_stream, server="bench"
                )
                bench.targets.append(target)
                if kind in (Kind.TCP6, Kind.UDP6) and not ipv6:
                    target.skipped = "this host cannot bind the IPv6 loopback ::1"
                    for _step in steps:
                        progress.step(f"{kind.label}: skipped")
                    continue
                _loopback_kind(kind, target, options, servers, folder, progress)
    finally:
        progress.end()
        shutil.rmtree(folder, ignore_errors=True)
    return bench


def _loopback_kind(
    kind: Kind,
    target: TargetResult,
    options: Options,
    servers: ServerProcess,
    folder: str,
    progress: Progress,
) -> None:
    started: dict[str, tuple[int, SocketAddress]] = {}

    def server(role: str) -> tuple[int, SocketAddress]:
        if role not in started:
            bind = _LOOPBACK.get(kind, f"{kind.label}://{folder}/{kind.label}-{role}.sock")
            started[role] = servers.start(role, bind)
        return started[role]

    def address_for(measure: str) -> SocketAddress:
        role = _ROLE_OF.get(measure, "count")
        return server(role)[1]

    def counter(token: int) -> Counts:
        return servers.counts(server("count")[0], token)

    try:
        target.address = str(server("echo")[1])
        _measure(target, options, address_for, counter, progress)
    except EnchufeError as exc:  # the server itself could not start
        target.errors.append(str(exc))
    finally:
        for server_id, _address in started.values():
            try:
                servers.stop(server_id)
            except EnchufeError as exc:
                target.errors.append(f"stopping bench's server: {exc}")

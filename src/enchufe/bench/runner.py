"""What a bench run does: check the options, plan the measures, run them, collect the figures.

Two arrangements:

* **loopback** (no address given): for each kind, bench starts its own servers in a separate
  process (:mod:`.process`): a sink for throughput, an echo server for latency, an
  accept-and-close server for the connection rate, a counting sink for datagram rate and loss;
* **external** (addresses given): the servers already run (``enchufe echo`` or any echo
  server).  Throughput reads the echo back (``--sink`` if the server discards instead);
  datagram rate counts the echoes that come back, so loss in either direction counts.

The client side of every measure runs in this process (one thread per connection).

What the run records for the JSON (labels, the arrangement, reasons to skip) is English; the
progress bar shows it in the user's language (:func:`~.results.shown`).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable

from ..address import Kind, SocketAddress
from ..errors import EnchufeError
from ..i18n import _
from . import measures
from . import tls as tls_measures
from .options import (
    DATAGRAM_SIZES,
    DEFAULT_COUNT,
    DEFAULT_DURATION,
    DEFAULT_PARALLEL,
    LATENCY_SIZE,
    MODES,
    THROUGHPUT_SIZE,
    Options,
    parse_options,
)
from .process import ServerProcess
from .progress import NoProgress, Progress
from .results import BenchRun, Machine, TargetResult, shown
from .sequence import Counts

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

_LOOPBACK = {
    Kind.TCP4: "tcp://127.0.0.1:0",
    Kind.TCP6: "tcp://[::1]:0",
    Kind.UDP4: "udp://127.0.0.1:0",
    Kind.UDP6: "udp://[::1]:0",
}


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


def _tls_steps(options: Options) -> list[tuple[str, str]]:
    """(measure, label) pairs for a TLS kind and for its plain twin, in the order they run."""
    labels = {"throughput": "throughput, 1 connection", "latency": "latency", "connect": "connection rate"}
    return [(mode, labels[mode]) for mode in options.modes_for(True)]


def _datagram_sizes(options: Options) -> tuple[int, ...]:
    return (options.size,) if options.size is not None else DATAGRAM_SIZES


# ---------------------------------------------------------------------------- running


def run(options: Options, progress: Progress | None = None) -> BenchRun:
    """Measure; every failure of a measure is recorded in its target's ``errors``."""
    progress = progress or NoProgress()
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
        progress.step(f"{target.name}: {shown(label)}")
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
            progress.step(_("{address}: is a server there?").format(address=address))
            try:
                measures.probe(address)
            except EnchufeError as exc:
                target.errors.append(str(exc))
                for _step in _steps_for(options, target.stream):
                    progress.step(_("{target}: skipped").format(target=address))
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
    progress.begin(
        sum(len(steps) for _k, steps in plans) + 2 * len(options.tls_kinds) * len(_tls_steps(options))
    )
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
                        progress.step(_("{target}: skipped").format(target=kind.label))
                    continue
                _loopback_kind(kind, target, options, servers, folder, progress)
            for name in options.tls_kinds:
                bench.targets += _loopback_tls(name, options, servers, folder, progress)
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


def _loopback_tls(
    name: str, options: Options, servers: ServerProcess, folder: str, progress: Progress
) -> list[TargetResult]:
    """A TLS kind and its plain twin (the same measures through the same connection object,
    without TLS), twin first; each measure's server is started for it and stopped after."""
    tls_bind, plain_bind = (a.format(folder=folder) for a in tls_measures.TLS_KINDS[name])
    plain = tls_measures.PLAIN_TWIN[name]
    twin = TargetResult(name=f"{plain} (no TLS)", address="", kind=plain, stream=True, server="bench")
    target = TargetResult(name=name, address="", kind=name, stream=True, server="bench", baseline=twin.name)
    for result, bind in ((twin, plain_bind), (target, tls_bind)):
        for measure, label in _tls_steps(options):
            progress.step(f"{result.name}: {shown(label)}")
            try:
                _tls_one(result, measure, label, options, servers, bind)
            except EnchufeError as exc:
                result.errors.append(f"{label}: {exc}")
    return [twin, target]


_TLS_ROLE = {"throughput": "lib-sink", "latency": "lib-echo", "connect": "lib-close"}


def _tls_one(
    target: TargetResult, measure: str, label: str, options: Options, servers: ServerProcess, bind: str
) -> None:
    server_id, bound = servers.start(_TLS_ROLE[measure], bind)
    try:
        address = tls_measures.client_address(bound, servers.pin(server_id))
        target.address = target.address or str(address)
        duration, warmup = options.duration, options.warmup
        if measure == "throughput":
            size = options.size or THROUGHPUT_SIZE
            target.throughput.append(
                tls_measures.throughput(address, duration=duration, warmup=warmup, size=size)
            )
        elif measure == "latency":
            target.latency = tls_measures.pingpong(
                address, count=options.count, warmup=options.latency_warmup, size=options.size or LATENCY_SIZE
            )
        else:
            target.connect = tls_measures.handshake_rate(address, duration=duration, warmup=warmup)
    finally:
        servers.stop(server_id)

"""The figures of a bench run as values, and their JSON form.

``--json`` prints :meth:`BenchRun.to_dict` as one object::

    {
      "schema": "enchufe-bench/1",
      "started": "2026-05-09T10:00:00+00:00", "elapsed_s": 24.1,
      "machine": {"cores": 2, "usable_cores": 2, "system": "Linux", "kernel": "6.1.0", "arch": "x86_64",
                  "python": "3.11.7", "implementation": "CPython", "loop": "…", "load_1m": 0.4},
      "settings": {"duration_s": 1.0, "warmup_s": 0.2, "count": 5000, "latency_warmup": 200,
                   "size": null, "parallel": 4, "modes": ["throughput", …]},
      "arrangement": {"server": "…", "client": "…"},
      "targets": [
        {"name": "tcp4", "address": "tcp://127.0.0.1:40000", "kind": "tcp4", "stream": true,
         "server": "bench",
         "throughput": [{"connections": 1, "size": 131072, "seconds": 1.0, "bytes": …,
                         "mb_per_s": …, "method": "sink"}, …],
         "latency": {"size": 64, "round_trips": 5000, "warmup": 200, "lost": 0, "late": 0,
                     "samples": 5000, "min_us": …, "p50_us": …, "p90_us": …, "p99_us": …,
                     "max_us": …, "mean_us": …},
         "connect": {"seconds": 1.0, "connections": …, "per_s": …},
         "datagram": [],
         "errors": [], "skipped": null},
        {"name": "udp4", …, "throughput": [], "connect": null,
         "datagram": [{"size": 64, "seconds": 1.0, "sent": …, "received": …, "duplicates": 0,
                       "reordered": 0, "sent_per_s": …, "received_per_s": …, "loss": 0.01,
                       "mb_per_s": …, "method": "sink"}, …]}
      ]
    }

A measure that does not apply to a kind is ``null`` (or ``[]``); one that failed is ``null``
with its error in ``errors``.  MB is 10⁶ bytes.  Latency samples themselves stay out of the
JSON (only the plot uses them).

The JSON is the same whatever ``--lang`` says: bench's own words in it (the arrangement, a
measure's label before its error, why a kind was skipped) are English, and :func:`shown` gives
them in the user's language for the tables and the error lines.  The error after a label is
enchufe's message, in the language of the run.
"""

from __future__ import annotations

import datetime
import functools
import os
import platform
import re
from dataclasses import dataclass, field
from typing import Any

from ..i18n import _, language
from .stats import Summary

__all__ = [
    "MB",
    "SCHEMA",
    "BenchRun",
    "ConnectRate",
    "DatagramRate",
    "Latency",
    "Machine",
    "Settings",
    "TargetResult",
    "Throughput",
    "shown",
]

SCHEMA = "enchufe-bench/1"
#: Throughput is reported in MB/s with MB = 10⁶ bytes (iperf3's "MBytes" are 2²⁰; see RESULTS.md).
MB = 1_000_000


def _round(value: float, digits: int = 3) -> float:
    return round(value, digits)


@dataclass
class Throughput:
    """Bytes moved through ``connections`` stream connections in ``seconds`` (warm-up excluded).

    ``method`` says what was counted: ``"sink"`` — bytes sent to a server that discards them,
    the clock stopped once the server had read them all (it closed after our EOF);
    ``"echo"`` — bytes an echo server sent back, counted as they arrived.
    """

    connections: int
    size: int
    seconds: float
    bytes: int
    method: str

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / MB if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "size": self.size,
            "seconds": _round(self.seconds, 4),
            "bytes": self.bytes,
            "mb_per_s": _round(self.mb_per_s, 2),
            "method": self.method,
        }


@dataclass
class Latency:
    """Ping-pong round trips of ``size`` bytes; the summary is over every counted sample."""

    size: int
    round_trips: int
    warmup: int
    summary: Summary
    lost: int = 0
    late: int = 0
    samples_ns: list[int] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        s = self.summary
        return {
            "size": self.size,
            "round_trips": self.round_trips,
            "warmup": self.warmup,
            "lost": self.lost,
            "late": self.late,
            "samples": s.samples,
            "min_us": _round(s.min_us, 2),
            "p50_us": _round(s.p50_us, 2),
            "p90_us": _round(s.p90_us, 2),
            "p99_us": _round(s.p99_us, 2),
            "max_us": _round(s.max_us, 2),
            "mean_us": _round(s.mean_us, 2),
        }


@dataclass
class ConnectRate:
    """Complete connection cycles (connect, accepted, closed by both sides) in ``seconds``."""

    seconds: float
    connections: int

    @property
    def per_s(self) -> float:
        return self.connections / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": _round(self.seconds, 4),
            "connections": self.connections,
            "per_s": _round(self.per_s, 1),
        }


@dataclass
class DatagramRate:
    """Datagrams of ``size`` bytes sent as fast as the socket takes them for ``seconds``.

    ``method``: ``"sink"`` — ``received`` counted by bench's own receiver; ``"echo"`` —
    ``received`` counts the echoes that came back (loss in either direction counts).
    """

    size: int
    seconds: float
    sent: int
    received: int
    duplicates: int
    reordered: int
    method: str

    @property
    def sent_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def received_per_s(self) -> float:
        return self.received / self.seconds if self.seconds > 0 else 0.0

    @property
    def loss(self) -> float:
        return (self.sent - self.received) / self.sent if self.sent else 0.0

    @property
    def mb_per_s(self) -> float:
        """Payload bytes received per second, in MB (10⁶ bytes)."""
        return self.received_per_s * self.size / MB

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "seconds": _round(self.seconds, 4),
            "sent": self.sent,
            "received": self.received,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "sent_per_s": _round(self.sent_per_s, 1),
            "received_per_s": _round(self.received_per_s, 1),
            "loss": _round(self.loss, 5),
            "mb_per_s": _round(self.mb_per_s, 3),
            "method": self.method,
        }


@dataclass
class TargetResult:
    """Every figure measured for one target: a kind on loopback, or an address given."""

    name: str
    address: str
    kind: str | None
    stream: bool
    server: str  # "bench" (our own, in a separate process) or "external"
    throughput: list[Throughput] = field(default_factory=list)
    latency: Latency | None = None
    connect: ConnectRate | None = None
    datagram: list[DatagramRate] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: str | None = None
    #: A TLS target: the name of its twin, the same connection without TLS, measured in the same run.
    baseline: str | None = None

    def to_dict(self) -> dict[str, Any]:
        extra = {"baseline": self.baseline} if self.baseline is not None else {}
        return {
            **extra,
            "name": self.name,
            "address": self.address,
            "kind": self.kind,
            "stream": self.stream,
            "server": self.server,
            "throughput": [t.to_dict() for t in self.throughput],
            "latency": self.latency.to_dict() if self.latency else None,
            "connect": self.connect.to_dict() if self.connect else None,
            "datagram": [d.to_dict() for d in self.datagram],
            "errors": list(self.errors),
            "skipped": self.skipped,
        }


#: How the client and bench's own servers do their I/O (the "loop" of the machine info).
IO_MODEL = "none: blocking sockets, one thread per connection (client and bench's servers)"


@dataclass
class Machine:
    """Where the run happened; enough to know whether two runs can be compared."""

    cores: int
    usable_cores: int
    system: str
    kernel: str
    arch: str
    python: str
    implementation: str
    loop: str
    load_1m: float | None

    @classmethod
    def here(cls) -> Machine:
        try:
            usable = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            usable = os.cpu_count() or 1
        try:
            load: float | None = round(os.getloadavg()[0], 2)
        except OSError:  # pragma: no cover
            load = None
        return cls(
            cores=os.cpu_count() or 1,
            usable_cores=usable,
            system=platform.system(),
            kernel=platform.release(),
            arch=platform.machine(),
            python=platform.python_version(),
            implementation=platform.python_implementation(),
            loop=IO_MODEL,
            load_1m=load,
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Settings:
    """What was asked for: per-test duration, round trips, sizes, parallel connections."""

    duration: float
    warmup: float
    count: int
    latency_warmup: int
    size: int | None
    parallel: int
    modes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "duration_s": self.duration,
            "warmup_s": _round(self.warmup, 4),
            "count": self.count,
            "latency_warmup": self.latency_warmup,
            "size": self.size,
            "parallel": self.parallel,
            "modes": list(self.modes),
        }


@dataclass
class BenchRun:
    """One run of ``enchufe bench``: everything the table, the JSON and the plot show."""

    machine: Machine
    settings: Settings
    arrangement: dict[str, str]
    targets: list[TargetResult] = field(default_factory=list)
    started: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    )
    elapsed: float = 0.0

    @property
    def errors(self) -> list[str]:
        return [e if t.name in e else f"{t.name}: {e}" for t in self.targets for e in t.errors]

    @property
    def shown_errors(self) -> list[str]:
        """:attr:`errors` in the user's language (see :func:`shown`)."""
        return [shown(e) if t.name in e else f"{t.name}: {shown(e)}" for t in self.targets for e in t.errors]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "started": self.started,
            "elapsed_s": _round(self.elapsed, 4),
            "machine": self.machine.to_dict(),
            "settings": self.settings.to_dict(),
            "arrangement": dict(self.arrangement),
            "targets": [t.to_dict() for t in self.targets],
        }


# ---------------------------------------------------------------------------- bench's words


def _phrases() -> list[tuple[str, str]]:
    """(bench's English phrase as the JSON keeps it, the same in the current language), a longer
    phrase before its prefix."""
    return [
        ("throughput, 1 connection", _("throughput, 1 connection")),
        ("throughput, {connections} connections", _("throughput, {connections} connections")),
        ("latency", _("latency")),
        ("connection rate", _("connection rate")),
        ("datagrams of {size} B", _("datagrams of {size} B")),
        ("stopping bench's server", _("stopping bench's server")),
        ("this host cannot bind the IPv6 loopback ::1", _("this host cannot bind the IPv6 loopback ::1")),
        (
            "bench's own, in a separate process (pid {pid}): blocking sockets, one thread per "
            "connection; throughput into a sink",
            _(
                "bench's own, in a separate process (pid {pid}): blocking sockets, one thread per "
                "connection; throughput into a sink"
            ),
        ),
        (
            "this process (pid {pid}), one thread per connection; against an echo server a second "
            "thread per connection reads the echoes",
            _(
                "this process (pid {pid}), one thread per connection; against an echo server a second "
                "thread per connection reads the echoes"
            ),
        ),
        (
            "this process (pid {pid}), one thread per connection",
            _("this process (pid {pid}), one thread per connection"),
        ),
        (
            "already running at the address given (not started by bench)",
            _("already running at the address given (not started by bench)"),
        ),
    ]


@functools.cache
def _pattern(english: str) -> re.Pattern[str]:
    """``datagrams of {size} B`` → a pattern that matches the phrase alone, or before ``: ERROR``."""
    parts = re.split(r"\{(\w+)\}", english)
    body = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^:]+?)" for i, part in enumerate(parts))
    return re.compile(f"{body}(?P<_rest>: .*)?", re.DOTALL)


def shown(text: str) -> str:
    """``text``, one of bench's English phrases as the JSON keeps it (a reason to skip, the
    arrangement) or a measure's error (``LABEL: ERROR``), in the current language: the phrase
    or the label translated, the error after it as it is (enchufe's message, already in the
    language of the run).  Anything else is returned as it is."""
    if language() == "en":
        return text
    for english, translated in _phrases():
        found = _pattern(english).fullmatch(text)
        if found is not None:
            fields = found.groupdict()
            rest = fields.pop("_rest") or ""
            return translated.format(**fields) + rest
    return text

"""``--plot FILE.png``: the run drawn as charts, with matplotlib (the optional extra ``plot``).

Four panels: stream throughput (one connection and parallel ones) per kind, connections per
second per kind, datagrams received (and sent) per second per kind and payload size, and the
latency distribution of every kind (one box per kind, over every sample, on a log scale).

matplotlib is imported only here, through its object-oriented API (no pyplot, no global
state, no display needed); :func:`require` says clearly when it is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import EnchufeError, UsageError, reason
from ..i18n import _
from .results import BenchRun, DatagramRate, TargetResult

__all__ = ["PlotUnavailable", "draw", "require"]

INSTALL_HINT = "pip install 'enchufe[plot]' (or pip install matplotlib)"


class PlotUnavailable(UsageError):
    """matplotlib is not installed."""


def require() -> None:
    """Raise :class:`PlotUnavailable` (one line, exit status 2) unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(
            _("--plot needs matplotlib, which is not installed: {install}").format(install=INSTALL_HINT)
        ) from None


def draw(run: BenchRun, path: str) -> None:
    """Write the charts of ``run`` to ``path`` as a PNG."""
    require()
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 9), layout="constrained")
    (throughput, connect), (datagram, latency) = figure.subplots(2, 2)
    _panel(throughput, run, _("stream throughput"), lambda t: bool(t.throughput), _throughput)
    _panel(connect, run, _("connection rate (connect + accept + close)"), lambda t: bool(t.connect), _connect)
    _panel(
        datagram, run, _("datagrams received per second (loss in %)"), lambda t: bool(t.datagram), _datagrams
    )
    _panel(
        latency,
        run,
        _("ping-pong round trip, every sample"),
        lambda t: bool(t.latency and t.latency.samples_ns),
        _latency,
    )
    m = run.machine
    figure.suptitle(
        _("enchufe bench — {cores} cores, {system}, {python}; {duration} s per test").format(
            cores=m.cores,
            system=f"{m.system} {m.kernel}",
            python=f"{m.implementation} {m.python}",
            duration=f"{run.settings.duration:g}",
        ),
        fontsize=11,
    )
    try:
        figure.savefig(path, format="png", dpi=100)
    except OSError as exc:
        why = reason(exc, lower=False)
        message = _("cannot write the plot to {file}: {reason}").format(file=path, reason=why)
        raise EnchufeError(message) from exc


def _bars(axes: Any, names: list[str], series: dict[str, list[float]], unit: str) -> None:
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        positions = [x + (i - (len(series) - 1) / 2) * width for x in range(len(names))]
        bars = axes.bar(positions, values, width, label=label)
        axes.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=7, padding=2)
    axes.set_xticks(range(len(names)), names)
    axes.set_ylabel(unit)
    if len(series) > 1:
        axes.legend(fontsize=8)


def _panel(
    axes: Any,
    run: BenchRun,
    title: str,
    measured: Callable[[TargetResult], bool],
    chart: Callable[[Any, list[TargetResult]], None],
) -> None:
    """One panel: ``chart`` of the targets ``measured`` applies to, or "not measured"."""
    targets = [t for t in run.targets if measured(t)]
    if not targets:
        axes.set_title(title)
        axes.text(
            0.5, 0.5, _("not measured"), ha="center", va="center", transform=axes.transAxes, color="gray"
        )
        axes.set_xticks([])
        axes.set_yticks([])
        return
    chart(axes, targets)
    axes.set_title(title)


def _throughput(axes: Any, targets: list[TargetResult]) -> None:
    counts = sorted({tp.connections for t in targets for tp in t.throughput})
    series = {
        _connections(n): [
            next((tp.mb_per_s for tp in t.throughput if tp.connections == n), 0.0) for t in targets
        ]
        for n in counts
    }
    _bars(axes, [t.name for t in targets], series, _("MB/s (10⁶ bytes)"))


def _connections(n: int) -> str:
    return _("{count} connections").format(count=n) if n > 1 else _("{count} connection").format(count=n)


def _connect(axes: Any, targets: list[TargetResult]) -> None:
    _bars(
        axes,
        [t.name for t in targets],
        {"": [t.connect.per_s for t in targets if t.connect]},
        _("connections/s"),
    )


def _datagrams(axes: Any, targets: list[TargetResult]) -> None:
    sizes = sorted({d.size for t in targets for d in t.datagram})
    width = 0.8 / len(sizes)
    for i, size in enumerate(sizes):
        rates = [next((d for d in t.datagram if d.size == size), None) for t in targets]
        positions = [x + (i - (len(sizes) - 1) / 2) * width for x in range(len(targets))]
        sent = [r.sent_per_s if r else 0.0 for r in rates]
        received = [r.received_per_s if r else 0.0 for r in rates]
        axes.bar(positions, sent, width, color="none", edgecolor="gray", hatch="//", linewidth=0.5)
        bars = axes.bar(positions, received, width, label=f"{size} B")
        axes.bar_label(bars, labels=[_loss(r) for r in rates], fontsize=7, padding=2)
    axes.set_xticks(range(len(targets)), [t.name for t in targets])
    axes.set_ylabel(_("datagrams/s (hatched: sent)"))
    axes.legend(fontsize=8)


def _loss(rate: DatagramRate | None) -> str:
    return f"{rate.loss * 100:.1f} %" if rate else ""


def _latency(axes: Any, targets: list[TargetResult]) -> None:
    data = [[ns / 1000 for ns in t.latency.samples_ns] for t in targets if t.latency]
    axes.boxplot(data, whis=(1, 99), showfliers=True, flierprops={"markersize": 2, "alpha": 0.3})
    axes.set_xticks(range(1, len(targets) + 1), [t.name for t in targets])
    axes.set_yscale("log")
    axes.set_ylabel(_("µs (box: p25 to p75, line: p50, whiskers: p1 to p99)"))

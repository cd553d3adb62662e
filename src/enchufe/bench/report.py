"""The tables: rich when it is installed, plain text otherwise.

The tables are built as plain rows of strings first (:func:`tables`), so what they say does not
depend on how they are drawn.  rich is imported only by the functions that draw, and only when
``enchufe bench`` runs.

The tables speak the user's language (titles, columns, notes, "failed"); the figures, units
and kinds are the same in every language.  The progress bar is :mod:`.progress`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..i18n import _
from .compare import Change
from .results import BenchRun, TargetResult, shown

__all__ = ["Grid", "print_report", "tables"]


@dataclass
class Grid:
    """A table as text: a title, column headers, rows of cells, notes printed under it."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: the comparison with an earlier run: its last column is coloured better or worse
    comparison: bool = False


# ---------------------------------------------------------------------------- numbers


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _mb(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _us(value: float) -> str:
    return f"{value:,.0f}" if value >= 1000 else f"{value:.1f}"


def _percent(fraction: float) -> str:
    if fraction == 0:
        return "0 %"
    return f"{fraction * 100:.2f} %" if fraction >= 0.0001 else "<0.01 %"


NA = "—"


# ---------------------------------------------------------------------------- tables


def _failed(target: TargetResult, label: str) -> str:
    """ "failed" if the measure labelled ``label`` failed for ``target``, else "—" (not measured)."""
    return _("failed") if any(e.startswith(label + ":") for e in target.errors) else NA


def _measured_nothing(target: TargetResult) -> bool:
    return not (target.throughput or target.latency or target.connect or target.datagram)


def tables(run: BenchRun) -> list[Grid]:
    """The report as text tables: every target, then the datagram details."""
    main = _without_empty_columns(_main_grid(run))
    grids = [main] if len(main.columns) > 1 else []
    datagrams = _datagram_grid(run)
    if not grids:  # nothing but datagram rates measured: their table carries the notes
        datagrams.notes = main.notes
    if datagrams.rows:
        method = {r.method for t in run.targets for r in t.datagram}
        if method == {"sink"}:
            note = _(
                "received: distinct sequence numbers that bench's receiver (a separate process) "
                "counted; UDP drops what the receiver cannot take in time, unix datagram sockets "
                "make the sender wait instead"
            )
        else:
            note = _(
                "received: distinct sequence numbers of the echoes that came back (loss either way "
                "counts); UDP drops what the receiver cannot take in time, unix datagram sockets "
                "make the sender wait instead"
            )
        datagrams.notes.append(note)
        grids.append(datagrams)
    tls = _tls_grid(run)
    if tls.rows:
        grids.append(tls)
    return grids


def _tls_grid(run: BenchRun) -> Grid:
    """Each TLS kind beside its plain twin: the figure with TLS, without, and their ratio."""
    grid = Grid(
        _("TLS beside the same connection without TLS"),
        [_("kind"), _("measure"), "TLS", _("no TLS"), _("ratio")],
    )
    by_name = {t.name: t for t in run.targets}
    for target in run.targets:
        twin = by_name.get(target.baseline or "")
        if twin is None:
            continue
        for label, measure, with_tls, without, show in _tls_pairs(target, twin):
            ratio = f"{with_tls / without:.2f}x" if with_tls is not None and without else NA
            grid.rows.append(
                [
                    target.name,
                    measure,
                    show(with_tls) if with_tls is not None else _failed(target, label),
                    show(without) if without is not None else _failed(twin, label),
                    ratio,
                ]
            )
    grid.notes = [
        _(
            "(no TLS): the same measures through the same connection object (enchufe's send_all/recv), "
            "without TLS; the TLS server has a cert=auto certificate, the client trusts its pin"
        ),
        _("conn/s with TLS: a full handshake per connection (no session resumption); ratio: TLS ÷ no TLS"),
    ]
    return grid


def _tls_pairs(
    target: TargetResult, twin: TargetResult
) -> list[tuple[str, str, float | None, float | None, Any]]:
    """(measure's label, its name, with TLS, without, how to show it) for each measure either
    side has or failed."""

    def mb(t: TargetResult) -> float | None:
        return t.throughput[0].mb_per_s if t.throughput else None

    def rate(t: TargetResult) -> float | None:
        return t.connect.per_s if t.connect else None

    def p50(t: TargetResult) -> float | None:
        return t.latency.summary.p50_us if t.latency else None

    pairs = [
        ("throughput, 1 connection", mb, _mb, "MB/s"),
        ("connection rate", rate, _rate, _("handshakes/s")),
        ("latency", p50, _us, _("ping-pong p50 µs")),
    ]
    rows = []
    for label, get, fmt, name in pairs:
        a, b = get(target), get(twin)
        if (
            a is None
            and b is None
            and not any(e.startswith(label + ":") for e in target.errors + twin.errors)
        ):
            continue
        rows.append((label, name, a, b, fmt))
    return rows


def _main_grid(run: BenchRun) -> Grid:
    """Every target's stream figures and latency, one row each (empty columns still in)."""
    parallel = run.settings.parallel
    main = Grid(
        _("enchufe bench, loopback") if _loopback(run) else _("enchufe bench, servers given"),
        [
            _first_column(run),
            _("MB/s, 1 conn"),
            _("MB/s, {connections} conns").format(connections=parallel),
            _("conn/s"),
            "RTT p50 µs",
            "p90",
            "p99",
            _("max"),
        ],
    )
    main.rows = [_main_row(target, parallel) for target in run.targets]
    main.notes = _notes(run)
    return main


def _main_row(target: TargetResult, parallel: int) -> list[str]:
    if target.skipped or (target.errors and _measured_nothing(target)):
        return [target.name, _("skipped") if target.skipped else _("failed"), "", "", "", "", "", ""]
    return [target.name, *_stream_cells(target, parallel), *_latency_cells(target)]


def _stream_cells(target: TargetResult, parallel: int) -> list[str]:
    """MB/s with one connection and with ``parallel``, and connections per second."""
    if not target.stream:
        return [NA, NA, NA]
    single = next((t for t in target.throughput if t.connections == 1), None)
    multi = next((t for t in target.throughput if t.connections > 1), None)
    return [
        _mb(single.mb_per_s) if single else _failed(target, "throughput, 1 connection"),
        _mb(multi.mb_per_s) if multi else _failed(target, f"throughput, {parallel} connections"),
        _rate(target.connect.per_s) if target.connect else _failed(target, "connection rate"),
    ]


def _latency_cells(target: TargetResult) -> list[str]:
    """The round trip's p50, p90, p99 and maximum, in µs."""
    if not target.latency:
        return [_failed(target, "latency"), "", "", ""]
    s = target.latency.summary
    return [_us(s.p50_us), _us(s.p90_us), _us(s.p99_us), _us(s.max_us)]


def _datagram_grid(run: BenchRun) -> Grid:
    """A row per datagram size measured (or failed) for each target."""
    datagrams = Grid(
        _("datagrams: sent as fast as the socket takes them"),
        [_first_column(run), _("payload"), _("sent/s"), _("received/s"), _("lost"), _("MB/s received")],
    )
    for target in run.targets:
        for rate in target.datagram:
            datagrams.rows.append(
                [
                    target.name,
                    f"{rate.size} B",
                    _rate(rate.sent_per_s),
                    _rate(rate.received_per_s),
                    _percent(rate.loss),
                    _mb(rate.mb_per_s),
                ]
            )
        for error in target.errors:
            if error.startswith("datagrams of"):
                size = error.split(" ", 3)[2]
                datagrams.rows.append([target.name, f"{size} B", _("failed"), "", "", ""])
    return datagrams


def _without_empty_columns(grid: Grid) -> Grid:
    """The grid without the columns (but the first) in which no row has a figure."""
    keep = [0] + [i for i in range(1, len(grid.columns)) if any(row[i] not in (NA, "") for row in grid.rows)]
    return Grid(
        grid.title,
        [grid.columns[i] for i in keep],
        [[row[i] for i in keep] for row in grid.rows],
        grid.notes,
    )


def _loopback(run: BenchRun) -> bool:
    return all(t.server == "bench" for t in run.targets)


def _first_column(run: BenchRun) -> str:
    return _("kind") if _loopback(run) else _("address")


def _notes(run: BenchRun) -> list[str]:
    m = run.machine
    notes = [
        _("server: {arrangement}").format(arrangement=shown(run.arrangement.get("server", "?"))),
        _("client: {arrangement}").format(arrangement=shown(run.arrangement.get("client", "?"))),
        *_method_notes(run),
    ]
    machine = {
        "cores": m.cores,
        "system": f"{m.system} {m.kernel}",
        "python": f"{m.implementation} {m.python}",
    }
    if m.load_1m is not None:
        note = _(
            "machine: {cores} cores, {system}, {python}, load {load} at start; "
            "other work on the machine moves these figures"
        ).format(load=f"{m.load_1m:g}", **machine)
    else:
        note = _("machine: {cores} cores, {system}, {python}; other work on the machine moves these figures")
        note = note.format(**machine)
    notes.append(note)
    notes += [
        _("{target} skipped: {reason}").format(target=target.name, reason=shown(target.skipped))
        for target in run.targets
        if target.skipped
    ]
    return notes


def _method_notes(run: BenchRun) -> list[str]:
    """How throughput, latency and the connection rate were measured (those that were)."""
    s = run.settings
    notes = []
    methods = {t.method for target in run.targets for t in target.throughput}
    if methods:
        if methods == {"sink"}:
            counted = _("counted at the sink end")
        elif methods == {"echo"}:
            counted = _("counted at the echo end")
        else:
            counted = _("counted at the echo and sink ends")
        size = next(t.size for target in run.targets for t in target.throughput)
        notes.append(
            _(
                "throughput: {size}-byte writes, {duration} s after a {warmup} s warm-up, {counted}; "
                "MB = 10⁶ bytes"
            ).format(size=f"{size:,}", duration=f"{s.duration:g}", warmup=f"{s.warmup:g}", counted=counted)
        )
    latencies = [t.latency for t in run.targets if t.latency]
    if latencies:
        lat = latencies[0]
        notes.append(
            _(
                "latency: {round_trips} ping-pong round trips of {size} B after {warmup} uncounted; "
                "percentiles over every sample"
            ).format(round_trips=f"{lat.round_trips:,}", size=lat.size, warmup=lat.warmup)
        )
    if any(t.connect for t in run.targets):
        notes.append(_("conn/s: connect, accept, close on both sides, one connection after another"))
    return notes


def compare_grid(changes: list[Change], source: str) -> Grid:
    grid = Grid(
        _("compared with {file}").format(file=source),
        [_("figure"), _("before"), _("now"), _("change")],
        comparison=True,
    )
    for change in changes:
        grid.rows.append(
            [change.label, change.format(change.before), change.format(change.now), change.shown()]
        )
    if not changes:
        grid.notes.append(_("no figure in common with the earlier run"))
    return grid


# ---------------------------------------------------------------------------- drawing


def print_report(
    run: BenchRun, *, changes: list[Change] | None = None, source: str = "", out: TextIO | None = None
) -> None:
    """Draw the tables (and the comparison) on ``out`` (stdout by default)."""
    out = out or sys.stdout
    grids = tables(run)
    if changes is not None:
        grids.append(compare_grid(changes, source))
    try:
        import rich  # noqa: F401
    except ImportError:
        _print_plain(grids, out)
    else:
        _print_rich(grids, out, changes)


def _print_rich(grids: list[Grid], out: TextIO, changes: list[Change] | None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=out, width=None if out.isatty() else 140, soft_wrap=False)
    verdicts = {c.label: c.better for c in changes or []}
    for grid in grids:
        table = Table(title=grid.title, title_justify="left", header_style="bold")
        for i, column in enumerate(grid.columns):
            table.add_column(column, justify="left" if i == 0 else "right", no_wrap=i == 0)
        for row in grid.rows:
            verdict = verdicts.get(row[0]) if grid.comparison else None
            table.add_row(*_styled(row, verdict))
        console.print(table)
        for note in grid.notes:
            console.print(Text(note, style="dim"), highlight=False)
        console.print()


def _styled(row: list[str], verdict: bool | None) -> list[Any]:
    """A row's cells for rich: a comparison's change green or red as it is ``verdict``
    (better or not), failed cells red and skipped ones yellow."""
    from rich.text import Text

    cells: list[Any] = list(row)
    if verdict is not None:
        cells[-1] = Text(row[-1], style="green" if verdict else "red")
    elif any(c in (_("failed"), _("skipped")) for c in row):
        cells = [Text(c, style="red" if c == _("failed") else "yellow") for c in row]
    return cells


def _print_plain(grids: list[Grid], out: TextIO) -> None:
    for grid in grids:
        widths = [len(c) for c in grid.columns]
        for row in grid.rows:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

        def line(cells: list[str], widths: list[int] = widths) -> str:
            parts = [cells[0].ljust(widths[0])] + [
                c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)
            ]
            return "  ".join(parts).rstrip()

        out.write(grid.title + "\n")
        out.write(line(grid.columns) + "\n")
        out.write("  ".join("-" * w for w in widths) + "\n")
        for row in grid.rows:
            out.write(line(row) + "\n")
        for note in grid.notes:
            out.write(note + "\n")
        out.write("\n")
    out.flush()

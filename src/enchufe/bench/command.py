"""What ``enchufe bench`` does, from checked options to output: the CLI makes this one call.

Everything that can be wrong with the request is found before the first socket is opened
(exit status 2): the options, the addresses, a ``--compare`` file that is not an earlier run,
a ``--plot`` without matplotlib.  A measure that fails while running is reported on its own
line and makes the exit status 1; the others are still shown.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from .._text import printable
from ..errors import UsageError
from ..i18n import _
from . import compare as compare_mod
from . import runner
from .compare import Change
from .results import BenchRun

__all__ = ["Request", "main"]


@dataclass(frozen=True)
class Request:
    """What the command line asked for, numbers already checked by the CLI's types."""

    addresses: tuple[str, ...] = ()
    mode: str | None = None
    kinds: tuple[str, ...] = ()
    duration: float | None = None
    count: int | None = None
    size: int | None = None
    parallel: int | None = None
    sink: bool = False
    as_json: bool = False
    plot: str | None = None
    compare: str | None = None
    quiet: bool = False


def main(request: Request) -> int:
    """Run ``enchufe bench``; returns the exit status."""
    options = runner.parse_options(
        request.addresses,
        mode=request.mode,
        kinds=request.kinds,
        # The CLI has checked the numbers already; the runner checks them again, as text.
        duration=_text(request.duration),
        count=_text(request.count),
        size=_text(request.size),
        parallel=_text(request.parallel),
        sink=request.sink,
    )
    plot, compare = request.plot, request.compare
    if plot is not None:
        _check_plot(plot)
    before = compare_mod.load(compare) if compare is not None else None

    from .progress import make_progress

    progress = make_progress(enabled=not request.quiet and sys.stderr.isatty())
    bench = runner.run(options, progress)

    changes = compare_mod.compare(before, bench.to_dict()) if before is not None else None
    if plot is not None:
        from . import plot as plot_mod

        plot_mod.draw(bench, plot)
    _show(bench, changes, request)
    return 1 if bench.errors else 0


def _show(bench: BenchRun, changes: list[Change] | None, request: Request) -> None:
    """The figures on stdout (JSON or tables), then each failed measure on stderr."""
    from .report import print_report

    if request.as_json:
        _print_json(bench, changes, request)
    elif any(t.throughput or t.latency or t.connect or t.datagram for t in bench.targets):
        print_report(bench, changes=changes, source=request.compare or "")
        if request.plot is not None and not request.quiet:
            sys.stderr.write(_("plot written to {file}").format(file=printable(request.plot)) + "\n")
    for error in bench.shown_errors:
        sys.stderr.write(f"enchufe: {printable(str(error))}\n")
    sys.stderr.flush()


def _check_plot(plot: str) -> None:
    """--plot FILE.png can be written: matplotlib is there, the name ends in .png, the folder exists."""
    from . import plot as plot_mod

    plot_mod.require()
    if not plot.lower().endswith(".png"):
        raise UsageError(
            _("--plot writes a PNG: give a file name ending in .png, not {file}").format(file=repr(plot))
        )
    folder = os.path.dirname(os.path.abspath(plot))
    if not os.path.isdir(folder):
        raise UsageError(
            _("--plot {file}: the folder {folder} does not exist").format(file=plot, folder=folder)
        )


def _print_json(bench: BenchRun, changes: list[Change] | None, request: Request) -> None:
    document: dict[str, Any] = bench.to_dict()
    if changes is not None:
        document["compare"] = {"file": request.compare, "changes": [c.to_dict() for c in changes]}
    if request.plot is not None:
        document["plot"] = request.plot
    sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _text(value: float | None) -> str | None:
    return None if value is None else repr(value)

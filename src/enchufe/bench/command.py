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
from typing import Any

from .._text import printable
from ..errors import UsageError
from . import compare as compare_mod
from . import runner

__all__ = ["main"]


def main(
    addresses: tuple[str, ...],
    *,
    mode: str | None,
    kinds: tuple[str, ...],
    duration: float | None,
    count: int | None,
    size: int | None,
    parallel: int | None,
    sink: bool,
    as_json: bool,
    plot: str | None,
    compare: str | None,
    quiet: bool,
) -> int:
    """Run ``enchufe bench``; returns the exit status."""
    options = runner.parse_options(
        addresses,
        mode=mode,
        kinds=kinds,
        # The CLI has checked the numbers already; the runner checks them again, as text.
        duration=_text(duration),
        count=_text(count),
        size=_text(size),
        parallel=_text(parallel),
        sink=sink,
    )
    if plot is not None:
        from . import plot as plot_mod

        plot_mod.require()
        if not plot.lower().endswith(".png"):
            raise UsageError(f"--plot writes a PNG: give a file name ending in .png, not {plot!r}")
        folder = os.path.dirname(os.path.abspath(plot))
        if not os.path.isdir(folder):
            raise UsageError(f"--plot {plot}: the folder {folder} does not exist")
    before = compare_mod.load(compare) if compare is not None else None

    from .report import make_progress, print_report

    progress = make_progress(enabled=not quiet and sys.stderr.isatty())
    bench = runner.run(options, progress)

    changes = compare_mod.compare(before, bench.to_dict()) if before is not None else None
    if plot is not None:
        from . import plot as plot_mod

        plot_mod.draw(bench, plot)
    if as_json:
        document: dict[str, Any] = bench.to_dict()
        if changes is not None:
            document["compare"] = {"file": compare, "changes": [c.to_dict() for c in changes]}
        if plot is not None:
            document["plot"] = plot
        sys.stdout.write(json.dumps(document, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    elif any(t.throughput or t.latency or t.connect or t.datagram for t in bench.targets):
        print_report(bench, changes=changes, source=compare or "")
        if plot is not None and not quiet:
            sys.stderr.write(f"plot written to {printable(plot)}\n")
    for error in bench.errors:
        sys.stderr.write(f"enchufe: {printable(str(error))}\n")
    sys.stderr.flush()
    return 1 if bench.errors else 0


def _text(value: float | None) -> str | None:
    return None if value is None else repr(value)

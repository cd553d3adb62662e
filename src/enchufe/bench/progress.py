"""What the runner reports while it measures: a live progress bar on stderr, or nothing.

The bar redraws only between measures, never during one: a refresh thread would take the GIL
from the client in the middle of a latency test and show up in its tail.  rich is imported
only when a bar is made.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..i18n import _

__all__ = ["NoProgress", "Progress", "make_progress"]


class Progress(Protocol):
    """What the runner reports while it measures (the live progress bar)."""

    def begin(self, total: int) -> None: ...

    def step(self, label: str) -> None: ...

    def end(self) -> None: ...


class NoProgress:
    """Nothing shown: not a terminal, --quiet, or rich not installed."""

    def begin(self, total: int) -> None:
        pass

    def step(self, label: str) -> None:
        pass

    def end(self) -> None:
        pass


class _RichProgress:
    """A progress bar on stderr, redrawn between measures only (see the module docstring)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            auto_refresh=False,
            transient=True,
        )
        self._task: Any = None
        self._steps = 0

    def begin(self, total: int) -> None:
        self._bar.start()
        self._task = self._bar.add_task(_("starting bench's servers"), total=total)
        self._bar.refresh()

    def step(self, label: str) -> None:
        if self._steps:
            self._bar.advance(self._task)
        self._steps += 1
        self._bar.update(self._task, description=label)
        self._bar.refresh()

    def end(self) -> None:
        if self._task is not None:
            self._bar.update(self._task, completed=self._steps)
        self._bar.stop()


def make_progress(enabled: bool) -> _RichProgress | NoProgress:
    """A live bar on stderr when ``enabled`` (a terminal, not --quiet) and rich is installed."""
    if not enabled:
        return NoProgress()
    try:
        return _RichProgress()
    except ImportError:
        return NoProgress()

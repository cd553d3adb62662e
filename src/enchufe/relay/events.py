"""How the relay reports what happens: named events with a human line and structured fields.

The relay never writes to stderr itself: it hands every event to an :class:`EventSink`, which
decides (by level) whether the event is wanted at all before any message is formatted.  The CLI
plugs in its ``event()`` (plain lines or ``--json`` objects); tests plug in a list.

Levels: 0 always shown (listening, errors, stopping, stats), 1 with ``-v`` (accept, connect,
close, refused), 2 with ``-vv`` (eof of each direction).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["EventSink", "Recorder"]

Emit = Callable[..., None]


class EventSink:
    """Events up to ``level`` go to ``emit(name, message, level=…, **fields)``; others are dropped.

    ``extra`` fields are added to every event (a worker's number, for instance).
    """

    def __init__(self, emit: Emit | None = None, level: int = 0, **extra: Any) -> None:
        self._emit = emit
        self.level = level if emit is not None else -1
        self.extra = extra

    def wants(self, level: int) -> bool:
        return level <= self.level

    def __call__(self, name: str, message: str, /, *, level: int = 0, **fields: Any) -> None:
        if level > self.level or self._emit is None:
            return
        if self.extra:
            fields = {**fields, **self.extra}
            if "worker" in self.extra:
                message = f"worker {self.extra['worker']}: {message}"
        self._emit(name, message, level=level, **fields)


class Recorder(EventSink):
    """An event sink that keeps every event as ``(name, message, fields)``: for tests."""

    def __init__(self, level: int = 2) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        super().__init__(self._keep, level)

    def _keep(self, name: str, message: str, /, *, level: int = 0, **fields: Any) -> None:
        self.events.append((name, message, fields))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [fields for event, _message, fields in self.events if event == name]

"""How the relay reports what happens: named events with a human line and structured fields.

The relay never writes to stderr itself: it hands every event to an :class:`EventSink`, which
decides (by level) whether the event is wanted at all before any message is formatted.  The CLI
plugs in its ``event()`` (plain lines or ``--json`` objects); tests plug in a list.

Levels: 0 always shown (listening, errors, stopping, stats), 1 with ``-v`` (accept, connect,
close), 2 with ``-vv`` (eof of each direction).

Notices: what peers can cause at will and an operator must still hear about without ``-v``
(clients denied or turned away, framing errors, programs that fail to start, datagrams dropped)
goes through :meth:`EventSink.notice`: shown at level 0, but at most :data:`NOTICE_BURST` lines
per :data:`NOTICE_WINDOW` seconds for each kind, so that a flood of bad clients cannot flood the
log; past that they are counted, and one ``… and K more KIND suppressed`` event says how many
when the window ends.  With ``-v`` (or ``--json``) every one is shown.

Messages are built from escaped text: whoever builds one passes a peer's name or address
through :func:`enchufe._text.printable` first (see ``session.describe_peer``), so that a library
user's sink gets one line per event too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..i18n import _

__all__ = ["NOTICE_BURST", "NOTICE_WINDOW", "EventSink", "Recorder"]

Emit = Callable[..., None]
Schedule = Callable[[float, Callable[[], None]], object]

#: Lines one kind of notice may print per window at default verbosity: enough to see what is
#: going on (the first few denied clients), not enough to drown the rest of the log.
NOTICE_BURST = 5

#: Seconds of one notice window; the count of what was held back is reported when it ends.
NOTICE_WINDOW = 1.0


class _Window:
    """One kind of notice: when its window ends, how many were shown and held back."""

    __slots__ = ("ends", "reported", "shown", "suppressed")

    def __init__(self, ends: float) -> None:
        self.ends = ends
        self.shown = 0
        self.suppressed = 0
        self.reported = False


class EventSink:
    """Events up to ``level`` go to ``emit(name, message, level=…, **fields)``; others are dropped.

    ``extra`` fields are added to every event (a worker's number, for instance).
    """

    def __init__(
        self,
        emit: Emit | None = None,
        level: int = 0,
        *,
        burst: int = NOTICE_BURST,
        window: float = NOTICE_WINDOW,
        **extra: Any,
    ) -> None:
        self._emit = emit
        self.level = level if emit is not None else -1
        self.extra = extra
        self.burst = burst
        self.window = window
        #: how to run something later (the relay's event loop sets it): the count of held-back
        #: notices is reported when their window ends, not only when the next one comes
        self.schedule: Schedule | None = None
        self._windows: dict[str, _Window] = {}
        #: events the emitter could not write (stderr gone: a closed pipe, a hung-up terminal)
        self.lost = 0

    def wants(self, level: int) -> bool:
        return level <= self.level

    def __call__(self, name: str, message: str, /, *, level: int = 0, **fields: Any) -> None:
        if level > self.level or self._emit is None:
            return
        if self.extra:
            fields = {**fields, **self.extra}
            if "worker" in self.extra:
                message = _("worker {worker}: {message}").format(worker=self.extra["worker"], message=message)
        try:
            self._emit(name, message, level=level, **fields)
        except OSError:
            # Nowhere to write (the terminal went away, the reader of a pipe left): the relay
            # goes on relaying; its log is not worth the connections it carries.
            self.lost += 1

    def notice(self, kind: str, name: str, message: str, /, **fields: Any) -> None:
        """A level-0 event that peers can cause at will, rate-limited per ``kind``.

        ``kind`` is a plural noun phrase naming what happened, marked with ``N_()`` (English in
        the ``kind`` field, translated in the line): ``N_("denied clients")``; at most
        :attr:`burst` such events are shown per :attr:`window` seconds unless the sink shows
        level 1 (``-v``, ``--json``), then every one is.  Held-back ones are counted and
        reported as one ``suppressed`` event when the window ends (through :attr:`schedule`),
        when the next one of the kind comes after it, or at :meth:`flush`.
        """
        if self._emit is None:
            return
        if self.level >= 1:
            self(name, message, **fields)
            return
        now = time.monotonic()
        window = self._windows.get(kind)
        if window is None or now >= window.ends:
            if window is not None:
                self._report(kind, window)
            window = self._windows[kind] = _Window(now + self.window)
        if window.shown < self.burst:
            window.shown += 1
            self(name, message, **fields)
            return
        window.suppressed += 1
        if window.suppressed == 1 and self.schedule is not None:
            self.schedule(max(0.0, window.ends - now), lambda: self._report(kind, window))

    def _report(self, kind: str, window: _Window) -> None:
        if window.reported or not window.suppressed:
            return
        window.reported = True
        count = window.suppressed
        self(
            "suppressed",
            _("enchufe: … and {count} more {kind} in {seconds} s (not shown; -v shows each)").format(
                count=count, kind=_(kind), seconds=f"{self.window:g}"
            ),
            kind=kind,
            count=count,
        )

    def flush(self) -> None:
        """Report every count of held-back notices now (the relay is ending)."""
        for kind, window in list(self._windows.items()):
            self._report(kind, window)
        self._windows.clear()


class Recorder(EventSink):
    """An event sink that keeps every event as ``(name, message, fields)``: for tests."""

    def __init__(self, level: int = 2) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        super().__init__(self._keep, level)

    def _keep(self, name: str, message: str, /, *, level: int = 0, **fields: Any) -> None:
        self.events.append((name, message, fields))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [fields for event, _message, fields in self.events if event == name]

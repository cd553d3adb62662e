"""Lines that peers cause at will, said as warnings but at most a few of each kind a second.

A server's refused PROXY headers and failed TLS handshakes are worth a line without ``-v``
(nobody else would know), yet a peer can cause them as fast as it can connect: the log must not
become the peer's to fill.  The relay has its own (``relay.events.EventSink.notice``), which
also says a count when its window ends, from a timer on its loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .i18n import _

__all__ = ["Notices", "notices"]

log = logging.getLogger("enchufe.serve")


class Notices:
    """Warnings, shown without ``-v``, but at most :attr:`burst` of each kind per :attr:`window`
    seconds.  The ones held back are counted on a line of their own when the next of the kind
    comes after the window, and at :meth:`flush` (a server stopping).  With ``-v`` (the log at
    INFO) every one is said."""

    burst = 5
    window = 1.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        #: kind → [when the window ends, lines said in it, lines held back]
        self._windows: dict[str, list[float]] = {}

    def say(self, kind: str, line: str) -> None:
        """``kind`` is a plural noun phrase marked with ``N_()`` (``N_("failed TLS handshakes")``)."""
        if log.isEnabledFor(logging.INFO):
            log.warning("%s", line)
            return
        now = self._clock()
        with self._lock:
            window = self._windows.get(kind)
            held = 0
            if window is None or now >= window[0]:
                held = int(window[2]) if window is not None else 0
                window = self._windows[kind] = [now + self.window, 0.0, 0.0]
            show = window[1] < self.burst
            window[1 if show else 2] += 1
        self._held(kind, held)
        if show:
            log.warning("%s", line)

    def flush(self) -> None:
        """Say every count still held back (a server has stopped serving)."""
        with self._lock:
            held = [(kind, int(window[2])) for kind, window in self._windows.items()]
            self._windows.clear()
        for kind, count in held:
            self._held(kind, count)

    def _held(self, kind: str, count: int) -> None:
        if count:
            log.warning(
                _("… and {count} more {kind} in {seconds} s (not shown; -v shows each)").format(
                    count=count, kind=_(kind), seconds=f"{self.window:g}"
                )
            )


#: One for the process: every server's peers count alike.
notices = Notices()

"""The relay's event loop: one thread, epoll readiness, a heap of timers, no thread per connection.

::

    loop = Loop()
    loop.register(sock.fileno(), READ, on_ready)     # on_ready(mask) runs when fd is ready
    timer = loop.call_later(5.0, on_timeout)         # timer.cancel() to take it back
    ticks = loop.call_every(1.0, on_tick)            # until ticks.cancel()
    loop.run(until=lambda: done)                     # returns once ``until()`` holds
    loop.wake()                                      # from a signal handler or another thread
    previous = loop.wake_on_signals()                # a signal wakes it, wherever it arrives

Why ``select.epoll`` itself rather than ``selectors.EpollSelector``: a relayed socket must stay
registered while we want nothing from it (its pipe is full, its peer has nothing to send), so
that a reset on it (EPOLLERR/EPOLLHUP, which epoll reports whatever the mask) is noticed at once
rather than when we next need the socket.  ``selectors`` refuses an empty interest set, and its
key objects cost an allocation per ready socket that a loop moving gigabytes per second can skip.

Readiness is level-triggered: a handler that stops early (to be fair to other connections)
is simply called again on the next turn.  A handler's fd is closed by its owner, who calls
:meth:`Loop.forget` first; closing an fd removes it from the epoll set, so no ``epoll_ctl`` is
spent on it.

Descriptors epoll refuses (regular files and ``/dev/null`` as stdin or stdout of a stdio relay:
EPERM) are always ready for I/O; they are kept apart and their handlers are called on every turn
while their mask asks for something, the wait for the others not blocking meanwhile.

Linux hands out the lowest free descriptor number, so a connection closed while handling one
event and a client accepted while handling the next one usually share a number; events of the
same ``epoll_wait`` batch for a number forgotten during that batch are therefore dropped, never
delivered to the new owner (level-triggered readiness reports a real event again next turn).

Shortcuts (the compiled hot path)
---------------------------------
With the optional extension ``enchufe._speedups`` (built at install where a C compiler is at
hand), epoll is its ``Poller``, which can serve a descriptor's readability itself:
:meth:`Loop.shortcut` ``(src, dst, size)`` has every event that is exactly "``src`` is readable"
served by one ``read`` of ``src`` and one ``send`` to ``dst`` without returning to Python (a
relayed stream's small-message path, see :mod:`.pump`).  Whatever that cannot finish (EOF, an
error, a partial send, a full read) reaches ``src``'s handler with :data:`HANDED` added to its
events, the shortcut gone, and :meth:`Loop.take` tells what was read and sent.  Without the
extension (or with ``ENCHUFE_PURE_PYTHON=1`` in the environment) :attr:`Loop.shortcuts` is
false, :meth:`Loop.shortcut` refuses, and the pure-Python pump does the same work; the tests run
the relay both ways.

A handler or timer that raises ends its owner, never the loop: a hostile or unlucky peer may
end its own session, not the relay and everyone else's.  A registration (or a timer) may carry
``on_error(exc)``, which ends its owner (a session resets both its peers, a listener rests a
moment) and returns what it did, for the one line reported through :attr:`Loop.report` (the
relay's event sink; the traceback goes to the ``enchufe.relay`` logger at DEBUG level).  A
descriptor without ``on_error``, or whose ``on_error`` raised too, is no longer watched, so that
a handler failing on every turn cannot spin.  A repeating timer (:meth:`Loop.call_every`) is
due again before its callback runs, so one that raises once is reported and goes on (a stats
line that failed does not end the stats).  ``KeyboardInterrupt``, ``SystemExit`` and
``MemoryError`` are not caught.  The guard is a ``try`` around each call (free in CPython 3.11
and later until something raises): no bookkeeping on the hot path.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from typing import Any

from .._text import printable
from ..i18n import N_, _

__all__ = ["COMPILED", "ERROR", "FAILED", "HANDED", "READ", "WRITE", "Loop", "Taken", "Timer"]

Poller: Any = None
try:
    if os.environ.get("ENCHUFE_PURE_PYTHON"):
        raise ImportError("ENCHUFE_PURE_PYTHON is set")
    from .._speedups import HANDED
    from .._speedups import Poller as Poller
except ImportError:
    HANDED = 1 << 26  # never reported without the extension

#: New loops use the compiled poller (and its shortcuts); tests turn it off to run both ways.
COMPILED = Poller is not None


#: The longest look, in microseconds, of the compiled poller, without sleeping, after a turn with
#: events, whether its shortcuts served them or Python did (``Poller.spin``).  A sleeping relay
#: is woken tens of microseconds after the answer to what it just passed on arrives; one that
#: looks sees it at once.  The look adapts (``Poller.spin_now``): it shrinks to none while
#: answers come later than this, so a relay whose traffic is sparse, idle or stalled spends no
#: CPU on it.  On this project's 2-core machine, whose wake-ups are slow, an adaptive look of
#: at most 30 µs shrank to none and left ping-pong at 1.0-1.25x socat; at most 100 µs, 2.26x,
#: and connect+request+close 2.96x (benchmarks/RESULTS.md).
DEFAULT_SPIN_US = 100


def _spin_from_environment() -> float:
    """ENCHUFE_SPIN_US: 0 (never spin) to 10000 microseconds; anything else: the default."""
    try:
        micros = int(os.environ.get("ENCHUFE_SPIN_US", DEFAULT_SPIN_US))
    except ValueError:
        micros = DEFAULT_SPIN_US
    if not 0 <= micros <= 10_000:
        micros = DEFAULT_SPIN_US
    return micros / 1e6


#: Seconds the compiled poller spins after a turn with events (see _spin_from_environment).
SPIN = _spin_from_environment()

#: What a shortcut handed over (:meth:`Loop.take`): the bytes it read (empty: EOF or a failed
#: read), how many of them it sent, the errno of a failed read and of a failed send (0: none),
#: and the bytes it had moved since the last look.
Taken = tuple[bytes, int, int, int, int]

READ = select.EPOLLIN
WRITE = select.EPOLLOUT
#: Always reported, whatever the mask: the socket failed or both directions are shut down.
ERROR = select.EPOLLERR | select.EPOLLHUP
#: The socket has a pending error (SO_ERROR): a reset, a failed connect.
FAILED = select.EPOLLERR

#: Ready descriptors taken from the kernel per ``epoll_wait``: enough to serve a burst of busy
#: connections per turn without a huge result list.
MAX_EVENTS = 1024

#: Once this many cancelled timers sit in the heap (and they are most of it), it is rebuilt
#: without them: a relay that connects thousands of times a second cancels a connect timer per
#: connection, and those must not pile up until their (distant) deadlines.
COMPACT_AFTER = 1024

Handler = Callable[[int], None]
#: ``on_error(exc)``: end the owner of a handler or timer that raised; returns what it did
#: ("closed #3 tcp://…: both peers reset"), for the log line.
OnError = Callable[[Exception], str]
#: ``report(line, exc)``: one line about a handler or timer that raised and what was done.
Report = Callable[[str, Exception], None]

_log = logging.getLogger("enchufe.relay")


def _unwatched(events: int) -> None:
    """The handler of a descriptor unregistered during the batch that reported it."""


def _log_report(line: str, exc: Exception) -> None:
    _log.error("%s", line)


class Timer:
    """A callback due at ``when`` (monotonic seconds), and every ``interval`` seconds after that
    if one is given; :meth:`cancel` makes it a no-op."""

    __slots__ = ("_loop", "callback", "cancelled", "interval", "on_error", "when")

    def __init__(
        self,
        loop: Loop,
        when: float,
        callback: Callable[[], None],
        on_error: OnError | None = None,
        interval: float | None = None,
    ) -> None:
        self._loop = loop
        self.when = when
        self.callback = callback
        self.on_error = on_error
        self.interval = interval
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._loop._timer_cancelled()


class Loop:
    """epoll plus timers plus a wake-up pipe.  Not thread-safe except for :meth:`wake`."""

    def __init__(self, report: Report | None = None) -> None:
        #: whether :meth:`shortcut` serves (the compiled poller is in use)
        self.shortcuts = COMPILED
        poller: Any = Poller() if COMPILED else select.epoll()
        self._epoll = poller
        #: the compiled poller, for the datagram relay's shortcuts (:mod:`.datagram_shortcuts`);
        #: None without it
        self.poller: Any = poller if COMPILED else None
        if self.shortcuts:  # the poller's own methods: no Python call in between
            poller.spin = SPIN
            self.shortcut = self._epoll.shortcut  # type: ignore[method-assign]
            self.unshortcut = self._epoll.unshortcut  # type: ignore[method-assign]
            self.moved = self._epoll.moved  # type: ignore[method-assign]
            self.pending = self._epoll.pending  # type: ignore[method-assign]
            self.take = self._epoll.take  # type: ignore[method-assign]
            self.handed = self._epoll.handed  # type: ignore[method-assign]
        self._handlers: dict[int, Handler] = {}
        #: how to end the owner of a descriptor whose handler raised (see the module docstring)
        self._on_error: dict[int, OnError] = {}
        #: where the line about a handler or timer that raised goes (the relay's event sink)
        self.report: Report = report if report is not None else _log_report
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._cancelled = 0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._on_wake: Callable[[], None] | None = None
        self._stale: set[int] = set()  # descriptors forgotten during the current batch
        self._always: dict[int, int] = {}  # descriptors epoll refuses: fd → mask wanted
        self._epoll.register(self._wake_r, READ)
        self._handlers[self._wake_r] = self._drain_wake  # never raises: see _drain_wake
        self._closed = False

    # -- descriptors

    def register(self, fd: int, mask: int, handler: Handler, on_error: OnError | None = None) -> None:
        """Call ``handler(events)`` whenever ``fd`` is ready for ``mask`` (which may be 0:
        errors only).  If it raises, ``on_error(exc)`` ends its owner; without one, ``fd`` is
        no longer watched."""
        try:
            self._epoll.register(fd, mask)
        except PermissionError:  # a regular file, /dev/null: always ready
            self._always[fd] = mask
        self._handlers[fd] = handler
        if on_error is not None:
            self._on_error[fd] = on_error
        else:
            self._on_error.pop(fd, None)

    def modify(self, fd: int, mask: int) -> None:
        if fd in self._always:
            self._always[fd] = mask
        else:
            self._epoll.modify(fd, mask)

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd`` (still open) altogether."""
        self._on_error.pop(fd, None)
        if self._handlers.pop(fd, None) is not None and self._always.pop(fd, None) is None:
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)

    def forget(self, fd: int) -> None:
        """``fd`` is about to be closed: drop its handler (closing removes it from epoll) and
        its shortcut (its number will be someone else's)."""
        if self.shortcuts:
            self._epoll.unshortcut(fd)
        self._handlers.pop(fd, None)
        self._on_error.pop(fd, None)
        self._always.pop(fd, None)
        self._stale.add(fd)

    def watching(self, fd: int) -> bool:
        return fd in self._handlers

    # -- shortcuts (see the module's docstring)

    def shortcut(self, src: int, dst: int, size: int) -> None:
        """Serve the readability of socket ``src`` (registered for READ) in the poller: read
        up to ``size`` bytes, send them to socket ``dst``.  Only with the compiled poller
        (:attr:`shortcuts`); replaced by the poller's own method then."""
        raise RuntimeError("shortcuts need the compiled poller (enchufe._speedups)")

    def unshortcut(self, src: int) -> int:
        """Drop ``src``'s shortcut; the bytes it moved since the last look."""
        return int(self._epoll.unshortcut(src))

    def moved(self, src: int) -> tuple[int, float]:
        """The bytes ``src``'s shortcut moved since the last look (it stays), and the
        ``time.monotonic()`` of its last send (0.0: none)."""
        moved: tuple[int, float] = self._epoll.moved(src)
        return moved

    def pending(self, src: int) -> int:
        """The bytes ``src``'s shortcut moved since the last look, left for that look to count
        (safe from another thread)."""
        pending: int = self._epoll.pending(src)
        return pending

    def handed(self, src: int) -> bool:
        """Whether ``src``'s shortcut handed work over that :meth:`take` has not collected."""
        return bool(self._epoll.handed(src))

    def take(self, src: int) -> Taken:
        """What ``src``'s shortcut handed over with its :data:`HANDED` event (it is gone now)."""
        taken: Taken = self._epoll.take(src)
        return taken

    # -- timers

    def call_later(
        self, delay: float, callback: Callable[[], None], on_error: OnError | None = None
    ) -> Timer:
        """Call ``callback()`` in ``delay`` seconds; if it raises, ``on_error(exc)`` ends its owner."""
        timer = Timer(self, time.monotonic() + delay, callback, on_error)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def call_every(
        self, interval: float, callback: Callable[[], None], on_error: OnError | None = None
    ) -> Timer:
        """Call ``callback()`` every ``interval`` seconds (the first time in ``interval``) until
        the timer returned is cancelled.  If it raises, ``on_error(exc)`` ends its owner (or the
        failure is reported), and the calls go on."""
        timer = Timer(self, time.monotonic() + interval, callback, on_error, interval)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def _timer_cancelled(self) -> None:
        self._cancelled += 1
        if self._cancelled > COMPACT_AFTER and self._cancelled * 2 > len(self._timers):
            self._timers = [entry for entry in self._timers if not entry[2].cancelled]
            heapq.heapify(self._timers)
            self._cancelled = 0
        else:
            self._drop_cancelled_head()

    def _run_timers(self) -> None:
        now = time.monotonic()
        # self._timers each time: a callback that cancels many timers may compact it (a new list)
        while (timers := self._timers) and timers[0][0] <= now:
            _when, _seq, timer = heapq.heappop(timers)
            if timer.cancelled:
                self._cancelled = max(0, self._cancelled - 1)
                continue
            if timer.interval is None:
                timer.cancelled = True  # fired: a later cancel() is a no-op
            else:  # due again whatever this call does
                timer.when = now + timer.interval
                heapq.heappush(timers, (timer.when, next(self._seq), timer))
            try:
                timer.callback()
            except MemoryError:
                raise
            except Exception as exc:
                self._failed(exc, timer.on_error, None, N_("a timer"))
        self._drop_cancelled_head()

    # -- waking up

    def set_wake_handler(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs in the loop's thread after every :meth:`wake`."""
        self._on_wake = callback

    def wake(self) -> None:
        """Make the loop run its wake handler soon.  Safe from signal handlers and other threads."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    def wake_on_signals(self) -> int:
        """Have the arrival of any handled signal wake the loop (``signal.set_wakeup_fd`` on its
        wake-up pipe; main thread only); returns the wakeup descriptor it replaces, for
        ``signal.set_wakeup_fd(previous)`` once the loop is done.

        A Python signal handler (which calls :meth:`wake`) runs only once the main thread is
        back in Python: a signal that arrives just before ``epoll_wait`` is entered (after the
        interpreter's last look), or in another thread, would leave the loop asleep until
        something else happened, maybe forever.  The C-level handler writes to this pipe at
        once, whenever and wherever the signal arrives; the wake handler then runs once the
        Python handler has, or again when it does (its :meth:`wake`)."""
        return signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def _drain_wake(self, _events: int = 0) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._wake_r, 4096):
                pass
        if self._on_wake is not None:
            try:
                self._on_wake()
            except MemoryError:
                raise
            except Exception as exc:
                self._failed(exc, None, None, N_("the wake-up handler"))

    # -- running

    def run(self, until: Callable[[], bool]) -> None:
        """Dispatch readiness and timers until ``until()`` is true (checked after every turn)."""
        poll = self._epoll.poll
        get_handler = self._handlers.get
        stale = self._stale
        always = self._always
        monotonic = time.monotonic
        unwatched = _unwatched
        # The time taken after the last batch (for its timers) also sets the next wait: nothing
        # but until() runs in between, and a turn with no timer needs no clock at all.
        now = monotonic()
        while not until():
            if always:
                timeout = self._wait_time()
            elif timers := self._timers:  # _wait_time, inlined: the head is a live timer
                when = timers[0][0]
                timeout = when - now if when > now else 0.0
            else:
                timeout = -1.0
            if stale:
                stale.clear()
            for fd, events in poll(timeout, MAX_EVENTS):
                if stale and fd in stale:
                    continue  # closed during this batch: the event was for its previous owner
                try:
                    get_handler(fd, unwatched)(events)
                except MemoryError:
                    raise
                except Exception as exc:
                    self._handler_failed(exc, fd)
            if always:
                self._run_always()
            timers = self._timers
            if timers:
                now = monotonic()
                if timers[0][0] <= now:
                    self._run_timers()
                    now = monotonic()  # the callbacks took time

    def _wait_time(self) -> float:
        """Seconds ``epoll_wait`` may block: until the next timer, none while an always-ready
        descriptor wants something, -1 (no limit) otherwise."""
        if self._always and any(self._always.values()):
            return 0.0
        timers = self._timers
        return max(0.0, timers[0][0] - time.monotonic()) if timers else -1.0

    def _drop_cancelled_head(self) -> None:
        """Cancelled timers at the head would only wake the loop for nothing: the head of the
        heap is kept a live timer (after a cancel, and after the due ones ran)."""
        timers = self._timers  # a new list after compaction
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
            self._cancelled = max(0, self._cancelled - 1)

    def _run_always(self) -> None:
        for fd, mask in list(self._always.items()):
            if mask and fd not in self._stale and self._always.get(fd) == mask:
                handler = self._handlers.get(fd)
                if handler is not None:
                    try:
                        handler(mask)
                    except MemoryError:
                        raise
                    except Exception as exc:
                        self._handler_failed(exc, fd)

    def fail(self, exc: Exception, on_error: OnError | None) -> None:
        """``exc`` escaped from code run for an owner outside a handler of its own (a session
        started by a listener's handler): end that owner as if its handler had raised."""
        self._failed(exc, on_error, None, N_("a handler"))

    def _handler_failed(self, exc: Exception, fd: int) -> None:
        if fd in self._stale:
            # It forgot (closed) its descriptor before raising: whoever registered that number
            # since is someone else, to be left alone; its owner is not known any more.
            self._failed(exc, None, None, N_("a handler"))
        else:
            self._failed(exc, self._on_error.get(fd), fd, N_("a handler"))

    def _failed(self, exc: Exception, on_error: OnError | None, fd: int | None, where: str) -> None:
        """A handler or timer raised: end its owner, say so in one line, and go on (``where`` is
        marked with ``N_()``, translated here)."""
        done = ""
        if on_error is not None:
            try:
                done = on_error(exc)
            except MemoryError:
                raise
            except Exception as second:  # its owner could not be ended cleanly either
                done = _("ending its owner failed too ({error})").format(error=_describe(second))
                _log.debug("ending the owner of a failed handler failed", exc_info=second)
                on_error = None
        if on_error is None and fd is not None:
            # Nobody took it in hand: stop watching it, or a handler failing on every turn spins.
            self.unregister(fd)
            unwatched = _("descriptor {fd} is no longer watched").format(fd=fd)
            done = f"{done}; {unwatched}" if done else unwatched
        elif not done:
            done = _("its work is skipped")
        line = _("enchufe: unexpected error in {where}: {error}; {done}; the relay goes on").format(
            where=_(where), error=_describe(exc), done=done
        )
        _log.debug("%s", line, exc_info=exc)
        with contextlib.suppress(Exception):  # the report must not be what ends the loop
            self.report(line, exc)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._epoll.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _describe(exc: BaseException) -> str:
    """``Type: message``, escaped: a message may quote what a peer sent."""
    message = str(exc)
    name = printable(type(exc).__name__)
    return f"{name}: {printable(message)}" if message else name

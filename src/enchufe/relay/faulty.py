"""Faults on purpose in a relayed stream (``enchufe relay … --fault``): bytes go through each
direction's :class:`~enchufe.faults.StreamSchedule`, at the times it says.

::

    FaultyStreamRelay (a StreamRelay whose sessions are FaultyStreamSessions)
      ├─ FaultyStreamSession: per direction, a FaultPump when a toxic acts on it,
      │  the plain Pump (splice or copy) when none does (none given, or toxicity)
      └─ with a TLS end, FaultyTLSStreamSession (:mod:`.faulty_tls`): the faults act on
         the plaintext

The choice is made once per relay (:mod:`.server` makes a FaultyStreamRelay only with
``--fault``) and once per direction of a session: a relay without faults runs the code it runs
without this module, with no test per event.

A :class:`FaultPump` copies through Python (the bytes must go through the schedule, never
splice): what it reads is fed to the schedule with the time it came, and what the schedule
answers waits in a heap until its time, an engine timer waking the session then.  Backpressure:
the source is read only while less than :data:`HOLD_LIMIT` bytes wait, so a slow toxic (a
bandwidth, a long latency) stalls the sender behind TCP's window, as Toxiproxy's full channels
do.  The direction's end (:data:`~enchufe.faults.EOF`) is passed on as the plain pump does;
:data:`~enchufe.faults.CLOSE` closes both peers (an orderly close), :data:`~enchufe.faults.RESET`
resets both (``SO_LINGER`` 0), once what came before it is delivered.
"""

from __future__ import annotations

import errno
import heapq
import os
import random
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import trace
from .._nonblocking import read_into
from .._nonblocking import write as traced_write
from ..faults import DATA, EOF, RESET, Action, FaultPlan, StreamSchedule
from ..i18n import _
from .engine import Loop, OnError, Timer
from .pump import MAX_ROUNDS, WOULD_BLOCK
from .pump_state import pass_eof
from .session import OPEN
from .sides import Side, stdio_side
from .stream import StdioRelay, StreamRelay
from .stream_session import StreamSession

if TYPE_CHECKING:
    from .pump import Pump

__all__ = [
    "CHUNK",
    "HOLD_LIMIT",
    "FaultPump",
    "FaultyStdioRelay",
    "FaultyStreamRelay",
    "FaultyStreamSession",
    "Follow",
]

#: Bytes read per system call: a chunk is what latency delays, as Toxiproxy's 32 KiB reads.
CHUNK = 32 * 1024
#: Bytes a direction holds for later at most before it stops reading its source.
HOLD_LIMIT = 1024 * 1024
#: Seconds between looks at a live plan (``enchufe chaos``) for a change.
LIVE_CHECK = 0.02


class FaultPump:
    """One direction through a schedule (see the module).

    It offers what :class:`~enchufe.relay.stream_session.StreamSession` reads of a
    :class:`~enchufe.relay.pump.Pump` (:meth:`run`, :attr:`eof`, :attr:`done`,
    :attr:`in_flight`: the bytes due now and not yet written, :attr:`stalled`, :attr:`failed_on`,
    :meth:`discard`; no pipe and no buffer view).  :attr:`ending` is :data:`CLOSE` or
    :data:`RESET` once the schedule ended the connection and everything before it is delivered.
    """

    #: What a Pump delivered before a run raised; a schedule counts what it delivers itself.
    unreported = 0

    __slots__ = (
        "_finish_cb",
        "_follow",
        "_heap",
        "_loop",
        "_on_error",
        "_out",
        "_seq",
        "_timer",
        "_timer_at",
        "_wake",
        "discarded",
        "discarding",
        "done",
        "dst_fd",
        "dst_is_pipe",
        "end",
        "ending",
        "eof",
        "failed_on",
        "held",
        "pipe",
        "schedule",
        "src_fd",
        "view",
    )

    def __init__(
        self,
        src_fd: int,
        dst_fd: int,
        schedule: StreamSchedule,
        *,
        loop: Loop,
        wake: Callable[[], None],
        on_error: OnError,
        finish: Callable[[], None],
        dst_is_pipe: bool = False,
        follow: Follow | None = None,
    ) -> None:
        self.src_fd = src_fd
        self.dst_fd = dst_fd
        self.schedule = schedule
        self._loop = loop
        self._wake = wake
        self._on_error = on_error
        self._finish_cb = finish
        self.dst_is_pipe = dst_is_pipe
        self._heap: list[tuple[float, int, Action]] = []
        self._seq = 0
        self._out = memoryview(b"")
        self._timer: Timer | None = None
        self._timer_at = 0.0
        #: bytes read and not yet written (waiting for their time, or for dst)
        self.held = 0
        self.eof = False
        self.done = False
        self.ending = 0
        self.failed_on = ""
        self.discarding = False
        self.discarded = 0
        # What the session's interest computation reads of a Pump: never a pipe or a view.
        self.pipe = None
        self.view = None
        self.end = 0
        self._follow = follow
        self._push(schedule.started)

    @property
    def in_flight(self) -> int:
        return len(self._out)

    @property
    def stalled(self) -> bool:
        """Read ``src`` only while little waits, and while the direction is not over."""
        return self.held >= HOLD_LIMIT or bool(self.ending) or self.done

    def run(self) -> int:
        """Deliver what is due, read what ``src`` has (the schedule told of it), and arm the
        timer for what comes next; the bytes delivered.  ``OSError`` (with :attr:`failed_on`)
        when a side fails."""
        moved = 0
        reads = MAX_ROUNDS
        follow = self._follow
        if follow is not None and follow.version != follow.plan.version:
            self._refresh(follow, time.monotonic())
        while True:
            now = time.monotonic()
            written = self._deliver(now)
            if written == WOULD_BLOCK:
                break
            moved += written
            if self.done or self.ending or self.eof or self.stalled or not reads:
                break
            data = self._read()
            if data is None:
                break
            reads -= 1
            if data:
                self._push(self.schedule.feed(now, data))
            else:
                self.eof = True
                self._push(self.schedule.end(now))
        self._arm()
        return moved

    def _refresh(self, follow: Follow, now: float) -> None:
        """The live plan changed: the toxics start again as they are now.  Bytes held for later
        go at once, as Toxiproxy flushes an interrupted toxic's; an end the old toxics held
        (a slow close) goes through the new ones; a close or reset they had planned is dropped
        with them."""
        pending = sorted(self._heap)
        self._heap.clear()
        self.held = len(self._out)
        self.schedule = follow.schedule(now, self.schedule)
        self._push([Action(now, DATA, action.data) for _, _, action in pending if action.kind == DATA])
        self._push(self.schedule.started)
        if self.eof and not self.done:
            self._push(self.schedule.end(now))

    def _push(self, actions: list[Action]) -> None:
        heap = self._heap
        for action in actions:
            self._seq += 1
            heapq.heappush(heap, (action.at, self._seq, action))
            self.held += len(action.data)

    def _read(self) -> bytes | None:
        try:
            if trace.enabled():
                buffer = bytearray(CHUNK)
                return bytes(buffer[: read_into(self.src_fd, memoryview(buffer))])
            return os.read(self.src_fd, CHUNK)
        except BlockingIOError:
            return None
        except OSError:
            self.failed_on = "read"
            raise

    def _deliver(self, now: float) -> int:
        """Write what is due, in order: the bytes written, or :data:`WOULD_BLOCK` if ``dst``
        took nothing and more is due."""
        moved = 0
        heap = self._heap
        while True:
            if self._out:
                n = self._write()
                if n == WOULD_BLOCK:
                    return moved or WOULD_BLOCK
                self._out = self._out[n:]
                moved += self._sent(n)
                if self._out:
                    return moved  # partly taken: wait until dst is writable
                continue
            if not heap or heap[0][0] > now or self.done or self.ending:
                return moved
            action = heapq.heappop(heap)[2]
            if action.kind == DATA:
                self._out = self._wire(action.data)
            elif action.kind == EOF:
                self._finish()
            else:
                self.ending = action.kind

    def _wire(self, data: bytes) -> memoryview:
        """What is written to ``dst`` for ``data``, due now."""
        return memoryview(data)

    def _sent(self, n: int) -> int:
        """``dst`` took ``n`` bytes of :attr:`_out`: the bytes of the stream delivered by it."""
        self.held -= n
        return n

    def _write(self) -> int:
        try:
            if trace.enabled():
                return traced_write(self.dst_fd, self._out)
            return os.write(self.dst_fd, self._out)
        except BlockingIOError:
            return WOULD_BLOCK
        except OSError as exc:
            if not (self.dst_is_pipe and exc.errno == errno.EPIPE):
                self.failed_on = "write"
                raise
            # The pipe's reader left: read on to the EOF and drop it, as the plain pump does.
            self.discarding = True
            self.discarded += len(self._out)
            return len(self._out)

    def _finish(self) -> None:
        self.done = True
        self._heap.clear()
        pass_eof(self)

    def _arm(self) -> None:
        """A timer for the next action's time, unless dst's readiness is awaited first."""
        heap = self._heap
        when = heap[0][0] if heap and not self._out and not self.done and not self.ending else None
        timer = self._timer
        if timer is not None:
            if self._timer_at == when:
                return
            timer.cancel()
            self._timer = None
        if when is not None:
            self._timer_at = when
            self._timer = self._loop.call_later(max(0.0, when - time.monotonic()), self._due, self._on_error)

    def _due(self) -> None:
        self._timer = None
        self._wake()

    def discard(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()
        self._out = memoryview(b"")
        self.held = 0


class Follow:
    """One direction of a connection under a live plan (``enchufe chaos``): a new schedule
    whenever the plan changed (its :attr:`~enchufe.faults.FaultPlan.version`)."""

    __slots__ = ("plan", "rng", "upstream", "version")

    def __init__(self, plan: FaultPlan, upstream: bool, rng: random.Random, version: int) -> None:
        self.plan = plan
        self.upstream = upstream
        self.rng = rng
        self.version = version

    def schedule(self, now: float, previous: StreamSchedule) -> StreamSchedule:
        self.version = self.plan.version  # first: a change meanwhile is seen next time
        schedule = StreamSchedule(self.plan.direction(self.upstream), self.rng, now)
        schedule.carry_over(previous)
        return schedule


class FaultyStreamSession(StreamSession):
    """A session whose directions go through the relay's faults (see the module)."""

    __slots__ = ()

    relay: FaultyStreamRelay

    def _pump(self, src: Side, dst: Side) -> Any:
        upstream = src is self.client
        schedule, follow = self._fault_schedule(upstream)
        if not schedule.acts and follow is None:
            return super()._pump(src, dst)
        loop = self.relay.loop
        return FaultPump(
            src.rfd,
            dst.wfd,
            schedule,
            finish=lambda: dst.shut_write(loop),
            dst_is_pipe=not dst.is_socket,
            follow=follow,
            **self._pump_hooks(upstream),
        )

    def _fault_schedule(self, upstream: bool) -> tuple[StreamSchedule, Follow | None]:
        """A direction's schedule, and how it follows a live plan (``None``: not live)."""
        plan = self.relay.faults
        # One generator per direction of each session, from the seed: the draws of one
        # connection do not depend on what the others did meanwhile.
        rng = random.Random(f"{plan.seed}/{self.id}/{'up' if upstream else 'down'}")
        version = plan.version  # before the toxics are read: a change meanwhile is seen later
        schedule = StreamSchedule(plan.direction(upstream), rng, time.monotonic())
        return schedule, Follow(plan, upstream, rng, version) if plan.live else None

    def _pump_hooks(self, upstream: bool) -> dict[str, Any]:
        """What a direction's :class:`FaultPump` calls back: its timers' loop, the step it
        wakes, and what ends the session when one of its callbacks fails."""
        return {
            "loop": self.relay.loop,
            "wake": (lambda: self._due(1, 0)) if upstream else (lambda: self._due(0, 1)),
            "on_error": self.crashed,
        }

    def _due(self, run_up: int, run_down: int) -> None:
        """A direction's timer: what was waiting is due now."""
        if self.state == OPEN:
            self._step(run_up, run_down)

    def _step(self, run_up: int, run_down: int) -> None:
        super()._step(run_up, run_down)
        if self.state != OPEN:
            return
        for pump, name in ((self.up, "upstream"), (self.down, "downstream")):
            ending = getattr(pump, "ending", 0)
            if ending:
                self._fault_end(ending, name, pump)
                return

    def _fault_end(self, ending: int, name: str, pump: Pump | FaultPump | None) -> None:
        reset = ending == RESET
        stats = self.relay.stats
        if reset:
            stats.reset += 1
        what = "reset" if reset else "closed"
        assert isinstance(pump, FaultPump)
        kinds = ", ".join(toxic.name for toxic in pump.schedule.toxics)
        self._end(f"fault-{what}", abortive=reset, error=_fault_words(reset, name).format(kinds=kinds))


def _fault_words(reset: bool, direction: str) -> str:
    """Why a fault ended a session (``{kinds}`` to fill in), a whole clause per case so that a
    translation says the direction its own way."""
    if direction == "upstream":
        if reset:
            return _("reset by --fault on the upstream ({kinds})")
        return _("closed by --fault on the upstream ({kinds})")
    if reset:
        return _("reset by --fault on the downstream ({kinds})")
    return _("closed by --fault on the downstream ({kinds})")


class FaultyStreamRelay(StreamRelay):
    """A stream relay whose sessions go through ``faults`` (see the module)."""

    def __init__(self, *args: Any, faults: FaultPlan, **options: Any) -> None:
        super().__init__(*args, **options)
        self.faults = faults
        self._version = faults.version

    def start(self) -> None:
        super().start()
        if self.faults.live:
            self.loop.call_every(LIVE_CHECK, self._follow_plan)

    def _follow_plan(self) -> None:
        """A live plan changed: every connection looks at once (an idle one too: a timeout
        added to it must close it even if nothing moves)."""
        version = self.faults.version
        if version == self._version:
            return
        self._version = version
        for session in list(self.sessions):
            if isinstance(session, FaultyStreamSession):
                session._due(1, 1)

    def session_kind(self) -> type[FaultyStreamSession]:
        """The class of a new session: with a TLS end, one whose faults act on the plaintext
        (:mod:`.faulty_tls`)."""
        if self.client_tls is not None or self.target_tls is not None:
            from .faulty_tls import FaultyTLSStreamSession

            return FaultyTLSStreamSession
        return FaultyStreamSession

    def make_session(self, conn: socket.socket, peer: Any, session_id: int) -> Any:
        return self.session_kind()(self, Side(conn), conn, peer, session_id)


class FaultyStdioRelay(FaultyStreamRelay, StdioRelay):
    """LISTEN is ``-`` (stdin and stdout, one session) with faults."""

    def start(self) -> None:
        self.stats.total += 1
        self.stats.open += 1
        session = self.session_kind()(self, stdio_side(), None, None, next(self._ids))
        self.sessions.add(session)
        session.start()

    def one_shot_broken(self, session: StreamSession, reason: str, error: str | None) -> None:
        if not reason.startswith("fault-"):
            super().one_shot_broken(session, reason, error)
            return
        self.events(
            "error",
            _("enchufe: {error} after {to_target} bytes to the target and {to_client} back, as asked").format(
                error=error, to_target=session.to_target, to_client=session.to_client
            ),
            id=session.id,
            reason=reason,
            error=error or reason,
            to_target=session.to_target,
            to_client=session.to_client,
        )

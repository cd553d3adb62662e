"""Faults on purpose in a datagram relay (``enchufe relay udp://… udp://… --fault``): each
datagram goes through its session's :class:`~enchufe.faults.DatagramSchedule`, one per
direction, and is sent when the schedule says (at once, later on an engine timer, twice, never).

The choice is made once per relay (:mod:`.server` makes a :class:`FaultyDatagramRelay` only with
``--fault``): a relay without faults keeps its batched paths and never looks at this module.
This one takes the general paths only, one datagram at a time (no GSO runs, no inline
request/response path): the bytes must pass through the schedule.

What it shares with the framed relay from a datagram LISTEN (:mod:`.faulty_tunnel`) is
:class:`DatagramFaults`: the schedules of each session, and the datagrams each lets go.

A datagram sent later goes only if its session is still open then.  A reply due while an
earlier one still waits for the sender's socket is dropped and counted (``dropped``), as the
kernel drops what a full socket cannot queue.
"""

from __future__ import annotations

import functools
import random
import socket
import time
from typing import Any

from .. import trace
from ..faults import DatagramSchedule, FaultPlan
from ..sessions import Session
from .datagram import DatagramRelay, DatagramUpstream
from .datagram_io import traced_recv
from .datagram_listener import DatagramListener, Key, Upstream

__all__ = ["DatagramFaults", "FaultyDatagramRelay"]

#: Datagrams read from one upstream per readiness event (the relay's own loop is level-triggered).
READS = 64


class DatagramFaults(DatagramListener):
    """What the datagram listeners with faults share (this module's relay, and the framed one
    of :mod:`.faulty_tunnel`): each session's schedules, and each datagram sent when its
    schedule says, in both directions.  A relay says how one goes now (:meth:`_forward_now`)
    and how a session waits for its sender's socket (:meth:`_hold_replies`)."""

    def __init__(self, *args: Any, faults: FaultPlan, **options: Any) -> None:
        super().__init__(*args, **options)
        self.faults = faults
        #: a session's id → the plan's version they were made for, and its schedules (up, down)
        self._schedules: dict[int, tuple[int, DatagramSchedule, DatagramSchedule]] = {}

    def _schedule(self, session: Upstream, upstream: bool) -> DatagramSchedule:
        """The session's schedule for one direction; made again (its random generator kept)
        when a live plan changed."""
        plan = self.faults
        entry = self._schedules.get(session.id)
        if entry is None or entry[0] != plan.version:
            version = plan.version  # before the toxics are read: a change meanwhile is seen later
            if entry is None:
                seed = f"{plan.seed}/{session.id}"
                rngs = (random.Random(f"{seed}/up"), random.Random(f"{seed}/down"))
            else:
                rngs = (entry[1].rng, entry[2].rng)
            entry = (
                version,
                DatagramSchedule(plan.direction(True), rngs[0]),
                DatagramSchedule(plan.direction(False), rngs[1]),
            )
            self._schedules[session.id] = entry
        return entry[1] if upstream else entry[2]

    def _ended(self, entry: Session[Key, Upstream], why: str) -> None:
        self._schedules.pop(entry.state.id, None)
        super()._ended(entry, why)

    # -- client → target

    def _forward(self, session: Upstream, data: memoryview, raw: bool) -> None:
        now = time.monotonic()
        for when, out in self._schedule(session, True).feed(now, bytes(data)):
            if when <= now:
                self._forward_now(session, out)
            else:
                self.loop.call_later(when - now, functools.partial(self._forward_later, session, out))

    def _forward_now(self, session: Upstream, data: bytes) -> None:
        """Send a client's datagram on, now."""
        raise NotImplementedError

    def _forward_later(self, session: Upstream, data: bytes) -> None:
        if self.current(session):
            self._forward_now(session, data)

    # -- target → client

    def _reply(self, session: Upstream, schedule: DatagramSchedule, now: float, data: bytes) -> None:
        """A datagram from the target that came at ``now``, through ``schedule`` (the session's
        downstream one) to the sender."""
        for when, out in schedule.feed(now, data):
            if when <= now:
                self._reply_now(session, out)
            else:
                self.loop.call_later(when - now, functools.partial(self._reply_later, session, out))

    def _reply_now(self, session: Upstream, data: bytes) -> None:
        if session.pending_reply is not None:
            self.stats.dropped += 1  # an earlier reply still waits: the kernel would drop it too
            return
        if not self.replies.send(session, data):
            self._hold_replies(session)

    def _reply_later(self, session: Upstream, data: bytes) -> None:
        if self.current(session):
            self._reply_now(session, data)

    def _hold_replies(self, session: Upstream) -> None:
        """A reply waits for the sender's socket: read no more for the session until it is out."""
        raise NotImplementedError


class FaultyDatagramRelay(DatagramFaults, DatagramRelay):
    """Datagram LISTEN → datagram TARGET through ``faults`` (see the module)."""

    runs_above = 1 << 30  # never runs: one datagram at a time, each through the schedule

    # -- client → target

    def _on_listener(self, events: int) -> None:
        DatagramListener._on_listener(self, events)  # the general path: no inline one

    def _forward_now(self, session: Upstream, data: bytes) -> None:
        assert isinstance(session, DatagramUpstream)
        if session.pending:
            session.pending.append((data, len(data), 1))
        else:
            self._send_up(session, data, len(data), 1)

    # -- target → client

    def _on_upstream(self, session: DatagramUpstream, events: int) -> None:
        self._upstream_events(session, events)  # the general path: no inline one

    def _replies_from(self, session: DatagramUpstream) -> None:
        """Read what the target sent, each datagram through the session's downstream schedule."""
        view = self._buffer
        limit = len(view)
        recv = traced_recv(session.sock) if trace.enabled() else session.sock.recv_into
        now = time.monotonic()
        schedule = self._schedule(session, False)
        got = 0
        for _ in range(READS):
            try:
                size = recv(view, 0, socket.MSG_TRUNC)
            except BlockingIOError:
                break
            except OSError as exc:
                if self._reply_error(session, exc):
                    continue
                return
            got += 1
            if size > limit:
                self._truncated(self.target_label, size, "target")
                continue
            self._reply(session, schedule, now, bytes(view[:size]))
            if session.pending_reply is not None:
                break  # the sender's socket is full: read no more until it takes this
        if got:
            self.table.touch(session.peer, now)

    def _hold_replies(self, session: Upstream) -> None:
        assert isinstance(session, DatagramUpstream)
        self.watch(session)

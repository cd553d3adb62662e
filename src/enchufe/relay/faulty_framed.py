"""Faults on purpose in a stream → datagram relay with ``--frame`` (``enchufe relay tcp://…
udp://… --frame --fault loss:probability=0.1``): each message, in either direction, goes through
its session's :class:`~enchufe.faults.DatagramSchedule`, one per direction, as a datagram of a
datagram relay does (:mod:`.faulty_datagram`): sent when the schedule says (at once, later on an
engine timer, twice, never).

The choice is made once per relay (:mod:`.handlers` makes a :class:`FaultyFramedStreamRelay`
only with ``--fault``): a relay without faults never looks at this module.

A message the schedule lets go to the target when the target's socket cannot take it (EAGAIN)
is dropped and counted (``dropped``), as UDP drops what a full socket cannot queue: the schedule
has already decided its fate, and feeding it again would draw again.  A message due later goes
only if its session is still open then.  A live plan (``enchufe chaos``) is followed: the
schedules are made again, their random generators kept, when the plan changed.
"""

from __future__ import annotations

import functools
import random
import socket
import time
from typing import Any

from ..faults import DatagramSchedule, FaultPlan
from .framed import FramedStreamRelay, FramedStreamSession
from .session import OPEN

__all__ = ["FaultyFramedStreamRelay", "FaultyFramedStreamSession"]


class FaultyFramedStreamRelay(FramedStreamRelay):
    """Stream LISTEN → datagram TARGET, framed, through ``faults`` (see the module)."""

    def __init__(self, *args: Any, faults: FaultPlan, **options: Any) -> None:
        super().__init__(*args, **options)
        self.faults = faults

    def make_session(self, conn: socket.socket, peer: Any, session_id: int) -> Any:
        return FaultyFramedStreamSession(self, conn, peer, session_id)


class FaultyFramedStreamSession(FramedStreamSession):
    """A framed session whose messages go through the relay's faults (see the module)."""

    __slots__ = ("_rngs", "_schedules", "_version")

    relay: FaultyFramedStreamRelay

    def __init__(
        self, relay: FaultyFramedStreamRelay, conn: socket.socket, peer: Any, session_id: int
    ) -> None:
        super().__init__(relay, conn, peer, session_id)
        # One generator per direction of each session, from the seed (as the datagram relay's).
        seed = f"{relay.faults.seed}/{session_id}"
        self._rngs = (random.Random(f"{seed}/up"), random.Random(f"{seed}/down"))
        self._version = -1
        self._schedules: tuple[DatagramSchedule, ...] = ()

    def _schedule(self, upstream: bool) -> DatagramSchedule:
        plan = self.relay.faults
        if self._version != plan.version:
            self._version = plan.version  # before the toxics are read: a change meanwhile is seen later
            up, down = self._rngs
            self._schedules = (
                DatagramSchedule(plan.direction(True), up),
                DatagramSchedule(plan.direction(False), down),
            )
        return self._schedules[0 if upstream else 1]

    # -- client → target

    def _forward(self, upstream: socket.socket, message: bytes) -> bool:
        now = time.monotonic()
        for when, data in self._schedule(True).feed(now, message):
            if when <= now:
                self._send_now(upstream, data)
            else:
                self.relay.loop.call_later(when - now, functools.partial(self._send_later, data))
        return True

    def _send_now(self, upstream: socket.socket, data: bytes) -> None:
        if self._send_one(upstream, data):
            self.count_to_target(len(data))
        else:
            self.relay.stats.dropped += 1  # the target's socket is full: UDP would drop it too

    def _send_later(self, data: bytes) -> None:
        if self.state == OPEN and self.upstream is not None:
            self._send_now(self.upstream, data)

    # -- target → client

    def _reply(self, data: memoryview | bytes) -> None:
        now = time.monotonic()
        for when, out in self._schedule(False).feed(now, bytes(data)):
            if when <= now:
                super()._reply(out)
            else:
                self.relay.loop.call_later(when - now, functools.partial(self._reply_later, out))

    def _reply_later(self, data: bytes) -> None:
        if self.state != OPEN:
            return
        super()._reply(data)
        if self._flush():
            self._update()

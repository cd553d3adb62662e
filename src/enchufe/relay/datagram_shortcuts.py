"""A datagram relay's request/response path handed to the loop's compiled poller, and taken back.

The datagram twin of :mod:`.shortcuts`.  While a datagram relay reads one datagram per
readiness event (its :class:`~.datagram_io.ReadMode` is single), the poller
(``enchufe._speedups.Poller``) serves those events itself:

* the listener's (``datagrams_in``): a datagram whose sender has a *route* (a session whose
  upstream has nothing waiting) is sent on that upstream;
* each session's upstream (``replies``): a reply is sent to the sender its last request came
  from, through the listener.

Each is armed with a *budget*: the events the read mode would read one by one before it tries
a batch again (:attr:`ReadMode.countdown`); the event after it reaches Python, which tries the
batch as before, so that a burst is still read in batches and sent in runs (UDP GSO).  A
datagram the poller cannot finish (a new sender, one too large, a send refused, a failed read)
is handed over: the relay goes on from what it read, as its own fast path would have.

What the poller sends is counted per session in the poller and looked at (:func:`sync`) before
anything depends on it: before a session is opened (a full table evicts the least recently
active), when the idle sessions are expired, when a session ends, and (added, not counted) in
a stats snapshot.  A session's activity is then its last datagram's time.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from .. import trace
from .datagram_listener import describe_sender, existing_only, transient_or_raise
from .engine import HANDED, READ

if TYPE_CHECKING:
    from .datagram import DatagramRelay, DatagramUpstream

__all__ = [
    "arm_listener",
    "arm_upstream",
    "ended",
    "on_listener",
    "on_upstream",
    "route",
    "sync",
    "totals",
]


def on_listener(relay: DatagramRelay, events: int) -> None:
    """The listener's handler while the relay may take shortcuts."""
    poller = relay.loop.poller
    assert poller is not None
    fd = relay.listener.fileno()
    mode = relay._read_mode
    if relay._cut_in:
        relay._cut_in = False
        if events & HANDED:
            data, size, sender, read_errno, send_errno, left = poller.take_datagram(fd)
            mode.countdown = left + 1
            _request(relay, data, size, sender, read_errno, send_errno)
            arm_listener(relay)
            return
        mode.countdown = poller.disarm(fd) + 1  # its budget ran out: Python's turn to try a batch
    relay._on_listener(events)
    arm_listener(relay)


def _request(
    relay: DatagramRelay, data: bytes, size: int, sender: object, read_errno: int, send_errno: int
) -> None:
    """A listener's datagram the poller handed over: on as the relay's own fast path goes."""
    if read_errno:
        transient_or_raise(OSError(read_errno, os.strerror(read_errno)))
        return
    if size > len(relay._buffer):
        relay._truncated(describe_sender(relay.listener.family, sender), size, "client")
        relay._listen_for()
        return
    now = time.monotonic()
    key = sender or None
    table = relay.table
    entry = table.get(key)
    if entry is None:  # a new sender (it has no route yet)
        entry = relay._entry_for(sender, now)
        if entry is not None:
            relay._forward(entry.state, memoryview(data), True)
        relay._listen_for()
        return
    table.seen(key, now, existing_only)
    session = entry.state
    if send_errno:  # the poller's send failed: what _forward does when its own does
        relay._forward_failed(session, memoryview(data), send_errno)  # type: ignore[arg-type]
    else:
        relay._forward(session, memoryview(data), True)


def arm_listener(relay: DatagramRelay) -> None:
    """Serve the listener's routed datagrams in the poller while it reads one per event."""
    mode = relay._read_mode
    if (
        mode.batch
        or mode.countdown <= 1
        or relay.blocked
        or relay.replies.waiting
        or not relay._accepting
        or relay._listener_mask != READ
        or trace._sink is not None  # trace.enabled(), inline
    ):
        return
    poller = relay.loop.poller
    assert poller is not None
    poller.datagrams_in(relay.listener.fileno(), len(relay._buffer), mode.countdown - 1)
    relay._cut_in = True


def on_upstream(relay: DatagramRelay, session: DatagramUpstream, events: int) -> None:
    """A session's upstream handler while the relay may take shortcuts."""
    poller = relay.loop.poller
    assert poller is not None
    mode = session.read_mode
    if session.cut:
        session.cut = False
        if events & HANDED:
            data, size, _sender, read_errno, _send_errno, left = poller.take_datagram(session.fd)
            mode.countdown = left + 1
            _reply(relay, session, data, size, read_errno)
            arm_upstream(relay, session)
            return
        mode.countdown = poller.disarm(session.fd) + 1
    relay._on_upstream(session, events)
    arm_upstream(relay, session)


def _reply(relay: DatagramRelay, session: DatagramUpstream, data: bytes, size: int, read_errno: int) -> None:
    """A reply the poller handed over: on as the relay's own fast path goes (its send is tried
    again: the poller's may have been refused, or it knew no address yet)."""
    if read_errno:
        relay._reply_error(session, OSError(read_errno, os.strerror(read_errno)))
    elif size > len(relay._buffer):
        relay._truncated(relay.target_label, size, "target")
        relay.table.touch(session.peer, time.monotonic())
    else:
        relay._reply_one(session, memoryview(data), True)


def arm_upstream(relay: DatagramRelay, session: DatagramUpstream) -> None:
    """Serve the session's replies in the poller while it reads one per event."""
    mode = session.read_mode
    if (
        mode.batch
        or mode.countdown <= 1
        or session.pending_reply is not None
        or session.mask != READ
        or not relay.current(session)
        or trace._sink is not None
    ):
        return
    poller = relay.loop.poller
    assert poller is not None
    poller.replies(session.fd, relay.listener.fileno(), len(relay._buffer), mode.countdown - 1)
    session.cut = True


def route(relay: DatagramRelay, session: DatagramUpstream) -> None:
    """Let the poller send the session's requests while none wait before them (called when
    it opens, and whenever what waits changes)."""
    poller = relay.loop.poller
    if poller is None:
        return
    # An unnamed unix sender (no address, key None) cannot be told apart: never routed.
    want = not session.pending and session.peer is not None and session.fd in relay.upstreams
    if want != session.routed:
        if want:
            poller.route(relay.listener.fileno(), session.peer, session.fd)
        else:
            poller.unroute(relay.listener.fileno(), session.peer)
        session.routed = want


def ended(relay: DatagramRelay, session: DatagramUpstream) -> None:
    """The session ends: its last counts are counted (its close event says them), its route
    goes."""
    sync(relay)
    relay.upstreams.pop(session.fd, None)
    if session.routed:
        poller = relay.loop.poller
        assert poller is not None
        poller.unroute(relay.listener.fileno(), session.peer)
        session.routed = False


def sync(relay: DatagramRelay) -> None:
    """Count what the poller moved since the last look, for each session it moved something
    for: its counters, the relay's, and its activity in the table (in the order it happened)."""
    poller = relay.loop.poller
    if poller is None:
        return
    moved = poller.dirty()
    if not moved:
        return
    moved.sort(key=lambda counts: counts[5])  # by the time of the last datagram
    stats = relay.stats
    table = relay.table
    upstreams = relay.upstreams
    for fd, up, up_count, down, down_count, last in moved:
        session = upstreams.get(fd)
        if session is None:
            continue
        session.to_target += up
        session.datagrams_to_target += up_count
        session.to_client += down
        session.datagrams_to_client += down_count
        stats.to_target += up
        stats.datagrams_to_target += up_count
        stats.to_client += down
        stats.datagrams_to_client += down_count
        entry = table.get(session.peer)
        if entry is not None and entry.state is session:
            entry.datagrams += up_count
            if last > entry.last_seen:
                table.touch(session.peer, last)


def totals(relay: DatagramRelay) -> tuple[int, int, int, int]:
    """What the poller moved and :func:`sync` has not counted yet: (bytes to the target,
    datagrams to it, bytes to clients, datagrams to them).  A peek, safe from another thread."""
    poller = relay.loop.poller
    if poller is None:
        return 0, 0, 0, 0
    totals: tuple[int, int, int, int] = poller.dirty_totals()
    return totals

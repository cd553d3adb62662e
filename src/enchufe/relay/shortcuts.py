"""A relayed stream's small-message path handed to the loop's compiled poller, and taken back.

While a direction of a session is in its simplest state (nothing in flight, no EOF, not
streaming in bulk: :attr:`.PumpState.simple`), all its pump would do when ``src`` is readable is
one read and one write; the session then asks the loop to do exactly that itself
(:meth:`~.engine.Loop.shortcut`), so that a request and its response cross the relay without a
line of Python.  What the poller cannot finish comes back as a :data:`~.engine.HANDED` event:
the session takes what was read (:meth:`~.engine.Loop.take`; :func:`settle`, before anything
else of the session runs), the pump goes on from there, and the shortcut is armed again once
the direction is simple again (after the step).

The bytes a shortcut moves are counted where the session's other bytes are (its ``to_target``
and ``to_client``, the relay's :class:`~.stats.Stats`, the idle timer's last activity) when the
session looks: a hand-over, a change of shortcuts, the idle timer, the session's end.  A stats
snapshot in between adds what is still pending (:func:`pending`) without counting it.

The functions here take the stream session (a :class:`~.stream_session.StreamSession`) first.
Only plain sessions take shortcuts: both ends sockets, plain :class:`~.pump.Pump` both ways (no
TLS, no faults, no framing), no terminal, and no tracing (a narration shows every call).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .. import trace
from .engine import READ
from .pump import Pump

if TYPE_CHECKING:
    from .sides import Side
    from .stream_session import StreamSession

__all__ = [
    "DOWN",
    "NO_SHORTCUTS",
    "UP",
    "WARM_UP",
    "arm",
    "collect",
    "count",
    "disarm",
    "may_cut",
    "pending",
    "settle",
]

#: ``StreamSession._cuts`` of a session that never takes shortcuts
NO_SHORTCUTS = -1
#: ``StreamSession._cuts`` of a new plain session: it counts up (-4, -3, -2) with every step
#: after which both directions are simple, and the shortcuts are armed at the third.  A client
#: that connects, sends one request, reads one answer and closes (most short connections) never
#: has them: arming and taking back would cost it more than the one hop they would spare.
WARM_UP = -4
#: bits of ``StreamSession._cuts``: the directions whose shortcut is armed
UP = 1
DOWN = 2
#: what :meth:`~.engine.Loop.moved` says of a direction with no shortcut
NONE = (0, 0.0)
NONE_PENDING = (0, 0)


def may_cut(session: StreamSession, stop_early: bool) -> int:
    """``_cuts`` for a session whose pumps were just made: :data:`WARM_UP` if it may take
    shortcuts."""
    client, target, up, down = session.client, session.target, session.up, session.down
    plain = (
        session.relay.loop.shortcuts
        and not stop_early
        and client.sock is not None
        and target is not None
        and target.sock is not None
        and type(up) is Pump
        and type(down) is Pump
    )
    return WARM_UP if plain else NO_SHORTCUTS


def arm(session: StreamSession, up: Pump, down: Pump) -> None:
    """After a step: a shortcut for each direction that is simple now, none for the others."""
    want = _wanted(session, up, down)
    cuts = session._cuts
    if want == cuts:
        return
    if cuts < 0:  # the last step of the warm-up (see WARM_UP; the session counts the others)
        if want != UP | DOWN:
            return
        cuts = 0
    loop = session.relay.loop
    client, target = session.client, session.target
    assert target is not None
    changed = want ^ cuts
    moved_up = moved_down = 0
    if changed & UP:
        if want & UP:
            loop.shortcut(client.rfd, target.wfd, session.relay.pools.hop_size)
        else:
            moved_up = loop.unshortcut(client.rfd)
    if changed & DOWN:
        if want & DOWN:
            loop.shortcut(target.rfd, client.wfd, session.relay.pools.hop_size)
        else:
            moved_down = loop.unshortcut(target.rfd)
    session._cuts = want
    if moved_up or moved_down:
        count(session, moved_up, moved_down)


def _wanted(session: StreamSession, up: Pump, down: Pump) -> int:
    """The directions that may have a shortcut now: simple, and their source read."""
    if trace._sink is not None:  # trace.enabled(), inline: a narration shows every call
        return 0
    target = session.target
    assert target is not None
    # PumpState.simple, inline: this runs after every step of a plain session
    want = UP if session.client.mask & READ else 0
    if up.in_flight or up.hold_off or up.eof or up.stalled or up.taken:
        want = 0
    if target.mask & READ and not (down.in_flight or down.hold_off or down.eof or down.stalled or down.taken):
        want |= DOWN
    return want


def settle(session: StreamSession, handed: int) -> int:
    """Collect what the session's shortcuts handed over, before anything else of the session
    runs: the directions (:data:`UP`, :data:`DOWN`) whose pumps now go on from it.

    ``handed`` is the direction whose :data:`~.engine.HANDED` event is being handled (0 for
    another event).  A batch of events may bring that hand-over after another event of the same
    session (the other side's), whose step could run either pump: a pump that read its source
    then would send bytes ahead of the ones the poller read before them, and a shortcut changed
    then (re-armed, dropped, its descriptor registered anew) would lose them.  So the first
    handler of the session in a batch collects both directions' hand-overs, and the HANDED
    event that follows finds its direction no longer armed: nothing left to take.  A direction
    still armed whose HANDED event finds nothing raises LookupError (the bytes read are gone:
    the session is reset, never left with a hole).
    """
    cuts = session._cuts
    took = 0
    loop = session.relay.loop
    if cuts & UP and (handed & UP or loop.handed(session.client.rfd)):
        assert session.up is not None
        _take(session, session.up, session.client, UP)
        took = UP
    target = session.target
    if cuts & DOWN and target is not None and (handed & DOWN or loop.handed(target.rfd)):
        assert session.down is not None
        _take(session, session.down, target, DOWN)
        took |= DOWN
    return took


def _take(session: StreamSession, pump: Pump, side: Side, bit: int) -> None:
    """``side``'s shortcut handed its work over: ``pump`` goes on from what it read."""
    data, sent, read_errno, send_errno, moved = session.relay.loop.take(side.rfd)
    session._cuts &= ~bit
    pump.taken = (data, sent, read_errno, send_errno)
    if moved:
        if bit == UP:
            count(session, moved, 0)
        else:
            count(session, 0, moved)


def collect(session: StreamSession) -> bool:
    """Count what the armed shortcuts moved since the last look; whether they moved any."""
    cuts = session._cuts
    if cuts <= 0:
        return False
    loop = session.relay.loop
    target = session.target
    assert target is not None
    moved_up, last_up = loop.moved(session.client.rfd) if cuts & UP else NONE
    moved_down, last_down = loop.moved(target.rfd) if cuts & DOWN else NONE
    if moved_up or moved_down:
        count(session, moved_up, moved_down, max(last_up, last_down))
        return True
    return False


def pending(session: StreamSession) -> tuple[int, int]:
    """What the armed shortcuts moved since the last look, left to be counted: (to target,
    to client).  Counts nothing (safe from another thread: see Stats.snapshot)."""
    cuts = session._cuts
    if cuts <= 0:
        return NONE_PENDING
    loop = session.relay.loop
    target = session.target
    up = loop.pending(session.client.rfd) if cuts & UP else 0
    down = loop.pending(target.rfd) if cuts & DOWN and target is not None else 0
    return up, down


def disarm(session: StreamSession) -> None:
    """The session ends: its shortcuts go, what they moved is counted."""
    if session._cuts > 0:
        target = session.target
        assert target is not None
        loop = session.relay.loop
        moved_up = loop.unshortcut(session.client.rfd) if session._cuts & UP else 0
        moved_down = loop.unshortcut(target.rfd) if session._cuts & DOWN else 0
        session._cuts = 0
        if moved_up or moved_down:
            count(session, moved_up, moved_down)


def count(session: StreamSession, to_target: int, to_client: int, when: float | None = None) -> None:
    """Count bytes shortcuts moved, the last of them at ``when`` (default: now)."""
    session.to_target += to_target
    session.to_client += to_client
    stats = session.relay.stats
    stats.to_target += to_target
    stats.to_client += to_client
    when = time.monotonic() if when is None else when
    if when > session._last_active:
        session._last_active = when

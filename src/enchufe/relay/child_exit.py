"""An ``exec:`` child that exited while its session goes on: when the session is over.

Once what the child wrote is through (a short delay after its exit, then looks less and less
often while a slow client still reads it), its session ends, even if a process the child left
behind holds its stdout open, so that no EOF would ever come.  A child whose output's EOF came
leaves an ordinary half-closed session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..i18n import _
from .session import CLOSED
from .sides import readable

if TYPE_CHECKING:
    from .pump import Pump
    from .sides import Side
    from .stream_session import StreamSession

__all__ = ["CHILD_EXIT_RECHECK_MAX", "child_exited"]

#: Longest pause between two looks at a session whose exited child left output on its way to
#: a client that reads slowly.
CHILD_EXIT_RECHECK_MAX = 5.0


def child_exited(session: StreamSession, delay: float, check: bool = False) -> None:
    """The exec: child has exited: once what it wrote is through (``delay`` seconds later,
    then less and less often while a slow client still reads it), the session is over, even
    if a process the child left behind holds its stdout open, so that no EOF would come."""
    session._child_timer = None
    if session.state == CLOSED:
        return
    if check and session.down is not None and session.target is not None:
        if _output_through(session, session.down, session.target):
            return
        delay = min(delay * 2, CHILD_EXIT_RECHECK_MAX)
    session._child_timer = session.relay.loop.call_later(
        delay, lambda: session._child_exited(delay, check=True), session.crashed
    )


def _output_through(session: StreamSession, down: Pump, target: Side) -> bool:
    """Whether the exited child's session needs no more looks (it ended, or goes on as a
    half-closed one); False while its output is still on its way."""
    if down.done:
        return True  # its output's EOF came: the session goes on as any half-closed one
    if down.in_flight > 0 or (target.rfd >= 0 and readable(target.rfd)):
        return False
    relay = session.relay
    if relay.events.wants(1):
        assert session.child is not None
        relay.events(
            "exec",
            _("#{id} {program} exited, but a process it started holds its output open: closing").format(
                id=session.id, program=relay.target_label
            ),
            level=1,
            id=session.id,
            pid=session.child.pid,
        )
    session._end("done")
    return True

"""``exec:PROGRAM ARGS…`` targets: a child per client, its stdin and stdout as the other end.

::

    children = Children(loop, events)
    child = children.spawn(ExecAddress(("tr", "a-z", "A-Z")), env, session_id=7)
    child.stdin_w, child.stdout_r          # our ends of its pipes, non-blocking
    children.terminate(child)             # the connection broke: SIGTERM, SIGKILL after a grace
    children.release(child)               # the session is over: its group goes once it exits
    children.close()                      # the relay ends: stop and reap every child left

The child is started by :func:`enchufe._spawn.spawn` (``posix_spawnp``, no shell, nothing the
peer sends is interpreted): its stdin and stdout are pipes whose other ends are ours, its stderr
is the relay's.

Every child is reaped, never left a zombie: a pidfd (``pidfd_open``) in the event loop says when
it exits, and ``waitpid`` collects its status at once; a child whose connection broke gets
SIGTERM, then SIGKILL after :data:`TERMINATE_GRACE` seconds.  Without pidfd support, exits are
polled every :data:`~enchufe._spawn.EXIT_POLL_INTERVAL` seconds.

A child's ``on_exit`` callback (its session's) runs once it is reaped; if it raises, the
engine's failure path ends its owner (``on_error``, the session's crash handler: that session
only, its peers reset) and the relay goes on.  The SIGKILL that follows a SIGTERM is guarded
the same way: if its timer fails, the group is killed anyway.

Signals go to the child's process group (a session of its own, see :mod:`enchufe._spawn`), so
what it started in the background goes with it: when its connection breaks, when its session
ends after the child has exited (a process it left behind may hold its output), and when the
relay ends.  Only the child itself is ours to reap; the others are reparented as they exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping

from .._spawn import EXIT_POLL_INTERVAL, TERMINATE_GRACE, group_alive, open_pidfd, reap, signal_group, spawn
from ..address import ExecAddress
from ..i18n import _
from .engine import READ, Loop, OnError, Timer
from .events import EventSink

__all__ = ["Child", "Children"]


class Child:
    """One running program: its pid, our ends of its stdin and stdout pipes."""

    __slots__ = (
        "ended",
        "exited",
        "label",
        "on_error",
        "on_exit",
        "pid",
        "pidfd",
        "session_id",
        "status",
        "stdin_w",
        "stdout_r",
        "timer",
    )

    def __init__(self, pid: int, stdin_w: int, stdout_r: int, label: str, session_id: int) -> None:
        self.pid = pid
        self.stdin_w = stdin_w
        self.stdout_r = stdout_r
        self.label = label
        self.session_id = session_id
        self.pidfd = -1
        self.status: int | None = None
        self.exited = False
        #: Its session is over: its process group is stopped once it has exited.
        self.ended = False
        #: The SIGKILL that follows a SIGTERM to its group.
        self.timer: Timer | None = None
        #: Called once the child has exited and been reaped (its session may outlive it).
        self.on_exit: Callable[[], None] | None = None
        #: Ends the owner of :attr:`on_exit` if it raises (the session's crash handler).
        self.on_error: OnError | None = None


class Children:
    """The children of one relay process: spawned, watched, stopped, reaped."""

    def __init__(self, loop: Loop, events: EventSink) -> None:
        self.loop = loop
        self.events = events
        self.running: dict[int, Child] = {}
        #: Every child whose process group has not been stopped yet, by pid (= its group's id).
        self.groups: dict[int, Child] = {}
        self._poll_timer: Timer | None = None
        self._closing = False

    def spawn(self, program: ExecAddress, env: Mapping[str, str], *, session_id: int) -> Child:
        """Start ``program`` and watch it.

        Raises OSError if it cannot be started (not found, not executable, no descriptor or
        process left) and ValueError for an argv or environment the OS cannot take (a NUL byte);
        either way every descriptor made for it is closed again and nothing else is touched, so
        the caller ends only the session it was for.
        """
        pid, stdin_w, stdout_r = spawn(program, env)
        child = Child(pid, stdin_w, stdout_r, str(program), session_id)
        self.running[pid] = child
        self.groups[pid] = child
        self._watch(child)
        return child

    # -- watching

    def _watch(self, child: Child) -> None:
        child.pidfd = open_pidfd(child.pid)
        if child.pidfd >= 0:
            self.loop.register(child.pidfd, READ, lambda _events: self._on_exit(child))
        elif self._poll_timer is None:
            self._poll_timer = self.loop.call_later(EXIT_POLL_INTERVAL, self._poll)

    def _on_exit(self, child: Child) -> None:
        self._reap(child)

    def _poll(self) -> None:
        self._poll_timer = None
        for child in list(self.running.values()):
            self._reap(child)
        if any(c.pidfd < 0 for c in self.running.values()):
            self._poll_timer = self.loop.call_later(EXIT_POLL_INTERVAL, self._poll)

    def _reap(self, child: Child) -> bool:
        """Collect the child's exit status if it has exited; True if it has."""
        if child.exited:
            return True
        status = reap(child.pid)
        if status is None:
            return False
        child.exited = True
        child.status = status
        self._forget(child)
        # Its pidfd is forgotten: if what follows raised into the loop, the loop could not tell
        # whose it was, and the session waiting for this exit would never end.
        try:
            self._exited(child, status)
        except MemoryError:
            raise
        except Exception as exc:
            self.loop.fail(exc, child.on_error)
        if child.ended and not self._closing:
            self._stop(child)
        return True

    def _exited(self, child: Child, code: int) -> None:
        """Say that ``child`` exited, and tell its session."""
        if self.events.wants(1):
            if code < 0:
                line = _("#{id} {program} (pid {pid}) killed by signal {signal}").format(
                    id=child.session_id, program=child.label, pid=child.pid, signal=-code
                )
            else:
                line = _("#{id} {program} (pid {pid}) exited with status {status}").format(
                    id=child.session_id, program=child.label, pid=child.pid, status=code
                )
            self.events(
                "exit",
                line,
                level=1,
                id=child.session_id,
                pid=child.pid,
                status=code,
            )
        if child.on_exit is not None:
            on_exit, child.on_exit = child.on_exit, None
            on_exit()

    def _forget(self, child: Child) -> None:
        # Its timer stays: the SIGKILL is for what is left of its group too.
        self.running.pop(child.pid, None)
        if child.pidfd >= 0:
            self.loop.forget(child.pidfd)
            with contextlib.suppress(OSError):
                os.close(child.pidfd)
            child.pidfd = -1

    # -- stopping

    def terminate(self, child: Child) -> None:
        """The connection broke: SIGTERM to the child's group now (the child and what it started),
        SIGKILL to what is left of it after the grace."""
        child.ended = True
        if not child.exited:
            self._reap(child)
        self._stop(child)

    def release(self, child: Child) -> None:
        """The session ended in order: once the child has exited (now, if it has), what is left
        of its group is stopped as by :meth:`terminate`, so that nothing it started runs on
        without its connection; until then the child runs on, and is reaped when it exits."""
        child.ended = True
        if child.exited or self._reap(child):
            self._stop(child)

    def _stop(self, child: Child) -> None:
        # Not ours any more: stopped already, or its pid (and so its group's id) is a new child's.
        if child.timer is not None or self.groups.get(child.pid) is not child:
            return
        if not self._signal(child, signal.SIGTERM):
            del self.groups[child.pid]  # nobody left in it
            return

        def kill() -> None:
            child.timer = None
            if self.groups.get(child.pid) is not child:
                return
            del self.groups[child.pid]  # first: reaping it below must not stop it again
            if not child.exited:
                self._reap(child)
            self._signal(child, signal.SIGKILL)

        def kill_anyway(exc: Exception) -> str:
            # ``kill`` raised half-way (reaping it said something that failed): what is left of
            # the group must not outlive its connection for that.
            if self.groups.get(child.pid) is child:
                del self.groups[child.pid]
            self._signal(child, signal.SIGKILL)
            return _("killed what is left of #{id} {program} (process group {group})").format(
                id=child.session_id, program=child.label, group=child.pid
            )

        child.timer = self.loop.call_later(TERMINATE_GRACE, kill, kill_anyway)

    def _signal(self, child: Child, signum: int) -> bool:
        """Signal the child's group (the child stays in it: a session leader cannot leave);
        False if nobody is left in it."""
        return signal_group(child.pid, signum)

    def close(self, grace: float = TERMINATE_GRACE) -> None:
        """Stop and reap every child still running and stop what is left of every group (the
        relay is ending): SIGTERM, then SIGKILL after ``grace`` seconds.  Blocks at most about
        ``grace`` seconds."""
        self._closing = True
        # Copies: reaping forgets the child (it leaves ``running``) while we go through them.
        for child in list(self.running.values()):
            self._reap(child)
        left: dict[int, Child] = {}
        for pid, child in {**self.groups, **self.running}.items():
            if child.timer is not None:  # told already: its SIGKILL comes below instead
                child.timer.cancel()
                child.timer = None
                stopping = not child.exited or group_alive(pid)
            else:
                stopping = self._signal(child, signal.SIGTERM)
            if stopping:
                left[pid] = child
        deadline = time.monotonic() + grace
        while left and time.monotonic() < deadline:
            time.sleep(0.01)
            left = {pid: c for pid, c in left.items() if not (self._reap(c) and not group_alive(pid))}
        for child in left.values():
            self._signal(child, signal.SIGKILL)
            if not child.exited:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(child.pid, 0)
                child.exited = True
                self._forget(child)
        self.groups.clear()
        if self._poll_timer is not None:
            self._poll_timer.cancel()
            self._poll_timer = None

"""``exec:PROGRAM ARGS…``: a child process's stdin and stdout as the other end of a connection.

One child per connection, started by :func:`enchufe._spawn.spawn` as the relay's children are
(``posix_spawnp``, no shell: the argv was split like a shell when the address was parsed, so
nothing the peer sends is ever interpreted).  The child learns who it talks to from its
environment, as under inetd or ncat's ``--exec``: the ``ENCHUFE_*`` variables of
:func:`child_environment` (listed in :mod:`enchufe._spawn`), every value escaped, never raw.

Half-close both ways, by the copy policy of :mod:`enchufe._halfclose` driven on the running
asyncio loop (``add_reader``/``add_writer`` on the child's pipes, so uvloop works too): the
peer's EOF closes the child's stdin; the child's EOF on stdout shuts the socket's write side.
The child is always reaped (its exit is watched with a pidfd, or polled where there is none):
if the connection breaks, it is asked to stop (SIGTERM), then killed after a grace period.  It
runs in a session and process group of its own, and the signals go to the whole group: what it
started in the background is stopped with it, and also once the connection is over after the
child exited, so that nothing it started runs on without its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import TYPE_CHECKING, Any

from ._halfclose import Flow, HalfClose
from ._spawn import (
    CHILD_EXIT_GRACE,
    EXIT_POLL_INTERVAL,
    TERMINATE_GRACE,
    child_environment,
    group_alive,
    open_pidfd,
    reap,
    signal_group,
    spawn,
)
from .address import ExecAddress
from .errors import EnchufeError, reason
from .i18n import _

if TYPE_CHECKING:
    from .aio.stream import Connection

__all__ = ["child_environment", "run_exec"]

_CHUNK = 65536


async def run_exec(conn: Connection, program: ExecAddress) -> int:
    """Run ``program`` with ``conn`` as its stdin and stdout; returns its exit status.

    Raises nothing for a peer that goes away: the child is stopped and reaped and its status
    returned.  A program that cannot be started (missing, not executable, no descriptor or
    process left) raises :class:`~enchufe.errors.EnchufeError` for this connection only, with
    nothing left open.  Cancelled, it stops and reaps the child (and its group) and closes
    every descriptor it made before the cancellation goes on.
    """
    env = child_environment(conn.peer_address, conn.local_address, conn.peer_credentials)
    if conn.tls is not None:  # a TLS listener's client (the server ran the handshake first)
        from ._tls import environment

        env.update(environment(conn.tls))
    try:
        child = _Child(*spawn(program, env))
    except (OSError, ValueError) as exc:  # ValueError: a NUL in argv or env (checked, still)
        why = reason(exc) if isinstance(exc, OSError) and exc.strerror else str(exc).lower()
        raise EnchufeError(_("cannot run {program}: {reason}").format(program=program, reason=why)) from exc
    try:
        try:
            await _ExecPump(conn, child).run()
        except EnchufeError:
            await child.stop()  # the connection broke (reset, closed under us): stop the child
        status = await child.wait()
        await child.stop()  # what it left behind goes with the connection
        return status
    except BaseException:
        await child.stop()  # cancelled (e.g. the server is shutting down): never leave a zombie
        raise
    finally:
        child.close()


class _Child:
    """A child of :func:`~enchufe._spawn.spawn` on the running loop: our ends of its pipes, its
    exit (a pidfd when the system has them), its status once reaped."""

    def __init__(self, pid: int, stdin_w: int, stdout_r: int) -> None:
        self.pid = pid
        self.stdin_w = stdin_w
        self.stdout_r = stdout_r
        self.status: int | None = None
        self.pidfd = open_pidfd(pid)  # -1: its exit is polled

    def close_pipe(self, fd: int) -> None:
        """Close our end of a pipe (the loop forgets it first: a closed fd may be reused)."""
        loop = asyncio.get_running_loop()
        if fd == self.stdin_w:
            loop.remove_writer(fd)
            self.stdin_w = -1
        elif fd == self.stdout_r:
            loop.remove_reader(fd)
            self.stdout_r = -1
        else:
            return
        os.close(fd)

    def close(self) -> None:
        for fd in (self.stdin_w, self.stdout_r):
            if fd >= 0:
                self.close_pipe(fd)
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def reap(self) -> bool:
        """Collect its exit status if it has exited; True if it has."""
        if self.status is None:
            self.status = reap(self.pid)
        return self.status is not None

    async def exited(self) -> None:
        """Return once the child has exited, and is reaped."""
        if self.reap():
            return
        if self.pidfd < 0:
            while not self.reap():
                await asyncio.sleep(EXIT_POLL_INTERVAL)
            return
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()
        loop.add_reader(self.pidfd, _settle, readable)
        try:
            await readable
        finally:
            loop.remove_reader(self.pidfd)
        self.reap()

    async def wait(self) -> int:
        await self.exited()
        assert self.status is not None
        return self.status

    async def stop(self) -> None:
        """Stop its process group (the child, if it still runs, and what it started): SIGTERM,
        SIGKILL to what is left after :data:`TERMINATE_GRACE` seconds; the child is reaped."""
        pgid = self.pid  # its session's and group's id: it cannot leave them
        if not signal_group(pgid, signal.SIGTERM):
            await self.wait()
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TERMINATE_GRACE
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.exited(), TERMINATE_GRACE)
        while group_alive(pgid) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        signal_group(pgid, signal.SIGKILL)
        await self.wait()


def _settle(future: asyncio.Future[Any], value: Any = None) -> None:
    if not future.done():
        future.set_result(value)


class _ExecPump:
    """The asyncio driver of a :class:`~enchufe._halfclose.HalfClose` between a connection and
    a child: ``outgoing`` is the child's stdout to the peer, ``incoming`` the peer to its stdin.

    The socket side goes through the connection's own calls (one ``recv`` and one ``send_all``
    task at most, so its byte counts, buffer and close stay its own); the child's pipes are
    watched with ``add_reader``/``add_writer`` while a flow wants them.
    """

    def __init__(self, conn: Connection, child: _Child) -> None:
        self.conn = conn
        self.child = child
        self.copy = HalfClose(Flow("out"), Flow("in"))
        self.loop = asyncio.get_running_loop()
        self.recv_task: asyncio.Task[bytes] | None = None
        self.send_task: asyncio.Task[int] | None = None
        self.exit_task: asyncio.Task[None] = asyncio.ensure_future(child.exited())
        self.ready: set[int] = set()
        self.wake: asyncio.Future[None] = self.loop.create_future()
        self.watched: dict[int, bool] = {}  # fd → reading
        #: Once the child has exited: the bytes moved at the last look, and when that was.
        self.quiet: tuple[int, float] | None = None

    async def run(self) -> None:
        """Copy until both directions are done, or until the child has exited and its stdout,
        held open by a process it left behind, stays silent for :data:`CHILD_EXIT_GRACE` s.
        Raises what broke the connection (:class:`~enchufe.errors.EnchufeError`)."""
        try:
            while True:
                await self._pass_eofs()
                if self.copy.over:
                    return
                if self._held_open():
                    await self.conn.shutdown_write()  # its output is over
                    return
                self._start()
                await self._wait()
                self._collect()
        finally:
            await self._cancel()

    async def _pass_eofs(self) -> None:
        out, in_ = self.copy.outgoing, self.copy.incoming
        if out.wants_shutdown:
            out.shutdown()
            self._close(self.child.stdout_r)
            await self.conn.shutdown_write()
        if in_.wants_shutdown:
            in_.shutdown()
            self._close(self.child.stdin_w)  # the child's stdin ends

    def _held_open(self) -> bool:
        if not self.exit_task.done() or self.copy.outgoing.done:
            self.quiet = None  # nothing to look at (no timeout in _wait)
            return False
        moved, now = self.copy.outgoing.moved, self.loop.time()
        if self.quiet is None or self.quiet[0] != moved or self.copy.outgoing.wants_write:
            self.quiet = (moved, now)
            return False
        return now - self.quiet[1] >= CHILD_EXIT_GRACE

    def _start(self) -> None:
        """Start the socket calls and watch the pipes the flows want now."""
        out, in_ = self.copy.outgoing, self.copy.incoming
        if in_.wants_read and self.recv_task is None:
            self.recv_task = asyncio.ensure_future(self.conn.recv(_CHUNK))
        if out.wants_write and self.send_task is None:
            self.send_task = asyncio.ensure_future(self._send(bytes(out.pending)))
        self._watch(self.child.stdout_r, reading=True, wanted=out.wants_read)
        self._watch(self.child.stdin_w, reading=False, wanted=in_.wants_write)

    async def _send(self, data: bytes) -> int:
        await self.conn.send_all(data)
        return len(data)

    def _watch(self, fd: int, *, reading: bool, wanted: bool) -> None:
        if fd < 0 or wanted == (fd in self.watched):
            return
        add, remove = (
            (self.loop.add_reader, self.loop.remove_reader)
            if reading
            else (self.loop.add_writer, self.loop.remove_writer)
        )
        if wanted:
            add(fd, self._ready, fd)
            self.watched[fd] = reading
        else:
            remove(fd)
            del self.watched[fd]

    def _close(self, fd: int) -> None:
        self.watched.pop(fd, None)
        self.child.close_pipe(fd)

    def _ready(self, fd: int) -> None:
        self.ready.add(fd)
        _settle(self.wake)

    async def _wait(self) -> None:
        waited: set[asyncio.Future[Any]] = {self.wake}
        waited.update(task for task in (self.recv_task, self.send_task) if task is not None)
        if not self.exit_task.done():  # once it is, it would wake us at once, again and again
            waited.add(self.exit_task)
        timeout = None
        if self.quiet is not None:  # the child has exited: look at its output again in time
            timeout = max(0.0, self.quiet[1] + CHILD_EXIT_GRACE - self.loop.time())
        await asyncio.wait(waited, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if self.wake.done():
            self.wake = self.loop.create_future()

    def _collect(self) -> None:
        """Hand what completed to the flows; raises what broke the connection."""
        if self.recv_task is not None and self.recv_task.done():
            task, self.recv_task = self.recv_task, None
            self.copy.incoming.read(task.result())
        if self.send_task is not None and self.send_task.done():
            task_, self.send_task = self.send_task, None
            self.copy.outgoing.wrote(task_.result())
        ready, self.ready = self.ready, set()
        if self.child.stdout_r in ready and self.copy.outgoing.wants_read:
            self._read_child()
        if self.child.stdin_w in ready and self.copy.incoming.wants_write:
            self._write_child()

    def _read_child(self) -> None:
        try:
            data = os.read(self.child.stdout_r, _CHUNK)
        except BlockingIOError:
            return
        self.copy.outgoing.read(data)

    def _write_child(self) -> None:
        flow = self.copy.incoming
        try:
            flow.wrote(os.write(self.child.stdin_w, flow.pending))
        except BlockingIOError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            # The child stopped reading: what the peer still sends has nowhere to go.
            flow.abandon()
            self._close(self.child.stdin_w)

    async def _cancel(self) -> None:
        for fd, reading in self.watched.items():
            (self.loop.remove_reader if reading else self.loop.remove_writer)(fd)
        self.watched.clear()
        tasks = [task for task in (self.recv_task, self.send_task, self.exit_task) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

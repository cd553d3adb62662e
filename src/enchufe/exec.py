"""``exec:PROGRAM ARGS…``: a child process's stdin and stdout as the other end of a connection.

One child per connection, started without a shell (the argv was split like a shell when the
address was parsed, so nothing the peer sends is ever interpreted).  The child learns who it
talks to from its environment, as under inetd or ncat's ``--exec``: the ``ENCHUFE_*`` variables
of :func:`child_environment` (listed in :mod:`enchufe._spawn`, shared with the relay's
children), every value escaped, never raw.

Half-close both ways: the peer's EOF closes the child's stdin; the child's EOF on stdout shuts
the socket's write side.  The child is always reaped: if the connection breaks, it is asked to
stop (SIGTERM), then killed after a grace period.  It runs in a session and process group of its
own, and the signals go to the whole group: what it started in the background is stopped with
it, and also once the connection is over after the child exited, so that nothing it started
runs on without its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._spawn import CHILD_EXIT_GRACE, TERMINATE_GRACE, child_environment, group_alive, signal_group
from .address import ExecAddress
from .errors import EnchufeError

if TYPE_CHECKING:
    from .aio.stream import Connection

__all__ = ["child_environment", "run_exec"]

_CHUNK = 65536


async def run_exec(conn: Connection, program: ExecAddress) -> int:
    """Run ``program`` with ``conn`` as its stdin and stdout; returns its exit status.

    Raises nothing for a peer that goes away: the child is stopped and reaped and its status
    returned.  A program that cannot be started (missing, not executable, no descriptor or
    process left) raises :class:`~enchufe.errors.EnchufeError` for this connection only, with
    nothing left open.
    """
    env = child_environment(conn.peer_address, conn.local_address, conn.peer_credentials)
    try:
        # A session of its own (uvloop has no process_group=): see enchufe._spawn.
        child = await asyncio.create_subprocess_exec(
            *program.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except (OSError, ValueError) as exc:  # ValueError: a NUL in argv or env (checked, still)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise EnchufeError(f"cannot run {program}: {reason.lower()}") from exc
    assert child.stdin is not None and child.stdout is not None
    stdin, stdout = child.stdin, child.stdout

    async def peer_to_child() -> None:
        try:
            while data := await conn.recv():
                if stdin.is_closing():
                    break  # the child is gone (uvloop closes its pipes): nowhere to go
                stdin.write(data)
                await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child stopped reading: what the peer still sends has nowhere to go
        finally:
            stdin.close()

    progress = _Progress()

    async def child_to_peer() -> None:
        while True:
            progress.reading = True
            data = await stdout.read(_CHUNK)
            progress.reading = False
            if not data:
                break
            progress.moved += len(data)
            await conn.send_all(data)
        await conn.shutdown_write()

    tasks = [asyncio.create_task(peer_to_child()), asyncio.create_task(child_to_peer())]
    both: asyncio.Future[list[None]] = asyncio.gather(*tasks)
    watcher = asyncio.create_task(_held_open(child, tasks[1], progress))
    try:
        try:
            waited: set[asyncio.Future[Any]] = {both, watcher}
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
            if both.done():
                both.result()  # raises what broke the connection
            else:  # the child is gone, a process it started holds its stdout: its output is over
                await conn.shutdown_write()
        except EnchufeError:
            await _stop(child)  # the connection broke (reset, closed under us): stop the child
        finally:
            watcher.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, watcher, return_exceptions=True)
            with contextlib.suppress(BaseException):
                await both  # retrieved, whatever it holds
        status = await child.wait()
        await _stop(child)  # what it left behind goes with the connection
        return status
    except BaseException:
        await _stop(child)  # cancelled (e.g. the server is shutting down): never leave a zombie
        raise
    finally:
        # Close the process transport now, not when it is collected: uvloop would otherwise call
        # back into a loop that may be closed by then.  asyncio exposes it only as _transport.
        transport = getattr(child, "_transport", None)
        if transport is not None:
            transport.close()


@dataclass
class _Progress:
    """What the copy of a child's output is doing: waiting for it, and how much went through."""

    reading: bool = False
    moved: int = 0


async def _held_open(
    child: asyncio.subprocess.Process, output: asyncio.Task[None], progress: _Progress
) -> None:
    """Return once the child has exited and its stdout, still open (held by a process it left
    behind), gave nothing for :data:`CHILD_EXIT_GRACE` seconds; never, if its EOF comes."""
    await _exit_of(child)
    while not output.done():
        before = progress.moved
        await asyncio.sleep(CHILD_EXIT_GRACE)
        if progress.reading and progress.moved == before:
            return
    await asyncio.Event().wait()  # its EOF came: the session ends as usual (this is cancelled)


async def _exit_of(child: asyncio.subprocess.Process) -> None:
    """Return once the child has exited (``child.wait()`` would also wait, under asyncio, for
    its pipes to close: never, while a process it started holds them)."""
    if child.returncode is not None:
        return
    try:
        pidfd = os.pidfd_open(child.pid)
    except ProcessLookupError:
        return  # exited and reaped already
    except (AttributeError, OSError):  # no pidfd here: look now and then
        while child.returncode is None:
            await asyncio.sleep(CHILD_EXIT_GRACE)
        return
    loop = asyncio.get_running_loop()
    exited = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def _stop(child: asyncio.subprocess.Process) -> None:
    """Stop the child's process group (the child, if it still runs, and what it started): SIGTERM,
    SIGKILL to what is left after :data:`TERMINATE_GRACE` seconds; the child is reaped."""
    pgid = child.pid  # its session's and group's id: it cannot leave them
    if not signal_group(pgid, signal.SIGTERM):
        await child.wait()
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TERMINATE_GRACE
    if child.returncode is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_exit_of(child), TERMINATE_GRACE)
    while group_alive(pgid) and loop.time() < deadline:
        await asyncio.sleep(0.02)
    signal_group(pgid, signal.SIGKILL)
    await child.wait()

"""``exec:PROGRAM ARGS…``: a child process's stdin and stdout as the other end of a connection.

One child per connection, started without a shell (the argv was split like a shell when the
address was parsed, so nothing the peer sends is ever interpreted).  The child learns who it
talks to from its environment, as under inetd or ncat's ``--exec``:

===========================  ==================================================
``ENCHUFE_PEER``             the peer's enchufe address (empty for an unnamed unix peer)
``ENCHUFE_PEER_ADDR``        its host (IP), or unix path / ``@name``
``ENCHUFE_PEER_PORT``        its port (IP kinds)
``ENCHUFE_LOCAL``            our address, and ``_ADDR`` / ``_PORT`` likewise
``ENCHUFE_PEER_PID/UID/GID`` the peer process's credentials (unix kinds, SO_PEERCRED)
``ENCHUFE_KIND``             ``tcp4``, ``tcp6`` or ``unix``
===========================  ==================================================

The peer chooses its unix path or abstract name: every value is passed through
:func:`enchufe._text.printable`, so that a NUL (which no environment can hold), a newline or a
terminal escape in it reaches the child as a visible escape (``\\x00``, ``\\n``), never raw.

Half-close both ways: the peer's EOF closes the child's stdin; the child's EOF on stdout shuts
the socket's write side.  The child is always reaped: if the connection breaks, it is asked to
stop (SIGTERM), then killed after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._sockets import Credentials
from ._text import printable
from .address import ExecAddress, InetAddress, SocketAddress, UnixAddress
from .aio.stream import Connection
from .errors import EnchufeError

__all__ = ["child_environment", "run_exec"]

#: Seconds a child gets to exit after SIGTERM when its connection broke, before SIGKILL.
TERMINATE_GRACE = 1.0

#: After the child exits, how long its stdout may stay silent without an EOF before the output
#: counts as over: a process it started in the background may hold the pipe for as long as it
#: lives (socat waits 0.5 s too).
CHILD_EXIT_GRACE = 0.5
_CHUNK = 65536


def _describe(prefix: str, address: SocketAddress | None) -> dict[str, str]:
    env = {prefix: printable(str(address)) if address is not None else ""}
    if isinstance(address, InetAddress):
        env[f"{prefix}_ADDR"] = printable(address.host)
        env[f"{prefix}_PORT"] = str(address.port)
    elif isinstance(address, UnixAddress):
        env[f"{prefix}_ADDR"] = printable(f"@{address.name}" if address.abstract else address.name)
    else:
        env[f"{prefix}_ADDR"] = ""
    return env


def child_environment(
    peer: SocketAddress | None,
    local: SocketAddress | None,
    credentials: Credentials | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The child's environment: ``base`` (default: ours) plus the ``ENCHUFE_*`` variables."""
    env = dict(os.environ if base is None else base)
    env.update(_describe("ENCHUFE_PEER", peer))
    env.update(_describe("ENCHUFE_LOCAL", local))
    if credentials is not None:
        env["ENCHUFE_PEER_PID"] = str(credentials.pid)
        env["ENCHUFE_PEER_UID"] = str(credentials.uid)
        env["ENCHUFE_PEER_GID"] = str(credentials.gid)
    known = local or peer
    kind = known.kind if known is not None else None
    env["ENCHUFE_KIND"] = kind.label if kind is not None else ""
    return env


async def run_exec(conn: Connection, program: ExecAddress) -> int:
    """Run ``program`` with ``conn`` as its stdin and stdout; returns its exit status.

    Raises nothing for a peer that goes away: the child is stopped and reaped and its status
    returned.  A program that cannot be started (missing, not executable, no descriptor or
    process left) raises :class:`~enchufe.errors.EnchufeError` for this connection only, with
    nothing left open.
    """
    env = child_environment(conn.peer_address, conn.local_address, conn.peer_credentials)
    try:
        child = await asyncio.create_subprocess_exec(
            *program.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env
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
        return await child.wait()
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
    if child.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        child.terminate()
    try:
        await asyncio.wait_for(child.wait(), TERMINATE_GRACE)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()

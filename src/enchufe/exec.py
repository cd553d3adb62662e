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

from ._sockets import Credentials
from ._text import printable
from .address import ExecAddress, InetAddress, SocketAddress, UnixAddress
from .aio.stream import Connection
from .errors import EnchufeError

__all__ = ["child_environment", "run_exec"]

#: Seconds a child gets to exit after SIGTERM when its connection broke, before SIGKILL.
TERMINATE_GRACE = 1.0
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

    async def child_to_peer() -> None:
        while data := await stdout.read(_CHUNK):
            await conn.send_all(data)
        await conn.shutdown_write()

    tasks = [asyncio.create_task(peer_to_child()), asyncio.create_task(child_to_peer())]
    try:
        try:
            await asyncio.gather(*tasks)
        except EnchufeError:
            await _stop(child)  # the connection broke (reset, closed under us): stop the child
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
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

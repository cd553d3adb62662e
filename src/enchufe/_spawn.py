"""A child per connection, for ``exec:PROGRAM ARGS…``: its environment, its start, its graces.

Shared by the relay's children (:mod:`enchufe.relay.children`, on its own event loop) and by
``listen --exec`` (:mod:`enchufe.exec`, on asyncio): the start, the reaping (:func:`reap`, with a
pidfd from :func:`open_pidfd` to say when), the stop of the group; this module needs neither
loop, so the relay does not load asyncio.

The child learns who it talks to from its environment, as under inetd or ncat's ``--exec``:

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

:func:`spawn` starts the child with ``posix_spawnp`` (no shell: the argv was split like a shell
when the address was parsed, so nothing the peer sends is ever interpreted), its stdin and stdout
pipes whose other ends are the caller's, its stderr ours.  Signals Python ignores (SIGPIPE,
SIGXFSZ) are reset to their defaults in the child, as ``subprocess`` does, so that
``yes | head``-like programs end as they would in a shell.

Each child starts a session of its own (``setsid``), so its process group, whose id is its pid,
holds it and whatever it starts in the background: when its connection is over, the caller
stops the whole group with :func:`signal_group`, as inetd or systemd stop a service's processes
with its connection, and nothing it started runs on (holding our stderr) after the relay is gone.
A session of its own rather than only a group: the child stays in it for life (a session leader
cannot move), and it has no controlling terminal, so it is never stopped (SIGTTIN) for reading
the terminal from a background group.  Terminal signals (Ctrl-C) reach only us; we stop it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Mapping
from typing import Any

from . import trace
from ._calls import Credentials, peer_credentials
from ._text import printable
from .address import ExecAddress, InetAddress, SocketAddress, UnixAddress, from_sockaddr

__all__ = [
    "CHILD_EXIT_GRACE",
    "EXIT_POLL_INTERVAL",
    "TERMINATE_GRACE",
    "child_environment",
    "group_alive",
    "open_pidfd",
    "reap",
    "signal_group",
    "socket_environment",
    "spawn",
]

#: Seconds a child gets to exit after SIGTERM when its connection broke, before SIGKILL.
TERMINATE_GRACE = 1.0

#: Where the system has no pidfds (:func:`open_pidfd` gives -1), how often a child's exit is
#: looked for with :func:`reap`.
EXIT_POLL_INTERVAL = 0.1

#: After the child exits, how long its stdout may stay silent without an EOF before the output
#: counts as over: a process it started in the background may hold the pipe for as long as it
#: lives, and the client would wait for it (socat waits 0.5 s too).
CHILD_EXIT_GRACE = 0.5

#: Signals reset to their default disposition in the child (Python ignores SIGPIPE and SIGXFSZ).
_RESET_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, name))


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


def socket_environment(
    sock: socket.socket | None, peer: Any, fallback_local: SocketAddress | None
) -> dict[str, str]:
    """The environment of a child for the stream ``sock`` whose peer is the socket address
    ``peer`` (empty or None: an unnamed unix peer); ``fallback_local`` stands for our address
    where the socket cannot tell it.  Without a socket (stdio), only ``fallback_local`` is known.
    A socket that fails as it is asked (a peer gone already) leaves those variables empty."""
    address = local = credentials = None
    if sock is not None:
        address = from_sockaddr(sock.family, socket.SOCK_STREAM, peer) if peer else None
        with contextlib.suppress(OSError):
            local = from_sockaddr(sock.family, socket.SOCK_STREAM, sock.getsockname())
        if sock.family == socket.AF_UNIX:
            with contextlib.suppress(OSError):
                credentials = peer_credentials(sock)
    return child_environment(address, local or fallback_local, credentials)


def spawn(program: ExecAddress, env: Mapping[str, str]) -> tuple[int, int, int]:
    """Start ``program`` with ``env``; returns ``(pid, stdin_w, stdout_r)``: the child's pid and
    our ends of its stdin and stdout pipes, non-blocking and close-on-exec.  The caller reaps it.

    Raises OSError if it cannot be started (not found, not executable, no descriptor or process
    left) and ValueError for an argv or environment the OS cannot take (a NUL byte); either way
    every descriptor made for it is closed again and nothing else is touched, so the caller ends
    only the session it was for.
    """
    made: list[int] = []
    try:
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
        made += (in_r, in_w)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        made += (out_r, out_w)
        pid = os.posix_spawnp(
            program.argv[0],
            list(program.argv),
            env,
            file_actions=[(os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1)],
            setsigdef=_RESET_SIGNALS,
            setsid=True,
        )
    except BaseException:
        for fd in made:
            os.close(fd)
        raise
    os.close(in_r)
    os.close(out_w)
    os.set_blocking(in_w, False)
    os.set_blocking(out_r, False)
    if trace.enabled():
        trace.emit(
            f"posix_spawnp({program.argv[0]}, {list(program.argv)}, setsid) = pid {pid}; "
            f"stdin ← fd {in_w}, stdout → fd {out_r}"
        )
    return pid, in_w, out_r


def open_pidfd(pid: int) -> int:
    """A descriptor that becomes readable when the child ``pid`` exits (``pidfd_open``), or -1
    where the system has none (its exit is then polled with :func:`reap`)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return -1


def reap(pid: int) -> int | None:
    """The exit status of the child ``pid`` if it has exited (negative: the signal that killed
    it), collected now; ``None`` while it runs.  A child reaped by someone else counts as 0."""
    try:
        found, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        found, status = pid, 0
    if found == 0:
        return None
    code = os.waitstatus_to_exitcode(status)
    if trace.enabled():
        trace.emit(f"waitpid({pid}) = exit status {code}")
    return code


def signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to every process of the group ``pgid`` (a child of :func:`spawn` and what
    it started); False, and nothing said, if none is left (ESRCH) or none may be signalled
    (EPERM: one that changed its uid)."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    if trace.enabled():
        trace.emit(f"kill(-{pgid}, {signal.Signals(signum).name})")
    return True


def group_alive(pgid: int) -> bool:
    """True while the group ``pgid`` has a process we may signal (a zombie left to a parent that
    does not reap it counts: callers wait for the group only a bounded time)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True

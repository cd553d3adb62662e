"""The system calls of the socket layer, one function each, narrated from the code that makes them.

Every function here makes one system call (or one small, named sequence of them), reports it to
:mod:`enchufe.trace` in strace's words through :func:`traced`, and lets ``OSError`` through
unchanged: the endpoint layers (``sync``, ``aio``, the relay) translate errors into
:mod:`enchufe.errors` at their one boundary, where they know what the user was trying to do.
The non-blocking calls of event loops are in :mod:`enchufe._nonblocking`.
"""

from __future__ import annotations

import _socket
import errno
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from . import trace

_FAMILY_NAMES: dict[int, str] = {
    socket.AF_INET: "AF_INET",
    socket.AF_INET6: "AF_INET6",
    socket.AF_UNIX: "AF_UNIX",
}
_TYPE_NAMES: dict[int, str] = {socket.SOCK_STREAM: "SOCK_STREAM", socket.SOCK_DGRAM: "SOCK_DGRAM"}
_UCRED = struct.Struct("3i")

R = TypeVar("R")

#: What Python's socket module takes as an address: (host, port[, flow, scope]), a path, or bytes.
SockAddr = tuple[Any, ...] | str | bytes


@dataclass(frozen=True)
class Credentials:
    """Who is at the other end of a unix socket, as the kernel saw it at connect time."""

    pid: int
    uid: int
    gid: int


#: A socket's family as the plain int the kernel gave: ``sock.family`` makes an enum of it through
#: three Python calls, ``raw_family(sock)`` is the C type's own getter (for the relay's paths
#: that run once per connection).
raw_family: Callable[[socket.socket], int] = cast(Any, _socket.socket).family.__get__


# ---------------------------------------------------------------------------- formatting


def describe_sockaddr(family: int, sockaddr: Any) -> str:
    """``127.0.0.1:9000``, ``[::1]:9000``, ``/run/app.sock``, ``@name`` or ``(unnamed)``."""
    if family == socket.AF_INET:
        host, port = sockaddr
        return f"{host}:{port}"
    if family == socket.AF_INET6:
        host, port = sockaddr[:2]
        scope = sockaddr[3] if len(sockaddr) > 3 else 0
        if scope and "%" not in host:
            host = f"{host}%{scope}"
        return f"[{host}]:{port}"
    if isinstance(sockaddr, bytes):
        if not sockaddr:
            return "(unnamed)"
        if sockaddr.startswith(b"\0"):
            return "@" + sockaddr[1:].decode("utf-8", "backslashreplace")
        return os.fsdecode(sockaddr)
    return str(sockaddr) if sockaddr else "(unnamed)"


def _fail(call: str, exc: OSError, started: float | None = None) -> None:
    if trace.enabled():
        code = errno.errorcode.get(exc.errno or 0, "") if exc.errno else "timeout"
        trace.emit(f"{call} = -1 {code} ({exc.strerror or exc})", started=started)


def nothing(_result: object) -> str:
    return ""


def equals(result: object) -> str:
    return f" = {result}"


def zero(_result: object) -> str:
    return " = 0"


def byte_count(size: int) -> str:
    """What a read returned: the byte count, and EOF when it is 0."""
    return f" = {size}" + (" (EOF)" if not size else "")


def traced(
    op: Callable[[], R],
    call: Callable[[], str],
    outcome: Callable[[R], str] = nothing,
    payload: Callable[[R], bytes | memoryview | bytearray] | None = None,
) -> R:
    """Make one system call, ``op()``, and narrate it in strace's words: ``call()`` names it,
    ``outcome(result)`` says what came back.  A failure is narrated as ``call = -1 ECODE (why)``
    and raised unchanged.  Nothing is formatted while tracing is off; the calls made per transfer
    (send, recv, splice…) do not even come here then.  A recorder also gets when the call started
    and ``payload(result)``, the bytes it moved (see :func:`enchufe.trace.record_to`)."""
    if not trace.enabled():
        return op()
    started = time.monotonic()
    try:
        result = op()
    except OSError as exc:
        _fail(call(), exc, started)
        raise
    data = payload(result) if payload is not None and trace.recording() else None
    trace.emit(call() + outcome(result), started=started, data=data)
    return result


# ---------------------------------------------------------------------------- system calls


def new_socket(family: int, sock_type: int, *, nonblocking: bool = False) -> socket.socket:
    """A new socket; ``nonblocking``: made so by ``socket()`` itself (``SOCK_NONBLOCK``), which
    spares the ``ioctl`` that ``setblocking(False)`` costs."""
    flags = socket.SOCK_NONBLOCK if nonblocking else 0
    if trace._sink is None:  # trace.enabled(), inline: the relay makes one per connection
        return socket.socket(family, sock_type | flags)
    return traced(
        lambda: socket.socket(family, sock_type | flags),
        lambda: f"socket({_FAMILY_NAMES.get(family, family)}, {_TYPE_NAMES.get(sock_type, sock_type)})",
        lambda sock: f" = fd {sock.fileno()}",
    )


def setsockopt(sock: socket.socket, level: int, option: int, value: int, name: str) -> None:
    sock.setsockopt(level, option, value)
    if trace._sink is not None:  # trace.enabled(), inline
        trace.emit(f"setsockopt(fd {sock.fileno()}, {name}, {value})")


def bind(sock: socket.socket, sockaddr: SockAddr) -> None:
    def call() -> str:
        return f"bind(fd {sock.fileno()}, {describe_sockaddr(sock.family, sockaddr)})"

    def outcome(_result: None) -> str:
        bound = describe_sockaddr(sock.family, sock.getsockname())
        return f" → bound to {bound}" if bound not in call() else ""

    traced(lambda: sock.bind(sockaddr), call, outcome)


def listen(sock: socket.socket, backlog: int) -> None:
    sock.listen(backlog)
    if trace.enabled():
        trace.emit(f"listen(fd {sock.fileno()}, backlog={backlog})")


#: What accept() may fail with because of that one client, not the listener: the client left
#: while queued (ECONNABORTED), a firewall refused it (EPERM), or, as accept(2) says, "already
#: pending network errors" of the new connection that "should be treated like EAGAIN".  A server
#: goes on with the next client after any of these.
ACCEPT_CLIENT_ERRORS = frozenset(
    {
        errno.ECONNABORTED,
        errno.EPERM,
        errno.EPROTO,
        errno.ENETDOWN,
        errno.ENOPROTOOPT,
        errno.EHOSTDOWN,
        errno.ENONET,
        errno.EHOSTUNREACH,
        errno.EOPNOTSUPP,
        errno.ENETUNREACH,
    }
)


def accept(sock: socket.socket) -> tuple[socket.socket, object]:
    return traced(
        sock.accept,
        lambda: f"accept(fd {sock.fileno()})",
        lambda accepted: (
            f" = fd {accepted[0].fileno()} from {describe_sockaddr(accepted[0].family, accepted[1])}"
        ),
    )


def connect_call(sock: socket.socket, sockaddr: SockAddr) -> Callable[[], str]:
    return lambda: f"connect(fd {sock.fileno()}, {describe_sockaddr(sock.family, sockaddr)})"


def connect(sock: socket.socket, sockaddr: SockAddr) -> None:
    traced(lambda: sock.connect(sockaddr), connect_call(sock, sockaddr), zero)


def finish_connect(sock: socket.socket) -> None:
    """After a non-blocking connect became writable: raise its outcome (SO_ERROR) if it failed."""
    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    call = f"getsockopt(fd {sock.fileno()}, SO_ERROR)"
    if code:
        exc = OSError(code, os.strerror(code))
        _fail(call, exc)
        raise exc
    if trace.enabled():
        trace.emit(f"{call} = 0 (connected)")


def send(sock: socket.socket, data: memoryview | bytes) -> int:
    if not trace.enabled():
        return sock.send(data)
    return traced(
        lambda: sock.send(data),
        lambda: f"send(fd {sock.fileno()}, {len(data)} bytes)",
        equals,
        lambda sent: data[:sent],
    )


def send_nowait(sock: socket.socket, data: memoryview | bytes) -> int:
    """What the kernel takes of ``data`` now, never waiting (``BlockingIOError`` if nothing),
    whatever the socket's timeout.  A socket with a timeout waits in ``poll`` before its send,
    even with MSG_DONTWAIT; its descriptor is non-blocking, so a plain ``write`` does not."""
    if sock.gettimeout() is None:
        op: Callable[[], int] = lambda: sock.send(data, socket.MSG_DONTWAIT)  # noqa: E731
    else:
        op = lambda: os.write(sock.fileno(), data)  # noqa: E731
    if not trace.enabled():
        return op()
    return traced(
        op,
        lambda: f"send(fd {sock.fileno()}, {len(data)} bytes, MSG_DONTWAIT)",
        equals,
        lambda sent: data[:sent],
    )


def recv(sock: socket.socket, size: int) -> bytes:
    if not trace.enabled():
        return sock.recv(size)
    return traced(
        lambda: sock.recv(size),
        lambda: f"recv(fd {sock.fileno()}, {size})",
        lambda data: byte_count(len(data)),
        lambda data: data,
    )


def send_datagram(
    sock: socket.socket, data: memoryview | bytes | bytearray, sockaddr: SockAddr | None, flags: int = 0
) -> int:
    """Send one datagram to ``sockaddr`` (None: the connected peer); returns the bytes sent.
    BlockingIOError when it cannot go now (non-blocking sockets, or ``MSG_DONTWAIT``)."""
    if not trace.enabled():
        return sock.send(data, flags) if sockaddr is None else sock.sendto(data, flags, sockaddr)

    def call() -> str:
        where = describe_sockaddr(sock.family, sockaddr) if sockaddr is not None else "connected peer"
        shown = ", MSG_DONTWAIT" if flags & socket.MSG_DONTWAIT else ""
        return f"sendto(fd {sock.fileno()}, {len(data)} bytes, {where}{shown})"

    return traced(
        lambda: sock.send(data, flags) if sockaddr is None else sock.sendto(data, flags, sockaddr),
        call,
        equals,
        lambda sent: data[:sent],
    )


def recv_datagram_into(sock: socket.socket, buffer: memoryview | bytearray) -> tuple[int, Any]:
    """Receive one datagram into ``buffer``: (its real size, the sender's sockaddr).

    A size larger than ``len(buffer)`` means the datagram was truncated (MSG_TRUNC as a flag
    makes Linux report the real size); only ``len(buffer)`` bytes of it are in the buffer.
    BlockingIOError when none is there (non-blocking sockets).
    """
    if not trace.enabled():
        return sock.recvfrom_into(buffer, 0, socket.MSG_TRUNC)

    def outcome(received: tuple[int, Any]) -> str:
        size, sender = received
        who = describe_sockaddr(sock.family, sender) if sender else "(unnamed)"
        cut = f" (MSG_TRUNC: only {len(buffer)} kept)" if size > len(buffer) else ""
        return f" = {size} bytes from {who}{cut}"

    return traced(
        lambda: sock.recvfrom_into(buffer, 0, socket.MSG_TRUNC),
        lambda: f"recvfrom(fd {sock.fileno()})",
        outcome,
        lambda received: buffer[: min(received[0], len(buffer))],
    )


def shutdown(sock: socket.socket, how: int) -> None:
    name = {socket.SHUT_WR: "SHUT_WR", socket.SHUT_RD: "SHUT_RD", socket.SHUT_RDWR: "SHUT_RDWR"}[how]
    traced(lambda: sock.shutdown(how), lambda: f"shutdown(fd {sock.fileno()}, {name})")


def close(sock: socket.socket) -> None:
    fd = sock.fileno()
    if fd < 0:
        return
    sock.close()
    if trace.enabled():
        trace.emit(f"close(fd {fd})")


def unlink(path: str, why: str) -> None:
    os.unlink(path)
    if trace.enabled():
        trace.emit(f"unlink({path})  # {why}")


def peer_credentials(sock: socket.socket) -> Credentials:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    if trace.enabled():
        trace.emit(f"getsockopt(fd {sock.fileno()}, SO_PEERCRED) = pid {pid}, uid {uid}, gid {gid}")
    return Credentials(pid, uid, gid)

"""Making sockets for addresses: every system call goes through here, and is narrated here.

The functions in this module make one system call each (or one small, named sequence of them),
report it to :mod:`enchufe.trace` from the very code path that makes it, and let ``OSError``
through unchanged: the endpoint layers (``sync``, later ``aio``) translate errors into
:mod:`enchufe.errors` at their one boundary, where they know what the user was trying to do.

The three openers at the bottom (:func:`open_listener`, :func:`open_connection`,
:func:`open_datagram`) are the one place that switches on the kind of address.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from . import _ranges, trace
from ._connect import ConnectPlan
from ._text import printable
from .address import InetAddress, SocketAddress, UnixAddress
from .errors import (
    AddressError,
    AddressInUse,
    ConnectionRefused,
    NameResolutionError,
    NetworkError,
    NotASocket,
    PermissionDenied,
    translate,
)

#: The kernel clamps this to net.core.somaxconn (4096 on current kernels).  A short backlog
#: turns a burst of connects into SYN retransmissions of a second or more; queued connections
#: cost the kernel little, so ask for the most it allows.
DEFAULT_BACKLOG = 4096

_FAMILY_NAMES: dict[int, str] = {
    socket.AF_INET: "AF_INET",
    socket.AF_INET6: "AF_INET6",
    socket.AF_UNIX: "AF_UNIX",
}
_TYPE_NAMES: dict[int, str] = {socket.SOCK_STREAM: "SOCK_STREAM", socket.SOCK_DGRAM: "SOCK_DGRAM"}
_UCRED = struct.Struct("3i")
_log = logging.getLogger("enchufe")

R = TypeVar("R")

#: What Python's socket module takes as an address: (host, port[, flow, scope]), a path, or bytes.
SockAddr = tuple[Any, ...] | str | bytes


@dataclass(frozen=True)
class Credentials:
    """Who is at the other end of a unix socket, as the kernel saw it at connect time."""

    pid: int
    uid: int
    gid: int


@dataclass(frozen=True)
class Target:
    """One concrete socket address to bind or connect to, after resolution."""

    family: socket.AddressFamily
    sockaddr: SockAddr
    #: listen on IPv6 and IPv4 at once (IPV6_V6ONLY=0); only for wildcard listeners asked so.
    dual_stack: bool = False


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


def _fail(call: str, exc: OSError) -> None:
    if trace.enabled():
        code = errno.errorcode.get(exc.errno or 0, "") if exc.errno else "timeout"
        trace.emit(f"{call} = -1 {code} ({exc.strerror or exc})")


def _nothing(_result: object) -> str:
    return ""


def _equals(result: object) -> str:
    return f" = {result}"


def _zero(_result: object) -> str:
    return " = 0"


def _count(size: int) -> str:
    """What a read returned: the byte count, and EOF when it is 0."""
    return f" = {size}" + (" (EOF)" if not size else "")


def traced(op: Callable[[], R], call: Callable[[], str], outcome: Callable[[R], str] = _nothing) -> R:
    """Make one system call, ``op()``, and narrate it in strace's words: ``call()`` names it,
    ``outcome(result)`` says what came back.  A failure is narrated as ``call = -1 ECODE (why)``
    and raised unchanged.  Nothing is formatted while tracing is off; the calls made per transfer
    (send, recv, splice…) do not even come here then."""
    if not trace.enabled():
        return op()
    try:
        result = op()
    except OSError as exc:
        _fail(call(), exc)
        raise
    trace.emit(call() + outcome(result))
    return result


# ---------------------------------------------------------------------------- system calls


def new_socket(family: int, sock_type: int) -> socket.socket:
    return traced(
        lambda: socket.socket(family, sock_type),
        lambda: f"socket({_FAMILY_NAMES.get(family, family)}, {_TYPE_NAMES.get(sock_type, sock_type)})",
        lambda sock: f" = fd {sock.fileno()}",
    )


def setsockopt(sock: socket.socket, level: int, option: int, value: int, name: str) -> None:
    sock.setsockopt(level, option, value)
    if trace.enabled():
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


def _connect_call(sock: socket.socket, sockaddr: SockAddr) -> Callable[[], str]:
    return lambda: f"connect(fd {sock.fileno()}, {describe_sockaddr(sock.family, sockaddr)})"


def connect(sock: socket.socket, sockaddr: SockAddr) -> None:
    traced(lambda: sock.connect(sockaddr), _connect_call(sock, sockaddr), _zero)


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
    return traced(lambda: sock.send(data), lambda: f"send(fd {sock.fileno()}, {len(data)} bytes)", _equals)


def recv(sock: socket.socket, size: int) -> bytes:
    if not trace.enabled():
        return sock.recv(size)
    return traced(
        lambda: sock.recv(size), lambda: f"recv(fd {sock.fileno()}, {size})", lambda data: _count(len(data))
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
        _equals,
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


# ---------------------------------------------------------------------------- relay system calls
# Non-blocking calls for event loops (the relay): each reports EAGAIN/EINPROGRESS to the trace
# like any other outcome and lets the caller decide what it means.

#: splice() flags of the relay: move pages rather than copy them where the kernel can, and never
#: block on the pipe (the sockets are non-blocking themselves).
SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_SPLICE_FLAG_NAMES = "SPLICE_F_MOVE|SPLICE_F_NONBLOCK"
_LINGER_ZERO = struct.pack("ii", 1, 0)


def connect_nonblocking(sock: socket.socket, sockaddr: SockAddr) -> int:
    """Start connecting a non-blocking socket: 0 (connected), EINPROGRESS (wait until writable)
    or EAGAIN (a unix listener's backlog is full: nothing started, try again later).  Any other
    failure is raised."""
    try:
        traced(lambda: sock.connect(sockaddr), _connect_call(sock, sockaddr), _zero)
    except BlockingIOError as exc:
        return exc.errno if exc.errno is not None else errno.EAGAIN
    return 0


def connect_again(sock: socket.socket, sockaddr: SockAddr) -> int:
    """Ask a connect in progress how it went, without waiting: 0 or EISCONN (connected),
    EALREADY/EINPROGRESS (not yet), or the error that ended it."""
    code = sock.connect_ex(sockaddr)
    if trace.enabled():
        where = describe_sockaddr(sock.family, sockaddr)
        if code in (0, errno.EISCONN):
            trace.emit(
                f"connect(fd {sock.fileno()}, {where}) = {'0' if not code else '-1 EISCONN'} (connected)"
            )
        else:
            name = errno.errorcode.get(code, str(code))
            trace.emit(f"connect(fd {sock.fileno()}, {where}) = -1 {name} ({os.strerror(code)})")
    return code


def socket_error(sock: socket.socket) -> int:
    """The pending error of a socket (SO_ERROR), which reading it clears; 0 if none."""
    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if trace.enabled():
        shown = f"{errno.errorcode.get(code, code)} ({os.strerror(code)})" if code else "0"
        trace.emit(f"getsockopt(fd {sock.fileno()}, SO_ERROR) = {shown}")
    return int(code)


def abort(sock: socket.socket) -> None:
    """Close so that the peer sees a reset, not an orderly EOF: SO_LINGER {on, 0 s}, then close.

    On TCP this sends RST at once and drops unsent data; on unix sockets linger means nothing and
    the peer reads EOF (or ECONNRESET if it had unread data for us).
    """
    fd = sock.fileno()
    if fd < 0:
        return
    if sock.family != socket.AF_UNIX:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
            if trace.enabled():
                trace.emit(f"setsockopt(fd {fd}, SO_LINGER, {{on, 0 s}})")
    sock.close()
    if trace.enabled():
        trace.emit(f"close(fd {fd})" + ("  # with linger 0: RST" if sock.family != socket.AF_UNIX else ""))


def make_pipe(size: int) -> tuple[int, int, int]:
    """A non-blocking pipe for splice: (read fd, write fd, capacity in bytes).

    The capacity is raised to ``size`` where the kernel allows (fs.pipe-max-size, and for
    unprivileged users fs.pipe-user-pages-soft); otherwise the pipe keeps its default size.
    """
    rfd, wfd = traced(
        lambda: os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC),
        lambda: "pipe2(O_NONBLOCK|O_CLOEXEC)",
        lambda fds: f" = [fd {fds[0]} (read), fd {fds[1]} (write)]",
    )
    import fcntl

    try:
        capacity = traced(
            lambda: fcntl.fcntl(wfd, fcntl.F_SETPIPE_SZ, size),
            lambda: f"fcntl(fd {wfd}, F_SETPIPE_SZ, {size})",
            _equals,
        )
    except OSError:
        capacity = fcntl.fcntl(wfd, fcntl.F_GETPIPE_SZ)
    return rfd, wfd, capacity


def close_fd(fd: int) -> None:
    """Close a bare file descriptor (a pipe end)."""
    os.close(fd)
    if trace.enabled():
        trace.emit(f"close(fd {fd})")


def splice(src: int, dst: int, count: int) -> int:
    """Move up to ``count`` bytes from ``src`` to ``dst`` inside the kernel; one end is a pipe.

    Returns the bytes moved, 0 at end of file; raises BlockingIOError (EAGAIN) when nothing can
    move now.  The bytes never enter this process.
    """
    if not trace.enabled():
        return os.splice(src, dst, count, flags=SPLICE_FLAGS)
    return traced(
        lambda: os.splice(src, dst, count, flags=SPLICE_FLAGS),
        lambda: f"splice(fd {src}, fd {dst}, {count}, {_SPLICE_FLAG_NAMES})",
        _count,
    )


def recv_into(sock: socket.socket, buffer: memoryview) -> int:
    """Receive into ``buffer``: the byte count, 0 at EOF; BlockingIOError when nothing is there."""
    if not trace.enabled():
        return sock.recv_into(buffer)
    return traced(lambda: sock.recv_into(buffer), lambda: f"recv(fd {sock.fileno()}, {len(buffer)})", _count)


def read_into(fd: int, buffer: memoryview) -> int:
    """``readv`` into ``buffer`` from any descriptor (socket, pipe, terminal, file): the byte
    count, 0 at EOF; BlockingIOError when nothing is there."""
    if not trace.enabled():
        return os.readv(fd, [buffer])
    return traced(lambda: os.readv(fd, [buffer]), lambda: f"read(fd {fd}, {len(buffer)})", _count)


def write(fd: int, data: memoryview | bytes) -> int:
    """``write`` to any descriptor: the bytes taken; BlockingIOError when none can be."""
    if not trace.enabled():
        return os.write(fd, data)
    return traced(lambda: os.write(fd, data), lambda: f"write(fd {fd}, {len(data)} bytes)", _equals)


# ---------------------------------------------------------------------------- resolution


def resolve(address: InetAddress, *, passive: bool) -> list[Target]:
    """The concrete socket addresses for ``address``, in the order to try them.

    A wildcard host is only for listening: ``tcp://:P`` is one dual-stack IPv6 socket where the
    host has IPv6, else 0.0.0.0; ``tcp6://:P`` and ``tcp://[::]:P`` are IPv6 only.
    """
    sock_type = socket.SOCK_STREAM if address.is_stream else socket.SOCK_DGRAM
    if address.host == "":
        if not passive:
            raise AddressError(
                f"{str(address)!r}: a client needs a host to reach, e.g. {address.scheme}://"
                f"{'[::1]' if address.forced_family == 6 else '127.0.0.1'}:{address.port or 9000}"
            )
        if address.forced_family == 4 or (address.forced_family is None and not _has_ipv6()):
            return [Target(socket.AF_INET, ("0.0.0.0", address.port))]
        return [
            Target(
                socket.AF_INET6,
                ("::", address.port, 0, 0),
                dual_stack=address.forced_family is None,
            )
        ]
    if not passive and address.port == 0:
        raise AddressError(
            f"{str(address)!r}: port 0 only makes sense when listening; name the server's port"
        )
    family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(address.family or 0, socket.AF_UNSPEC)
    literal = address.family is not None and address.forced_family in (None, address.family)
    flags = socket.AI_NUMERICHOST if literal else 0
    if passive:
        flags |= socket.AI_PASSIVE
    try:
        infos = socket.getaddrinfo(address.host, address.port, family, sock_type, 0, flags)
    except socket.gaierror as exc:
        raise NameResolutionError(
            f"cannot resolve {address.host!r} in {address}: {exc.strerror}; "
            "check the name, or use an IP address",
            errno=exc.errno,
        ) from exc
    targets: list[Target] = []
    for fam, _type, _proto, _canon, sockaddr in infos:
        if fam not in (socket.AF_INET, socket.AF_INET6):
            continue
        target = Target(socket.AddressFamily(fam), sockaddr)
        if target not in targets:
            targets.append(target)
    if not literal and trace.enabled():
        shown = ", ".join(describe_sockaddr(t.family, t.sockaddr) for t in targets)
        trace.emit(f"getaddrinfo({address.host}, {address.port}) = {shown}")
    if not targets:
        raise NameResolutionError(f"cannot resolve {address.host!r} in {address}: no IPv4 or IPv6 address")
    return targets


_ipv6: bool | None = None


def _has_ipv6() -> bool:
    """Whether this host can bind an IPv6 socket (the kernel may lack IPv6 even if Python has it)."""
    global _ipv6
    if _ipv6 is None:
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
                probe.bind(("::1", 0))
            _ipv6 = True
        except OSError:
            _ipv6 = False
    return _ipv6


# ---------------------------------------------------------------------------- unix socket files


@dataclass
class SocketFile:
    """A unix socket file this process created, removed on release only if it is still ours."""

    path: str
    device: int
    inode: int

    def release(self) -> None:
        try:
            st = os.lstat(self.path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) == (self.device, self.inode):
            with contextlib.suppress(OSError):
                unlink(self.path, "our socket file, removed on close")


def clear_stale_socket_file(address: UnixAddress, sock_type: int) -> None:
    """Make way for binding ``address``: remove a stale socket file, refuse anything else.

    A socket file nobody accepts on is stale (a server that died without cleaning up) and is
    removed.  A live one means another server owns the address: :class:`AddressInUse`.  A file
    that is not a socket is never touched: :class:`NotASocket`.
    """
    path = address.path
    if path is None:
        return
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise NotASocket(
            f"cannot listen on {address}: {path} exists and is not a socket; "
            f"enchufe never removes it: pick another path or remove it yourself",
            errno=errno.EEXIST,
        )
    if _socket_file_alive(path):
        raise AddressInUse(
            f"cannot listen on {address}: address in use: a live server is bound there; "
            f"stop it or pick another path",
            errno=errno.EADDRINUSE,
        )
    with contextlib.suppress(FileNotFoundError):
        unlink(path, "stale socket file: nobody accepts on it")


def _socket_file_alive(path: str) -> bool:
    """Whether a socket is bound at ``path``, asked without disturbing it.

    A datagram socket's connect() only looks the path up: it answers ECONNREFUSED when nobody
    is bound there any more (stale), succeeds for a bound datagram socket, and says EPROTOTYPE
    for a live socket of another type.  A stream probe would instead queue a real connection,
    which a one-shot server would take as its client.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True  # EPROTOTYPE: alive, of another type; anything else: never remove it
    return True


def explain_unix_failure(address: object, exc: OSError, what: str) -> NetworkError | None:
    """A plainer error than the errno's when connecting or sending to a unix path failed.

    Linux answers ECONNREFUSED for a path that is not a socket at all (a regular file, a
    directory), which would send the user looking for a server that is not there; ENOENT means
    no socket file (yet); EACCES is about the file's or its folder's permissions, not a port.
    A datagram sent to a unix peer (a server's reply) fails the same ways when that peer closed
    its socket or removed its file: said so, not "start the server" nor "the port answered".
    ``None`` when the errno's own translation says it well.
    """
    if not isinstance(address, UnixAddress):
        return None
    action = what.split(" ", 1)[0]
    sending = action != "connect"
    if address.path is None:  # an abstract name: no file to look at
        if sending and exc.errno == errno.ECONNREFUSED:
            name = printable(str(address))
            return ConnectionRefused(
                f"cannot {what}: nothing receives on {name} any more (its socket is closed)",
                errno=errno.ECONNREFUSED,
                action=action,
            )
        return None
    path = printable(address.path)
    if exc.errno == errno.ECONNREFUSED:
        try:
            st = os.stat(address.path)
        except OSError:
            return None
        if stat.S_ISSOCK(st.st_mode):
            if sending:
                return ConnectionRefused(
                    f"cannot {what}: nothing receives on {path} any more (its socket is closed)",
                    errno=errno.ECONNREFUSED,
                    action=action,
                )
            return None  # a socket nobody accepts on: "connection refused" says it
        found = (
            "a directory"
            if stat.S_ISDIR(st.st_mode)
            else "a regular file"
            if stat.S_ISREG(st.st_mode)
            else "a file"
        )
        return NotASocket(
            f"cannot {what}: {path} is {found}, not a socket; give the path of a server's socket file",
            errno=errno.ENOTSOCK,
            action=action,
        )
    if exc.errno == errno.ENOENT:
        hint = "start the server first" + (", or the peer has gone" if sending else "")
        return ConnectionRefused(
            f"cannot {what}: no such socket file {path} ({hint})",
            errno=errno.ENOENT,
            action=action,
        )
    if exc.errno == errno.EACCES:
        return PermissionDenied(
            f"cannot {what}: permission denied: this user may not write to {path} "
            "or enter its folder; check their permissions",
            errno=errno.EACCES,
            action=action,
        )
    return None


def bind_unix(sock: socket.socket, address: UnixAddress, mode: int | None) -> SocketFile | None:
    """Bind a unix socket, clearing a stale file first; the socket file is born with ``mode``.

    The mode is given to the socket itself before bind (``fchmod`` on the descriptor: Linux
    creates the file with the socket's mode, less the umask), so the file never exists with a
    wider mode than asked, and no path is ever chmodded after bind, which would follow a symlink
    planted there.  Bits the umask removed are added back through a descriptor of the new file
    itself (opened with O_PATH|O_NOFOLLOW and checked to be a socket of ours).  If anything
    fails after bind, the new socket file is removed.
    """
    clear_stale_socket_file(address, sock.type)
    path = address.path
    if mode is not None and path is not None:
        os.fchmod(sock.fileno(), mode)
        if trace.enabled():
            trace.emit(f"fchmod(fd {sock.fileno()}, {mode:#o})  # the socket file is created with it")
    bind(sock, address.sockaddr)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        _remove_new_socket_file(path)
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
            # Replaced between bind and open by whoever can write to the folder: not ours.
            raise OSError(errno.ENOTSOCK, f"{path} was replaced by something else right after bind")
        owned = SocketFile(path, st.st_dev, st.st_ino)
        if mode is not None and stat.S_IMODE(st.st_mode) != mode:
            _widen_mode(fd, path, mode)
    except OSError:
        os.close(fd)
        _remove_new_socket_file(path)
        raise
    os.close(fd)
    return owned


def _widen_mode(fd: int, path: str, mode: int) -> None:
    """Give the socket file open as ``fd`` (O_PATH) exactly ``mode``, which the umask narrowed.

    fchmod() refuses O_PATH descriptors; /proc/self/fd/N names the very file they hold, never
    a symlink's target.  Without /proc the file keeps the narrower mode: safe, and said.
    """
    try:
        os.chmod(f"/proc/self/fd/{fd}", mode)
    except FileNotFoundError:
        _log.warning("%s keeps the mode the umask left (/proc is not mounted to set %#o)", path, mode)
        return
    if trace.enabled():
        trace.emit(f"chmod(/proc/self/fd/{fd}, {mode:#o})  # {path}, through its descriptor")


def _remove_new_socket_file(path: str) -> None:
    """After a failure right after bind: remove the socket file just made, if it is ours."""
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if stat.S_ISSOCK(st.st_mode) and st.st_uid == os.geteuid():
            unlink(path, "bind succeeded but what followed failed")


def autobind_unix(sock: socket.socket) -> SocketFile | None:
    """Give an unbound unix datagram socket a reply address, so that servers can answer it.

    Linux assigns a unique abstract name when binding to the empty address ("autobind"); where
    that is not available, a fresh path in a private temporary folder is used and removed on close.
    """
    try:
        bind(sock, "")
        return None
    except OSError:
        folder = tempfile.mkdtemp(prefix="enchufe-")
        path = os.path.join(folder, "reply.sock")
        bind(sock, path)
        st = os.stat(path)
        return _TempSocketFile(path, st.st_dev, st.st_ino)


class _TempSocketFile(SocketFile):
    def release(self) -> None:
        super().release()
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(self.path))


# ---------------------------------------------------------------------------- openers


def _sock_type(address: SocketAddress) -> int:
    return socket.SOCK_STREAM if address.is_stream else socket.SOCK_DGRAM


def _configure_inet(sock: socket.socket, target: Target, *, reuse_port: bool, listening: bool) -> None:
    if listening and sock.type == socket.SOCK_STREAM:
        # Restarting a server must not wait out TIME_WAIT of its previous connections.
        setsockopt(sock, socket.SOL_SOCKET, socket.SO_REUSEADDR, 1, "SO_REUSEADDR")
    if reuse_port:
        setsockopt(sock, socket.SOL_SOCKET, socket.SO_REUSEPORT, 1, "SO_REUSEPORT")
    if target.family == socket.AF_INET6:
        # The system default (net.ipv6.bindv6only) varies; say what we mean.
        only = 0 if target.dual_stack else 1
        setsockopt(sock, socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, only, "IPV6_V6ONLY")


def _bound_address(sock: socket.socket) -> SocketAddress:
    from .address import from_sockaddr

    found = from_sockaddr(sock.family, sock.type, sock.getsockname())
    assert found is not None
    return found


def _real_address(sock: socket.socket, requested: SocketAddress) -> SocketAddress:
    """The bound address with its real port, keeping the user's spelling for unix paths
    (relative stays relative) and for the wildcard host."""
    if isinstance(requested, UnixAddress):
        return requested
    bound = _bound_address(sock)
    assert isinstance(bound, InetAddress)
    # A wildcard stays a wildcard: the "::" that "tcp://:P" binds would read back as
    # "tcp://[::]:P", which means IPv6 only, while the socket is dual-stack.
    # A literal host implies its family, so the scheme needs no digit: the listener's address
    # then equals the address its peers see it by (recvfrom, getpeername).
    if requested.is_wildcard:
        return InetAddress(requested.transport, "", bound.port, requested.forced_family)
    return InetAddress(requested.transport, bound.host, bound.port)


def _close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        close(sock)


def open_listener(
    address: SocketAddress, *, backlog: int, mode: int | None, reuse_port: bool
) -> tuple[socket.socket, SocketAddress, SocketFile | None]:
    """A listening stream socket bound to ``address``: (socket, real address, owned file)."""
    return _open_bound(address, socket.SOCK_STREAM, backlog, mode=mode, reuse_port=reuse_port)


def open_datagram(
    address: SocketAddress, *, mode: int | None, reuse_port: bool
) -> tuple[socket.socket, SocketAddress, SocketFile | None]:
    """A datagram socket bound to ``address``: (socket, real address, owned file)."""
    return _open_bound(address, socket.SOCK_DGRAM, None, mode=mode, reuse_port=reuse_port)


def _open_bound(
    address: SocketAddress, sock_type: int, backlog: int | None, *, mode: int | None, reuse_port: bool
) -> tuple[socket.socket, SocketAddress, SocketFile | None]:
    """Create, configure and bind a socket for ``address``, and listen when ``backlog`` is given."""
    what = f"listen on {address}" if backlog is not None else f"bind {address}"
    if backlog is not None:
        _ranges.integer(backlog, "backlog", 0, _ranges.MAX_BACKLOG)
    if mode is not None:
        _ranges.integer(mode, "mode", 0, 0o777)
    if isinstance(address, UnixAddress):
        family: int = socket.AF_UNIX
        target = None
    else:
        target = resolve(address, passive=True)[0]
        family = target.family
    sock = _new(family, sock_type, what)
    owned: SocketFile | None = None
    try:
        if target is None:
            assert isinstance(address, UnixAddress)
            owned = bind_unix(sock, address, mode)
        else:
            _configure_inet(sock, target, reuse_port=reuse_port, listening=True)
            bind(sock, target.sockaddr)
        if backlog is not None:
            listen(sock, backlog)
    except OSError as exc:
        _close_quietly(sock)
        if owned is not None:
            owned.release()
        raise translate(exc, what) from exc
    except NetworkError:
        _close_quietly(sock)
        raise
    return sock, _real_address(sock, address), owned


def _new(family: int, sock_type: int, what: str) -> socket.socket:
    try:
        return new_socket(family, sock_type)
    except OSError as exc:
        raise translate(exc, what) from exc


def open_connection(
    address: SocketAddress,
    *,
    timeout: float | None,
    retries: int,
    retry_delay: float,
    datagram_reply: bool = True,
) -> tuple[socket.socket, SocketFile | None]:
    """A socket connected to ``address`` (stream, or a connected datagram socket).

    Every target of every attempt gets a new socket: after a failed ``connect()`` a socket's
    state is unspecified, so it is never reused.  Refused, missing and timed-out attempts are
    retried ``retries`` more times, ``retry_delay`` seconds apart; the error raised is the last
    one, carrying every attempt's error in ``attempts``.
    """
    if isinstance(retries, int) and retries < 0:  # bad input, like every argument error before a socket
        raise AddressError(f"retries must be 0 or more, not {retries}")
    plan = ConnectPlan(address, retries=retries, retry_delay=retry_delay)
    timeout = _ranges.seconds(timeout, "timeout", optional=True, positive=True)
    sock_type = _sock_type(address)
    what = f"connect to {address}"
    for delay in plan:
        if delay:
            time.sleep(delay)
        targets: list[Target] = (
            [Target(socket.AF_UNIX, address.sockaddr)]
            if isinstance(address, UnixAddress)
            else resolve(address, passive=False)
        )
        for target in targets:
            sock = _new(target.family, sock_type, what)
            owned: SocketFile | None = None
            try:
                if sock_type == socket.SOCK_DGRAM and target.family == socket.AF_UNIX and datagram_reply:
                    owned = autobind_unix(sock)
                sock.settimeout(timeout)
                connect(sock, target.sockaddr)
                sock.settimeout(None)
                return sock, owned
            except OSError as exc:
                _close_quietly(sock)
                if owned is not None:
                    owned.release()
                plan.failed(exc, explain_unix_failure(address, exc, what))
    raise plan.error()

"""Non-blocking system calls for event loops (the relay, and asyncio's connect).

Each reports EAGAIN/EINPROGRESS to the trace like any other outcome and lets the caller decide
what it means; like :mod:`enchufe._calls`, each is one system call narrated through
:func:`~enchufe._calls.traced`, and the ones made per transfer (splice, recv, read, write) skip
even that while tracing is off.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct

from . import trace
from ._calls import SockAddr, byte_count, connect_call, describe_sockaddr, equals, traced, zero

#: splice() flags of the relay: move pages rather than copy them where the kernel can, and never
#: block on the pipe (the sockets are non-blocking themselves).
SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_SPLICE_FLAG_NAMES = "SPLICE_F_MOVE|SPLICE_F_NONBLOCK"
_LINGER_ZERO = struct.pack("ii", 1, 0)


def connect_nonblocking(sock: socket.socket, sockaddr: SockAddr) -> int:
    """Start connecting a non-blocking socket: 0 (connected), EINPROGRESS (wait until writable)
    or EAGAIN (a unix listener's backlog is full: nothing started, try again later).  Any other
    failure is raised."""
    if trace._sink is None:  # trace.enabled(), inline: the relay connects once per client
        # connect_ex: the errno without an exception made (and its message formatted)
        status = sock.connect_ex(sockaddr)
        if status not in (0, errno.EINPROGRESS, errno.EAGAIN):
            raise OSError(status, os.strerror(status))
        return status
    try:
        traced(lambda: sock.connect(sockaddr), connect_call(sock, sockaddr), zero)
    except BlockingIOError as exc:
        return exc.errno if exc.errno is not None else errno.EAGAIN
    return 0


def connect_again(sock: socket.socket, sockaddr: SockAddr) -> int:
    """Ask a connect in progress how it went, without waiting: 0 or EISCONN (connected),
    EALREADY/EINPROGRESS (not yet), or the error that ended it."""
    code = sock.connect_ex(sockaddr)
    if trace._sink is not None:  # trace.enabled(), inline
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
            equals,
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
        byte_count,
    )


def recv_into(sock: socket.socket, buffer: memoryview) -> int:
    """Receive into ``buffer``: the byte count, 0 at EOF; BlockingIOError when nothing is there."""
    if not trace.enabled():
        return sock.recv_into(buffer)
    return traced(
        lambda: sock.recv_into(buffer), lambda: f"recv(fd {sock.fileno()}, {len(buffer)})", byte_count
    )


def read_into(fd: int, buffer: memoryview) -> int:
    """``readv`` into ``buffer`` from any descriptor (socket, pipe, terminal, file): the byte
    count, 0 at EOF; BlockingIOError when nothing is there."""
    if not trace.enabled():
        return os.readv(fd, [buffer])
    return traced(lambda: os.readv(fd, [buffer]), lambda: f"read(fd {fd}, {len(buffer)})", byte_count)


def write(fd: int, data: memoryview | bytes) -> int:
    """``write`` to any descriptor: the bytes taken; BlockingIOError when none can be."""
    if not trace.enabled():
        return os.write(fd, data)
    return traced(lambda: os.write(fd, data), lambda: f"write(fd {fd}, {len(data)} bytes)", equals)


def write_out(fd: int, out: bytearray) -> None:
    """Write what ``fd`` takes now of ``out``, removing it from ``out``; stops, leaving the rest,
    when the descriptor would block.  Other errors raise :class:`OSError`."""
    while out:
        try:
            sent = write(fd, memoryview(out))
        except BlockingIOError:
            return
        del out[:sent]

"""The ends of a relayed stream, and how interest in their readiness is asked of the loop.

::

    Side(sock)                                  # a socket: one descriptor both ways
    Side(rfd=child.stdout_r, wfd=child.stdin_w) # an exec: child's pipes
    stdio_side()                                # this process's stdin and stdout (``-``)
    side.handle(on_events, on_read, on_write, on_error)   # the session's handlers, once
    side.want(loop, READ | WRITE, write_shut)   # the new interest, when it changed

Interest follows the pumps after every step: read a side only while its pump has room
(backpressure), write it only while bytes wait for it.  A socket we want nothing from stays
registered with an empty mask so that its reset is still seen, except once our write side of it
is shut (then an empty mask would report EPOLLHUP forever; it is unregistered until needed).
Pipes and terminals are registered only while something is wanted from them, for the same
reason (a pipe whose other end closed reports EPOLLHUP or EPOLLERR whatever the mask).
"""

from __future__ import annotations

import _socket
import contextlib
import fcntl
import os
import select
import socket
import stat
from collections.abc import Callable

from .. import _calls, _nonblocking, trace
from .._calls import close
from .._nonblocking import abort
from .engine import READ, WRITE, Loop, OnError

__all__ = ["UNREGISTERED", "Handler", "Side", "readable", "stdio_side", "want_fd"]

#: The interest mask of a descriptor the loop does not watch.
UNREGISTERED = -1

#: What the loop calls with the events of a descriptor.
Handler = Callable[[int], None]

_close_socket = _socket.socket.close


class Side:
    """One end of a relayed stream.

    A socket side reads and writes one descriptor (``rfd == wfd``), whose interest mask is
    :attr:`mask`.  A descriptor side has a read descriptor and a write descriptor of its own
    (stdin and stdout; a child's stdout and stdin), each registered only while wanted
    (:attr:`rmask`, :attr:`wmask`); either is -1 once closed.  For both kinds :attr:`mask` is
    what was last asked (:meth:`want`), so that a session asks again only when it changes.
    """

    __slots__ = (
        "mask",
        "on_error",
        "on_events",
        "on_read",
        "on_write",
        "rfd",
        "rmask",
        "saved_flags",
        "sock",
        "stop_at_peer_eof",
        "wfd",
        "wfd_is_socket",
        "wmask",
    )

    def __init__(self, sock: socket.socket | None = None, *, rfd: int = -1, wfd: int = -1) -> None:
        self.sock = sock
        if sock is not None:
            rfd = wfd = sock.fileno()
        self.rfd = rfd
        self.wfd = wfd
        self.mask = UNREGISTERED
        self.rmask = UNREGISTERED
        self.wmask = UNREGISTERED
        #: original file status flags of descriptors we made non-blocking (shared with others)
        self.saved_flags: dict[int, int] = {}
        self.wfd_is_socket = False
        #: a terminal may never send EOF: the session ends once the other side's EOF is through
        self.stop_at_peer_eof = False
        self.on_events: Handler = _unhandled
        self.on_read: Handler = _unhandled
        self.on_write: Handler = _unhandled
        self.on_error: OnError = _no_owner

    def handle(self, on_events: Handler, on_read: Handler, on_write: Handler, on_error: OnError) -> None:
        """Who is called when this side is ready: ``on_events`` for a socket's events,
        ``on_read`` and ``on_write`` for a descriptor side's; ``on_error`` if one raises."""
        self.on_events = on_events
        self.on_read = on_read
        self.on_write = on_write
        self.on_error = on_error

    @property
    def is_socket(self) -> bool:
        return self.sock is not None

    def want(self, loop: Loop, mask: int, write_shut: bool) -> None:
        """Ask the loop for ``mask`` (READ, WRITE) on this side; called when ``mask`` changed.

        A socket is registered with ``mask``, also when it is 0 (its reset is still reported),
        unless ``write_shut`` (our write side is shut: an empty mask would report EPOLLHUP
        forever once the peer shuts too; unregistered until something is wanted again).  A
        descriptor side registers each descriptor only while something is wanted of it.
        """
        if self.sock is None:
            self.mask = mask
            if self.rfd >= 0:
                self.rmask = want_fd(loop, self.rfd, self.rmask, mask & READ, self.on_read, self.on_error)
            if self.wfd >= 0:
                self.wmask = want_fd(loop, self.wfd, self.wmask, mask & WRITE, self.on_write, self.on_error)
            return
        current = self.mask
        if mask == 0 and write_shut:
            if current != UNREGISTERED:
                loop.unregister(self.rfd)
            self.mask = UNREGISTERED
            return
        if current == UNREGISTERED:
            loop.register(self.rfd, mask, self.on_events, self.on_error)
        else:
            loop.modify(self.rfd, mask)
        self.mask = mask

    def shut_write(self, loop: Loop) -> None:
        """Pass EOF on: ``shutdown(SHUT_WR)`` of a socket, or close the write descriptor."""
        if self.sock is not None:
            if trace._sink is None:  # trace.enabled(), inline: once per direction of every connection
                self.sock.shutdown(socket.SHUT_WR)
            else:
                _calls.shutdown(self.sock, socket.SHUT_WR)
            return
        fd = self.wfd
        if fd < 0:
            return
        if self.wfd_is_socket:  # stdout is a socket (inetd style): a FIN, whoever else holds it
            with socket.socket(fileno=os.dup(fd)) as sock:
                _calls.shutdown(sock, socket.SHUT_WR)
        self._close_fd(loop, fd)
        self.wfd = -1
        self.wmask = UNREGISTERED

    def close_read(self, loop: Loop) -> None:
        """The read descriptor of a descriptor side reached EOF: close it."""
        if self.sock is None and self.rfd >= 0:
            self._close_fd(loop, self.rfd)
            self.rfd = -1
            self.rmask = UNREGISTERED

    def _close_fd(self, loop: Loop, fd: int) -> None:
        loop.forget(fd)
        flags = self.saved_flags.pop(fd, None)
        with contextlib.suppress(OSError):
            if flags is not None:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
            _nonblocking.close_fd(fd)

    def close(self, loop: Loop, *, abortive: bool) -> None:
        # The handlers are the session's bound methods, and the session holds this side: let go
        # of them, so that reference counting frees a finished session at once (not the cycle
        # collector, later, after walking every session still open).
        self.on_events = self.on_read = self.on_write = _unhandled
        self.on_error = _no_owner
        sock = self.sock
        if sock is not None:
            loop.forget(self.rfd)
            try:  # no contextlib.suppress: twice per connection
                if abortive:
                    abort(sock)
                elif trace._sink is None:
                    # The narrated close, without its calls while quiet; socket.close() is two
                    # Python calls that end here (a relayed socket never has a makefile()).
                    _close_socket(sock)
                else:
                    close(sock)
            except OSError:
                pass
            return
        for fd in (self.rfd, self.wfd):
            if fd >= 0:
                self._close_fd(loop, fd)
        self.rfd = self.wfd = -1


def _make_nonblocking(side: Side, fd: int) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if not flags & os.O_NONBLOCK:
        side.saved_flags[fd] = flags
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)


def stdio_side() -> Side:
    """This process's stdin and stdout as one end of a session.

    They are duplicated for the relay and descriptors 0 and 1 are pointed at /dev/null, so that
    closing our duplicate of stdout is the EOF its reader sees.  They are made non-blocking (the
    flag is shared with whoever else holds them, a shell's terminal for instance) and their
    flags are put back when the relay closes them.
    """
    rfd = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    wfd = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    side = Side(rfd=rfd, wfd=wfd)
    side.wfd_is_socket = stat.S_ISSOCK(os.fstat(wfd).st_mode)
    side.stop_at_peer_eof = os.isatty(rfd)
    _make_nonblocking(side, rfd)
    _make_nonblocking(side, wfd)
    return side


def readable(fd: int) -> bool:
    """Something (data, or the EOF) waits to be read on ``fd`` now."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _unhandled(events: int) -> None:
    raise RuntimeError("a side was registered before its handlers were set (Side.handle)")


def _no_owner(exc: Exception) -> str:
    return "nothing to close"


def want_fd(loop: Loop, fd: int, current: int, mask: int, handler: Handler, on_error: OnError) -> int:
    """Register ``fd`` for ``mask``, or unregister it when nothing is wanted."""
    if mask == current:
        return current
    if mask == 0:
        loop.unregister(fd)
        return UNREGISTERED
    if current == UNREGISTERED:
        loop.register(fd, mask, handler, on_error)
    else:
        loop.modify(fd, mask)
    return mask

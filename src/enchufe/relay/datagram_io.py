"""How the datagram relays use their sockets: how many datagrams to read at once, and several
datagrams sent in one system call.

Few system calls per datagram: a burst is read in a batch (up to :data:`BATCH` datagrams per
readiness event), and consecutive datagrams of one session and of one size (a *run*) travel to a
UDP socket in one ``sendmsg`` with UDP_SEGMENT (UDP GSO, Linux 4.18+): the kernel splits them
again into datagrams of that size (the last one may be shorter), so boundaries are kept while the
per-datagram cost of sending, most of a relay's work on loopback, drops several times.  A lone
datagram is sent as it is; an empty datagram is always alone (GSO cannot carry one).  When every
readiness event brings a single datagram (request and response traffic), reading stops after it
instead of asking once more only to hear EAGAIN; every :data:`PROBE_EVERY` events a batch is
tried again (:class:`ReadMode`).

The relay's loops call the sockets' own methods while tracing is off, so that nothing stands
between them and the kernel; with tracing on they call the narrated twins made here
(:func:`traced_recvfrom`, :func:`traced_recv`), which speak through :mod:`enchufe._calls` in the
same words as everywhere else.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from collections.abc import Callable
from typing import Any

from .. import _calls
from .._calls import recv_datagram_into, send_datagram
from .._resolve import Target
from .._unixfiles import SocketFile, autobind_unix

__all__ = [
    "BATCH",
    "BATCH_BYTES",
    "GSO_BYTES",
    "GSO_SEGMENTS",
    "NO_GSO",
    "PROBE_EVERY",
    "SOCKET_BUFFER",
    "TRANSIENT",
    "ReadMode",
    "connect_upstream",
    "enlarge_buffers",
    "send_datagrams",
    "traced_recv",
    "traced_recvfrom",
    "transient_or_raise",
]

#: Datagrams one readiness event takes from a socket before serving the others.
BATCH = 64

#: Bytes read from the listener in one batch at most (memory held while they are sent).
BATCH_BYTES = 256 * 1024

#: In single-datagram reading, every this many readiness events a whole batch is tried; each
#: try that finds one datagram again doubles the interval, up to :data:`PROBE_EVERY_MAX` (a
#: try that finds none costs the read that says EAGAIN, which single reading is there to spare).
PROBE_EVERY = 16
PROBE_EVERY_MAX = 256

#: Receive (and send) buffer asked for the relay's datagram sockets: a burst of 64-byte UDP
#: datagrams queues about 1 KiB of kernel memory each, so the default 208 KiB holds only ~200;
#: 4 MiB holds thousands while the relay is busy elsewhere.  The kernel caps it at
#: net.core.rmem_max / wmem_max.  It is a limit, not an allocation.
SOCKET_BUFFER = 4 * 1024 * 1024

#: Most datagrams (and bytes) sent in one UDP GSO ``sendmsg``: the kernel's limits
#: (UDP_MAX_SEGMENTS is 64 on older kernels, and a GSO send carries at most 64 KiB).
GSO_SEGMENTS = 64
GSO_BYTES = 65000

#: errnos of a UDP GSO send the kernel or the route cannot do (older kernel, no checksum offload)
NO_GSO = (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP)

#: A UDP socket may report an ICMP error for an earlier datagram it sent: nothing is lost
#: because of it.
TRANSIENT = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)


def transient_or_raise(exc: OSError) -> None:
    """A receive error: nothing to do if transient (an ICMP error for an earlier reply), else
    raised again (the engine reports it, and the listener rests)."""
    if exc.errno not in TRANSIENT:
        raise exc


_UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
_SOL_UDP = getattr(socket, "SOL_UDP", 17)
_GSO_SIZE = struct.Struct("=H")

Buffer = bytes | bytearray | memoryview


def send_datagrams(sock: socket.socket, data: Buffer, seg: int, count: int, sockaddr: Any, gso: bool) -> None:
    """Send ``count`` datagrams: one, or several of ``seg`` bytes (the last maybe shorter) in
    one UDP GSO ``sendmsg``.  ``sockaddr`` None: the connected peer.  Errors are raised as the
    kernel gave them (:data:`NO_GSO` when it cannot do GSO here)."""
    if count == 1 or not gso:
        if count != 1:
            raise OSError(errno.EINVAL, "several datagrams need GSO")
        send_datagram(sock, data, sockaddr)
        return
    cmsg = [(_SOL_UDP, _UDP_SEGMENT, _GSO_SIZE.pack(seg))]
    _calls.traced(
        lambda: sock.sendmsg([data], cmsg) if sockaddr is None else sock.sendmsg([data], cmsg, 0, sockaddr),
        lambda: f"sendmsg(fd {sock.fileno()}, {count} datagrams of {seg} bytes, UDP_SEGMENT)",
        lambda _sent: f" = {len(data)}",
    )


def traced_recvfrom(sock: socket.socket) -> Callable[[memoryview, int, int], tuple[int, Any]]:
    """``sock.recvfrom_into`` narrated (called as ``recv(buffer, 0, socket.MSG_TRUNC)``): the
    one a loop calls instead of the socket's own method while tracing is on."""
    return lambda buffer, _nbytes, _flags: recv_datagram_into(sock, buffer)


def traced_recv(sock: socket.socket) -> Callable[[memoryview, int, int], int]:
    """``sock.recv_into`` narrated, for a connected socket (its datagrams have one sender)."""
    return lambda buffer, _nbytes, _flags: recv_datagram_into(sock, buffer)[0]


class ReadMode:
    """How many datagrams to read per readiness event: a batch, or one when every event brings
    just one (then the read that would only say EAGAIN is skipped; level-triggered epoll calls
    again if more came).  In single mode a batch is tried after :attr:`interval` events (from
    :data:`PROBE_EVERY`, doubled by each try that finds one datagram, up to
    :data:`PROBE_EVERY_MAX`); one that finds several goes back to batches."""

    __slots__ = ("batch", "countdown", "interval")

    def __init__(self) -> None:
        self.batch = True
        self.interval = PROBE_EVERY
        self.countdown = PROBE_EVERY

    def limit(self) -> int:
        if self.batch:
            return BATCH
        self.countdown -= 1
        if self.countdown <= 0:
            return BATCH  # a try: got() sets when the next one comes
        return 1

    def got(self, count: int, limit: int) -> None:
        """``count`` datagrams came before EAGAIN (or the limit) out of ``limit`` asked."""
        if limit > 1:
            if count > 1:
                self.batch = True
                self.interval = PROBE_EVERY
            else:
                if not self.batch:  # a try in single mode found one again: try less often
                    self.interval = min(self.interval * 2, PROBE_EVERY_MAX)
                self.batch = False
            self.countdown = self.interval


def enlarge_buffers(sock: socket.socket) -> None:
    """Ask for :data:`SOCKET_BUFFER` bytes each way (the kernel may give less: never an error)."""
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)


def connect_upstream(sock: socket.socket, target: Target) -> SocketFile | None:
    """Make ``sock`` a datagram upstream connected to ``target``: non-blocking, large buffers,
    and a unix one auto-bound first, so that the target has an address to answer (the
    :class:`SocketFile` returned, to release once the socket is closed).  OSError if it cannot:
    the socket is closed and the binding released then."""
    owned: SocketFile | None = None
    try:
        sock.setblocking(False)
        if target.family == socket.AF_UNIX:
            owned = autobind_unix(sock)
        enlarge_buffers(sock)
        _calls.connect(sock, target.sockaddr)
    except BaseException:
        with contextlib.suppress(OSError):
            _calls.close(sock)
        if owned is not None:
            owned.release()
        raise
    return owned

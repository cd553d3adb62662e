"""Datagram relaying: a session per sender, each with its own way to the target.

::

    sender A ─┐                          ┌─ upstream socket A ── connected to TARGET
    sender B ─┼─▶ listener (recvfrom) ───┼─ upstream socket B ── connected to TARGET
    sender C ─┘      ▲   SessionTable    └─ upstream socket C …
                     └── replies: sendto(the session's sender)

A datagram listener has no connections, so the relay keeps one session per sender address in a
:class:`~enchufe.sessions.SessionTable`: the first datagram from a sender opens its upstream,
later ones reuse it, and whatever comes back on an upstream goes to that session's sender only.
Sessions end after ``--idle-timeout`` seconds without a datagram either way (default 60), and
when ``--max-sessions`` are open a new sender evicts the least recently active one; both are
counted.

Two kinds of upstream:

* :class:`DatagramRelay` (datagram → datagram): a datagram socket per session, connected to
  TARGET (a unixgram one is auto-bound first, so that the target has an address to answer).
  Boundaries are kept: one datagram in, one datagram out.
* :class:`FramedDatagramRelay` (datagram → stream, ``--frame``): a stream connection per session;
  each datagram travels as one length-prefixed message (:mod:`enchufe.framing`), and every
  message coming back is sent to the sender as one datagram.  Its counterpart on the other end
  of the stream is :class:`~enchufe.relay.framed.FramedStreamRelay`.

Truncation: every datagram is received into a buffer of ``--max-datagram`` bytes with MSG_TRUNC,
which makes Linux report its real size; a larger one is counted (``truncated``) and dropped,
never forwarded cut short.  The same holds for replies.

Few system calls per datagram: a burst is read in a batch (up to :data:`BATCH` datagrams per
readiness event), and consecutive datagrams of one session and of one size travel to a UDP
socket in one ``sendmsg`` with UDP_SEGMENT (UDP GSO, Linux 4.18+): the kernel splits them again
into datagrams of that size (the last one may be shorter), so boundaries are kept while the
per-datagram cost of sending, most of a relay's work on loopback, drops several times.  A lone
datagram is sent as it is.  When every readiness event brings a single datagram (request and
response traffic), reading stops after it instead of asking once more only to hear EAGAIN;
every :data:`PROBE_EVERY` events a batch is tried again (:class:`_ReadMode`).

Backpressure and memory: at most one batch per direction and session waits in the relay.  A
target that cannot take a datagram now (a unix datagram socket whose queue is full says EAGAIN)
stops the reading of the listener until it can; a sender that cannot take a reply stops the
reading of that session's upstream (a unix sender's full queue is retried on a timer, since the
kernel does not say when it has room: :meth:`_DatagramListener._replies_refused`).  Datagrams
the kernel cannot queue are dropped by the kernel, as UDP does; the relay's sockets get large
receive buffers (:data:`SOCKET_BUFFER`) so that a burst is absorbed rather than dropped.

Stopping: datagram sessions have nothing in flight that a drain could let finish (no byte stream
to complete), so when the relay stops accepting, the listener and every session close at once.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import functools
import itertools
import os
import socket
import struct
import termios
import time
from collections.abc import Callable
from typing import Any

from .. import _calls, _nonblocking, trace
from .._backoff import Backoff
from .._buffer import DEFAULT_MAX_DATAGRAM  # also the relay's: a larger unix datagram is counted as truncated
from .._calls import new_socket, recv_datagram_into, send_datagram
from .._resolve import Target
from .._text import printable
from .._unixfiles import SocketFile, autobind_unix
from ..address import from_sockaddr
from ..errors import ProtocolError, translate
from ..framing import HEADER, Framer
from ..sessions import Session, SessionTable
from .engine import ERROR, FAILED, READ, WRITE, Loop, Timer
from .events import EventSink
from .stats import Stats
from .targets import TargetResolver

__all__ = [
    "DEFAULT_MAX_DATAGRAM",
    "SOCKET_BUFFER",
    "DatagramRelay",
    "FramedDatagramRelay",
    "describe_sender",
]

#: Datagrams one readiness event takes from a socket before serving the others.
BATCH = 64

#: Receive (and send) buffer asked for the relay's datagram sockets: a burst of 64-byte UDP
#: datagrams queues about 1 KiB of kernel memory each, so the default 208 KiB holds only ~200;
#: 4 MiB holds thousands while the relay is busy elsewhere.  The kernel caps it at
#: net.core.rmem_max / wmem_max.  It is a limit, not an allocation.
SOCKET_BUFFER = 4 * 1024 * 1024

#: Bytes of framed datagrams a tunnel (``--frame``) session keeps for its stream while the stream
#: is connecting or slow; more datagrams are dropped (counted), as a full UDP queue would.
FRAMED_BACKLOG = 1024 * 1024

#: When the listener's handler raises (a receive error that is not transient, or a bug), the
#: listener rests this long before reading again: an error on every turn must not spin.
LISTENER_PAUSE = 0.1

#: Bytes a tunnel session reads from its stream at once.
STREAM_CHUNK = 65536

#: Most datagrams (and bytes) sent in one UDP GSO ``sendmsg``: the kernel's limits
#: (UDP_MAX_SEGMENTS is 64 on older kernels, and a GSO send carries at most 64 KiB).
GSO_SEGMENTS = 64
GSO_BYTES = 65000

#: Bytes read from the listener in one batch at most (memory held while they are sent).
BATCH_BYTES = 256 * 1024

#: Replies counted (read and dropped) at most from an ending session's socket: a socket buffer
#: holds far fewer, so this only bounds the loop.
MAX_DRAIN = 100_000

#: In single-datagram reading, every this many readiness events a whole batch is tried.
PROBE_EVERY = 16

_UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
_SOL_UDP = getattr(socket, "SOL_UDP", 17)
_GSO_SIZE = struct.Struct("=H")

Buffer = bytes | bytearray | memoryview
Key = Any  # a sender's sockaddr (tuple, str or bytes), or None for an unnamed unix sender

#: A UDP listener may report an ICMP error for an earlier reply: nothing is lost because of it.
_TRANSIENT = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)


def describe_sender(family: int, sockaddr: Any) -> str:
    found = from_sockaddr(family, socket.SOCK_DGRAM, sockaddr) if sockaddr else None
    # The sender chose its name (a unixgram path or abstract name): escaped where labels are
    # made, so that no event message can carry a line break or a terminal escape.
    return printable(str(found)) if found is not None else "unixgram:(unnamed)"


#: errnos of a UDP GSO send the kernel or the route cannot do (older kernel, no checksum offload)
_NO_GSO = (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP)


def send_datagrams(sock: socket.socket, data: Buffer, seg: int, count: int, sockaddr: Any, gso: bool) -> None:
    """Send ``count`` datagrams: one, or several of ``seg`` bytes (the last maybe shorter) in
    one UDP GSO ``sendmsg``.  ``sockaddr`` None: the connected peer."""
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


class _ReadMode:
    """How many datagrams to read per readiness event: a batch, or one when every event brings
    just one (then the read that would only say EAGAIN is skipped; level-triggered epoll calls
    again if more came).  Every :data:`PROBE_EVERY` events in single mode, a batch is tried."""

    __slots__ = ("batch", "countdown")

    def __init__(self) -> None:
        self.batch = True
        self.countdown = PROBE_EVERY

    def limit(self) -> int:
        if self.batch:
            return BATCH
        self.countdown -= 1
        if self.countdown <= 0:
            self.countdown = PROBE_EVERY
            return BATCH
        return 1

    def got(self, count: int, limit: int) -> None:
        """``count`` datagrams came before EAGAIN (or the limit) out of ``limit`` asked."""
        if limit > 1:
            self.batch = count > 1


def _enlarge_buffers(sock: socket.socket) -> None:
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)


class _Upstream:
    """What every datagram session has: its sender, counters, a reply waiting for the listener."""

    __slots__ = (
        "datagrams_to_client",
        "datagrams_to_target",
        "held",
        "id",
        "label",
        "peer",
        "pending_reply",
        "started",
        "to_client",
        "to_target",
    )

    def __init__(self, session_id: int, peer: Key, label: str) -> None:
        self.id = session_id
        self.peer = peer
        self.label = label
        self.started = time.monotonic()
        self.to_target = self.to_client = 0
        self.datagrams_to_target = self.datagrams_to_client = 0
        #: replies the listener could not send yet (EAGAIN), as (data, segment size, datagrams);
        #: the upstream is not read meanwhile
        self.pending_reply: tuple[bytes, int, int] | None = None
        #: a reply read from the upstream after the pending one was refused: it goes next
        self.held: bytes | None = None

    def close(self, loop: Loop) -> None:
        raise NotImplementedError

    def resume(self, relay: Any) -> None:
        """The pending reply went out: read the upstream again."""
        raise NotImplementedError

    def undelivered(self) -> int:
        """Datagrams this session holds that will never be delivered now that it ends (replies
        waiting for the listener): the relay counts them as dropped."""
        lost = self.pending_reply[2] if self.pending_reply is not None else 0
        return lost + (1 if self.held is not None else 0)


class _DatagramListener:
    """A datagram listener with a session per sender: the part both datagram relays share."""

    kind = "datagram"

    def __init__(
        self,
        loop: Loop,
        listener: socket.socket,
        resolver: TargetResolver,
        *,
        stats: Stats,
        events: EventSink,
        max_sessions: int,
        idle_timeout: float,
        max_datagram: int = DEFAULT_MAX_DATAGRAM,
        connect_timeout: float = 10.0,
        on_listener_closed: Callable[[], None] | None = None,
    ) -> None:
        self.loop = loop
        self.listener = listener
        self.resolver = resolver
        self.target_label = str(resolver.address)
        self.stats = stats
        self.events = events
        self.max_datagram = max_datagram
        self.connect_timeout = connect_timeout
        self.table: SessionTable[Key, _Upstream] = SessionTable(
            idle_timeout=idle_timeout, max_sessions=max_sessions, on_end=self._ended
        )
        self.finished = False
        self.failed = False
        self._buffer = memoryview(bytearray(max_datagram))
        self._read_mode = _ReadMode()
        self._ids = itertools.count(1)
        self._on_listener_closed = on_listener_closed
        self._accepting = False
        self._listener_mask = 0
        #: upstreams whose datagrams wait (EAGAIN): the listener is not read meanwhile
        self.blocked: set[_Upstream] = set()
        #: sessions whose reply waits for the listener to be writable, in order
        self._replies: collections.deque[_Upstream] = collections.deque()
        #: set while waiting replies are retried on a timer instead of on EPOLLOUT
        self._reply_timer: Timer | None = None
        #: pauses before replies a unix receiver's full queue refused are tried again
        self._reply_backoff = Backoff()
        self._expiry: Timer | None = None
        #: why a session is being ended from inside (the table only knows "removed")
        self._reasons: dict[int, tuple[str, str | None]] = {}
        #: UDP GSO for replies (the listener is UDP, and the kernel has not refused it)
        self.gso = listener.family != socket.AF_UNIX

    @property
    def sessions(self) -> SessionTable[Key, _Upstream]:
        return self.table

    # -- the listener

    def start(self) -> None:
        self.listener.setblocking(False)
        _enlarge_buffers(self.listener)
        self._listener_mask = READ
        self.loop.register(self.listener.fileno(), READ, self._on_listener, self._listener_failed)
        self._accepting = True

    def _listener_failed(self, exc: Exception) -> str:
        """The listener's handler raised (the engine reports it): rest the listener a moment,
        then serve on."""
        if not self._accepting:
            return "the listener was already closed"
        self._listener_mask = 0
        self.loop.modify(self.listener.fileno(), 0)
        self.loop.call_later(LISTENER_PAUSE, self._listen_for)
        return f"the listener rests {LISTENER_PAUSE:g} s"

    def _session_failed(self, session: _Upstream, exc: Exception) -> str:
        """A handler or timer of one session raised (the engine reports it): end that session."""
        self.stats.cut += 1
        self.end(session, "error", type(exc).__name__)
        return f"closed session #{session.id} {session.label}"

    def _listen_for(self) -> None:
        mask = (0 if self.blocked else READ) | (WRITE if self._replies and self._reply_timer is None else 0)
        if mask != self._listener_mask and self._accepting:
            self._listener_mask = mask
            self.loop.modify(self.listener.fileno(), mask)

    def _on_listener(self, events: int) -> None:
        if events & FAILED:
            with contextlib.suppress(OSError):
                _nonblocking.socket_error(self.listener)  # clear it: nothing is lost on a listener
        if events & (WRITE | ERROR) and self._replies:
            self._flush_replies()
        if events & (READ | ERROR) and not self.blocked:
            self._receive()
        self._listen_for()

    def _session_for(self, sender: Any, now: float) -> _Upstream | None:
        """The sender's session (opened if new, LRU order updated); None if it cannot be opened
        (counted and reported)."""
        key = sender or None
        table = self.table
        entry = table.get(key)
        if entry is not None:
            table.seen(key, now, _never)
            return entry.state
        try:
            session = self._open(key)
        except OSError as exc:
            self.stats.dropped += 1
            self.stats.failed += 1
            who = describe_sender(self.listener.family, sender)
            error = translate(exc, f"connect to {self.target_label}")
            self._error(f"cannot open a session for {who}: {error}", peer=who)
            return None
        table.seen(key, now, _Factory(session))
        self._arm_expiry()
        return session

    def _receive(self) -> None:
        """Read datagrams from the listener and pass each on (the framed relay's way; the
        datagram relay batches, see :meth:`DatagramRelay._receive`)."""
        listener = self.listener
        view = self._buffer
        limit = len(view)
        mode = self._read_mode
        reads = mode.limit()
        now = time.monotonic()
        got = 0
        for _ in range(reads):
            if not self._accepting:
                return
            try:
                size, sender = recv_datagram_into(listener, view)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in _TRANSIENT:
                    continue
                raise
            got += 1
            if size > limit:
                self._truncated(describe_sender(listener.family, sender), size, "client")
                continue
            session = self._session_for(sender, now)
            if session is not None and not self._forward(session, view[:size]):
                self.blocked.add(session)
                return
        mode.got(got, reads)

    def _truncated(self, who: str, size: int, side: str) -> None:
        self.stats.truncated += 1
        self.events.notice(
            "oversized datagrams",
            "truncated",
            f"enchufe: dropped a datagram of {size} bytes from {who}: larger than --max-datagram "
            f"{self.max_datagram}",
            peer=who,
            size=size,
            side=side,
            max_datagram=self.max_datagram,
        )

    def _error(self, message: str, **fields: Any) -> None:
        # A notice: datagrams come in floods, so their errors are rate-limited (and counted).
        self.events.notice(
            "datagram errors",
            "error",
            f"enchufe: {message}",
            error=message,
            target=self.target_label,
            **fields,
        )

    # -- replies

    def reply(self, session: _Upstream, data: Buffer, seg: int = 0, count: int = 1) -> bool:
        """Send ``data`` to the session's sender (``count`` datagrams of ``seg`` bytes, the last
        maybe shorter, when ``count`` > 1); False if it has to wait (the caller stops reading its
        upstream until :meth:`_Upstream.resume`)."""
        if session.peer is None:
            self.stats.dropped += count  # an unnamed unix sender: no address to answer
            return True
        if not self._replies:  # nobody waits already (else: keep the order)
            try:
                sent = self._sendto(session, data, seg, count)
            except BlockingIOError:
                pass
            else:
                if sent:
                    self._delivered_reply(session, len(data), count)
                return True
        session.pending_reply = (bytes(data), seg, count)
        self._replies.append(session)
        if len(self._replies) == 1:  # refused just now (else it waits behind others already)
            self._replies_refused()
        return False

    def _sendto(self, session: _Upstream, data: Buffer, seg: int, count: int) -> bool:
        """One send of replies to the sender: True if sent, False if dropped (counted);
        BlockingIOError if the listener cannot take them now."""
        try:
            send_datagrams(self.listener, data, seg, count, session.peer, self.gso)
        except BlockingIOError:
            raise
        except OSError as exc:
            if count > 1 and exc.errno in _NO_GSO:
                self.gso = False  # the kernel or the route cannot: one datagram at a time
                return self._sendto_each(session, data, seg)
            self.stats.dropped += count
            self._error(f"cannot answer {session.label}: {(exc.strerror or str(exc)).lower()}")
            return False
        return True

    def _sendto_each(self, session: _Upstream, data: Buffer, seg: int) -> bool:
        view = memoryview(data)
        for start in range(0, len(view), seg):
            with contextlib.suppress(OSError):
                send_datagram(self.listener, view[start : start + seg], session.peer)
        return True

    def _delivered_reply(self, session: _Upstream, size: int, count: int = 1) -> None:
        session.to_client += size
        session.datagrams_to_client += count
        self.stats.to_client += size
        self.stats.datagrams_to_client += count

    def _flush_replies(self) -> None:
        replies = self._replies
        while replies:
            session = replies[0]
            pending = session.pending_reply
            if pending is not None:
                data, seg, count = pending
                try:
                    sent = self._sendto(session, data, seg, count)
                except BlockingIOError:
                    self._replies_refused()
                    return
                if sent:
                    self._delivered_reply(session, len(data), count)
                session.pending_reply = None
                held = session.held
                if held is not None:  # read behind the refused one: it goes before anything new
                    session.held = None
                    session.pending_reply = (held, len(held), 1)
                    continue
            replies.popleft()
            session.resume(self)
        self._reply_backoff.reset()

    def _replies_refused(self) -> None:
        """A reply was refused (EAGAIN): wait until it may go.

        Usually that is EPOLLOUT on the listener, once its send buffer has room again.  But a
        unix receiver whose queue is full (a sender it is not connected to is held to its queue
        length) refuses too, and the kernel reports an unconnected unix datagram socket writable
        whenever its own send buffer has room, whatever the receiver's queue: waiting for EPOLLOUT
        would wake the relay at once, again and again, for as long as the receiver does not read.
        Then the replies are tried again on a timer instead, backing off (:class:`Backoff`,
        1 ms doubling up to 50 ms): a few attempts a second cost nothing.
        """
        if self._reply_timer is None and self._room_to_send():
            self._reply_timer = self.loop.call_later(self._reply_backoff.next(), self._retry_replies)
        self._listen_for()

    def _room_to_send(self) -> bool:
        """A unix listener's send buffer has room, so that EPOLLOUT would not wait (the kernel's
        test: four times the bytes it holds fit in its size).  Never for UDP, whose EAGAIN means
        a full send buffer."""
        listener = self.listener
        if listener.family != socket.AF_UNIX:
            return False
        try:
            used: int = struct.unpack("i", fcntl.ioctl(listener.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
            size = listener.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        except OSError:
            return True  # cannot tell: a timer at worst adds a little delay
        return used * 4 <= size

    def _retry_replies(self) -> None:
        self._reply_timer = None
        if self._accepting:
            self._flush_replies()
            self._listen_for()

    # -- sessions

    def _open(self, key: Key) -> _Upstream:
        raise NotImplementedError

    def _forward(self, session: _Upstream, data: memoryview) -> bool:
        """Pass a client's datagram on; False if it has to wait (the listener is not read until
        the upstream takes it)."""
        raise NotImplementedError

    def _announce(self, session: _Upstream) -> None:
        self.stats.total += 1
        self.stats.open += 1
        if self.events.wants(1):
            self.events(
                "session",
                f"new session #{session.id} for {session.label} → {self.target_label}",
                level=1,
                id=session.id,
                peer=session.label,
                target=self.target_label,
            )

    def _arm_expiry(self) -> None:
        if self._expiry is None:
            when = self.table.next_expiry()
            if when is not None:
                self._expiry = self.loop.call_later(max(0.0, when - time.monotonic()), self._expire)

    def _expire(self) -> None:
        self._expiry = None
        self.table.expire(time.monotonic())
        self._arm_expiry()

    def current(self, session: _Upstream) -> bool:
        """Whether ``session`` is still open."""
        entry = self.table.get(session.peer)
        return entry is not None and entry.state is session

    def end(self, session: _Upstream, reason: str, error: str | None = None) -> None:
        """End a session from inside (its upstream failed or closed)."""
        if self.current(session):
            self._reasons[id(session)] = (reason, error)
            self.table.remove(session.peer)

    def _ended(self, entry: Session[Key, _Upstream], why: str) -> None:
        session = entry.state
        reason, error = self._reasons.pop(id(session), (why, None))
        if why == "idle":
            self.stats.expired += 1
        elif why == "evicted":
            self.stats.evicted += 1
        # Replies (and datagrams for the target) still waiting are lost with the session: a
        # summary that says "0 dropped" then would be wrong.
        self.stats.dropped += session.undelivered()
        session.close(self.loop)
        if session in self.blocked:
            self.blocked.discard(session)
            self._listen_for()
        if session.pending_reply is not None:
            session.pending_reply = session.held = None
            with contextlib.suppress(ValueError):
                self._replies.remove(session)
        self.stats.open -= 1
        if self.events.wants(1):
            seconds = time.monotonic() - session.started
            why_text = f" ({reason}: {error})" if error else f" ({reason})"
            self.events(
                "close",
                f"closed session #{session.id} {session.label}: {session.datagrams_to_target} datagrams "
                f"({session.to_target} bytes) to target, {session.datagrams_to_client} "
                f"({session.to_client} bytes) to client in {seconds:.3f} s{why_text}",
                level=1,
                id=session.id,
                peer=session.label,
                reason=reason,
                to_target=session.to_target,
                to_client=session.to_client,
                datagrams_to_target=session.datagrams_to_target,
                datagrams_to_client=session.datagrams_to_client,
                seconds=round(seconds, 6),
                **({"error": error} if error else {}),
            )

    # -- stopping

    def stop_accepting(self) -> None:
        """Stop: close the listener and every session (nothing is in flight to drain)."""
        if not self._accepting:
            return
        self._accepting = False
        self.loop.forget(self.listener.fileno())
        with contextlib.suppress(OSError):
            _calls.close(self.listener)
        for entry in list(self.table):
            self._reasons[id(entry.state)] = ("shutdown", None)
        self.table.clear()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._reply_timer is not None:
            self._reply_timer.cancel()
            self._reply_timer = None
        if self._on_listener_closed is not None:
            self._on_listener_closed()

    def abort_all(self, reason: str) -> int:
        count = len(self.table)
        for entry in list(self.table):
            self._reasons[id(entry.state)] = (reason, None)
        self.table.clear()
        return count

    def close(self) -> None:
        self.stop_accepting()


def _never(_key: Key) -> _Upstream:
    raise AssertionError("the session exists")


class _Factory:
    """A SessionTable factory handing over a session made beforehand (so that a failure to open
    it leaves the table untouched)."""

    __slots__ = ("session",)

    def __init__(self, session: _Upstream) -> None:
        self.session = session

    def __call__(self, _key: Key) -> _Upstream:
        return self.session


# ----------------------------------------------------------------------------- datagram → datagram


class _DatagramUpstream(_Upstream):
    """A session of a datagram → datagram relay: its own socket connected to the target."""

    __slots__ = ("fd", "gso", "mask", "owned", "pending", "read_mode", "refused", "sock")

    def __init__(self, session_id: int, peer: Key, label: str, sock: socket.socket, owned: SocketFile | None):
        super().__init__(session_id, peer, label)
        self.sock = sock
        self.fd = sock.fileno()
        self.owned = owned
        self.mask = READ
        #: datagrams for the target that it could not take yet: (data, segment size, count)
        self.pending: list[tuple[bytes, int, int]] = []
        self.refused = False
        #: UDP GSO towards the target (a UDP upstream, until the kernel refuses it)
        self.gso = sock.family != socket.AF_UNIX
        self.read_mode = _ReadMode()

    def close(self, loop: Loop) -> None:
        loop.forget(self.fd)
        with contextlib.suppress(OSError):
            _calls.close(self.sock)
        if self.owned is not None:
            self.owned.release()
            self.owned = None

    def undelivered(self) -> int:
        """Also the datagrams for the target that it could not take yet, and the replies the
        target sent that wait unread in this socket (they die with it)."""
        lost = super().undelivered() + sum(count for _data, _seg, count in self.pending)
        for _ in range(MAX_DRAIN):
            try:
                self.sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_TRUNC)
            except OSError:  # none left (EAGAIN), or an ICMP error: nothing more to count
                break
            lost += 1
        return lost

    def resume(self, relay: Any) -> None:
        relay.watch(self)


class DatagramRelay(_DatagramListener):
    """Datagram LISTEN → datagram TARGET: a connected upstream socket per sender."""

    def _open(self, key: Key) -> _Upstream:
        target: Target = self.resolver.targets()[0]
        sock = new_socket(target.family, socket.SOCK_DGRAM)
        owned: SocketFile | None = None
        try:
            sock.setblocking(False)
            if target.family == socket.AF_UNIX:
                owned = autobind_unix(sock)  # an address for the target to answer
            _enlarge_buffers(sock)
            _calls.connect(sock, target.sockaddr)
        except BaseException:
            with contextlib.suppress(OSError):
                _calls.close(sock)
            if owned is not None:
                owned.release()
            raise
        session = _DatagramUpstream(
            next(self._ids), key, describe_sender(self.listener.family, key), sock, owned
        )
        self.loop.register(
            session.fd,
            READ,
            functools.partial(self._on_upstream, session),
            functools.partial(self._session_failed, session),
        )
        self._announce(session)
        return session

    def watch(self, session: _DatagramUpstream) -> None:
        mask = (READ if session.pending_reply is None else 0) | (WRITE if session.pending else 0)
        if mask != session.mask:
            session.mask = mask
            self.loop.modify(session.fd, mask)

    # -- client → target

    def _receive(self) -> None:
        """Read a batch from the listener; send each session's consecutive datagrams of one size
        together (UDP GSO), or a lone datagram straight from the receive buffer."""
        listener = self.listener
        view = self._buffer
        limit = len(view)
        mode = self._read_mode
        reads = mode.limit()
        now = time.monotonic()
        recv = None if trace.enabled() else listener.recvfrom_into
        # Groups of this batch, in order: [session, data, segment size, count, may grow].
        groups: list[list[Any]] = []
        last: list[Any] | None = None
        held = 0
        got = 0
        for _ in range(reads):
            if not self._accepting:
                return
            try:
                if recv is not None:
                    size, sender = recv(view, 0, socket.MSG_TRUNC)
                else:
                    size, sender = recv_datagram_into(listener, view)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in _TRANSIENT:
                    continue
                raise
            got += 1
            if size > limit:
                self._truncated(describe_sender(listener.family, sender), size, "client")
                continue
            session = self._session_for(sender, now)
            if session is None:
                continue
            if reads == 1:  # one datagram: straight from the buffer, no copy
                assert isinstance(session, _DatagramUpstream)
                if recv is not None and not session.pending:
                    try:  # the request/response path, inline: one send, counted
                        session.sock.send(view[:size])
                    except OSError as exc:
                        if exc.errno == errno.ECONNREFUSED:
                            self._refused(session)
                        self._send_up(session, view[:size], size, 1)
                    else:
                        session.to_target += size
                        session.datagrams_to_target += 1
                        stats = self.stats
                        stats.to_target += size
                        stats.datagrams_to_target += 1
                else:
                    self._send_up(session, view[:size], size, 1)
                return
            if (
                last is not None
                and last[0] is session
                and last[4]
                and size <= last[2]
                and last[3] < GSO_SEGMENTS
                and len(last[1]) + size <= GSO_BYTES
            ):
                last[1] += view[:size]
                last[3] += 1
                last[4] = size == last[2]  # a shorter datagram ends its group
            else:
                assert isinstance(session, _DatagramUpstream)
                last = [session, bytearray(view[:size]), size, 1, session.gso]
                groups.append(last)
            held += size
            if held >= BATCH_BYTES:
                break
        mode.got(got, reads)
        for session, data, seg, count, _grow in groups:
            if session.pending or not self.current(session):
                if self.current(session):
                    session.pending.append((bytes(data), seg, count))
                else:
                    self.stats.dropped += count  # evicted within this very batch
                continue
            self._send_up(session, data, seg, count)

    def _send_up(self, session: _DatagramUpstream, data: Buffer, seg: int, count: int) -> bool:
        """Send datagrams to the target; False if they have to wait (kept, the listener paused)."""
        for attempt in (1, 2):
            try:
                send_datagrams(session.sock, data, seg, count, None, session.gso)
            except BlockingIOError:
                session.pending.append((bytes(data), seg, count))
                self.blocked.add(session)
                self.watch(session)
                self._listen_for()
                return False
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED and attempt == 1:
                    self._refused(session)  # an earlier datagram was refused; these may pass
                    continue
                if count > 1 and exc.errno in _NO_GSO:
                    session.gso = False
                    view = memoryview(data)
                    for start in range(0, len(view), seg):
                        self._send_up(session, view[start : start + seg], seg, 1)
                    return True
                self.stats.dropped += count
                self._error(f"cannot send to {self.target_label}: {(exc.strerror or str(exc)).lower()}")
                return True
            break
        size = len(data)
        session.to_target += size
        session.datagrams_to_target += count
        stats = self.stats
        stats.to_target += size
        stats.datagrams_to_target += count
        return True

    def _forward(self, session: _Upstream, data: memoryview) -> bool:
        assert isinstance(session, _DatagramUpstream)
        return self._send_up(session, data, len(data), 1)

    def _refused(self, session: _DatagramUpstream) -> None:
        self.stats.dropped += 1
        if not session.refused:
            session.refused = True
            self._error(
                f"{self.target_label} refused a datagram from {session.label} (nobody listens there?)",
                id=session.id,
                peer=session.label,
            )

    def _on_upstream(self, session: _DatagramUpstream, events: int) -> None:
        if events & FAILED:
            # An ICMP error (port unreachable) or a unix peer gone: reading SO_ERROR clears it,
            # so that an upstream we are not reading now does not report it forever.
            try:
                code = _nonblocking.socket_error(session.sock)
            except OSError as exc:
                code = exc.errno or errno.EIO
            if code == errno.ECONNREFUSED:
                self._refused(session)
            elif code:
                self.end(session, "target-error", os.strerror(code).lower())
                return
        if events & (WRITE | ERROR) and session.pending:
            waiting = session.pending
            session.pending = []
            for index, (data, seg, count) in enumerate(waiting):
                if not self._send_up(session, data, seg, count):
                    # _send_up put this one back last: keep the rest after it, in order
                    session.pending.extend(waiting[index + 1 :])
                    return
            if session in self.blocked:
                self.blocked.discard(session)
                if not self.blocked:
                    self._listen_for()
                    self._receive()  # the listener may hold datagrams already
                    self._listen_for()
            self.watch(session)
        if events & (READ | ERROR) and session.pending_reply is None:
            self._replies_from(session)

    # -- target → client

    def _replies_from(self, session: _DatagramUpstream) -> None:
        """Read what the target sent this session and pass it to the sender, consecutive
        datagrams of one size together (UDP GSO)."""
        view = self._buffer
        limit = len(view)
        sock = session.sock
        recv = None if trace.enabled() else sock.recv_into
        mode = session.read_mode
        reads = mode.limit()
        got = 0
        group: bytearray | None = None
        seg = count = 0
        gso = self.gso
        for _ in range(reads):
            try:
                if recv is not None:
                    size = recv(view, 0, socket.MSG_TRUNC)
                else:
                    size, _sender = recv_datagram_into(sock, view)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED:  # ICMP: the target's port is closed
                    self._refused(session)
                    continue
                self.end(session, "target-error", (exc.strerror or str(exc)).lower())
                return
            got += 1
            if size > limit:
                self._truncated(self.target_label, size, "target")
                continue
            if reads == 1:
                self.table.touch(session.peer, time.monotonic())
                peer = session.peer
                if recv is not None and peer is not None and not self._replies:
                    try:  # the request/response path, inline: one sendto, counted
                        self.listener.sendto(view[:size], peer)
                    except OSError:
                        pass  # the general path below decides: wait, or drop and count
                    else:
                        session.to_client += size
                        session.datagrams_to_client += 1
                        stats = self.stats
                        stats.to_client += size
                        stats.datagrams_to_client += 1
                        return
                if not self.reply(session, view[:size]):
                    self.watch(session)  # stop reading until the reply is out
                return
            if (
                group is not None
                and gso
                and size <= seg
                and count < GSO_SEGMENTS
                and len(group) + size <= GSO_BYTES
                and len(group) == seg * count
            ):
                group += view[:size]
                count += 1
                continue
            if group is not None and not self.reply(session, group, seg, count):
                # This datagram is read already and may not be lost: it goes right after them.
                session.held = bytes(view[:size])
                self.watch(session)
                group = None
                break
            group, seg, count = bytearray(view[:size]), size, 1
        mode.got(got, reads)
        if got:
            self.table.touch(session.peer, time.monotonic())
        if group is not None and not self.reply(session, group, seg, count):
            self.watch(session)


# ----------------------------------------------------------------------------- datagram → stream (--frame)


class _Tunnel(_Upstream):
    """A session of a framed relay: a stream connection carrying the sender's datagrams."""

    __slots__ = ("connected", "fd", "framer", "mask", "out", "queued", "queued_bytes", "sock", "timer")

    def __init__(self, session_id: int, peer: Key, label: str, sock: socket.socket, max_datagram: int):
        super().__init__(session_id, peer, label)
        self.sock = sock
        self.fd = sock.fileno()
        self.connected = False
        self.framer = Framer(max_size=max_datagram)
        #: encoded messages not yet taken by the stream
        self.out = bytearray()
        self.mask = -1
        self.timer: Timer | None = None
        #: datagrams (and their bytes) queued while connecting: counted once the stream is up
        self.queued = self.queued_bytes = 0

    def close(self, loop: Loop) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        loop.forget(self.fd)
        with contextlib.suppress(OSError):
            if self.connected and not self.out:
                _calls.close(self.sock)
            else:
                _nonblocking.abort(self.sock)

    def resume(self, relay: Any) -> None:
        relay.deliver(self)

    def undelivered(self) -> int:
        """Also the datagrams queued while connecting, and the whole replies read from the
        stream but not yet sent to the sender."""
        lost = super().undelivered() + self.queued
        with contextlib.suppress(ProtocolError):
            while self.framer.next_message() is not None:
                lost += 1
        return lost


class FramedDatagramRelay(_DatagramListener):
    """Datagram LISTEN → stream TARGET (``--frame``): a stream connection per sender, each
    datagram one length-prefixed message on it, each message back one datagram to the sender."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self._stream_buffer = memoryview(bytearray(STREAM_CHUNK))

    def _open(self, key: Key) -> _Upstream:
        target: Target = self.resolver.targets()[0]
        sock = new_socket(target.family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if target.family != socket.AF_UNIX:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            status = _nonblocking.connect_nonblocking(sock, target.sockaddr)
        except BaseException:
            with contextlib.suppress(OSError):
                _calls.close(sock)
            raise
        if status not in (0, errno.EINPROGRESS):  # a unix target's backlog is full
            with contextlib.suppress(OSError):
                _calls.close(sock)
            raise OSError(status, "the target's backlog is full")
        label = describe_sender(self.listener.family, key)
        session = _Tunnel(next(self._ids), key, label, sock, self.max_datagram)
        session.connected = status == 0
        failed = functools.partial(self._session_failed, session)
        self.loop.register(session.fd, 0, lambda events: self._on_stream(session, events), failed)
        if not session.connected:
            session.timer = self.loop.call_later(
                self.connect_timeout, lambda: self._connect_timed_out(session), failed
            )
        self._announce(session)
        self._watch(session)
        return session

    def _watch(self, session: _Tunnel) -> None:
        if not session.connected:
            mask = WRITE
        else:
            mask = (READ if session.pending_reply is None else 0) | (WRITE if session.out else 0)
        if mask != session.mask:
            session.mask = mask
            self.loop.modify(session.fd, mask)

    def _connect_timed_out(self, session: _Tunnel) -> None:
        session.timer = None
        if not session.connected:
            self._failed(session, f"no answer within {self.connect_timeout:g} s")

    def _failed(self, session: _Tunnel, why: str) -> None:
        self.stats.failed += 1
        self.stats.dropped += session.queued  # queued, never carried
        session.queued = session.queued_bytes = 0
        message = f"cannot connect to {self.target_label} for {session.label}: {why}"
        self._error(message, id=session.id, peer=session.label)
        self.end(session, "target-failed", why)

    def _forward(self, session: _Upstream, data: memoryview) -> bool:
        assert isinstance(session, _Tunnel)
        if len(session.out) + len(data) + HEADER.size > FRAMED_BACKLOG:
            self.stats.dropped += 1  # the stream is not keeping up: drop, as a full queue would
            return True
        session.out += HEADER.pack(len(data))
        session.out += data
        if session.connected:
            self._count(session, 1, len(data))
            self._send(session)
        else:
            session.queued += 1
            session.queued_bytes += len(data)
        return True

    def _count(self, session: _Tunnel, datagrams: int, size: int) -> None:
        session.to_target += size
        session.datagrams_to_target += datagrams
        self.stats.to_target += size
        self.stats.datagrams_to_target += datagrams

    def _send(self, session: _Tunnel) -> None:
        out = session.out
        while out:
            try:
                sent = _nonblocking.write(session.fd, memoryview(out))
            except BlockingIOError:
                break
            except OSError as exc:
                self.stats.reset += 1
                self.end(session, "target-reset", (exc.strerror or str(exc)).lower())
                return
            del out[:sent]
        self._watch(session)

    def _on_stream(self, session: _Tunnel, events: int) -> None:
        if session.connected and events & FAILED:
            try:
                code = _nonblocking.socket_error(session.sock)
            except OSError as exc:
                code = exc.errno or errno.EIO
            if code:
                self.stats.reset += 1
                self.end(session, "target-reset", os.strerror(code).lower())
                return
        if not session.connected:
            try:
                code = _nonblocking.socket_error(session.sock)
            except OSError as exc:
                code = exc.errno or errno.EIO
            if code:
                self._failed(session, translate(OSError(code, ""), "connect").args[0])
                return
            session.connected = True
            if session.timer is not None:
                session.timer.cancel()
                session.timer = None
            self._count(session, session.queued, session.queued_bytes)
            session.queued = session.queued_bytes = 0
            self._send(session)
            return
        if events & (WRITE | ERROR) and session.out:
            self._send(session)
            if not self.current(session):
                return
        if events & (READ | ERROR) and session.pending_reply is None:
            self._read(session)

    def _read(self, session: _Tunnel) -> None:
        view = self._stream_buffer
        try:
            n = _nonblocking.read_into(session.fd, view)
        except BlockingIOError:
            return
        except OSError as exc:
            self.stats.reset += 1
            self.end(session, "target-reset", (exc.strerror or str(exc)).lower())
            return
        if not n:
            error = None
            try:
                session.framer.feed_eof()
            except ProtocolError as exc:
                error = str(exc)
                self._framing_error(session, error)
            self.end(session, "target-closed", error)
            return
        with contextlib.suppress(ProtocolError):
            # After a bad header the messages before it still go; next_message() raises it then.
            session.framer.feed(view[:n])
        self.table.touch(session.peer, time.monotonic())
        self.deliver(session)

    def _framing_error(self, session: _Tunnel, error: str) -> None:
        self.events.notice(
            "framing errors",
            "protocol-error",
            f"enchufe: closed session #{session.id} {session.label}: {self.target_label} broke the "
            f"framing: {error}",
            id=session.id,
            peer=session.label,
            target=self.target_label,
            error=error,
        )

    def deliver(self, session: _Tunnel) -> None:
        """Send the messages the framer holds to the sender, one datagram each."""
        framer = session.framer
        while True:
            try:
                message = framer.next_message()
            except ProtocolError as exc:
                self.stats.reset += 1
                self._framing_error(session, str(exc))
                self.end(session, "protocol-error", str(exc))
                return
            if message is None:
                break
            if not self.reply(session, message):
                break
        self._watch(session)

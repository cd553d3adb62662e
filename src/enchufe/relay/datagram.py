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

Few system calls per datagram: a burst is read in a batch, and consecutive datagrams of one
session and of one size travel to a UDP socket in one ``sendmsg`` with UDP GSO; request and
response traffic is read one datagram per readiness event (:mod:`enchufe.relay.datagram_io`).

Backpressure and memory: at most one batch per direction and session waits in the relay.  A
target that cannot take a datagram now (a unix datagram socket whose queue is full says EAGAIN)
stops the reading of the listener until it can; a sender that cannot take a reply stops the
reading of that session's upstream (a unix sender's full queue is retried on a timer, since the
kernel does not say when it has room: :mod:`enchufe.relay.datagram_replies`).  Datagrams
the kernel cannot queue are dropped by the kernel, as UDP does; the relay's sockets get large
receive buffers (:data:`SOCKET_BUFFER`) so that a burst is absorbed rather than dropped.

Where the parts are: the listener and its sessions (shared by both kinds) in
:mod:`enchufe.relay.datagram_listener`, the replies in :mod:`enchufe.relay.datagram_replies`,
:class:`FramedDatagramRelay` in :mod:`enchufe.relay.tunnel`; this module is
:class:`DatagramRelay`.

Stopping: datagram sessions have nothing in flight that a drain could let finish (no byte stream
to complete), so when the relay stops accepting, the listener and every session close at once.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import _calls, _nonblocking, trace
from .._buffer import DEFAULT_MAX_DATAGRAM  # also the relay's: a larger unix datagram is counted as truncated
from .._calls import new_socket
from .._resolve import Target
from .._unixfiles import SocketFile
from ..errors import reason as system_reason
from ..i18n import _
from ..sessions import Session
from . import datagram_shortcuts
from .datagram_io import (
    GSO_BYTES,
    GSO_SEGMENTS,
    NO_GSO,
    SOCKET_BUFFER,
    Buffer,
    ReadMode,
    connect_upstream,
    send_datagrams,
    traced_recv,
)
from .datagram_listener import (
    DatagramListener,
    Key,
    Run,
    Upstream,
    describe_sender,
    existing_only,
    transient_or_raise,
)
from .engine import ERROR, FAILED, READ, WRITE, Loop
from .tunnel import FramedDatagramRelay

__all__ = [
    "DEFAULT_MAX_DATAGRAM",
    "SOCKET_BUFFER",
    "DatagramRelay",
    "FramedDatagramRelay",
    "describe_sender",
]

#: Replies counted (read and dropped) at most from an ending session's socket: a socket buffer
#: holds far fewer, so this only bounds the loop.
MAX_DRAIN = 100_000


class DatagramUpstream(Upstream):
    """A session of a datagram → datagram relay: its own socket connected to the target."""

    __slots__ = ("cut", "fd", "mask", "owned", "pending", "read_mode", "refused", "routed", "sock")

    def __init__(self, session_id: int, peer: Key, label: str, sock: socket.socket, owned: SocketFile | None):
        super().__init__(session_id, peer, label)
        self.sock = sock
        self.fd = sock.fileno()
        self.owned = owned
        self.mask = READ
        #: datagrams for the target that it could not take yet: (data, segment size, count)
        self.pending: list[tuple[bytes, int, int]] = []
        self.refused = False
        self.gso = sock.family != socket.AF_UNIX
        self.read_mode = ReadMode()
        #: the poller serves its replies (cut) and sends its sender's requests (routed): see
        #: datagram_shortcuts
        self.cut = False
        self.routed = False

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
        for _turn in range(MAX_DRAIN):
            try:
                self.sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_TRUNC)
            except OSError:  # none left (EAGAIN), or an ICMP error: nothing more to count
                break
            lost += 1
        return lost

    def resume(self, relay: DatagramRelay) -> None:
        relay.watch(self)


class DatagramRelay(DatagramListener):
    """Datagram LISTEN → datagram TARGET: a connected upstream socket per sender."""

    runs_above = 1  # a batch of several goes as runs, to a UDP target in one send each

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: the sessions by their upstream's descriptor (for the poller's counts)
        self.upstreams: dict[int, DatagramUpstream] = {}
        #: the listener's datagrams are served by the poller (see datagram_shortcuts)
        self._cut_in = False
        #: the compiled poller may serve this relay: a plain one (a subclass that adds to what
        #: a datagram goes through, faults or PROXY headers, keeps every datagram its own)
        self._compiled = self.loop.poller is not None and type(self) is DatagramRelay
        if self._compiled:
            self.stats.collectors.append(lambda: datagram_shortcuts.totals(self))

    def _listener_handler(self) -> Callable[[int], None]:
        if not self._compiled:
            return self._on_listener
        return functools.partial(datagram_shortcuts.on_listener, self)

    def _on_listener(self, events: int) -> None:
        """Request/response traffic (one datagram per readiness event, see ReadMode): one
        datagram of a known sender, nothing waiting either way, read and sent on here; anything
        else (a batch due, a new sender, a truncated datagram, tracing) takes the general path.
        Nothing here changes what the listener waits for, so its interest is left alone."""
        mode = self._read_mode
        if (
            events != READ
            or mode.batch
            or mode.countdown <= 1  # a batch is tried on this one: ReadMode.limit
            or self.blocked
            or self.replies.waiting
            or trace._sink is not None  # trace.enabled(), without a call per datagram
        ):
            super()._on_listener(events)
            return
        mode.countdown -= 1
        view = self._buffer
        try:
            size, sender = self._receivers[1](view, 0, socket.MSG_TRUNC)
        except BlockingIOError:
            return
        except OSError as exc:
            transient_or_raise(exc)
            return
        table = self.table
        key = sender or None
        entry = table.get(key) if size <= len(view) else None
        if entry is None:  # a new sender, or truncated: _receive's way, for one datagram
            if size > len(view):
                self._truncated(describe_sender(self.listener.family, sender), size, "client")
            else:
                entry = self._entry_for(sender, time.monotonic())
                if entry is not None:
                    self._forward(entry.state, view[:size], True)
            self._listen_for()
            return
        table.seen(key, time.monotonic(), existing_only)
        self._forward(entry.state, view[:size], True)

    def _open(self, key: Key) -> Upstream:
        target: Target = self.resolver.targets()[0]
        sock = new_socket(target.family, socket.SOCK_DGRAM)
        owned = connect_upstream(sock, target)
        session = DatagramUpstream(
            next(self._ids), key, describe_sender(self.listener.family, key), sock, owned
        )
        compiled = self._compiled
        self.loop.register(
            session.fd,
            READ,
            functools.partial(datagram_shortcuts.on_upstream, self, session)
            if compiled
            else functools.partial(self._on_upstream, session),
            functools.partial(self._session_failed, session),
        )
        self._announce(session)
        if compiled:
            datagram_shortcuts.sync(self)  # a full table evicts the least recently active
            self.upstreams[session.fd] = session
            datagram_shortcuts.route(self, session)
        return session

    def _ended(self, entry: Session[Key, Upstream], why: str) -> None:
        if self._compiled:
            datagram_shortcuts.ended(self, entry.state)  # type: ignore[arg-type]
        super()._ended(entry, why)

    def _expire(self) -> None:
        if self._compiled:
            datagram_shortcuts.sync(self)  # what the poller carried keeps its sessions open
        super()._expire()

    def watch(self, session: DatagramUpstream) -> None:
        if self._compiled:
            datagram_shortcuts.route(self, session)
        mask = (READ if session.pending_reply is None else 0) | (WRITE if session.pending else 0)
        if mask != session.mask:
            session.mask = mask
            self.loop.modify(session.fd, mask)

    # -- client → target

    def _forward(self, session: Upstream, data: memoryview, raw: bool) -> None:
        """A lone datagram, straight from the receive buffer (no copy)."""
        if TYPE_CHECKING:  # every session of this relay is one: no isinstance() per datagram
            assert isinstance(session, DatagramUpstream)
        if not raw or session.pending:
            self._send_up(session, data, len(data), 1)
            return
        try:  # the request/response path, inline: one send, counted
            session.sock.send(data)
        except OSError as exc:
            self._forward_failed(session, data, exc.errno or errno.EIO)
        else:
            size = len(data)
            session.to_target += size
            session.datagrams_to_target += 1
            stats = self.stats
            stats.to_target += size
            stats.datagrams_to_target += 1

    def _forward_failed(self, session: DatagramUpstream, data: memoryview, code: int) -> None:
        """Sending a lone datagram failed with errno ``code``: an ICMP refusal of an earlier one
        is counted, and it goes the general way (it may wait)."""
        if code == errno.ECONNREFUSED:
            self._refused(session)
        self._send_up(session, data, len(data), 1)

    def _forward_runs(self, runs: list[Run]) -> None:
        """Each run in one send (UDP GSO), unless its session has datagrams waiting already
        (then it waits behind them) or ended within this batch (then it is dropped, counted)."""
        for session, data, seg, count in runs:
            if not self.current(session):
                self.stats.dropped += count  # evicted within this very batch
            elif session.pending:
                session.pending.append((bytes(data), seg, count))
            else:
                self._send_up(session, data, seg, count)

    def _send_up(self, session: DatagramUpstream, data: Buffer, seg: int, count: int) -> bool:
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
                if count > 1 and exc.errno in NO_GSO:
                    session.gso = False
                    view = memoryview(data)
                    for start in range(0, len(view), seg):
                        self._send_up(session, view[start : start + seg], seg, 1)
                    return True
                self.stats.dropped += count
                self._error(
                    _("cannot send to {target}: {reason}").format(
                        target=self.target_label, reason=system_reason(exc)
                    )
                )
                return True
            break
        size = len(data)
        session.to_target += size
        session.datagrams_to_target += count
        stats = self.stats
        stats.to_target += size
        stats.datagrams_to_target += count
        return True

    def _refused(self, session: DatagramUpstream) -> None:
        self.stats.dropped += 1
        if not session.refused:
            session.refused = True
            self._error(
                _("{target} refused a datagram from {peer} (nobody listens there?)").format(
                    target=self.target_label, peer=session.label
                ),
                id=session.id,
                peer=session.label,
            )

    def _on_upstream(self, session: DatagramUpstream, events: int) -> None:
        mode = session.read_mode
        if (
            events == READ
            and not mode.batch
            and mode.countdown > 1  # else a batch is tried on this one: ReadMode.limit
            and session.pending_reply is None
            and trace._sink is None  # trace.enabled(), without a call per datagram
        ):
            # Request/response traffic: _replies_from's reading of one datagram, inline.
            mode.countdown -= 1
            view = self._buffer
            try:
                size = session.sock.recv_into(view, 0, socket.MSG_TRUNC)
            except BlockingIOError:
                return
            except OSError as exc:
                self._reply_error(session, exc)
                return
            if size <= len(view):
                self._reply_one(session, view[:size], True)
            else:
                self._truncated(self.target_label, size, "target")
                self.table.touch(session.peer, time.monotonic())
            return
        self._upstream_events(session, events)

    def _upstream_events(self, session: DatagramUpstream, events: int) -> None:
        """The general handling of an upstream's readiness."""
        if events & FAILED and not self._upstream_error(session):
            return
        if events & (WRITE | ERROR) and session.pending and not self._flush_up(session):
            return
        if events & (READ | ERROR) and session.pending_reply is None:
            self._replies_from(session)

    def _upstream_error(self, session: DatagramUpstream) -> bool:
        """An ICMP error (port unreachable) or a unix peer gone: reading SO_ERROR clears it, so
        that an upstream we are not reading now does not report it forever.  False if the
        session ended because of it."""
        try:
            code = _nonblocking.socket_error(session.sock)
        except OSError as exc:
            code = exc.errno or errno.EIO
        if code == errno.ECONNREFUSED:
            self._refused(session)
        elif code:
            self.end(session, "target-error", system_reason(OSError(code, os.strerror(code))))
            return False
        return True

    def _flush_up(self, session: DatagramUpstream) -> bool:
        """Send the datagrams waiting for the target, in order; False if some still wait."""
        waiting = session.pending
        session.pending = []
        for index, (data, seg, count) in enumerate(waiting):
            if not self._send_up(session, data, seg, count):
                # _send_up put this one back last: keep the rest after it, in order
                session.pending.extend(waiting[index + 1 :])
                return False
        if session in self.blocked:
            self.blocked.discard(session)
            if not self.blocked and self._accepting:
                self._listen_for()
                self._receive()  # the listener may hold datagrams already
                self._listen_for()
        self.watch(session)
        return True

    # -- target → client

    def _replies_from(self, session: DatagramUpstream) -> None:
        """Read what the target sent this session and pass it to the sender: a lone datagram
        straight from the buffer, or runs of consecutive non-empty datagrams of one size (the
        last may be shorter) in one send each (UDP GSO), a run sent as soon as the next
        datagram does not join it."""
        view = self._buffer
        limit = len(view)
        raw = not trace.enabled()
        recv = session.sock.recv_into if raw else traced_recv(session.sock)
        reads = session.read_mode.limit()
        send = self.replies.send
        gso = self.replies.gso
        run = bytearray()
        seg = count = got = 0
        grows = False  # the run may take the next datagram
        for _turn in range(reads):
            try:
                size = recv(view, 0, socket.MSG_TRUNC)
            except BlockingIOError:
                break
            except OSError as exc:
                if self._reply_error(session, exc):
                    continue
                return
            got += 1
            if size > limit:
                self._truncated(self.target_label, size, "target")
                continue
            if reads == 1:
                self._reply_one(session, view[:size], raw)
                return
            if grows and 0 < size <= seg and count < GSO_SEGMENTS and len(run) + size <= GSO_BYTES:
                run += view[:size]
                count += 1
                grows = size == seg  # a shorter datagram ends its run
                continue
            if count and not send(session, run, seg, count):
                # This datagram is read already and may not be lost: it goes right after them.
                session.held = bytes(view[:size])
                self.watch(session)
                count = 0
                break
            run, seg, count, grows = bytearray(view[:size]), size, 1, gso
        self._replies_read(session, got, reads, run, seg, count)

    def _reply_error(self, session: DatagramUpstream, exc: OSError) -> bool:
        """Reading the upstream failed: True to read on (ICMP: the target's port is closed, and
        this datagram was refused), False if the session ended."""
        if exc.errno == errno.ECONNREFUSED:
            self._refused(session)
            return True
        self.end(session, "target-error", system_reason(exc))
        return False

    def _reply_one(self, session: DatagramUpstream, data: memoryview, raw: bool) -> None:
        """The one datagram of a single read, straight from the receive buffer."""
        self.table.touch(session.peer, time.monotonic())
        peer = session.peer
        replies = self.replies
        if raw and peer is not None and not replies.waiting:
            try:  # the request/response path, inline: one sendto, counted
                self.listener.sendto(data, peer)
            except OSError:
                pass  # the general path below decides: wait, or drop and count
            else:
                size = len(data)
                session.to_client += size
                session.datagrams_to_client += 1
                stats = self.stats
                stats.to_client += size
                stats.datagrams_to_client += 1
                return
        if not replies.send(session, data):
            self.watch(session)  # stop reading until the reply is out

    def _replies_read(
        self, session: DatagramUpstream, got: int, reads: int, run: Buffer, seg: int, count: int
    ) -> None:
        """After a batch of ``got`` replies out of ``reads``: the read mode learns, the session
        was active, and the last run goes (or waits, and the upstream is not read meanwhile)."""
        session.read_mode.got(got, reads)
        if got:
            self.table.touch(session.peer, time.monotonic())
        if count and not self.replies.send(session, run, seg, count):
            self.watch(session)

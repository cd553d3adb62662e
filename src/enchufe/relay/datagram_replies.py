"""Replies to the senders of a datagram listener: sent at once, or kept in order until they may go.

Every session of a datagram relay answers its sender through the one listener socket.  When the
listener refuses a reply (EAGAIN), that session's reply waits here, and the session stops reading
its upstream until it is out (:meth:`Replies.flush`, then ``on_sent``): at most one batch per
session waits in the relay, and replies leave in the order they came.  A sender that cannot be
answered (a unix sender's path gone, or an unnamed one) loses its reply, counted as dropped.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import socket
import struct
import termios
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._backoff import Backoff
from .._calls import send_datagram
from ..errors import reason as system_reason
from ..i18n import _
from .datagram_io import NO_GSO, Buffer, send_datagrams
from .engine import Loop, Timer
from .stats import Stats

if TYPE_CHECKING:
    from .datagram_listener import Upstream

__all__ = ["Replies"]


class Replies:
    """The replies of one listener's sessions (see the module).

    ``error(message)`` reports a reply that could not be sent (it is dropped and counted);
    ``on_sent(session)`` says that a session's waiting replies went out; ``on_change()`` that
    whether the listener should wait for EPOLLOUT may have changed (:meth:`wants_writable`).
    """

    def __init__(
        self,
        loop: Loop,
        listener: socket.socket,
        stats: Stats,
        *,
        error: Callable[[str], None],
        on_sent: Callable[[Upstream], None],
        on_change: Callable[[], None],
    ) -> None:
        self.loop = loop
        self.listener = listener
        self.stats = stats
        self._error = error
        self._on_sent = on_sent
        self._on_change = on_change
        #: sessions whose reply waits for the listener, in order
        self.waiting: collections.deque[Upstream] = collections.deque()
        #: set while waiting replies are retried on a timer instead of on EPOLLOUT
        self.timer: Timer | None = None
        #: pauses before replies a unix receiver's full queue refused are tried again
        self._backoff = Backoff()
        self._closed = False
        #: UDP GSO for replies (the listener is UDP, and the kernel has not refused it)
        self.gso = listener.family != socket.AF_UNIX

    def wants_writable(self) -> bool:
        """Replies wait for EPOLLOUT on the listener (not for the retry timer)."""
        return bool(self.waiting) and self.timer is None

    def send(self, session: Upstream, data: Buffer, seg: int = 0, count: int = 1) -> bool:
        """Send ``data`` to the session's sender (``count`` datagrams of ``seg`` bytes, the last
        maybe shorter, when ``count`` > 1); False if it has to wait (the caller stops reading its
        upstream until ``on_sent``)."""
        if session.peer is None:
            self.stats.dropped += count  # an unnamed unix sender: no address to answer
            return True
        if not self.waiting:  # nobody waits already (else: keep the order)
            try:
                sent = self._sendto(session, data, seg, count)
            except BlockingIOError:
                pass
            else:
                if sent:
                    self.delivered(session, len(data), count)
                return True
        session.pending_reply = (bytes(data), seg, count)
        self.waiting.append(session)
        if len(self.waiting) == 1:  # refused just now (else it waits behind others already)
            self._refused()
        return False

    def delivered(self, session: Upstream, size: int, count: int = 1) -> None:
        """Count ``count`` replies of ``size`` bytes in all as sent to the session's sender."""
        session.to_client += size
        session.datagrams_to_client += count
        self.stats.to_client += size
        self.stats.datagrams_to_client += count

    def _sendto(self, session: Upstream, data: Buffer, seg: int, count: int) -> bool:
        """One send of replies to the sender: True if sent, False if dropped (counted), or
        sent one by one and counted there (:meth:`_sendto_each`); BlockingIOError if the
        listener cannot take them now."""
        try:
            send_datagrams(self.listener, data, seg, count, session.peer, self.gso)
        except BlockingIOError:
            raise
        except OSError as exc:
            if count > 1 and exc.errno in NO_GSO:
                self.gso = False  # the kernel or the route cannot: one datagram at a time
                return self._sendto_each(session, data, seg)
            self.stats.dropped += count
            self._error(
                _("cannot answer {peer}: {reason}").format(peer=session.label, reason=system_reason(exc))
            )
            return False
        return True

    def _sendto_each(self, session: Upstream, data: Buffer, seg: int) -> bool:
        """The replies of a run one by one (GSO refused).  What went out is counted as
        delivered here, each one that could not go as dropped, with one line for the first
        error (as :meth:`_sendto` says of a whole run); False, so that the caller counts nothing
        more.  BlockingIOError if the first one cannot go now (the whole run waits); one later
        refused cannot wait behind those sent: it is dropped with the rest, counted."""
        view = memoryview(data)
        sent = sent_bytes = dropped = 0
        failure: OSError | None = None
        for start in range(0, len(view), seg):
            chunk = view[start : start + seg]
            try:
                send_datagram(self.listener, chunk, session.peer)
            except BlockingIOError:
                if start == 0:
                    raise
                dropped += 1
                failure = failure or OSError(errno.EAGAIN, _("the listener's send buffer is full"))
            except OSError as exc:
                dropped += 1
                failure = failure or exc
            else:
                sent += 1
                sent_bytes += len(chunk)
        if sent:
            self.delivered(session, sent_bytes, sent)
        if failure is not None:
            self.stats.dropped += dropped
            self._error(
                _("cannot answer {peer}: {reason}").format(peer=session.label, reason=system_reason(failure))
            )
        return False

    def flush(self) -> None:
        """Send the waiting replies, in order, until the listener refuses one again."""
        waiting = self.waiting
        while waiting:
            session = waiting[0]
            pending = session.pending_reply
            if pending is not None:
                data, seg, count = pending
                try:
                    sent = self._sendto(session, data, seg, count)
                except BlockingIOError:
                    self._refused()
                    return
                if sent:
                    self.delivered(session, len(data), count)
                session.pending_reply = None
                held = session.held
                if held is not None:  # read behind the refused one: it goes before anything new
                    session.held = None
                    session.pending_reply = (held, len(held), 1)
                    continue
            waiting.popleft()
            self._on_sent(session)
        self._backoff.reset()

    def forget(self, session: Upstream) -> None:
        """The session ended: its waiting replies are not sent (the caller counted them)."""
        if session.pending_reply is not None:
            session.pending_reply = session.held = None
            with contextlib.suppress(ValueError):
                self.waiting.remove(session)

    def close(self) -> None:
        """The listener closed: no retry any more."""
        self._closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _refused(self) -> None:
        """A reply was refused (EAGAIN): wait until it may go.

        Usually that is EPOLLOUT on the listener, once its send buffer has room again.  But a
        unix receiver whose queue is full (a sender it is not connected to is held to its queue
        length) refuses too, and the kernel reports an unconnected unix datagram socket writable
        whenever its own send buffer has room, whatever the receiver's queue: waiting for EPOLLOUT
        would wake the relay at once, again and again, for as long as the receiver does not read.
        Then the replies are tried again on a timer instead, backing off (:class:`Backoff`,
        1 ms doubling up to 50 ms): a few attempts a second cost nothing.
        """
        if self.timer is None and self._room_to_send():
            self.timer = self.loop.call_later(self._backoff.next(), self._retry)
        self._on_change()

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

    def _retry(self) -> None:
        self.timer = None
        if not self._closed:
            self.flush()
            self._on_change()

"""Stream LISTEN → datagram TARGET with ``--frame``: each client stream carries datagrams.

::

    enchufe relay udp://:5353 tcp://tunnel:9000 --frame      # one end: FramedDatagramRelay
    enchufe relay tcp://:9000 udp://dns:53 --frame           # other end: this module

Session model: every accepted stream gets its own upstream datagram socket, connected to TARGET
(a unixgram one is auto-bound, so the target can answer).  The stream carries length-prefixed
messages (:mod:`enchufe.framing`, a 4-byte big-endian length then the payload): each message is
sent to the target as one datagram, and each datagram the target sends back is written to the
stream as one message.  On the other end, :class:`~enchufe.relay.datagram.FramedDatagramRelay`
opens one such stream per datagram sender, so a sender's datagrams keep their own upstream socket
(and their replies) through the tunnel.

A session ends when the client's stream breaks (reset, a malformed frame: a length above
``--max-datagram``), or after ``--idle-timeout`` seconds (default 60, as for datagram sessions)
without a datagram either way.  The client's EOF alone does not end it: a client may send its
requests, shut down its write side and wait for the answers, which are still delivered; the
session then ends at the idle timeout with an orderly close.

Backpressure: a message the target cannot take now (EAGAIN) stops the reading of the stream
until it can; replies are buffered for the stream up to :data:`OUT_HIGH` bytes, beyond which the
upstream socket is not read (its kernel queue then drops, as UDP does).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from typing import Any

from .. import _calls, _nonblocking
from .._calls import new_socket, recv_datagram_into, send_datagram
from .._unixfiles import SocketFile, autobind_unix
from ..errors import ProtocolError, translate
from ..errors import reason as system_reason
from ..framing import HEADER, RAISE_LIMIT_HINT, Framer
from ..i18n import N_, _
from .datagram_io import BATCH, enlarge_buffers
from .engine import ERROR, FAILED, READ, WRITE
from .session import OPEN, RelaySession, pending_error
from .stream import StreamRelay
from .tunnel import STREAM_CHUNK  # the same reads of a stream as the other end's

__all__ = ["OUT_HIGH", "FramedStreamRelay", "FramedStreamSession"]

#: Bytes of framed replies kept for a slow client stream before the upstream is no longer read.
OUT_HIGH = 256 * 1024


class FramedStreamRelay(StreamRelay):
    """Stream listener whose clients each get an upstream datagram socket (``--frame``)."""

    def __init__(self, *args: Any, max_datagram: int, **options: Any) -> None:
        super().__init__(*args, **options)
        self.max_datagram = max_datagram
        self.buffer = memoryview(bytearray(max(max_datagram, STREAM_CHUNK)))

    def make_session(self, conn: socket.socket, peer: Any, session_id: int) -> Any:
        return FramedStreamSession(self, conn, peer, session_id)

    def stop_accepting(self) -> None:
        """Stop accepting; sessions whose client has finished sending end now (a drain waits for
        clients still sending, not for answers that may never come)."""
        super().stop_accepting()
        for session in list(self.sessions):
            if session.client_eof:
                session.finish()


class FramedStreamSession(RelaySession):
    """One client stream ↔ one upstream datagram socket."""

    __slots__ = (
        "client",
        "client_eof",
        "client_fd",
        "client_mask",
        "datagrams_to_client",
        "datagrams_to_target",
        "framer",
        "out",
        "owned",
        "pending",
        "refused",
        "up_fd",
        "up_mask",
        "upstream",
    )

    relay: FramedStreamRelay

    def __init__(self, relay: FramedStreamRelay, conn: socket.socket, peer: Any, session_id: int) -> None:
        super().__init__(relay, conn, peer, session_id)
        self.client = conn
        self.client_fd = conn.fileno()
        self.upstream: socket.socket | None = None
        self.up_fd = -1
        self.owned: SocketFile | None = None
        self.framer = Framer(max_size=relay.max_datagram)
        self.out = bytearray()
        #: a message the target could not take yet
        self.pending: bytes | None = None
        self.client_eof = False
        self.refused = False
        self.client_mask = -1
        self.up_mask = -1
        self.state = OPEN  # nothing to wait for: a datagram socket is connected at once
        self.datagrams_to_target = self.datagrams_to_client = 0

    def start(self) -> None:
        relay = self.relay
        self._announce_accept()
        assert relay.resolver is not None
        try:
            target = relay.resolver.targets()[0]
            sock = new_socket(target.family, socket.SOCK_DGRAM)
        except Exception as exc:
            self._fail_target(
                str(exc) if not isinstance(exc, OSError) else str(translate(exc, "open a socket"))
            )
            return
        self.upstream = sock
        self.up_fd = sock.fileno()
        try:
            sock.setblocking(False)
            if target.family == socket.AF_UNIX:
                self.owned = autobind_unix(sock)
            enlarge_buffers(sock)
            _calls.connect(sock, target.sockaddr)
        except OSError as exc:
            self._fail_target(str(translate(exc, f"connect to {relay.target_label}")))
            return
        loop = relay.loop
        loop.register(self.client_fd, 0, self._on_client, self.crashed)
        self.client_mask = 0
        loop.register(self.up_fd, 0, self._on_upstream, self.crashed)
        self.up_mask = 0
        if relay.events.wants(1):
            relay.events(
                "connect",
                _("#{id} carries framed datagrams to {target}").format(id=self.id, target=relay.target_label),
                level=1,
                id=self.id,
                target=relay.target_label,
                seconds=0.0,
            )
        self._arm_idle()
        self._update()

    # -- readiness

    def _update(self) -> None:
        if self.state != OPEN:
            return
        loop = self.relay.loop
        reading = not self.client_eof and self.pending is None
        mask = (READ if reading else 0) | (WRITE if self.out else 0)
        if mask != self.client_mask:
            self.client_mask = mask
            loop.modify(self.client_fd, mask)
        mask = (READ if len(self.out) < OUT_HIGH else 0) | (WRITE if self.pending is not None else 0)
        if mask != self.up_mask:
            self.up_mask = mask
            loop.modify(self.up_fd, mask)

    def _on_client(self, events: int) -> None:
        if self.state != OPEN:
            return
        if events & FAILED:
            code = pending_error(self.client)
            if code:
                self._reset("client-reset", system_reason(OSError(code, os.strerror(code))))
                return
        if events & (WRITE | ERROR) and self.out and not self._flush():
            return
        if events & (READ | ERROR) and not self.client_eof and self.pending is None:
            self._read_client()
        self._update()

    def _read_client(self) -> None:
        view = self.relay.buffer[:STREAM_CHUNK]
        try:
            n = _nonblocking.read_into(self.client_fd, view)
        except BlockingIOError:
            return
        except OSError as exc:
            self._reset("client-reset", system_reason(exc))
            return
        if not n:
            self.client_eof = True
            try:
                self.framer.feed_eof()
            except ProtocolError as exc:
                self._reset("protocol-error", str(exc))
                return
            if self.relay.events.wants(2):
                self.relay.events(
                    "eof",
                    _(
                        "#{id} client finished sending after {count} messages; "
                        "answers are still delivered until the idle timeout"
                    ).format(id=self.id, count=self.datagrams_to_target),
                    level=2,
                    id=self.id,
                    side="client",
                    bytes=self.to_target,
                )
            if not self.relay.accepting:  # draining: nobody waits for late answers
                self.finish()
            return
        try:
            self.framer.feed(view[:n])
        except ProtocolError:
            # The messages before the bad header still go; then next_message() raises it again.
            self.client_eof = True  # read nothing more from a stream that broke the framing
        self._send_messages()

    def _send_messages(self) -> None:
        """Send the message waiting (if any), then the ones the client's bytes hold, until the
        target's socket would block (the message kept in :attr:`pending`) or none is left."""
        upstream = self.upstream
        assert upstream is not None
        framer = self.framer
        while True:
            message = self.pending
            if message is None:
                try:
                    message = framer.next_message()
                except ProtocolError as exc:
                    self._reset("protocol-error", str(exc))
                    return
                if message is None:
                    return
            if not self._forward(upstream, message):
                self.pending = message
                return
            self.pending = None
            self._last_active = time.monotonic()

    def _forward(self, upstream: socket.socket, message: bytes) -> bool:
        """One message from the client to the target (counted when sent): False if it has to
        wait.  (``--fault`` relays put their schedule here.)"""
        if not self._send_one(upstream, message):
            return False
        self.count_to_target(len(message))
        return True

    def count_to_target(self, size: int) -> None:
        stats = self.relay.stats
        self.to_target += size
        self.datagrams_to_target += 1
        stats.to_target += size
        stats.datagrams_to_target += 1

    def _send_one(self, upstream: socket.socket, message: bytes) -> bool:
        """Send one datagram: False if it has to wait (EAGAIN); dropped (counted) on errors."""
        for attempt in (1, 2):
            try:
                send_datagram(upstream, message, None)
            except BlockingIOError:
                return False
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED and attempt == 1:
                    self._refused()
                    continue
                self._dropped(len(message), exc)
                return True
            return True
        return True

    def _dropped(self, size: int, exc: OSError) -> None:
        """A message the target's socket would not send (too large for one datagram there, no
        buffer): dropped, counted, and said."""
        relay = self.relay
        relay.stats.dropped += 1
        reason = system_reason(exc)
        if exc.errno == errno.EMSGSIZE:
            reason = _("{reason}: larger than one datagram to {target} can be").format(
                reason=reason, target=relay.target_label
            )
        shown = self.peer_label()
        relay.events.notice(
            N_("dropped messages"),
            "dropped",
            _("enchufe: dropped a message of {size} bytes from {peer} #{id}: {reason}").format(
                size=size, peer=shown, id=self.id, reason=reason
            ),
            id=self.id,
            peer=shown,
            target=relay.target_label,
            size=size,
            error=reason,
        )

    def _refused(self) -> None:
        relay = self.relay
        relay.stats.dropped += 1
        if not self.refused:
            self.refused = True
            message = _("{target} refused a datagram from #{id} (nobody listens there?)").format(
                target=relay.target_label, id=self.id
            )
            relay.events.notice(
                N_("datagram errors"),
                "error",
                f"enchufe: {message}",
                id=self.id,
                target=relay.target_label,
                error=message,
            )

    def _on_upstream(self, events: int) -> None:
        if self.state != OPEN:
            return
        upstream = self.upstream
        assert upstream is not None
        if events & FAILED:
            code = pending_error(upstream)
            if code == errno.ECONNREFUSED:
                self._refused()
            elif code:
                self._reset("target-error", system_reason(OSError(code, os.strerror(code))))
                return
        if events & (WRITE | ERROR) and self.pending is not None:
            self._send_messages()
            if self.state != OPEN:
                return
        if events & (READ | ERROR) and len(self.out) < OUT_HIGH:
            self._read_upstream(upstream)
            if self.state != OPEN:
                return
        self._update()

    def _read_upstream(self, upstream: socket.socket) -> None:
        relay = self.relay
        view = relay.buffer[: relay.max_datagram]
        limit = len(view)
        stats = relay.stats
        got = False
        for _turn in range(BATCH):
            if len(self.out) >= OUT_HIGH:
                break
            try:
                size, _sender = recv_datagram_into(upstream, view)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED:
                    self._refused()
                    continue
                self._reset("target-error", system_reason(exc))
                return
            if size > limit:
                stats.truncated += 1
                relay.events.notice(
                    N_("oversized datagrams"),
                    "truncated",
                    _(
                        "enchufe: dropped a datagram of {size} bytes from {peer}: larger than "
                        "--max-datagram {limit}"
                    ).format(size=size, peer=relay.target_label, limit=limit),
                    peer=relay.target_label,
                    size=size,
                    side="target",
                    max_datagram=limit,
                )
                continue
            self._reply(view[:size])
            got = True
        if got:
            self._last_active = time.monotonic()
            self._flush()

    def _reply(self, data: memoryview | bytes) -> None:
        """One datagram from the target, framed for the client (written by :meth:`_flush`).
        (``--fault`` relays put their schedule here.)"""
        size = len(data)
        self.out += HEADER.pack(size)
        self.out += data
        stats = self.relay.stats
        self.to_client += size
        self.datagrams_to_client += 1
        stats.to_client += size
        stats.datagrams_to_client += 1

    def _flush(self) -> bool:
        """Write what is buffered for the client; False if the session ended."""
        try:
            _nonblocking.write_out(self.client_fd, self.out)
        except OSError as exc:
            self._reset("client-reset", system_reason(exc))
            return False
        return True

    # -- timers and ending

    def _idle_expired(self, timeout: float) -> None:
        self.relay.stats.expired += 1
        self._flush()
        if self.state == OPEN:
            self._end(
                "idle",
                error=_("no datagram either way for {seconds} s (--idle-timeout)").format(
                    seconds=f"{timeout:g}"
                ),
            )

    def finish(self) -> None:
        """End in order: what is buffered for the client is written, then the stream closes."""
        if self.state == OPEN and self._flush() and self.state == OPEN:
            self._end("done")

    def _reset(self, reason: str, error: str) -> None:
        relay = self.relay
        relay.stats.reset += 1
        if reason == "protocol-error":  # the client's fault, and it would go unseen without -v
            # The relay's name for the library's max_size: the option to raise, on both ends.
            error = error.replace(_(RAISE_LIMIT_HINT), _("raise --max-datagram on both relays if it is"))
            shown = self.peer_label()
            relay.events.notice(
                N_("framing errors"),
                "protocol-error",
                _("enchufe: closed {peer} #{id}: it broke the framing: {error}").format(
                    peer=shown, id=self.id, error=error
                ),
                id=self.id,
                peer=shown,
                error=error,
            )
        self._end(reason, abortive=True, error=error)

    def _release(self, abortive: bool) -> None:
        loop = self.relay.loop
        loop.forget(self.client_fd)
        with contextlib.suppress(OSError):
            if abortive:
                _nonblocking.abort(self.client)
            else:
                _calls.close(self.client)
        if self.upstream is not None:
            loop.forget(self.up_fd)
            with contextlib.suppress(OSError):
                _calls.close(self.upstream)
        if self.owned is not None:
            self.owned.release()
            self.owned = None

    def _close_summary(self) -> tuple[str, dict[str, int]]:
        summary = _(
            "{datagrams_to_target} datagrams ({to_target} bytes) to target, "
            "{datagrams_to_client} ({to_client} bytes) to client"
        ).format(
            datagrams_to_target=self.datagrams_to_target,
            to_target=self.to_target,
            datagrams_to_client=self.datagrams_to_client,
            to_client=self.to_client,
        )
        counts = {
            "datagrams_to_target": self.datagrams_to_target,
            "datagrams_to_client": self.datagrams_to_client,
        }
        return summary, counts

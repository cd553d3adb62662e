"""Datagram LISTEN → stream TARGET (``--frame``): each sender's datagrams through its own stream.

::

    enchufe relay udp://:5353 tcp://tunnel:9000 --frame      # this module: FramedDatagramRelay
    enchufe relay tcp://:9000 udp://dns:53 --frame           # other end: relay.framed

A session per sender (:mod:`enchufe.relay.datagram_listener`) whose upstream is a stream
connection to TARGET: each datagram travels on it as one length-prefixed message
(:mod:`enchufe.framing`), and every message coming back is sent to the sender as one datagram.
Datagrams that come while the stream connects wait (up to :data:`FRAMED_BACKLOG` bytes, as do
those a slow stream has not taken); more are dropped and counted, as a full UDP queue would.  A
stream that does not connect within the connect timeout, resets, closes or breaks the framing
ends its session.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import socket
import time
from typing import Any

from .. import _calls, _nonblocking
from .._calls import new_socket
from .._resolve import Target
from ..errors import ProtocolError, translate
from ..errors import reason as system_reason
from ..framing import HEADER, Framer
from ..i18n import N_, _
from .datagram_listener import DatagramListener, Key, Upstream, describe_sender
from .engine import ERROR, FAILED, READ, WRITE, Loop, Timer
from .session import pending_error

__all__ = ["FRAMED_BACKLOG", "STREAM_CHUNK", "FramedDatagramRelay"]

#: Bytes of framed datagrams a tunnel (``--frame``) session keeps for its stream while the stream
#: is connecting or slow; more datagrams are dropped (counted), as a full UDP queue would.
FRAMED_BACKLOG = 1024 * 1024

#: Bytes a tunnel session reads from its stream at once.
STREAM_CHUNK = 65536


class Tunnel(Upstream):
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


class FramedDatagramRelay(DatagramListener):
    """Datagram LISTEN → stream TARGET (``--frame``): a stream connection per sender, each
    datagram one length-prefixed message on it, each message back one datagram to the sender."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self._stream_buffer = memoryview(bytearray(STREAM_CHUNK))

    def _open(self, key: Key) -> Upstream:
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
            raise OSError(status, _("the target's backlog is full"))
        label = describe_sender(self.listener.family, key)
        session = Tunnel(next(self._ids), key, label, sock, self.max_datagram)
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

    def _watch(self, session: Tunnel) -> None:
        if not session.connected:
            mask = WRITE
        else:
            mask = (READ if session.pending_reply is None else 0) | (WRITE if session.out else 0)
        if mask != session.mask:
            session.mask = mask
            self.loop.modify(session.fd, mask)

    def _connect_timed_out(self, session: Tunnel) -> None:
        session.timer = None
        if not session.connected:
            self._failed(
                session, _("no answer within {seconds} s").format(seconds=f"{self.connect_timeout:g}")
            )

    def _failed(self, session: Tunnel, why: str) -> None:
        self.stats.failed += 1
        self.stats.dropped += session.queued  # queued, never carried
        session.queued = session.queued_bytes = 0
        message = _("cannot connect to {target} for {peer}: {why}").format(
            target=self.target_label, peer=session.label, why=why
        )
        self._error(message, id=session.id, peer=session.label)
        self.end(session, "target-failed", why)

    def _forward(self, session: Upstream, data: memoryview, raw: bool) -> None:
        """One message on the session's stream (never waits: a stream that does not keep up
        makes the datagrams beyond :data:`FRAMED_BACKLOG` drop)."""
        assert isinstance(session, Tunnel)
        if len(session.out) + len(data) + HEADER.size > FRAMED_BACKLOG:
            self.stats.dropped += 1  # the stream is not keeping up: drop, as a full queue would
            return
        session.out += HEADER.pack(len(data))
        session.out += data
        if session.connected:
            self._count(session, 1, len(data))
            self._send(session)
        else:
            session.queued += 1
            session.queued_bytes += len(data)

    def _count(self, session: Tunnel, datagrams: int, size: int) -> None:
        session.to_target += size
        session.datagrams_to_target += datagrams
        self.stats.to_target += size
        self.stats.datagrams_to_target += datagrams

    def _send(self, session: Tunnel) -> None:
        try:
            _nonblocking.write_out(session.fd, session.out)
        except OSError as exc:
            self._reset(session, system_reason(exc))
        self._watch(session)

    def _on_stream(self, session: Tunnel, events: int) -> None:
        if not session.connected:
            self._on_connect(session)
            return
        if events & FAILED and not self._stream_ok(session):
            return
        if events & (WRITE | ERROR) and session.out:
            self._send(session)
            if not self.current(session):
                return
        if events & (READ | ERROR) and session.pending_reply is None:
            self._read(session)

    def _stream_ok(self, session: Tunnel) -> bool:
        """The stream reported an error: False if it is a real one (the session ends, reset)."""
        code = pending_error(session.sock)
        if code:
            self._reset(session, system_reason(OSError(code, os.strerror(code))))
            return False
        return True

    def _reset(self, session: Tunnel, why: str) -> None:
        """The stream broke (reset, or an error reading or writing it): the session ends."""
        self.stats.reset += 1
        self.end(session, "target-reset", why)

    def _on_connect(self, session: Tunnel) -> None:
        """The stream's connect finished: the datagrams queued meanwhile go, or it failed."""
        code = pending_error(session.sock)
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

    def _read(self, session: Tunnel) -> None:
        view = self._stream_buffer
        try:
            n = _nonblocking.read_into(session.fd, view)
        except BlockingIOError:
            return
        except OSError as exc:
            self._reset(session, system_reason(exc))
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

    def _framing_error(self, session: Tunnel, error: str) -> None:
        self.events.notice(
            N_("framing errors"),
            "protocol-error",
            _("enchufe: closed session #{id} {peer}: {target} broke the framing: {error}").format(
                id=session.id, peer=session.label, target=self.target_label, error=error
            ),
            id=session.id,
            peer=session.label,
            target=self.target_label,
            error=error,
        )

    def deliver(self, session: Tunnel) -> None:
        """Send the messages the framer holds to the sender, one datagram each."""
        framer = session.framer
        while True:
            try:
                message = framer.next_message()
            except ProtocolError as exc:
                self._framing_broken(session, str(exc))
                return
            if message is None:
                break
            if not self.replies.send(session, message):
                break
        self._watch(session)

    def _framing_broken(self, session: Tunnel, error: str) -> None:
        """The target's stream broke the framing: said, and the session ends (reset)."""
        self.stats.reset += 1
        self._framing_error(session, error)
        self.end(session, "protocol-error", error)

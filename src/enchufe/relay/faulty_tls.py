"""Faults on purpose through a TLS end (``enchufe relay tls://… tcp://… --fault …``): the
faults act on the plaintext, after the relay decrypted what a TLS side sent and before it
encrypts what goes to one, so a TLS gateway can be slow, sliced, cut or reset as a plain relay.

::

    FaultyTLSStreamSession (the handshakes of a TLSStreamSession, the faults of a
      │                     FaultyStreamSession)
      ├─ up:   TLSFaultPump(client → target)   decrypt · schedule · encrypt
      └─ down: TLSFaultPump(target → client)

The choice is made once per session (:class:`~enchufe.relay.faulty.FaultyStreamRelay` makes
this session only when an end is TLS): a relay without ``--fault`` runs the TLS pump
(:mod:`.tls_pump`) untouched, and a plain relay with faults never loads this module.  Both
directions go through a :class:`TLSFaultPump`, the one with no toxic too: each pump sends
everything its TLS peer gets (:class:`~enchufe.relay.tls_pump.TLSLink`'s sender), so a fault's
close can end both TLS streams in order.

The ends: the schedule's EOF is close_notify towards a TLS side (``shutdown(SHUT_WR)`` towards a
plain one), as without faults; a fault's close (``limit_data``, ``timeout``) sends close_notify
to each TLS peer after what waits for it, in one attempt, then closes (but to a client whose
bytes an upstream fault cut: it is reset, as a plain client is); a fault's reset
(``reset_peer``) resets both peers, no close_notify.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from typing import Any

from ..errors import TLSRefused, TLSTruncated
from ..faults import RESET, StreamSchedule
from .faulty import FaultPump, FaultyStreamRelay, FaultyStreamSession
from .sides import Side
from .tls import TLSStreamSession
from .tls_pump import CHUNK, TLSLink, _as_reset

__all__ = ["FaultyTLSStreamSession", "TLSFaultPump"]


class TLSFaultPump(FaultPump):
    """A :class:`~enchufe.relay.faulty.FaultPump` whose ``src`` or ``dst`` (or both) speaks TLS:
    the schedule is fed plaintext (decrypted from ``src_link``'s records) and what it lets go is
    encrypted for ``dst_link`` when it is due.  :attr:`_out` holds the bytes for ``dst`` (records
    towards a TLS side), counted as the plaintext they carry once ``dst`` took them whole.

    A truncated TLS stream (no close_notify) or a broken record from ``src`` is a reset of the
    session (``OSError``, :attr:`failed_on` ``"read"``), as without faults."""

    __slots__ = ("_closing", "_plain", "_src_channel", "dst_link", "src_link")

    def __init__(
        self,
        src_fd: int,
        dst_fd: int,
        schedule: StreamSchedule,
        *,
        src_link: TLSLink | None,
        dst_link: TLSLink | None,
        **options: Any,
    ) -> None:
        self.src_link = src_link
        self.dst_link = dst_link
        self._src_channel = src_link.channel if src_link is not None else None
        #: the plaintext bytes :attr:`_out` carries (0 for TLS's own records: an answer, close_notify)
        self._plain = 0
        #: close_notify is queued: the direction is done once it is sent
        self._closing = False
        super().__init__(src_fd, dst_fd, schedule, **options)
        if dst_link is not None:
            dst_link.attach(self)

    def queue(self, data: bytes) -> None:
        """Send ``data`` (records ``dst``'s channel made: a key update's answer, close_notify)
        after what waits already."""
        self._out = memoryview(bytes(self._out) + data)

    def _read(self) -> bytes | None:
        """Plaintext from ``src``: ``None`` when nothing whole came, ``b""`` at its end."""
        channel = self._src_channel
        if channel is None:
            return super()._read()
        link = self.src_link
        assert link is not None
        while True:
            if channel.more:  # what the channel holds already first
                raw = None
            else:
                raw = super()._read()
                if raw is None:
                    return None
            try:
                data = channel.read(CHUNK) if raw is None else channel.receive(raw, CHUNK)
            except (TLSTruncated, TLSRefused) as exc:
                self.failed_on = "read"
                raise _as_reset(exc) from None
            if channel.outbox.pending:
                link.pull()
            if data is not None:
                return data

    def _wire(self, data: bytes) -> memoryview:
        self._plain = len(data)
        channel = self.dst_link.channel if self.dst_link is not None else None
        return memoryview(data if channel is None else channel.encrypt(data))

    def _sent(self, n: int) -> int:
        if self._out:
            return 0  # counted once the whole write is taken: only then is its plaintext known
        plain, self._plain = self._plain, 0
        self.held -= plain
        if self._closing:
            self.done = True
        return plain

    def _finish(self) -> None:
        """``src`` ended and everything before its end is delivered: close_notify towards a TLS
        ``dst`` (the direction is done once it is sent; the TCP stream stays open both ways)."""
        link = self.dst_link
        if link is None:
            super()._finish()
            return
        self._heap.clear()
        self._closing = True
        link.channel.close_write()
        link.pull()
        self.done = not self._out  # nothing to send: a close_notify went already

    def _refresh(self, follow: Any, now: float) -> None:
        super()._refresh(follow, now)
        self.held += self._plain - len(self._out)  # held counts plaintext, _out records

    def _arm(self) -> None:
        """Also a wake-up at once when ``src``'s channel holds plaintext epoll cannot see (read
        no more this round, with room for it): nothing else would ask for it."""
        super()._arm()
        channel = self._src_channel
        if (
            self._timer is None
            and channel is not None
            and channel.more
            and not (self._out or self.eof or self.stalled)
        ):
            self._timer_at = time.monotonic()
            self._timer = self._loop.call_later(0, self._due, self._on_error)

    def close_notify(self) -> None:
        """The session closes in order (a fault's close): close_notify after what waits for a
        TLS ``dst``, one attempt to send them (the session ends at once: best effort)."""
        link = self.dst_link
        if link is None or link.channel.write_closed:
            return
        with contextlib.suppress(OSError, TLSRefused, ssl.SSLError):
            link.channel.close_write()
            link.pull()
            self._write()

    def discard(self) -> None:
        """What waits is dropped, and the link forgets its sender (no cycle keeps either alive)."""
        super().discard()
        if self.dst_link is not None:
            self.dst_link.sender = None


class FaultyTLSStreamSession(FaultyStreamSession, TLSStreamSession):
    """A session with a TLS end whose directions go through the relay's faults (see the module)."""

    __slots__ = ()

    relay: FaultyStreamRelay
    tls_on_socket = False  # the fault pumps feed the channels bytes (receive, encrypt)

    def _pump(self, src: Side, dst: Side) -> Any:
        upstream = src is self.client
        schedule, follow = self._fault_schedule(upstream)
        client_link, target_link = self._client_link, self._target_link
        loop = self.relay.loop
        return TLSFaultPump(
            src.rfd,
            dst.wfd,
            schedule,
            src_link=client_link if upstream else target_link,
            dst_link=target_link if upstream else client_link,
            finish=lambda: dst.shut_write(loop),
            dst_is_pipe=not dst.is_socket,
            follow=follow,
            **self._pump_hooks(upstream),
        )

    def _fault_end(self, ending: int, name: str, pump: Any) -> None:
        if ending != RESET:
            for link in (self._client_link, self._target_link):
                if link is self._client_link and name == "upstream":
                    # What the client sent was cut: an orderly end would tell it all arrived.
                    # Closed with its bytes unread, its socket is reset, as a plain one is.
                    continue
                sender = link.sender if link is not None else None
                if isinstance(sender, TLSFaultPump):
                    sender.close_notify()
        super()._fault_end(ending, name, pump)

"""A SOCKS client's handshake on the relay's loop (``enchufe socks``), and the one timer that
bounds every client's.

::

    SocksHandshake._begin()                    the machine (enchufe._socks5_server), then
      _on_handshake()                          read once, answer; again when readable, until
        ├─ a request or a refusal: _handshake_done(step, None)   (the session's)
        └─ the client closed, failed, or did not take an answer: _handshake_done(None, why)
    HandshakeClock.sweep()                     the time is up: handshake_late(), the client cut

Behind a proxy (``--accept-proxy``) what came with the PROXY header is the handshake's first
bytes (read with it in one call, see :mod:`.prelude`).  The client is read once per wake-up
(a short read left nothing queued: the loop says when more comes), so no read is made only to
be told EAGAIN.  The first time a client has to wait, it is
watched as relaying will watch it (READ, the session's own handler, which hands its events here
while the handshake lasts), so that after the request nothing is asked of the loop until the
target is open.  And it joins :class:`HandshakeClock`: one timeout for all, so the clients wait
in the order of their deadlines, and one timer, due for the first, bounds them all instead of
a timer made and cancelled for every client.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from .._http_connect_server import HttpConnectServer, speaks_http
from .._socks5_server import Socks5Server, Step
from ..errors import reason as system_reason
from ..i18n import _
from .engine import READ
from .sides import UNREGISTERED
from .stream_session import StreamSession

if TYPE_CHECKING:
    from .engine import Loop, Timer
    from .socks import SocksRelay

__all__ = ["READ_SIZE", "HandshakeClock", "SocksHandshake"]

#: Bytes read at a time during the handshake: more than any message (see MAX_MESSAGE), and
#: what follows the request (a client that does not wait for the reply) goes to the target.
READ_SIZE = 4096


class HandshakeClock:
    """The clients whose handshake is not over (``waiting``: each with its deadline, in that
    order), and the timer due for the first of them."""

    __slots__ = ("loop", "timeout", "timer", "waiting")

    def __init__(self, loop: Loop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.waiting: dict[SocksHandshake, float] = {}
        self.timer: Timer | None = None

    def sweep(self) -> None:
        """The first handshake's time is up: every client whose time is up is cut (the others
        came later); the timer is armed again for the first of those left."""
        self.timer = None
        waiting = self.waiting
        now = time.monotonic()
        while waiting:
            session = next(iter(waiting))
            deadline = waiting[session]
            if deadline > now:
                self.timer = self.loop.call_later(deadline - now, self.sweep)
                return
            del waiting[session]
            try:
                session.handshake_late()
            except Exception as exc:  # that session's failure: the others are swept on
                self.loop.fail(exc, session.crashed)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class SocksHandshake(StreamSession):
    """A stream session that first reads and answers a SOCKS5 handshake (see the module);
    :meth:`_handshake_done` is what comes next.  ``_machine`` is set by the subclass's
    ``__init__`` (``None``: no call more a client) and by :meth:`_begin`; the subclass's
    ``_release`` takes a session that ends during its handshake off the clock."""

    __slots__ = ("_http", "_machine")

    relay: SocksRelay
    _machine: Socks5Server | HttpConnectServer | None
    #: Whether the client speaks HTTP CONNECT rather than SOCKS5: ``None`` until its first
    #: bytes came (:meth:`_begin`), which tell.
    _http: bool | None

    def _handshake_done(self, step: Step | None, why: str | None) -> None:
        """The handshake is over: its last step (a request or a refusal, its answer sent), or
        ``None`` and why (the client closed, failed, was too slow)."""
        raise NotImplementedError

    def _begin(self) -> None:
        self._announce_accept()
        self._http = None
        self._machine = Socks5Server(self.relay.policy.users)
        self._on_handshake(READ)  # what came with the connection (often the greeting)

    def _on_handshake(self, _events: int) -> None:
        """Read the client once, answer, and go on until its request or refusal; the first
        time it has to wait, it is watched and timed."""
        machine = self._machine
        if machine is None:
            return
        fd = self.client.rfd
        data: bytes | None = self._replay  # what came with a PROXY header (see .prelude)
        if data:
            self._replay = b""
        else:
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                data = None
            except OSError as exc:
                reason = system_reason(exc)
                self._handshake_over(None, _("its connection failed: {reason}").format(reason=reason))
                return
        if data is not None:
            if not data:
                self._handshake_over(None, _("it closed before {what}").format(what=machine.waiting_for))
                return
            if self._http is None:  # the first bytes tell the protocol (SOCKS5 begins with 5)
                self._http = data[0] != 5 and speaks_http(data)
                if self._http:
                    machine = self._machine = HttpConnectServer(self.relay.policy.users)
            step = machine.feed(data)
            send = step.send
            if send:
                try:  # an answer to a client that has sent only its handshake: it has room
                    whole = os.write(fd, send) == len(send)
                except OSError:
                    whole = False
                if not whole:
                    self._handshake_over(None, _("it does not take the server's answer"))
                    return
            if step.request is not None or step.refused is not None:
                self._machine = None  # _handshake_over, inlined: every client comes here
                if self.client.mask != UNREGISTERED:
                    self.relay.clock.waiting.pop(self, None)
                self._handshake_done(step, None)
                return
        client = self.client
        if client.mask == UNREGISTERED:
            relay = self.relay
            relay.loop.register(fd, READ, self._on_client, self.crashed)
            client.mask = READ
            clock = relay.clock
            clock.waiting[self] = time.monotonic() + clock.timeout
            if clock.timer is None:
                clock.timer = relay.loop.call_later(clock.timeout, clock.sweep)

    def _client_gone_while_connecting(self) -> None:
        """The client's events before its target is open: during the handshake, its bytes."""
        if self._machine is not None:
            self._on_handshake(READ)
            return
        super()._client_gone_while_connecting()

    def handshake_late(self) -> None:
        """The handshake's time is up (the clock's sweep): the client is cut."""
        machine = self._machine
        if machine is None:
            return
        why = _("waited {seconds} s for {what} (--handshake-timeout)").format(
            what=machine.waiting_for, seconds=f"{self.relay.clock.timeout:g}"
        )
        self._handshake_over(None, why)

    def _handshake_over(self, step: Step | None, why: str | None) -> None:
        """Stop timing the handshake, then :meth:`_handshake_done` (the client stays watched:
        see :meth:`_unwatch`)."""
        self._machine = None
        if self.client.mask != UNREGISTERED:
            self.relay.clock.waiting.pop(self, None)
        self._handshake_done(step, why)

    def _unwatch(self) -> None:
        """Stop watching the client (while its request's name is looked up; before the UDP
        association watches it its own way)."""
        client = self.client
        if client.mask != UNREGISTERED:
            self.relay.loop.unregister(client.rfd)
            client.mask = UNREGISTERED

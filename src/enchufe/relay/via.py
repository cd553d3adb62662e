"""A relay's stream target reached through proxy hops (``enchufe relay … --via URL``).

::

    session: connect (non-blocking) to the first proxy, as to any target
      └─ Tunnel: the hops' handshakes (enchufe.hops.Chain) on the relay's loop, never blocking:
           what the chain asks is written; the proxy's answer is peeked at and only the bytes a
           handshake used are taken, so whatever follows the last reply (a target that speaks
           first) stays in the kernel for the pumps (splice) or a TLS handshake
         then the session goes on as for a target it connected to directly

The whole of it, from the first connect to the last reply, is bounded by ``--connect-timeout``.
A proxy that says no (or closes, or breaks its protocol) ends that session only, as a target
that could not be reached: one rate-limited line naming the hop (its password masked) and the
proxy's reason.  A ``tls://`` TARGET's handshake then runs through the tunnel, its server name
the target's.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .. import _calls, trace
from .._via import PEEK_SIZE, named
from ..address import InetAddress
from ..errors import NetworkError, TimedOut, translate
from ..hops import Chain, Hop, HopRefused
from ..i18n import _
from .engine import READ, WRITE
from .readstage import ReadStage
from .sides import UNREGISTERED

if TYPE_CHECKING:
    from .engine import Loop, OnError
    from .stream_session import StreamSession

__all__ = ["Tunnel", "Via", "tunnel_to_target"]


class Via:
    """The hops of a relay's target, first hop first.  Sessions connect to the first proxy (the
    relay's resolver resolves its name, as a target's); the target's name is the last proxy's
    to resolve."""

    __slots__ = ("hops",)

    def __init__(self, hops: Sequence[Hop]) -> None:
        self.hops = tuple(hops)

    def connecting(self) -> None:
        """``--trace``: a session connects to the first proxy (as ``connect --via`` says it)."""
        if trace.enabled():
            first = self.hops[0]
            trace.emit(
                _("via {hop}: connect to the proxy at {address}").format(hop=first, address=first.hostport)
            )

    def label(self) -> str:
        """The first proxy, as connect failures name it."""
        return _("the proxy {hop}").format(hop=self.hops[0])

    def routed(self, target: str) -> tuple[str, dict[str, str]]:
        """``target`` as a line names it (``tcp://db:5432 via socks5://…, http://…``, as ``connect
        --via`` says it; passwords masked), and the event field that names the hops."""
        hops = ", ".join(str(hop) for hop in self.hops)
        return f"{target} {_('via {hops}').format(hops=hops)}", {"via": hops}

    def tunnel(
        self,
        loop: Loop,
        sock: socket.socket,
        target: InetAddress,
        deadline: float,
        done: Callable[[NetworkError | None], None],
        on_error: OnError,
    ) -> Tunnel:
        """The handshakes towards ``target`` over ``sock`` (connected to the first proxy), to
        be :meth:`~Tunnel.start`-ed; ``done(None)`` once open, ``done(error)`` if refused or
        not open by ``deadline`` (monotonic seconds)."""
        chain = Chain(self.hops, target.host, target.port)
        return Tunnel(loop, sock, chain, deadline, done, on_error)


class Tunnel(ReadStage):
    """The hops' handshakes over ``sock``, driven by its readiness (see the module).

    ``done`` is given ``None`` once the tunnel is open, else the error that names the hop: the
    proxy's refusal (:class:`~enchufe.hops.HopRefused`), the connection's failure, or
    :class:`~enchufe.errors.TimedOut` at ``deadline``."""

    __slots__ = ("_chain", "_sock", "_unsent", "_writing")

    def __init__(
        self,
        loop: Loop,
        sock: socket.socket,
        chain: Chain,
        deadline: float,
        done: Callable[[NetworkError | None], None],
        on_error: OnError,
    ) -> None:
        super().__init__(loop, sock.fileno(), max(deadline - time.monotonic(), 0.0), done, on_error)
        self._sock = sock
        self._chain = chain
        self._unsent = b""
        self._writing = False

    def start(self) -> None:
        super().start()
        if self._writing and self._loop.watching(self._fd):  # a request the socket had no room for
            self._loop.modify(self._fd, READ | WRITE)

    def _on_read(self, _events: int) -> None:
        chain = self._chain
        hop = chain.machine.hop
        try:
            while not chain.done:
                hop = chain.machine.hop
                if not self._flush():
                    return
                data = _peek(self._sock)
                if not data:
                    chain.eof()
                used = chain.feed(data)
                if used:
                    _calls.recv(self._sock, used)  # shown by the peek: all there
        except BlockingIOError:
            return
        except HopRefused as exc:
            self._finish(exc)
            return
        except OSError as exc:
            self._finish(named(translate(exc, "complete the handshake with the proxy"), hop))
            return
        self._finish(None)

    def _flush(self) -> bool:
        """Send what the chain asks (and what the socket had no room for): False while some
        waits for room (the descriptor is then watched for writing too)."""
        self._unsent += self._chain.outgoing()
        while self._unsent:
            try:
                sent = _calls.send(self._sock, self._unsent)
            except BlockingIOError:
                sent = 0
            if not sent:
                self._want_write(True)
                return False
            self._unsent = self._unsent[sent:]
        self._want_write(False)
        return True

    def _want_write(self, writing: bool) -> None:
        if writing != self._writing:
            self._writing = writing
            if self._loop.watching(self._fd):
                self._loop.modify(self._fd, READ | (WRITE if writing else 0))

    def _timed_out(self) -> None:
        hop = self._chain.machine.hop
        self._finish(
            TimedOut(
                _(
                    "via {hop}: the proxy did not finish its handshake in time (--connect-timeout); "
                    "is it up, and does it answer this protocol?"
                ).format(hop=hop),
                action="connect",
            )
        )


def _peek(sock: socket.socket) -> bytes:
    """What the proxy sent, left in the kernel (narrated with ``--trace`` as the blocking
    driver's peek)."""
    return _calls.traced(
        lambda: sock.recv(PEEK_SIZE, socket.MSG_PEEK),
        lambda: f"recv(fd {sock.fileno()}, {PEEK_SIZE}, MSG_PEEK)",
        lambda data: _calls.byte_count(len(data)),
    )


def tunnel_to_target(session: StreamSession) -> None:
    """``session`` reached the first proxy: the hops' handshakes run on the relay's loop, the
    tunnel's timer due when the connect phase would have ended; then the session goes on as
    connected (:func:`_tunnel_open`).  A session's part, kept here with the tunnel it drives,
    as :mod:`.shortcuts` keeps the loop's shortcuts."""
    relay = session.relay
    via, side, sock, loop = relay.via, session.target, session.target_sock, relay.loop
    assert via is not None and side is not None and sock is not None
    assert isinstance(relay.target, InetAddress)
    if side.mask != UNREGISTERED:  # the tunnel watches the socket until it is open
        loop.unregister(side.rfd)
        side.mask = UNREGISTERED
    timer = session._connect_timer  # the tunnel's own timer takes over, due at the same time
    deadline = timer.when if timer is not None else time.monotonic() + relay.connect_timeout
    if timer is not None:
        timer.cancel()
        session._connect_timer = None

    def done(error: NetworkError | None) -> None:
        _tunnel_open(session, error, deadline)

    session._stage = via.tunnel(loop, sock, relay.target, deadline, done, session.crashed)
    session._stage.start()


def _tunnel_open(session: StreamSession, error: NetworkError | None, deadline: float) -> None:
    """The last proxy's reply is in (the target's first bytes still in the kernel), or a hop
    refused: this client's target failed, its line names the hop."""
    session._stage = None
    if error is not None:
        session._fail_target(str(error))
        return
    # What is left of the connect phase bounds what the target gets first (a PROXY header).
    left = max(deadline - time.monotonic(), 0.0)
    session._connect_timer = session.relay.loop.call_later(left, session._connect_timed_out, session.crashed)
    session._connected()

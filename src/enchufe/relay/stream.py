"""Stream relaying: a listener handler that admits clients, and one session per client.

::

    client ──accept──▶ StreamRelay._admit ──rules, limits──▶ StreamSession (see .stream_session)
                                                             ├─ open TARGET: connect, exec:, stdio
                                                             ├─ up:   Pump(client → target)
                                                             └─ down: Pump(target → client)

Clients the relay will not serve (over ``--max-conns``, denied, target unreachable) are reset
(``SO_LINGER`` 0), at once: never left hanging.  When accept() fails for want of descriptors,
one waiting client is turned away with a spare descriptor kept for that, and the listener rests
a moment instead of spinning.

:class:`StdioRelay` is the relay whose LISTEN is ``-``: no listener, one session whose client is
this process's stdin and stdout, and the relay ends with it.

The ends of a session (:class:`~enchufe.relay.sides.Side`, :func:`~enchufe.relay.sides.stdio_side`)
and the session (:class:`~enchufe.relay.stream_session.StreamSession`) live in their own modules;
they are importable from here too.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import _calls, trace
from .._calls import accept, close, raw_family
from .._nonblocking import abort
from ..address import Address, ExecAddress, SocketAddress, StdioAddress
from ..errors import reason as system_reason
from ..i18n import N_, _
from . import shortcuts
from .children import Children
from .datagram_io import ReadMode
from .engine import READ, Loop
from .events import EventSink
from .limits import AccessRules
from .proxying import untrusted_client
from .pump import Pools
from .session import describe_peer, nodelay
from .sides import Side, stdio_side
from .stats import Stats
from .stream_session import StreamSession
from .targets import TargetResolver, resolver_address

if TYPE_CHECKING:
    from .._proxypolicy import ProxyPolicy
    from .._tlsstream import TLSSetup
    from .routing import Router
    from .via import Via

__all__ = ["Side", "StdioRelay", "StreamRelay", "StreamSession", "TargetResolver", "stdio_side"]

#: Clients accepted per readiness event before serving the connections already relayed: a burst
#: of connects must not starve transfers, nor wait behind them.  While every event brings one
#: client, one is accepted per event: the accept() that would only say EAGAIN is skipped
#: (level-triggered epoll reports the listener again if more are queued), and every
#: :data:`~.datagram_io.PROBE_EVERY` events a batch is tried (:class:`~.datagram_io.ReadMode`).
ACCEPT_BATCH = 64

#: When accept() fails (for want of descriptors, typically), the listener rests this long before
#: trying again, instead of spinning; a client waiting meanwhile is turned away with the spare
#: descriptor kept for that.
ACCEPT_PAUSE = 0.1


# ----------------------------------------------------------------------------- the listener handler


class StreamRelay:
    """The handler of one stream listener: accept, check, and relay each client to the target.

    The target is a socket address (reached through ``resolver``), an ``exec:`` program (a
    child per client) or stdio (``-``: the first client only; the listener closes once it is in).
    """

    def __init__(
        self,
        loop: Loop,
        listener: socket.socket | None,
        resolver: TargetResolver | None,
        *,
        pools: Pools,
        stats: Stats,
        events: EventSink,
        rules: AccessRules,
        max_conns: int,
        connect_timeout: float,
        idle_timeout: float | None,
        use_splice: bool,
        on_listener_closed: Callable[[], None] | None = None,
        target: Address | None = None,
        local: SocketAddress | None = None,
        client_tls: TLSSetup | None = None,
        target_tls: TLSSetup | None = None,
        router: Router | None = None,
        proxy_policy: ProxyPolicy | None = None,
        send_proxy: int | None = None,
        via: Via | None = None,
    ) -> None:
        self.loop = loop
        self.listener = listener
        self.resolver = resolver
        self.target: Address = target if target is not None else resolver_address(resolver)
        self.target_label = str(self.target)
        #: the listening address, for the ENCHUFE_LOCAL of exec children
        self.local = local
        #: the server side of a TLS LISTEN (termination), the client side of a TLS TARGET
        self.client_tls = client_tls
        self.target_tls = target_tls
        #: --route: each client's target (and certificate) chosen by its ClientHello's server
        #: name; TARGET is then the default (``-``, stdio, for none)
        self.router = router
        #: --accept-proxy: each client's PROXY header first, from trusted proxies only; the
        #: client it names is the one the access rules judge
        self.proxy_policy = proxy_policy
        #: --send-proxy: the PROXY protocol version of the header the target gets first
        self.send_proxy = send_proxy
        #: --via: the target is reached through these proxy hops (see .via)
        self.via = via
        self.pools = pools
        self.stats = stats
        self.events = events
        self.rules = rules
        self.max_conns = max_conns
        #: where max_conns comes from, for the refusal message
        self.limit_origin = "--max-conns"
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.use_splice = use_splice
        self.sessions: set[Any] = set()
        self.children = Children(loop, events)
        #: one client only (stdio target): the relay is over once its session ends
        self.one_client = router is None and isinstance(self.target, StdioAddress)
        #: a child per client (exec: target)
        self.runs_programs = router is None and isinstance(self.target, ExecAddress)
        self.finished = False
        #: a one-shot relay lost data (a reset, an unreachable target): exit status 1
        self.failed = False
        self._ids = itertools.count(1)
        self._on_listener_closed = on_listener_closed
        self._accepting = False
        self._spare: int | None = None
        #: one accept() per readiness event, or a batch (see ACCEPT_BATCH)
        self._accept_mode = ReadMode()
        #: TCP_NODELAY: whether the listener has it for its clients, and whether each accepted
        #: client must still be given its own (see start)
        self._inherits_nodelay = False
        self._nodelay_each = False
        self._next_pause_report = 0.0
        if loop.shortcuts:  # what they move is counted when the stats are looked at
            stats.collectors.append(self._shortcut_bytes)

    def _shortcut_bytes(self) -> tuple[int, int, int, int]:
        """Bytes the sessions' shortcuts moved, not counted yet: (to target, 0, to client, 0)
        (no datagrams).  Read only (a stats snapshot may be taken from another thread)."""
        to_target = to_client = 0
        for session in list(self.sessions):  # a copy: the relay's thread may add or drop some
            if not isinstance(session, StreamSession):  # framed sessions take no shortcuts
                continue
            up, down = shortcuts.pending(session)
            to_target += up
            to_client += down
        return to_target, 0, to_client, 0

    # -- accepting

    def start(self) -> None:
        assert self.listener is not None
        self.listener.setblocking(False)
        if self.listener.family != socket.AF_UNIX:
            # Linux gives each accepted socket the listener's TCP_NODELAY as its handshake
            # completes: one setsockopt here rather than one per client.  Clients queued before
            # it get their own, until an accept() says the queue was emptied.
            self._nodelay_each = True
            try:
                _calls.setsockopt(self.listener, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1, "TCP_NODELAY")
            except OSError:
                self._inherits_nodelay = False
            else:
                self._inherits_nodelay = True
        self._spare = _open_spare()
        self.loop.register(self.listener.fileno(), READ, self._on_accept, self._listener_failed)
        self._accepting = True
        router = self.router
        if router is not None and router.reload_interval and router.files():
            stamps = router.stamps()

            def look() -> None:  # --reload-interval: the routes' certificates, as SIGUSR1 does
                nonlocal stamps
                if router.stamps() != stamps:
                    self.reload_routes("reload-interval")
                    stamps = router.stamps()

            self.loop.call_every(router.reload_interval, look)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def _on_accept(self, _events: int) -> None:
        listener = self.listener
        assert listener is not None
        mode = self._accept_mode
        reads = ACCEPT_BATCH if mode.limit() > 1 else 1
        got = 0
        # socket.accept(), inline while tracing is off: the listener's family as an int (its
        # enum costs three Python calls per client), no narrated wrapper
        family = raw_family(listener) if trace._sink is None else -1
        for _turn in range(reads):
            if not self._accepting:
                return
            try:
                if family >= 0:
                    fd, peer = listener._accept()  # type: ignore[attr-defined]  # the C method
                    conn = socket.socket(family, socket.SOCK_STREAM, listener.proto, fd)
                else:
                    conn, peer = accept(listener)
            except BlockingIOError:
                if self._inherits_nodelay:
                    self._nodelay_each = False  # every client from now on inherits it
                break
            except OSError as exc:
                if exc.errno == errno.EINTR or exc.errno in _calls.ACCEPT_CLIENT_ERRORS:
                    got += 1  # the queue held something: go on as after a client
                    continue  # that client left while queued, or a firewall said no
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._shed()
                    self._pause(
                        _(
                            "cannot accept: {reason}; out of file descriptors with {count} open "
                            "connections: clients are turned away; lower --max-conns or raise the "
                            "limit (ulimit -n)"
                        ).format(reason=system_reason(exc), count=len(self.sessions))
                    )
                else:
                    self._pause(_("cannot accept: {reason}").format(reason=system_reason(exc)))
                return
            got += 1
            self._admit(conn, peer)
        mode.got(got, reads)

    def _shed(self) -> None:
        """No descriptor left for accept(): turn one waiting client away with the spare
        descriptor, so that it is not left hanging in the backlog."""
        if self._spare is None or self.listener is None:
            return
        with contextlib.suppress(OSError):
            os.close(self._spare)
        self._spare = None
        with contextlib.suppress(OSError):
            conn, _peer = accept(self.listener)
            abort(conn)
            self.stats.refused += 1
        self._spare = _open_spare()

    def _pause(self, message: str) -> None:
        """accept() failed: report it (at most once a second) and rest the listener a moment
        instead of spinning on it."""
        now = time.monotonic()
        if now >= self._next_pause_report:
            self._next_pause_report = now + 1.0
            self.events("error", f"enchufe: {message}", error=message, open=len(self.sessions))
        self._rest()

    def _listener_failed(self, exc: Exception) -> str:
        """The accept handler raised (the engine reports it): rest the listener a moment, so
        that an error on every turn never spins, then serve on."""
        if not self._accepting:
            return _("the listener was already closed")
        self._rest()
        return _("the listener rests {seconds} s").format(seconds=f"{ACCEPT_PAUSE:g}")

    def _rest(self) -> None:
        assert self.listener is not None
        fd = self.listener.fileno()
        self.loop.modify(fd, 0)

        def resume() -> None:
            if self._accepting:
                self.loop.modify(fd, READ)

        self.loop.call_later(ACCEPT_PAUSE, resume)

    def _refuse(self, conn: socket.socket, peer: Any, reason: str, why: str) -> None:
        """Turn a client away (reset) and say so: a notice, shown without -v but rate-limited,
        since any client can cause one."""
        self.stats.refused += 1
        shown = describe_peer(conn, peer)
        kind = {"denied": N_("denied clients"), "proxy": N_("clients refused over their PROXY header")}.get(
            reason, N_("clients turned away")
        )
        line = _("enchufe: refused {peer}: {why}").format(peer=shown, why=why)
        self.events.notice(kind, "refused", line, peer=shown, reason=reason, detail=why)
        abort(conn)

    def _admit(self, conn: socket.socket, peer: Any) -> None:
        if len(self.sessions) >= self.max_conns:
            why = _("{count} connections open ({limit})").format(
                count=len(self.sessions), limit=_(self.limit_origin)
            )
            self._refuse(conn, peer, "max-conns", why)
            return
        rules = self.rules
        if self.proxy_policy is not None:
            untrusted = untrusted_client(self.proxy_policy, conn, peer)
            if untrusted is not None:
                self._refuse(conn, peer, "proxy", untrusted)
                return
        elif rules.filters_ip and conn.family != socket.AF_UNIX:  # behind a proxy: its header's client
            denied = rules.check_ip(peer[0])
            if denied is not None:
                self._refuse(conn, peer, "denied", denied)
                return
        if rules.filters_credentials and conn.family == socket.AF_UNIX:
            try:
                creds = _calls.peer_credentials(conn)
            except OSError:
                self._refuse(conn, peer, "denied", _("no peer credentials"))
                return
            denied = rules.check_credentials(creds.uid, creds.gid)
            if denied is not None:
                self._refuse(conn, peer, "denied", denied)
                return
        conn.setblocking(False)
        if self._nodelay_each:  # queued before the listener had TCP_NODELAY (see start)
            nodelay(conn)
        self.stats.total += 1
        self.stats.open += 1
        session = self.make_session(conn, peer, next(self._ids))
        self.sessions.add(session)
        if self.one_client:
            self.stop_accepting()  # stdio serves one client: later ones are refused by the kernel
        try:
            session.start()
        except Exception as exc:  # this client's failure, not the listener's
            self.loop.fail(exc, session.crashed)

    def make_session(self, conn: socket.socket, peer: Any, session_id: int) -> Any:
        """The session of an admitted client (framed relays make theirs); one with a TLS end
        is chosen here, once, so that plain sessions carry nothing of TLS."""
        if self.client_tls is not None or self.target_tls is not None:
            from .tls import TLSStreamSession

            return TLSStreamSession(self, Side(conn), conn, peer, session_id)
        return StreamSession(self, Side(conn), conn, peer, session_id)

    def reload_routes(self, why: str) -> None:
        """Read the routes' certificates again (with the listener's, on SIGUSR1), and say so in
        one line; a bad one keeps the old ones of every route."""
        router = self.router
        if router is None or not router.files():
            return
        error = router.reload()
        if error is not None:
            line = _("enchufe: {why}: route certificates not reloaded, the old ones stay: {error}").format(
                why=why, error=error
            )
            self.events("reload", line, reloaded=False, error=str(error))
            return
        line = _("{why}: route certificates reloaded: {files}").format(
            why=why, files=" ".join(router.files())
        )
        self.events("reload", line, reloaded=True)

    def one_shot_broken(self, session: StreamSession, reason: str, error: str | None) -> None:
        """The one session of a one-shot relay (stdio) broke: that is the whole run, and its
        exit status 1 must not come without a word."""
        side, _sep, what = reason.partition("-")
        cause = error or "reset"
        if what == "reset" and side == "target":
            happened = _("{target} reset the connection ({error})").format(
                target=self.target_label, error=cause
            )
            hint = _("check that {target} speaks the protocol of what was sent, and its log").format(
                target=self.target_label
            )
        elif what == "reset" and session.client_sock is None:
            happened = _("stdin/stdout failed ({error})").format(error=cause)
            hint = _("was the reader of stdout gone before the end?")
        elif what == "reset":
            happened = _("the client {peer} reset the connection ({error})").format(
                peer=session.peer_label(), error=cause
            )
            hint = _("the client went away before the end")
        else:
            happened = _("the session ended early ({reason})").format(
                reason=f"{reason}: {error}" if error else reason
            )
            hint = _("run with -v to see each step")
        self.events(
            "error",
            _(
                "enchufe: {happened} after {to_target} bytes to the target and "
                "{to_client} back; the exchange is incomplete: {hint}"
            ).format(happened=happened, to_target=session.to_target, to_client=session.to_client, hint=hint),
            id=session.id,
            reason=reason,
            error=error or reason,
            to_target=session.to_target,
            to_client=session.to_client,
        )

    def session_ended(self, session: Any, failed: bool) -> None:
        self.sessions.discard(session)
        if failed and self.one_client:
            self.failed = True
        if self.one_client and not self.sessions:
            self.finished = True

    # -- stopping

    def stop_accepting(self) -> None:
        """Close the listener at once (new clients are refused by the kernel); sessions go on."""
        if not self._accepting:
            return
        self._accepting = False
        assert self.listener is not None
        self.loop.forget(self.listener.fileno())
        with contextlib.suppress(OSError):
            close(self.listener)
        if self._spare is not None:
            with contextlib.suppress(OSError):
                os.close(self._spare)
            self._spare = None
        if self._on_listener_closed is not None:
            self._on_listener_closed()

    def abort_all(self, reason: str) -> int:
        """Close every session now (each peer sees a reset); how many there were.  One that
        raises is reported, closed the way a failed session is if it can be, and dropped: it
        must not keep the others open, nor the relay running."""
        sessions = list(self.sessions)
        for session in sessions:
            try:
                session.cut(reason)
            except Exception as exc:
                self.loop.fail(exc, session.crashed)
                self.sessions.discard(session)
        return len(sessions)

    def close(self) -> None:
        """The relay ends: stop and reap the children still running."""
        self.children.close()


class StdioRelay(StreamRelay):
    """LISTEN is ``-``: one session, whose client is this process's stdin and stdout.

    There is nothing to accept; the relay is over when the session ends, and it failed (exit
    status 1) if the session ended in a reset or could not reach the target.
    """

    def __init__(self, loop: Loop, resolver: TargetResolver | None, **options: Any) -> None:
        super().__init__(loop, None, resolver, **options)
        self.one_client = True

    def start(self) -> None:
        self.stats.total += 1
        self.stats.open += 1
        kind = StreamSession
        if self.target_tls is not None:
            from .tls import TLSStreamSession

            kind = TLSStreamSession
        session = kind(self, stdio_side(), None, None, next(self._ids))
        self.sessions.add(session)
        session.start()

    @property
    def accepting(self) -> bool:
        return False

    def stop_accepting(self) -> None:
        """Nothing to stop: the one session goes on (the drain)."""
        if self._on_listener_closed is not None:
            self._on_listener_closed()
            self._on_listener_closed = None


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None

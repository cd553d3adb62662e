"""A relay process: one listener, its handler, the event loop, limits, stats and shutdown.

::

    relay = Relay(RelayConfig("tcp://:8080", "unix:///run/app.sock", max_conns=1000))
    relay.open()                   # bind: relay.address is the real listening address
    result = relay.run()           # until stopped: SIGTERM/SIGINT/SIGHUP, or relay.stop()
    sys.exit(result.exit_status)   # 0, or 1 if the drain had to cut connections

SIGHUP (the terminal went away) is the same clean stop as SIGTERM: a relay started from a
shell that closes must not die on the spot, leaving its socket file and its ``exec:`` children
behind.

Shutdown: the first stop closes the listener at once (its unix socket file is removed, new
clients are refused by the kernel) and lets open connections finish for ``drain_timeout``
seconds; then the rest are cut.  A second stop cuts them at once.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType

from .. import _calls, _sockets
from .._sockets import DEFAULT_BACKLOG, open_listener
from .._tlsstream import with_tls
from .._unixfiles import SocketFile
from ..address import Address, InetAddress, SocketAddress, StdioAddress, UnixAddress
from ..i18n import N_, _
from ..sessions import DEFAULT_IDLE_TIMEOUT
from .config import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DRAIN_TIMEOUT,
    RelayConfig,
    RelayResult,
    check_config,
    check_endpoints,
    config_hops,
)
from .engine import Loop, Timer
from .events import EventSink
from .handlers import ListenerHandler, make_handler
from .limits import fd_budget
from .pools import Pools
from .routing import Router
from .stats import Snapshot, Stats, interval_report, summary_report
from .stream import StreamRelay, TargetResolver
from .tlsfiles import TLSEnds, ktls_status

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_DRAIN_TIMEOUT",
    "RELOAD_SIGNAL",
    "STOP_SIGNALS",
    "Relay",
    "RelayConfig",
    "RelayResult",
    "check_endpoints",
]

#: Signals that stop a relay cleanly (drain, then cut at the second).  SIGHUP is there because
#: the terminal going away must not kill the relay on the spot: its unix socket file would stay
#: and its exec: children would be orphaned.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: The signal that reads the TLS files again (certificates, keys, CAs) for the next handshakes.
RELOAD_SIGNAL = signal.SIGUSR1


def _nothing() -> None:
    pass


def _open_datagram(
    address: SocketAddress, *, backlog: int, mode: int | None, reuse_port: bool
) -> tuple[socket.socket, SocketAddress, SocketFile | None]:
    return _sockets.open_datagram(address, mode=mode, reuse_port=reuse_port)


class Relay:
    """A relay from ``config.listen`` to ``config.target``, run by :meth:`run`.

    Which handler serves LISTEN follows from the two addresses and the options (see
    :mod:`.handlers`): stream → stream (and exec:, stdio) :class:`StreamRelay`; ``-`` → anything
    :class:`StdioRelay`; datagram → datagram :class:`DatagramRelay`; with ``--frame`` datagram →
    stream :class:`FramedDatagramRelay` and stream → datagram :class:`FramedStreamRelay`.
    """

    def __init__(
        self,
        config: RelayConfig,
        *,
        events: EventSink | None = None,
        listener: tuple[socket.socket, SocketAddress] | None = None,
    ) -> None:
        self.config = config
        self.listen_address, self.target_address = check_config(config)
        self.events = events or EventSink()
        self.stats = Stats()
        self.address: Address | None = None
        self.max_conns = config.max_conns or 0
        self._listener = listener
        hops = config_hops(config)  # through proxies, sessions connect to the first one
        target = hops[0].address if hops else self.target_address
        self._resolver = TargetResolver(target) if isinstance(target, InetAddress | UnixAddress) else None
        self._owned: SocketFile | None = None
        self._loop: Loop | None = None
        self._handler: ListenerHandler | None = None
        self._stops = 0
        self._stops_seen = 0
        self._draining = False
        self._finished = False
        self._cut = 0
        self._drain_timer: Timer | None = None
        self._last: Snapshot | None = None
        self._tls: TLSEnds | None = None
        self._router: Router | None = None
        self._reloads = 0
        self._reloads_seen = 0
        self._stamps: tuple[object, ...] = ()

    @property
    def backlog(self) -> int:
        return DEFAULT_BACKLOG if self.config.backlog is None else self.config.backlog

    @property
    def datagram_listener(self) -> bool:
        return not self.listen_address.is_stream

    @property
    def datagram_sessions(self) -> bool:
        """Whether sessions are datagram sessions (idle timeout on by default)."""
        return not (self.listen_address.is_stream and self.target_address.is_stream)

    @property
    def idle_timeout(self) -> float | None:
        """--idle-timeout, or for datagram sessions its default (60 s)."""
        if self.config.idle_timeout is not None:
            return self.config.idle_timeout
        return DEFAULT_IDLE_TIMEOUT if self.datagram_sessions else None

    # -- setting up

    def open(self) -> Address:
        """Bind the listener (NetworkError if it cannot be) and size the limits."""
        if self.address is not None:
            return self.address
        config = self.config
        self._size_limits()
        listen = self.listen_address
        if self._listener is None and isinstance(listen, InetAddress | UnixAddress):
            opener = open_listener if listen.is_stream else _open_datagram
            sock, real, owned = opener(
                listen, backlog=self.backlog, mode=config.mode, reuse_port=config.reuse_port
            )
            self._listener = (sock, real)
            self._owned = owned
        # The target must be resolvable (and valid) from the start: fail now, not per client;
        # so must the TLS files (each handshake then uses the contexts made here).
        try:
            if self._resolver is not None:
                self._resolver.targets()
            self._open_tls(listen)
            if config.routes:  # every route's target resolved, its certificate read, now
                self._router = Router.open(
                    listen, self.target_address, config.routes, self.idle_timeout, config.reload_interval
                )
        except BaseException:
            self.close()
            raise
        address = self._listener[1] if self._listener is not None else listen
        if isinstance(address, InetAddress | UnixAddress) and isinstance(listen, InetAddress | UnixAddress):
            address = with_tls(address, listen.tls)
        self.address = address
        return address

    def _open_tls(self, listen: Address) -> None:
        """The TLS contexts of a TLS LISTEN (server side) and TARGET (client side), made once
        (and again on a reload)."""
        if listen.is_tls or self.target_address.is_tls:
            self._tls = TLSEnds(listen, self.target_address)
            self._stamps = self._tls.stamps()
            self.stats.ktls = ktls_status()

    @property
    def tls_pin(self) -> str | None:
        """The pin of a ``cert=auto`` LISTEN's certificate (clients trust it with ``pin=``)."""
        client = self._tls.client if self._tls is not None else None
        return client.pin if client is not None else None

    def reload(self) -> None:
        """Ask for the TLS files to be read again (what SIGUSR1 does); safe from a signal handler
        or another thread: the relay's loop does it."""
        self._reloads += 1
        if self._loop is not None:
            self._loop.wake()

    def _reload_tls(self, why: str) -> None:
        """Read the TLS files again for the handshakes that come next, and say so in one line
        (or why not: a file now missing or bad keeps the old ones)."""
        tls = self._tls
        if tls is None:
            self.events("reload", _("{why}: nothing to reload (no TLS end)").format(why=why), reloaded=False)
            return
        done = tls.reload()
        self._stamps = tls.stamps()
        handler = self._handler
        if done.error is None and isinstance(handler, StreamRelay):
            handler.client_tls, handler.target_tls = tls.client, tls.target
        text, fields = done.report(why)
        self.events("reload", text, **fields)
        if isinstance(handler, StreamRelay):
            handler.reload_routes(why)

    def _reload_if_changed(self) -> None:
        """--reload-interval: read the files again when one of them was replaced or rewritten."""
        if self._tls is not None and self._tls.stamps() != self._stamps:
            self._reload_tls("reload-interval")

    def _size_limits(self) -> None:
        """``max_conns`` from the descriptor budget, unless given; say the budget (level 1) and
        warn when ``max_conns`` asks for more than it holds."""
        config = self.config
        budget = fd_budget(raise_limit=config.raise_fd_limit)
        self.max_conns = config.max_conns or budget.connections
        listen = self.listen_address
        if self.events.wants(1) and listen.is_stream and not isinstance(listen, StdioAddress):
            self.events(
                "limits",
                budget.line(self.max_conns),
                level=1,
                nofile=budget.nofile,
                budget=budget.connections,
                max_conns=self.max_conns,
            )
        message = budget.excess(config.max_conns) if config.max_conns is not None else None
        if message is not None:
            self.events(
                "warning",
                _("enchufe: warning: {message}").format(message=message),
                max_conns=config.max_conns,
                budget=budget.connections,
                detail=message,
            )

    # -- running

    def run(self, *, handle_signals: bool = True, announce: bool = True) -> RelayResult:
        """Serve until stopped; returns how it ended.  Signals (:data:`STOP_SIGNALS`) are handled
        when ``handle_signals`` and this is the main thread: first a drain, then a cut."""
        address = self.open()
        config = self.config
        loop = self._loop = Loop(report=self._unexpected)
        pools = Pools()
        handler = self._make_handler(loop, pools)
        self._handler = handler
        loop.set_wake_handler(self._on_wake)
        self.events.schedule = loop.call_later  # counts of held-back notices, when due
        restore = self._install_signals(loop) if handle_signals else _nothing
        try:
            handler.start()
            if announce and self._listener is not None:
                pin = self.tls_pin
                if pin is None:
                    line = _("listening on {address}").format(address=address)
                    self.events("listening", line, address=str(address))
                else:
                    line = _("listening on {address} pin {pin}").format(address=address, pin=pin)
                    self.events("listening", line, address=str(address), pin=pin)
            if config.stats_interval:
                self._last = self.stats.snapshot()
                loop.call_every(config.stats_interval, self._report)  # goes on if one fails
            if config.reload_interval and self._tls is not None:
                loop.call_every(config.reload_interval, self._reload_if_changed)
            if self._stops or self._reloads:  # signals that came before the loop ran
                self._on_wake()
            loop.run(until=self._done)
        finally:
            restore()
            if self._handler is not None:
                self._handler.abort_all("error")
                self._handler.stop_accepting()
                self._handler.close()
            pools.close()
            loop.close()
            self.close()
            self.events.schedule = None
            self.events.flush()
        final = self.stats.snapshot()
        line, fields = summary_report(final, sessions=self.datagram_listener)
        self.events("summary", line, level=0 if config.stats_interval else 1, **fields)
        return RelayResult(self._cut, final, failed=handler.failed)

    def _make_handler(self, loop: Loop, pools: Pools) -> ListenerHandler:
        return make_handler(
            loop,
            pools,
            self.config,
            self.listen_address,
            self.target_address,
            listener=self._listener,
            resolver=self._resolver,
            stats=self.stats,
            events=self.events,
            idle_timeout=self.idle_timeout,
            max_conns=self.max_conns,
            tls=self._tls,
            router=self._router,
            on_listener_closed=self._release_file,
        )

    def _done(self) -> bool:
        if self._finished:
            return True
        handler = self._handler
        if handler is None:
            return False
        return handler.finished or (self._draining and not handler.sessions)

    def stop(self, *, now: bool = False) -> None:
        """Stop: the first call drains, a second (or ``now=True``) cuts everything.  Safe from a
        signal handler or another thread."""
        self._stops += 2 if now else 1
        if self._loop is not None:
            self._loop.wake()

    def _install_signals(self, loop: Loop) -> Callable[[], None]:
        """Stop at :data:`STOP_SIGNALS` (in the main thread; elsewhere nothing is done), each
        waking ``loop`` wherever it arrives (see :meth:`Loop.wake_on_signals`); returns what puts
        the previous handlers and wakeup descriptor back."""
        if threading.current_thread() is not threading.main_thread():
            return _nothing
        previous: dict[int, signal.Handlers | int | None] = {}

        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop()

        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, handler)  # type: ignore[assignment]
        previous[RELOAD_SIGNAL] = signal.signal(RELOAD_SIGNAL, lambda signum, frame: self.reload())  # type: ignore[assignment]
        wakeup = loop.wake_on_signals()

        def restore() -> None:
            signal.set_wakeup_fd(wakeup)
            for signum, old in previous.items():
                signal.signal(signum, old)

        return restore

    def _on_wake(self) -> None:
        if self._reloads != self._reloads_seen:
            self._reloads_seen = self._reloads
            self._reload_tls("SIGUSR1")
        stops = self._stops
        if stops == self._stops_seen:
            return
        self._stops_seen = stops
        handler = self._handler
        assert handler is not None
        if not self._draining:
            self._draining = True
            before = len(handler.sessions)
            handler.stop_accepting()
            open_now = len(handler.sessions)
            drain = self.config.drain_timeout
            if self.datagram_listener:
                if before == 1:
                    line = _("stopping: closed {count} datagram session (nothing in flight to wait for)")
                else:
                    line = _("stopping: closed {count} datagram sessions (nothing in flight to wait for)")
                self.events(
                    "stopping",
                    line.format(count=before),
                    open=0,
                    closed=before,
                    drain_timeout=drain,
                )
            elif open_now:
                if open_now == 1:
                    line = _(
                        "stopping: no new clients; waiting up to {seconds} s for {count} open "
                        "connection (signal again to cut them now)"
                    )
                else:
                    line = _(
                        "stopping: no new clients; waiting up to {seconds} s for {count} open "
                        "connections (signal again to cut them now)"
                    )
                self.events(
                    "stopping",
                    line.format(seconds=f"{drain:g}", count=open_now),
                    open=open_now,
                    drain_timeout=drain,
                )
            else:
                self.events("stopping", _("stopping: no connection open"), open=0, drain_timeout=drain)
            if open_now:
                assert self._loop is not None
                self._drain_timer = self._loop.call_later(drain, self._drain_expired)
        if stops >= 2 and handler.sessions:
            self._cut_all(
                N_("enchufe: cut {count} connection: stopped again before the drain ended"),
                N_("enchufe: cut {count} connections: stopped again before the drain ended"),
            )

    def _drain_expired(self) -> None:
        self._drain_timer = None
        self._cut_all(
            N_("enchufe: cut {count} connection still open after the {seconds} s drain (--drain-timeout)"),
            N_("enchufe: cut {count} connections still open after the {seconds} s drain (--drain-timeout)"),
        )

    def _cut_all(self, one: str, many: str) -> None:
        """Cut every open connection and say so with ``one`` (a single one was cut) or ``many``:
        whole lines, so that a language can make the reason agree with the count."""
        handler = self._handler
        assert handler is not None
        cut = handler.abort_all("shutdown")
        self._cut += cut
        self._finished = True
        if cut:
            line = _(one) if cut == 1 else _(many)
            self.events("cut", line.format(count=cut, seconds=f"{self.config.drain_timeout:g}"), cut=cut)

    def _unexpected(self, line: str, exc: Exception) -> None:
        """A handler or timer raised and the engine ended its owner (one session, usually): a
        notice, since a peer may be what makes one fail, again and again."""
        self.events.notice(N_("unexpected errors"), "error", line, error=f"{type(exc).__name__}: {exc}")

    def _report(self) -> None:
        assert self._last is not None
        now = self.stats.snapshot()
        line, fields = interval_report(self._last, now)
        self._last = now
        self.events("stats", line, **fields)

    # -- closing

    def _release_file(self) -> None:
        if self._owned is not None:
            self._owned.release()
            self._owned = None

    def close(self) -> None:
        """Release the listener (and its socket file) if :meth:`run` did not."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                _calls.close(self._listener[0])
        self._release_file()

    @property
    def open_connections(self) -> int:
        return len(self._handler.sessions) if self._handler is not None else 0

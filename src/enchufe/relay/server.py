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
from collections.abc import Sized
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from .. import _calls, _sockets
from .._ranges import MAX_BACKLOG, MAX_SECONDS
from .._sockets import DEFAULT_BACKLOG, open_listener
from .._unixfiles import SocketFile
from ..address import Address, ExecAddress, InetAddress, SocketAddress, StdioAddress, UnixAddress, parse
from ..errors import AddressError, UsageError
from ..sessions import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_SESSIONS
from .datagram import DEFAULT_MAX_DATAGRAM, DatagramRelay, FramedDatagramRelay
from .engine import Loop, Timer
from .events import EventSink
from .framed import FramedStreamRelay
from .limits import WANTED_NOFILE, AccessRules, connection_budget, raise_fd_limit
from .pump import Pools
from .stats import Snapshot, Stats, interval_report, summary_report
from .stream import StdioRelay, StreamRelay, TargetResolver

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_DRAIN_TIMEOUT",
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

#: Seconds to wait for the target to accept.  The kernel alone would wait minutes (SYN retries);
#: a client of a relay would rather be told quickly.  Loopback and LAN targets answer in
#: milliseconds, distant ones well within this.
DEFAULT_CONNECT_TIMEOUT = 10.0

#: Seconds open connections get to finish after SIGTERM/SIGINT/SIGHUP (as the issue asks).
DEFAULT_DRAIN_TIMEOUT = 10.0


class ListenerHandler(Protocol):
    """What a relay needs from the handler of its listener (:class:`StreamRelay`,
    :class:`StdioRelay`, the datagram and framed handlers): start serving, stop accepting, cut
    what is open, release what is left."""

    @property
    def sessions(self) -> Sized: ...

    #: a one-shot relay (stdio) is over: its one session ended
    finished: bool
    #: a one-shot relay lost data (reset, target unreachable)
    failed: bool

    def start(self) -> None: ...

    def stop_accepting(self) -> None: ...

    def abort_all(self, reason: str) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RelayConfig:
    """What to relay and how.  ``listen`` and ``target`` are address strings or values."""

    listen: Address | str
    target: Address | str
    #: relayed connections open at once; more are reset at accept.  ``None``: the fd budget.
    max_conns: int | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    #: close a connection after this many seconds without a byte either way (off by default)
    idle_timeout: float | None = None
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    rules: AccessRules = field(default_factory=AccessRules)
    #: seconds between stats lines; ``None``: no stats lines (the summary is at level 1)
    stats_interval: float | None = None
    #: splice through pipes (zero-copy); False copies through a buffer (for comparison)
    splice: bool = True
    #: listen queue of a stream listener; ``None``: DEFAULT_BACKLOG
    backlog: int | None = None
    #: permissions of a unix listener's socket file (only a unix LISTEN has one)
    mode: int | None = None
    #: bind with SO_REUSEPORT (for several worker processes on one port)
    reuse_port: bool = False
    #: raise RLIMIT_NOFILE as far as allowed at open()
    raise_fd_limit: bool = True
    #: carry datagrams over a stream as length-prefixed messages (a stream and a datagram end)
    frame: bool = False
    #: datagram sessions (one per sender) kept at once; a new sender evicts the least active
    max_sessions: int = DEFAULT_MAX_SESSIONS
    #: largest datagram relayed; larger ones are counted as truncated and dropped
    max_datagram: int = DEFAULT_MAX_DATAGRAM


@dataclass(frozen=True)
class RelayResult:
    """How a relay ended: how many connections the shutdown cut, whether a one-shot (stdio) relay
    lost data, and the final counters."""

    cut: int
    stats: Snapshot
    failed: bool = False

    @property
    def exit_status(self) -> int:
        """0 if nothing in flight was cut (and a one-shot relay ended cleanly), else 1."""
        return 1 if self.cut or self.failed else 0


def check_endpoints(
    listen: Address | str, target: Address | str, *, frame: bool = False
) -> tuple[Address, Address]:
    """Parse and check a LISTEN/TARGET pair: UsageError (exit status 2) if it cannot be relayed.

    LISTEN is a socket address or ``-`` (stdio: one session, then the relay ends); TARGET is a
    socket address, ``-`` (the first client is relayed to stdio) or ``exec:PROGRAM``.  Streams go
    to streams and datagrams to datagrams; a stream and a datagram address need ``--frame``.
    """
    source = parse(listen) if isinstance(listen, str) else listen
    dest = parse(target) if isinstance(target, str) else target
    if isinstance(source, ExecAddress):
        raise UsageError(
            f"LISTEN {source}: exec: runs a program per client, so it can only be the TARGET, "
            f"e.g. enchufe relay tcp://:9000 '{source}'"
        )
    if isinstance(source, StdioAddress) and isinstance(dest, StdioAddress | ExecAddress):
        raise UsageError(
            f"cannot relay {source} to {dest}: one of LISTEN and TARGET must be a socket address"
        )
    for end, other in ((source, dest), (dest, source)):
        if isinstance(end, StdioAddress | ExecAddress) and not other.is_stream:
            raise UsageError(
                f"cannot relay {end} to {other}: stdio and exec: carry a byte stream, {other} datagrams; "
                f"to send stdin as datagrams use enchufe connect {other}"
            )
    if source.is_stream != dest.is_stream:
        stream, datagram = (source, dest) if source.is_stream else (dest, source)
        if not frame:
            raise UsageError(
                f"cannot relay between {stream} (a stream) and {datagram} (datagrams) without framing: "
                "a stream has no message boundaries; add --frame to carry each datagram as a "
                "length-prefixed message, or use two stream or two datagram addresses"
            )
    elif frame:
        kinds = "streams" if source.is_stream else "datagrams"
        raise UsageError(
            f"--frame carries datagrams over a stream, but {source} and {dest} are both {kinds}; "
            "give one stream and one datagram address, or leave out --frame"
        )
    if isinstance(dest, InetAddress) and (dest.is_wildcard or dest.port == 0):
        raise AddressError(
            f"TARGET {dest}: the relay connects there, so it needs a host and a port, "
            f"e.g. {dest.scheme}://127.0.0.1:{dest.port or 9000}"
        )
    return source, dest


def _check_applies(listen: Address, config: RelayConfig) -> None:
    """An option that does not apply to LISTEN is refused (UsageError), never ignored."""
    if config.mode is not None and not (isinstance(listen, UnixAddress) and not listen.abstract):
        what = "an abstract unix name, which has no file" if isinstance(listen, UnixAddress) else "no file"
        raise UsageError(
            f"--mode sets the permissions of a unix LISTEN socket file, but {listen} is {what}; "
            "leave out --mode or listen on unix:///PATH"
        )
    if config.backlog is not None:
        if not (isinstance(listen, InetAddress | UnixAddress) and listen.is_stream):
            raise UsageError(
                f"--backlog sets the listen queue of a stream LISTEN, but {listen} has none; "
                "leave out --backlog"
            )
        if not 1 <= config.backlog <= MAX_BACKLOG:
            raise UsageError(f"--backlog must be from 1 to {MAX_BACKLOG}, not {config.backlog}")


def _open_datagram(
    address: SocketAddress, *, backlog: int, mode: int | None, reuse_port: bool
) -> tuple[socket.socket, SocketAddress, SocketFile | None]:
    return _sockets.open_datagram(address, mode=mode, reuse_port=reuse_port)


class Relay:
    """A relay from ``config.listen`` to ``config.target``, run by :meth:`run`.

    Which handler serves LISTEN follows from the two addresses: stream → stream (and exec:,
    stdio) :class:`StreamRelay`; ``-`` → anything :class:`StdioRelay`; datagram → datagram
    :class:`DatagramRelay`; with ``--frame`` datagram → stream :class:`FramedDatagramRelay` and
    stream → datagram :class:`FramedStreamRelay`.
    """

    def __init__(
        self,
        config: RelayConfig,
        *,
        events: EventSink | None = None,
        listener: tuple[socket.socket, SocketAddress] | None = None,
    ) -> None:
        self.config = config
        self.listen_address, self.target_address = check_endpoints(
            config.listen, config.target, frame=config.frame
        )
        rules = config.rules
        listen = self.listen_address
        if (rules.filters_ip or rules.filters_credentials) and not (
            isinstance(listen, InetAddress | UnixAddress) and listen.is_stream
        ):
            raise UsageError(
                f"--allow/--deny/--allow-uid/--allow-gid check the peers of a stream listener, "
                f"not of {listen}"
            )
        if rules.filters_ip and isinstance(listen, UnixAddress):
            raise UsageError(
                "--allow/--deny filter IP peers, but LISTEN is a unix socket; use --allow-uid/--allow-gid"
            )
        if rules.filters_credentials and isinstance(listen, InetAddress):
            raise UsageError(
                "--allow-uid/--allow-gid need a unix LISTEN address (SO_PEERCRED); use --allow/--deny for IP"
            )
        # nan passes every comparison and inf overflows the event loop's timers: a finite number
        # in range, or a UsageError.
        for name, value in (
            ("connect_timeout", config.connect_timeout),
            ("idle_timeout", config.idle_timeout),
            ("stats_interval", config.stats_interval),
        ):
            if value is not None and not 0 < value <= MAX_SECONDS:
                raise UsageError(
                    f"{name} must be more than 0 and at most {MAX_SECONDS:.0f} seconds, not {value}"
                )
        if not 0 <= config.drain_timeout <= MAX_SECONDS:
            raise UsageError(
                f"drain_timeout must be from 0 to {MAX_SECONDS:.0f} seconds, not {config.drain_timeout}"
            )
        if config.max_conns is not None and config.max_conns < 1:
            raise UsageError(f"max_conns must be at least 1, not {config.max_conns}")
        if config.max_sessions < 1:
            raise UsageError(f"max_sessions must be at least 1, not {config.max_sessions}")
        if not 1 <= config.max_datagram <= 16 * 1024 * 1024:
            raise UsageError(f"max_datagram must be from 1 to 16 MiB, not {config.max_datagram}")
        _check_applies(listen, config)
        self.events = events or EventSink()
        self.stats = Stats()
        self.address: Address | None = None
        self.max_conns = config.max_conns or 0
        self._listener = listener
        target = self.target_address
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
        if config.raise_fd_limit:
            nofile, hard = raise_fd_limit()
        else:
            import resource

            nofile, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        budget = connection_budget(nofile)
        self.max_conns = config.max_conns or budget
        listen = self.listen_address
        if self.events.wants(1) and listen.is_stream and not isinstance(listen, StdioAddress):
            capped = (
                " (the hard limit; raising it needs CAP_SYS_RESOURCE or a higher ulimit -Hn)"
                if nofile == hard and nofile < WANTED_NOFILE
                else ""
            )
            self.events(
                "limits",
                f"fd budget: {nofile} descriptors{capped}: room for {budget} relayed connections "
                f"(2 sockets each; pipes are borrowed only while bytes are in flight); "
                f"max-conns {self.max_conns}",
                level=1,
                nofile=nofile,
                budget=budget,
                max_conns=self.max_conns,
            )
        if config.max_conns is not None and config.max_conns > budget:
            message = (
                f"--max-conns {config.max_conns} exceeds the fd budget ({nofile} descriptors: about "
                f"{budget} connections); clients past that are turned away"
            )
            self.events(
                "warning",
                f"enchufe: warning: {message}",
                max_conns=config.max_conns,
                budget=budget,
                detail=message,
            )
        if self._listener is None and isinstance(listen, InetAddress | UnixAddress):
            opener = open_listener if listen.is_stream else _open_datagram
            sock, real, owned = opener(
                listen, backlog=self.backlog, mode=config.mode, reuse_port=config.reuse_port
            )
            self._listener = (sock, real)
            self._owned = owned
        # The target must be resolvable (and valid) from the start: fail now, not per client.
        try:
            if self._resolver is not None:
                self._resolver.targets()
        except BaseException:
            self.close()
            raise
        self.address = self._listener[1] if self._listener is not None else listen
        return self.address

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
        previous = self._install_signals() if handle_signals else {}
        try:
            handler.start()
            if announce and self._listener is not None:
                self.events("listening", f"listening on {address}", address=str(address))
            if config.stats_interval:
                self._last = self.stats.snapshot()
                loop.call_later(config.stats_interval, self._report)
            if self._stops:
                self._on_wake()
            loop.run(until=self._done)
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)
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
        config = self.config
        listen, target = self.listen_address, self.target_address
        sock = self._listener[0] if self._listener is not None else None
        common: dict[str, Any] = {"stats": self.stats, "events": self.events}
        idle = self.idle_timeout
        if not listen.is_stream:
            assert sock is not None and self._resolver is not None
            kind = FramedDatagramRelay if target.is_stream else DatagramRelay
            return kind(
                loop,
                sock,
                self._resolver,
                max_sessions=config.max_sessions,
                idle_timeout=idle or DEFAULT_IDLE_TIMEOUT,
                max_datagram=config.max_datagram,
                connect_timeout=config.connect_timeout,
                on_listener_closed=self._release_file,
                **common,
            )
        options: dict[str, Any] = {
            **common,
            "pools": pools,
            "rules": config.rules,
            "max_conns": self.max_conns,
            "connect_timeout": config.connect_timeout,
            "idle_timeout": idle,
            "use_splice": config.splice,
            "on_listener_closed": self._release_file,
            "target": target,
        }
        if isinstance(listen, StdioAddress):
            return StdioRelay(loop, self._resolver, **options)
        assert sock is not None
        local = self._listener[1] if self._listener is not None else None
        stream: StreamRelay
        if not target.is_stream:
            stream = FramedStreamRelay(
                loop, sock, self._resolver, max_datagram=config.max_datagram, **options
            )
        else:
            stream = StreamRelay(loop, sock, self._resolver, local=local, **options)
        if config.max_conns is None:
            stream.limit_origin = "the limit the fd budget sets; see --max-conns"
        return stream

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

    def _install_signals(self) -> dict[int, signal.Handlers | int | None]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, signal.Handlers | int | None] = {}

        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop()

        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, handler)  # type: ignore[assignment]
        return previous

    def _on_wake(self) -> None:
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
                self.events(
                    "stopping",
                    f"stopping: closed {before} datagram session{'s' if before != 1 else ''} "
                    "(nothing in flight to wait for)",
                    open=0,
                    closed=before,
                    drain_timeout=drain,
                )
            elif open_now:
                self.events(
                    "stopping",
                    f"stopping: no new clients; waiting up to {drain:g} s for {open_now} open "
                    f"connection{'s' if open_now != 1 else ''} (signal again to cut them now)",
                    open=open_now,
                    drain_timeout=drain,
                )
            else:
                self.events("stopping", "stopping: no connection open", open=0, drain_timeout=drain)
            if open_now:
                assert self._loop is not None
                self._drain_timer = self._loop.call_later(drain, self._drain_expired)
        if stops >= 2 and handler.sessions:
            self._cut_all("stopped again before the drain ended")

    def _drain_expired(self) -> None:
        self._drain_timer = None
        self._cut_all(f"still open after the {self.config.drain_timeout:g} s drain (--drain-timeout)")

    def _cut_all(self, why: str) -> None:
        handler = self._handler
        assert handler is not None
        cut = handler.abort_all("shutdown")
        self._cut += cut
        self._finished = True
        if cut:
            self.events(
                "cut",
                f"enchufe: cut {cut} connection{'s' if cut != 1 else ''} {why}",
                cut=cut,
            )

    def _unexpected(self, line: str, exc: Exception) -> None:
        """A handler or timer raised and the engine ended its owner (one session, usually): a
        notice, since a peer may be what makes one fail, again and again."""
        self.events.notice("unexpected errors", "error", line, error=f"{type(exc).__name__}: {exc}")

    def _report(self) -> None:
        interval = self.config.stats_interval
        assert interval is not None and self._loop is not None and self._last is not None
        now = self.stats.snapshot()
        line, fields = interval_report(self._last, now)
        self._last = now
        self.events("stats", line, **fields)
        self._loop.call_later(interval, self._report)

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

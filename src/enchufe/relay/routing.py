"""Routing by TLS server name at run time: each route's resolver and certificate
(:class:`Router`), and the reading of a client's ClientHello off its socket (:class:`HelloRead`).

::

    router = Router.open(listen, target, config.routes)  # resolves every target, reads the certs
    HelloRead(loop, fd, router.hello_timeout, done, on_error).start()
    # done(event, data): a ClientHello (route it) or a Refused; ``data`` is every byte read

The read is bounded in bytes (:data:`~enchufe.clienthello.MAX_WIRE`) and in time: a client that
sends nothing, or too little, holds its connection slot until :attr:`Router.hello_timeout` and
is cut.  What was read is replayed to the target (passthrough) or fed to the TLS handshake
(termination): the client's bytes are never lost nor changed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .._text import printable
from ..address import Address, InetAddress, UnixAddress
from ..clienthello import NEED_MORE, ClientHello, Event, HelloReader, Refused
from ..errors import EnchufeError
from ..errors import reason as system_reason
from ..i18n import N_, _
from ..tlsparams import DEFAULT_HANDSHAKE_TIMEOUT
from .engine import Loop
from .events import EventSink
from .readstage import ReadStage
from .routes import NO_HELLO, UNMATCHED, Route, RouteTable, check_routes
from .stats import Stats
from .targets import TargetResolver
from .tlsfiles import file_stamp

if TYPE_CHECKING:
    from .._tlsstream import TLSSetup
    from .engine import OnError

__all__ = [
    "UNRECOGNIZED_NAME",
    "HelloRead",
    "Router",
    "Unrouted",
    "refused_notice",
    "routed_event",
    "tell_unrecognized",
]

#: Why a client goes nowhere: the words, the reason (``no-hello``, ``unmatched``) and the
#: reader's refusal kind (``not-tls``, ``timeout``, …; empty when its hello was fine).
Unrouted = tuple[str, str, str]

#: A fatal ``unrecognized_name`` alert (RFC 6066 §3), what a TLS client is told when no route
#: takes its server name: ``openssl s_client`` shows it as such, instead of a bare reset.
UNRECOGNIZED_NAME = b"\x15\x03\x03\x00\x02\x02\x70"


class Router:
    """The routes of a relay, each with its target's resolver and (terminating) certificate."""

    __slots__ = ("_listen", "_resolvers", "_setups", "hello_timeout", "reload_interval", "table")

    def __init__(
        self,
        table: RouteTable,
        listen: Address,
        idle_timeout: float | None = None,
        reload_interval: float | None = None,
    ) -> None:
        self.table = table
        #: --reload-interval: seconds between looks at the routes' certificate files
        self.reload_interval = reload_interval
        self._listen = listen
        self._resolvers = {route: TargetResolver(route.target) for route in table.routes}
        self._setups = self._load_setups()
        params = listen.tls if isinstance(listen, InetAddress | UnixAddress) else None
        timeout = params.handshake_timeout if params is not None else DEFAULT_HANDSHAKE_TIMEOUT
        #: seconds a client has to send its ClientHello (the handshake timeout, or
        #: --idle-timeout if shorter)
        self.hello_timeout = min(timeout, idle_timeout) if idle_timeout else timeout

    @classmethod
    def open(
        cls,
        listen: Address,
        target: Address,
        routes: Iterable[str],
        idle_timeout: float | None = None,
        reload_interval: float | None = None,
    ) -> Router:
        """The router of ``routes``, every target resolved once and every certificate read now:
        a bad one fails the relay before it serves (UsageError, AddressError, NameResolutionError)."""
        router = cls(check_routes(listen, target, routes), listen, idle_timeout, reload_interval)
        for resolver in router._resolvers.values():
            resolver.targets()
        return router

    def _load_setups(self) -> dict[Route, TLSSetup]:
        """The server side of each route with its own certificate (a ``tls://`` LISTEN)."""
        listen = self._listen
        if not isinstance(listen, InetAddress | UnixAddress) or listen.tls is None:
            return {}
        from .._tlsstream import server_setup, with_tls

        setups = {}
        for route in self.table.routes:
            if route.cert is None:
                continue
            params = dataclasses.replace(listen.tls, cert=route.cert, key=route.key, cert_auto=False)
            setup = server_setup(with_tls(listen, params))
            assert setup is not None
            setups[route] = setup
        return setups

    def choose(self, event: Event, stats: Stats) -> Route | Unrouted:
        """The route for a client whose ClientHello reading ended in ``event``, or why there is
        none; counted in ``stats.routes`` either way."""
        routes = stats.routes
        if isinstance(event, Refused):
            routes[NO_HELLO] = routes.get(NO_HELLO, 0) + 1
            return _("no ClientHello: {detail}").format(detail=event.detail), "no-hello", event.kind
        assert isinstance(event, ClientHello)
        route = self.table.match(event.server_name, event.alpn)
        if route is None:
            routes[UNMATCHED] = routes.get(UNMATCHED, 0) + 1
            if event.server_name:
                why = _("no route for server name {name} and no default TARGET").format(
                    name=printable(event.server_name)
                )
            else:
                why = _("no route for server name none (no SNI) and no default TARGET")
            return why, "unmatched", ""
        routes[route.label] = routes.get(route.label, 0) + 1
        return route

    def resolver(self, route: Route) -> TargetResolver:
        return self._resolvers[route]

    def setup(self, route: Route, listener: TLSSetup) -> TLSSetup:
        """The server side a client routed by ``route`` is served with: its certificate's, or
        the listener's."""
        return self._setups.get(route, listener)

    def files(self) -> tuple[str, ...]:
        """The routes' certificate files, as ``route NAME cert=PATH`` (for reload lines)."""
        return tuple(
            f"route {route.label} cert={route.cert}" + (f" key={route.key}" if route.key else "")
            for route in self._setups
        )

    def stamps(self) -> tuple[object, ...]:
        """What changes when one of the routes' certificate or key files is replaced or rewritten."""
        return tuple(file_stamp(path) for route in self._setups for path in (route.cert, route.key) if path)

    def reload(self) -> EnchufeError | None:
        """Read the routes' certificates again (all, or none: a bad one keeps the old ones)."""
        try:
            setups = self._load_setups()
        except EnchufeError as exc:
            return exc
        self._setups = setups
        return None


class HelloRead(ReadStage):
    """Reads a client's ClientHello off ``fd`` (non-blocking, on the relay's loop), then calls
    ``done(event, data)`` once: the :class:`~enchufe.clienthello.ClientHello` or a
    :class:`~enchufe.clienthello.Refused` (``kind`` ``timeout`` or ``reset`` besides the
    reader's), and every byte read.  ``fd`` is watched only meanwhile (see :mod:`.readstage`)."""

    __slots__ = ("_reader",)

    def __init__(
        self, loop: Loop, fd: int, timeout: float, done: Callable[[Event, bytes], None], on_error: OnError
    ) -> None:
        super().__init__(loop, fd, timeout, done, on_error)
        self._reader = HelloReader()

    def _on_read(self, _events: int) -> None:
        reader = self._reader
        event: Event = NEED_MORE
        while event is NEED_MORE:  # each read takes at least a byte of the bounded room, or ends it
            try:
                data = os.read(self._fd, reader.room)
            except BlockingIOError:
                return
            except OSError as exc:
                reason = system_reason(exc)
                event = Refused("reset", _("the client's connection failed: {reason}").format(reason=reason))
                break
            event = reader.feed(data)
        self._finish(event, reader.data)

    def _timed_out(self) -> None:
        got = len(self._reader.data)
        seconds = f"{self._timeout:g}"
        if got:
            why = _("sent {size} bytes, not a whole ClientHello, within {seconds} s").format(
                size=got, seconds=seconds
            )
        else:
            why = _("sent nothing within {seconds} s").format(seconds=seconds)
        self._finish(Refused("timeout", why), self._reader.data)


def routed_event(session_id: int, hello: ClientHello, route: Route) -> tuple[str, dict[str, Any]]:
    """The "route" event's line and fields (-v, --json): the name the client asked for, its ALPN
    list, and where it goes."""
    name = printable(hello.server_name or "")
    line = _("#{id} server name {name} → route {route} ({target})").format(
        id=session_id, name=name or _("(none)"), route=route.label, target=route.target
    )
    return line, {
        "level": 1,
        "id": session_id,
        "server_name": name,
        "alpn": [printable(protocol) for protocol in hello.alpn],
        "route": route.label,
        "target": str(route.target),
    }


def refused_notice(events: EventSink, session_id: int, peer: str, why: str, reason: str, kind: str) -> None:
    """The one line (a rate-limited notice: any client can cause it) about a client refused
    for want of a route."""
    events.notice(
        N_("clients without a route"),
        "refused",
        _("enchufe: refused {peer} #{id}: {why}").format(peer=peer, id=session_id, why=why),
        id=session_id,
        peer=peer,
        reason=reason,
        detail=why,
        **({"hello": kind} if kind else {}),
    )


def tell_unrecognized(fd: int) -> bool:
    """Send the client an ``unrecognized_name`` alert (its socket has room: it sent only its
    hello); whether it went."""
    try:
        return os.write(fd, UNRECOGNIZED_NAME) == len(UNRECOGNIZED_NAME)
    except OSError:
        return False

"""What happens in a stream session before its bytes are relayed, and first after its target opens.

::

    PreludeSession.start()
      ├─ --accept-proxy: the client's PROXY header (ProxyRead, see .proxying): the client it
      │    names is the peer from then on, judged by the access rules; refused: closed
      ├─ --route: its ClientHello (HelloRead, see .routing), which chooses the route
      └─ _begin()  (the session's: a TLS handshake, or opening the target)
    once the target is open, before anything of the client (_first_through):
      the PROXY header of --send-proxy, then the ClientHello read (passthrough), replayed

Both reads are stages on the relay's loop (:mod:`.readstage`), each bounded by its timeout
(none is made when all of it came with the connection, as it most often does).  The header's
bytes are taken off the socket alone, so the ClientHello and the payload after it stay in the
kernel; except in a session whose class says so (``early_payload``: a plain one, without
--route, TLS or faults; a SOCKS one), which reads its header and what came with it in one call:
a plain session replays that payload to the target first, as it does a ClientHello; a SOCKS
session's handshake starts with it.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any, ClassVar

from .._proxyaccept import HeaderRead, take_first
from ..clienthello import ClientHello, Event
from ..clienthello import Refused as HelloRefused
from ..proxyproto import NeedMore, Result
from .engine import WRITE
from .proxying import ProxyRead, Refusal, header_for, header_now, refused_notice, take_header
from .readstage import ReadStage
from .routes import Route
from .routing import HelloRead, routed_event, tell_unrecognized
from .routing import refused_notice as unrouted_notice
from .session import RelaySession
from .sides import Side

if TYPE_CHECKING:
    from .._tlsstream import TLSSetup
    from ..tlsinfo import TLSInfo
    from .stream import StreamRelay

__all__ = ["PreludeSession"]


class PreludeSession(RelaySession):
    """A stream session's first steps (see the module); :class:`~.stream_session.StreamSession`
    is the rest."""

    __slots__ = ("_header", "_replay", "_stage", "route", "server_name")

    #: Whether what a client sends after its PROXY header may be read with it, to be written
    #: to the target first (see :meth:`start`): only where a class says so itself.
    early_payload: ClassVar[bool] = False

    relay: StreamRelay
    client: Side
    target: Side | None

    def __init__(
        self, relay: StreamRelay, client_sock: socket.socket | None, peer: Any, session_id: int
    ) -> None:
        super().__init__(relay, client_sock, peer, session_id)
        #: the stage reading what the client sends first (its PROXY header, its ClientHello)
        self._stage: ReadStage | None = None
        #: bytes the target gets first: the PROXY header (--send-proxy), then the ClientHello read
        self._header = b""
        self._replay = b""
        #: --route: the route chosen; the server name the ClientHello asked for
        self.route: Route | None = None
        self.server_name: str | None = None

    def _begin(self) -> None:
        """What the client sent first is in: go on (a handshake, or opening the target)."""
        raise NotImplementedError

    def start(self) -> None:
        relay = self.relay
        policy = relay.proxy_policy
        if policy is None:
            if relay.router is None and not relay.send_proxy:
                self._begin()  # nothing to read first (most relays): one call less
                return
            self._route()
            return
        sock = self.client_sock
        assert sock is not None
        # The header most often came with the connection, and the client's first bytes with it.
        if relay.router is None and type(self).__dict__.get("early_payload"):
            # What follows the header goes to the target first (_first_through): header and
            # payload in one recv.  Declared by the session's own class, not inherited: one
            # that writes its target otherwise (TLS, faults) reads the header alone.
            result, data = take_first(sock, policy)
            if not isinstance(result, NeedMore):
                self._replay = data
                self._proxy_read(result)
                return
            read = HeaderRead(policy)
            read.took(data)
        else:
            read = HeaderRead(policy)
            if header_now(sock, read):  # no stage to make
                self._proxy_read(read.result)
                return
        self._stage = ProxyRead(relay.loop, sock, policy, read, self._proxy_read, self.crashed)
        self._stage.watch()

    # -- --accept-proxy: the PROXY header first

    def _proxy_read(self, result: Result) -> None:
        self._stage = None
        assert self.client_sock is not None
        taken = take_header(result, self.client_sock, self.peer, self.relay.rules)
        if isinstance(taken, tuple):
            self._proxy_refused(taken)
            return
        self.proxied = taken
        relay = self.relay
        if relay.router is None and relay.send_proxy != 2:
            self._begin()  # no ClientHello to read (what _route would find): one call less
            return
        self._route()

    def _proxy_refused(self, refusal: Refusal) -> None:
        """One line, counted as refused; the client is reset."""
        relay = self.relay
        relay.stats.refused += 1
        refused_notice(relay.events, self.id, refusal)
        self._end(refusal[1], abortive=True, quiet=True)

    # -- --route: the ClientHello, then the route

    def _route(self) -> None:
        relay = self.relay
        router = relay.router
        if router is not None:
            timeout = router.hello_timeout
        elif relay.send_proxy == 2 and relay.client_tls is not None:
            # The server name, for the header's authority: OpenSSL keeps none on a server side.
            timeout = relay.client_tls.params.handshake_timeout
        else:
            self._begin()
            return
        self._stage = HelloRead(relay.loop, self.client.rfd, timeout, self._hello_read, self.crashed)
        self._stage.start()

    def _hello_read(self, event: Event, data: bytes) -> None:
        """The ClientHello is in (or refused): choose the route, then open its target."""
        self._stage = None
        relay = self.relay
        router = relay.router
        if isinstance(event, ClientHello):
            self.server_name = event.server_name
        if router is None:  # read for --send-proxy: the handshake takes it (and tells what is wrong)
            self._unread(event, data)
            return
        route = router.choose(event, relay.stats)
        if not isinstance(route, Route):
            self._unrouted(*route)
            return
        self.route = route
        self.resolver = router.resolver(route)
        self.target_label = str(route.target)
        self._replay = data
        if relay.events.wants(1):
            assert isinstance(event, ClientHello)
            line, fields = routed_event(self.id, event, route)
            relay.events("route", line, **fields)
        self._begin()

    def _unrouted(self, why: str, reason: str, kind: str) -> None:
        """This client goes nowhere: one notice; a TLS client whose server name has no route
        is told so by an ``unrecognized_name`` alert, others are reset."""
        relay = self.relay
        unrouted_notice(relay.events, self.id, self.peer_label(), why, reason, kind)
        alert = reason == "unmatched" and tell_unrecognized(self.client.wfd)
        self._end(reason, abortive=not alert, quiet=True)

    def _unread(self, event: Event, data: bytes) -> None:
        """A ClientHello read only for its server name goes to the handshake, unless the client
        was too slow or failed: then it ends as a failed handshake would."""
        if isinstance(event, HelloRefused) and event.kind in ("timeout", "reset"):
            failures = self.relay.stats.tls_failures
            failures[event.kind] = failures.get(event.kind, 0) + 1
            self._end("tls-failed", abortive=True, error=event.detail)
            return
        self._replay = data
        self._begin()

    def routed_setup(self, listener: TLSSetup) -> tuple[TLSSetup, bytes]:
        """A terminating session's server side (the route's certificate, or the listener's)
        and the bytes of the ClientHello already read, for the handshake to take first."""
        router = self.relay.router
        data, self._replay = self._replay, b""
        if router is None or self.route is None:
            return listener, data
        return router.setup(self.route, listener), data

    # -- what the target gets first

    def client_tls(self) -> TLSInfo | None:
        """What the relay agreed with the client, when it terminated its TLS (hook)."""
        return None

    def _prepare_first(self) -> None:
        """--send-proxy: the target is about to be opened; the PROXY header it gets first."""
        version = self.relay.send_proxy
        assert version is not None
        self._header = header_for(self, version, self.client_tls(), self.server_name)

    def _first_through(self) -> bool:
        """The PROXY header, then the bytes read ahead (a ClientHello, or the payload that came
        with a PROXY header), go to the target before anything else: whether all of it went.
        False while the target's socket has no room (the session waits for it to be writable),
        and when it failed: the target's failure then (the next address is tried, or the client
        told).  Only the client's bytes count as sent to the target."""
        target = self.target
        assert target is not None
        try:
            while self._header or self._replay:
                first = self._header or self._replay
                try:
                    sent = os.write(target.wfd, first)
                except BlockingIOError:
                    target.want(self.relay.loop, WRITE, False)
                    if self._connect_deadline:  # a connect phase (not a child's pipe): it waits
                        self._arm_connect_timer()
                    return False
                if self._header:
                    self._header = self._header[sent:]
                    continue
                self._replay = self._replay[sent:]
                self.to_target += sent
                self.relay.stats.to_target += sent
        except OSError as exc:
            self._next_target(exc)
            return False
        return True

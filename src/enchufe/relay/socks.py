"""``enchufe socks``: a SOCKS5 server made of the relay, each client's target named by its request
(and an HTTP CONNECT proxy on the same listener: the first byte tells, see .socks_handshake).

::

    SocksRelay (a StreamRelay: accept, --allow/--deny, --max-conns, drain, stats)
      └─ SocksSession (a StreamSession)
           ├─ the prelude (--accept-proxy's header, if any), then the "accept" event
           ├─ the handshake on the relay's loop (greeting, username/password, request; see
           │    .socks_handshake and enchufe._socks5_server), bounded by --handshake-timeout
           ├─ the destination judged by --allow-dest/--deny-dest on its name, resolved off the
           │    loop (.lookups), and judged again on every address it resolved to
           ├─ open the target as the relay does (addresses in order, --connect-timeout)
           ├─ the reply (SOCKS code 0 and the bound address), then the relay's pumps (splice)
           └─ UDP ASSOCIATE instead: a datagram relay (.socks_udp) until the connection ends

A request refused, or a target that cannot be opened, gets its SOCKS reply code (2 the rules,
4 unreachable or unresolvable, 5 refused, 6 timed out, 7 a command, 8 an address type) and
the connection is closed in order (the reply must arrive).  A client that says nothing, or too
little, is cut when the handshake's time is up: it holds only its own slot meanwhile.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from socket import inet_aton
from typing import TYPE_CHECKING, Any

from .. import _socks5_server as socks5
from .._fastinit import make
from .._hop_socks5 import ATYP_IPV4, CONNECT, VERSION
from .._http_connect_server import ESTABLISHED, HttpConnectServer, http_reply, http_status
from .._resolve import Target
from .._socks5_server import Request, Socks5Server, Step, reply, reply_words
from .._socks_rules import SocksPolicy
from .._text import printable
from ..address import InetAddress, StdioAddress, from_sockaddr
from ..errors import EnchufeError
from ..errors import reason as system_reason
from ..i18n import N_, _
from .engine import READ
from .lookups import Lookups, Pending
from .proxying import client_address
from .session import CONNECTING
from .sides import UNREGISTERED, Side
from .socks_handshake import READ_SIZE, HandshakeClock, SocksHandshake
from .socks_udp import UdpAssociation, hostport
from .stream import StreamRelay

if TYPE_CHECKING:
    from .engine import Loop, Timer

__all__ = ["SocksRelay", "SocksSession"]

#: What a connect's error tells the client (RFC 1928's codes).
_CODES = {
    errno.ECONNREFUSED: socks5.CONNECTION_REFUSED,
    errno.EHOSTUNREACH: socks5.HOST_UNREACHABLE,
    errno.ENETUNREACH: socks5.NETWORK_UNREACHABLE,
    errno.ETIMEDOUT: socks5.TTL_EXPIRED,
    errno.EACCES: socks5.CONNECTION_NOT_ALLOWED,
    errno.EPERM: socks5.CONNECTION_NOT_ALLOWED,
}


class SocksRelay(StreamRelay):
    """The handler of ``enchufe socks``'s listener: a :class:`StreamRelay` whose sessions take
    their target from the client's request."""

    def __init__(
        self, loop: Loop, listener: socket.socket | None, policy: SocksPolicy, **options: Any
    ) -> None:
        options["target"] = StdioAddress()  # no fixed target: each request names one
        super().__init__(loop, listener, None, **options)
        self.policy = policy
        self.one_client = self.runs_programs = False
        self.target_label = _("(the client's request)")
        self.lookups = Lookups(loop)
        #: whether any --allow-dest/--deny-dest is given (worked out once: every request asks)
        self.dest_rules = bool(policy.rules)
        #: every client's handshake, bounded by one timer (see .socks_handshake)
        self.clock = HandshakeClock(loop, policy.handshake_timeout)

    def make_session(self, conn: socket.socket, peer: Any, session_id: int) -> SocksSession:
        return SocksSession(self, Side(conn), conn, peer, session_id)

    def close(self) -> None:
        self.clock.close()
        self.lookups.close()
        super().close()


def _send(fd: int, data: bytes) -> bool:
    """A handshake answer (a few bytes) to a client that has sent only its handshake: its
    socket has room, so all of it goes at once; whether it did."""
    try:
        return os.write(fd, data) == len(data)
    except OSError:
        return False


class SocksSession(SocksHandshake):
    """One SOCKS client: its handshake (see .socks_handshake), then a relayed stream to the
    target it named."""

    __slots__ = (
        "_asked",
        "_code",
        "_lookup",
        "_lookup_timer",
        "_name_allowed",
        "_replied",
        "_udp",
        "request",
    )

    relay: SocksRelay
    early_payload = True  # what comes with a PROXY header is the handshake's first bytes

    def __init__(
        self, relay: SocksRelay, client: Side, client_sock: socket.socket | None, peer: Any, session_id: int
    ) -> None:
        super().__init__(relay, client, client_sock, peer, session_id)
        self.request: Request | None = None
        self._lookup: Pending | None = None
        self._lookup_timer: Timer | None = None
        #: the reply code of a target that could not be opened
        self._code = socks5.GENERAL_FAILURE
        self._replied = False
        #: an --allow-dest rule named the destination: its addresses need no rule of their own
        self._name_allowed = False
        #: UDP ASSOCIATE: the association, which lives as long as this (control) connection
        self._udp: UdpAssociation | None = None
        #: the handshake's state machine (SocksHandshake's), while it lasts: from _begin
        self._machine: Socks5Server | HttpConnectServer | None = None
        self._http: bool | None = False

    def _handshake_done(self, step: Step | None, why: str | None) -> None:
        if step is None or step.request is None:
            # Refused by the handshake (its answer sent), or the client failed: reset then.
            reason = step.refused if step is not None else why
            self._refused(reason or _("no request"), code=None, abortive=step is None)
            return
        request = self.request = step.request
        self._replay = step.leftover  # sent before anything else once the target is open
        host, port = request.host, request.port
        if request.by_name:
            self.target_label = f"tcp://{request.hostport}"
        else:  # an IP address, printable as it is: request.hostport without its calls
            self.target_label = f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
        relay = self.relay
        if relay.events.level >= 1:  # events.wants(1), inlined
            self._asked = time.monotonic()
            self._announce_request(request)
        if request.command != CONNECT:
            self._associate(request)
            return
        if request.by_name:
            denied, self._name_allowed = relay.policy.rules.check_name(request.host, request.port)
            if denied is not None:
                self._refused(
                    f"{request.command_name} {request.hostport}: {denied}", code=socks5.CONNECTION_NOT_ALLOWED
                )
                return
        elif port:
            # An IP address (what most clients ask for) needs no lookup: its one address at once,
            # judged by the rules if there are any.
            if ":" in host:
                target = _ipv6_target(host, port)
            else:  # as getaddrinfo would give it: Target(…), made fast (see enchufe._fastinit)
                target = object.__new__(Target)
                target.__dict__.update(family=socket.AF_INET, sockaddr=(host, port), dual_stack=False)
            if relay.dest_rules:
                self._resolved([target])
                return
            self.resolver = _Resolved((target,))  # type: ignore[assignment]  # what _open_targets asks
            self._open_target()
            return
        self._unwatch()
        address = InetAddress("tcp", request.host, request.port)
        lookup = relay.lookups.resolve(address, self._resolved, self.crashed)
        if not lookup.cancelled:  # under way: bounded as a connect is
            self._lookup = lookup
            self._lookup_timer = relay.loop.call_later(relay.connect_timeout, self._lookup_late, self.crashed)

    def _connect_began(self) -> float:
        """The request: the client's own handshake is not the target's connect."""
        asked: float = getattr(self, "_asked", self.started)
        return asked

    def _announce_request(self, request: Request) -> None:
        """The "request" event (-v)."""
        if request.user is not None:
            line = _("#{id} {command} {destination} (user {user})").format(
                id=self.id,
                command=request.command_name,
                destination=request.hostport,
                user=printable(request.user),
            )
        else:
            line = f"#{self.id} {request.command_name} {request.hostport}"
        self.relay.events(
            "request",
            line,
            level=1,
            id=self.id,
            peer=self.peer_label(),
            command=request.command_name,
            destination=request.hostport,
            **({"user": printable(request.user)} if request.user is not None else {}),
        )

    def _lookup_late(self) -> None:
        """The resolver did not answer within --connect-timeout: reply 4, and close."""
        self._lookup_timer = None
        if self._lookup is not None:
            self._lookup.cancel()
            self._lookup = None
            request = self.request
            assert request is not None
            seconds = self.relay.connect_timeout
            why = _("{command} {destination}: no answer from the resolver within {seconds} s").format(
                command=request.command_name, destination=request.hostport, seconds=f"{seconds:g}"
            )
            self._refused(why, code=socks5.HOST_UNREACHABLE)

    def _resolved(self, answer: list[Target] | EnchufeError) -> None:
        """The destination's addresses (or why none): the allowed ones are tried in order."""
        self._lookup = None
        if self._lookup_timer is not None:
            self._lookup_timer.cancel()
            self._lookup_timer = None
        request = self.request
        assert request is not None
        if isinstance(answer, EnchufeError):
            self._refused(
                f"{request.command_name} {request.hostport}: {answer}", code=socks5.HOST_UNREACHABLE
            )
            return
        rules = self.relay.policy.rules
        allowed: list[Target] = []
        denied = None
        for target in answer:
            host = str(target.sockaddr[0])
            why = rules.check_address(host, request.port, self._name_allowed) if rules else None
            if why is None:
                allowed.append(target)
            else:
                denied = why
        if not allowed:
            self._refused(
                f"{request.command_name} {request.hostport}: {denied}", code=socks5.CONNECTION_NOT_ALLOWED
            )
            return
        self.resolver = _Resolved(allowed)  # type: ignore[assignment]
        self._open_target()

    def _open_target(self) -> None:
        """As the relay opens a socket target (the client watched for errors only meanwhile,
        and only if the target is not open at once: see StreamSession._open_target)."""
        relay = self.relay
        client = self.client
        assert client.sock is not None
        if relay.send_proxy:
            self._prepare_first()
        self._open_targets()
        if self.state == CONNECTING and client.mask:  # not open at once: errors only, meanwhile
            if client.mask == UNREGISTERED:
                relay.loop.register(client.rfd, 0, self._on_client, self.crashed)
            else:  # still watched for the handshake
                relay.loop.modify(client.rfd, 0)
            client.mask = 0

    def _connected(self, *, announce: bool = True) -> None:
        if not self._replied:
            self._replied = True
            sock = self.target_sock
            assert sock is not None
            sockaddr = sock.getsockname()
            if self._http:
                answer = ESTABLISHED
            elif isinstance(sockaddr, tuple) and len(sockaddr) == 2:
                # IPv4 (its shape tells: sock.family is an enum lookup): reply(…), inlined
                answer = _IPV4_SUCCEEDED + inet_aton(sockaddr[0]) + sockaddr[1].to_bytes(2, "big")
            else:
                answer = _bound_reply(sockaddr)
            try:  # _send, inlined
                whole = os.write(self.client.wfd, answer) == len(answer)
            except OSError:
                whole = False
            if not whole:
                self.relay.stats.reset += 1
                self._end("client-reset", abortive=True, error=_("the client does not take the reply"))
                return
        super()._connected(announce=announce)

    # -- UDP ASSOCIATE: a datagram relay for as long as the control connection lasts

    def _associate(self, request: Request) -> None:
        relay = self.relay
        sock = self.client_sock
        assert sock is not None
        # Behind a PROXY header the client's datagrams come from its real address; a LOCAL or
        # UNKNOWN header names none, and the connection's own peer stands.
        proxied = self.proxied.peer if self.proxied is not None else None
        client = proxied if proxied is not None else client_address(sock, self.peer)
        if not isinstance(client, InetAddress) or sock.family == socket.AF_UNIX:
            why = _("UDP ASSOCIATE needs a TCP client (it names where datagrams come from)")
            self._refused(why, code=socks5.COMMAND_NOT_SUPPORTED)
            return
        try:
            udp = UdpAssociation(
                relay.loop,
                relay.lookups,
                relay.policy.rules,
                sock,
                client.host,
                request.port,
                self.crashed,
                self._count,
                self._datagram_denied,
            )
        except OSError as exc:
            reason = system_reason(exc)
            self._refused(
                _("UDP ASSOCIATE: no UDP socket: {reason}").format(reason=reason), code=socks5.GENERAL_FAILURE
            )
            return
        self._udp = udp
        self._connect_done()
        self._unwatch()
        self.target_label = f"udp://{hostport(*udp.bound)}"
        if not _send(self.client.wfd, reply(socks5.SUCCEEDED, *udp.bound)):
            self._end("client-reset", abortive=True, error=_("the client does not take the reply"))
            return
        relay.loop.register(self.client.rfd, READ, self._on_control, self.crashed)
        self.client.mask = READ
        if relay.events.wants(1):
            relay.events(
                "connect",
                _("#{id} UDP relay at {address} for {destination}").format(
                    id=self.id, address=self.target_label, destination=request.hostport
                ),
                level=1,
                id=self.id,
                target=self.target_label,
            )
        self._arm_idle()

    def _on_control(self, _events: int) -> None:
        """The control connection: its end (EOF or error) ends the association; anything the
        client sends on it meanwhile means nothing, and is read away."""
        try:
            data = os.read(self.client.rfd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._end("client-reset", abortive=True, error=system_reason(exc))
            return
        if not data:
            self._end("done")

    def _datagram_denied(self, destination: str, why: str) -> None:
        """A datagram of the association that the rules dropped: a notice (rate-limited)."""
        shown = self.peer_label()
        self.relay.events.notice(
            N_("datagrams dropped by the rules"),
            "refused",
            _("enchufe: dropped a datagram of {peer} #{id} to {destination}: {why}").format(
                peer=shown, id=self.id, destination=printable(destination), why=why
            ),
            id=self.id,
            peer=shown,
            reason="socks-udp",
            destination=printable(destination),
            detail=why,
        )

    def _count(self, to_target: int, to_client: int) -> None:
        """Payload bytes of datagrams relayed (for stats, the close event and the idle timer)."""
        self.to_target += to_target
        self.to_client += to_client
        stats = self.relay.stats
        stats.to_target += to_target
        stats.to_client += to_client
        self._last_active = time.monotonic()

    # -- refusals and failures: the reply code, then an orderly close

    def _refused(self, why: str, *, code: int | None, abortive: bool = False) -> None:
        """The client goes nowhere: its reply (``code``), one notice line, the connection closed."""
        relay = self.relay
        relay.stats.refused += 1
        if code is not None:
            _send(self.client.wfd, self._reply(code))
        shown = self.peer_label()
        if code is not None and self._http:
            line = _("enchufe: refused {peer} #{id}: {why} (HTTP {status})").format(
                peer=shown, id=self.id, why=why, status=http_status(code)
            )
        elif code is not None:
            line = _("enchufe: refused {peer} #{id}: {why} (SOCKS reply {code}: {words})").format(
                peer=shown, id=self.id, why=why, code=code, words=reply_words(code)
            )
        else:
            line = _("enchufe: refused {peer} #{id}: {why}").format(peer=shown, id=self.id, why=why)
        relay.events.notice(
            N_("refused SOCKS clients"),
            "refused",
            line,
            id=self.id,
            peer=shown,
            reason="socks",
            detail=why,
            **({"reply": code} if code is not None else {}),
            **({"destination": self.request.hostport} if self.request is not None else {}),
        )
        self._end("refused", abortive=abortive, quiet=True)

    def _next_target(self, exc: OSError) -> None:
        self._code = _CODES.get(exc.errno or 0, socks5.GENERAL_FAILURE)
        super()._next_target(exc)

    def _connect_timed_out(self) -> None:
        self._code = socks5.TTL_EXPIRED
        super()._connect_timed_out()

    def _reply(self, code: int) -> bytes:
        """What tells the client its request failed (``code``: SOCKS's words for why), in its
        protocol: a SOCKS5 reply, or an HTTP response."""
        return http_reply(code) if self._http else reply(code)

    def _fail_target(self, message: str, *, abortive: bool = True) -> None:
        code = self._code
        _send(self.client.wfd, self._reply(code))
        if self.relay.events.wants(1):
            if self._http:  # the client was answered in HTTP: its status, and SOCKS's words for why
                line = _("#{id} HTTP {status}: {words}").format(
                    id=self.id, status=http_status(code), words=reply_words(code)
                )
            else:
                line = _("#{id} SOCKS reply {code}: {words}").format(
                    id=self.id, code=code, words=reply_words(code)
                )
            fields = {"status": http_status(code)} if self._http else {}
            self.relay.events("reply", line, level=1, id=self.id, reply=code, **fields)
        super()._fail_target(message, abortive=False)

    def _release(self, abortive: bool) -> None:
        if self._machine is not None:  # ended during its handshake (cut, drained)
            self._machine = None
            self.relay.clock.waiting.pop(self, None)
        if self._lookup is not None:
            self._lookup.cancel()
            self._lookup = None
        if self._lookup_timer is not None:
            self._lookup_timer.cancel()
            self._lookup_timer = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        super()._release(abortive)


def _ipv6_target(host: str, port: int) -> Target:
    """The address of a request for an IPv6 address, as getaddrinfo would give it: in the C
    library's text (an IPv4-mapped address with its dotted tail, as the rules see it)."""
    text = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, host))
    return make(Target, {"family": socket.AF_INET6, "sockaddr": (text, port, 0, 0), "dual_stack": False})


#: The start of a successful reply naming an IPv4 address (see enchufe._socks5_server.reply).
_IPV4_SUCCEEDED = bytes([VERSION, socks5.SUCCEEDED, 0, ATYP_IPV4])


def _bound_reply(sockaddr: Any) -> bytes:
    """The successful reply naming where the target sees us, other than IPv4."""
    host, port = "0.0.0.0", 0
    if isinstance(sockaddr, tuple):
        bound = from_sockaddr(socket.AF_INET6, socket.SOCK_STREAM, sockaddr)
        assert isinstance(bound, InetAddress)
        host, port = bound.host, bound.port
    return reply(socks5.SUCCEEDED, host, port)


class _Resolved(list[Target]):
    """The addresses a request's destination resolved to (and the rules let through), as a
    :class:`~.targets.TargetResolver` gives them (:meth:`targets`): made and asked in C, no
    Python frame."""

    __slots__ = ()

    #: what _open_targets asks: the addresses (a copy: it is the caller's)
    targets = list.copy

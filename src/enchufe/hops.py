"""Proxy hops (``--via URL``, ``via=[…]``): the proxy URL and the handshakes, with no I/O.

A hop is a proxy that opens a tunnel to the next hop, or to the target: SOCKS5 (RFC 1928, with
the username/password method of RFC 1929) or HTTP CONNECT (with Basic credentials)::

    socks5://[USER:PASS@]HOST:PORT     the proxy resolves names: a target's name is sent as is
    http://[USER:PASS@]HOST:PORT       HTTP CONNECT HOST:PORT

:func:`parse_hop` reads a URL (userinfo percent-decoded); ``str(hop)`` shows it with the
password masked (``socks5://user:***@host:1080``), and nothing here ever shows a password.

A handshake is a state machine in the style of h11: the driver sends :meth:`Handshake.start`'s
bytes, then feeds what the proxy says to :meth:`Handshake.receive`, which answers with one event:

* :class:`NeedMore` — nothing to do until more bytes come;
* :class:`Send` — send these bytes, then go on reading;
* :class:`Established` — the tunnel is open; ``leftover`` holds the bytes that came after the
  proxy's reply (the next hop's, or the target's).

A proxy that says no, or that does not speak the protocol, raises :class:`HopRefused` (the hop,
and the reason in words: the SOCKS reply code, the HTTP status line, escaped); so does the end of
the stream before the reply (:meth:`Handshake.eof`).  Nothing else is ever raised by
:meth:`~Handshake.receive`, whatever the bytes and however they are split.  Each event carries
``said``: the lines ``--trace`` prints about what was sent and received.  :class:`Chain` runs
the handshakes of several hops in order over one connection.

A single SOCKS5 hop may instead be asked for a UDP association (``udp=True``): its reply says
where the proxy's relay takes datagrams, which then carry the header of
:func:`enchufe._hop_socks5.udp_wrap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from . import trace
from ._hop_url import ACCEPTED, EXAMPLE, SCHEMES, credentials, host_port, masked
from ._inet_text import check_host_name, literal_family
from ._text import printable
from .address import Address, InetAddress
from .errors import AddressError, NetworkError
from .i18n import _

__all__ = [
    "Chain",
    "Established",
    "Handshake",
    "Hop",
    "HopRefused",
    "NeedMore",
    "Send",
    "check_host",
    "check_target",
    "handshake",
    "parse_hop",
    "parse_hops",
    "shown_answer",
]


@dataclass(frozen=True)
class Hop:
    """One proxy: ``scheme`` (``socks5`` or ``http``), where it listens, and its credentials.

    ``str()`` and ``repr()`` mask the password; :attr:`address` is where to connect to it."""

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def address(self) -> InetAddress:
        """The proxy's own address (TCP; its name is resolved here, by whoever connects to it)."""
        return InetAddress("tcp", self.host, self.port)

    @property
    def hostport(self) -> str:
        return _hostport(self.host, self.port)

    def __str__(self) -> str:
        user = f"{printable(self.username)}:***@" if self.username is not None else ""
        return f"{self.scheme}://{user}{self.hostport}"


class HopRefused(NetworkError):
    """A proxy refused the tunnel, or answered something that is not its protocol.

    ``hop`` is the proxy (shown masked), ``reason`` the proxy's reason in words, ``code`` its
    SOCKS reply code or HTTP status (``None`` when it broke the protocol or closed).  Worth
    retrying when the proxy said the next step refused or did not answer (SOCKS replies 3, 4, 5,
    6; HTTP 502, 503, 504): the target may be starting.  ``next_hop``: in a chain, the proxy
    ``hop`` was asked to reach (its refusal is about that proxy, not the target); ``None`` for
    the last hop."""

    def __init__(
        self,
        hop: Hop,
        reason: str,
        *,
        code: int | None = None,
        target_down: bool = False,
        next_hop: Hop | None = None,
    ) -> None:
        super().__init__(_("via {hop}: {reason}").format(hop=hop, reason=reason), action="connect")
        self.hop = hop
        self.reason = reason
        self.code = code
        self.target_down = target_down
        self.next_hop = next_hop

    @property
    def retryable(self) -> bool:
        return self.target_down


@dataclass(frozen=True)
class NeedMore:
    """Nothing to do until at least ``at_least`` more bytes have come."""

    at_least: int = 1


@dataclass(frozen=True)
class Send:
    """Send ``data`` to the proxy, then read on."""

    data: bytes
    said: tuple[str, ...] = ()


@dataclass(frozen=True)
class Established:
    """The tunnel is open; ``leftover`` came after the proxy's reply and belongs to the next
    hop or the target.  ``bound`` is the address the SOCKS5 proxy said it uses (for a UDP
    association: where its relay takes datagrams), ``None`` for HTTP."""

    leftover: bytes = b""
    said: tuple[str, ...] = ()
    bound: tuple[str, int] | None = None


Event = NeedMore | Send | Established


class Handshake:
    """The client side of one hop's handshake, towards ``host``:``port`` (a name or a literal)."""

    def __init__(self, hop: Hop, host: str, port: int) -> None:
        check_host(host)
        self.hop = hop
        self.host = host
        self.port = port
        #: In a chain, the proxy at ``host``:``port`` (what this hop's refusals are about), set
        #: by :class:`Chain`; ``None`` when ``host``:``port`` is the target.
        self.next_hop: Hop | None = None
        self.done = False
        self._buffer = bytearray()

    def start(self) -> Send:
        """The first bytes to send (the greeting, or the request)."""
        raise NotImplementedError

    def receive(self, data: bytes) -> Event:
        """Take ``data`` from the proxy: what to do next.  :class:`HopRefused` if it said no."""
        if self.done:
            raise self.refused(_("bytes fed after the tunnel was open (a bug of the caller)"))
        self._buffer += data
        return self._step()

    def eof(self) -> None:
        """The proxy closed the connection before its reply was complete: always raises."""
        # TRANSLATORS: {when} is "before choosing a method", "before its reply to CONNECT …"…
        raise self.refused(_("the proxy closed the connection {when}").format(when=self._waiting_for()))

    def refused(self, reason: str, *, code: int | None = None, target_down: bool = False) -> HopRefused:
        return HopRefused(self.hop, reason, code=code, target_down=target_down, next_hop=self.next_hop)

    @property
    def target(self) -> str:
        return _hostport(self.host, self.port)

    def _step(self) -> Event:
        raise NotImplementedError

    def _waiting_for(self) -> str:
        raise NotImplementedError

    def _established(self, used: int, said: tuple[str, ...]) -> Established:
        self.done = True
        leftover = bytes(self._buffer[used:])
        self._buffer.clear()
        return Established(leftover, said)


def handshake(hop: Hop, host: str, port: int, *, udp: bool = False) -> Handshake:
    """The handshake that asks ``hop`` for a tunnel to ``host``:``port`` or, with ``udp``, for
    a SOCKS5 UDP association for a client sending from ``host``:``port``."""
    if hop.scheme == "socks5":
        from ._hop_socks5 import CONNECT, UDP_ASSOCIATE, Socks5Handshake

        return Socks5Handshake(hop, host, port, command=UDP_ASSOCIATE if udp else CONNECT)
    if udp:
        raise AddressError(
            _("via {hop}: an HTTP proxy carries no datagrams; use a socks5:// proxy").format(hop=hop)
        )
    from ._hop_http import HttpConnectHandshake

    return HttpConnectHandshake(hop, host, port)


class Chain:
    """The handshakes of a chain of hops, one after the other, towards ``host``:``port``: each
    hop asks for a tunnel to the next hop, the last one to the target.  No I/O; a driver loops::

        chain = Chain(hops, host, port)
        while not chain.done:
            send_all(chain.outgoing())      # b"" when there is nothing to send
            if chain.done:
                break
            data = peek()                   # what the kernel holds, left there
            if not data:
                chain.eof()                 # raises HopRefused
            discard(chain.feed(data))       # the bytes the handshake used

    Bytes after the last reply are never used: they stay with the caller (the target's).
    ``--trace`` lines are emitted as the handshakes go (what was sent, what came back).
    """

    def __init__(self, hops: Sequence[Hop], host: str, port: int, *, udp: bool = False) -> None:
        """With ``udp`` the last hop is asked for a UDP association for a client sending from
        ``host``:``port``; :attr:`bound` is then where its relay takes datagrams."""
        if not hops:
            raise AddressError(_("a chain needs at least one hop"))
        self.hops = tuple(hops)
        self._ends = [(h.host, h.port) for h in self.hops[1:]] + [(host, port)]
        self._udp = udp
        self._index = 0
        self._outgoing = b""
        self.done = False
        #: The address the last hop said it uses (SOCKS5), once done.
        self.bound: tuple[str, int] | None = None
        self.machine = self._start(0)

    def _start(self, index: int) -> Handshake:
        last = index == len(self.hops) - 1
        machine = handshake(self.hops[index], *self._ends[index], udp=self._udp and last)
        if not last:
            machine.next_hop = self.hops[index + 1]
        first = machine.start()
        self._say(machine.hop, first.said)
        self._outgoing = first.data
        return machine

    def outgoing(self) -> bytes:
        """The bytes to send now (once: a second call gives ``b""``)."""
        data, self._outgoing = self._outgoing, b""
        return data

    def feed(self, data: bytes) -> int:
        """Give the proxy's bytes to the current hop; how many of them it used (the rest, after
        a hop's reply, are the next hop's or the target's: feed them again, or leave them)."""
        event = self.machine.receive(data)
        if isinstance(event, NeedMore):
            return len(data)
        self._say(self.machine.hop, event.said)
        if isinstance(event, Send):
            self._outgoing += event.data
            return len(data)
        used = len(data) - len(event.leftover)
        self._index += 1
        if self._index == len(self.hops):
            self.done = True
            self.bound = event.bound
        else:
            self.machine = self._start(self._index)
        return used

    def eof(self) -> None:
        """The connection ended during a handshake: :class:`HopRefused` naming the hop."""
        self.machine.eof()

    @staticmethod
    def _say(hop: Hop, lines: tuple[str, ...]) -> None:
        if trace.enabled():
            for line in lines:
                trace.emit(_("via {hop}: {reason}").format(hop=hop, reason=line))


def shown_answer(data: bytes | bytearray, limit: int) -> str:
    """The first ``limit`` bytes of what a proxy answered, for a refusal's line: an HTTP status
    line as its text (escaped: the proxy chose it), anything else as Python shows bytes."""
    head = bytes(data[:limit])
    if head.startswith(b"HTTP/"):
        return printable(head.partition(b"\n")[0].rstrip(b"\r"))
    return repr(head)[1:]


def check_host(host: str) -> None:
    """Refuse (AddressError) a host that is neither an IP literal nor a host name: it goes into
    a request line (CRLF would add headers of its own) or a SOCKS5 name field (255 bytes)."""
    if literal_family(host) is not None:
        return
    try:
        check_host_name(host, "tcp", host, "1", "")
    except AddressError:
        raise AddressError(
            _(
                "'{host}' is not a host name or IP address a proxy can be asked for, "
                "e.g. example.com or 192.0.2.7"
            ).format(host=printable(host))
        ) from None


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ----------------------------------------------------------------------------- the URL


def parse_hop(text: str | Hop) -> Hop:
    """``socks5://[USER:PASS@]HOST:PORT`` or ``http://…`` as a :class:`Hop`.  Pure: no DNS.

    Bad input raises :class:`~enchufe.errors.AddressError` naming the problem and what is
    accepted, with the password masked."""
    if isinstance(text, Hop):
        return text
    if not isinstance(text, str):
        raise AddressError(_("a proxy URL must be a string, not {type}").format(type=type(text).__name__))
    scheme, sep, rest = text.partition("://")
    lowered = scheme.lower()
    if not sep or lowered not in SCHEMES:
        shown = masked(text)
        if sep:
            line = _("{url}: unknown proxy scheme {scheme}; accepted: {accepted}, {example}")
        else:
            line = _("{url}: not a proxy URL; accepted: {accepted}, {example}")
        raise AddressError(
            line.format(url=shown, scheme=repr(scheme), accepted=_(ACCEPTED), example=_(EXAMPLE))
        )
    scheme = SCHEMES[lowered]
    userinfo, at, hostport = rest.rpartition("@")
    username, password = credentials(text, scheme, userinfo) if at else (None, None)
    host, port = host_port(text, scheme, hostport.removesuffix("/"))
    return Hop(scheme, host, port, username, password)


def parse_hops(texts: Sequence[str | Hop] | str | Hop | None) -> tuple[Hop, ...]:
    """Every hop of ``via`` (one URL, or a sequence of them, first hop first)."""
    if texts is None:
        return ()
    if isinstance(texts, str | Hop):
        texts = [texts]
    return tuple(parse_hop(text) for text in texts)


def check_target(address: Address, hops: Sequence[Hop]) -> InetAddress:
    """``address`` if a tunnel can reach it: a TCP or TLS host and port, or a UDP one through a
    single SOCKS5 proxy; else :class:`~enchufe.errors.AddressError` saying why (unix sockets
    cannot go through a proxy; a forced family or an IPv6 scope mean nothing to one)."""
    first = hops[0]
    if not isinstance(address, InetAddress):
        raise AddressError(
            _(
                "{address}: a proxy (via {hop}) reaches tcp://, tls:// and udp:// targets, not this one"
            ).format(address=address, hop=first)
        )
    if "%" not in address.host:  # a scope is refused below, with its own words
        check_host(address.host)
    if not address.is_stream and (len(hops) > 1 or first.scheme != "socks5"):
        if len(hops) > 1:
            line = _(
                "{address}: datagrams go through one socks5:// proxy (UDP ASSOCIATE), "
                "not a chain (via {hops})"
            )
        else:
            line = _(
                "{address}: datagrams go through one socks5:// proxy (UDP ASSOCIATE), "
                "not an HTTP proxy (via {hops})"
            )
        raise AddressError(line.format(address=address, hops=", ".join(map(str, hops))))
    if address.is_wildcard or address.port == 0:
        raise AddressError(
            _(
                "{address}: a target through a proxy (via {hop}) needs a host and a port, "
                "e.g. tcp://example.com:443"
            ).format(address=address, hop=first)
        )
    if "%" in address.host:
        scope = address.host.partition("%")[2]
        raise AddressError(
            _("{address}: an IPv6 scope (%{scope}) means nothing to a proxy (via {hop})").format(
                address=address, scope=scope, hop=first
            )
        )
    if address.forced_family and literal_family(address.host) is None:
        plain = f"{'tls' if address.is_tls else 'tcp'}://{address.host}:{address.port}"
        raise AddressError(
            _(
                "{address}: the proxy (via {hop}) resolves {host} and picks the family itself; write {plain}"
            ).format(address=address, hop=first, host=address.host, plain=plain)
        )
    return address

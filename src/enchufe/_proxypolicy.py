"""Whom a server takes a PROXY protocol header from, and what it does with a refused one: the
policy (:class:`ProxyPolicy`, trusted networks and limits), the refusal (:class:`ProxyRefused`,
its one log line), and a datagram's header checked whole (:func:`datagram_header`).  No I/O:
reading a stream's header off its socket is :mod:`enchufe._proxyaccept`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from . import _ranges
from ._networks import IntNetwork, Network, host_int, int_network, parse_network
from ._notices import notices
from ._proxytypes import shown
from ._text import printable
from .address import SocketAddress, UnixAddress
from .errors import EnchufeError, UsageError
from .i18n import N_, _
from .proxyproto import MAX_V2_LENGTH, V2_SIGNATURE, ProxyHeader, Refused, parse

#: Seconds a trusted proxy has to send its whole header (HAProxy's spec: at least 3, to cover
#: a TCP retransmission).
DEFAULT_PROXY_TIMEOUT = 5.0

#: The most trusted peers a policy remembers (a few load balancers: any more are checked anew).
TRUSTED_SEEN = 256

#: Trusted when no ``trusted_proxies`` are given: loopback (and unix peers, always).
DEFAULT_TRUSTED = ("127.0.0.0/8", "::1/128")


def parse_trusted(text: str) -> Network:
    """``"10.0.0.0/8"``, ``"192.168.1.7"``, ``"[fd00::]/8"`` → a network; UsageError with an
    example otherwise.  An IPv4-mapped rule (``::ffff:10.0.0.0/104``) is the IPv4 network."""
    return parse_network(text, "--trusted-proxy")


@dataclass(frozen=True)
class ProxyPolicy:
    """Whom a server takes a PROXY header from, and how long it waits for one.

    ``trusted``: the IP networks of the proxies (default loopback).  Unix peers are always
    trusted: who may connect to a unix socket is a matter of its file's permissions.
    """

    trusted: tuple[Network, ...] = field(default_factory=lambda: tuple(map(parse_trusted, DEFAULT_TRUSTED)))
    timeout: float = DEFAULT_PROXY_TIMEOUT
    max_v2_length: int = MAX_V2_LENGTH
    #: ``trusted`` as integers, and the most bytes a header may have: worked out once, used on
    #: every connection.
    _rules: tuple[IntNetwork, ...] = field(init=False, repr=False, compare=False)
    bound: int = field(init=False, repr=False, compare=False)
    #: Peers (IP texts as accept gives them) found trusted: a set lookup for the next connection
    #: of a proxy seen before, instead of parsing its address again (at most TRUSTED_SEEN of them).
    trusted_seen: set[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rules", tuple(map(int_network, self.trusted)))
        object.__setattr__(self, "bound", max(107, 16 + self.max_v2_length))
        object.__setattr__(self, "trusted_seen", set())

    @classmethod
    def make(
        cls, trusted: Iterable[str] | None = None, timeout: float = DEFAULT_PROXY_TIMEOUT
    ) -> ProxyPolicy:
        """From user input: CIDR texts (``None`` or empty: the default) and a timeout, checked."""
        timeout = _ranges.seconds(timeout, "proxy_timeout", positive=True) or DEFAULT_PROXY_TIMEOUT
        rules = tuple(parse_trusted(text) for text in trusted or ())
        return cls(rules, timeout) if rules else cls(timeout=timeout)

    def untrusted(self, peer: SocketAddress | None) -> str | None:
        """``None`` if ``peer`` may send a header, else the refusal's reason."""
        if isinstance(peer, UnixAddress) or peer is None:
            return None  # an unnamed unix peer is a unix peer too
        return self.untrusted_host(peer.host)

    def untrusted_host(self, host: str) -> str | None:
        """``None`` if a peer at ``host`` (an IP address) may send a header, else the reason."""
        try:
            version, value = host_int(host)
        except ValueError:
            return _("its address is not an IP address")
        for rule_version, network, mask in self._rules:
            if value & mask == network and rule_version == version:
                if len(self.trusted_seen) < TRUSTED_SEEN:
                    self.trusted_seen.add(host)
                return None
        return _("not a trusted proxy (see --trusted-proxy); a PROXY header is taken only from one")


class ProxyRefused(EnchufeError):
    """A connection closed over its PROXY header; the message is its one log line."""


def proxy_policy(
    address: SocketAddress,
    accept_proxy: bool,
    trusted_proxies: Iterable[str] | None,
    proxy_timeout: float,
) -> ProxyPolicy | None:
    """A server's PROXY protocol settings, checked: ``None`` when it takes no header.
    UsageError for trusted proxies without ``accept_proxy``.  (``address``: a stream's header
    starts its connection, a datagram server's comes before each datagram: see
    :func:`datagram_header`.)"""
    if not accept_proxy:
        if trusted_proxies:
            raise UsageError(
                _("trusted proxies are the peers a PROXY header is taken from: add accept_proxy")
            )
        return None
    return ProxyPolicy.make(trusted_proxies, proxy_timeout)


#: A version 2 header's fixed part: the signature, version and command, family, length.
V2_FIXED = 16


def datagram_header(policy: ProxyPolicy, sender: SocketAddress | None, data: bytes) -> ProxyHeader | None:
    """The PROXY protocol version 2 header a datagram from ``sender`` starts with (HAProxy's spec
    over UDP, as ``relay --send-proxy v2`` sends it: one header per datagram, the family UDP4,
    UDP6 or UNIXGRAM); its payload is ``data[header.consumed:]``.

    ``None`` for a sender that is not a trusted proxy or an unbound unix socket (which no reply
    can reach), and for a datagram without a valid version 2 header or with a stream (TCP) or
    version 1 one: the datagram is to be dropped, and this said it (a warning, a few a second at
    most: see :class:`~enchufe._notices.Notices`; the sender escaped).
    """
    why = unnamed_proxy() if sender is None else policy.untrusted(sender)  # unbound: see there
    if why is None:
        header, why = check_datagram_header(data, policy.max_v2_length)
        if header is not None:
            return header
    shown = printable(str(sender)) if sender is not None else _("an unnamed unix peer")
    line = _("dropped a datagram from {peer}: {why}").format(peer=shown, why=why)
    notices.say(N_("datagrams dropped over their PROXY header"), line)
    return None


def unnamed_proxy() -> str:
    """Why a datagram from an unbound unix socket is dropped, header or not: any sender could
    name any client from one, and no reply could reach it."""
    return _("a proxy's socket needs a name (bind it): an unnamed one can be neither answered nor told apart")


def check_datagram_header(
    datagram: bytes | memoryview, max_v2_length: int
) -> tuple[ProxyHeader | None, str | None]:
    """The version 2 header a whole ``datagram`` starts with, or ``None`` and why there is none
    to take (escaped).  Only the bytes a header may have are looked at."""
    data = bytes(datagram[: max_v2_length + V2_FIXED])
    if not data:
        return None, _("an empty datagram, without a PROXY protocol header")
    if not data.startswith((V2_SIGNATURE[:1], b"P")):  # not the start of a header of either version
        start = shown(data[:16])
        return None, _("no PROXY protocol header: the datagram starts with {start}").format(start=start)
    result = parse(data, max_v2_length=max_v2_length)
    if isinstance(result, Refused):
        return None, result.reason  # escaped already
    if not isinstance(result, ProxyHeader):  # a datagram is whole: what is missing never comes
        return None, _("an incomplete PROXY header")
    if result.version != 2:
        return None, _("a version 1 PROXY header: datagrams carry version 2 only")
    if result.source is not None and result.source.is_stream:
        return None, _("a PROXY header for a stream ({family}) on a datagram").format(family=result.family)
    return result, None


def refusal_line(peer: SocketAddress | None, reason: str) -> str:
    """The one log line for a connection closed over its PROXY header (peer text escaped)."""
    shown = printable(str(peer)) if peer is not None else _("an unnamed unix peer")
    return _("refused {peer}: {reason}").format(peer=shown, reason=reason)

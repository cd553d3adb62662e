"""Resolution: the concrete socket addresses (:class:`Target`) to bind or connect to for an address."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from . import trace
from ._calls import SockAddr, describe_sockaddr
from ._inet_text import literal_family
from .address import InetAddress
from .errors import AddressError, NameResolutionError, reason
from .i18n import _


@dataclass(frozen=True)
class Target:
    """One concrete socket address to bind or connect to, after resolution."""

    family: socket.AddressFamily
    sockaddr: SockAddr
    #: listen on IPv6 and IPv4 at once (IPV6_V6ONLY=0); only for wildcard listeners asked so.
    dual_stack: bool = False


def resolve(address: InetAddress, *, passive: bool) -> list[Target]:
    """The concrete socket addresses for ``address``, in the order to try them.

    A wildcard host is only for listening: ``tcp://:P`` is one dual-stack IPv6 socket where the
    host has IPv6, else 0.0.0.0; ``tcp6://:P`` and ``tcp://[::]:P`` are IPv6 only.
    """
    if address.host == "":
        return [_wildcard(address, passive=passive)]
    if not passive and address.port == 0:
        raise AddressError(
            _("{address}: port 0 only makes sense when listening; name the server's port").format(
                address=repr(str(address))
            )
        )
    # A literal host is parsed, never looked up; a name under a forced family (tcp4://localhost)
    # is looked up in that family.
    literal = literal_family(address.host) is not None
    targets = _lookup(address, passive=passive, literal=literal)
    if not literal and trace.enabled():
        shown = ", ".join(describe_sockaddr(t.family, t.sockaddr) for t in targets)
        trace.emit(f"getaddrinfo({address.host}, {address.port}) = {shown}")
    if not targets:
        raise NameResolutionError(
            _("cannot resolve {host} in {address}: no IPv4 or IPv6 address").format(
                host=repr(address.host), address=address
            )
        )
    return targets


def _wildcard(address: InetAddress, *, passive: bool) -> Target:
    """The one socket address a listener on "any host" binds; a client cannot use one."""
    if not passive:
        host = "[::1]" if address.forced_family == 6 else "127.0.0.1"
        raise AddressError(
            _("{address}: a client needs a host to reach, e.g. {example}").format(
                address=repr(str(address)), example=f"{address.scheme}://{host}:{address.port or 9000}"
            )
        )
    if address.forced_family == 4 or (address.forced_family is None and not _has_ipv6()):
        return Target(socket.AF_INET, ("0.0.0.0", address.port))
    return Target(socket.AF_INET6, ("::", address.port, 0, 0), dual_stack=address.forced_family is None)


def _lookup(address: InetAddress, *, passive: bool, literal: bool) -> list[Target]:
    """getaddrinfo() for ``address``: its IPv4 and IPv6 answers, each once, in its order
    (a ``literal`` host is only parsed, never looked up)."""
    sock_type = socket.SOCK_STREAM if address.is_stream else socket.SOCK_DGRAM
    family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(address.family or 0, socket.AF_UNSPEC)
    flags = socket.AI_NUMERICHOST if literal else 0
    if passive:
        flags |= socket.AI_PASSIVE
    try:
        infos = socket.getaddrinfo(address.host, address.port, family, sock_type, 0, flags)
    except socket.gaierror as exc:
        if address.forced_family:
            # tcp6://localhost on a host whose localhost is IPv4 only: say which family was asked.
            message = _(
                "cannot resolve {host} as IPv{family} in {address}: {reason}; check the name, or use "
                "{plain} for either family"
            ).format(
                host=repr(address.host),
                family=address.forced_family,
                address=address,
                reason=reason(exc, lower=False),
                plain=f"{address.scheme.rstrip('46')}://",
            )
        else:
            message = _(
                "cannot resolve {host} in {address}: {reason}; check the name, or use an IP address"
            ).format(host=repr(address.host), address=address, reason=reason(exc, lower=False))
        raise NameResolutionError(message, errno=exc.errno) from exc
    targets: list[Target] = []
    for fam, _type, _proto, _canon, sockaddr in infos:
        if fam not in (socket.AF_INET, socket.AF_INET6):
            continue
        target = Target(socket.AddressFamily(fam), sockaddr)
        if target not in targets:
            targets.append(target)
    return targets


_ipv6: bool | None = None


def _has_ipv6() -> bool:
    """Whether this host can bind an IPv6 socket (the kernel may lack IPv6 even if Python has it)."""
    global _ipv6
    if _ipv6 is None:
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
                probe.bind(("::1", 0))
            _ipv6 = True
        except OSError:
            _ipv6 = False
    return _ipv6

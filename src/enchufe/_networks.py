"""IP networks from the user (``--allow``, ``--deny``, ``--trusted-proxy``) and the peers they judge.

Networks and peers are both judged as users think of them: an IPv4-mapped IPv6 address
(``::ffff:127.0.0.1``, how a dual-stack listener sees an IPv4 client) is the IPv4 address it
carries, whether it is the peer or the rule.  So a rule for ``127.0.0.0/8`` takes 127.0.0.1 on
an IPv4 listener as on a dual-stack one, and a dual-stack listener cannot be used to slip past
an IPv4 rule.  An IPv6 rule that is not IPv4-mapped (``::/0``, ``2001:db8::/32``) judges IPv6
peers only.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from ._text import printable
from .errors import UsageError
from .i18n import _

__all__ = [
    "IP",
    "IntNetwork",
    "Network",
    "destination_ip",
    "host_int",
    "int_network",
    "matching",
    "nat64_ipv4",
    "parse_network",
    "peer_ip",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IP = ipaddress.IPv4Address | ipaddress.IPv6Address

#: A network as integers, for checks on every connection: ``(version, network, mask)``; an
#: address is in it when ``address & mask == network``.
IntNetwork = tuple[int, int, int]

#: IPv6 addresses that carry an IPv4 address (RFC 4291 2.5.5.2).
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_MAPPED_PREFIX = _MAPPED.network_address.packed[:12]


def parse_network(text: str, option: str) -> Network:
    """``"10.0.0.0/8"``, ``"192.168.1.7"``, ``"[fd00::]/8"`` → a network (host bits forgiven);
    UsageError naming ``option`` with examples otherwise.  An IPv4-mapped network
    (``::ffff:10.0.0.0/104``) comes back as the IPv4 network it covers (``10.0.0.0/8``)."""
    try:
        network = ipaddress.ip_network(text.strip().replace("[", "").replace("]", ""), strict=False)
    except ValueError:
        raise UsageError(
            _(
                "{option} '{text}': not an IP network; write an address or CIDR such as "
                "10.0.0.0/8, 192.168.1.7 or fd00::/8"
            ).format(option=option, text=printable(text))
        ) from None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network((mapped, network.prefixlen - _MAPPED.prefixlen))
    return network


def peer_ip(host: str) -> IP:
    """A peer's host as users think of it (an IPv4-mapped address is the IPv4 one, a
    ``%scope`` dropped); ValueError when it is not an IP address."""
    ip = ipaddress.ip_address(host.partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


#: Where Linux takes a connection or datagram to an unspecified address: this host, over loopback
#: (``ip_route_output``: no destination means 127.0.0.1; ``::`` means ``::1``).
_THIS_HOST: dict[int, IP] = {4: ipaddress.IPv4Address("127.0.0.1"), 6: ipaddress.IPv6Address("::1")}


def destination_ip(host: str) -> IP:
    """The address a connection (or a datagram) to ``host`` reaches, as rules must judge it: as
    :func:`peer_ip`, and ``0.0.0.0`` or ``::`` (written any way: ``0``, ``::ffff:0.0.0.0``) is
    this host's loopback address, where the kernel takes it.  ValueError when it is not an IP
    address."""
    ip = peer_ip(host)
    return _THIS_HOST[ip.version] if ip.is_unspecified else ip


#: RFC 6052's well-known NAT64 prefix: 64:ff9b::10.0.0.1 reaches 10.0.0.1 through a NAT64 gateway.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def nat64_ipv4(ip: IP) -> ipaddress.IPv4Address | None:
    """The IPv4 address a NAT64 gateway would reach for ``ip`` (one in 64:ff9b::/96), else None:
    rules must judge both, or a denied IPv4 network is reached by its NAT64 name."""
    if ip.version == 6 and ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def matching(networks: Iterable[Network], ip: IP) -> Network | None:
    """The first of ``networks`` that holds ``ip``, or ``None``."""
    for network in networks:
        if ip.version == network.version and ip in network:
            return network
    return None


def int_network(network: Network) -> IntNetwork:
    """``network`` as integers (see :data:`IntNetwork`)."""
    return network.version, int(network.network_address), int(network.netmask)


def host_int(host: str) -> tuple[int, int]:
    """A peer's host (as the kernel gives it) as ``(version, integer)``, as users think of it
    (like :func:`peer_ip`: IPv4-mapped is IPv4, a ``%scope`` dropped); ValueError when it is not
    an IP address.  inet_pton instead of ipaddress: this runs on every connection."""
    try:
        if ":" not in host:
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, host), "big")
        packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0] if "%" in host else host)
    except OSError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if packed[:12] == _MAPPED_PREFIX:
        return 4, int.from_bytes(packed[12:], "big")
    return 6, int.from_bytes(packed, "big")

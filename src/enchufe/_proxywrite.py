"""Writing PROXY protocol headers, v1 and v2 with TLVs (see :mod:`enchufe.proxyproto`)."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from ._proxytypes import (
    _UNIX_FIELD,
    MAX_UNIQUE_ID,
    MAX_V2_LENGTH,
    PP2_SUBTYPE_SSL_CIPHER,
    PP2_SUBTYPE_SSL_CN,
    PP2_SUBTYPE_SSL_VERSION,
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID,
    V2_SIGNATURE,
    ProxyProtocolError,
    ProxySSL,
    crc32c,
)
from ._text import printable
from .address import Address, InetAddress, UnixAddress
from .i18n import _

__all__ = ["encode_v1", "encode_v2"]


def _ip(address: Address | None) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int] | None:
    """An IP address and port, or ``None`` for what is no IP address (unix, a name, none)."""
    if not isinstance(address, InetAddress):
        return None
    try:
        ip = ipaddress.ip_address(address.host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip, address.port


def _ip_pair(
    source: Address | None, destination: Address | None
) -> tuple[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int], ...] | None:
    """Both IP ends of one family (an IPv4 end beside an IPv6 one is written IPv4-mapped, as
    HAProxy does), or ``None`` if either is no IP address."""
    pair = (_ip(source), _ip(destination))
    if pair[0] is None or pair[1] is None:
        return None
    if pair[0][0].version != pair[1][0].version:
        return tuple(
            (ipaddress.IPv6Address(f"::ffff:{ip}") if ip.version == 4 else ip, port)
            for ip, port in (pair[0], pair[1])
        )
    return pair[0], pair[1]


def encode_v1(source: Address | None, destination: Address | None) -> bytes:
    """A version 1 line for a TCP client ``source`` that connected to ``destination`` (IP
    literals); ``PROXY UNKNOWN`` when either is not an IP address (unix, or none)."""
    pair = _ip_pair(source, destination)
    if pair is None:
        return b"PROXY UNKNOWN\r\n"
    (src, sport), (dst, dport) = pair
    family = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode("ascii")


@dataclass
class _Body:
    family_byte: int = 0
    addresses: bytes = b""
    tlvs: list[tuple[int, bytes]] = field(default_factory=list)


def encode_v2(
    source: Address | None,
    destination: Address | None,
    *,
    local: bool = False,
    alpn: bytes | None = None,
    authority: str | None = None,
    unique_id: bytes | None = None,
    ssl: ProxySSL | None = None,
    tlvs: Iterable[tuple[int, bytes]] = (),
    checksum: bool = False,
    max_length: int = MAX_V2_LENGTH,
) -> bytes:
    """A version 2 header for a client ``source`` that connected to ``destination``.

    IP addresses (TCP or UDP from the addresses' transport) and unix ones are written as such;
    anything else (``None``, a host name) as the UNSPEC family.  ``local=True`` makes a LOCAL
    header (the proxy's own connection, a health check).  TLVs follow in this order: ALPN,
    authority, unique id, SSL, then ``tlvs`` as given, then a CRC32c of the whole header when
    ``checksum``.  :class:`ProxyProtocolError` if the result would be over ``max_length``.
    """
    body = _Body() if local else _addresses(source, destination)
    if alpn is not None:
        body.tlvs.append((PP2_TYPE_ALPN, alpn))
    if authority is not None:
        body.tlvs.append((PP2_TYPE_AUTHORITY, authority.encode("utf-8")))
    if unique_id is not None:
        if len(unique_id) > MAX_UNIQUE_ID:
            raise ProxyProtocolError(
                _("a unique id is at most {most} bytes, not {size}").format(
                    most=MAX_UNIQUE_ID, size=len(unique_id)
                )
            )
        body.tlvs.append((PP2_TYPE_UNIQUE_ID, unique_id))
    if ssl is not None:
        body.tlvs.append((PP2_TYPE_SSL, _ssl_value(ssl)))
    body.tlvs.extend(tlvs)
    if checksum:
        body.tlvs.append((PP2_TYPE_CRC32C, b"\0\0\0\0"))
    payload = body.addresses + b"".join(_tlv(kind, value) for kind, value in body.tlvs)
    if len(payload) > min(max_length, 0xFFFF):
        raise ProxyProtocolError(
            _("a PROXY v2 header of {size} bytes is over the bound of {most}").format(
                size=16 + len(payload), most=16 + max_length
            )
        )
    command = 0x20 if local else 0x21
    header = V2_SIGNATURE + struct.pack("!BBH", command, body.family_byte, len(payload)) + payload
    if checksum:
        header = header[:-4] + crc32c(header).to_bytes(4, "big")
    return header


def _tlv(kind: int, value: bytes) -> bytes:
    if not 0 <= kind <= 0xFF or len(value) > 0xFFFF:
        raise ProxyProtocolError(
            _("TLV type {type} with {size} bytes cannot be written (type 0-255, up to 65535 bytes)").format(
                type=repr(kind), size=len(value)
            )
        )
    return struct.pack("!BH", kind, len(value)) + bytes(value)


def _ssl_value(ssl: ProxySSL) -> bytes:
    subs = [
        (kind, text.encode("utf-8"))
        for kind, text in (
            (PP2_SUBTYPE_SSL_VERSION, ssl.version),
            (PP2_SUBTYPE_SSL_CN, ssl.cn),
            (PP2_SUBTYPE_SSL_CIPHER, ssl.cipher),
        )
        if text is not None
    ]
    if not 0 <= ssl.client <= 0xFF or not 0 <= ssl.verify <= 0xFFFFFFFF:
        raise ProxyProtocolError(
            _("SSL TLV: client {client} (0-255), verify {verify} (32 bits)").format(
                client=repr(ssl.client), verify=repr(ssl.verify)
            )
        )
    return (
        bytes([ssl.client])
        + ssl.verify.to_bytes(4, "big")
        + b"".join(_tlv(k, v) for k, v in [*subs, *ssl.other])
    )


def _addresses(source: Address | None, destination: Address | None) -> _Body:
    pair = _ip_pair(source, destination)
    if pair is not None:
        assert isinstance(source, InetAddress)
        (src, sport), (dst, dport) = pair
        transport = 1 if source.transport == "tcp" else 2
        return _Body(
            (0x10 if src.version == 4 else 0x20) | transport,
            src.packed + dst.packed + struct.pack("!HH", sport, dport),
        )
    if isinstance(source, UnixAddress) and isinstance(destination, UnixAddress):
        transport = 2 if source.datagram else 1
        return _Body(0x30 | transport, _unix_field(source) + _unix_field(destination))
    return _Body()


def _unix_field(address: UnixAddress) -> bytes:
    raw = address.sockaddr
    name = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogateescape")
    if len(name) > _UNIX_FIELD:
        raise ProxyProtocolError(
            _("{address}: longer than the {size} bytes of a unix address").format(
                address=printable(str(address)), size=_UNIX_FIELD
            )
        )
    return name.ljust(_UNIX_FIELD, b"\0")

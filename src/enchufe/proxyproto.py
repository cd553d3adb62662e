"""The PROXY protocol, versions 1 and 2 (HAProxy's ``doc/proxy-protocol.txt``), without I/O.

A load balancer in front of a server opens its own connection to it, so the server sees the
balancer's address instead of the client's.  With the PROXY protocol the balancer starts that
connection with a header that says who the client was.  This module reads and writes that
header; it never touches a socket, so the sync and asyncio servers and the relay's event loop
all feed it the bytes they have::

    decoder = Decoder()
    result = decoder.feed(first_bytes)      # NeedMore, ProxyHeader or Refused
    # a ProxyHeader: result.source is the client; decoder.rest is payload that came with it

Bounds: a version 1 line is at most :data:`V1_MAX` (107) bytes with its CRLF; a version 2
header at most ``16 +`` :data:`MAX_V2_LENGTH` bytes (addresses and TLVs; a longer one is refused
as oversized, whatever its length field says).  :meth:`Decoder.feed` never counts more than that
as header, and never raises: what breaks the rules is a :class:`Refused` with the reason.
Only misuse (feeding a decoder that is done, encoding what the protocol cannot carry) raises,
and then only :class:`ProxyProtocolError`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import struct
from socket import AF_INET, inet_ntop

from ._proxytypes import (
    _UNIX_FIELD,
    _V2_KINDS,
    _V2_SIZES,
    MAX_UNIQUE_ID,
    MAX_V2_LENGTH,
    PP2_SUBTYPE_SSL_CIPHER,
    PP2_SUBTYPE_SSL_CN,
    PP2_SUBTYPE_SSL_VERSION,
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_NETNS,
    PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID,
    V1_MAX,
    V2_SIGNATURE,
    Family,
    NeedMore,
    ProxyHeader,
    ProxyProtocolError,
    ProxySSL,
    Refused,
    Result,
    crc32c,
)
from ._proxywrite import encode_v1, encode_v2
from ._text import printable, quoted
from .address import InetAddress, SocketAddress, from_sockaddr, inet_address
from .i18n import N_, _

__all__ = [
    "MAX_V2_LENGTH",
    "V1_MAX",
    "V2_SIGNATURE",
    "Decoder",
    "NeedMore",
    "ProxyHeader",
    "ProxyProtocolError",
    "ProxySSL",
    "Refused",
    "Result",
    "crc32c",
    "encode_v1",
    "encode_v2",
    "parse",
]


class Decoder:
    """Feed it the first bytes of a connection until it says :class:`ProxyHeader` or
    :class:`Refused`; :attr:`rest` then holds what came after the header (payload to keep).

    It keeps at most one header's worth plus the last chunk fed.  Feeding it after it said
    something other than :class:`NeedMore` raises :class:`ProxyProtocolError`.
    """

    def __init__(self, *, max_v2_length: int = MAX_V2_LENGTH) -> None:
        if not 0 <= max_v2_length <= 0xFFFF:
            raise ProxyProtocolError(
                _("max_v2_length {value}: from 0 to 65535").format(value=repr(max_v2_length))
            )
        self.max_v2_length = max_v2_length
        self._buffer = bytearray()
        self.result: Result = NeedMore()

    @property
    def bound(self) -> int:
        """The most bytes a header may have here."""
        return max(V1_MAX, 16 + self.max_v2_length)

    @property
    def rest(self) -> bytes:
        """What came after the header (empty until there is one)."""
        if not isinstance(self.result, ProxyHeader):
            return b""
        return bytes(self._buffer[self.result.consumed :])

    def feed(self, data: bytes | bytearray | memoryview) -> Result:
        if not isinstance(self.result, NeedMore):
            raise ProxyProtocolError(_("this decoder is done: the header was already read or refused"))
        self._buffer += data
        self.result = parse(bytes(self._buffer), max_v2_length=self.max_v2_length)
        return self.result


def parse(data: bytes, *, max_v2_length: int = MAX_V2_LENGTH) -> Result:
    """What ``data``, the first bytes of a connection, hold: a header, not enough yet, or no
    valid header.  Never raises."""
    try:
        if not data:
            return NeedMore()
        # The first byte tells the versions apart ('P' or CR): one prefix test, not two.
        if data[0] == 0x50 and b"PROXY".startswith(data[:5]):
            return _parse_v1(data)
        if V2_SIGNATURE.startswith(data[:12]):
            return _parse_v2(data, max_v2_length)
        return Refused(
            _("no PROXY protocol header: the connection starts with {start}").format(start=_shown(data[:16]))
        )
    except _Invalid as exc:
        return Refused(str(exc))


class _Invalid(Exception):
    """Inside the parser: the reason a header is refused."""


def _shown(data: bytes) -> str:
    return "'" + printable(data.decode("latin-1")) + "'"


# -- version 1

#: The bytes a version 1 line may hold before its CRLF.
_PRINTABLE = bytes(range(0x20, 0x7F))


def _parse_v1(data: bytes) -> Result:
    end = data.find(b"\r\n", 0, V1_MAX)
    line = data[: V1_MAX if end < 0 else end]
    if line.translate(None, _PRINTABLE):  # one C call to see that all is printable
        _check_printable(line, end)
    if end < 0:
        if len(data) >= V1_MAX:
            raise _Invalid(_("PROXY v1 line: no CRLF in the first {size} bytes").format(size=V1_MAX))
        return NeedMore()
    parts = line.decode("ascii").split(" ")
    consumed = end + 2
    if parts[0] != "PROXY" or len(parts) < 2:
        raise _Invalid(
            _("PROXY v1 line: {line} does not start with 'PROXY ' and a protocol").format(line=_shown(line))
        )
    if parts[1] == "UNKNOWN":
        return ProxyHeader(1, "proxy", "UNKNOWN", None, None, consumed)
    if parts[1] not in ("TCP4", "TCP6") or len(parts) != 6:
        raise _Invalid(
            _(
                "PROXY v1 line: {line}: expected 'PROXY TCP4|TCP6 SRC DST SPORT DPORT' or 'PROXY UNKNOWN'"
            ).format(line=_shown(line))
        )
    family: Family = "TCP4" if parts[1] == "TCP4" else "TCP6"
    source, destination = _v1_addresses(family, parts)
    return _header(1, "proxy", family, source, destination, consumed, ())


def _check_printable(line: bytes, end: int) -> None:
    """Name the first byte of ``line`` that may not be there (a CR may end a line whose LF is
    still to come)."""
    for i, byte in enumerate(line):
        if not 0x20 <= byte <= 0x7E and not (byte == 0x0D and i == len(line) - 1 and end < 0):
            raise _Invalid(
                _("PROXY v1 line: byte {byte} at offset {offset} (printable ASCII ending in CRLF)").format(
                    byte=f"{byte:#04x}", offset=i
                )
            )


def _v1_addresses(family: Family, parts: list[str]) -> list[SocketAddress]:
    """The source and destination of a v1 line split at its spaces, checked in that order
    (one call for both: every connection behind a proxy goes through here)."""
    found: list[SocketAddress] = []
    for host, port in ((parts[2], parts[4]), (parts[3], parts[5])):
        # inet_pton, not ipaddress: a few C calls instead of dozens of Python ones per
        # connection.  The same forms pass: an IPv4 address must come back from inet_ntop as
        # it was written (no leading zeros), an IPv6 one may be any RFC 4291 text of hex groups
        # (no dotted tail).
        try:
            if family == "TCP4":
                packed = socket.inet_pton(socket.AF_INET, host)
                if socket.inet_ntop(socket.AF_INET, packed) != host:
                    raise ValueError(host)
            else:
                if not host or host.strip("0123456789abcdefABCDEF:"):
                    raise ValueError(host)
                packed = socket.inet_pton(socket.AF_INET6, host)
        except (OSError, ValueError):
            raise _Invalid(
                _("PROXY v1 line: {host} is not a canonical {family} address").format(
                    host=quoted(host), family=family
                )
            ) from None
        if not port.isdigit() or (port != "0" and port[0] == "0") or len(port) > 5 or int(port) > 0xFFFF:
            raise _Invalid(
                _("PROXY v1 line: {port} is not a port (0 to 65535, no leading zero)").format(
                    port=quoted(port)
                )
            )
        address = object.__new__(InetAddress)  # inet_address(…), inlined
        address.__dict__.update(
            transport="tcp",
            host=host if family == "TCP4" else _ip_text(packed),
            port=int(port),
            forced_family=None,
            tls=None,
        )
        found.append(address)
    return found


#: A v2 header's family/protocol byte → what it carries and the bytes of its addresses.
_V2_LAYOUTS: dict[int, tuple[Family, int]] = {
    family << 4 | transport: (kind, _V2_SIZES[family]) for (family, transport), kind in _V2_KINDS.items()
}
_V2_UNKNOWN: tuple[Family, int] = ("UNKNOWN", 0)
_V2_COMMANDS = ("local", "proxy")

#: A v2 header's IPv4 addresses and ports.
_IPV4_BLOCK = struct.Struct("!4s4sHH")

#: The first 12 bytes of an IPv4-mapped IPv6 address (RFC 4291 2.5.5.2).
_MAPPED = b"\0" * 10 + b"\xff\xff"


def _ip_text(packed: bytes) -> str:
    """A packed IPv4 or IPv6 address as users think of it: canonical text, and an IPv4-mapped
    IPv6 address is the IPv4 one it carries."""
    if len(packed) == 4:
        return socket.inet_ntop(socket.AF_INET, packed)
    if packed[:12] == _MAPPED:
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    text = socket.inet_ntop(socket.AF_INET6, packed)
    # The C library writes an IPv4-compatible address (::/96) with a dotted tail; ipaddress's
    # text is all hex groups, and is what this module has always given.
    return str(ipaddress.IPv6Address(packed)) if "." in text else text


# -- version 2


def _parse_v2(data: bytes, max_v2_length: int) -> Result:
    if len(data) < 16:
        return NeedMore(16 - len(data))
    if data[:12] != V2_SIGNATURE:
        raise _Invalid(_("PROXY v2: the signature is wrong"))
    if data[12] not in (0x20, 0x21) or data[13] not in _V2_FAMILY_BYTES:
        _check_v2_bytes(data[12], data[13])
    command, family, transport = data[12] & 0x0F, data[13] >> 4, data[13] & 0x0F
    (length,) = struct.unpack_from("!H", data, 14)
    if length > max_v2_length:
        raise _Invalid(
            _("PROXY v2: header of {size} bytes, over this server's bound of {most}").format(
                size=16 + length, most=16 + max_v2_length
            )
        )
    if len(data) < 16 + length:
        return NeedMore(16 + length - len(data))
    block = data[16 : 16 + length]
    # UNSPEC (family or protocol 0): no addresses to read; TLVs, if any, start at once.
    kind, size = _V2_LAYOUTS.get(data[13], _V2_UNKNOWN)
    if length < size:
        raise _Invalid(
            _("PROXY v2: {length} bytes cannot hold {kind} addresses ({size} bytes)").format(
                length=length, kind=kind, size=size
            )
        )
    # Most headers carry addresses only: no TLVs to split, check or parse then.
    tlvs = _tlvs(block[size:], data[: 16 + length]) if length > size else ()
    source: SocketAddress | None = None
    destination: SocketAddress | None = None
    if data[13] == 0x11 and command == 1:
        # TCP over IPv4, what nearly every header carries: its addresses at once (what
        # _v2_addresses and inet_address do, inlined)
        src, dst, sport, dport = _IPV4_BLOCK.unpack_from(block)
        source = object.__new__(InetAddress)
        source.__dict__.update(
            transport="tcp", host=inet_ntop(AF_INET, src), port=sport, forced_family=None, tls=None
        )
        destination = object.__new__(InetAddress)
        destination.__dict__.update(
            transport="tcp", host=inet_ntop(AF_INET, dst), port=dport, forced_family=None, tls=None
        )
    elif command == 1 and kind != "UNKNOWN":
        source, destination = _v2_addresses(family, transport, block)
    header = _header(2, _V2_COMMANDS[command], kind, source, destination, 16 + length, tlvs)
    return _with_tlvs(header) if tlvs else header


def _header(
    version: int,
    command: str,
    family: Family,
    source: SocketAddress | None,
    destination: SocketAddress | None,
    consumed: int,
    tlvs: tuple[tuple[int, bytes], ...],
) -> ProxyHeader:
    """``ProxyHeader(…)`` without TLV fields, made fast (see :mod:`._fastinit`): one for every
    connection behind a proxy."""
    header = object.__new__(ProxyHeader)  # make(ProxyHeader, …), inlined
    header.__dict__.update(
        version=version,
        command=command,
        family=family,
        source=source,
        destination=destination,
        consumed=consumed,
        tlvs=tlvs,
        alpn=None,
        authority=None,
        unique_id=None,
        ssl=None,
        netns=None,
    )
    return header


#: The family/protocol bytes the protocol defines (family 0 to 3, protocol 0 to 2).
_V2_FAMILY_BYTES = frozenset(family << 4 | transport for family in range(4) for transport in range(3))


def _check_v2_bytes(version_command: int, family_transport: int) -> None:
    """Say which of a v2 header's version, command, family and protocol is not one there is."""
    version, command = version_command >> 4, version_command & 0x0F
    if version != 2:
        raise _Invalid(_("PROXY v2: version {version} (only 2 exists)").format(version=version))
    if command > 1:
        raise _Invalid(_("PROXY v2: command {command} (0 LOCAL or 1 PROXY)").format(command=command))
    raise _Invalid(
        _("PROXY v2: family/protocol byte {byte} is not one the protocol defines").format(
            byte=f"{family_transport:#04x}"
        )
    )


def _v2_addresses(
    family: int, transport: int, block: bytes
) -> tuple[SocketAddress | None, SocketAddress | None]:
    proto = "tcp" if transport == 1 else "udp"
    if family == 1:  # IPv4, the most common: its text at once (what _ip_text does for 4 bytes)
        src, dst, sport, dport = struct.unpack_from("!4s4sHH", block)
        source = inet_address(proto, socket.inet_ntop(socket.AF_INET, src), sport)
        return source, inet_address(proto, socket.inet_ntop(socket.AF_INET, dst), dport)
    if family == 2:
        src, dst, sport, dport = struct.unpack_from("!16s16sHH", block)
        return inet_address(proto, _ip_text(src), sport), inet_address(proto, _ip_text(dst), dport)
    kind = socket.SOCK_STREAM if transport == 1 else socket.SOCK_DGRAM
    return _unix(block[:_UNIX_FIELD], kind), _unix(block[_UNIX_FIELD : 2 * _UNIX_FIELD], kind)


def _unix(field_: bytes, kind: int) -> SocketAddress | None:
    """A 108-byte sun_path: a path up to its NUL, or an abstract name (NUL first) without its padding."""
    if field_.startswith(b"\0"):
        name = field_.rstrip(b"\0")
        return from_sockaddr(socket.AF_UNIX, kind, b"\0" + name[1:]) if len(name) > 1 else None
    return from_sockaddr(socket.AF_UNIX, kind, field_.split(b"\0", 1)[0])


#: What is left over or cut short at the end of the TLVs of the header or of an SSL TLV.
_STRAY = {
    "header": N_("PROXY v2: {count} stray byte(s) at the end of the header"),
    "SSL TLV": N_("PROXY v2: {count} stray byte(s) at the end of the SSL TLV"),
}
_PAST = {
    "header": N_("PROXY v2: TLV {type} of {size} bytes runs past the end of the header"),
    "SSL TLV": N_("PROXY v2: TLV {type} of {size} bytes runs past the end of the SSL TLV"),
}


def _split_tlvs(data: bytes, what: str) -> list[tuple[int, bytes]]:
    found = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 3:
            raise _Invalid(_(_STRAY[what]).format(count=len(data) - offset))
        kind, size = data[offset], int.from_bytes(data[offset + 1 : offset + 3], "big")
        if offset + 3 + size > len(data):
            raise _Invalid(_(_PAST[what]).format(type=f"{kind:#04x}", size=size))
        found.append((kind, data[offset + 3 : offset + 3 + size]))
        offset += 3 + size
    return found


def _tlvs(data: bytes, header: bytes) -> tuple[tuple[int, bytes], ...]:
    found = _split_tlvs(data, "header")
    crcs = [value for kind, value in found if kind == PP2_TYPE_CRC32C]
    if crcs:
        if len(crcs) > 1 or len(crcs[0]) != 4:
            raise _Invalid(_("PROXY v2: a CRC32c TLV must be one, of 4 bytes"))
        at = len(header) - len(data) + _offset_of(found, PP2_TYPE_CRC32C)
        zeroed = header[:at] + b"\0\0\0\0" + header[at + 4 :]
        if crc32c(zeroed) != int.from_bytes(crcs[0], "big"):
            raise _Invalid(_("PROXY v2: the CRC32c checksum does not match the header"))
    return tuple(found)


def _offset_of(tlvs: list[tuple[int, bytes]], wanted: int) -> int:
    """Where the value of the first TLV of type ``wanted`` starts, counted from the first TLV."""
    offset = 0
    for kind, value in tlvs:
        if kind == wanted:
            return offset + 3
        offset += 3 + len(value)
    raise AssertionError("no such TLV")


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise _Invalid(
            _("PROXY v2: the {name} TLV is not UTF-8: {start}").format(name=what, start=_shown(value[:32]))
        ) from None


def _with_tlvs(header: ProxyHeader) -> ProxyHeader:
    """``header`` with the TLVs this module knows parsed into its fields."""
    values: dict[str, object] = {}
    for kind, value in header.tlvs:
        if kind == PP2_TYPE_ALPN:
            values["alpn"] = value
        elif kind == PP2_TYPE_AUTHORITY:
            values["authority"] = _text(value, "authority")
        elif kind == PP2_TYPE_UNIQUE_ID:
            if len(value) > MAX_UNIQUE_ID:
                raise _Invalid(
                    _("PROXY v2: unique id of {size} bytes (at most {most})").format(
                        size=len(value), most=MAX_UNIQUE_ID
                    )
                )
            values["unique_id"] = value
        elif kind == PP2_TYPE_SSL:
            values["ssl"] = _ssl(value)
        elif kind == PP2_TYPE_NETNS:
            values["netns"] = _text(value, "netns")
    return _replace(header, values) if values else header


def _replace(header: ProxyHeader, values: dict[str, object]) -> ProxyHeader:
    return dataclasses.replace(header, **values)  # type: ignore[arg-type]


def _ssl(value: bytes) -> ProxySSL:
    if len(value) < 5:
        raise _Invalid(_("PROXY v2: SSL TLV of {size} bytes (at least 5)").format(size=len(value)))
    client, verify = value[0], int.from_bytes(value[1:5], "big")
    named: dict[int, str] = {}
    other = []
    for kind, sub in _split_tlvs(value[5:], "SSL TLV"):
        if kind in (PP2_SUBTYPE_SSL_VERSION, PP2_SUBTYPE_SSL_CN, PP2_SUBTYPE_SSL_CIPHER):
            named[kind] = _text(sub, "SSL")
        else:
            other.append((kind, sub))
    return ProxySSL(
        client=client,
        verify=verify,
        version=named.get(PP2_SUBTYPE_SSL_VERSION),
        cn=named.get(PP2_SUBTYPE_SSL_CN),
        cipher=named.get(PP2_SUBTYPE_SSL_CIPHER),
        other=tuple(other),
    )

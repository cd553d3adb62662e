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

import ipaddress
import re
import socket
import struct
from socket import AF_INET, inet_ntop

from ._proxytlv import read_tlvs, with_tlvs
from ._proxytypes import (
    _UNIX_FIELD,
    _V2_KINDS,
    _V2_SIZES,
    MAX_V2_LENGTH,
    V1_MAX,
    V2_SIGNATURE,
    Family,
    Invalid,
    NeedMore,
    ProxyHeader,
    ProxyProtocolError,
    ProxySSL,
    Refused,
    Result,
    crc32c,
    shown,
)
from ._proxywrite import encode_v1, encode_v2
from ._text import quoted
from .address import InetAddress, SocketAddress, from_sockaddr, inet_address
from .i18n import _

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
            common = _V1_TCP4(data)
            if common is not None:
                header = _v1_tcp4(common)
                if header is not None:
                    return header
            return _parse_v1(data)
        if V2_SIGNATURE.startswith(data[:12]):
            return _parse_v2(data, max_v2_length)
        return Refused(
            _("no PROXY protocol header: the connection starts with {start}").format(start=shown(data[:16]))
        )
    except Invalid as exc:
        return Refused(str(exc))


# -- version 1

#: The bytes a version 1 line may hold before its CRLF.
_PRINTABLE = bytes(range(0x20, 0x7F))


#: The most common v1 line (HAProxy's ``send-proxy`` from an IPv4 client) in one match: each
#: octet and port written as _parse_v1 accepts them (no leading zero, octets up to 255, ports
#: of up to five digits).  Any other line, valid or not, takes _parse_v1's way, which checks
#: it part by part and names what is wrong.
_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_TEXT = rb"(" + _OCTET + rb"(?:\." + _OCTET + rb"){3})"
_PORT_TEXT = rb"(0|[1-9][0-9]{0,4})"
_V1_TCP4 = re.compile(
    rb"PROXY TCP4 " + _IPV4_TEXT + rb" " + _IPV4_TEXT + rb" " + _PORT_TEXT + rb" " + _PORT_TEXT + rb"\r\n"
).match


def _v1_tcp4(line: re.Match[bytes]) -> ProxyHeader | None:
    """The header of a line :data:`_V1_TCP4` matched, or None if a port is above 65535."""
    source_port, destination_port = int(line[3]), int(line[4])
    if source_port > 0xFFFF or destination_port > 0xFFFF:
        return None
    source = inet_address("tcp", line[1].decode("ascii"), source_port)
    destination = inet_address("tcp", line[2].decode("ascii"), destination_port)
    return _header(1, "proxy", "TCP4", source, destination, line.end(), ())


def _parse_v1(data: bytes) -> Result:
    end = data.find(b"\r\n", 0, V1_MAX)
    line = data[: V1_MAX if end < 0 else end]
    if line.translate(None, _PRINTABLE):  # one C call to see that all is printable
        _check_printable(line, end)
    if end < 0:
        if len(data) >= V1_MAX:
            raise Invalid(_("PROXY v1 line: no CRLF in the first {size} bytes").format(size=V1_MAX))
        return NeedMore()
    parts = line.decode("ascii").split(" ")
    consumed = end + 2
    if parts[0] != "PROXY" or len(parts) < 2:
        raise Invalid(
            _("PROXY v1 line: {line} does not start with 'PROXY ' and a protocol").format(line=shown(line))
        )
    if parts[1] == "UNKNOWN":
        return ProxyHeader(1, "proxy", "UNKNOWN", None, None, consumed)
    if parts[1] not in ("TCP4", "TCP6") or len(parts) != 6:
        raise Invalid(
            _(
                "PROXY v1 line: {line}: expected 'PROXY TCP4|TCP6 SRC DST SPORT DPORT' or 'PROXY UNKNOWN'"
            ).format(line=shown(line))
        )
    family: Family = "TCP4" if parts[1] == "TCP4" else "TCP6"
    source, destination = _v1_addresses(family, parts)
    return _header(1, "proxy", family, source, destination, consumed, ())


def _check_printable(line: bytes, end: int) -> None:
    """Name the first byte of ``line`` that may not be there (a CR may end a line whose LF is
    still to come)."""
    for i, byte in enumerate(line):
        if not 0x20 <= byte <= 0x7E and not (byte == 0x0D and i == len(line) - 1 and end < 0):
            raise Invalid(
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
            raise Invalid(
                _("PROXY v1 line: {host} is not a canonical {family} address").format(
                    host=quoted(host), family=family
                )
            ) from None
        if not port.isdigit() or (port != "0" and port[0] == "0") or len(port) > 5 or int(port) > 0xFFFF:
            raise Invalid(
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
        raise Invalid(_("PROXY v2: the signature is wrong"))
    if data[12] not in (0x20, 0x21) or data[13] not in _V2_FAMILY_BYTES:
        _check_v2_bytes(data[12], data[13])
    command, family, transport = data[12] & 0x0F, data[13] >> 4, data[13] & 0x0F
    (length,) = struct.unpack_from("!H", data, 14)
    if length > max_v2_length:
        raise Invalid(
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
        raise Invalid(
            _("PROXY v2: {length} bytes cannot hold {kind} addresses ({size} bytes)").format(
                length=length, kind=kind, size=size
            )
        )
    # Most headers carry addresses only: no TLVs to split, check or parse then.
    tlvs = read_tlvs(block[size:], data[: 16 + length]) if length > size else ()
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
    return with_tlvs(header) if tlvs else header


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
        raise Invalid(_("PROXY v2: version {version} (only 2 exists)").format(version=version))
    if command > 1:
        raise Invalid(_("PROXY v2: command {command} (0 LOCAL or 1 PROXY)").format(command=command))
    raise Invalid(
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

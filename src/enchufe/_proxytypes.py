"""The PROXY protocol's constants and the values its decoder returns (see :mod:`enchufe.proxyproto`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._text import printable
from .address import SocketAddress
from .errors import ProtocolError

#: The longest version 1 line, CRLF included ("PROXY UNKNOWN" with two IPv6 addresses).
V1_MAX = 107
#: The 12 bytes that start every version 2 header.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: The largest version 2 length field accepted (addresses + TLVs): room for two unix addresses
#: (216 bytes) and every TLV HAProxy sends by default, client certificate chains excepted.
MAX_V2_LENGTH = 4096

#: TLV types (section 2.2).
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_TYPE_NETNS = 0x30
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04
#: The longest unique id a sender may put in a header (section 2.2.5).
MAX_UNIQUE_ID = 128

Family = Literal["TCP4", "TCP6", "UDP4", "UDP6", "UNIX", "UNIXGRAM", "UNKNOWN"]

#: v2 (family nibble, protocol nibble) → the family's name; its addresses' size by family.
_V2_KINDS: dict[tuple[int, int], Family] = {
    (1, 1): "TCP4",
    (1, 2): "UDP4",
    (2, 1): "TCP6",
    (2, 2): "UDP6",
    (3, 1): "UNIX",
    (3, 2): "UNIXGRAM",
}
_V2_SIZES = {1: 12, 2: 36, 3: 216}
_UNIX_FIELD = 108


class ProxyProtocolError(ProtocolError):
    """A PROXY protocol header that cannot be made, or a decoder used after it was done."""


@dataclass(frozen=True)
class NeedMore:
    """Not a whole header yet: feed more bytes (at least ``at_least``)."""

    at_least: int = 1


@dataclass(frozen=True)
class Refused:
    """Not a valid PROXY protocol header: the connection must be closed.  ``reason`` is one
    line, what the peer sent shown escaped."""

    reason: str


@dataclass(frozen=True)
class ProxySSL:
    """The PP2_TYPE_SSL TLV: whether the client spoke TLS to the proxy, with what, and who it was.

    ``client`` holds the PP2_CLIENT_* bits; ``verify`` is 0 when the client's certificate was
    verified (see :attr:`verified`).  ``cn`` is that certificate's Common Name.  Sub-TLVs not
    named here are kept in ``other``.
    """

    client: int = PP2_CLIENT_SSL
    verify: int = 0
    version: str | None = None
    cn: str | None = None
    cipher: str | None = None
    other: tuple[tuple[int, bytes], ...] = ()

    @property
    def verified(self) -> bool:
        """The client presented a certificate and the proxy verified it."""
        return bool(self.client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS)) and self.verify == 0


@dataclass(frozen=True)
class ProxyHeader:
    """A whole, valid header.

    ``source`` is the real client and ``destination`` the address it connected to, as enchufe
    addresses; both ``None`` for a LOCAL header (the proxy's own health check: use the
    connection's real endpoints) and for the UNKNOWN family.  ``consumed`` is the header's
    length: every byte after it is payload.
    """

    version: Literal[1, 2]
    command: Literal["proxy", "local"]
    family: Family
    source: SocketAddress | None
    destination: SocketAddress | None
    consumed: int
    #: Every TLV as (type, value), in order, the ones parsed below included.
    tlvs: tuple[tuple[int, bytes], ...] = ()
    alpn: bytes | None = None
    authority: str | None = None
    unique_id: bytes | None = None
    ssl: ProxySSL | None = None
    netns: str | None = None

    @property
    def is_local(self) -> bool:
        """The proxy speaks for itself (LOCAL, or UNKNOWN): keep the connection's own addresses."""
        return self.source is None


Result = NeedMore | ProxyHeader | Refused


# CRC32c (RFC 4960 appendix B: the Castagnoli polynomial, reflected)


def _crc_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """The CRC32c of ``data`` (``crc32c(b"123456789") == 0xE3069283``)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


class Invalid(Exception):
    """Inside the parser (:mod:`enchufe.proxyproto`, :mod:`enchufe._proxytlv`): the reason a
    header is refused."""


def shown(data: bytes) -> str:
    """Bytes a peer sent, quoted and escaped for a refusal's line."""
    return "'" + printable(data) + "'"

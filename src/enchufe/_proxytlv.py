"""The TLVs of a PROXY protocol v2 header, read: split, checked (lengths, the CRC32c), and the
ones HAProxy's specification defines (ALPN, authority, unique id, the SSL block, netns) parsed
into the header's fields.  Part of :mod:`enchufe.proxyproto`'s parser: a TLV that cannot be
read raises :class:`~enchufe._proxytypes.Invalid` with the reason its header is refused."""

from __future__ import annotations

import dataclasses

from ._proxytypes import (
    MAX_UNIQUE_ID,
    PP2_SUBTYPE_SSL_CIPHER,
    PP2_SUBTYPE_SSL_CN,
    PP2_SUBTYPE_SSL_VERSION,
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_NETNS,
    PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID,
    Invalid,
    ProxyHeader,
    ProxySSL,
    crc32c,
    shown,
)
from .i18n import N_, _

__all__ = ["read_tlvs", "with_tlvs"]


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
            raise Invalid(_(_STRAY[what]).format(count=len(data) - offset))
        kind, size = data[offset], int.from_bytes(data[offset + 1 : offset + 3], "big")
        if offset + 3 + size > len(data):
            raise Invalid(_(_PAST[what]).format(type=f"{kind:#04x}", size=size))
        found.append((kind, data[offset + 3 : offset + 3 + size]))
        offset += 3 + size
    return found


def read_tlvs(data: bytes, header: bytes) -> tuple[tuple[int, bytes], ...]:
    found = _split_tlvs(data, "header")
    crcs = [value for kind, value in found if kind == PP2_TYPE_CRC32C]
    if crcs:
        if len(crcs) > 1 or len(crcs[0]) != 4:
            raise Invalid(_("PROXY v2: a CRC32c TLV must be one, of 4 bytes"))
        at = len(header) - len(data) + _offset_of(found, PP2_TYPE_CRC32C)
        zeroed = header[:at] + b"\0\0\0\0" + header[at + 4 :]
        if crc32c(zeroed) != int.from_bytes(crcs[0], "big"):
            raise Invalid(_("PROXY v2: the CRC32c checksum does not match the header"))
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
        raise Invalid(
            _("PROXY v2: the {name} TLV is not UTF-8: {start}").format(name=what, start=shown(value[:32]))
        ) from None


def with_tlvs(header: ProxyHeader) -> ProxyHeader:
    """``header`` with the TLVs this module knows parsed into its fields."""
    values: dict[str, object] = {}
    for kind, value in header.tlvs:
        if kind == PP2_TYPE_ALPN:
            values["alpn"] = value
        elif kind == PP2_TYPE_AUTHORITY:
            values["authority"] = _text(value, "authority")
        elif kind == PP2_TYPE_UNIQUE_ID:
            if len(value) > MAX_UNIQUE_ID:
                raise Invalid(
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
        raise Invalid(_("PROXY v2: SSL TLV of {size} bytes (at least 5)").format(size=len(value)))
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

"""A TLS ClientHello reader that does no I/O (in the style of h11): feed it the bytes a client
sent first, get :data:`NEED_MORE`, a :class:`ClientHello` (server names, ALPN, versions) or a
:class:`Refused` with its reason.

::

    reader = HelloReader()
    while True:
        data = sock.recv(reader.room)          # never more than the bound
        event = reader.feed(data)              # b"": the client stopped sending
        if event is not NEED_MORE:
            break
    if isinstance(event, ClientHello):
        route_by(event.server_name)
    replay(reader.data)                        # every byte read, for the real server

What the relay needs to route a TLS connection without terminating it (nginx's
``ssl_preread``, HAProxy's ``req.ssl_sni``): the ClientHello may come in any number of TCP
segments and TLS records (RFC 8446 §5.1 lets a handshake message span records), and bytes the
client sends after it (TLS 1.3 early data, a ChangeCipherSpec) are kept in :attr:`HelloReader.data`
for the replay, never parsed.

Bound: the ClientHello message is at most :data:`MAX_HELLO` bytes (16 KiB, its 4-byte header
included: the largest seen in practice, with post-quantum key shares, is under 2 KiB), carried
in at most :data:`MAX_RECORDS` records; so the reader never asks for, nor holds, more than
:data:`MAX_WIRE` bytes (16 KiB + 5 bytes of header per record).  A record header that would
take it past that is refused at once, before its payload is read.

Errors: bad input is never an exception: it is a :class:`Refused` (``kind`` one of
``not-tls``, ``not-hello``, ``malformed``, ``oversized``, ``truncated``; ``detail`` in words).
The only exception is :class:`ClientHelloError`, for a caller that feeds a reader that is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ._text import printable
from .errors import UsageError
from .i18n import N_, _

__all__ = [
    "MAX_HELLO",
    "MAX_RECORDS",
    "MAX_WIRE",
    "NEED_MORE",
    "ClientHello",
    "ClientHelloError",
    "Event",
    "HelloReader",
    "NeedMore",
    "Refused",
]

#: The largest ClientHello handshake message accepted, its 4-byte header included.
MAX_HELLO: Final = 16 * 1024
#: The most TLS records the ClientHello may span (a client splitting it byte by byte into
#: records is refused: only a tiny record size limit would do that).
MAX_RECORDS: Final = 32
#: The most bytes a reader takes from the wire: the message and a record header per record.
MAX_WIRE: Final = MAX_HELLO + 5 * MAX_RECORDS

_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_MAX_RECORD = 1 << 14  # RFC 8446 §5.1: a plaintext record's payload is at most 2^14 bytes
_EXT_SERVER_NAME = 0
_EXT_ALPN = 16
_EXT_SUPPORTED_VERSIONS = 43
#: The field names of a refusal that are words, not the RFC's names: the parser names fields in
#: English (no lookup on the way of every hello) and a refusal translates them (see _label).
_LABELS = (N_("extension type"), N_("its list"), N_("name type"), N_("host name"), N_("protocol name"))


class ClientHelloError(UsageError):
    """The reader was used wrongly (fed after it was done); bad input is a :class:`Refused`."""


class NeedMore:
    """More bytes are needed (there is one: :data:`NEED_MORE`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE: Final = NeedMore()


@dataclass(frozen=True)
class ClientHello:
    """What a ClientHello offered.  ``server_names`` are the SNI host names, lowercased (at
    most one in a well-formed hello); ``versions`` the ``supported_versions`` extension's (TLS
    1.3 clients), empty without it; ``size`` the handshake message's bytes, header included."""

    legacy_version: int
    server_names: tuple[str, ...]
    alpn: tuple[str, ...]
    versions: tuple[int, ...]
    size: int
    records: int

    @property
    def server_name(self) -> str | None:
        """The server name to route by: the first host name, or ``None`` without SNI."""
        return self.server_names[0] if self.server_names else None


@dataclass(frozen=True)
class Refused:
    """Not a ClientHello the reader accepts: ``kind`` for counting, ``detail`` for a log line."""

    kind: str
    detail: str


Event = NeedMore | ClientHello | Refused


class _Bad(Exception):
    """Internal: the input is refused (becomes a :class:`Refused`, never leaves the module)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class HelloReader:
    """Reads one ClientHello from the start of a stream (see the module)."""

    __slots__ = ("_data", "_done", "_message", "_pos", "_records")

    def __init__(self) -> None:
        self._data = bytearray()  # every byte fed, for the replay
        self._pos = 0  # where the next record header starts in _data
        self._message = bytearray()  # handshake bytes gathered from the records so far
        self._records = 0
        self._done: Event | None = None

    @property
    def data(self) -> bytes:
        """Every byte fed so far (what the real server must be sent first)."""
        return bytes(self._data)

    @property
    def room(self) -> int:
        """How many more bytes the reader may take (0 once it has an answer)."""
        return 0 if self._done is not None else MAX_WIRE - len(self._data)

    def feed(self, data: bytes | bytearray | memoryview) -> Event:
        """Take ``data`` (``b""``: the stream ended) and say where the reading is.  Bytes past
        the ClientHello's last record are kept for the replay.  Once there is an answer, it is
        final: feeding more raises :class:`ClientHelloError`."""
        if self._done is not None:
            raise ClientHelloError(_("this ClientHello reader is done; make a new one per connection"))
        try:
            event = self._feed(bytes(data))
        except _Bad as bad:
            event = Refused(bad.kind, bad.detail)
        if event is not NEED_MORE:
            self._done = event
        return event

    def _feed(self, data: bytes) -> Event:
        if not data:
            if not self._data:
                raise _Bad("truncated", _("the client closed without sending anything"))
            raise _Bad(
                "truncated",
                _("the client closed after {size} bytes of a ClientHello").format(size=len(self._data)),
            )
        room = MAX_WIRE - len(self._data)
        self._data += data[:room]
        event = self._records_in()
        if isinstance(event, ClientHello):
            self._data += data[room:]  # what follows the hello, kept for the replay unread
        elif len(data) > room or len(self._data) >= MAX_WIRE:
            # (the second: the bound reached in the middle of a record header, room left none)
            raise _Bad(
                "oversized",
                _("more than {size} bytes before the ClientHello was complete").format(size=MAX_WIRE),
            )
        return event

    def _records_in(self) -> Event:
        """Take the whole records buffered; the hello once its last record is in."""
        while len(self._data) - self._pos >= 5:
            header = self._data[self._pos : self._pos + 5]
            length = self._check_record(header)
            end = self._pos + 5 + length
            if end > len(self._data):
                return NEED_MORE
            self._message += self._data[self._pos + 5 : end]
            self._pos = end
            self._records += 1
            hello = self._check_message()
            if hello is not None:
                return hello
        return NEED_MORE

    def _check_record(self, header: bytes | bytearray) -> int:
        """The payload length of a record whose 5-byte ``header`` is in; refused as not TLS, or
        as taking the reader past its bound."""
        if header[0] != _HANDSHAKE:
            raise _Bad("not-tls", self._not_handshake(header))
        if header[1] != 3:
            raise _Bad(
                "not-tls",
                _("not a TLS record: version bytes {bytes}").format(
                    bytes=f"0x{header[1]:02x}{header[2]:02x}"
                ),
            )
        length = header[3] << 8 | header[4]
        if length == 0 or length > _MAX_RECORD:
            raise _Bad(
                "malformed",
                _("a handshake record of {size} bytes (1 to {most} allowed)").format(
                    size=length, most=_MAX_RECORD
                ),
            )
        if self._records + 1 > MAX_RECORDS:
            raise _Bad(
                "oversized", _("the ClientHello spans more than {count} records").format(count=MAX_RECORDS)
            )
        if self._pos + 5 + length > MAX_WIRE:
            raise _Bad(
                "oversized", _("the ClientHello's records take more than {size} bytes").format(size=MAX_WIRE)
            )
        return length

    def _not_handshake(self, header: bytes | bytearray) -> str:
        """Why a record that is no handshake record is refused: where, and what it looks like."""
        if all(32 <= b < 127 for b in header):
            what = _("plain text")
        else:
            what = _("first byte {byte}").format(byte=f"0x{header[0]:02x}")
        if self._records == 0:
            where = _("the first record")
        else:
            where = _("record {number}").format(number=self._records + 1)
        return _("not a TLS handshake: {where} is {what}, not a handshake record (0x16)").format(
            where=where, what=what
        )

    def _check_message(self) -> ClientHello | None:
        message = self._message
        if len(message) < 4:
            return None
        if message[0] != _CLIENT_HELLO:
            raise _Bad(
                "not-hello",
                _("the first handshake message is type {type}, not a ClientHello (1)").format(
                    type=message[0]
                ),
            )
        size = 4 + (message[1] << 16 | message[2] << 8 | message[3])
        if size > MAX_HELLO:
            raise _Bad(
                "oversized",
                _("a ClientHello of {size} bytes (at most {most})").format(size=size, most=MAX_HELLO),
            )
        if len(message) < size:
            return None
        return _parse_body(bytes(message[4:size]), size, self._records)


class _Cursor:
    """Reads big-endian fields from ``data``; running out is a refusal, never an IndexError."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, count: int, field: str) -> bytes:
        if count > self.left:
            where = ": ".join(_label(part) for part in (*self.what.split(": "), field))
            raise _Bad("malformed", _("{field} runs past its end").format(field=where))
        start = self.pos
        self.pos += count
        return self.data[start : self.pos]

    def number(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "big")

    def vector(self, size: int, field: str) -> _Cursor:
        """A length-prefixed (``size`` bytes) field, as a cursor of its own."""
        return _Cursor(self.take(self.number(size, field), field), f"{self.what}: {field}")


def _parse_body(body: bytes, size: int, records: int) -> ClientHello:
    hello = _Cursor(body, "ClientHello")
    legacy_version = hello.number(2, "legacy_version")
    hello.take(32, "random")
    session_id = hello.vector(1, "legacy_session_id")
    if session_id.left > 32:
        raise _Bad(
            "malformed",
            _("ClientHello: a session id of {size} bytes (at most 32)").format(size=session_id.left),
        )
    suites = hello.vector(2, "cipher_suites")
    if suites.left == 0 or suites.left % 2:
        raise _Bad(
            "malformed",
            _("ClientHello: cipher_suites of {size} bytes (a non-zero even count)").format(size=suites.left),
        )
    if hello.vector(1, "legacy_compression_methods").left == 0:
        raise _Bad("malformed", _("ClientHello: no compression method"))
    found: dict[int, bytes] = {}
    if hello.left:  # extensions are optional (a TLS 1.2 client may send none)
        extensions = hello.vector(2, "extensions")
        if hello.left:
            raise _Bad(
                "malformed", _("ClientHello: {size} bytes after the extensions").format(size=hello.left)
            )
        while extensions.left:
            kind = extensions.number(2, "extension type")
            data = extensions.vector(2, f"extension {kind}").data
            if kind in found:
                raise _Bad("malformed", _("ClientHello: extension {number} given twice").format(number=kind))
            found[kind] = data
    return ClientHello(
        legacy_version=legacy_version,
        server_names=_server_names(found.get(_EXT_SERVER_NAME)),
        alpn=_alpn(found.get(_EXT_ALPN)),
        versions=_versions(found.get(_EXT_SUPPORTED_VERSIONS)),
        size=size,
        records=records,
    )


def _whole(data: bytes, size: int, what: str) -> _Cursor:
    """An extension's body that is one length-prefixed list filling it exactly."""
    outer = _Cursor(data, what)
    inner = outer.vector(size, "its list")
    if outer.left:
        raise _Bad("malformed", _("{field}: {size} bytes after its list").format(field=what, size=outer.left))
    return inner


def _server_names(data: bytes | None) -> tuple[str, ...]:
    """RFC 6066 §3: host names (type 0), ASCII, no trailing dot; other name types are skipped."""
    if data is None:
        return ()
    names = _whole(data, 2, "server_name")
    if not names.left:
        raise _Bad("malformed", _("server_name: an empty list"))
    found: list[str] = []
    while names.left:
        kind = names.number(1, "name type")
        raw = names.vector(2, "host name").data
        if kind != 0:
            continue
        found.append(_host_name(raw))
    return tuple(found)


def _host_name(raw: bytes) -> str:
    if not raw or len(raw) > 255:
        raise _Bad(
            "malformed", _("server_name: a host name of {size} bytes (1 to 255)").format(size=len(raw))
        )
    if not all(b < 127 and (chr(b).isalnum() or b in b"-._") for b in raw):
        shown = printable(raw[:64])
        raise _Bad(
            "malformed",
            _("server_name: '{name}' is not a host name (letters, digits, '-', '.', '_')").format(name=shown),
        )
    if raw.endswith(b".") or raw.startswith(b".") or b".." in raw:
        raise _Bad("malformed", _("server_name: {name} has an empty label").format(name=repr(raw.decode())))
    return raw.decode("ascii").lower()


def _alpn(data: bytes | None) -> tuple[str, ...]:
    """RFC 7301: non-empty protocol names; bytes outside ASCII are shown escaped."""
    if data is None:
        return ()
    names = _whole(data, 2, "ALPN")
    found: list[str] = []
    while names.left:
        raw = names.vector(1, "protocol name").data
        if not raw:
            raise _Bad("malformed", _("ALPN: an empty protocol name"))
        found.append(raw.decode("ascii", "backslashreplace"))
    if not found:
        raise _Bad("malformed", _("ALPN: an empty list"))
    return tuple(found)


def _versions(data: bytes | None) -> tuple[int, ...]:
    if data is None:
        return ()
    versions = _whole(data, 1, "supported_versions")
    if versions.left == 0 or versions.left % 2:
        raise _Bad(
            "malformed",
            _("supported_versions: a list of {size} bytes (a non-zero even count)").format(
                size=versions.left
            ),
        )
    return tuple(versions.number(2, "version") for _index in range(versions.left // 2))


def _label(part: str) -> str:
    """One part of a field's path in a refusal, in the current language: the words of
    :data:`_LABELS` and ``extension N`` translated, the RFC's field names as they are."""
    word, _space, number = part.partition(" ")
    if word == "extension" and number.isdigit():
        return _("extension {number}").format(number=number)
    return _(part) if part in _LABELS else part

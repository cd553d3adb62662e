"""TLS settings of an address: the query part of ``tls://host:port?…``, parsed without any I/O.

``parse_query(text)`` turns ``ca=/etc/ca.pem&alpn=h2,http/1.1`` into a frozen :class:`TLSParams`;
``str(params)`` gives back a canonical query that parses to an equal value.  Files are named,
not read: whether ``ca=`` exists or holds PEM is found out when a socket is opened with it.

====================  ======  ====================================================================
parameter             side    meaning
====================  ======  ====================================================================
``ca=FILE``           client  trust these CAs instead of the system store
``sni=NAME``          client  the server name sent and verified (default: the address's host)
``pin=sha256:HEX``    client  accept exactly the certificate whose SubjectPublicKeyInfo hashes so
``insecure``          client  no verification at all (warned about at every connection)
``cert=FILE``         both    certificate chain (a server's, or a client's for mutual TLS)
``key=FILE``          both    its private key, when not in ``cert``
``cert=auto``         server  an ephemeral self-signed certificate; its pin is printed
``client-ca=FILE``    server  require a client certificate signed by these CAs
``allow-san=T:V,…``   server  with ``client-ca``: require one of these SANs (DNS, URI, IP, EMAIL)
``allow-cn=NAME,…``   server  with ``client-ca``: require one of these subject common names
``alpn=P1,P2``        both    protocols offered or accepted, in order of preference
``handshake-timeout`` both    seconds a handshake may take (default 10)
====================  ======  ====================================================================

Values are percent-decoded (``ca=/srv/odd%26name.pem`` names ``/srv/odd&name.pem``), and
``str()`` encodes what needs it.  Which side a parameter belongs to is checked by
:meth:`TLSParams.check_side`, when the address is used to connect or to listen.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote, unquote

from ._inet_text import literal_family
from ._ranges import MAX_SECONDS
from ._text import printable
from .errors import AddressError
from .i18n import _

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "PARAMETERS",
    "SAN_TYPES",
    "TLSParams",
    "format_pin",
    "parse_query",
]

#: Seconds a handshake may take unless ``handshake-timeout=`` says otherwise.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0

#: The subject alternative name types ``allow-san=`` accepts, as ``TYPE:VALUE``.
SAN_TYPES = ("DNS", "URI", "IP", "EMAIL")

Side = Literal["client", "server"]

_CLIENT_ONLY = ("ca", "sni", "pin", "insecure")
_SERVER_ONLY = ("client-ca", "allow-san", "allow-cn")
_BOTH = ("cert", "key", "alpn", "handshake-timeout")
#: Every parameter name a TLS query may hold.
PARAMETERS = _CLIENT_ONLY + _BOTH + _SERVER_ONLY
_ACCEPTED = ", ".join(PARAMETERS)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SNI = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*\.?$")
# What str() leaves unencoded in a value: path and list characters that cannot end a parameter.
_SAFE = "/:@,._-~+*"
#: What stays as it is in one item of a list parameter: a comma there is written %2C, so that an
#: item may hold one (an ALPN protocol, a certificate's CN: "Doe, John").
_ITEM_SAFE = _SAFE.replace(",", "")
#: The parameters whose value is a comma-separated list: split before their escapes are decoded.
_LISTS = frozenset({"pin", "allow-san", "allow-cn", "alpn"})


def format_pin(digest: bytes) -> str:
    """``sha256:`` and the 64 lowercase hex digits of a SubjectPublicKeyInfo digest."""
    return "sha256:" + digest.hex()


@dataclass(frozen=True)
class TLSParams:
    """The TLS settings of one address; every field is optional, and ``TLSParams()`` means "TLS,
    verified against the system store, default name, no client certificate".

    ``pins`` holds the 32-byte SHA-256 digests of accepted SubjectPublicKeyInfos (several when
    a key is being rotated); ``cert_auto`` is ``cert=auto``.  Lists keep their given order.
    """

    ca: str | None = None
    sni: str | None = None
    pins: tuple[bytes, ...] = ()
    insecure: bool = False
    cert: str | None = None
    key: str | None = None
    cert_auto: bool = False
    client_ca: str | None = None
    allow_san: tuple[tuple[str, str], ...] = ()
    allow_cn: tuple[str, ...] = ()
    alpn: tuple[str, ...] = ()
    handshake_timeout: float = field(default=DEFAULT_HANDSHAKE_TIMEOUT)

    def __post_init__(self) -> None:
        _check_consistent(self)

    @property
    def verifies(self) -> bool:
        """Whether a client with these settings checks the server at all."""
        return not self.insecure

    def names(self) -> list[str]:
        """The parameters that are set, by their query names, in canonical order."""
        return [name for name, _ in self._pairs()]

    def check_side(self, side: Side) -> None:
        """Raise :class:`AddressError` if a parameter of the other side is set (``client-ca`` on a
        client, ``pin`` on a listener …), or if a server has no certificate."""
        misplaced = _SERVER_ONLY if side == "client" else _CLIENT_ONLY
        wrong = [name for name in self.names() if name in misplaced]
        if self.cert_auto and side == "client":
            wrong.insert(0, "cert=auto")
        if wrong:
            if side == "client":
                allowed = _CLIENT_ONLY + _BOTH
                line = _("TLS parameter {names} is for listening (server) only; when connecting: {allowed}")
            else:
                allowed = ("cert=auto", *_BOTH, *_SERVER_ONLY)
                line = _("TLS parameter {names} is for connecting (client) only; when listening: {allowed}")
            raise AddressError(line.format(names=", ".join(wrong), allowed=", ".join(allowed)))
        if side == "server" and self.cert is None and not self.cert_auto:
            raise AddressError(
                _(
                    "a TLS listener needs a certificate: add cert=FILE (and key=FILE unless the key is "
                    "in the same file), or cert=auto for an ephemeral self-signed one"
                )
            )

    def _pairs(self) -> list[tuple[str, str | tuple[str, ...] | None]]:
        """(name, value) of each parameter set; a list parameter's value is its items."""
        pairs: list[tuple[str, str | tuple[str, ...] | None]] = []
        if self.ca is not None:
            pairs.append(("ca", self.ca))
        if self.sni is not None:
            pairs.append(("sni", self.sni))
        if self.pins:
            pairs.append(("pin", tuple(format_pin(pin) for pin in self.pins)))
        if self.insecure:
            pairs.append(("insecure", None))
        if self.cert_auto:
            pairs.append(("cert", "auto"))
        elif self.cert is not None:
            pairs.append(("cert", self.cert))
        if self.key is not None:
            pairs.append(("key", self.key))
        if self.client_ca is not None:
            pairs.append(("client-ca", self.client_ca))
        if self.allow_san:
            pairs.append(("allow-san", tuple(f"{kind}:{value}" for kind, value in self.allow_san)))
        if self.allow_cn:
            pairs.append(("allow-cn", self.allow_cn))
        if self.alpn:
            pairs.append(("alpn", self.alpn))
        if self.handshake_timeout != DEFAULT_HANDSHAKE_TIMEOUT:
            pairs.append(("handshake-timeout", f"{self.handshake_timeout:g}"))
        return pairs

    def __str__(self) -> str:
        return "&".join(
            name if value is None else f"{name}={_encoded(value)}" for name, value in self._pairs()
        )


def parse_query(query: str) -> TLSParams:
    """Parse the query of a TLS address (the text after ``?``, possibly empty).

    Raises :class:`AddressError` naming the parameter at fault and what is accepted: an unknown
    or repeated parameter, a malformed value (a pin that is not 64 hex digits, a SAN of an unknown
    type, a timeout out of range), or settings that contradict each other (``insecure`` with
    ``pin``, ``allow-san`` without ``client-ca`` …).
    """
    values: dict[str, str | None] = {}
    for part in query.split("&") if query else []:
        name, sep, raw = part.partition("=")
        if not name:
            raise AddressError(
                _("empty TLS parameter in {query}; accepted TLS parameters: {accepted}").format(
                    query=repr(printable(query)), accepted=_ACCEPTED
                )
            )
        if name not in PARAMETERS:
            raise AddressError(
                _("unknown TLS parameter {name}; accepted TLS parameters: {accepted}").format(
                    name=repr(printable(name)), accepted=_ACCEPTED
                )
            )
        if name in values:
            raise AddressError(
                _("TLS parameter {name} is given twice; give it once (lists are comma-separated)").format(
                    name=repr(name)
                )
            )
        # A list is split first, its items decoded one by one (see _list): "%2C" is a comma in an item.
        values[name] = (raw if name in _LISTS else _decode(name, raw)) if sep else None
    return TLSParams(
        ca=_file(values, "ca"),
        sni=_sni(values),
        pins=_pins(values),
        insecure=_flag(values, "insecure"),
        cert=None if values.get("cert") == "auto" else _file(values, "cert"),
        key=_file(values, "key"),
        cert_auto=values.get("cert") == "auto",
        client_ca=_file(values, "client-ca"),
        allow_san=_sans(values),
        allow_cn=_list(values, "allow-cn", "NAME"),
        alpn=_alpn(values),
        handshake_timeout=_timeout(values),
    )


def _encoded(value: str | tuple[str, ...]) -> str:
    """A value as a query writes it: a list's items each escaped (a comma in one as %2C)."""
    if isinstance(value, tuple):
        return ",".join(quote(item, safe=_ITEM_SAFE) for item in value)
    return quote(value, safe=_SAFE)


def _decode(name: str, raw: str) -> str:
    if re.search(r"%(?![0-9A-Fa-f]{2})", raw):
        raise AddressError(
            _("TLS parameter {name}: a '%' must start an escape like %26 (write a '%' as %25)").format(
                name=name
            )
        )
    try:
        value = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise AddressError(
            _("TLS parameter {name}: the escapes do not decode as UTF-8").format(name=name)
        ) from None
    if "\0" in value:
        raise AddressError(_("TLS parameter {name}: a NUL byte cannot be part of a value").format(name=name))
    return value


def _required(values: dict[str, str | None], name: str, form: str) -> str | None:
    if name not in values:
        return None
    value = values[name]
    if not value:
        message = _("TLS parameter {name} needs a value: {name}={form}")
        raise AddressError(message.format(name=name, form=form))
    return value


def _file(values: dict[str, str | None], name: str) -> str | None:
    return _required(values, name, "FILE")


def _flag(values: dict[str, str | None], name: str) -> bool:
    if name not in values:
        return False
    value = values[name]
    if value not in (None, "", "1", "true", "yes"):
        # "insecure=no" must not be read as on, nor quietly as off: said, and refused.
        raise AddressError(
            _(
                "TLS parameter {name}={value}: {name} is a flag, on when written (as '{name}', or "
                "{name}=1, =true, =yes); to leave it off, leave it out"
            ).format(name=name, value=printable(value or ""))
        )
    return True


def _list(values: dict[str, str | None], name: str, form: str) -> tuple[str, ...]:
    """The items of a list parameter (its raw text, split at its commas, each item decoded)."""
    value = _required(values, name, f"{form},{form}…")
    if value is None:
        return ()
    raw_items = value.split(",")
    if any(not item for item in raw_items):
        raise AddressError(
            _("TLS parameter {name}: an empty item in {value}; write {name}={form},{form}…").format(
                name=name, value=repr(printable(value)), form=form
            )
        )
    return tuple(_decode(name, item) for item in raw_items)


def _sni(values: dict[str, str | None]) -> str | None:
    name = _required(values, "sni", "NAME")
    if name is None:
        return None
    if literal_family(name) is not None:
        raise AddressError(
            _(
                "sni={name}: a server name cannot be an IP address (TLS sends names only); "
                "connect to the IP and give the certificate's DNS name, e.g. sni=example.com"
            ).format(name=printable(name))
        )
    if not _SNI.match(name):
        raise AddressError(
            _("sni={name} is not a host name; e.g. sni=example.com").format(name=repr(printable(name)))
        )
    return name


def _pins(values: dict[str, str | None]) -> tuple[bytes, ...]:
    pins = []
    for item in _list(values, "pin", "sha256:HEX"):
        algorithm, _sep, digits = item.partition(":")
        digits = digits.replace(":", "").lower()
        if algorithm.lower() != "sha256" or not _HEX64.match(digits):
            raise AddressError(
                _(
                    "pin={pin} is not a pin; write pin=sha256:HEX with the 64 hex digits of the SHA-256 "
                    "of the certificate's SubjectPublicKeyInfo (cert=auto's listening line prints it)"
                ).format(pin=repr(printable(item)))
            )
        pins.append(bytes.fromhex(digits))
    return tuple(pins)


def _sans(values: dict[str, str | None]) -> tuple[tuple[str, str], ...]:
    sans = []
    for item in _list(values, "allow-san", "TYPE:VALUE"):
        kind, sep, value = item.partition(":")
        kind = kind.upper()
        if not sep or kind not in SAN_TYPES or not value:
            raise AddressError(
                _(
                    "allow-san={item}: write TYPE:VALUE with TYPE one of {types}, "
                    "e.g. allow-san=DNS:client.example.com,URI:spiffe://example.com/app"
                ).format(item=repr(printable(item)), types=", ".join(SAN_TYPES))
            )
        if kind == "IP":
            if literal_family(value) is None:
                raise AddressError(
                    _("allow-san=IP:{value}: not an IP address; e.g. IP:192.0.2.7 or IP:2001:db8::7").format(
                        value=printable(value)
                    )
                )
            value = str(ipaddress.ip_address(value))
        sans.append((kind, value))
    return tuple(sans)


def _alpn(values: dict[str, str | None]) -> tuple[str, ...]:
    protocols = _list(values, "alpn", "PROTOCOL")
    for protocol in protocols:
        if len(protocol.encode()) > 255 or not protocol.isascii() or not protocol.isprintable():
            raise AddressError(
                _("alpn: {protocol} is not a protocol name (1-255 printable ASCII bytes, e.g. h2)").format(
                    protocol=repr(printable(protocol))
                )
            )
    return protocols


def _timeout(values: dict[str, str | None]) -> float:
    text = _required(values, "handshake-timeout", "SECONDS")
    if text is None:
        return DEFAULT_HANDSHAKE_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value <= MAX_SECONDS):
        raise AddressError(
            _("handshake-timeout={value}: seconds, more than 0 and at most {most}").format(
                value=printable(text), most=f"{MAX_SECONDS:.0f}"
            )
        )
    return value


def _check_consistent(params: TLSParams) -> None:
    """Settings that contradict each other, whichever way the value was made."""
    if params.insecure and (params.pins or params.ca is not None):
        given = "pin" if params.pins else "ca"
        raise AddressError(
            _("insecure turns verification off, so {name}= would be ignored: give one or the other").format(
                name=given
            )
        )
    if (params.allow_san or params.allow_cn) and params.client_ca is None:
        raise AddressError(
            _("allow-san and allow-cn choose among verified client certificates: add client-ca=FILE")
        )
    if params.cert_auto and params.key is not None:
        raise AddressError(_("cert=auto makes its own key: drop key="))
    if params.key is not None and params.cert is None and not params.cert_auto:
        raise AddressError(_("key= goes with cert=FILE (the certificate it belongs to)"))
    if not (0 < params.handshake_timeout <= MAX_SECONDS) or math.isnan(params.handshake_timeout):
        raise AddressError(
            _("handshake-timeout: a number of seconds more than 0 and at most {most}").format(
                most=f"{MAX_SECONDS:.0f}"
            )
        )

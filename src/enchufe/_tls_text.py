"""The TLS parts of an address as text: the ``?query`` after a TLS address, the percent-encoded
names of ``tls+unix:``, and the refusals of TLS where it cannot go.  Pure: no file is read.

:mod:`enchufe.address` parses the whole address; this module splits off and reads its TLS
parts, and refuses (:class:`~enchufe.errors.AddressError`, naming the whole ``text``) a query on
an address that cannot carry one.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from ._text import quoted as _q
from .errors import AddressError
from .i18n import _
from .tlsparams import PARAMETERS, TLSParams, parse_query

#: The schemes of TLS over TCP: scheme → forced family.
INET_SCHEMES = {"tls": None, "tls4": 4, "tls6": 6}
UNIX_SCHEME = "tls+unix"
KNOWN = "tls, tls4, tls6, tls+unix"

# Other protocols' names for TLS over TCP, for the "write tls://…" suggestion.
TLS_LOOKALIKES = ("https", "ssl", "tls+tcp", "tcp+tls")

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# What str() escapes in a tls+unix: name: the escape character, the query's start, and the
# surrogate escapes (U+DC80-U+DCFF) that stand for bytes that are not UTF-8.
_ESCAPED = re.compile("[%?\udc80-\udcff]")


def split_query(rest: str) -> tuple[str, str | None]:
    """The part before the first ``?`` and the query after it (``None`` when there is none)."""
    before, sep, query = rest.partition("?")
    return before, (query if sep else None)


def params(text: str, query: str | None) -> TLSParams:
    """The TLS settings of ``text`` from its query (``TLSParams()`` when it has none)."""
    if not query:
        return TLSParams()
    try:
        return parse_query(query)
    except AddressError as exc:
        raise AddressError(_("{address}: {problem}").format(address=_q(text), problem=exc)) from None


def is_datagram_tls(scheme: str) -> bool:
    """Whether ``scheme`` (lowercase) asks for TLS over datagrams: ``dtls…``, ``tls+unixgram`` …"""
    return scheme.startswith("dtls") or scheme.startswith(("tls+udp", "tls+unixgram"))


def no_dtls(text: str) -> AddressError:
    return AddressError(
        _(
            "{address}: no TLS over datagrams (DTLS is not supported); for TLS use tls://HOST:PORT "
            "or tls+unix:PATH, e.g. tls://127.0.0.1:443"
        ).format(address=_q(text))
    )


def looks_like_tls(query: str) -> bool:
    """Whether ``query`` (after a ``?``) is made of TLS parameters only: ``ca=x.pem&sni=a``."""
    return bool(query) and all(part.partition("=")[0] in PARAMETERS for part in query.split("&"))


def refuse_query(text: str, scheme: str, query: str, suggestion: str) -> None:
    """Refuse TLS parameters on a plain address: ``udp``/``unixgram`` cannot have TLS at all, and
    ``tcp``/``unix`` need the TLS scheme (``suggestion``: the address rewritten with it).  Any
    query on ``udp`` is refused so; other queries are left to the caller (a ``?`` on a unix
    address that is no TLS query is part of its path, as it always was)."""
    if scheme.startswith("udp"):
        raise no_dtls(text)
    if not looks_like_tls(query):
        return
    if scheme.startswith("unixgram"):
        raise no_dtls(text)
    raise AddressError(
        _("{address}: TLS parameters need a TLS scheme: write {suggestion}").format(
            address=_q(text), suggestion=suggestion
        )
    )


def decode_name(text: str, raw: str) -> str:
    """A ``tls+unix:`` path or abstract name, percent-decoded (``%3F`` is ``?``, ``%25`` ``%``);
    escapes of bytes that are not UTF-8 stand for those bytes, as file names do."""
    if _BAD_ESCAPE.search(raw):
        raise AddressError(
            _(
                "{address}: a '%' in a tls+unix: name must start an escape like %3F (write a '%' as "
                "%25), e.g. tls+unix:///run/app%3F.sock"
            ).format(address=_q(text))
        )
    name = unquote(raw, errors="surrogateescape")
    if "\0" in name:
        raise AddressError(
            _(
                "{address}: a NUL byte (%00) cannot be part of a socket name, e.g. tls+unix:///run/app.sock"
            ).format(address=_q(text))
        )
    return name


def encode_name(name: str, *, abstract: bool) -> str:
    """The text of a ``tls+unix:`` name that :func:`decode_name` turns back into ``name``: ``%``
    and ``?`` escaped, the ``@`` that would make a relative path look abstract, and the bytes
    that are not UTF-8 (surrogate escapes) as the ``%XX`` they were given as."""
    encoded = _ESCAPED.sub(lambda m: f"%{ord(m[0]) & 0xFF:02X}", name)
    if not abstract and encoded.startswith("@"):
        encoded = "%40" + encoded[1:]
    return encoded

"""One line for every TLS refusal: what a failed handshake (or a record that fails its check
after it) raised, turned into a :class:`~enchufe.errors.TLSRefused` whose message says in words
what went wrong and what to try, and whose ``reason`` names it for ``--json`` and tests.

The verdicts come from OpenSSL (``ssl.SSLCertVerificationError.verify_code``, the reason name of
an ``ssl.SSLError``); each is worded twice, as the client says it (about the server and its
certificate) and as the server says it (about the client), whole sentences for translators.
"""

from __future__ import annotations

import datetime
import re
import ssl

from . import _tls_verify
from ._inet_text import literal_family
from ._text import printable
from .errors import TLSRefused, TLSTruncated
from .i18n import N_, _
from .tlsinfo import date_text, describe_certificate

__all__ = ["SOURCE_LINE", "TRUNCATED", "alpn_refused", "explain"]

_NOT_YET_VALID, _EXPIRED, _NAME_MISMATCH, _IP_MISMATCH = 9, 10, 62, 64
_UNTRUSTED = N_("add ca=FILE with the CA that issued it, or pin=sha256:… to trust this key alone")
#: X509_V_ERR_* → (reason, line, whether the line ends with the hint of _UNTRUSTED).
_VERIFY_CODES: dict[int, tuple[str, str, bool]] = {
    # X509_V_ERR_*: https://docs.openssl.org/3.0/man3/X509_STORE_CTX_get_error/
    18: ("self-signed", N_("the server's certificate is self-signed"), True),
    19: ("untrusted", N_("the server's chain ends in a self-signed CA that is not trusted"), True),
    20: ("untrusted", N_("the server's certificate is issued by a CA that is not trusted"), True),
    21: ("untrusted", N_("the server's certificate cannot be verified (no trusted issuer)"), True),
    2: ("untrusted", N_("the issuer of the server's chain is not trusted"), True),
    10: ("expired", N_("the server's certificate has expired"), False),
    9: ("not-yet-valid", N_("the server's certificate is not valid yet"), False),
    62: ("name-mismatch", N_("the server's certificate is not valid for {name}"), False),
    64: ("name-mismatch", N_("the server's certificate is not valid for the IP address {name}"), False),
}
# The same verdicts on a client's chain, as the server that checked it against client-ca says them.
_CLIENT_CA = N_("the client's certificate is not issued by a CA in client-ca")
_CLIENT_VERIFY_CODES: dict[int, tuple[str, str, bool]] = {
    18: (
        "client-certificate-refused",
        N_("the client's certificate is self-signed, not issued by a CA in client-ca"),
        False,
    ),
    19: (
        "client-certificate-refused",
        N_(
            "the client's certificate is not issued by a CA in client-ca "
            "(its chain ends in another, self-signed CA)"
        ),
        False,
    ),
    20: ("client-certificate-refused", _CLIENT_CA, False),
    21: (
        "client-certificate-refused",
        N_("the client's certificate is not issued by a CA in client-ca (its issuer is not there)"),
        False,
    ),
    2: (
        "client-certificate-refused",
        N_("the client's certificate is not issued by a CA in client-ca (its chain's issuer is not there)"),
        False,
    ),
    10: ("client-certificate-refused", N_("the client's certificate has expired"), False),
    9: ("client-certificate-refused", N_("the client's certificate is not valid yet"), False),
}
#: The peer left during the handshake: said by a client, and by a server.
_CLOSED = (
    N_("the server closed the connection during the handshake"),
    N_("the client closed the connection during the handshake"),
)
_NO_VERSION = N_("no TLS version in common (enchufe speaks TLS 1.2 and 1.3)")
# OpenSSL's reason codes (the text after the library name in SSLError.reason): the reason's
# name, and the line as a client says it (about the server), then as a server says it (about
# the client); each a whole sentence, for translators.  An alert about a certificate is about
# the one this side sent.
_REASONS: dict[str, tuple[str, str, str]] = {
    "WRONG_VERSION_NUMBER": (
        "not-tls",
        N_("the server does not speak TLS"),
        N_("the client does not speak TLS"),
    ),
    "HTTP_REQUEST": (
        "not-tls",
        N_("the server sent a plain HTTP request, not TLS"),
        N_("the client sent a plain HTTP request, not TLS"),
    ),
    "UNSUPPORTED_PROTOCOL": ("protocol-version", _NO_VERSION, _NO_VERSION),
    "TLSV1_ALERT_PROTOCOL_VERSION": (
        "protocol-version",
        N_("the server refused every TLS version offered (1.2, 1.3)"),
        N_("the client refused every TLS version offered (1.2, 1.3)"),
    ),
    "NO_PROTOCOLS_AVAILABLE": ("protocol-version", _NO_VERSION, _NO_VERSION),
    "TLSV1_ALERT_NO_APPLICATION_PROTOCOL": (
        "alpn",
        N_("the server accepts none of the ALPN protocols offered"),
        N_("the client accepts none of the ALPN protocols offered"),
    ),
    "NO_APPLICATION_PROTOCOL": (
        "alpn",
        N_("no ALPN protocol in common with the server"),
        N_("the client offers none of the ALPN protocols this server accepts"),
    ),
    "TLSV1_UNRECOGNIZED_NAME": (
        "sni",
        N_("the server serves no site by the name this client asked for (SNI): check the host name or sni="),
        N_("the client serves no site by the name asked for (SNI)"),
    ),
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": (
        "client-certificate-missing",
        N_("the client sent no certificate, and this server requires one (client-ca=)"),
        N_("the client sent no certificate, and this server requires one (client-ca=)"),
    ),
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": (
        "client-certificate-missing",
        N_("the server requires a client certificate: add cert=FILE (and key=FILE)"),
        N_("the server requires a client certificate: add cert=FILE (and key=FILE)"),
    ),
    "SSLV3_ALERT_BAD_CERTIFICATE": (
        "client-certificate-refused",
        N_("the server refused this client's certificate"),
        N_("the client refused this server's certificate"),
    ),
    "TLSV1_ALERT_UNKNOWN_CA": (
        "client-certificate-refused",
        N_("the server does not trust the CA of this client's certificate"),
        N_("the client does not trust the CA of this server's certificate"),
    ),
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": (
        "client-certificate-refused",
        N_("the server says this client's certificate expired"),
        N_("the client says this server's certificate expired"),
    ),
    "UNEXPECTED_EOF_WHILE_READING": ("closed", *_CLOSED),
    "SSLV3_ALERT_HANDSHAKE_FAILURE": (
        "handshake",
        N_("the server ended the handshake (no cipher or settings in common?)"),
        N_("the client ended the handshake (no cipher or settings in common?)"),
    ),
}
# Where in CPython's _ssl.c an error was made ("(_ssl.c:2580)"): nothing a user can act on.
SOURCE_LINE = re.compile(r" \(_ssl\.c:\d+\)$")
# A client's alert about the server's certificate: the server's own certificate was refused.
_SERVER_REASONS: dict[str, str] = {
    "SSLV3_ALERT_BAD_CERTIFICATE": "untrusted",
    "TLSV1_ALERT_UNKNOWN_CA": "untrusted",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "expired",
}


def explain(
    exc: Exception,
    *,
    server_side: bool = False,
    server_name: str | None = None,
    first_bytes: bytes = b"",
    certificate: bytes | None = None,
    established: bool = False,
    alpn: tuple[str, ...] | None = None,
) -> TLSRefused:
    """Turn what a handshake raised into a :class:`TLSRefused` with one line for the user.

    ``server_side`` says which side is speaking (a server's verdict is on the client's
    certificate and client-ca, a client's on the server's and ca=/pin=); ``server_name`` is what
    the client verified (for a name mismatch); ``first_bytes`` what the peer sent first, when the
    caller peeked at it, shown when the peer does not speak TLS; ``certificate`` the DER
    certificate the server showed, when known (its names or dates complete a refusal of it).
    ``established``: the handshake was done (a record that fails its check, an alert mid-stream).
    ``alpn``: the client's own ALPN offer, when known (an empty one refused is said so).
    """
    if isinstance(exc, TLSRefused):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _verify_failed(exc, server_side, server_name, certificate)
    if isinstance(exc, ssl.SSLError):
        code = exc.reason or _reason_of(str(exc))
        if code == "CERTIFICATE_VERIFY_FAILED":  # the server refusing a client's certificate
            return TLSRefused(_(_CLIENT_CA), "client-certificate-refused")
        if code == "CALLBACK_FAILED" and server_side:
            refused = _tls_verify.hello_refusal()  # what our ClientHello callback said no to
            if refused is not None:
                return refused
        if code == "TLSV1_ALERT_NO_APPLICATION_PROTOCOL" and not server_side and alpn == ():
            line = _("the server requires an ALPN protocol, and this client offers none: add alpn=PROTOCOL")
            return TLSRefused(line, "alpn")
        if code in _REASONS:
            reason, said_by_client, said_by_server = _REASONS[code]
            said = said_by_server if server_side else said_by_client
            line = _(said)
        else:
            error = printable(SOURCE_LINE.sub("", str(exc)))
            if established:
                line = _("TLS failed on the established connection: {error}").format(error=error)
                reason = "protocol"
            else:
                reason, line = "handshake", _("the handshake failed: {error}").format(error=error)
        if server_side:
            reason = _SERVER_REASONS.get(code, reason)
        if reason == "not-tls" and first_bytes:
            line = _("{problem}; it sent '{start}' instead").format(
                problem=line, start=printable(first_bytes[:48].decode("latin-1"))
            )
        return TLSRefused(line, reason)
    if isinstance(exc, ConnectionError | EOFError):
        return TLSRefused(_(_CLOSED[server_side]), "closed")
    raise exc


#: What an SSLError says when Python has no name for OpenSSL's reason ("[SSL] tlsv1 alert no
#: application protocol (_ssl.c:1000)"): the text is the name, in lower case with spaces.
_UNNAMED = re.compile(r"^\[SSL\] ([a-z0-9 ]+?)(?: \(_ssl\.c:\d+\))?$")


def _reason_of(text: str) -> str:
    """The reason's name in ``text`` (``TLSV1_ALERT_NO_APPLICATION_PROTOCOL``), or ``""``: the
    Python of this OpenSSL knows fewer names than OpenSSL 3 says (``exc.reason`` is None)."""
    found = _UNNAMED.match(text)
    return found.group(1).upper().replace(" ", "_") if found else ""


def _verify_failed(
    exc: ssl.SSLCertVerificationError, server_side: bool, server_name: str | None, certificate: bytes | None
) -> TLSRefused:
    """OpenSSL's verdict on the peer's chain: the server's on a client, the client's on a server."""
    refused = _tls_verify.refusal(exc.verify_code) if server_side else None
    if refused is not None:  # allow-san/allow-cn, asked inside the handshake
        return refused
    known = (_CLIENT_VERIFY_CODES if server_side else _VERIFY_CODES).get(exc.verify_code)
    if known is None:
        reason = "client-certificate-refused" if server_side else "untrusted"
        template = (
            _("the client's certificate was refused: {error}")
            if server_side
            else _("the server's certificate was refused: {error}")
        )
        line = template.format(error=printable(str(exc.verify_message)))
    else:
        reason, template, untrusted = known
        line = _(template).format(name=printable(server_name or "?"))
        if untrusted:
            line = _("{problem}: {hint}").format(problem=line, hint=_(_UNTRUSTED))
    if certificate is not None:
        line = _with_what_it_says(line, exc.verify_code, certificate, server_side)
    return TLSRefused(line, reason)


def _with_what_it_says(line: str, code: int, certificate: bytes, server_side: bool) -> str:
    """``line`` completed by what the refused leaf certificate says: the names it is valid for
    (a name mismatch) or its date (expired, not yet valid: when the leaf is the one that is,
    not a CA above it); as it was when that does not parse."""
    try:
        peer = describe_certificate(certificate)
    except ValueError:
        return line
    now = datetime.datetime.now(datetime.UTC)
    if code in (_NAME_MISMATCH, _IP_MISMATCH):
        found = peer.names()
        names = ", ".join(printable(name) for name in found) or _("no host name or address")
        line = _("{problem}: it is for {names}").format(problem=line, names=names)
        named = [name for name in found if "*" not in name and literal_family(name) is None]
        if code == _IP_MISMATCH and named and not server_side:
            # Reached by its address, a server whose certificate has no IP SAN for it is
            # verified by one of its names: that is what sni= is for.
            line = _("{problem}; to verify it by a name, add sni={name}").format(
                problem=line, name=printable(named[0])
            )
        return line
    if code == _EXPIRED and peer.not_after < now:
        template = (
            _("the client's certificate expired on {date}")
            if server_side
            else _("the server's certificate expired on {date}")
        )
        return template.format(date=date_text(peer.not_after))
    if code == _NOT_YET_VALID and peer.not_before > now:
        template = (
            _("the client's certificate is not valid until {date}")
            if server_side
            else _("the server's certificate is not valid until {date}")
        )
        return template.format(date=date_text(peer.not_before))
    return line


#: A peer's stream that ended without its close_notify (``TLSTruncated``).
TRUNCATED = N_("the connection ended without TLS close_notify: what arrived may be truncated")


def alpn_refused(offered: tuple[str, ...]) -> TLSTruncated:
    """What a client says when the server left before a word of data, having agreed on none of
    the ALPN protocols ``offered``: what a server that requires one does (it cannot say why: the
    handshake was done on its side, and Python's ssl sends no alert for it)."""
    return TLSTruncated(
        _(
            "the server closed the connection right after the handshake, without close_notify "
            "and without agreeing on an ALPN protocol (offered: {protocols}): "
            "it probably accepts none of them"
        ).format(protocols=",".join(offered))
    )

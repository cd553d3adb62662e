"""TLS with the standard library's ``ssl``: contexts from :class:`TLSParams`, the checks OpenSSL
does not make (pins, allowed client names, a required ALPN), and one line for every refusal.

OpenSSL does the protocol and the chain and name verification; this module only decides what to
ask of it and says in words what went wrong.  Files are read here (``ca=``, ``cert=``, ``key=``),
so a missing or malformed one is an :class:`AddressError` naming the parameter and the file.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import ssl
import tempfile
from collections.abc import Callable

from . import _tls_seen, _tls_verify
from ._text import printable
from .errors import AddressError, TLSRefused
from .i18n import N_, _
from .tlsinfo import PeerCertificate, TLSInfo, date_text, describe_certificate, spki_digest
from .tlsparams import TLSParams, format_pin

__all__ = [
    "TLSRefused",
    "check_client_certificate",
    "check_server_certificate",
    "client_context",
    "environment",
    "explain",
    "info",
    "self_signed",
    "server_context",
]


def client_context(params: TLSParams) -> ssl.SSLContext:
    """A client context: TLS 1.2 at least, the system store (or ``ca=``) and name checks unless
    ``insecure`` or a pin without a CA decides trust instead (the pin is checked after the
    handshake by :func:`check_server_certificate`)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # A server that renegotiates TLS 1.2 could show another certificate mid-connection, after
    # every check was made (and _tls_seen.quiet leaves the connection without a store for it).
    context.options |= ssl.OP_NO_RENEGOTIATION
    _tls_seen.watch(context)
    if params.insecure or (params.pins and params.ca is None):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif params.ca is not None:
        _load(lambda: context.load_verify_locations(cafile=params.ca), "ca", params.ca)
    else:
        context.load_default_certs()
    if params.cert is not None:
        _load_chain(context, params.cert, params.key)
    if params.alpn:
        context.set_alpn_protocols(list(params.alpn))
    return context


def server_context(params: TLSParams, host: str = "") -> tuple[ssl.SSLContext, str | None]:
    """A server context and, with ``cert=auto``, the pin of the certificate it made for ``host``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    pin = None
    if params.cert_auto:
        pin = _load_self_signed(context, host)
    elif params.cert is not None:
        _load_chain(context, params.cert, params.key)
    if params.client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        _tls_seen.watch(context)
        _load(lambda: context.load_verify_locations(cafile=params.client_ca), "client-ca", params.client_ca)
        if params.allow_san or params.allow_cn:
            _tls_verify.install(context, lambda der: _refusal(describe_certificate(der), params))
    if params.alpn:
        context.set_alpn_protocols(list(params.alpn))
    return context, pin


def info(sock: ssl.SSLSocket | ssl.SSLObject) -> TLSInfo:
    """What the finished handshake of ``sock`` agreed on, with the peer's certificate read."""
    der = sock.getpeercert(binary_form=True)
    cipher = sock.cipher()
    return TLSInfo(
        version=sock.version() or "",
        cipher=cipher[0] if cipher else "",
        alpn=sock.selected_alpn_protocol(),
        resumed=bool(sock.session_reused),
        server_name=None if sock.server_side else sock.server_hostname,
        peer=describe_certificate(der) if der else None,
    )


def environment(tls: TLSInfo) -> dict[str, str]:
    """The ``ENCHUFE_TLS_*`` variables an ``exec:`` child of a TLS listener gets: the version,
    cipher and ALPN (empty when none), and with a client certificate its CN, its SANs
    (``TYPE:VALUE,…``) and its pin.  Names the peer chose are escaped (no control character,
    no NUL, which an environment cannot hold)."""
    env = {
        "ENCHUFE_TLS_VERSION": tls.version,
        "ENCHUFE_TLS_CIPHER": tls.cipher,
        "ENCHUFE_TLS_ALPN": printable(tls.alpn or ""),
    }
    if tls.peer is not None:
        env["ENCHUFE_TLS_PEER_CN"] = printable(tls.peer.common_name or "")
        env["ENCHUFE_TLS_PEER_SAN"] = printable(tls.peer.san_text())
        env["ENCHUFE_TLS_PEER_PIN"] = tls.peer.pin
    return env


def check_server_certificate(sock: ssl.SSLSocket | ssl.SSLObject, params: TLSParams) -> None:
    """The client's checks after the handshake: the pin, when one is given."""
    if not params.pins:
        return
    der = sock.getpeercert(binary_form=True)
    if not der:
        raise TLSRefused(_("the server sent no certificate to check the pin against"), "pin-mismatch")
    digest = spki_digest(der)
    if digest not in params.pins:
        # TRANSLATORS: between the pins a client accepts ("sha256:… or sha256:…").
        expected = _(" or ").join(format_pin(pin) for pin in params.pins)
        raise TLSRefused(
            _("the server's key does not match the pin: it has {pin}, expected {expected}").format(
                pin=format_pin(digest), expected=expected
            ),
            "pin-mismatch",
        )


def check_client_certificate(
    sock: ssl.SSLSocket | ssl.SSLObject, params: TLSParams
) -> PeerCertificate | None:
    """The server's checks after the handshake: ``allow-san``/``allow-cn`` among the names of a
    client certificate OpenSSL has already verified against ``client-ca``, and a common ALPN
    protocol when the server names some."""
    if params.alpn and sock.selected_alpn_protocol() is None:
        raise TLSRefused(
            _("no common ALPN protocol: this server accepts {protocols}").format(
                protocols=", ".join(params.alpn)
            ),
            "alpn",
        )
    der = sock.getpeercert(binary_form=True)
    peer = describe_certificate(der) if der else None
    if not (params.allow_san or params.allow_cn):
        return peer
    if peer is None:  # OpenSSL asks for one with client-ca; this is a belt to its braces
        raise TLSRefused(_("the client sent no certificate"), "client-certificate-missing")
    refused = _refusal(peer, params)
    if refused is not None:
        raise refused
    return peer


def _refusal(peer: PeerCertificate, params: TLSParams) -> TLSRefused | None:
    """Why ``peer`` is not allowed by ``allow-san``/``allow-cn``; None when it is."""
    if _allowed(peer, params):
        return None
    allowed = [f"{kind}:{value}" for kind, value in params.allow_san] + [f"CN={cn}" for cn in params.allow_cn]
    return TLSRefused(
        _("client certificate {subject} (SANs: {sans}) is not among the allowed: {allowed}").format(
            subject=repr(printable(peer.subject)),
            # TRANSLATORS: a certificate with no subject alternative names ("SANs: none").
            sans=printable(peer.san_text()) or _("none"),
            allowed=", ".join(allowed),
        ),
        "not-allowed",
    )


def _allowed(peer: PeerCertificate, params: TLSParams) -> bool:
    if peer.common_name is not None and peer.common_name in params.allow_cn:
        return True
    for kind, value in peer.sans:
        for allowed_kind, allowed in params.allow_san:
            if kind == allowed_kind and _same_name(kind, value, allowed):
                return True
    return False


def _same_name(kind: str, value: str, allowed: str) -> bool:
    if kind == "IP":
        try:
            return ipaddress.ip_address(value) == ipaddress.ip_address(allowed)
        except ValueError:
            return False
    if kind in ("DNS", "EMAIL"):
        return value.lower().rstrip(".") == allowed.lower().rstrip(".")
    return value == allowed


# --- one line per refusal

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
_SOURCE_LINE = re.compile(r" \(_ssl\.c:\d+\)$")
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
) -> TLSRefused:
    """Turn what a handshake raised into a :class:`TLSRefused` with one line for the user.

    ``server_side`` says which side is speaking (a server's verdict is on the client's
    certificate and client-ca, a client's on the server's and ca=/pin=); ``server_name`` is what
    the client verified (for a name mismatch); ``first_bytes`` what the peer sent first, when the
    caller peeked at it, shown when the peer does not speak TLS; ``certificate`` the DER
    certificate the server showed, when known (its names or dates complete a refusal of it).
    ``established``: the handshake was done (a record that fails its check, an alert mid-stream).
    """
    if isinstance(exc, TLSRefused):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _verify_failed(exc, server_side, server_name, certificate)
    if isinstance(exc, ssl.SSLError):
        code = exc.reason or ""
        if code == "CERTIFICATE_VERIFY_FAILED":  # the server refusing a client's certificate
            return TLSRefused(_(_CLIENT_CA), "client-certificate-refused")
        if code in _REASONS:
            reason, said_by_client, said_by_server = _REASONS[code]
            said = said_by_server if server_side else said_by_client
            line = _(said)
        else:
            error = printable(_SOURCE_LINE.sub("", str(exc)))
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
        names = ", ".join(printable(name) for name in peer.names()) or _("no host name or address")
        return _("{problem}: it is for {names}").format(problem=line, names=names)
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


# --- files


def _load(load: Callable[[], None], name: str, path: str) -> None:
    try:
        load()
    except FileNotFoundError:
        raise AddressError(_("{name}={path}: no such file").format(name=name, path=printable(path))) from None
    except PermissionError:
        raise AddressError(
            _("{name}={path}: permission denied").format(name=name, path=printable(path))
        ) from None
    except IsADirectoryError:
        raise AddressError(
            _("{name}={path}: a directory, not a PEM file").format(name=name, path=printable(path))
        ) from None
    except ssl.SSLError as exc:
        template = (
            _("{name}={path}: key does not match the certificate ({detail})")
            if exc.reason == "KEY_VALUES_MISMATCH"
            else _("{name}={path}: not PEM it can use ({detail})")
        )
        raise AddressError(
            template.format(name=name, path=printable(path), detail=exc.reason or exc)
        ) from None


def _load_chain(context: ssl.SSLContext, cert: str, key: str | None) -> None:
    _load(lambda: context.load_cert_chain(cert, key), "cert" if key is None else "cert/key", cert)


def self_signed(host: str) -> tuple[bytes, bytes]:
    """A fresh ECDSA P-256 key and a self-signed certificate for ``host`` (a name, an IP, or
    empty for "localhost"), valid from an hour ago for 30 days: PEM certificate and PEM key."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    names.append(x509.IPAddress(ipaddress.ip_address("::1")))
    label = host or "localhost"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host and host != "localhost":
            names.insert(0, x509.DNSName(host))
    else:
        if not address.is_loopback:
            names.insert(0, x509.IPAddress(address))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label[:64])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), pem_key


def _load_self_signed(context: ssl.SSLContext, host: str) -> str:
    """Load a :func:`self_signed` certificate into ``context``; return its pin.

    ``load_cert_chain`` reads files only, so the PEM goes through a file created with mode 0600
    in a private directory (mode 0700) and removed at once."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_pem, key_pem = self_signed(host)
    with tempfile.TemporaryDirectory(prefix="enchufe-tls-") as folder:
        path = os.path.join(folder, "auto.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(cert_pem + key_pem)
        context.load_cert_chain(path)
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return format_pin(spki_digest(der))

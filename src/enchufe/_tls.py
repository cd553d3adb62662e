"""TLS with the standard library's ``ssl``: contexts from :class:`TLSParams`, and the checks
OpenSSL does not make (pins, allowed client names, a required ALPN).

OpenSSL does the protocol and the chain and name verification; this module only decides what to
ask of it (:mod:`enchufe._tls_refusals` says in words what went wrong).  Files are read here
(``ca=``, ``cert=``, ``key=``), so a missing or malformed one is an :class:`AddressError` naming
the parameter and the file.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Callable

from . import _tls_seen, _tls_suites, _tls_verify
from ._text import printable
from ._tls_refusals import SOURCE_LINE as _SOURCE_LINE
from .errors import AddressError, TLSRefused
from .i18n import _
from .tlsinfo import PeerCertificate, TLSInfo, describe_certificate, spki_digest
from .tlsparams import TLSParams, format_pin

__all__ = [
    "TLSRefused",
    "check_client_certificate",
    "check_server_certificate",
    "client_context",
    "environment",
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
    _tls_suites.prefer_aes128(context)
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
    _tls_suites.prefer_aes128(context)
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
        _tls_verify.require_alpn(context, params.alpn)  # the RFC's alert for none in common
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
            subject="'" + printable(peer.subject) + "'",  # escaped once (repr would double it)
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


# --- files


def _load(load: Callable[[], None], name: str, path: str) -> None:
    try:
        load()
    except OSError as exc:
        raise _file_error(exc, name, path) from None


def _file_error(exc: OSError, name: str, path: str) -> AddressError:
    """What reading ``name=path`` failed on, in one line."""
    shown = printable(path)
    if isinstance(exc, FileNotFoundError):
        return AddressError(_("{name}={path}: no such file").format(name=name, path=shown))
    if isinstance(exc, PermissionError):
        return AddressError(_("{name}={path}: permission denied").format(name=name, path=shown))
    if isinstance(exc, IsADirectoryError):
        return AddressError(_("{name}={path}: a directory, not a PEM file").format(name=name, path=shown))
    if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
        return AddressError(
            _("{name}={path}: key does not match the certificate").format(name=name, path=shown)
        )
    detail = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else _SOURCE_LINE.sub("", str(exc))
    return AddressError(
        _("{name}={path}: not PEM it can use ({detail})").format(
            name=name, path=shown, detail=printable(detail)
        )
    )


def _load_chain(context: ssl.SSLContext, cert: str, key: str | None) -> None:
    """``cert=`` and ``key=`` (or the key inside ``cert``): a failure names the file it is
    about.  A key encrypted with a passphrase is refused, never prompted for: a server has no
    one to ask, and a reload (SIGUSR1) must not wait at a terminal."""

    def passphrase() -> str:
        raise AddressError(
            _(
                "{name}={path}: the private key is encrypted with a passphrase, which enchufe does "
                "not ask for; decrypt it once with: openssl pkey -in {path} -out PLAIN.key"
            ).format(name="key" if key is not None else "cert", path=printable(key or cert))
        )

    try:
        context.load_cert_chain(cert, key, password=passphrase)
    except OSError as exc:
        name, path = _chain_culprit(exc, cert, key)
        if key is None and isinstance(exc, ssl.SSLError) and _lacks_key(cert):
            raise AddressError(
                _("cert={path}: no private key in it; add key=FILE").format(path=printable(cert))
            ) from None
        raise _file_error(exc, name, path) from None


def _chain_culprit(exc: OSError, cert: str, key: str | None) -> tuple[str, str]:
    """Which of ``cert`` and ``key`` a failed load is about: the first that cannot be opened, or
    is not what it should hold; both (``cert/key``) when each looks right."""
    if key is None:
        return "cert", cert
    if not isinstance(exc, ssl.SSLError):
        for name, path in (("cert", cert), ("key", key)):
            try:
                with open(path, "rb"):
                    pass
            except OSError:
                return name, path
        return "cert/key", cert
    if exc.reason == "KEY_VALUES_MISMATCH":
        return "cert/key", cert
    if not _has(cert, b"-----BEGIN CERTIFICATE-----"):
        return "cert", cert
    if not _has(key, b"PRIVATE KEY-----"):
        return "key", key
    return "cert/key", cert


def _lacks_key(cert: str) -> bool:
    """A PEM certificate file without a private key in it (``key=`` was left out)."""
    return _has(cert, b"-----BEGIN CERTIFICATE-----") and not _has(cert, b"PRIVATE KEY-----")


def _has(path: str, marker: bytes) -> bool:
    """Whether the first MiB of ``path`` holds ``marker`` (False if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return marker in f.read(1 << 20)
    except OSError:
        return False


def self_signed(host: str) -> tuple[bytes, bytes]:
    """A fresh ECDSA P-256 key and a self-signed certificate for ``host`` (a name, an IP, or
    empty for "localhost"), valid from an hour ago for 30 days: PEM certificate and PEM key."""

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

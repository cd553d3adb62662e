"""What a TLS connection negotiated, and who the peer's certificate says it is.

:class:`TLSInfo` is what ``Connection.tls`` gives; :class:`PeerCertificate` describes a DER
certificate (subject, SANs, issuer, validity, pin).  The DER is parsed with ``cryptography``,
imported only when a certificate is described, so that ``enchufe --help`` and plain sockets
never load it.  A pin is ``sha256:`` and the hex SHA-256 of the DER SubjectPublicKeyInfo, what
``openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum`` prints.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
from dataclasses import dataclass

from .i18n import _
from .tlsparams import format_pin

__all__ = ["PeerCertificate", "TLSInfo", "date_text", "describe_certificate", "spki_digest"]


@dataclass(frozen=True)
class PeerCertificate:
    """A certificate, as a person checking it would read it.

    ``sans`` are ``(TYPE, VALUE)`` pairs with TYPE one of ``DNS``, ``IP``, ``URI``, ``EMAIL``;
    ``not_before``/``not_after`` are aware UTC datetimes; ``pin`` is ``sha256:HEX``.
    """

    subject: str
    common_name: str | None
    sans: tuple[tuple[str, str], ...]
    issuer: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    pin: str
    self_signed: bool

    def names(self) -> list[str]:
        """The names a client can verify: the DNS and IP SANs, or the CN when there are none."""
        names = [value for kind, value in self.sans if kind in ("DNS", "IP")]
        if not names and self.common_name:
            names.append(self.common_name)
        return names

    def validity(self) -> str:
        return _("{start} to {end}").format(start=date_text(self.not_before), end=date_text(self.not_after))

    def san_text(self) -> str:
        """``DNS:a.example,IP:192.0.2.1``: the form of ``allow-san=`` and ``ENCHUFE_TLS_PEER_SAN``."""
        return ",".join(f"{kind}:{value}" for kind, value in self.sans)


@dataclass(frozen=True)
class TLSInfo:
    """What a finished handshake agreed on.

    ``peer`` is ``None`` when the peer sent no certificate (a client without one, on a server
    that did not ask).  ``resumed`` says whether an earlier session was resumed.
    """

    version: str
    cipher: str
    alpn: str | None
    resumed: bool
    server_name: str | None
    peer: PeerCertificate | None


#: How many certificates (by their whole DER) :func:`describe_certificate` and
#: :func:`spki_digest` remember.  Reading one costs about 140 µs (cryptography's parse, the
#: names, the pin), and the same few come back on every connection: the server a client
#: reconnects to, the clients of a mutual-TLS server (whose certificate is read by the check in
#: the handshake, by the check after it and for ``Connection.tls``).  What is remembered is
#: immutable; a certificate never seen before is read as before.
CERTIFICATES_KEPT = 256


def spki_digest(der: bytes) -> bytes:
    """The SHA-256 of the certificate's DER SubjectPublicKeyInfo: what ``pin=`` compares."""
    return _spki_digest(bytes(der))


@functools.lru_cache(maxsize=CERTIFICATES_KEPT)
def _spki_digest(der: bytes) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_der_x509_certificate(der)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def describe_certificate(der: bytes) -> PeerCertificate:
    """Read a DER certificate.  Raises ``ValueError`` if it does not parse."""
    return _describe(bytes(der))


@functools.lru_cache(maxsize=CERTIFICATES_KEPT)
def _describe(der: bytes) -> PeerCertificate:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_der_x509_certificate(der)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = cns[0].value if cns else None
    return PeerCertificate(
        subject=cert.subject.rfc4514_string(),
        common_name=cn if isinstance(cn, str) else None,
        sans=_sans(cert),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        pin=format_pin(spki_digest(der)),
        self_signed=cert.issuer == cert.subject,
    )


def _sans(cert: object) -> tuple[tuple[str, str], ...]:
    from cryptography import x509

    assert isinstance(cert, x509.Certificate)
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    sans: list[tuple[str, str]] = []
    for name in extension.value:
        if isinstance(name, x509.DNSName):
            sans.append(("DNS", name.value))
        elif isinstance(name, x509.IPAddress):
            sans.append(("IP", str(name.value)))
        elif isinstance(name, x509.UniformResourceIdentifier):
            sans.append(("URI", name.value))
        elif isinstance(name, x509.RFC822Name):
            sans.append(("EMAIL", name.value))
    return tuple(sans)


def date_text(moment: datetime.datetime) -> str:
    """``2020-01-01 00:00:00 UTC``: how a certificate's dates are shown."""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")

"""The words of TLS narration (``--trace``), with no I/O: what a handshake offers, what it
agreed on, and how the peer was trusted.  :mod:`enchufe.tlschannel` emits them.

They are narration, in the user's language (``ClientHello``, option names such as ``client-ca``,
versions and ciphers stay as they are)."""

from __future__ import annotations

import ipaddress

from .i18n import _
from .tlsinfo import TLSInfo
from .tlsparams import TLSParams

VERSIONS = "TLS 1.2-1.3"


def offer(params: TLSParams, server_side: bool, server_name: str | None) -> str:
    """The first line of a handshake: what this side offers (client) or accepts (server)."""
    alpn = ",".join(params.alpn) or _("none")
    if server_side:
        clients = (
            _("client certificates from client-ca={path}").format(path=params.client_ca)
            if params.client_ca
            else _("no client certificate")
        )
        return _("handshake as server: {versions}, ALPN accepted {alpn}, {clients}").format(
            versions=VERSIONS, alpn=alpn, clients=clients
        )
    return _("handshake as client: ClientHello {versions}, {sni}, ALPN offered {alpn}").format(
        versions=VERSIONS, sni=_sni(server_name), alpn=alpn
    )


def _sni(server_name: str | None) -> str:
    """What the ClientHello says of the server's name: an IP address is never sent as SNI
    (RFC 6066), though the certificate is still checked for it."""
    if not server_name:
        return _("no SNI")
    try:
        ipaddress.ip_address(server_name)
    except ValueError:
        return f"SNI {server_name}"
    return _("no SNI ({name} is an IP address: none is sent for one)").format(name=server_name)


def agreed(info: TLSInfo, params: TLSParams, server_side: bool) -> list[str]:
    """The lines of a finished handshake: the peer's certificate, how it was trusted, what was
    agreed."""
    lines = []
    peer = info.peer
    if peer is not None:
        lines.append(
            _(
                "peer certificate: subject {subject}, SANs {sans}, issuer {issuer}, "
                "valid {validity}, pin {pin}"
            ).format(
                subject=peer.subject or _("(empty)"),
                sans=peer.san_text() or _("none"),
                issuer=peer.issuer,
                validity=peer.validity(),
                pin=peer.pin,
            )
        )
    elif server_side:
        lines.append(_("peer certificate: none (the client sent none)"))
    lines.append(_("verification: {trust}").format(trust=_trust(info, params, server_side)))
    resumed = _("session resumed") if info.resumed else _("new session")
    lines.append(
        _("agreed: {version}, {cipher}, ALPN {alpn}, {session}").format(
            version=info.version, cipher=info.cipher, alpn=info.alpn or _("none"), session=resumed
        )
    )
    return lines


def _trust(info: TLSInfo, params: TLSParams, server_side: bool) -> str:
    if server_side:
        if params.client_ca is None:
            return _("none asked (no client-ca)")
        if params.allow_san or params.allow_cn:
            return _(
                "client certificate chain verified against client-ca={path} and allowed by allow-san/allow-cn"
            ).format(path=params.client_ca)
        return _("client certificate chain verified against client-ca={path}").format(path=params.client_ca)
    if params.insecure:
        return _("OFF (insecure): the server was not checked")
    if params.pins and params.ca is None:
        return _("the server's key matches the pin (no CA checked)")
    store = f"ca={params.ca}" if params.ca is not None else _("the system store")
    clauses = [_("chain verified against {store}").format(store=store)]
    clauses.append(
        _("name {name}").format(name=info.server_name) if info.server_name else _("no name checked")
    )
    if params.pins:
        clauses.append(_("and the pin matches"))
    return ", ".join(clauses)

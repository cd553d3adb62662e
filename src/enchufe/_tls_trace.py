"""The words of TLS narration (``--trace``), with no I/O: what a handshake offers, what it
agreed on, and how the peer was trusted.  :mod:`enchufe.tlschannel` emits them."""

from __future__ import annotations

import ipaddress

from .tlsinfo import TLSInfo
from .tlsparams import TLSParams

VERSIONS = "TLS 1.2-1.3"


def offer(params: TLSParams, server_side: bool, server_name: str | None) -> str:
    """The first line of a handshake: what this side offers (client) or accepts (server)."""
    alpn = ",".join(params.alpn) or "none"
    if server_side:
        clients = (
            f"client certificates from client-ca={params.client_ca}"
            if params.client_ca
            else "no client certificate"
        )
        return f"handshake as server: {VERSIONS}, ALPN accepted {alpn}, {clients}"
    return f"handshake as client: ClientHello {VERSIONS}, {_sni(server_name)}, ALPN offered {alpn}"


def _sni(server_name: str | None) -> str:
    """What the ClientHello says of the server's name: an IP address is never sent as SNI
    (RFC 6066), though the certificate is still checked for it."""
    if not server_name:
        return "no SNI"
    try:
        ipaddress.ip_address(server_name)
    except ValueError:
        return f"SNI {server_name}"
    return f"no SNI ({server_name} is an IP address: none is sent for one)"


def agreed(info: TLSInfo, params: TLSParams, server_side: bool) -> list[str]:
    """The lines of a finished handshake: the peer's certificate, how it was trusted, what was
    agreed."""
    lines = []
    peer = info.peer
    if peer is not None:
        lines.append(
            f"peer certificate: subject {peer.subject or '(empty)'}, SANs {peer.san_text() or 'none'}, "
            f"issuer {peer.issuer}, valid {peer.validity()}, pin {peer.pin}"
        )
    elif server_side:
        lines.append("peer certificate: none (the client sent none)")
    lines.append(f"verification: {_trust(info, params, server_side)}")
    resumed = "session resumed" if info.resumed else "new session"
    lines.append(f"agreed: {info.version}, {info.cipher}, ALPN {info.alpn or 'none'}, {resumed}")
    return lines


def _trust(info: TLSInfo, params: TLSParams, server_side: bool) -> str:
    if server_side:
        if params.client_ca is None:
            return "none asked (no client-ca)"
        allowed = " and allowed by allow-san/allow-cn" if params.allow_san or params.allow_cn else ""
        return f"client certificate chain verified against client-ca={params.client_ca}{allowed}"
    if params.insecure:
        return "OFF (insecure): the server was not checked"
    if params.pins and params.ca is None:
        return "the server's key matches the pin (no CA checked)"
    store = f"ca={params.ca}" if params.ca is not None else "the system store"
    name = f", name {info.server_name}" if info.server_name else ", no name checked"
    pinned = ", and the pin matches" if params.pins else ""
    return f"chain verified against {store}{name}{pinned}"

"""What the commands share about TLS: the help table of the address parameters, the warning of
``insecure``, a client connection made over an opened socket, and the lines a TLS server says
(its pin, each client's handshake with ``-v``, SIGUSR1's reload).

The help text is plain strings: importing this module costs nothing but click's, so that
``--help`` and ``--man`` stay fast; the TLS layer itself is imported where it is used.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from ..i18n import _
from ._common import event

if TYPE_CHECKING:
    from .._streams import TLSReload
    from .._tlsstream import TLSSetup
    from ..address import Address
    from ..sync import Connection, Listener

#: The TLS address forms and parameters, one row each, as --help and the man page show them.
#: tests/cli/test_cli_tls.py checks that every parameter of enchufe.tlsparams.PARAMETERS is here.
PARAMETER_ROWS = (
    ("ca=FILE", "client", "trust these CAs (PEM) instead of the system store"),
    (
        "sni=NAME",
        "client",
        "the name sent and verified (default: HOST; give it for an IP HOST the certificate does not list)",
    ),
    (
        "pin=sha256:HEX,…",
        "client",
        "accept exactly the key with this SHA-256, or one of these (no CA needed)",
    ),
    ("insecure", "client", "no verification at all (warned about at every connection)"),
    ("cert=FILE, key=FILE", "both", "certificate chain and key (key may be inside cert)"),
    ("cert=auto", "server", "an ephemeral self-signed certificate; its pin is printed"),
    ("client-ca=FILE", "server", "require a client certificate signed by these CAs"),
    ("allow-san=T:V,…", "server", "with client-ca: require one of these SANs (DNS, URI, IP, EMAIL)"),
    ("allow-cn=NAME,…", "server", "with client-ca: require one of these subject CNs"),
    ("alpn=P1,P2", "both", "protocols offered or accepted, in order of preference"),
    ("handshake-timeout=S", "both", "give up a handshake after S seconds (default 10)"),
)


def help_text() -> str:
    """The TLS section of a command's --help epilog (click keeps it as written after ``\\b``)."""
    width = max(len(name) for name, _side, _meaning in PARAMETER_ROWS)
    rows = "\n".join(f"  {name:<{width}}  {side:<6}  {meaning}" for name, side, meaning in PARAMETER_ROWS)
    return (
        "\b\n"
        "TLS: tls://HOST:PORT, tls4://, tls6://[HOST]:PORT, tls+unix:///path, tls+unix:@name,\n"
        "with settings as query parameters (quote the address): 'tls://HOST:PORT?ca=ca.pem&alpn=h2'\n"
        "(odd characters percent-encoded: %26 for &, %25 for %, %2C for a comma inside a list item)\n"
        f"{rows}\n"
        "A listener with cert=auto prints 'pin sha256:HEX' on its listening line: a client gives it\n"
        "as pin=sha256:HEX and needs no file.  A refused handshake, a peer that is not TLS or a\n"
        "connection cut without close_notify ('truncated') exit 1 with one line saying why; an\n"
        "unknown or misplaced parameter, a missing or bad file, a key that does not match exit 2.\n"
    )


def warn_insecure(target: Address) -> None:
    """``insecure`` is said at every connection: the data may be read and changed on the way."""
    from .._text import printable

    shown = printable(str(target))
    event(
        "warning",
        _(
            "enchufe: warning: {address}: insecure: the server is not verified; anyone on the path "
            "can read and change the data (use ca= or pin= instead)"
        ).format(address=shown),
        address=shown,
        insecure=True,
    )


def open_tls(
    sock: socket.socket, setup: TLSSetup | None, target: Address, timeout: float | None = None
) -> Connection:
    """The connection over ``sock``: plain when ``setup`` is ``None``, else TLS with its
    handshake done, within ``timeout`` when that is shorter than ``handshake-timeout``
    (TLSRefused or TimedOut if not; the socket is closed then)."""
    from ..sync.stream import connection_over

    if setup is not None and setup.params.insecure:
        warn_insecure(target)
    return connection_over(sock, setup, timeout)


def listening(address: object, pin: str | None) -> None:
    """The listening line of a server: its address, and the pin of a ``cert=auto`` certificate."""
    shown = str(address)
    if pin is None:
        event("listening", _("listening on {address}").format(address=shown), address=shown)
        return
    event(
        "listening",
        _("listening on {address} pin {pin}").format(address=shown, pin=pin),
        address=shown,
        pin=pin,
    )


def tls_peer(conn: Any) -> Any:
    """A TLS connection's peer as the connection is: ``tls://`` (no parameters), where the
    socket's address says ``tcp://`` or ``unix:``."""
    peer = conn.peer_address
    if peer is None or peer.tls is not None:
        return peer
    import dataclasses

    from ..tlsparams import TLSParams

    return dataclasses.replace(peer, tls=TLSParams())


def handshake_done(conn: Any, peer: str, *, server: bool = False) -> None:
    """``-v``: what a handshake agreed (version, cipher, ALPN, the peer's certificate: a
    client's, on a server; the server's, on a client, with ``server``)."""
    from .._text import printable

    tls = conn.tls
    if tls is None:
        return
    fields: dict[str, Any] = {"peer": peer, "version": tls.version, "cipher": tls.cipher}
    text = _("TLS with {peer}: {version} {cipher}").format(peer=peer, version=tls.version, cipher=tls.cipher)
    if tls.alpn:
        fields["alpn"] = tls.alpn
        text += f", ALPN {printable(tls.alpn)}"
    if tls.peer is not None:
        subject = printable(tls.peer.subject)
        fields["subject"] = subject
        if server:
            text += ", " + _("server certificate {subject}").format(subject=subject)
        else:
            text += ", " + _("client certificate {subject}").format(subject=subject)
    event("tls", text, level=1, **fields)


def reload_on_sigusr1(listener: Listener) -> None:
    """SIGUSR1 reads the listener's certificate, key and CA files again for the clients that come
    next, and says so, or why not (the old ones stay)."""
    import signal

    def handler(signum: int, frame: object) -> None:
        reported(listener.reload_tls_files())

    signal.signal(signal.SIGUSR1, handler)


def reported(result: TLSReload) -> None:
    """Say what one reload of a listener's TLS files did (see :func:`reload_on_sigusr1`)."""
    if result.outcome == "not-tls":
        event("reload", _("SIGUSR1: nothing to reload (not a TLS listener)"), reloaded=False)
    elif result.outcome == "cert-auto":
        event(
            "reload", _("SIGUSR1: cert=auto keeps its certificate (nothing on disk to read)"), reloaded=False
        )
    elif result.outcome == "failed":
        event(
            "reload",
            _("SIGUSR1: TLS files not reloaded, the old ones stay: {error}").format(error=result.error),
            reloaded=False,
            error=str(result.error),
        )
    else:
        event(
            "reload",
            _("SIGUSR1: TLS certificate, key and CA files reloaded for the next clients"),
            reloaded=True,
        )

"""The PROXY protocol in the relay: the header a client's proxy sends (``--accept-proxy``) and
the header the relay sends its target (``--send-proxy v1|v2``).

::

    client ─▶ HAProxy ─PROXY header─▶ relay --accept-proxy ─PROXY header─▶ target (--send-proxy)

Accepting: a peer that is not a trusted proxy is refused at accept (:func:`untrusted_client`).
The others' header is the first stage of their session (:class:`ProxyRead`, before the
ClientHello of ``--route`` and before a TLS handshake): it is peeked at and only the header's
bytes are taken, so the payload stays in the kernel for the pumps (splice) or the handshake.  A
missing, malformed, oversized or late header closes that client with one rate-limited line, and
is counted as refused; the relay serves on.  Otherwise :func:`take_header` makes the client the
header names the session's peer (:class:`Proxied`): the ``--allow``/``--deny`` rules judge it
(not the proxy), and it is what log lines, ``--json`` events and ``exec:`` children see.

Sending: :func:`header_for` is written to the target before any byte of the client (and before
a TLS handshake with it): the real client, which behind a proxy of our own is the one its header
named (a chain keeps the original client), and the address it connected to.  Version 2 carries
what the relay knows of the client's TLS when it terminated it (the SSL TLV with the version,
cipher and certificate CN; ALPN; the server name as authority), or else the TLVs of the header
it accepted.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._proxyaccept import HeaderRead, step
from .._proxypolicy import ProxyPolicy
from .._proxytypes import PP2_CLIENT_CERT_CONN, PP2_CLIENT_SSL
from .._spawn import child_environment
from .._text import printable
from ..address import InetAddress, SocketAddress, from_sockaddr, inet_address
from ..i18n import N_, _
from ..proxyproto import NeedMore, ProxyHeader, ProxySSL, Refused, Result, encode_v1, encode_v2
from .readstage import ReadStage

if TYPE_CHECKING:
    from ..tlsinfo import TLSInfo
    from .config import RelayConfig
    from .engine import Loop, OnError
    from .events import EventSink
    from .limits import AccessRules
    from .session import RelaySession

__all__ = [
    "SEND_PROXY_VERSIONS",
    "Proxied",
    "ProxyRead",
    "Refusal",
    "header_for",
    "header_now",
    "proxied_environment",
    "refused_notice",
    "relay_policy",
    "take_header",
    "untrusted_client",
]

#: ``--send-proxy`` values and the protocol versions they mean.
SEND_PROXY_VERSIONS = {"v1": 1, "v2": 2}


@dataclass(frozen=True)
class Proxied:
    """A client whose proxy sent a header: ``peer`` is the client it names (``None``: a LOCAL
    or UNKNOWN header, the proxy speaking for itself), ``proxy`` the connection's own peer."""

    header: ProxyHeader
    peer: SocketAddress | None
    proxy: SocketAddress | None

    @property
    def label(self) -> str:
        """The client as events show it (escaped: the proxy chose it)."""
        shown = self.peer if self.peer is not None else self.proxy
        return printable(str(shown)) if shown is not None else "unix:(unnamed)"

    @property
    def proxy_label(self) -> str:
        return printable(str(self.proxy)) if self.proxy is not None else "unix:(unnamed)"


def relay_policy(config: RelayConfig) -> ProxyPolicy | None:
    """Whom a relay takes PROXY headers from (``None``: no ``--accept-proxy``)."""
    if not config.accept_proxy:
        return None
    return ProxyPolicy.make(config.trusted_proxies, config.proxy_timeout)


def client_address(sock: socket.socket, peer: Any) -> SocketAddress | None:
    """An accepted client's address (``None``: an unnamed unix peer)."""
    if isinstance(peer, tuple):  # the family from the peer's shape: sock.family is an enum lookup
        if len(peer) == 2:
            return inet_address("tcp", peer[0], peer[1])
        return from_sockaddr(socket.AF_INET6, socket.SOCK_STREAM, peer)
    return from_sockaddr(sock.family, socket.SOCK_STREAM, peer) if peer else None


def proxied_environment(
    proxied: Proxied, sock: socket.socket | None, fallback_local: SocketAddress | None
) -> dict[str, str]:
    """An ``exec:`` child's environment for a client behind a proxy: ``ENCHUFE_PEER*`` name the
    client the header named (the proxy's own credentials are not the client's: left out)."""
    local = None
    if sock is not None:
        with contextlib.suppress(OSError):
            local = from_sockaddr(sock.family, socket.SOCK_STREAM, sock.getsockname())
    return child_environment(proxied.peer or proxied.proxy, local or fallback_local)


def untrusted_client(policy: ProxyPolicy, sock: socket.socket, peer: Any) -> str | None:
    """Why a client just accepted may not send a PROXY header (``None``: it may)."""
    # An IP peer is a tuple (host, port, ...); a unix one a name, maybe empty (not sock.family:
    # an enum conversion on every connection).  Unix peers are trusted: the socket file's
    # permissions say who connects.
    if isinstance(peer, tuple):
        host = peer[0]
        return None if host in policy.trusted_seen else policy.untrusted_host(host)
    return None


def header_now(sock: socket.socket, read: HeaderRead) -> bool:
    """Read what is there of a client's header (see :mod:`enchufe._proxyaccept`); whether the
    read is over (``read.result`` a header or a refusal).  Most often the whole header came
    with the connection: its session needs no :class:`ProxyRead` then."""
    try:
        step(sock, read)
    except BlockingIOError:
        return False
    return not isinstance(read.result, NeedMore)


class ProxyRead(ReadStage):
    """Reads the rest of a client's PROXY header off ``sock`` (``read``: what came of it so far;
    non-blocking, on the relay's loop, within the policy's timeout) from :meth:`watch` on, then
    calls ``done(result)`` once: a :class:`~enchufe.proxyproto.ProxyHeader` or a
    :class:`~enchufe.proxyproto.Refused` (the peer closed, sent something else or too much,
    failed, or was too slow).  Only the header's bytes are taken off the socket (see
    :mod:`enchufe._proxyaccept`)."""

    __slots__ = ("_read", "_sock")

    def __init__(
        self,
        loop: Loop,
        sock: socket.socket,
        policy: ProxyPolicy,
        read: HeaderRead,
        done: Callable[[Result], None],
        on_error: OnError,
    ) -> None:
        super().__init__(loop, sock.fileno(), policy.timeout, done, on_error)
        self._sock = sock
        self._read = read

    def _on_read(self, _events: int) -> None:
        read = self._read
        try:
            step(self._sock, read)
        except BlockingIOError:
            return
        if not isinstance(read.result, NeedMore):
            self._finish(read.result)

    def _timed_out(self) -> None:
        self._finish(self._read.timed_out())


#: A client refused over its header: how it is shown, the reason (``proxy``, ``denied``) and why.
Refusal = tuple[str, str, str]


def take_header(result: Result, sock: socket.socket, peer: Any, rules: AccessRules) -> Proxied | Refusal:
    """A client's header read ended in ``result``: the client it names (a :class:`Proxied`),
    or why it is refused (no valid header; the access rules, judging the client the header
    names, or the proxy itself for a LOCAL header, keep it out)."""
    if isinstance(peer, tuple) and len(peer) == 2:  # IPv4, the most common: client_address inlined
        proxy: SocketAddress | None = object.__new__(InetAddress)
        proxy.__dict__.update(transport="tcp", host=peer[0], port=peer[1], forced_family=None, tls=None)
    else:
        proxy = client_address(sock, peer)
    if not isinstance(result, ProxyHeader):
        reason = result.reason if isinstance(result, Refused) else _("no PROXY header")
        return (printable(str(proxy)) if proxy else "unix:(unnamed)", "proxy", reason)
    source = result.source
    if isinstance(source, InetAddress) and source.transport != "tcp":
        source = InetAddress("tcp", source.host, source.port)  # a stream client, whatever it says
    proxied = object.__new__(Proxied)  # Proxied(…), fast (see enchufe._fastinit)
    proxied.__dict__.update(header=result, peer=source, proxy=proxy)
    judged = source if source is not None else proxy
    # rules.filters_ip, read directly: a call the fewer for every client behind a proxy
    if (rules.allow or rules.deny) and (source is not None or isinstance(proxy, InetAddress)):
        denied = rules.check_ip(judged.host if isinstance(judged, InetAddress) else str(judged))
        if denied is not None:
            return (proxied.label, "denied", denied)
    return proxied


def refused_notice(events: EventSink, session_id: int, refusal: Refusal) -> None:
    """The one line (rate-limited: any peer can cause it) of a client refused over its header."""
    shown, reason, why = refusal
    kind = N_("denied clients") if reason == "denied" else N_("clients refused over their PROXY header")
    events.notice(
        kind,
        "refused",
        _("enchufe: refused {peer} #{id}: {why}").format(peer=shown, id=session_id, why=why),
        id=session_id,
        peer=shown,
        reason=reason,
        detail=why,
    )


def header_for(session: RelaySession, version: int, tls: TLSInfo | None, server_name: str | None) -> bytes:
    """The header ``--send-proxy`` writes to the target first: the client (the one a header we
    accepted named: a chain keeps the original client) and the address it connected to.  For
    version 2, ``tls`` is what the relay agreed with the client when it terminated TLS, and
    ``server_name`` the one its ClientHello asked for; else the TLVs of the header accepted go on."""
    proxied = session.proxied
    sock = session.client_sock
    source: SocketAddress | None = None
    destination: SocketAddress | None = None
    if proxied is not None and proxied.peer is not None:
        source, destination = proxied.peer, proxied.header.destination
    elif sock is not None:
        source = client_address(sock, session.peer)
        try:
            destination = from_sockaddr(sock.family, socket.SOCK_STREAM, sock.getsockname())
        except OSError:
            destination = None
    if version == 1:
        return encode_v1(source, destination)
    values: dict[str, Any] = {}
    if proxied is not None:  # passed on as they came: what the first proxy knew of the client
        header = proxied.header
        values = {"alpn": header.alpn, "authority": header.authority, "unique_id": header.unique_id}
        values["ssl"] = header.ssl
    if server_name:
        values["authority"] = server_name
    if tls is not None:
        values.update(_tls_tlvs(tls))
    return encode_v2(source, destination, **values)


def _tls_tlvs(tls: TLSInfo) -> dict[str, Any]:
    """The v2 TLVs of a client whose TLS the relay terminated: SSL (version, cipher, and the CN
    of a certificate it verified) and ALPN."""
    cert = tls.peer
    ssl = ProxySSL(
        client=PP2_CLIENT_SSL | (PP2_CLIENT_CERT_CONN if cert is not None else 0),
        verify=0,
        version=tls.version,
        cn=cert.common_name if cert is not None else None,
        cipher=tls.cipher,
    )
    return {"ssl": ssl, "alpn": tls.alpn.encode("utf-8", "surrogateescape") if tls.alpn else None}

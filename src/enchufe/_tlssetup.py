"""What every TLS connection of one address shares, made once: the context, the settings, the
side (:class:`TLSSetup`); and what carries over from one client connection to the next (the
client contexts, by their settings and files; the sessions to resume, by the server reached).

Used by the stream endpoints (:mod:`enchufe._tlsstream`, which re-exports these names for its
importers) and by the relay.  ``ssl`` and :mod:`enchufe._tls` load with the first TLS address,
not with the package: hence the imports inside functions.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .address import InetAddress, SocketAddress, UnixAddress, check_tls_use, tls_server_name
from .tlsparams import TLSParams

if TYPE_CHECKING:
    import ssl

    from ._tls_sessions import Session
    from .tlschannel import TLSChannel

__all__ = [
    "MAX_CLIENT_CONTEXTS",
    "MAX_SESSIONS",
    "TLSSetup",
    "client_context",
    "client_setup",
    "forget_sessions",
    "insecure_line",
    "keep_session",
    "server_setup",
    "session_for",
    "tls_params",
    "with_tls",
]


@dataclass(frozen=True)
class TLSSetup:
    """What every TLS connection of one address shares: the context (made once), the
    settings, the side, and the name the client sends and verifies.  ``pin`` is the pin of a
    ``cert=auto`` listener's certificate."""

    context: ssl.SSLContext
    params: TLSParams
    server_side: bool
    server_hostname: str | None = None
    pin: str | None = None

    def channel(
        self,
        label: str = "tls",
        session: ssl.SSLSession | Session | None = None,
        sock: socket.socket | None = None,
    ) -> TLSChannel:
        """A connection's channel: over memory BIOs, or reading and writing ``sock`` itself.  A
        client with ``insecure`` issues :class:`~enchufe.errors.InsecureTLSWarning`."""
        from .tlschannel import TLSChannel

        if self.params.insecure and not self.server_side:
            import warnings

            from .errors import InsecureTLSWarning

            warnings.warn(InsecureTLSWarning(insecure_line(self.server_hostname)), stacklevel=2)

        return TLSChannel(
            self.context,
            self.params,
            server_side=self.server_side,
            server_hostname=self.server_hostname,
            label=label,
            session=session,
            sock=sock,
        )


def insecure_line(server: str | None) -> str:
    """What is said of a connection made with ``insecure`` (to ``server``, when known)."""
    from .i18n import _

    return _(
        "insecure: {server} is not verified; anyone on the path can read and change the data "
        "(use ca= or pin= instead)"
    ).format(server=server or _("the server"))


#: The session of the last connection each client context closed, by the server it reached
#: (the context, the name it verified, the socket's peer): the next connection there resumes
#: it, with no certificate to send or verify (it was verified under the same context).
#: Cleared when it holds this many.
MAX_SESSIONS = 256
_sessions: dict[tuple[object, ...], ssl.SSLSession | Session] = {}


def _session_key(sock: socket.socket, setup: TLSSetup) -> tuple[object, ...] | None:
    try:
        peer = sock.getpeername()
    except OSError:
        return None
    return (setup.context, setup.server_hostname, sock.family, peer)


def session_for(
    sock: socket.socket, setup: TLSSetup
) -> tuple[tuple[object, ...] | None, ssl.SSLSession | Session | None]:
    """A client connection's key in the session cache (``None`` on a server, or a socket with no
    peer), and the session kept there to resume, if any."""
    key = None if setup.server_side else _session_key(sock, setup)
    return key, _sessions.get(key) if key is not None else None


def keep_session(key: tuple[object, ...] | None, session: ssl.SSLSession | Session | None) -> None:
    """Keep ``session`` for the next connection under ``key`` (see :func:`session_for`): a
    channel's :meth:`~enchufe.tlschannel.TLSChannel.session`, nothing when it has none or when
    the connection has no key (a server's)."""
    if key is None or session is None:
        return
    if len(_sessions) >= MAX_SESSIONS:
        _sessions.clear()
    _sessions[key] = session


def forget_sessions() -> None:
    """Resume nothing: the next connection of every client has a full handshake (what a
    measure of handshakes must have)."""
    _sessions.clear()


def tls_params(address: SocketAddress) -> TLSParams | None:
    """The TLS settings of ``address``, ``None`` for a plain one."""
    return address.tls


def client_setup(address: SocketAddress) -> TLSSetup | None:
    """The client side of ``address``'s TLS, ``None`` when it has none.  Reads ``ca=``,
    ``cert=`` and ``key=`` (an :class:`~enchufe.errors.AddressError` names a bad one)."""
    params = tls_params(address)
    if params is None:
        return None
    check_tls_use(address, "client")
    return TLSSetup(client_context(params), params, False, tls_server_name(address))


#: Client contexts by their settings and the state of the files they read (see
#: :func:`client_context`); cleared when it holds this many.
MAX_CLIENT_CONTEXTS = 64
_client_contexts: dict[tuple[object, ...], ssl.SSLContext] = {}


def client_context(params: TLSParams) -> ssl.SSLContext:
    """A client context for ``params``, made once and reused while its files stay the same.

    Loading the system store costs tens of milliseconds, more than a handshake: a program that
    connects again and again must not pay it each time.  A file replaced or rewritten (a CA or
    client certificate rotated), or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` changed, makes a new one.
    """
    key = (
        params,
        _stamp(params.ca),
        _stamp(params.cert),
        _stamp(params.key),
        os.environ.get("SSL_CERT_FILE"),
        os.environ.get("SSL_CERT_DIR"),
    )
    context = _client_contexts.get(key)
    if context is None:
        from . import _tls

        context = _tls.client_context(params)
        if len(_client_contexts) >= MAX_CLIENT_CONTEXTS:
            _client_contexts.clear()
        _client_contexts[key] = context
    return context


def _stamp(path: str | None) -> tuple[int, int, int] | None:
    """What changes when a file is replaced or rewritten; ``None`` when there is none to read."""
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None  # the context's own loading says what is wrong with it
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def server_setup(address: SocketAddress) -> TLSSetup | None:
    """The server side of ``address``'s TLS, ``None`` when it has none: the context is made
    once per listener (``cert=auto``: a certificate for the listening host, and its pin)."""
    params = tls_params(address)
    if params is None:
        return None
    check_tls_use(address, "server")
    host = address.host if isinstance(address, InetAddress) else ""
    from . import _tls

    context, pin = _tls.server_context(params, host)
    return TLSSetup(context, params, True, None, pin)


def with_tls(address: SocketAddress, params: TLSParams | None) -> SocketAddress:
    """``address`` with ``params`` as its TLS settings (the real address of a TLS listener)."""
    if params is None:
        return address
    if isinstance(address, InetAddress):
        return InetAddress(address.transport, address.host, address.port, address.forced_family, params)
    assert isinstance(address, UnixAddress)
    return UnixAddress(address.name, address.abstract, address.datagram, params)

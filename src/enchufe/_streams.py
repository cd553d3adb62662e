"""The stream endpoints' core, shared by ``enchufe.sync`` and ``enchufe.aio``: one attempt each.

:class:`StreamCore` and :class:`ListenerCore` hold the state, the addresses and the error
translation of a connection and a listener.  Each ``_…_once`` method makes one system call:
on a blocking socket it waits in the kernel; on a non-blocking one (``_polled``) it lets
``BlockingIOError`` through for the asyncio side to wait on the loop and call it again.
Everything else an ``OSError`` says is translated here, into :mod:`enchufe.errors`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from . import _calls, _ranges, _serving, _unixfiles
from ._buffer import MAX_RECV_CHUNK, ReceiveBuffer
from ._endpoint import Endpoint
from .address import SocketAddress, from_sockaddr
from .errors import ClosedError, ConnectionReset, EnchufeError, NetworkError, reason, translate
from .i18n import N_, _

if TYPE_CHECKING:
    from ._tlsstream import TLSSetup
    from .proxyproto import ProxyHeader

C = TypeVar("C")


class StreamCore(Endpoint):
    """A connected stream socket's state: addresses, the bytes read ahead, the half-close."""

    _closed_message = N_("this connection is closed")
    #: True on the asyncio side: the socket is non-blocking and EAGAIN means "wait, then retry".
    _polled = False

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self._buffer = ReceiveBuffer()  # bytes read past a delimiter by recv_until/recv_exactly
        self._write_shut = False
        family, kind = sock.family, sock.type  # each an enum made anew: once, not twice
        self.local_address: SocketAddress | None = from_sockaddr(family, kind, sock.getsockname())
        self.peer_address: SocketAddress | None = from_sockaddr(family, kind, sock.getpeername())
        #: Behind a proxy that sent a PROXY header (a server's ``accept_proxy``): the proxy's
        #: own address, and the header; ``peer_address`` is then the client the header names.
        self.proxy_address: SocketAddress | None = None
        self.proxy_header: ProxyHeader | None = None

    def _where(self) -> str:
        return str(self.peer_address) if self.peer_address else _("the peer")

    @property
    def peer_credentials(self) -> _calls.Credentials | None:
        """For unix sockets, the peer's pid, uid and gid (SO_PEERCRED); ``None`` for TCP."""
        self._check()
        if self._sock.family != socket.AF_UNIX:
            return None
        return _calls.peer_credentials(self._sock)

    def _translated(self, exc: OSError, what: str) -> NetworkError:
        """``exc`` as an enchufe error; EAGAIN goes through untouched for the asyncio side."""
        if self._polled and isinstance(exc, BlockingIOError):
            raise exc
        return translate(exc, what)

    def _check_send(self) -> None:
        self._check()
        if self._write_shut:
            raise ClosedError(_("cannot send: this side's write half was shut down (shutdown_write)"))

    def _send_once(self, view: memoryview) -> int:
        """One ``send()``: the bytes the kernel took."""
        try:
            return _calls.send(self._sock, view)
        except OSError as exc:
            raise self._translated(exc, f"send to {self._where()}") from exc

    def _shutdown_write(self) -> None:
        self._check()
        self._write_shut = True
        try:
            _calls.shutdown(self._sock, socket.SHUT_WR)
        except OSError as exc:
            raise translate(exc, f"shut down the write side towards {self._where()}") from exc

    def _recv_once(self, max_bytes: int) -> bytes:
        """One ``recv()`` of up to ``max_bytes``: ``b""`` at EOF."""
        self._check()
        try:
            return _calls.recv(self._sock, max_bytes)
        except OSError as exc:
            raise self._translated(exc, f"receive from {self._where()}") from exc

    def _recv_size(self, max_bytes: int) -> int:
        """``max_bytes`` checked and bounded, for a ``recv()``."""
        self._check()
        # "Up to": a huge max_bytes (a length the peer announced) is read in bounded chunks,
        # never allocated at once.
        return min(_ranges.integer(max_bytes, "max_bytes", 1), MAX_RECV_CHUNK)


@dataclass(frozen=True)
class TLSReload:
    """What reading a TLS listener's files again did (:meth:`ListenerCore.reload_tls_files`).

    ``outcome`` is ``"reloaded"`` (clients accepted from now on get the new files),
    ``"cert-auto"`` (the certificate is kept: nothing of it is on disk), ``"not-tls"`` (a plain
    listener, or a datagram server: nothing to reload) or ``"failed"``: ``error`` then names the
    file now missing or bad, and the listener keeps what it had.
    """

    outcome: Literal["reloaded", "cert-auto", "not-tls", "failed"]
    error: EnchufeError | None = None

    @property
    def reloaded(self) -> bool:
        return self.outcome == "reloaded"


class ListenerCore(Endpoint):
    """A listening socket's state: its real address, the socket file it owns, and for a TLS
    address the server side's setup (its context made once, for every connection)."""

    _polled = False

    def __init__(
        self,
        sock: socket.socket,
        address: SocketAddress,
        owned: _unixfiles.SocketFile | None,
        tls: TLSSetup | None = None,
    ) -> None:
        super().__init__(sock, owned)
        self.address = address
        self._tls = tls

    def reload_tls(self) -> TLSReload:
        """Read the certificate, key and CA files of a TLS listener again (what SIGUSR1 asks of a
        server): clients accepted from now on are served with them, those connected keep theirs.
        A file that is now missing or bad raises :class:`~enchufe.errors.AddressError` naming
        it, and the listener keeps what it had.  A ``cert=auto`` certificate is kept (nothing of
        it is on disk); a plain listener has nothing to reload.  Says which of these happened."""
        from ._tlsstream import server_setup  # the TLS layer builds on this module

        if self._tls is None:
            return TLSReload("not-tls")
        if self._tls.params.cert_auto:
            return TLSReload("cert-auto")
        self._tls = server_setup(self.address)
        return TLSReload("reloaded")

    def reload_tls_files(self) -> TLSReload:
        """:meth:`reload_tls` that never raises: a missing or bad file is a ``"failed"`` result
        carrying the error (the listener keeps what it had)."""
        try:
            return self.reload_tls()
        except EnchufeError as exc:
            return TLSReload("failed", exc)

    @property
    def tls_pin(self) -> str | None:
        """``sha256:HEX``, the pin of a ``cert=auto`` listener's certificate (else ``None``):
        what a client gives as ``pin=`` to trust it."""
        return self._tls.pin if self._tls is not None else None

    def _accept_once(self) -> socket.socket:
        """One ``accept()``: the new connection's socket.

        :class:`~enchufe.errors.ClosedError` once closed, and
        :class:`~enchufe.errors.ConnectionReset` for a client whose connection failed before it
        was accepted: that client's failure, not the listener's."""
        if self._closed:
            raise ClosedError(_("the listener on {address} is closed").format(address=self.address))
        try:
            conn, _peer = _calls.accept(self._sock)
        except OSError as exc:
            if self._polled and isinstance(exc, BlockingIOError):
                raise
            if self._closed:
                raise ClosedError(
                    _("the listener on {address} was closed").format(address=self.address)
                ) from exc
            if exc.errno in _calls.ACCEPT_CLIENT_ERRORS:
                raise ConnectionReset(
                    _(
                        "cannot accept on {address}: the client's connection failed "
                        "before it was accepted ({reason})"
                    ).format(address=self.address, reason=reason(exc)),
                    errno=exc.errno,
                    action="accept",
                ) from exc
            raise translate(exc, f"accept on {self.address}") from exc
        return conn

    def _wrap(self, conn: socket.socket, make: Callable[[socket.socket], C]) -> C:
        """``make(conn)``, the endpoint for an accepted socket; a client that reset before it
        was accepted (ENOTCONN) is a :class:`~enchufe.errors.ConnectionReset`."""
        try:
            return make(conn)
        except OSError as exc:
            conn.close()
            raise ConnectionReset(
                _("cannot accept on {address}: the client left before it was accepted").format(
                    address=self.address
                ),
                errno=exc.errno,
                action="accept",
            ) from exc


class TLSServing:
    """The TLS part of a server's API, the same for the sync and the asyncio server: what their
    listener (``_listener``, ``None`` until started or for a datagram server) can do."""

    _listener: ListenerCore | None

    def reload_tls(self) -> bool:
        """Read the TLS certificate, key and CA files again, for the clients that come next
        (what SIGUSR1 asks); a bad file is logged and the current ones stay.  Whether it
        reloaded (``False`` for a plain server)."""
        return _serving.reload_tls(self._listener)

    def reload_tls_files(self) -> TLSReload:
        """:meth:`reload_tls`, logging nothing, with what happened (a bad file's error with it)
        for the caller to report: ``"not-tls"`` for a plain or datagram server."""
        return self._listener.reload_tls_files() if self._listener is not None else TLSReload("not-tls")

    @property
    def tls_pin(self) -> str | None:
        """Once started, the ``sha256:HEX`` pin of a ``cert=auto`` server's certificate (what a
        client gives as ``pin=``); ``None`` for any other server."""
        return self._listener.tls_pin if self._listener is not None else None

"""Making sockets for addresses: the three openers, the one place that switches on the kind of address.

:func:`open_listener`, :func:`open_datagram` and :func:`open_connection` create, configure,
bind or connect a socket for any address, through the narrated calls of :mod:`enchufe._calls`,
:mod:`enchufe._resolve` and :mod:`enchufe._unixfiles`; unlike those, they translate ``OSError``
into :mod:`enchufe.errors` themselves.
"""

from __future__ import annotations

import contextlib
import socket
import time

from . import _ranges
from ._calls import bind, close, connect, listen, new_socket, setsockopt
from ._connect import ConnectPlan
from ._resolve import Target, resolve
from ._unixfiles import SocketFile, autobind_unix, bind_unix, explain_unix_failure
from .address import InetAddress, SocketAddress, UnixAddress
from .errors import NetworkError, translate

#: The kernel clamps this to net.core.somaxconn (4096 on current kernels).  A short backlog
#: turns a burst of connects into SYN retransmissions of a second or more; queued connections
#: cost the kernel little, so ask for the most it allows.
DEFAULT_BACKLOG = 4096


def _sock_type(address: SocketAddress) -> int:
    return socket.SOCK_STREAM if address.is_stream else socket.SOCK_DGRAM


def _configure_inet(sock: socket.socket, target: Target, *, reuse_port: bool, listening: bool) -> None:
    if listening and sock.type == socket.SOCK_STREAM:
        # Restarting a server must not wait out TIME_WAIT of its previous connections.
        setsockopt(sock, socket.SOL_SOCKET, socket.SO_REUSEADDR, 1, "SO_REUSEADDR")
    if reuse_port:
        setsockopt(sock, socket.SOL_SOCKET, socket.SO_REUSEPORT, 1, "SO_REUSEPORT")
    if target.family == socket.AF_INET6:
        # The system default (net.ipv6.bindv6only) varies; say what we mean.
        only = 0 if target.dual_stack else 1
        setsockopt(sock, socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, only, "IPV6_V6ONLY")


def _bound_address(sock: socket.socket) -> SocketAddress:
    from .address import from_sockaddr

    found = from_sockaddr(sock.family, sock.type, sock.getsockname())
    assert found is not None
    return found


def _real_address(sock: socket.socket, requested: SocketAddress) -> SocketAddress:
    """The bound address with its real port, keeping the user's spelling for unix paths
    (relative stays relative) and for the wildcard host."""
    if isinstance(requested, UnixAddress):
        return requested
    bound = _bound_address(sock)
    assert isinstance(bound, InetAddress)
    # A wildcard stays a wildcard: the "::" that "tcp://:P" binds would read back as
    # "tcp://[::]:P", which means IPv6 only, while the socket is dual-stack.
    # A literal host implies its family, so the scheme needs no digit: the listener's address
    # then equals the address its peers see it by (recvfrom, getpeername).
    if requested.is_wildcard:
        return InetAddress(requested.transport, "", bound.port, requested.forced_family)
    return InetAddress(requested.transport, bound.host, bound.port)


def _close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        close(sock)


def open_listener(
    address: SocketAddress, *, backlog: int, mode: int | None, reuse_port: bool
) -> tuple[socket.socket, SocketAddress, SocketFile | None]:
    """A listening stream socket bound to ``address``: (socket, real address, owned file)."""
    return _open_bound(address, socket.SOCK_STREAM, backlog, mode=mode, reuse_port=reuse_port)


def open_datagram(
    address: SocketAddress, *, mode: int | None, reuse_port: bool
) -> tuple[socket.socket, SocketAddress, SocketFile | None]:
    """A datagram socket bound to ``address``: (socket, real address, owned file)."""
    return _open_bound(address, socket.SOCK_DGRAM, None, mode=mode, reuse_port=reuse_port)


def _open_bound(
    address: SocketAddress, sock_type: int, backlog: int | None, *, mode: int | None, reuse_port: bool
) -> tuple[socket.socket, SocketAddress, SocketFile | None]:
    """Create, configure and bind a socket for ``address``, and listen when ``backlog`` is given."""
    what = f"listen on {address}" if backlog is not None else f"bind {address}"
    if backlog is not None:
        _ranges.integer(backlog, "backlog", 0, _ranges.MAX_BACKLOG)
    if mode is not None:
        _ranges.integer(mode, "mode", 0, 0o777)
    if isinstance(address, UnixAddress):
        family: int = socket.AF_UNIX
        target = None
    else:
        target = resolve(address, passive=True)[0]
        family = target.family
    sock = create_socket(family, sock_type, what)
    owned: SocketFile | None = None
    try:
        if target is None:
            assert isinstance(address, UnixAddress)
            owned = bind_unix(sock, address, mode)
        else:
            _configure_inet(sock, target, reuse_port=reuse_port, listening=True)
            bind(sock, target.sockaddr)
        if backlog is not None:
            listen(sock, backlog)
    except OSError as exc:
        _close_quietly(sock)
        if owned is not None:
            owned.release()
        raise translate(exc, what) from exc
    except NetworkError:
        _close_quietly(sock)
        raise
    return sock, _real_address(sock, address), owned


def create_socket(family: int, sock_type: int, what: str) -> socket.socket:
    """A new socket for ``what`` (``"connect to …"``); its failure (no descriptor left) as an
    enchufe error that says what could not be done."""
    try:
        return new_socket(family, sock_type)
    except OSError as exc:
        raise translate(exc, what) from exc


def open_connection(
    address: SocketAddress,
    *,
    timeout: float | None,
    retries: int,
    retry_delay: float,
    datagram_reply: bool = True,
) -> tuple[socket.socket, SocketFile | None]:
    """A socket connected to ``address`` (stream, or a connected datagram socket).

    Every target of every attempt gets a new socket: after a failed ``connect()`` a socket's
    state is unspecified, so it is never reused.  Refused, missing and timed-out attempts are
    retried ``retries`` more times, ``retry_delay`` seconds apart; the error raised is the last
    one, carrying every attempt's error in ``attempts``.
    """
    plan = ConnectPlan(address, retries=retries, retry_delay=retry_delay)
    timeout = _ranges.seconds(timeout, "timeout", optional=True, positive=True)
    sock_type = _sock_type(address)
    what = f"connect to {address}"
    for delay in plan:
        if delay:
            time.sleep(delay)
        targets: list[Target] = (
            [Target(socket.AF_UNIX, address.sockaddr)]
            if isinstance(address, UnixAddress)
            else resolve(address, passive=False)
        )
        for target in targets:
            sock = create_socket(target.family, sock_type, what)
            owned: SocketFile | None = None
            try:
                if sock_type == socket.SOCK_DGRAM and target.family == socket.AF_UNIX and datagram_reply:
                    owned = autobind_unix(sock)
                sock.settimeout(timeout)
                connect(sock, target.sockaddr)
                sock.settimeout(None)
                return sock, owned
            except OSError as exc:
                _close_quietly(sock)
                if owned is not None:
                    owned.release()
                plan.failed(exc, explain_unix_failure(address, exc, what))
    raise plan.error()

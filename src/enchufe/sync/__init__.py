"""Blocking endpoints for the six kinds: one entry point per role, one dispatch on the address."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._connect import DEFAULT_RETRY_DELAY, socket_address
from .._lazy import lazy_names
from .._sockets import DEFAULT_BACKLOG, open_connection, open_datagram, open_listener
from .._tlsstream import client_setup, server_setup, with_tls
from ..address import Address
from .stream import Connection, Listener, TLSConnection, connection_over

if TYPE_CHECKING:
    from ..hops import Hop
    from .datagram import DatagramSocket

# The datagram side and the proxies (--via) load when first used: a stream program never needs
# them (nor compiles them, in a process without cached bytecode).
__getattr__, __dir__ = lazy_names(__name__, globals(), {"DatagramSocket": ".datagram"})

__all__ = [
    "Connection",
    "DatagramSocket",
    "Listener",
    "TLSConnection",
    "bind_datagram",
    "connect",
    "connect_datagram",
    "listen",
]


def listen(
    address: Address | str,
    *,
    backlog: int = DEFAULT_BACKLOG,
    mode: int | None = None,
    reuse_port: bool = False,
) -> Listener:
    """Bind a stream socket to ``address`` and listen: a :class:`Listener`.

    TCP listeners set SO_REUSEADDR; IPv6 ones set IPV6_V6ONLY explicitly (``tcp://:P`` is
    dual-stack, ``tcp6://`` and ``[::]`` are IPv6 only).  A unix listener removes a stale socket
    file first, refuses a live one (:class:`~enchufe.errors.AddressInUse`) or any file that is
    not a socket (:class:`~enchufe.errors.NotASocket`), and sets the file's permissions to
    ``mode`` when given.

    A TLS address (``tls://``, ``tls+unix:``) reads its certificate and makes its context here,
    once; connections are accepted before their handshake (see :class:`TLSConnection`).
    """
    target = socket_address(address, stream=True, role="listen")
    tls = server_setup(target)
    sock, real, owned = open_listener(target, backlog=backlog, mode=mode, reuse_port=reuse_port)
    return Listener(sock, with_tls(real, target.tls), owned, tls)


def connect(
    address: Address | str,
    *,
    timeout: float | None = None,
    retries: int = 0,
    retry_delay: float = DEFAULT_RETRY_DELAY,
    via: Sequence[str | Hop] | str | Hop | None = None,
) -> Connection:
    """Connect a stream socket to ``address``: a :class:`Connection`.

    ``timeout`` bounds each connection attempt (``None``: the kernel's own, minutes for TCP).
    A refused connection, a socket file that does not exist yet and a timed-out attempt are
    retried ``retries`` more times, each with a new socket.  Host names are resolved here and
    every address they resolve to is tried in order.

    A TLS address returns a :class:`TLSConnection` once the handshake is done and the server
    accepted (verified against the system store or ``ca=``, or its ``pin=``), within the
    address's ``handshake-timeout`` (or ``timeout``, when shorter);
    :class:`~enchufe.errors.TLSRefused` says why not.

    ``via`` goes through proxies, first hop first (see :mod:`enchufe.hops`):
    ``socks5://[USER:PASS@]HOST:PORT`` or ``http://[USER:PASS@]HOST:PORT``.  The target's name
    is resolved by the last proxy, and TLS runs end to end through the tunnel.  ``timeout``
    bounds each attempt, handshakes included; :class:`~enchufe.hops.HopRefused` names the hop
    that said no, and why.
    """
    target = socket_address(address, stream=True, role="connect")
    hops: tuple[Hop, ...] = ()
    if via is not None:
        from ..hops import parse_hops

        hops = parse_hops(via)
    tls = client_setup(target)
    if hops:
        from .._via import open_via
        from ..hops import check_target

        checked = check_target(target, hops)
        sock = open_via(checked, hops, timeout=timeout, retries=retries, retry_delay=retry_delay)
    else:
        sock, _owned = open_connection(target, timeout=timeout, retries=retries, retry_delay=retry_delay)
    return connection_over(sock, tls, timeout)


def bind_datagram(
    address: Address | str, *, mode: int | None = None, reuse_port: bool = False
) -> DatagramSocket:
    """A datagram socket bound to ``address``, ready for ``recvfrom`` and ``sendto``.

    Unix socket files are handled as for :func:`listen`.
    """
    from .datagram import DatagramSocket

    sock, real, owned = open_datagram(
        socket_address(address, stream=False, role="bind_datagram"),
        mode=mode,
        reuse_port=reuse_port,
    )
    return DatagramSocket(sock, owned=owned, local_address=real)


def connect_datagram(
    address: Address | str,
    *,
    timeout: float | None = None,
    retries: int = 0,
    retry_delay: float = DEFAULT_RETRY_DELAY,
    via: Sequence[str | Hop] | str | Hop | None = None,
) -> DatagramSocket:
    """A datagram socket connected to ``address``: ``send`` and ``recv`` talk to that peer only.

    A unixgram client is bound first to an automatic reply address (a Linux abstract name, or
    a temporary path removed on close), so that the server can answer it.

    ``via`` sends a ``udp://`` target's datagrams through one ``socks5://[USER:PASS@]HOST:PORT``
    proxy (SOCKS5 UDP ASSOCIATE): the proxy resolves the target's name, ``recvfrom`` gives the
    sender its relay names, ``sendto`` reaches any udp:// address through it, and closing the
    socket ends the association (its TCP connection to the proxy).  ``timeout`` bounds opening
    it; :class:`~enchufe.hops.HopRefused` names the proxy and its reason.
    """
    from .datagram import DatagramSocket

    target = socket_address(address, stream=False, role="connect_datagram")
    hops: tuple[Hop, ...] = ()
    if via is not None:
        from ..hops import parse_hops

        hops = parse_hops(via)
    if hops:
        from .._via import open_udp_via
        from ..hops import check_target

        checked = check_target(target, hops)
        udp, control = open_udp_via(checked, hops, timeout=timeout, retries=retries, retry_delay=retry_delay)
        dgram = DatagramSocket(udp, peer_address=target)
        dgram._through(control)
        return dgram
    sock, owned = open_connection(target, timeout=timeout, retries=retries, retry_delay=retry_delay)
    return DatagramSocket(sock, owned=owned, peer_address=target)

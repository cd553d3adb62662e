"""The openers of :mod:`enchufe.aio`: listen, connect, bind and connect datagram sockets, run."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from .. import _calls, _nonblocking, _ranges, _resolve, _unixfiles
from .._backoff import Backoff
from .._connect import DEFAULT_RETRY_DELAY, ConnectPlan, socket_address
from .._resolve import Target
from .._sockets import DEFAULT_BACKLOG, create_socket, open_datagram, open_listener
from .._tlsstream import client_setup, server_setup, with_tls
from .._unixfiles import SocketFile
from ..address import Address, InetAddress, UnixAddress
from ..hops import Hop, check_target, parse_hops
from ._via import open_udp_via, open_via
from ._wait import wait_writable
from .datagram import DatagramSocket
from .stream import Connection, Listener, TLSConnection

__all__ = [
    "bind_datagram",
    "connect",
    "connect_datagram",
    "listen",
    "new_event_loop",
    "run",
]

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed, else the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool = True) -> T:
    """Run ``main`` to completion on a new loop (uvloop if installed and ``use_uvloop``)."""
    factory = new_event_loop if use_uvloop else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


async def listen(
    address: Address | str,
    *,
    backlog: int = DEFAULT_BACKLOG,
    mode: int | None = None,
    reuse_port: bool = False,
) -> Listener:
    """Like :func:`enchufe.listen`, for asyncio (a TLS address makes its context here, once)."""
    target = socket_address(address, stream=True, role="listen")
    tls = server_setup(target)
    sock, real, owned = open_listener(target, backlog=backlog, mode=mode, reuse_port=reuse_port)
    return Listener(sock, with_tls(real, target.tls), owned, tls)


async def bind_datagram(
    address: Address | str, *, mode: int | None = None, reuse_port: bool = False
) -> DatagramSocket:
    """Like :func:`enchufe.bind_datagram`, for asyncio."""
    sock, real, owned = open_datagram(
        socket_address(address, stream=False, role="bind_datagram"), mode=mode, reuse_port=reuse_port
    )
    return DatagramSocket(sock, owned=owned, local_address=real)


async def connect(
    address: Address | str,
    *,
    timeout: float | None = None,
    retries: int = 0,
    retry_delay: float = DEFAULT_RETRY_DELAY,
    via: Sequence[str | Hop] | str | Hop | None = None,
) -> Connection:
    """Like :func:`enchufe.connect`, for asyncio: each attempt a new socket, ``timeout`` each;
    a TLS address returns a :class:`~enchufe.aio.stream.TLSConnection` with its handshake done.
    ``via`` goes through proxies, as :func:`enchufe.connect`'s does."""
    target = socket_address(address, stream=True, role="connect")
    hops = parse_hops(via)
    tls = client_setup(target)
    if hops:
        sock = await _open_via(check_target(target, hops), hops, timeout, retries, retry_delay)
    else:
        sock, _owned = await _open_connection(target, timeout, retries, retry_delay)
    if tls is None:
        return Connection(sock)
    conn = TLSConnection(sock, tls)
    try:
        await conn.handshake(timeout)
    except BaseException:
        conn.close()
        raise
    return conn


async def connect_datagram(
    address: Address | str,
    *,
    timeout: float | None = None,
    retries: int = 0,
    retry_delay: float = DEFAULT_RETRY_DELAY,
    via: Sequence[str | Hop] | str | Hop | None = None,
) -> DatagramSocket:
    """Like :func:`enchufe.connect_datagram`, for asyncio (unixgram clients get a reply address;
    ``via``: a udp:// target's datagrams through one SOCKS5 proxy, as there)."""
    target = socket_address(address, stream=False, role="connect_datagram")
    hops = parse_hops(via)
    if hops:

        async def first_leg(proxy: InetAddress) -> socket.socket:
            sock, _owned = await _open_connection(proxy, timeout, 0, 0)
            return sock

        checked = check_target(target, hops)
        udp, control = await open_udp_via(
            checked, hops, first_leg, timeout=timeout, retries=retries, retry_delay=retry_delay
        )
        dgram = DatagramSocket(udp, peer_address=target)
        dgram._through(control)
        return dgram
    sock, owned = await _open_connection(target, timeout, retries, retry_delay)
    return DatagramSocket(sock, owned=owned, peer_address=target)


async def _open_via(
    target: InetAddress, hops: tuple[Hop, ...], timeout: float | None, retries: int, retry_delay: float
) -> socket.socket:
    async def first_leg(proxy: InetAddress) -> socket.socket:
        sock, _owned = await _open_connection(proxy, timeout, 0, 0)
        return sock

    return await open_via(target, hops, first_leg, timeout=timeout, retries=retries, retry_delay=retry_delay)


async def _targets(address: Any) -> list[Target]:
    if isinstance(address, UnixAddress):
        return [Target(socket.AF_UNIX, address.sockaddr)]
    if address.family is not None and address.host:  # a literal: nothing to look up
        return _resolve.resolve(address, passive=False)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, lambda: _resolve.resolve(address, passive=False))


async def _open_connection(
    address: Any, timeout: float | None, retries: int, retry_delay: float
) -> tuple[socket.socket, SocketFile | None]:
    plan = ConnectPlan(address, retries=retries, retry_delay=retry_delay)
    timeout = _ranges.seconds(timeout, "timeout", optional=True, positive=True)
    sock_type = socket.SOCK_STREAM if address.is_stream else socket.SOCK_DGRAM
    for delay in plan:
        if delay:
            await asyncio.sleep(delay)
        for target in await _targets(address):
            sock = create_socket(target.family, sock_type, f"connect to {address}")
            owned: SocketFile | None = None
            try:
                sock.setblocking(False)
                if sock_type == socket.SOCK_DGRAM and target.family == socket.AF_UNIX:
                    owned = _unixfiles.autobind_unix(sock)
                async with asyncio.timeout(timeout):
                    if target.family == socket.AF_UNIX:
                        await _connect_unix(sock, target.sockaddr)
                    elif _nonblocking.connect_nonblocking(sock, target.sockaddr) != 0:
                        await wait_writable(sock)
                        _calls.finish_connect(sock)
                return sock, owned
            except OSError as exc:
                _release(sock, owned)
                plan.failed(exc, _unixfiles.explain_unix_failure(address, exc, f"connect to {address}"))
            except BaseException:  # cancelled: close what we opened
                _release(sock, owned)
                raise
    raise plan.error()


async def _connect_unix(sock: socket.socket, sockaddr: Any) -> None:
    """Connect a non-blocking unix socket, waiting while the listener's backlog is full.

    A unix stream connect never answers EINPROGRESS: it succeeds at once, fails, or (backlog
    full) answers EAGAIN without starting anything.  Waiting for the socket to become writable
    would not do: an unconnected unix socket is always writable, and the kernel offers no
    readiness event for "the backlog has room again" (a blocking connect sleeps inside the
    kernel instead).  So the attempt is repeated, backing off.
    """
    backoff = Backoff()
    while _nonblocking.connect_nonblocking(sock, sockaddr) != 0:
        await asyncio.sleep(backoff.next())


def _release(sock: socket.socket, owned: SocketFile | None) -> None:
    _calls.close(sock)
    if owned is not None:
        owned.release()

"""``serve(address, handler)`` for asyncio: a loop plus a function, for all six kinds.

Stream kinds: one task per connection runs ``await handler(conn)``; the connection is closed
when the handler returns.  Datagram kinds: ``handler(datagram)`` is called for each datagram in
arrival order, with the sender's per-peer session and a way to reply.

::

    async def echo(conn: aio.Connection) -> None:
        while data := await conn.recv():
            await conn.send_all(data)

    server = Server("tcp://127.0.0.1:0", echo)
    await server.start()               # bound: server.address has the real port
    await server.serve_forever()       # until server.shutdown()
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from .. import _ranges
from .._notices import notices
from .._proxyaccept import check_peer, settle, step
from .._proxypolicy import DEFAULT_PROXY_TIMEOUT, ProxyPolicy, ProxyRefused, proxy_policy
from .._serving import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DELIVER_PATIENCE,
    AcceptPolicy,
    DatagramBase,
    ServeStats,
    bound_address,
    datagram_failed,
    first_try,
    handler_outcome,
    handshake_outcome,
    is_exhaustion,
    log,
    peer_sessions,
    proxy_refused,
    receive_failed,
    received,
    server_options,
    session_ended,
    shown,
)
from .._streams import TLSReload, TLSServing
from ..address import Address, SocketAddress
from ..errors import ClosedError, ConnectionReset, NetworkError, TimedOut
from ..i18n import _
from ..proxyproto import NeedMore
from ..sessions import Session, SessionTable
from ._open import bind_datagram, listen
from ._wait import Readiness
from .datagram import DatagramSocket
from .stream import Connection, Listener

__all__ = [
    "DELIVER_PATIENCE",
    "Datagram",
    "DatagramHandler",
    "Handler",
    "Server",
    "StreamHandler",
    "TLSReload",
    "deliver",
    "serve",
    "take_proxy_header",
]


class Datagram(DatagramBase[DatagramSocket]):
    """One datagram handed to a datagram handler: payload, sender, the sender's session."""

    async def reply(self, data: bytes) -> bool:
        """Send ``data`` back to the sender; see :func:`deliver`.  ``False`` if it was dropped
        (counted in the server's ``stats.dropped``), and for an unbound unix sender, which
        cannot be answered.  Never waits long on a peer that does not read."""
        to = self.reply_address
        if to is None:
            return False
        return self._counted(await deliver(self.socket, data, to))


async def deliver(sock: DatagramSocket, data: bytes, peer: SocketAddress) -> bool:
    """Send one datagram from a server's socket to ``peer`` without letting ``peer`` stall it.

    UDP: waits while our own send buffer is full (the kernel drains it to the receivers at
    once; a receiver that does not read loses datagrams in its own queue, not ours).

    Unix: a receiver that does not read fills its queue, and then every send to it would wait,
    holding up every other peer of a server that handles datagrams in order.  We wait for room
    up to :data:`~enchufe._serving.DELIVER_PATIENCE` (a reader a little behind catches up);
    after that the datagram is dropped and ``False`` returned, as UDP would have dropped it,
    and until that peer takes a datagram again the next ones for it are dropped without
    waiting.  Each peer gets that patience once per :data:`~enchufe._serving.PATIENCE_WINDOW`:
    a peer that takes a datagram just in time, again and again, cannot hold the others up.
    :func:`enchufe.sync.serve.deliver` does the same, blocking.
    """
    if sock.socket.family != socket.AF_UNIX:
        await sock.sendto(data, peer)
        return True
    patience = first_try(sock, data, peer)
    if patience is None or patience <= 0:
        return patience is None  # sent at once; or it made us wait in vain, or enough lately
    with sock.stalled_peers.waiting(peer) as wait:
        wait.sent = await _retry_for(sock, data, peer, patience)
    return wait.sent


async def _retry_for(sock: DatagramSocket, data: bytes, peer: SocketAddress, patience: float) -> bool:
    """Try again for ``patience`` seconds (``sendto`` backs off while the receiver's queue is
    full).  Whether the datagram went."""
    try:
        async with asyncio.timeout(patience):
            await sock.sendto(data, peer)
    except (TimeoutError, TimedOut):
        return False
    return True


#: Clients accepted, or datagrams handled, between two chances for the loop's other tasks to
#: run: neither an accept nor a receive waits while there is something queued.
YIELD_EVERY = 64


class StreamHandler(Protocol):
    """What serves one stream connection: ``await handler(conn)``; the connection closes when
    it returns."""

    def __call__(self, conn: Connection, /) -> Awaitable[object]: ...


class DatagramHandler(Protocol):
    """What handles one datagram: ``handler(datagram)``, awaited if it returns an awaitable
    (a coroutine function or a plain function both do), in arrival order."""

    def __call__(self, datagram: Datagram, /) -> Awaitable[object] | object: ...


#: A stream handler for stream addresses, a datagram handler for datagram ones.
Handler = StreamHandler | DatagramHandler


@dataclass
class Server(TLSServing):
    """An asyncio server on ``address``.

    ``max_connections`` bounds concurrent stream connections (extra clients are closed at once
    and counted) and datagram peers (the least recently active is forgotten).
    ``idle_timeout`` closes a stream connection that neither sends nor receives for that long,
    and forgets a datagram peer silent that long (default 60 s for datagrams, off for streams).
    The accept loop survives descriptor exhaustion (EMFILE/ENFILE) by pausing, never spinning,
    and a handler that raises is logged without stopping the server.
    A TLS client whose handshake fails (refused, timed out, cut) ends alone: counted in
    ``stats.failed``, logged at INFO, and given to ``on_handshake_failure(conn, error)`` if set
    (the handler is not called; what the hook raises is logged).

    ``accept_proxy``: behind a load balancer, each connection starts with a PROXY protocol
    header (v1 or v2), read before anything else: the connection's ``peer_address`` is then the
    client it names, ``proxy_address`` the balancer.  Only peers in ``trusted_proxies`` (CIDR
    texts; default loopback; unix peers always) may send one; any other peer, and a header
    missing, malformed, oversized or not complete within ``proxy_timeout`` seconds, closes
    that connection with one log line (counted in ``stats.refused``), never the server.
    On a datagram address, each datagram starts with a version 2 header (as ``relay
    --send-proxy v2`` sends it): the handler's ``datagram.sender`` is the client it names,
    ``datagram.proxy_address`` the proxy, and replies go to the proxy; a datagram from any
    other peer or without a valid header is dropped (counted in ``stats.refused``, logged).
    """

    address: Address | str
    handler: Handler
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    idle_timeout: float | None = None
    mode: int | None = None
    on_session_end: Callable[[Session[Any, dict[str, Any]]], None] | None = None
    on_handshake_failure: Callable[[Connection, NetworkError], object] | None = None
    accept_proxy: bool = False
    trusted_proxies: Iterable[str] | None = None
    proxy_timeout: float = DEFAULT_PROXY_TIMEOUT
    stats: ServeStats = field(default_factory=ServeStats)
    _listener: Listener | None = None
    _socket: DatagramSocket | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _stopping: asyncio.Event | None = None
    _cut_now: asyncio.Event | None = None
    _drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    sessions: SessionTable[Any, dict[str, Any]] | None = None
    _policy: AcceptPolicy | None = None
    proxy: ProxyPolicy | None = None

    def __post_init__(self) -> None:
        self.address, self.max_connections, self.idle_timeout = server_options(
            self.address, self.max_connections, self.idle_timeout
        )
        self.proxy = proxy_policy(self.address, self.accept_proxy, self.trusted_proxies, self.proxy_timeout)
        self._policy = AcceptPolicy(self.stats)

    @property
    def bound_address(self) -> SocketAddress:
        """The real address once started (port 0 resolved)."""
        return bound_address(self._listener, self._socket)

    async def start(self) -> None:
        """Bind (and listen): after this, clients can connect."""
        self._stopping = asyncio.Event()
        self._cut_now = asyncio.Event()
        assert not isinstance(self.address, str)
        if self.address.is_stream:
            self._listener = await listen(self.address, mode=self.mode)
        else:
            self._socket = await bind_datagram(self.address, mode=self.mode)
            self.sessions = peer_sessions(self.idle_timeout, self.max_connections, self._session_ended)

    def shutdown(self, drain_timeout: float = DEFAULT_DRAIN_TIMEOUT) -> None:
        """Stop accepting now; let handlers finish for ``drain_timeout`` seconds, then cut them.

        Returns at once; :meth:`serve_forever` returns when the shutdown is complete.  A second
        call while draining cuts the remaining connections at once (a second Ctrl-C).
        """
        drain_timeout = _ranges.seconds(drain_timeout, "drain_timeout") or 0.0
        self._drain_timeout = drain_timeout
        if self._stopping is not None and self._cut_now is not None:
            if self._stopping.is_set() or drain_timeout <= 0:
                self._cut_now.set()
            self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        if self._socket is not None:
            self._socket.close()

    async def serve_forever(self) -> ServeStats:
        """Serve until :meth:`shutdown`; returns the statistics (``cut`` > 0 if any was cut)."""
        if self._stopping is None:
            await self.start()
        if self._listener is not None:
            await self._accept_loop(self._listener)
            await self._drain()
            notices.flush()
        elif self._socket is not None:
            await self._datagram_loop(self._socket)
        return self.stats

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.shutdown(0)
        await self._drain()

    # -- streams

    async def _accept_loop(self, listener: Listener) -> None:
        assert self._stopping is not None and self._policy is not None
        policy = self._policy
        while not self._stopping.is_set():
            try:
                conn = await listener.accept()
            except ClosedError:
                return
            except ConnectionReset:
                continue
            except NetworkError as exc:
                if not is_exhaustion(exc):
                    raise
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), policy.exhausted(exc))
                continue
            policy.accepted()
            if self.stats.accepted % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # a burst of clients must not starve those being served
            if len(self._tasks) >= self.max_connections:
                policy.at_limit(conn.peer_address, self.max_connections)
                conn.close()
                continue
            self.stats.accepted += 1
            task = asyncio.create_task(self._run(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, conn: Connection) -> None:
        self.stats.active += 1
        try:
            if self.idle_timeout is not None:
                conn.set_timeout(self.idle_timeout)
            try:
                if self.proxy is not None:
                    await take_proxy_header(conn, self.proxy)  # before anything else, TLS included
                await conn.handshake()  # TLS: in the connection's task, never in the accept loop
            except ProxyRefused as exc:
                self.stats.refused += 1
                proxy_refused(exc)
                return
            except NetworkError as exc:
                self.stats.failed += 1
                handshake_outcome(exc, conn, self.on_handshake_failure)
                return
            await cast(StreamHandler, self.handler)(conn)
            self.stats.completed += 1
        except asyncio.CancelledError:
            if _cancelled():
                self.stats.cut += 1
                raise
            # The handler awaited something that was cancelled: its failure, not a cut.
            self.stats.failed += 1
            log.exception(
                _("handler failed on the connection from {peer}").format(peer=shown(conn.peer_address))
            )
        except Exception as exc:
            outcome = handler_outcome(exc, conn.peer_address, self.idle_timeout)
            setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
        finally:
            # Out of the count at once (a done callback would run a loop iteration later, and
            # the accept loop could meanwhile refuse a client although there is room).
            self._tasks.discard(asyncio.current_task())
            self.stats.active -= 1
            conn.close()

    async def _drain(self) -> None:
        deadline = time.monotonic() + self._drain_timeout
        cut_now = self._cut_now
        assert cut_now is not None
        waiter = asyncio.ensure_future(cut_now.wait())
        try:
            while self._tasks and not cut_now.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await asyncio.wait({*self._tasks, waiter}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    # -- datagrams

    def _session_ended(self, session: Session[Any, dict[str, Any]], reason: str) -> None:
        session_ended(self.stats, self.on_session_end, session, reason)

    async def _datagram_loop(self, sock: DatagramSocket) -> None:
        assert self.sessions is not None
        sessions = self.sessions
        got = 0  # datagrams received, handled or dropped
        while True:
            deadline = sessions.next_expiry()
            try:
                sock.set_timeout(None if deadline is None else max(0.0, deadline - time.monotonic()))
                data, sender = await sock.recvfrom()
            except TimedOut:
                sessions.expire(time.monotonic())
                continue
            except (ClosedError, NetworkError) as exc:
                if receive_failed(exc, self.stats, sock.local_address):
                    return
                continue
            sock.set_timeout(None)  # the deadline was for waiting, not for the handler's replies
            got += 1
            if got % YIELD_EVERY == 0:
                # A receive that finds a datagram queued does not wait, and neither does a send
                # with room: a flood would otherwise hold the loop for as long as it lasts.
                await asyncio.sleep(0)
            datagram = received(Datagram, sock, data, sender, sessions, self.stats, self.proxy)
            if datagram is not None and await self._handle(datagram):
                return

    async def _handle(self, datagram: Datagram) -> bool:
        """Run the handler on ``datagram``; ``True`` if the loop ends (shutdown closed the socket)."""
        try:
            result = cast(DatagramHandler, self.handler)(datagram)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            if _cancelled():
                raise
            # The handler awaited something that was cancelled: its failure, not ours.
            self.stats.failed += 1
            log.exception(_("handler failed on a datagram from {peer}").format(peer=shown(datagram.sender)))
        except Exception as exc:
            return datagram_failed(exc, datagram.sender, self.stats, closed=datagram.socket.closed)
        return False


async def take_proxy_header(conn: Connection, policy: ProxyPolicy) -> None:
    """Read ``conn``'s PROXY protocol header, waiting up to ``policy.timeout``: then
    ``conn.peer_address`` is the client it names and ``conn.proxy_address`` the proxy.
    :class:`~enchufe._proxyaccept.ProxyRefused` (its message the log line) for a peer that is
    not a trusted proxy, and for a header missing, malformed, oversized or late; no payload
    byte is taken either way."""
    read = check_peer(conn, policy)
    ready = Readiness(conn.socket)
    try:
        async with asyncio.timeout(policy.timeout):
            while isinstance(read.result, NeedMore):
                await ready.readable(lambda: "read a PROXY header")
                with contextlib.suppress(BlockingIOError):
                    step(conn.socket, read)
    except TimeoutError:
        read.timed_out()
    settle(conn, read)


def _cancelled() -> bool:
    """This task was asked to stop (a CancelledError that came out of a handler without that is
    the handler's own: it awaited something another task cancelled)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


async def serve(
    address: Address | str,
    handler: Handler,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    idle_timeout: float | None = None,
    ready: Callable[[SocketAddress], None] | None = None,
    accept_proxy: bool = False,
    trusted_proxies: Iterable[str] | None = None,
    proxy_timeout: float = DEFAULT_PROXY_TIMEOUT,
) -> ServeStats:
    """Serve ``handler`` on ``address`` until cancelled; ``ready(address)`` once bound.
    ``accept_proxy``: see :class:`Server`.

    Cancelling the task running ``serve`` shuts the server down without a drain period.
    """
    server = Server(
        address,
        handler,
        max_connections=max_connections,
        idle_timeout=idle_timeout,
        accept_proxy=accept_proxy,
        trusted_proxies=trusted_proxies,
        proxy_timeout=proxy_timeout,
    )
    await server.start()
    if ready is not None:
        ready(server.bound_address)
    try:
        return await server.serve_forever()
    finally:
        server.shutdown(0)
        await server._drain()

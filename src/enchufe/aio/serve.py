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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from .. import _ranges
from .._backoff import Backoff
from .._serving import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DELIVER_PATIENCE,
    EXHAUSTION_PAUSE,
    EXHAUSTION_PAUSE_MAX,
    Refusals,
    ServeStats,
    is_exhaustion,
    log,
)
from .._text import one_line, printable
from ..address import Address, InetAddress, SocketAddress, UnixAddress, parse
from ..errors import (
    ClosedError,
    ConnectionReset,
    DatagramTruncated,
    EnchufeError,
    NetworkError,
    TimedOut,
    UsageError,
)
from ..sessions import DEFAULT_IDLE_TIMEOUT, Session, SessionTable
from ._open import bind_datagram, listen
from .datagram import DatagramSocket
from .stream import Connection, Listener

__all__ = [
    "DELIVER_PATIENCE",
    "Datagram",
    "DatagramHandler",
    "Handler",
    "Server",
    "StreamHandler",
    "deliver",
    "serve",
]


@dataclass
class Datagram:
    """One datagram handed to a datagram handler: payload, sender, the sender's session."""

    data: bytes
    sender: SocketAddress | None
    socket: DatagramSocket
    session: Session[Any, dict[str, Any]] | None = None
    new_peer: bool = False
    #: Every peer seen within the idle timeout (the server's session table), sender included.
    peers: SessionTable[Any, dict[str, Any]] | None = None
    #: The server's statistics: a dropped reply is counted in ``dropped``.
    stats: ServeStats | None = field(default=None, repr=False)

    async def reply(self, data: bytes) -> bool:
        """Send ``data`` back to the sender; see :func:`deliver`.  ``False`` if it was dropped
        (counted in the server's ``stats.dropped``), and for an unbound unix sender, which
        cannot be answered."""
        if self.sender is None:
            return False
        if await deliver(self.socket, data, self.sender):
            return True
        if self.stats is not None:
            self.stats.dropped += 1
        return False


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
    stalled = sock.stalled_peers
    if sock.sendto_nowait(data, peer):
        stalled.recovered(peer)
        return True
    if peer in stalled:
        return False  # it already made us wait in vain: dropped at once until it reads again
    started = time.monotonic()
    patience = stalled.patience(peer, started)
    if patience <= 0:
        return False  # it made us wait enough lately: dropped, as UDP would drop it
    try:
        async with asyncio.timeout(patience):
            await sock.sendto(data, peer)  # backs off while the receiver's queue is full
    except (TimeoutError, TimedOut):
        stalled.gave_up(peer)
        return False
    finally:
        stalled.waited(peer, started, time.monotonic() - started)
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
class Server:
    """An asyncio server on ``address``.

    ``max_connections`` bounds concurrent stream connections (extra clients are closed at once
    and counted) and datagram peers (the least recently active is forgotten).
    ``idle_timeout`` closes a stream connection that neither sends nor receives for that long,
    and forgets a datagram peer silent that long (default 60 s for datagrams, off for streams).
    The accept loop survives descriptor exhaustion (EMFILE/ENFILE) by pausing, never spinning,
    and a handler that raises is logged without stopping the server.
    """

    address: Address | str
    handler: Handler
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    idle_timeout: float | None = None
    mode: int | None = None
    on_session_end: Callable[[Session[Any, dict[str, Any]]], None] | None = None
    stats: ServeStats = field(default_factory=ServeStats)
    _listener: Listener | None = None
    _socket: DatagramSocket | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _stopping: asyncio.Event | None = None
    _cut_now: asyncio.Event | None = None
    _drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    sessions: SessionTable[Any, dict[str, Any]] | None = None
    _refusals: Refusals = field(default_factory=Refusals)

    def __post_init__(self) -> None:
        self.max_connections = _ranges.integer(self.max_connections, "max_connections", 1)
        self.idle_timeout = _ranges.seconds(self.idle_timeout, "idle_timeout", optional=True, positive=True)
        if isinstance(self.address, str):
            self.address = parse(self.address)
        if not isinstance(self.address, InetAddress | UnixAddress):
            raise UsageError(f"{self.address}: a server needs a socket address")

    @property
    def bound_address(self) -> SocketAddress:
        """The real address once started (port 0 resolved)."""
        if self._listener is not None:
            return self._listener.address
        if self._socket is not None and self._socket.local_address is not None:
            return self._socket.local_address
        raise UsageError("the server is not started")

    async def start(self) -> None:
        """Bind (and listen): after this, clients can connect."""
        self._stopping = asyncio.Event()
        self._cut_now = asyncio.Event()
        assert isinstance(self.address, InetAddress | UnixAddress)
        if self.address.is_stream:
            self._listener = await listen(self.address, mode=self.mode)
        else:
            self._socket = await bind_datagram(self.address, mode=self.mode)
            self.sessions = SessionTable(
                idle_timeout=self.idle_timeout or DEFAULT_IDLE_TIMEOUT,
                max_sessions=self.max_connections,
                on_end=self._session_ended,
            )

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
        assert self._stopping is not None
        backoff = Backoff(EXHAUSTION_PAUSE, EXHAUSTION_PAUSE_MAX)
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
                self.stats.exhaustion_pauses += 1
                pause = backoff.next()
                log.warning("accept on %s: %s; pausing %.2f s", listener.address, _message(exc), pause)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause)
                continue
            backoff.reset()
            if self.stats.accepted % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # a burst of clients must not starve those being served
            if len(self._tasks) >= self.max_connections:
                self.stats.refused += 1
                reason = _at_limit(self.max_connections)
                self._refusals.refused(_shown(conn.peer_address), reason, time.monotonic())
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
            await cast(StreamHandler, self.handler)(conn)
            self.stats.completed += 1
        except TimedOut:
            self.stats.idle_closed += 1
            log.info("closed %s: idle for %g s", _shown(conn.peer_address), self.idle_timeout)
        except EnchufeError as exc:
            self.stats.failed += 1
            log.info("connection from %s ended: %s", _shown(conn.peer_address), _message(exc))
        except asyncio.CancelledError:
            if _cancelled():
                self.stats.cut += 1
                raise
            # The handler awaited something that was cancelled: its failure, not a cut.
            self.stats.failed += 1
            log.exception("handler failed on the connection from %s", _shown(conn.peer_address))
        except Exception:
            self.stats.failed += 1
            log.exception("handler failed on the connection from %s", _shown(conn.peer_address))
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
        if reason == "idle":
            self.stats.idle_closed += 1
        if self.on_session_end is not None:
            try:
                self.on_session_end(session)
            except Exception:  # the caller's code, about one peer: never the server's end
                self.stats.failed += 1
                log.exception("on_session_end failed for %s", _shown(session.peer))

    async def _datagram_loop(self, sock: DatagramSocket) -> None:
        assert self.sessions is not None
        sessions = self.sessions
        while True:
            deadline = sessions.next_expiry()
            try:
                sock.set_timeout(None if deadline is None else max(0.0, deadline - time.monotonic()))
                data, sender = await sock.recvfrom()
            except ClosedError:
                return
            except TimedOut:
                sessions.expire(time.monotonic())
                continue
            except DatagramTruncated as exc:
                self.stats.truncated += 1
                log.warning("%s", _message(exc))
                continue
            except NetworkError as exc:  # e.g. an ICMP error queued on the socket
                log.info("on %s: %s", sock.local_address, _message(exc))
                continue
            sock.set_timeout(None)  # the deadline was for waiting, not for the handler's replies
            self.stats.datagrams += 1
            if self.stats.datagrams % YIELD_EVERY == 0:
                # A receive that finds a datagram queued does not wait, and neither does a send
                # with room: a flood would otherwise hold the loop for as long as it lasts.
                await asyncio.sleep(0)
            now = time.monotonic()
            sessions.expire(now)
            session, new = (None, False) if sender is None else sessions.seen(sender, now, _new_state)
            datagram = Datagram(data, sender, sock, session, new, sessions, self.stats)
            try:
                result = cast(DatagramHandler, self.handler)(datagram)
                if inspect.isawaitable(result):
                    await result
            except ClosedError as exc:
                if sock.closed:
                    return  # shutdown() closed our socket under the handler
                # Something of the handler's own was closed: that datagram's failure only.
                log.info("datagram from %s: %s", _shown(sender), _message(exc))
            except EnchufeError as exc:
                log.info("datagram from %s: %s", _shown(sender), _message(exc))
            except asyncio.CancelledError:
                if _cancelled():
                    raise
                # The handler awaited something that was cancelled: its failure, not ours.
                self.stats.failed += 1
                log.exception("handler failed on a datagram from %s", _shown(sender))
            except Exception:
                self.stats.failed += 1
                log.exception("handler failed on a datagram from %s", _shown(sender))


def _cancelled() -> bool:
    """This task was asked to stop (a CancelledError that came out of a handler without that is
    the handler's own: it awaited something another task cancelled)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def _shown(value: object) -> str:
    """A peer's address, or an error that names one, safe on a log line (peers choose their
    unix names: a newline there must not start a line of their own)."""
    return printable(str(value))


def _at_limit(limit: int) -> str:
    return f"the server is at its limit of {limit} open connection{'s' if limit != 1 else ''}"


def _message(exc: BaseException) -> str:
    """An error's message on one line (it may name a peer; names it shows escaped stay so)."""
    return one_line(str(exc))


def _new_state(_peer: object) -> dict[str, Any]:
    return {}


async def serve(
    address: Address | str,
    handler: Handler,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    idle_timeout: float | None = None,
    ready: Callable[[SocketAddress], None] | None = None,
) -> ServeStats:
    """Serve ``handler`` on ``address`` until cancelled; ``ready(address)`` once bound.

    Cancelling the task running ``serve`` shuts the server down without a drain period.
    """
    server = Server(address, handler, max_connections=max_connections, idle_timeout=idle_timeout)
    await server.start()
    if ready is not None:
        ready(server.bound_address)
    try:
        return await server.serve_forever()
    finally:
        server.shutdown(0)
        await server._drain()

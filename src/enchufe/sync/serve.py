"""``serve(address, handler)`` with threads: a loop plus a function, for all six kinds.

Stream kinds: one thread per connection (at most ``max_connections``) runs ``handler(conn)``;
the connection is closed when it returns.  Datagram kinds: ``handler(datagram)`` runs in the
serving thread for each datagram, with the sender's per-peer session and a way to reply.

::

    def echo(conn: enchufe.Connection) -> None:
        while data := conn.recv():
            conn.send_all(data)

    with Server("tcp://127.0.0.1:0", echo) as server:   # bound on entry
        threading.Thread(target=server.serve_forever).start()
        ...
        server.shutdown()                                # from any thread or a signal handler
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, cast

from .. import _ranges, _wakeup
from .._backoff import Backoff
from .._notices import notices
from .._proxyaccept import take_header_blocking as take_proxy_header
from .._proxypolicy import DEFAULT_PROXY_TIMEOUT, ProxyPolicy, ProxyRefused, proxy_policy
from .._serving import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    AcceptPolicy,
    DatagramBase,
    ServeStats,
    bound_address,
    datagram_failed,
    first_try,
    handler_outcome,
    handshake_outcome,
    is_exhaustion,
    message,
    peer_sessions,
    proxy_refused,
    receive_failed,
    received,
    server_options,
    session_ended,
)
from .._streams import TLSReload, TLSServing
from ..address import Address, SocketAddress
from ..errors import ClosedError, ConnectionReset, NetworkError
from ..sessions import Session, SessionTable
from . import bind_datagram, listen
from .datagram import DatagramSocket
from .stream import Connection, Listener

__all__ = [
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

#: After cutting the remaining connections, how long to wait for their handler threads to
#: return (they are woken by the shutdown of their sockets; one stuck elsewhere is left behind).
CUT_JOIN_TIMEOUT = 2.0


class Datagram(DatagramBase[DatagramSocket]):
    """One datagram handed to a datagram handler: payload, sender, the sender's session."""

    def reply(self, data: bytes) -> bool:
        """Send ``data`` back to the sender; see :func:`deliver`.  ``False`` if it was dropped
        (counted in the server's ``stats.dropped``), and for an unbound unix sender, which
        cannot be answered.  Never blocks on a peer that does not read."""
        to = self.reply_address
        if to is None:
            return False
        return self._counted(deliver(self.socket, data, to))


def deliver(sock: DatagramSocket, data: bytes, peer: SocketAddress) -> bool:
    """Send one datagram from a server's socket to ``peer`` without letting ``peer`` stall it:
    the policy of :func:`enchufe.aio.serve.deliver`, blocking.

    UDP: waits while our own send buffer is full (a receiver that does not read loses
    datagrams in its own queue).  Unix: a receiver whose queue is full gets up to
    :data:`~enchufe._serving.DELIVER_PATIENCE` to make room, then the datagram is dropped and
    ``False`` returned; until it takes a datagram again, the next ones for it are dropped at once.
    Each peer gets that patience once per :data:`~enchufe._serving.PATIENCE_WINDOW`.
    """
    if sock.socket.family != socket.AF_UNIX:
        sock.sendto(data, peer)
        return True
    patience = first_try(sock, data, peer)
    if patience is None or patience <= 0:
        return patience is None  # sent at once; or it made us wait in vain, or enough lately
    with sock.stalled_peers.waiting(peer) as wait:
        wait.sent = _retry_for(sock, data, peer, wait.started + patience)
    return wait.sent


def _retry_for(sock: DatagramSocket, data: bytes, peer: SocketAddress, deadline: float) -> bool:
    """Try again until ``deadline``: no readiness event announces room in a unix receiver's
    queue, so poll, backing off.  Whether the datagram went."""
    backoff = Backoff()
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(backoff.next(), left))
        if sock.sendto_nowait(data, peer):
            return True
    return False


class StreamHandler(Protocol):
    """What serves one stream connection: ``handler(conn)``; the connection closes on return."""

    def __call__(self, conn: Connection, /) -> object: ...


class DatagramHandler(Protocol):
    """What handles one datagram: ``handler(datagram)``, in arrival order."""

    def __call__(self, datagram: Datagram, /) -> object: ...


#: A stream handler for stream addresses, a datagram handler for datagram ones.
Handler = StreamHandler | DatagramHandler


class Server(TLSServing):
    """A threaded server on ``address``; same options and guarantees as :class:`enchufe.aio.serve.Server`.

    :meth:`shutdown` may be called from any thread or a signal handler: it stops accepting at
    once, gives handlers ``drain_timeout`` seconds to finish, then shuts their sockets down
    (which wakes a handler blocked in ``recv``) and counts them in ``stats.cut``.
    ``on_handshake_failure(conn, error)`` is called in the connection's thread, and so is the
    reading of an ``accept_proxy`` header (see :func:`take_proxy_header`).
    """

    def __init__(
        self,
        address: Address | str,
        handler: Handler,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float | None = None,
        mode: int | None = None,
        on_session_end: Callable[[Session[Any, dict[str, Any]]], None] | None = None,
        on_handshake_failure: Callable[[Connection, NetworkError], object] | None = None,
        accept_proxy: bool = False,
        trusted_proxies: Iterable[str] | None = None,
        proxy_timeout: float = DEFAULT_PROXY_TIMEOUT,
    ) -> None:
        target, max_connections, idle_timeout = server_options(address, max_connections, idle_timeout)
        self.proxy: ProxyPolicy | None = proxy_policy(target, accept_proxy, trusted_proxies, proxy_timeout)
        self.address = target
        self.handler = handler
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.mode = mode
        self.on_session_end = on_session_end
        self.on_handshake_failure = on_handshake_failure
        self.stats = ServeStats()
        self.sessions: SessionTable[Any, dict[str, Any]] | None = None
        self._listener: Listener | None = None
        self._socket: DatagramSocket | None = None
        self._stopping = threading.Event()
        self._drain_timeout = DEFAULT_DRAIN_TIMEOUT
        # Reentrant: shutdown() may run in a signal handler, on top of code holding the lock.
        self._lock = threading.RLock()
        #: Notified when a handler finishes and when shutdown() is called: the drain waits on it.
        self._changed = threading.Condition(self._lock)
        self._cut_now = False
        self._cut: set[Connection] = set()
        #: (read fd, write fd) of the pipe that wakes the datagram loop on shutdown.
        self._wake: tuple[int, int] | None = None
        self._active: dict[Connection, threading.Thread] = {}
        #: Those of _active whose handler has not finished: they count against max_connections
        #: and are what a drain cuts.  A finished one stays in _active until it is closed (the
        #: drain waits for that) but is neither: it was counted as it ended.
        self._handling: set[Connection] = set()
        self._policy = AcceptPolicy(self.stats)

    @property
    def bound_address(self) -> SocketAddress:
        return bound_address(self._listener, self._socket)

    def start(self) -> None:
        """Bind (and listen): after this, clients can connect."""
        if self.address.is_stream:
            self._listener = listen(self.address, mode=self.mode)
        else:
            self._socket = bind_datagram(self.address, mode=self.mode)
            self._wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self.sessions = peer_sessions(self.idle_timeout, self.max_connections, self._session_ended)

    def shutdown(self, drain_timeout: float = DEFAULT_DRAIN_TIMEOUT) -> None:
        """Stop accepting now; :meth:`serve_forever` returns once handlers are done or cut.

        A second call while draining cuts the remaining connections at once (a second Ctrl-C).
        """
        drain_timeout = _ranges.seconds(drain_timeout, "drain_timeout") or 0.0
        with self._changed:
            if self._stopping.is_set() or drain_timeout <= 0:
                self._cut_now = True
            self._drain_timeout = drain_timeout
            self._stopping.set()
            self._changed.notify_all()
            if self._wake is not None:
                # Wakes the datagram loop (a plain os.write: safe in a signal handler too).
                # Under the lock, so that the pipe cannot be closed meanwhile.
                with contextlib.suppress(OSError):
                    os.write(self._wake[1], b"\0")
        if self._listener is not None:
            self._listener.close()

    def serve_forever(self) -> ServeStats:
        """Serve until :meth:`shutdown`; returns the statistics."""
        if self._listener is None and self._socket is None:
            self.start()
        if self._listener is not None:
            self._accept_loop(self._listener)
            self._drain()
            notices.flush()
        elif self._socket is not None:
            try:
                self._datagram_loop(self._socket)
            finally:
                self._close_datagram()
        return self.stats

    def _close_datagram(self) -> None:
        with self._lock:
            if self._wake is not None:
                for fd in self._wake:
                    os.close(fd)
                self._wake = None
        if self._socket is not None:
            self._socket.close()

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown(0)
        self._close_datagram()
        self._drain()

    # -- streams

    def _accept_loop(self, listener: Listener) -> None:
        policy = self._policy
        while not self._stopping.is_set():
            try:
                conn = listener.accept()
            except ClosedError:
                return
            except ConnectionReset:
                continue
            except NetworkError as exc:
                if self._stopping.is_set():
                    return
                if not is_exhaustion(exc):
                    raise
                self._stopping.wait(policy.exhausted(exc))
                continue
            self._start(conn, policy)

    def _start(self, conn: Connection, policy: AcceptPolicy) -> None:
        """A thread for ``conn``'s handler, or ``conn`` turned away: the server is full, or no
        thread could start (then the loop pauses, as when descriptors run out)."""
        with self._lock:
            full = len(self._handling) >= self.max_connections
            error: str | None = None
            if not full:
                thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
                self._active[conn] = thread
                self._handling.add(conn)
                # Started under the lock: a drain running in another thread (__exit__)
                # must never find, and join, a thread that is not started yet.
                try:
                    thread.start()
                    self.stats.accepted += 1
                except RuntimeError as exc:  # no thread left (memory, RLIMIT_NPROC)
                    del self._active[conn]
                    self._handling.discard(conn)
                    error = message(exc)
        if error is not None:
            pause = policy.no_room(conn.peer_address, error)
            conn.close()
            self._stopping.wait(pause)
            return
        policy.accepted()
        if full:
            policy.at_limit(conn.peer_address, self.max_connections)
            conn.close()

    def _run(self, conn: Connection) -> None:
        with self._lock:
            self.stats.active += 1
        outcome = "failed"
        try:
            if self.idle_timeout is not None:
                conn.set_timeout(self.idle_timeout)
            try:
                if self.proxy is not None:
                    take_proxy_header(conn, self.proxy)  # before anything else, TLS included
                conn.handshake()  # TLS: here in the connection's thread, never in the accept loop
            except ProxyRefused as exc:  # unless a stop cut the read short: the cut is counted
                outcome = "refused" if conn in self._cut else proxy_refused(exc)
            except NetworkError as exc:
                outcome = handshake_outcome(exc, conn, self.on_handshake_failure)
            else:
                cast(StreamHandler, self.handler)(conn)
                outcome = "completed"
        except Exception as exc:
            outcome = handler_outcome(exc, conn.peer_address, self.idle_timeout)
        finally:
            # Counted before the close, so that whoever sees the connection end sees it
            # counted; out of the active set after, so that the drain waits for the close.
            with self._changed:
                self.stats.active -= 1
                self._handling.discard(conn)  # room for the next client from now on, as stats say
                if conn not in self._cut:  # a cut connection is counted once, as cut
                    setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
            conn.close()
            with self._changed:
                self._active.pop(conn, None)
                self._changed.notify_all()

    def _drain(self) -> None:
        deadline = time.monotonic() + self._drain_timeout
        with self._changed:
            while self._active and not self._cut_now:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                # In slices: a second signal whose handler ran between the check above and
                # this wait notified nobody; it is seen at the next slice, not at the deadline.
                self._changed.wait(min(left, _DRAIN_RECHECK))
            threads = list(self._active.values())
            remaining = list(self._handling)  # the others' handlers ended, and were counted
            self._cut.update(remaining)
            self.stats.cut += len(remaining)
        for conn in remaining:
            # shutdown() wakes a thread blocked in recv/send; the handler then sees EOF or an
            # error, returns, and its connection is closed by _run.
            with contextlib.suppress(OSError, ClosedError):
                conn.socket.shutdown(socket.SHUT_RDWR)
        end = time.monotonic() + CUT_JOIN_TIMEOUT
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))

    # -- datagrams

    def _session_ended(self, session: Session[Any, dict[str, Any]], reason: str) -> None:
        session_ended(self.stats, self.on_session_end, session, reason)

    def _datagram_loop(self, sock: DatagramSocket) -> None:
        assert self.sessions is not None and self._wake is not None
        sessions = self.sessions
        # One wait for both "a datagram came" and "shutdown() was called", bounded by the next
        # session expiry.  (Shutting the socket down would not do: a receive with a timeout
        # then wakes again and again until the timeout, burning CPU.)
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        poller.register(self._wake[0], select.POLLIN)
        # In the main thread, a signal too (see enchufe._wakeup): its handler calls shutdown().
        signalled = _wakeup.signal_fd()
        if signalled is not None:
            poller.register(signalled, select.POLLIN)
        while not self._stopping.is_set():
            ready = poller.poll(_milliseconds_until(sessions.next_expiry()))
            if self._stopping.is_set():
                return
            if signalled is not None and any(fd == signalled for fd, _ in ready):
                _wakeup.drain()  # the handler runs at the next bytecode; then look again
                continue
            if not ready:
                sessions.expire(time.monotonic())
                continue
            try:
                data, sender = sock.recvfrom()  # readable: this does not block
            except (ClosedError, NetworkError) as exc:
                if receive_failed(exc, self.stats, sock.local_address):
                    return
                continue
            datagram = received(Datagram, sock, data, sender, sessions, self.stats, self.proxy)
            if datagram is not None and self._handle(datagram):
                return

    def _handle(self, datagram: Datagram) -> bool:
        """Run the handler on ``datagram``; ``True`` if the loop ends (shutdown closed the socket)."""
        try:
            cast(DatagramHandler, self.handler)(datagram)
        except Exception as exc:
            closed = self._stopping.is_set() or datagram.socket.closed
            return datagram_failed(exc, datagram.sender, self.stats, closed=closed)
        return False


#: Longest a drain waits before it looks again for a cut asked by a second signal.
_DRAIN_RECHECK = 0.25


def _milliseconds_until(deadline: float | None) -> int | None:
    """How long poll() may wait for ``deadline`` (a monotonic time; ``None``: forever)."""
    return None if deadline is None else max(0, math.ceil((deadline - time.monotonic()) * 1000))


def serve(
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
    """Serve ``handler`` on ``address`` in this thread until SIGINT (Ctrl-C), SIGTERM or SIGHUP;
    SIGUSR1 has a TLS server read its certificate, key and CA files again (a plain one logs
    that there is nothing to reload).  ``accept_proxy``: see :class:`Server`.

    ``ready(address)`` is called once bound.  The first signal stops accepting and drains for
    the default drain timeout; a second one cuts what is left at once.  SIGHUP (the terminal
    went away) stops as cleanly as SIGTERM: socket files removed, statistics returned.  The
    signal handlers are installed only when called from the main thread (Python delivers
    signals there), and the previous ones are put back on return.
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
    server.start()
    previous: dict[int, Any] = {}
    try:
        if threading.current_thread() is threading.main_thread():
            for signum in _STOP_SIGNALS:
                previous[signum] = signal.signal(signum, lambda _signum, _frame: server.shutdown())
            # Plain servers too: SIGUSR1's default action would kill one that has nothing to reload.
            previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, lambda *_: server.reload_tls())
        if ready is not None:
            ready(server.bound_address)
        try:
            return server.serve_forever()
        except KeyboardInterrupt:  # SIGINT with a handler of the caller's that raises it
            server.shutdown()
            try:
                server._drain()
            except KeyboardInterrupt:  # a second Ctrl-C while draining: cut what is left now
                server.shutdown(0)
                server._drain()
            return server.stats
    finally:
        for stop_signal, handler_before in previous.items():
            signal.signal(stop_signal, handler_before)
        # Whatever ended the loop, nothing is left behind: listener and socket file, the
        # datagram socket, handler threads (none remain after a normal stop).
        server.shutdown(0)
        server._close_datagram()
        server._drain()


#: What stops serve(): Ctrl-C, a polite kill, the terminal going away.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

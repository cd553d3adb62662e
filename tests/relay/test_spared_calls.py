"""System calls the relay spares per connection, and what each spared call must not change.

Set once rather than per client: TCP_NODELAY (on the listener: Linux gives it to every accepted
socket), non-blocking mode (``socket()`` with SOCK_NONBLOCK for the target).  Skipped when it
would say nothing: the accept() that would only say EAGAIN while clients come one at a time, and
the client's registration while connecting when the target was reached within connect().
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

from enchufe.relay import Recorder, Relay, RelayConfig
from enchufe.relay.datagram_io import BATCH, PROBE_EVERY, PROBE_EVERY_MAX, ReadMode
from tests.conftest import Peer, connectable

from ._harness import wait_event
from .conftest import IO_TIMEOUT, abort, dial, echo, ping, relay_thread, wait_until

#: A connect timeout far longer than any wait below: a reset noticed only when it expires fails.
LONG = 60.0


@contextlib.contextmanager
def echo_server() -> Iterator[socket.socket]:
    """A TCP echo server on loopback, a thread per connection (bounded by the test's clients)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(IO_TIMEOUT)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the thread (Linux)
        thread.join(IO_TIMEOUT)
        listener.close()


def serve_one(conn: socket.socket) -> None:
    with conn:
        echo(conn)


def handler_of(relay: Any) -> Any:
    """The relay's stream handler, once its thread made it."""
    wait_until(lambda: relay.relay._handler is not None, "the relay's handler")
    return relay.relay._handler


def nodelay_and_blocking(session: Any) -> list[tuple[int, bool]]:
    return [
        (sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), sock.getblocking())
        for sock in (session.client_sock, session.target_sock)
    ]


def test_both_sockets_of_a_relayed_tcp_connection_have_nodelay_even_if_queued_before_the_loop() -> None:
    """The relay must add no Nagle delay on either side: an accepted socket gets TCP_NODELAY
    from the listener, or its own if it was queued before the listener had it (a client that
    connected between open() and run()); the target's socket its own.  All are non-blocking."""
    with echo_server() as server:
        target = f"tcp4://127.0.0.1:{server.getsockname()[1]}"
        relay = Relay(RelayConfig("tcp4://127.0.0.1:0", target), events=Recorder())
        address = connectable(relay.open())
        early = dial(address)  # its handshake is over: queued, before the loop runs
        peer = Peer(relay.run)
        try:
            with early, dial(address) as late:
                assert ping(early) and ping(late)
                handler: Any = relay._handler
                assert handler is not None
                wait_until(lambda: len(handler.sessions) == 2, "both sessions")
                seen = sorted(nodelay_and_blocking(session) for session in handler.sessions)
        finally:
            relay.stop(now=True)
            peer.result(IO_TIMEOUT)
    assert seen == [[(1, False), (1, False)]] * 2


def test_clients_one_at_a_time_take_one_accept_each_and_a_burst_still_gets_batches() -> None:
    """While each wake-up brings one client, the relay accepts one per wake-up (no accept() that
    says EAGAIN); a burst of simultaneous clients is served whole all the same, and switches the
    listener back to batches."""
    with echo_server() as server:
        target = f"tcp4://127.0.0.1:{server.getsockname()[1]}"
        with relay_thread(RelayConfig("tcp4://127.0.0.1:0", target)) as relay:
            mode = handler_of(relay)._accept_mode
            for _ in range(3):
                with dial(relay.address) as client:
                    assert ping(client)
            assert not mode.batch  # one client per wake-up: one accept each
            clients = [dial(relay.address) for _ in range(40)]
            try:
                assert all(ping(client) for client in clients)
            finally:
                for client in clients:
                    client.close()
            wait_until(lambda: relay.relay.stats.snapshot().total == 43, "43 clients accepted")


def test_a_client_that_resets_while_its_target_is_still_connecting_is_noticed_at_once() -> None:
    """The client is watched (errors only) while connect() is still under way, even though a
    target reached within connect() spares that registration: its reset ends the session long
    before the connect timeout."""
    with unanswering_target() as port:
        config = RelayConfig("tcp4://127.0.0.1:0", f"tcp4://127.0.0.1:{port}", connect_timeout=LONG)
        with relay_thread(config) as relay:
            client = dial(relay.address)
            wait_until(lambda: len(handler_of(relay).sessions) == 1, "the session")
            abort(client)
            (close,) = wait_event(relay, "close")
    assert close["reason"] == "client-reset"


@contextlib.contextmanager
def unanswering_target() -> Iterator[int]:
    """The port of a loopback listener that never completes a connect: its accept queue (backlog
    0) holds one, and further SYNs are dropped, so a connect to it stays in progress."""
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        queued = [socket.socket() for _ in range(2)]
        try:
            for sock in queued:
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sock.connect(("127.0.0.1", port))
            yield port
        finally:
            for sock in queued:
                sock.close()


def test_single_reading_tries_a_batch_less_and_less_often_and_a_burst_brings_batches_back() -> None:
    """ReadMode (a datagram socket's reads, and the stream listener's accepts): while every try
    of a batch finds one datagram, tries come twice as far apart each time, up to
    PROBE_EVERY_MAX events (each try that finds one costs a read that says EAGAIN); the first
    try that finds several goes back to batches, and to PROBE_EVERY."""
    mode = ReadMode()
    assert mode.limit() == BATCH
    mode.got(1, BATCH)  # one datagram per event: single reading

    def events_until_a_try() -> int:
        for count in range(1, PROBE_EVERY_MAX + 2):
            limit = mode.limit()
            if limit > 1:
                return count
            mode.got(1, 1)
        raise AssertionError("no batch was tried")

    gaps = []
    for _ in range(6):
        gaps.append(events_until_a_try())
        mode.got(1, BATCH)
    doubling = [PROBE_EVERY, 2 * PROBE_EVERY, 4 * PROBE_EVERY, 8 * PROBE_EVERY]
    assert gaps == [*doubling, PROBE_EVERY_MAX, PROBE_EVERY_MAX]
    assert not mode.batch
    events_until_a_try()
    mode.got(5, BATCH)  # a burst
    assert mode.batch and mode.limit() == BATCH
    mode.got(1, BATCH)
    assert events_until_a_try() == PROBE_EVERY


def test_a_target_reached_within_connect_costs_no_connect_timer_and_a_slow_one_still_times_out() -> None:
    """A loopback target answers within connect(): the connect phase ends before it could wait,
    and no timer is made for it (made and cancelled at once, it was five Python calls per
    client).  A target that does not answer still gets its timer, and the client is told."""
    with echo_server() as server:
        target = f"tcp4://127.0.0.1:{server.getsockname()[1]}"
        with relay_thread(RelayConfig("tcp4://127.0.0.1:0", target)) as relay:
            loop = handler_of(relay).loop
            made: list[str] = []
            real = loop.call_later

            def recording(delay: float, callback: Any, on_error: Any = None) -> Any:
                made.append(getattr(callback, "__name__", repr(callback)))
                return real(delay, callback, on_error)

            loop.call_later = recording  # the loop looks it up at every call
            for _ in range(3):
                with dial(relay.address) as client:
                    assert ping(client)
            wait_until(lambda: relay.relay.stats.snapshot().total == 3, "3 clients accepted")
    assert "_connect_timed_out" not in made
    with unanswering_target() as port:
        config = RelayConfig("tcp4://127.0.0.1:0", f"tcp4://127.0.0.1:{port}", connect_timeout=0.3)
        with relay_thread(config) as relay, dial(relay.address):
            (failed,) = wait_event(relay, "error")
    assert "no answer within 0.3 s" in failed["error"]

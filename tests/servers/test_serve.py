"""serve(): limits, idle timeouts, graceful shutdown and handler failures, sync and async alike.

Every test runs against the threaded server (``sync``) and the asyncio one on both loops; the
handlers are the same functions written once per flavour.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import enchufe
import enchufe.aio as aio
from enchufe import ClosedError, ConnectionRefused, ConnectionReset, UnixAddress, UsageError, parse
from enchufe.aio.serve import Server as AsyncServer
from enchufe.sync.serve import Server as SyncServer
from tests.conftest import DATAGRAM_KINDS, Peer, abstract_name, kind_params
from tests.servers.conftest import IO_TIMEOUT, LogRecords, Running, wait_until

pytestmark = pytest.mark.timeout(90)


def sync_echo(conn: enchufe.Connection) -> None:
    while data := conn.recv():
        conn.send_all(data)


async def async_echo(conn: aio.Connection) -> None:
    while data := await conn.recv():
        await conn.send_all(data)


def echo_for(flavour: str) -> Callable[..., Any]:
    return sync_echo if flavour == "sync" else async_echo


def client(address: str) -> enchufe.Connection:
    conn = enchufe.connect(address, timeout=IO_TIMEOUT)
    conn.set_timeout(IO_TIMEOUT)
    return conn


def round_trip(conn: enchufe.Connection, data: bytes = b"ping") -> None:
    conn.send_all(data)
    assert conn.recv_exactly(len(data)) == data


def closed_by_server(conn: enchufe.Connection) -> bool:
    """The server closed this connection (EOF, or a reset if it had unread data)."""
    try:
        return conn.recv() == b""
    except ConnectionReset:
        return True


# --- options --------------------------------------------------------------------------------------


def test_bad_options() -> None:
    with pytest.raises(UsageError):
        SyncServer("tcp://127.0.0.1:0", sync_echo, max_connections=0)
    with pytest.raises(UsageError):
        SyncServer("stdio:", sync_echo)
    with pytest.raises(UsageError):
        AsyncServer("tcp://127.0.0.1:0", async_echo, max_connections=0)
    with pytest.raises(UsageError):
        AsyncServer("stdio:", async_echo)


@pytest.mark.parametrize("kind", kind_params(("tcp4", "unix")))
def test_max_connections(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str, kind: str
) -> None:
    running = serve(flavour, make_address(kind), echo_for(flavour), max_connections=2)
    first, second = client(running.address), client(running.address)
    round_trip(first)
    round_trip(second)
    # A third client is accepted and closed at once, and counted.
    with client(running.address) as extra:
        assert closed_by_server(extra)
    assert running.stats.refused == 1
    round_trip(first)  # the two served ones are unaffected
    # When one leaves, a new client is served again.
    first.close()
    wait_until(lambda: running.stats.active == 1, what="the server noticing a client left")
    with client(running.address) as third:
        round_trip(third)
    second.close()
    assert running.stats.accepted == 3


@pytest.mark.parametrize("kind", kind_params(("tcp6", "unix-abstract")))
def test_idle_timeout_closes_idle_clients_only(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str, kind: str
) -> None:
    running = serve(flavour, make_address(kind), echo_for(flavour), idle_timeout=0.4)
    idle, active = client(running.address), client(running.address)
    round_trip(idle)
    started = time.monotonic()
    # The active client talks every 0.1 s, for well over the idle timeout.
    while time.monotonic() - started < 1.2:
        round_trip(active, b"still here")
        time.sleep(0.1)
    assert closed_by_server(idle)
    round_trip(active)
    assert running.stats.idle_closed == 1
    idle.close()
    active.close()


# --- graceful shutdown ----------------------------------------------------------------------------


def streaming_client(address: str, size: int, started: threading.Barrier) -> str:
    """Send ``size`` random bytes while reading the echo; sha256 of what came back."""
    payload = os.urandom(size)
    with client(address) as conn:
        round_trip(conn, b"hello")
        started.wait(IO_TIMEOUT)

        def send() -> None:
            for i in range(0, size, 16384):
                conn.send_all(payload[i : i + 16384])
                time.sleep(0.002)  # a steady stream, still going when the shutdown comes
            conn.shutdown_write()

        sender = Peer(send)
        digest = hashlib.sha256()
        while data := conn.recv():
            digest.update(data)
        sender.result(IO_TIMEOUT)
    assert digest.hexdigest() == hashlib.sha256(payload).hexdigest(), "bytes lost in the shutdown"
    return digest.hexdigest()


@pytest.mark.parametrize("kind", kind_params(("tcp4", "unix")))
def test_graceful_shutdown_loses_nothing_in_flight(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str, kind: str
) -> None:
    running = serve(flavour, make_address(kind), echo_for(flavour))
    address = running.address
    count = 8
    started = threading.Barrier(count + 1)
    clients = [Peer(streaming_client, address, 1024 * 1024, started) for _ in range(count)]
    started.wait(IO_TIMEOUT)  # every client is connected and streaming
    running.shutdown(drain_timeout=IO_TIMEOUT)
    for peer in clients:
        peer.result(IO_TIMEOUT)
    stats = running.wait()
    assert stats.cut == 0
    assert stats.accepted == stats.completed == count
    with pytest.raises(ConnectionRefused):  # no longer listening
        enchufe.connect(address)
    if kind == "unix":
        assert not os.path.exists(address.removeprefix("unix://"))


def test_short_drain_cuts(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str
) -> None:
    running = serve(flavour, make_address("tcp4"), echo_for(flavour))
    stalled = [client(running.address) for _ in range(3)]
    for conn in stalled:
        round_trip(conn)  # served, and never sending EOF
    running.shutdown(drain_timeout=0.2)
    stats = running.wait()
    assert stats.cut == 3
    assert stats.active == 0
    for conn in stalled:
        assert closed_by_server(conn)
        conn.close()


def test_second_shutdown_cuts_at_once(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str
) -> None:
    running = serve(flavour, make_address("unix"), echo_for(flavour))
    stalled = client(running.address)
    round_trip(stalled)
    running.shutdown(drain_timeout=60)
    time.sleep(0.2)
    assert running.thread.is_alive()  # draining: the client may still finish
    round_trip(stalled)
    running.shutdown(drain_timeout=60)  # a second Ctrl-C
    stats = running.wait()  # fails after IO_TIMEOUT, well before the 60 s drain
    assert stats.cut == 1
    assert closed_by_server(stalled)
    stalled.close()


@pytest.mark.parametrize("kind", kind_params(DATAGRAM_KINDS))
def test_datagram_shutdown_wakes_the_loop(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str, kind: str
) -> None:
    """A datagram server waiting for a datagram (with peers, so with a session deadline) stops
    at once on shutdown, without spinning meanwhile."""

    def sync_reply(datagram: Any) -> None:
        datagram.reply(datagram.data)

    async def async_reply(datagram: Any) -> None:
        await datagram.reply(datagram.data)

    running = serve(flavour, make_address(kind), sync_reply if flavour == "sync" else async_reply)
    with enchufe.connect_datagram(running.address) as sock:
        sock.set_timeout(IO_TIMEOUT)
        sock.send(b"hi")
        assert sock.recv() == b"hi"
    before = os.times()
    time.sleep(0.2)
    running.shutdown(IO_TIMEOUT)
    stats = running.wait()  # fails after IO_TIMEOUT
    after = os.times()
    assert (after.user + after.system) - (before.user + before.system) < 0.5, "the server spun"
    assert stats.datagrams == 1


def test_datagram_sessions_idle_and_max_peers(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str
) -> None:
    ended: list[Any] = []

    def sync_reply(datagram: Any) -> None:
        datagram.reply(b"%d" % datagram.session.datagrams)

    async def async_reply(datagram: Any) -> None:
        await datagram.reply(b"%d" % datagram.session.datagrams)

    running = serve(
        flavour,
        make_address("udp4"),
        sync_reply if flavour == "sync" else async_reply,
        max_connections=2,
        idle_timeout=0.3,
        on_session_end=ended.append,
    )
    socks = [enchufe.connect_datagram(running.address) for _ in range(3)]
    try:
        for sock in socks:
            sock.set_timeout(IO_TIMEOUT)
        socks[0].send(b"a")
        assert socks[0].recv() == b"1"
        socks[0].send(b"a")
        assert socks[0].recv() == b"2"  # the same session
        socks[1].send(b"b")
        assert socks[1].recv() == b"1"
        socks[2].send(b"c")  # a third peer: the least recently active (socks[0]) is forgotten
        assert socks[2].recv() == b"1"
        sessions = running.server.sessions
        assert sessions.stats.evicted == 1
        socks[0].send(b"a")
        assert socks[0].recv() == b"1"  # a new session, which evicts socks[1]'s
        assert sessions.stats.evicted == 2
        # Silence: every session idles out (the server wakes up for it, no datagram needed).
        wait_until(lambda: len(sessions) == 0, timeout=5, what="the sessions idling out")
        assert running.stats.idle_closed == 2
        assert len(ended) == 4
    finally:
        for sock in socks:
            sock.close()


# --- handler failures -----------------------------------------------------------------------------


def test_handler_errors_are_logged_and_serving_goes_on(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str, serve_log: LogRecords
) -> None:
    def sync_handler(conn: enchufe.Connection) -> None:
        data = conn.recv_until(b"\n")
        if data == b"boom\n":
            raise RuntimeError("the handler broke")
        conn.send_all(data)

    async def async_handler(conn: aio.Connection) -> None:
        data = await conn.recv_until(b"\n")
        if data == b"boom\n":
            raise RuntimeError("the handler broke")
        await conn.send_all(data)

    running = serve(flavour, make_address("unix"), sync_handler if flavour == "sync" else async_handler)
    for _ in range(3):
        with client(running.address) as conn:
            conn.send_all(b"boom\n")
            assert closed_by_server(conn)
        with client(running.address) as conn:
            round_trip(conn, b"fine\n")
    wait_until(
        lambda: (running.stats.failed, running.stats.completed) == (3, 3), what="every connection counted"
    )
    failures = [r for r in serve_log.records if r.levelno >= logging.ERROR]
    assert len(failures) == 3
    assert all("handler failed" in r.getMessage() for r in failures)
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in failures)


def test_datagram_handler_errors_are_logged(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str, serve_log: LogRecords
) -> None:
    def sync_handler(datagram: Any) -> None:
        if datagram.data == b"boom":
            raise ValueError("bad datagram")
        datagram.reply(datagram.data)

    async def async_handler(datagram: Any) -> None:
        if datagram.data == b"boom":
            raise ValueError("bad datagram")
        await datagram.reply(datagram.data)

    running = serve(flavour, make_address("unixgram"), sync_handler if flavour == "sync" else async_handler)
    with enchufe.connect_datagram(running.address) as sock:
        sock.set_timeout(IO_TIMEOUT)
        sock.send(b"boom")
        sock.send(b"fine")
        assert sock.recv() == b"fine"
    assert running.stats.failed == 1
    serve_log.wait_for("handler failed on a datagram")


def test_a_datagram_handler_that_raises_closed_or_cancelled_ends_only_that_datagram(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str
) -> None:
    """ClosedError from something of the handler's own (not the server's socket) and, for
    asyncio, a CancelledError from a future the handler awaited are that datagram's failure:
    the server goes on serving."""

    def sync_handler(datagram: Any) -> None:
        if datagram.data == b"closed":
            raise ClosedError("the handler's own socket is closed")
        datagram.reply(datagram.data)

    async def async_handler(datagram: Any) -> None:
        if datagram.data == b"closed":
            raise ClosedError("the handler's own socket is closed")
        if datagram.data == b"cancelled":
            cancelled = asyncio.get_running_loop().create_future()
            cancelled.cancel()  # as another task might cancel what this one waits for
            await cancelled
        await datagram.reply(datagram.data)

    running = serve(flavour, make_address("udp4"), sync_handler if flavour == "sync" else async_handler)
    with enchufe.connect_datagram(running.address) as sock:
        sock.set_timeout(IO_TIMEOUT)
        for bad in (b"closed", b"cancelled") if flavour != "sync" else (b"closed",):
            sock.send(bad)
            sock.send(b"still there?")
            assert sock.recv() == b"still there?"
    assert running.thread.is_alive()


def test_a_stream_handler_cancelled_from_within_is_a_failure_not_a_cut(
    serve: Callable[..., Running], make_address: Callable[[str], str]
) -> None:
    async def handler(conn: aio.Connection) -> None:
        cancelled = asyncio.get_running_loop().create_future()
        cancelled.cancel()
        await cancelled

    running = serve("asyncio", make_address("tcp4"), handler)
    with client(running.address) as conn:
        assert closed_by_server(conn)
    wait_until(lambda: running.stats.failed == 1, what="the failure counted")
    assert running.stats.cut == 0


def test_async_server_context_manager(make_address: Callable[[str], str]) -> None:
    async def main() -> None:
        async with AsyncServer(make_address("tcp4"), async_echo) as server:
            task = asyncio.create_task(server.serve_forever())
            async with await aio.connect(str(server.bound_address)) as conn:
                await conn.send_all(b"x")
                assert await conn.recv() == b"x"
            server.shutdown()
            stats = await task
        assert stats.accepted == 1
        with pytest.raises(UsageError):
            _ = AsyncServer(make_address("tcp4"), async_echo).bound_address

    aio.run(main())


def test_sync_server_context_manager(make_address: Callable[[str], str]) -> None:
    with SyncServer(make_address("unix-abstract"), sync_echo) as server:
        serving = Peer(server.serve_forever)
        with client(str(server.bound_address)) as conn:
            round_trip(conn)
        server.shutdown()
        stats = serving.result()
    assert stats.accepted == stats.completed == 1


# --- replies to a unix peer that does not read ----------------------------------------------------


def sync_datagram_echo(datagram: Any) -> None:
    datagram.reply(datagram.data)


async def async_datagram_echo(datagram: Any) -> None:
    await datagram.reply(datagram.data)


def test_reply_to_a_unix_peer_that_does_not_read_is_dropped_and_counted(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str
) -> None:
    """A unix peer whose queue is full makes reply() drop and count, never block: sync and
    async servers alike (the sync one used to wait forever in sendto)."""
    handler = sync_datagram_echo if flavour == "sync" else async_datagram_echo
    running = serve(flavour, make_address("unixgram"), handler)
    with (
        enchufe.bind_datagram(make_address("unixgram")) as silent,
        enchufe.bind_datagram(make_address("unixgram")) as active,
    ):
        silent.set_timeout(0.5)
        sent = 0
        for i in range(100):  # more than its queue holds (net.unix.max_dgram_qlen)
            try:
                silent.sendto(b"%d" % i, running.address)
                sent += 1
            except enchufe.TimedOut:  # the server's own queue is full: it is busy, or blocked
                break
        active.set_timeout(5.0)
        for i in range(3):
            active.sendto(b"still served %d" % i, running.address)
            assert active.recvfrom()[0] == b"still served %d" % i
        wait_until(lambda: running.stats.dropped > 0, what="replies to the silent peer counted as dropped")
        assert running.stats.dropped <= sent


# --- the library's serve() and signals -------------------------------------------------------------

SERVE_SCRIPT = """
import sys
from enchufe.sync.serve import serve

def echo(conn):
    while data := conn.recv():
        conn.send_all(data)

stats = serve(sys.argv[1], echo, ready=lambda address: print("ready", address, flush=True))
print("stopped", stats.accepted, stats.cut, flush=True)
"""


@pytest.mark.parametrize("signame", ["SIGHUP", "SIGTERM", "SIGINT"])
def test_sync_serve_stops_cleanly_on_a_signal(signame: str, make_address: Callable[[str], str]) -> None:
    """SIGHUP (the terminal went away) stops serve() as cleanly as SIGTERM and Ctrl-C: the
    statistics are returned and the socket file is removed."""
    import signal
    import subprocess
    import sys

    address = make_address("unix")
    path = address.removeprefix("unix://")
    child = subprocess.Popen([sys.executable, "-c", SERVE_SCRIPT, address], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().startswith("ready")
        with client(address) as conn:
            round_trip(conn)
        child.send_signal(getattr(signal, signame))
        out, _ = child.communicate(timeout=IO_TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(IO_TIMEOUT)
    assert child.returncode == 0, f"{signame}: exit status {child.returncode}"
    assert out == "stopped 1 0\n"
    assert not os.path.lexists(path)


# --- handler types ---------------------------------------------------------------------------------

HANDLER_TYPES = """
import enchufe
import enchufe.aio as aio
from enchufe.aio.serve import Datagram as AsyncDatagram
from enchufe.aio.serve import Server as AsyncServer
from enchufe.sync.serve import Datagram, Server, serve


def sync_stream(conn: enchufe.Connection) -> None: ...
async def async_stream(conn: aio.Connection) -> None: ...
def sync_datagram(datagram: Datagram) -> None: ...
async def async_datagram(datagram: AsyncDatagram) -> None: ...
def plain_datagram(datagram: AsyncDatagram) -> None: ...


Server("tcp://127.0.0.1:0", sync_stream)
Server("udp://127.0.0.1:0", sync_datagram)
AsyncServer("tcp://127.0.0.1:0", async_stream)
AsyncServer("udp://127.0.0.1:0", async_datagram)
AsyncServer("udp://127.0.0.1:0", plain_datagram)
AsyncServer("tcp://127.0.0.1:0", sync_stream)  # wrong: a blocking handler for asyncio
Server("tcp://127.0.0.1:0", async_stream)  # wrong: a coroutine function for threads
serve("tcp://127.0.0.1:0", lambda: None)  # wrong: a handler takes one argument
"""


def test_handlers_are_typed(tmp_path: Any, mypy_cache_dir: str) -> None:
    """mypy --strict accepts the right handler for each server and refuses the wrong ones."""
    from mypy import api

    source = tmp_path / "handlers.py"
    source.write_text(HANDLER_TYPES)
    stdout, _stderr, _status = api.run(
        ["--strict", "--no-error-summary", "--cache-dir", mypy_cache_dir, str(source)]
    )
    lines = HANDLER_TYPES.splitlines()
    wrong = {n for n, line in enumerate(lines, 1) if "# wrong" in line}
    flagged = {int(line.split(":")[1]) for line in stdout.splitlines() if ": error:" in line}
    assert flagged == wrong, stdout


def test_peer_names_are_escaped_on_log_lines(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str, serve_log: LogRecords
) -> None:
    """A unix peer chooses its name: a newline in it never starts a log line of its own, on a
    failed handler, an idle close or a failed datagram handler."""

    def sync_handler(conn: enchufe.Connection) -> None:
        if conn.recv() == b"boom":
            raise RuntimeError("the handler broke")

    async def async_handler(conn: aio.Connection) -> None:
        if await conn.recv() == b"boom":
            raise RuntimeError("the handler broke")

    def datagram_handler(datagram: Any) -> None:
        raise RuntimeError("the handler broke")

    evil = "evil\nenchufe: FORGED"
    handler = sync_handler if flavour == "sync" else async_handler
    stream = serve(flavour, "unix:@" + abstract_name(), handler)
    idle = serve(flavour, "unix:@" + abstract_name(), handler, idle_timeout=0.2)
    datagrams = serve(flavour, "unixgram:@" + abstract_name(), datagram_handler)
    for n, (running, kind) in enumerate(((stream, socket.SOCK_STREAM), (idle, socket.SOCK_STREAM))):
        with socket.socket(socket.AF_UNIX, kind) as sock:
            sock.bind(f"\0{evil}{n}".encode())
            sock.settimeout(IO_TIMEOUT)
            sock.connect("\0" + running.address.removeprefix("unix:@"))
            if running is stream:
                sock.send(b"boom")
            assert sock.recv(10) == b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(f"\0{evil}2".encode())
        sock.sendto(b"boom", "\0" + datagrams.address.removeprefix("unixgram:@"))
        serve_log.wait_for("handler failed on a datagram")
    serve_log.wait_for("idle for")
    serve_log.wait_for("handler failed on the connection")
    messages = serve_log.messages()
    assert not [m for m in messages if "\n" in m]
    assert len([m for m in messages if "evil\\nenchufe: FORGED" in m]) >= 3


def test_an_on_session_end_that_raises_does_not_end_the_server(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str, serve_log: LogRecords
) -> None:
    def on_end(session: Any) -> None:
        raise RuntimeError("the callback broke")

    def sync_handler(datagram: Any) -> None:
        datagram.reply(datagram.data)

    async def async_handler(datagram: Any) -> None:
        await datagram.reply(datagram.data)

    handler = sync_handler if flavour == "sync" else async_handler
    running = serve(flavour, make_address("udp4"), handler, idle_timeout=0.2, on_session_end=on_end)
    with enchufe.connect_datagram(running.address) as first:
        first.set_timeout(IO_TIMEOUT)
        first.send(b"one")
        assert first.recv() == b"one"
    serve_log.wait_for("on_session_end failed")  # its session idled out, the callback raised
    with enchufe.connect_datagram(running.address) as second:
        second.set_timeout(IO_TIMEOUT)
        second.send(b"two")
        assert second.recv() == b"two"
    assert running.thread.is_alive()


def test_clients_that_reset_before_they_are_accepted_end_only_themselves(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str
) -> None:
    """A TCP client that connects and resets at once (SO_LINGER 0) leaves a socket in the
    accept queue whose peer is gone: accepting it is that client's failure (ConnectionReset),
    never the end of the listener or the server."""
    import struct

    listener = enchufe.listen(make_address("tcp4"))
    with listener:
        host, port = "127.0.0.1", int(str(listener.address).rsplit(":", 1)[1])
        with socket.create_connection((host, port)) as rude:
            rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        time.sleep(0.1)  # the reset is in before the accept
        with pytest.raises(ConnectionReset, match="the client left before it was accepted"):
            listener.accept()

    running = serve(flavour, make_address("tcp4"), echo_for(flavour))
    port = int(running.address.rsplit(":", 1)[1])
    for _ in range(300):
        with socket.create_connection(("127.0.0.1", port)) as rude:
            rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with client(running.address) as conn:
        round_trip(conn)
    assert running.thread.is_alive()


def test_patience_with_a_full_unix_queue_is_bounded_per_peer() -> None:
    """Each peer gets DELIVER_PATIENCE of waiting per PATIENCE_WINDOW, waits that ended with
    room included; the others keep theirs (time is passed in: no sleeping)."""
    from enchufe._serving import DELIVER_PATIENCE, PATIENCE_WINDOW, StalledPeers

    stalled = StalledPeers()
    peer, other = parse("unixgram:@peer"), parse("unixgram:@other")
    assert isinstance(peer, UnixAddress) and isinstance(other, UnixAddress)
    assert stalled.patience(peer, 100.0) == DELIVER_PATIENCE
    stalled.waited(peer, 100.0, 0.9 * DELIVER_PATIENCE)  # it took a datagram just in time
    assert stalled.patience(peer, 101.0) == pytest.approx(0.1 * DELIVER_PATIENCE)
    stalled.waited(peer, 101.0, 0.1 * DELIVER_PATIENCE)
    assert stalled.patience(peer, 102.0) == 0  # no more waiting for it in this window
    assert stalled.patience(other, 102.0) == DELIVER_PATIENCE
    assert stalled.patience(peer, 100.0 + PATIENCE_WINDOW) == DELIVER_PATIENCE


def test_a_unix_peer_that_reads_just_in_time_does_not_hold_the_others_up(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str
) -> None:
    """A peer lets its queue fill, then takes one datagram and sends two, again and again:
    each of its replies finds its queue full.  The server waits for it at most DELIVER_PATIENCE
    per PATIENCE_WINDOW, so another client's round trips are not held a second each (they all
    were: about 1 s each, instead of microseconds)."""
    from enchufe._serving import DELIVER_PATIENCE

    def sync_handler(datagram: Any) -> None:
        datagram.reply(datagram.data)

    async def async_handler(datagram: Any) -> None:
        await datagram.reply(datagram.data)

    running = serve(flavour, make_address("unixgram"), sync_handler if flavour == "sync" else async_handler)
    server_path = running.address.removeprefix("unixgram://")
    hostile = enchufe.bind_datagram(make_address("unixgram"))
    stop = threading.Event()

    def attack() -> None:
        raw = hostile.socket
        for _ in range(64):  # more than any net.unix.max_dgram_qlen: its queue is full
            raw.sendto(b"fill", server_path)
        while not stop.is_set():
            with contextlib.suppress(BlockingIOError):
                raw.recv(100, socket.MSG_DONTWAIT)
            raw.sendto(b"a", server_path)
            raw.sendto(b"b", server_path)
            stop.wait(0.01)

    attacker = threading.Thread(target=attack, daemon=True)
    attacker.start()
    slow = 0
    try:
        with enchufe.connect_datagram(running.address) as legit:
            legit.set_timeout(IO_TIMEOUT)
            for n in range(40):
                started = time.monotonic()
                legit.send(b"ping %d" % n)
                assert legit.recv() == b"ping %d" % n
                if time.monotonic() - started >= 0.9 * DELIVER_PATIENCE:
                    slow += 1
                time.sleep(0.05)
    finally:
        stop.set()
        attacker.join(IO_TIMEOUT)
        hostile.close()
    assert slow <= 2  # at most the window's one wait (and one more if the test spans two)


def test_refused_clients_are_said_without_v_and_rate_limited(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str, serve_log: LogRecords
) -> None:
    """Clients turned away at max_connections are a warning (they only see a close), one line
    per second at most with a count of the others, not one per client."""
    running = serve(flavour, make_address("tcp4"), echo_for(flavour), max_connections=1)
    with client(running.address) as holder:
        round_trip(holder)
        for _ in range(5):
            with client(running.address) as extra:
                assert closed_by_server(extra)
        wait_until(lambda: running.stats.refused == 5, what="five refusals")
    warnings = [m for m in serve_log.messages(logging.WARNING) if m.startswith("refused ")]
    assert 1 <= len(warnings) < 5
    assert warnings[0].endswith(": the server is at its limit of 1 open connection")

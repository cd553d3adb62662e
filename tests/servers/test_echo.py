"""Echo and sink servers on every kind, 50 clients at once, every byte and datagram checked.

Three ways in: the pytest fixtures shipped in ``enchufe.testing`` (which this also tests), the
sync ``serve`` with a handler of ours, and the async ``serve`` with a handler of ours.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest

import enchufe
import enchufe.aio as aio
import enchufe.sync.serve as sync_serve
from enchufe import ConnectionRefused
from enchufe.aio.serve import Datagram as AsyncDatagram
from enchufe.aio.serve import serve as aio_serve
from enchufe.sync.serve import Datagram as SyncDatagram
from tests.conftest import DATAGRAM_KINDS, KINDS, STREAM_KINDS, Peer, kind_params, needs_ipv6
from tests.servers.conftest import (
    IO_TIMEOUT,
    LogRecords,
    Running,
    datagram_echo_client,
    run_clients,
    stream_echo_client,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

CLIENTS = 50


def is_stream(kind: str) -> bool:
    return kind in STREAM_KINDS


@pytest.mark.parametrize("kind", kind_params(tuple(KINDS)))
def test_echo_fixture_many_clients(echo_server: Callable[..., Any], kind: str) -> None:
    address = str(echo_server(kind))
    if is_stream(kind):
        sizes = run_clients(stream_echo_client, address, CLIENTS)
        assert len(sizes) == CLIENTS and all(sizes)
    else:
        run_clients(datagram_echo_client, address, CLIENTS)


@pytest.mark.parametrize("kind", kind_params(tuple(KINDS)))
def test_sink_fixture_many_clients(sink_server: Callable[..., Any], kind: str) -> None:
    sink = sink_server(kind)
    address = str(sink.address)
    payloads = [
        random.Random(seed).randbytes(random.Random(seed).randrange(1, 1000)) for seed in range(CLIENTS)
    ]

    async def stream_client(payload: bytes) -> None:
        async with await aio.connect(address, timeout=IO_TIMEOUT) as conn:
            conn.set_timeout(IO_TIMEOUT)
            await conn.send_all(payload * 100)
            await conn.shutdown_write()
            assert await conn.recv() == b""  # the sink read our EOF

    async def datagram_client(payload: bytes) -> None:
        async with await aio.connect_datagram(address) as sock:
            await sock.send(payload)

    async def main() -> None:
        client = stream_client if is_stream(kind) else datagram_client
        await asyncio.gather(*(client(payload) for payload in payloads))

    aio.run(main())
    expected = sorted(hashlib.sha256(p * 100 if is_stream(kind) else p).hexdigest() for p in payloads)
    wait_until(lambda: len(sink.digests) >= CLIENTS, what="every payload reaching the sink")
    assert sorted(sink.digests) == expected


def sync_echo(received: list[int], lock: threading.Lock) -> Callable[[enchufe.Connection], None]:
    def handler(conn: enchufe.Connection) -> None:
        total = 0
        while data := conn.recv():
            conn.send_all(data)
            total += len(data)
        with lock:
            received.append(total)

    return handler


@pytest.mark.parametrize("kind", kind_params(tuple(KINDS)))
def test_sync_serve_many_clients(
    serve: Callable[..., Running], make_address: Callable[[str], str], kind: str
) -> None:
    lock = threading.Lock()
    if is_stream(kind):
        received: list[int] = []
        running = serve("sync", make_address(kind), sync_echo(received, lock))
        sizes = run_clients(stream_echo_client, running.address, CLIENTS)
        wait_until(lambda: running.stats.completed == CLIENTS, what="every handler finishing")
        assert sorted(received) == sorted(sizes)
        assert running.stats.accepted == CLIENTS
    else:
        datagrams: list[bytes] = []

        def reply(datagram: SyncDatagram) -> None:
            datagrams.append(datagram.data)
            datagram.reply(datagram.data)

        running = serve("sync", make_address(kind), reply)
        resent = run_clients(datagram_echo_client, running.address, CLIENTS)
        assert len(datagrams) == CLIENTS * 20 + sum(resent)
        assert running.server.sessions is not None and len(running.server.sessions) == CLIENTS
    running.shutdown(0)
    stats = running.wait()
    assert stats.cut == 0
    assert stats.failed == 0


@pytest.mark.parametrize("kind", kind_params(("tcp6", "unix-abstract", "udp4", "unixgram")))
def test_async_serve_function(make_address: Callable[[str], str], kind: str) -> None:
    """``enchufe.aio.serve.serve(address, handler)`` on uvloop: 50 clients, then cancelled."""

    async def echo(conn: aio.Connection) -> None:
        while data := await conn.recv():
            await conn.send_all(data)

    async def echo_datagram(datagram: AsyncDatagram) -> None:
        assert await datagram.reply(datagram.data)

    async def main() -> None:
        bound: list[enchufe.Address] = []
        handler = echo if is_stream(kind) else echo_datagram
        task = asyncio.create_task(aio_serve(make_address(kind), handler, ready=bound.append))
        while not bound:
            await asyncio.sleep(0.01)
        address = str(bound[0])
        client = stream_echo_client if is_stream(kind) else datagram_echo_client
        await asyncio.gather(*(client(address, seed) for seed in range(CLIENTS)))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        if is_stream(kind):
            with pytest.raises(ConnectionRefused):
                await aio.connect(address)

    aio.run(main())


def test_sync_serve_function_stops_on_sigint(make_address: Callable[[str], str]) -> None:
    """``enchufe.sync.serve.serve`` in the main thread: Ctrl-C drains and returns the stats."""
    address = make_address("unix")

    def handler(conn: enchufe.Connection) -> None:
        while data := conn.recv():
            conn.send_all(data)

    def client(bound: enchufe.Address) -> None:
        with enchufe.connect(bound, timeout=IO_TIMEOUT) as conn:
            conn.send_all(b"hello")
            conn.shutdown_write()
            assert conn.recv() == b"hello"
            assert conn.recv() == b""
        os.kill(os.getpid(), signal.SIGINT)

    peers: list[Peer] = []
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stats = sync_serve.serve(address, handler, ready=lambda bound: peers.append(Peer(client, bound)))
    finally:
        signal.signal(signal.SIGINT, old)
    peers[0].result()
    assert (stats.accepted, stats.completed, stats.cut) == (1, 1, 0)
    assert not os.path.exists(address.removeprefix("unix://"))


@pytest.mark.parametrize("kind", kind_params(DATAGRAM_KINDS))
def test_datagram_boundaries_through_echo(echo_server: Callable[..., Any], kind: str) -> None:
    """Empty, tiny and the largest datagrams come back as they went."""
    address = str(echo_server(kind))
    biggest = 65507 if kind == "udp4" else 65527 if kind == "udp6" else 65536
    with enchufe.connect_datagram(address) as sock:
        sock.set_timeout(IO_TIMEOUT)
        for payload in (b"", b"x", os.urandom(biggest)):
            sock.send(payload)
            assert sock.recv(biggest + 1) == payload


def test_fixture_helpers_refuse_unknown_names(enchufe_folder: str) -> None:
    from enchufe.testing import KINDS as PLUGIN_KINDS
    from enchufe.testing import address_for, start_server

    assert set(PLUGIN_KINDS) == set(KINDS)
    assert len(enchufe_folder) < 40  # short enough for sun_path, whatever the test's name
    with pytest.raises(ValueError, match="unknown kind"):
        address_for("sctp", enchufe_folder)
    with pytest.raises(ValueError, match="unknown server role"):
        start_server("tcp4", "discard", enchufe_folder)
    running = start_server("unix", "echo", enchufe_folder, max_connections=1)
    try:
        assert running.server.max_connections == 1
        assert str(running.address).startswith(f"unix://{enchufe_folder}/")
    finally:
        running.stop()
    assert not running.thread.is_alive()


@needs_ipv6
@pytest.mark.parametrize("flavour", ["sync", "asyncio"])
def test_dual_stack_servers_see_ipv4_clients_as_ipv4(
    serve: Callable[..., Any], flavour: str, serve_log: LogRecords
) -> None:
    """tcp://:0 and udp://:0 are dual-stack: an IPv4 client is 127.0.0.1 to the handler (never
    ::ffff:127.0.0.1), and datagram replies still reach it."""
    seen: list[str] = []

    def sync_stream(conn: enchufe.Connection) -> None:
        seen.append(str(conn.peer_address))
        while data := conn.recv():
            conn.send_all(data)

    async def async_stream(conn: aio.Connection) -> None:
        seen.append(str(conn.peer_address))
        while data := await conn.recv():
            await conn.send_all(data)

    def sync_datagram(datagram: SyncDatagram) -> None:
        seen.append(str(datagram.sender))
        datagram.reply(datagram.data)

    async def async_datagram(datagram: AsyncDatagram) -> None:
        seen.append(str(datagram.sender))
        await datagram.reply(datagram.data)

    sync = flavour == "sync"
    tcp = serve(flavour, "tcp://:0", sync_stream if sync else async_stream)
    udp = serve(flavour, "udp://:0", sync_datagram if sync else async_datagram)
    port = enchufe.parse(tcp.address).port  # type: ignore[union-attr]
    with enchufe.connect(f"tcp://127.0.0.1:{port}", timeout=IO_TIMEOUT) as conn:
        conn.set_timeout(IO_TIMEOUT)
        conn.send_all(b"hi")
        assert conn.recv_exactly(2) == b"hi"
        local = str(conn.local_address)
    udp_port = enchufe.parse(udp.address).port  # type: ignore[union-attr]
    with enchufe.bind_datagram("udp4://127.0.0.1:0") as sock:
        sock.set_timeout(IO_TIMEOUT)
        sock.sendto(b"ping", f"udp://127.0.0.1:{udp_port}")
        assert sock.recvfrom()[0] == b"ping"  # the reply reached the IPv4 sender
        assert seen == [local, str(sock.address)]
    assert all("ffff" not in message for message in serve_log.messages())

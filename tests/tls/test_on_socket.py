"""TLS endpoints whose OpenSSL reads and writes the socket itself (see enchufe._tlscore): where
they do, and that a sync connection used from two threads still never blocks one thread's send
behind the other's receive, whatever its timeout."""

from __future__ import annotations

import asyncio
import time

import pytest

from enchufe import aio, sync, trace
from enchufe.aio.stream import TLSConnection
from tests.conftest import Peer
from tests.tls.conftest import addresses, client_of, tls_connected

pytestmark = pytest.mark.timeout(60)


def test_sync_endpoints_read_and_write_the_socket_themselves(
    tls_kind: str, sock_dir: str, pem: dict[str, str]
) -> None:
    listen_address, query = addresses(tls_kind, sock_dir, pem)
    with tls_connected(sync, listen_address, query) as (_listener, client, server):
        assert client._channel.on_socket and server._channel.on_socket
        client.send_all(b"over the socket")
        assert server.recv() == b"over the socket"


def test_asyncio_endpoints_read_and_write_the_socket_themselves(sock_dir: str, pem: dict[str, str]) -> None:
    listen_address, query = addresses("tls4", sock_dir, pem)

    async def main() -> tuple[bool, bool, bytes]:
        async with await aio.listen(listen_address) as listener:

            async def accepted() -> aio.Connection:
                conn = await listener.accept()
                await conn.handshake()
                return conn

            client, server = await asyncio.wait_for(
                asyncio.gather(aio.connect(client_of(listener.address, query), timeout=10), accepted()), 10
            )
            async with client, server:
                await client.send_all(b"over the socket")
                got = await asyncio.wait_for(server.recv(), 10)
                assert isinstance(client, TLSConnection) and isinstance(server, TLSConnection)
                return client._channel.on_socket, server._channel.on_socket, got

    assert asyncio.run(main()) == (True, True, b"over the socket")


def test_memory_bios_while_tracing_and_on_a_server_that_checks_after_the_handshake(
    sock_dir: str, pem: dict[str, str]
) -> None:
    # alpn= on the server: a client refused after its handshake must not have been sent the
    # session tickets OpenSSL sends at its end (as in the relay).
    listen_address, query = addresses("tls4", sock_dir, pem, server_query="alpn=h2")
    with tls_connected(sync, listen_address, query + "&alpn=h2") as (_listener, client, server):
        assert client._channel.on_socket and not server._channel.on_socket
    trace.enable(lambda _line: None)
    try:
        listen_address, query = addresses("tls4", sock_dir, pem)
        with tls_connected(sync, listen_address, query) as (_listener, client, server):
            assert not client._channel.on_socket and not server._channel.on_socket
    finally:
        trace.disable()


def test_a_receive_with_no_timeout_does_not_hold_up_a_send_from_another_thread(
    sock_dir: str, pem: dict[str, str]
) -> None:
    """``set_timeout(None)`` makes a socket blocking; OpenSSL on it would then wait in the
    kernel for the peer with the connection's state locked, and the sending thread behind it
    (the peer waits for what it sends: neither moves)."""
    listen_address, query = addresses("tls4", sock_dir, pem)
    with tls_connected(sync, listen_address, query) as (_listener, client, server):
        client.set_timeout(None)
        server.set_timeout(3.0)
        receiver = Peer(client.recv)
        time.sleep(0.2)  # the receiver is waiting for the peer
        sender = Peer(client.send_all, b"ping")
        try:
            got = server.recv()
        finally:
            server.send_all(b"pong")  # lets the receiver go, whatever happened
        assert got == b"ping"
        assert receiver.result(10) == b"pong"
        sender.result(10)

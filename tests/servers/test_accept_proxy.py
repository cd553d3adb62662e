"""accept_proxy in the library's servers (threads, asyncio, uvloop): the PROXY header is read
before anything else and its client becomes ``peer_address`` (the proxy kept in
``proxy_address``); an untrusted peer, a missing, malformed, oversized or late header closes
that connection only, with one log line, and the server goes on serving."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

import enchufe
import enchufe.aio as aio
from enchufe import UsageError, parse
from enchufe.address import InetAddress, UnixAddress
from enchufe.aio.serve import Server as AsyncServer
from enchufe.aio.serve import serve as aio_serve
from enchufe.proxyproto import V2_SIGNATURE, encode_v1, encode_v2
from tests.conftest import connectable
from tests.servers.conftest import IO_TIMEOUT, LogRecords, Running, wait_until

pytestmark = pytest.mark.timeout(60)

CLIENT = parse("tcp://203.0.113.7:40000")
FRONT = parse("tcp://198.51.100.1:443")


def recording_echo(flavour: str, seen: list[tuple[Any, Any]]) -> Callable[..., Any]:
    """An echo handler that notes each connection's (peer_address, proxy_address)."""
    if flavour == "sync":

        def sync_echo(conn: enchufe.Connection) -> None:
            seen.append((conn.peer_address, conn.proxy_address))
            while data := conn.recv():
                conn.send_all(data)

        return sync_echo

    async def async_echo(conn: aio.Connection) -> None:
        seen.append((conn.peer_address, conn.proxy_address))
        while data := await conn.recv():
            await conn.send_all(data)

    return async_echo


def raw_client(address: str, source: str = "127.0.0.1") -> socket.socket:
    """A plain socket to ``address`` (tcp://HOST:PORT or a unix one), bound to ``source`` for TCP."""
    target = parse(address)
    if isinstance(target, InetAddress):
        sock = socket.socket(socket.AF_INET6 if ":" in target.host else socket.AF_INET)
        if ":" not in target.host:
            sock.bind((source, 0))
        sock.settimeout(IO_TIMEOUT)
        sock.connect((target.host, target.port))
    else:
        assert isinstance(target, UnixAddress)
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(IO_TIMEOUT)
        sock.connect(target.sockaddr)
    return sock


def exchange(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data``, half-close, read until the server closes (a server that refused the
    connection may reset it meanwhile: that ends it too)."""
    received = b""
    with sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, BrokenPipeError, OSError):
            pass
    return received


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("kind", ["tcp4", "unix"])
def test_the_header_names_the_peer_and_the_payload_is_intact(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str, version: int, kind: str
) -> None:
    seen: list[tuple[Any, Any]] = []
    server = serve(flavour, make_address(kind), recording_echo(flavour, seen), accept_proxy=True)
    header = encode_v1(CLIENT, FRONT) if version == 1 else encode_v2(CLIENT, FRONT, authority="svc")
    payload = b"first bytes in the header's segment" + bytes(range(256)) * 40
    assert exchange(raw_client(server.address), header + payload) == payload
    peer, proxy = seen[0]
    assert peer == CLIENT
    if kind == "tcp4":
        assert isinstance(proxy, InetAddress) and proxy.host == "127.0.0.1"
    else:
        assert proxy is None  # the proxy's own address: an unnamed unix socket


def test_a_header_in_pieces_and_a_local_header(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str
) -> None:
    seen: list[tuple[Any, Any]] = []
    server = serve(flavour, make_address("tcp4"), recording_echo(flavour, seen), accept_proxy=True)
    header = encode_v2(CLIENT, FRONT, unique_id=b"abc", checksum=True)
    with raw_client(server.address) as sock:
        for piece in (header[:5], header[5:14], header[14:20], header[20:] + b"x"):
            sock.sendall(piece)
            time.sleep(0.02)
        assert sock.recv(10) == b"x"
    local = raw_client(server.address)
    local_port = local.getsockname()[1]
    assert exchange(local, encode_v2(None, None, local=True) + b"health") == b"health"
    wait_until(lambda: len(seen) == 2, what="two connections handled")
    assert seen[0][0] == CLIENT
    # LOCAL: the proxy speaks for itself; the connection keeps its own addresses
    assert seen[1][0] == InetAddress("tcp", "127.0.0.1", local_port)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\nX: \x1b[31m\n\r\n", "no PROXY protocol header"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\npayload", "is not a port"),
        (V2_SIGNATURE + b"\x21\x11\xff\xff" + bytes(64), "over this server's bound"),
        (b"", "closed without sending a PROXY header"),
        (b"PROXY TCP4 ", "closed before its PROXY header was complete"),
        (V2_SIGNATURE + b"\x21", "closed before its PROXY header was complete"),
    ],
)
def test_a_bad_or_missing_header_closes_that_connection_only(
    serve: Callable[..., Running],
    make_address: Callable[[str], str],
    flavour: str,
    serve_log: LogRecords,
    data: bytes,
    reason: str,
) -> None:
    seen: list[tuple[Any, Any]] = []
    server = serve(flavour, make_address("tcp4"), recording_echo(flavour, seen), accept_proxy=True)
    assert exchange(raw_client(server.address), data) == b""
    line = serve_log.wait_for(reason)
    assert line.startswith("refused tcp://127.0.0.1:") and "\n" not in line and "\x1b" not in line
    assert exchange(raw_client(server.address), encode_v1(CLIENT, FRONT) + b"next") == b"next"
    assert seen == [(CLIENT, seen[0][1])]
    wait_until(lambda: server.stats.refused == 1, what="one refusal counted")


def test_a_slow_header_is_cut_at_the_timeout(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str, serve_log: LogRecords
) -> None:
    seen: list[tuple[Any, Any]] = []
    server = serve(
        flavour, make_address("tcp4"), recording_echo(flavour, seen), accept_proxy=True, proxy_timeout=0.5
    )
    with raw_client(server.address) as slow:
        slow.sendall(b"PROXY TCP4 ")
        started = time.monotonic()
        assert slow.recv(10) == b""  # closed by the server, not by us
        assert time.monotonic() - started < IO_TIMEOUT
    assert "no complete PROXY header within 0.5 s (11 bytes of one came)" in serve_log.wait_for(
        "within 0.5 s"
    )
    with raw_client(server.address) as silent:
        assert silent.recv(10) == b""
    serve_log.wait_for("no complete PROXY header within 0.5 s\n"[:-1])
    assert exchange(raw_client(server.address), encode_v1(CLIENT, FRONT) + b"still here") == b"still here"


def test_a_stop_that_cuts_a_header_read_is_a_cut_not_a_refusal(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str, serve_log: LogRecords
) -> None:
    server = serve(
        flavour, make_address("tcp4"), recording_echo(flavour, []), accept_proxy=True, proxy_timeout=30
    )
    with raw_client(server.address) as silent:
        wait_until(lambda: server.stats.active == 1, what="the connection reading its header")
        server.shutdown(0)
        stats = server.wait()
        assert silent.recv(10) == b""
    assert (stats.cut, stats.refused) == (1, 0)
    # Every flavour alike: the server closed that connection, the peer did not refuse anything.
    assert not [line for line in serve_log.messages() if line.startswith("refused")]


def test_only_trusted_proxies_may_send_a_header(
    serve: Callable[..., Running], make_address: Callable[[str], str], flavour: str, serve_log: LogRecords
) -> None:
    seen: list[tuple[Any, Any]] = []
    server = serve(
        flavour,
        make_address("tcp4"),
        recording_echo(flavour, seen),
        accept_proxy=True,
        trusted_proxies=["127.0.0.2", "::ffff:127.0.0.3/128"],
    )
    spoof = encode_v1(CLIENT, FRONT) + b"spoofed"
    assert exchange(raw_client(server.address, source="127.0.0.9"), spoof) == b""
    assert "not a trusted proxy" in serve_log.wait_for("refused tcp://127.0.0.9:")
    assert exchange(raw_client(server.address, source="127.0.0.2"), spoof) == b"spoofed"
    assert exchange(raw_client(server.address, source="127.0.0.3"), spoof) == b"spoofed"
    assert [peer for peer, _proxy in seen] == [CLIENT, CLIENT]


def test_options_are_checked(make_address: Callable[[str], str]) -> None:
    with pytest.raises(UsageError, match="accept_proxy"):
        AsyncServer(make_address("tcp4"), recording_echo("asyncio", []), trusted_proxies=["10.0.0.0/8"])
    with pytest.raises(UsageError, match="not an IP network"):
        AsyncServer(
            make_address("tcp4"), recording_echo("asyncio", []), accept_proxy=True, trusted_proxies=["x"]
        )
    with pytest.raises(UsageError, match="proxy_timeout"):
        AsyncServer(make_address("tcp4"), recording_echo("asyncio", []), accept_proxy=True, proxy_timeout=0)


def test_tls_comes_after_the_header(serve: Callable[..., Running], flavour: str) -> None:
    """HAProxy passing TLS through (mode tcp, send-proxy-v2): the header, then the handshake."""
    seen: list[tuple[Any, Any]] = []
    server = serve(flavour, "tls://127.0.0.1:0?cert=auto", recording_echo(flavour, seen), accept_proxy=True)
    pin = server.server.tls_pin
    address = parse(server.address)
    assert isinstance(address, InetAddress)
    raw = raw_client(f"tcp://127.0.0.1:{address.port}")
    raw.sendall(encode_v2(CLIENT, FRONT))
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with context.wrap_socket(raw) as tls:
        tls.sendall(b"over TLS")
        assert tls.recv(100) == b"over TLS"
    assert pin is not None and seen[0][0] == CLIENT


def test_asyncio_serve_takes_the_options(make_address: Callable[[str], str]) -> None:
    seen: list[tuple[Any, Any]] = []

    async def main() -> None:
        bound: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            aio_serve(
                make_address("tcp4"),
                recording_echo("asyncio", seen),
                ready=bound.set_result,
                accept_proxy=True,
            )
        )
        # Bounded: a server that cannot start ends its task instead of calling ready.
        await asyncio.wait([bound, task], timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert bound.done(), task
        reply = await asyncio.to_thread(
            exchange, raw_client(connectable(bound.result())), encode_v1(CLIENT, FRONT) + b"hi"
        )
        assert reply == b"hi"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert seen[0][0] == CLIENT

"""The stream contract over TLS: every API flavour (sync, asyncio, uvloop) on tls4, tls6,
tls+unix and tls+unix-abstract.  Data arrives whole, EOF is close_notify, half-close works both
ways (TLS 1.3), a close without close_notify is truncation, and ``conn.tls`` says what was agreed."""

from __future__ import annotations

import hashlib
import os
import socket
from typing import Any

import pytest

from enchufe import ConnectionReset
from enchufe.errors import TLSTruncated
from tests.conformance.conftest import IO_TIMEOUT
from tests.conftest import Peer
from tests.tls.conftest import addresses, both, read_to_eof, tls_connected

pytestmark = pytest.mark.timeout(120)

BULK = 16 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_16_mib_each_way_at_once_arrive_whole(
    api: Any, tls_kind: str, sock_dir: str, pem: dict[str, str]
) -> None:
    """Both sides send 16 MiB while reading what the other sends (more than any socket buffer:
    each side must read while it writes), then close_notify; the SHA-256 match."""
    listen_address, query = addresses(tls_kind, sock_dir, pem)
    up, down = os.urandom(BULK), os.urandom(BULK - 12345)
    with tls_connected(api, listen_address, query) as (_listener, client, server):

        def send_and_close(conn: Any, data: bytes) -> None:
            conn.send_all(data)
            conn.shutdown_write()

        senders = [Peer(send_and_close, client, up), Peer(send_and_close, server, down)]
        got_down, got_up = both(lambda: read_to_eof(client), lambda: read_to_eof(server))
        for sender in senders:
            sender.result(IO_TIMEOUT * 3)
    assert sha(got_up) == sha(up) and len(got_up) == len(up)
    assert sha(got_down) == sha(down) and len(got_down) == len(down)


@pytest.mark.parametrize("closer", ["client", "server"])
def test_half_close_the_peer_still_answers_after_eof(
    api: Any, tls_kind: str, sock_dir: str, pem: dict[str, str], closer: str
) -> None:
    """One side sends a request and shuts its write side (close_notify); the other reads it to
    EOF, then answers; the first side still reads the whole answer, then EOF."""
    listen_address, query = addresses(tls_kind, sock_dir, pem)
    with tls_connected(api, listen_address, query) as (_listener, client, server):
        first, other = (client, server) if closer == "client" else (server, client)
        first.send_all(b"request\n")
        first.shutdown_write()
        assert read_to_eof(other) == b"request\n"
        answer = os.urandom(3 << 20)  # more than the socket buffers: sent while the other reads
        replier = Peer(lambda: (other.send_all(answer), other.shutdown_write()))
        assert sha(read_to_eof(first)) == sha(answer)
        replier.result(IO_TIMEOUT)
        assert first.recv() == b""  # EOF stays EOF


def test_recv_exactly_until_and_messages(api: Any, tls_kind: str, sock_dir: str, pem: dict[str, str]) -> None:
    listen_address, query = addresses(tls_kind, sock_dir, pem)
    with tls_connected(api, listen_address, query) as (_listener, client, server):
        client.send_all(b"line one\nline two\n")
        client.send_message(b"framed" * 5000)
        assert server.recv_until(b"\n") == b"line one\n"
        assert server.recv_exactly(4) == b"line"
        assert server.recv_until(b"\n") == b" two\n"
        assert server.recv_message() == b"framed" * 5000
        client.shutdown_write()
        assert server.recv_message() is None


def test_a_close_without_close_notify_is_truncation(
    api: Any, tls_kind: str, sock_dir: str, pem: dict[str, str]
) -> None:
    """The server's socket ends (FIN) with no close_notify: the client gets what came, then
    TLSTruncated (a ConnectionReset), never a clean EOF."""
    listen_address, query = addresses(tls_kind, sock_dir, pem)
    with tls_connected(api, listen_address, query) as (_listener, client, server):
        server.send_all(b"partial answer")
        raw = server.socket if api.name == "sync" else server.target.socket
        raw.shutdown(socket.SHUT_WR)
        assert client.recv_exactly(len(b"partial answer")) == b"partial answer"
        with pytest.raises(TLSTruncated, match="without TLS close_notify") as info:
            client.recv()
        assert isinstance(info.value, ConnectionReset)


def test_tls_says_what_was_agreed(api: Any, tls_kind: str, sock_dir: str, pem: dict[str, str]) -> None:
    listen_address, query = addresses(tls_kind, sock_dir, pem, "alpn=h2,http/1.1")
    with tls_connected(api, listen_address, query + "&alpn=http/1.1") as (listener, client, server):
        info = client.tls
        assert info is not None and server.tls is not None
        assert info.version in ("TLSv1.3", "TLSv1.2") and info.cipher == server.tls.cipher
        assert info.alpn == server.tls.alpn == "http/1.1"
        assert info.peer is not None and ("DNS", "localhost") in info.peer.sans
        assert server.tls.peer is None  # no client certificate was asked for
        assert listener.address.is_tls and str(listener.address).startswith("tls")
        assert listener.tls_pin is None


def test_a_plain_connection_has_no_tls(api: Any) -> None:
    with (
        api.listen("tcp://127.0.0.1:0") as listener,
        api.connect(listener.address) as client,
        listener.accept() as server,
    ):
        server.handshake()  # nothing to do
        assert client.tls is None and server.tls is None
        assert listener.tls_pin is None


def test_a_client_that_sends_and_closes_without_reading_loses_nothing(
    api: Any, tls_kind: str, sock_dir: str, pem: dict[str, str]
) -> None:
    """Send, close, never read (``enchufe send`` without a reply): the server gets every byte and
    a clean EOF.  Nothing the client left unread (a session ticket) turns its close into a
    reset, and close() says close_notify, so this is no truncation either."""
    listen_address, query = addresses(tls_kind, sock_dir, pem)
    payload = os.urandom(1 << 20)
    with tls_connected(api, listen_address, query) as (_listener, client, server):
        sender = Peer(lambda: (client.send_all(payload), client.close()))
        got = read_to_eof(server)
        sender.result(IO_TIMEOUT)
    assert sha(got) == sha(payload)


@pytest.mark.parametrize("kind", ["tls4", "tls+unix"])
def test_a_receive_never_waits_to_send_the_ciphertext_it_finds_waiting(
    kind: str, sock_dir: str, pem: dict[str, str]
) -> None:
    """A receive first sends what this side owes the peer, but only what the kernel takes at
    once.  Here a sending thread's ciphertext is made and not yet sent (as between its encrypt
    and its flush) while the peer, not reading, has a full buffer: the receive must still return
    the peer's bytes, not wait for room the peer will not make (two such receivers deadlock)."""
    from enchufe import sync

    listen_address, query = addresses(kind, sock_dir, pem)
    with tls_connected(sync, listen_address, query) as (_listener, client, server):
        client.set_timeout(2.0)
        with client._state_lock:
            if client._channel.on_socket:
                # OpenSSL writes the socket itself: it keeps what the socket had no room for.
                assert client._channel.send(b"x" * (8 << 20)) == 0
            else:
                client._channel.write(b"x" * (8 << 20))  # far more than the socket buffers hold
        server.send_all(b"hello")
        assert client.recv() == b"hello"

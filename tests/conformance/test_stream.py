"""The stream contract, checked the same way for every API flavour and every stream kind.

Each test runs for ``sync``, ``asyncio`` and ``uvloop`` (the ``api`` fixture) over tcp4, tcp6,
unix and unix-abstract.  Both ends of a connection use the flavour under test.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from enchufe import (
    AddressError,
    ClosedError,
    ConnectionRefused,
    ConnectionReset,
    Credentials,
    IncompleteRead,
    ProtocolError,
    TimedOut,
    UsageError,
    framing,
)
from tests.conformance.conftest import IO_TIMEOUT, tls_of
from tests.conftest import STREAM_KINDS, Peer, abstract_name, connectable, kind_params

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=kind_params(STREAM_KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.contextmanager
def connected(api: Any, address: str) -> Iterator[tuple[Any, Any, Any]]:
    """(listener, client, server): both ends of one connection, with a hang guard on each."""
    with (
        api.listen(address) as listener,
        api.connect(connectable(listener.address), timeout=IO_TIMEOUT) as client,
        listener.accept() as server,
    ):
        client.set_timeout(IO_TIMEOUT)
        server.set_timeout(IO_TIMEOUT)
        yield listener, client, server


@contextlib.contextmanager
def tls_connected(api: Any, address: str, files: dict[str, str]) -> Iterator[tuple[Any, Any, Any]]:
    """:func:`connected` over TLS: the client's handshake waits for the server's, so the client
    connects in a thread while the server accepts and runs its side."""
    with api.listen(tls_of(address, f"cert={files['server']}")) as listener:
        target = tls_of(connectable(listener.address), f"ca={files['ca']}&sni=localhost")
        connecting = Peer(lambda: api.connect(target, timeout=IO_TIMEOUT))
        with listener.accept() as server:
            server.set_timeout(IO_TIMEOUT)
            server.handshake()
            with connecting.result() as client:
                client.set_timeout(IO_TIMEOUT)
                yield listener, client, server


@pytest.fixture(params=["plain", "tls"])
def layer(request: pytest.FixtureRequest) -> str:
    """Whether the stream is used as is, or under TLS (``tls://``, ``tls+unix:``)."""
    return str(request.param)


@pytest.fixture
def pair(
    api: Any, kind: str, layer: str, make_address: Callable[[str], str], tls_files: dict[str, str]
) -> Iterator[tuple[Any, Any]]:
    """(client, server) of one connection of ``kind``, plain or over TLS."""
    if layer == "tls":
        with tls_connected(api, make_address(kind), tls_files) as (_listener, client, server):
            yield client, server
        return
    with connected(api, make_address(kind)) as (_listener, client, server):
        yield client, server


def read_to_eof(conn: Any, limit: int = 10_000) -> bytes:
    chunks: list[bytes] = []
    for _ in range(limit):
        chunk = conn.recv()
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
    raise AssertionError(f"no EOF after {limit} reads")


# --- EOF and half-close ---------------------------------------------------------------------------


def test_recv_returns_empty_only_at_eof(pair: tuple[Any, Any]) -> None:
    client, server = pair
    client.send_all(b"hello")
    assert server.recv() == b"hello"
    # No data yet is not EOF: recv waits (here until the timeout) rather than return b"".
    server.set_timeout(0.1)
    with pytest.raises(TimedOut):
        server.recv()
    server.set_timeout(IO_TIMEOUT)
    client.send_all(b" world")
    client.shutdown_write()
    assert read_to_eof(server) == b" world"
    assert server.recv() == b""  # EOF stays EOF
    assert server.recv(1) == b""


def test_half_close_client_to_server(pair: tuple[Any, Any]) -> None:
    client, server = pair
    client.send_all(b"request")
    client.shutdown_write()
    assert read_to_eof(server) == b"request"
    # The other direction still works after the client's EOF.
    server.send_all(b"response " * 1000)
    server.shutdown_write()
    assert read_to_eof(client) == b"response " * 1000


def test_half_close_server_to_client(pair: tuple[Any, Any]) -> None:
    client, server = pair
    server.send_all(b"banner")
    server.shutdown_write()
    assert read_to_eof(client) == b"banner"
    client.send_all(b"still talking")
    client.shutdown_write()
    assert read_to_eof(server) == b"still talking"


def test_send_after_shutdown_write_is_closed_error(pair: tuple[Any, Any]) -> None:
    client, server = pair
    client.shutdown_write()
    with pytest.raises(ClosedError):
        client.send_all(b"x")
    assert server.recv() == b""


def test_large_transfer_both_ways_is_intact(pair: tuple[Any, Any]) -> None:
    client, server = pair
    payload = os.urandom(3 * 1024 * 1024 + 7)
    sender = Peer(lambda: (client.send_all(payload), client.shutdown_write()))
    received = read_to_eof(server)
    sender.result()
    assert received == payload


# --- recv_exactly, recv_until, messages ----------------------------------------------------------


def test_recv_exactly_and_incomplete_read(pair: tuple[Any, Any]) -> None:
    client, server = pair
    client.send_all(b"abc")
    client.send_all(b"defgh")
    assert server.recv_exactly(4) == b"abcd"
    assert server.recv_exactly(0) == b""
    assert server.recv(2) == b"ef"  # what recv_exactly read ahead is not lost
    client.send_all(b"ij")
    client.shutdown_write()
    with pytest.raises(IncompleteRead) as caught:
        server.recv_exactly(10)
    assert caught.value.partial == b"ghij"
    assert server.recv() == b""


def test_recv_exactly_keeps_bytes_across_a_timeout(pair: tuple[Any, Any]) -> None:
    client, server = pair
    client.send_all(b"123")
    server.set_timeout(0.1)
    with pytest.raises(TimedOut):
        server.recv_exactly(6)
    server.set_timeout(IO_TIMEOUT)
    client.send_all(b"456")
    assert server.recv_exactly(6) == b"123456"


def test_recv_until(pair: tuple[Any, Any]) -> None:
    client, server = pair
    client.send_all(b"one\ntwo\r")
    client.send_all(b"\nthree")
    assert server.recv_until(b"\n") == b"one\n"
    assert server.recv_until(b"\r\n") == b"two\r\n"  # the delimiter came in two pieces
    client.shutdown_write()
    assert server.recv_until(b"\n") == b"three"  # what is left at EOF
    assert server.recv_until(b"\n") == b""
    with pytest.raises(UsageError):
        server.recv_until(b"")


def test_recv_until_another_delimiter_after_a_timeout(pair: tuple[Any, Any]) -> None:
    client, server = pair
    client.send_all(b"abc\nxyz")
    server.set_timeout(0.1)
    with pytest.raises(TimedOut):
        server.recv_until(b"\r\n")
    # What the timed-out call searched is searched again for the new delimiter.
    server.set_timeout(1.0)
    assert server.recv_until(b"\n") == b"abc\n"
    assert server.recv(10) == b"xyz"


def test_recv_until_max_bytes(pair: tuple[Any, Any]) -> None:
    client, server = pair
    client.send_all(b"x" * 100 + b"\n")
    with pytest.raises(ProtocolError):
        server.recv_until(b"\n", max_bytes=50)
    client.send_all(b"short\n")
    client.shutdown_write()
    # A line that fits exactly is fine.
    rest = read_to_eof(server)
    assert rest.endswith(b"short\n")


def test_recv_until_line_of_exactly_max_bytes(pair: tuple[Any, Any]) -> None:
    client, server = pair
    client.send_all(b"y" * 9 + b"\n" + b"z" * 20)
    assert server.recv_until(b"\n", max_bytes=10) == b"y" * 9 + b"\n"
    with pytest.raises(ProtocolError):
        server.recv_until(b"\n", max_bytes=10)


def test_messages(pair: tuple[Any, Any]) -> None:
    client, server = pair
    messages = [b"", b"a", os.urandom(300_000), b"last"]

    def send() -> None:
        for message in messages:
            client.send_message(message)
        client.shutdown_write()

    sender = Peer(send)
    assert [server.recv_message() for _ in messages] == messages
    sender.result()
    assert server.recv_message() is None  # clean EOF between messages


def test_message_cut_by_eof_is_incomplete(pair: tuple[Any, Any]) -> None:
    client, server = pair
    client.send_all(framing.encode(b"0123456789")[:8])
    client.shutdown_write()
    with pytest.raises(IncompleteRead):
        server.recv_message()


def test_message_over_the_limit_is_refused(pair: tuple[Any, Any]) -> None:
    client, server = pair
    client.send_message(b"x" * 1000)
    with pytest.raises(ProtocolError):
        server.recv_message(max_size=999)
    with pytest.raises(UsageError):
        client.send_message(b"x" * 11, max_size=10)


# --- errors ---------------------------------------------------------------------------------------


def test_reset_by_peer(pair: tuple[Any, Any], layer: str) -> None:
    client, server = pair
    # Closing with unread data resets the connection: RST on TCP, ECONNRESET on unix sockets.
    client.send_all(b"never read")
    time.sleep(0.05)
    server.close()
    if layer == "tls":
        # A deliberate close sends close_notify first: read as EOF if it came before the reset.
        with contextlib.suppress(ConnectionReset):
            assert client.recv() == b""
    else:
        with pytest.raises(ConnectionReset):
            client.recv()
    with pytest.raises(ConnectionReset):
        for _ in range(1000):
            client.send_all(b"x" * 65536)


def refused_address(api: Any, kind: str, make_address: Callable[[str], str]) -> str:
    if kind == "unix":
        return make_address(kind)  # a path that does not exist
    if kind == "unix-abstract":
        return f"unix:@{abstract_name()}"  # a name nobody listens on
    with api.listen(make_address(kind)) as listener:
        return connectable(listener.address)  # a port that was just freed


def test_refused_with_retries(api: Any, kind: str, make_address: Callable[[str], str]) -> None:
    address = refused_address(api, kind, make_address)
    with pytest.raises(ConnectionRefused) as caught:
        api.connect(address, retries=2, retry_delay=0.01)
    attempts = caught.value.attempts
    assert len(attempts) == 3
    assert all(isinstance(a, ConnectionRefused) for a in attempts)
    assert attempts[-1] is caught.value
    assert "3 attempts" in str(caught.value)
    with pytest.raises(ConnectionRefused) as once:
        api.connect(address)
    assert len(once.value.attempts) == 1


def test_bad_arguments(api: Any, kind: str, make_address: Callable[[str], str]) -> None:
    """The same error, word for word, on every side (aio's said "a whole number from 0 up",
    and was no AddressError: the sync check was in the sync opener only)."""
    with pytest.raises(AddressError, match=r"^retries must be 0 or more, not -1$"):
        api.connect(refused_address(api, kind, make_address), retries=-1)


def test_timeout_leaves_the_connection_usable(pair: tuple[Any, Any]) -> None:
    """A timeout says what timed out, in the same words on every side (the asyncio side said
    "timed out: could not receive for 0.1 s", without errno)."""
    client, server = pair
    client.set_timeout(0.1)
    with pytest.raises(TimedOut) as caught:
        client.recv()
    assert str(caught.value) == f"cannot receive from {client.peer_address}: timed out"
    assert (caught.value.errno, caught.value.action) == (errno.ETIMEDOUT, "receive")
    client.set_timeout(None)
    server.send_all(b"late")
    assert client.recv() == b"late"


# --- closing --------------------------------------------------------------------------------------


def test_close_is_idempotent_then_closed_error(pair: tuple[Any, Any]) -> None:
    client, server = pair
    client.close()
    client.close()
    assert client.closed
    calls: list[Callable[[], Any]] = [
        lambda: client.recv(),
        lambda: client.send_all(b"x"),
        lambda: client.recv_exactly(1),
        lambda: client.recv_until(b"\n"),
        lambda: client.shutdown_write(),
        lambda: client.set_timeout(1),
    ]
    for call in calls:
        with pytest.raises(ClosedError):
            call()
    assert server.recv() == b""  # the peer sees EOF


def test_listener_close_wakes_a_pending_accept(
    api: Any, kind: str, make_address: Callable[[str], str]
) -> None:
    listener = api.listen(make_address(kind))
    waiter = Peer(listener.accept)
    time.sleep(0.1)  # let it block in accept()
    listener.close()
    with pytest.raises(ClosedError):
        waiter.result()
    listener.close()
    assert listener.closed
    with pytest.raises(ClosedError):
        listener.accept()


def test_listener_close_ends_iteration(api: Any, kind: str, make_address: Callable[[str], str]) -> None:
    listener = api.listen(make_address(kind))
    address = connectable(listener.address)

    def serve() -> list[bytes]:
        got = []
        for conn in listener:
            with conn:
                got.append(read_to_eof(conn))
        return got

    server = Peer(serve)
    for word in (b"one", b"two"):
        with api.connect(address) as client:
            client.send_all(word)
            client.shutdown_write()
            assert client.recv() == b""  # the server read our EOF and closed
    listener.close()
    assert server.result() == [b"one", b"two"]


def test_unix_listener_removes_its_file(api: Any, make_address: Callable[[str], str]) -> None:
    address = make_address("unix")
    listener = api.listen(address)
    path = address.removeprefix("unix://")
    assert os.path.exists(path)
    listener.close()
    assert not os.path.exists(path)


# --- addresses and credentials --------------------------------------------------------------------


def test_addresses_match(pair: tuple[Any, Any], kind: str) -> None:
    client, server = pair
    assert server.local_address == client.peer_address
    if kind.startswith("tcp"):
        assert client.local_address == server.peer_address
    else:
        assert server.peer_address is None  # an unbound unix client has no name


def test_peer_credentials(pair: tuple[Any, Any], kind: str) -> None:
    client, server = pair
    if kind.startswith("tcp"):
        assert server.peer_credentials is None
        assert client.peer_credentials is None
    else:
        me = Credentials(os.getpid(), os.getuid(), os.getgid())
        assert server.peer_credentials == me
        assert client.peer_credentials == me
    client.close()
    with pytest.raises(ClosedError):
        _ = client.peer_credentials


def test_mixed_flavours_talk(api: Any, kind: str, make_address: Callable[[str], str]) -> None:
    """A server of this flavour and a plain socket client agree on bytes and EOF."""
    with api.listen(make_address(kind)) as listener:
        family = socket.AF_INET if kind == "tcp4" else socket.AF_INET6 if kind == "tcp6" else socket.AF_UNIX
        with socket.socket(family, socket.SOCK_STREAM) as raw:
            raw.settimeout(IO_TIMEOUT)
            address = listener.address
            if family == socket.AF_UNIX:
                raw.connect(b"\0" + address.name.encode() if address.abstract else address.name)
            else:
                raw.connect((address.host, address.port))
            with listener.accept() as server:
                server.set_timeout(IO_TIMEOUT)
                raw.sendall(b"ping")
                raw.shutdown(socket.SHUT_WR)
                assert read_to_eof(server) == b"ping"
                server.send_all(b"pong")
                server.shutdown_write()
                assert raw.recv(10) == b"pong"
                assert raw.recv(10) == b""

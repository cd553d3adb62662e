"""Stream endpoints (tcp4, tcp6, unix path, unix abstract) over real loopback sockets."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import enchufe
from enchufe import (
    ClosedError,
    Connection,
    ConnectionRefused,
    ConnectionReset,
    Credentials,
    IncompleteRead,
    InetAddress,
    Listener,
    ProtocolError,
    TimedOut,
    UnixAddress,
    UsageError,
    framing,
    trace,
)
from tests.conftest import (
    TCP_KINDS,
    UNIX_STREAM_KINDS,
    Peer,
    connectable,
    kind_params,
    needs_ipv6,
)

#: Seconds any single blocking call may take before the test calls it a hang.
IO_TIMEOUT = 10.0


@contextlib.contextmanager
def connected(address: str) -> Iterator[tuple[Listener, Connection, Connection]]:
    """A listener on ``address`` and both ends of one connection to it: (listener, client, server)."""
    with (
        enchufe.listen(address) as listener,
        enchufe.connect(connectable(listener.address), timeout=IO_TIMEOUT) as client,
        listener.accept() as server,
    ):
        client.set_timeout(IO_TIMEOUT)
        server.set_timeout(IO_TIMEOUT)
        yield listener, client, server


def read_to_eof(conn: Connection, limit: int = 1000) -> bytes:
    """Everything until EOF, in at most ``limit`` reads."""
    data = b""
    for _ in range(limit):
        chunk = conn.recv()
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"no EOF after {limit} reads")


def closed_address(address: str) -> str:
    """An address of this kind where nobody listens (a listener was there and is gone)."""
    with enchufe.listen(address) as listener:
        return connectable(listener.address)


# --- data both ways ------------------------------------------------------------------------------


def test_both_directions(stream_address: str) -> None:
    with connected(stream_address) as (_listener, client, server):
        client.send_all(b"ping")
        assert server.recv_exactly(4) == b"ping"
        server.send_all(bytearray(b"pong"))
        assert client.recv_exactly(4) == b"pong"
        client.send_all(memoryview(b"again"))
        assert server.recv_exactly(5) == b"again"


def test_addresses_of_both_ends(stream_address: str) -> None:
    with connected(stream_address) as (listener, client, server):
        if isinstance(listener.address, InetAddress):
            assert isinstance(client.local_address, InetAddress)
            assert isinstance(server.peer_address, InetAddress)
            assert (server.peer_address.host, server.peer_address.port) == (
                client.local_address.host,
                client.local_address.port,
            )
            assert isinstance(client.peer_address, InetAddress)
            assert client.peer_address.port == listener.address.port
        else:
            assert isinstance(listener.address, UnixAddress)
            assert server.local_address == listener.address
            assert client.peer_address == listener.address
            assert client.local_address is None  # an unbound unix client has no name
            assert server.peer_address is None


# --- half-close ----------------------------------------------------------------------------------


def test_client_half_close_server_still_sends(stream_address: str) -> None:
    with connected(stream_address) as (_listener, client, server):
        client.send_all(b"request")
        client.shutdown_write()
        assert read_to_eof(server) == b"request"
        assert server.recv() == b""  # EOF stays EOF
        server.send_all(b"reply after your EOF")
        server.close()
        assert read_to_eof(client) == b"reply after your EOF"


def test_server_half_close_client_still_sends(stream_address: str) -> None:
    with connected(stream_address) as (_listener, client, server):
        server.send_all(b"banner")
        server.shutdown_write()
        assert read_to_eof(client) == b"banner"
        client.send_all(b"answer after your EOF")
        client.shutdown_write()
        assert read_to_eof(server) == b"answer after your EOF"


# --- recv and its variants -----------------------------------------------------------------------


def test_recv_returns_empty_only_at_eof(stream_address: str) -> None:
    with connected(stream_address) as (_listener, client, server):
        client.set_timeout(0.2)
        with pytest.raises(TimedOut):
            client.recv()  # nothing there yet: it waits, it does not return b""
        server.send_all(b"abc")
        assert client.recv(1) == b"a"
        server.close()
        assert client.recv(1) == b"b"  # data before EOF is all delivered
        assert client.recv(10) == b"c"
        assert client.recv() == b""
        assert client.recv() == b""


def test_recv_rejects_nonpositive_size(stream_address: str) -> None:
    with connected(stream_address) as (_listener, client, _server), pytest.raises(UsageError):
        client.recv(0)


def _send_in_pieces(conn: Connection, pieces: list[bytes], close: bool = True) -> None:
    for piece in pieces:
        conn.send_all(piece)
        time.sleep(0.01)  # let the reader see each piece on its own
    if close:
        conn.close()


def test_recv_exactly_gathers_pieces(stream_address: str) -> None:
    with connected(stream_address) as (_listener, client, server):
        peer = Peer(_send_in_pieces, server, [b"he", b"llo w", b"orld", b"!!"])
        assert client.recv_exactly(5) == b"hello"
        assert client.recv_exactly(6) == b" world"
        assert client.recv_exactly(0) == b""
        assert client.recv_exactly(2) == b"!!"
        peer.result()
        assert client.recv() == b""


def test_recv_exactly_raises_incomplete_read_at_eof(stream_address: str) -> None:
    with connected(stream_address) as (_listener, client, server):
        server.send_all(b"abc")
        server.close()
        with pytest.raises(IncompleteRead, match="after 3 of 5 bytes") as info:
            client.recv_exactly(5)
        assert info.value.partial == b"abc"
        assert isinstance(info.value, ProtocolError)
        assert client.recv() == b""


def test_recv_until(stream_address: str) -> None:
    with connected(stream_address) as (_listener, client, server):
        peer = Peer(_send_in_pieces, server, [b"one\ntw", b"o\r", b"\nthree"])
        assert client.recv_until() == b"one\n"
        assert client.recv_until(b"\r\n") == b"two\r\n"  # the delimiter came in two sends
        assert client.recv_until() == b"three"  # EOF: what is left, like readline
        assert client.recv_until() == b""
        peer.result()


def test_recv_until_limit(stream_address: str) -> None:
    with connected(stream_address) as (_listener, client, server):
        server.send_all(b"x" * 49 + b"\n" + b"y" * 60 + b"\n")
        assert client.recv_until(max_bytes=50) == b"x" * 49 + b"\n"  # exactly at the limit
        with pytest.raises(ProtocolError, match=r"sent 50 bytes without b'\\n'"):
            client.recv_until(max_bytes=50)  # the delimiter is past the limit
        with pytest.raises(UsageError):
            client.recv_until(b"")


def test_recv_until_gives_up_on_endless_line(stream_address: str) -> None:
    with connected(stream_address) as (_listener, client, server):
        peer = Peer(_send_in_pieces, server, [b"z" * 40] * 5, False)
        with pytest.raises(ProtocolError, match="without"):
            client.recv_until(max_bytes=100)
        peer.result()


def test_messages_mixed_with_raw_reads(stream_address: str) -> None:
    big = os.urandom(100_000)
    with connected(stream_address) as (_listener, client, server):

        def talk() -> None:
            client.send_all(framing.encode(b"hello") + b"tail")
            client.send_all(b"raw line\n")
            client.send_message(b"")
            client.send_message(big)
            client.close()

        peer = Peer(talk)
        assert server.recv_message() == b"hello"
        rest = b""
        for _ in range(10):
            rest += server.recv(4 - len(rest))  # served from what recv_message read ahead
            if len(rest) == 4:
                break
        assert rest == b"tail"
        assert server.recv_until() == b"raw line\n"
        assert server.recv_message() == b""
        assert server.recv_message() == big
        assert server.recv_message() is None  # clean EOF between messages
        peer.result()


def test_message_over_limit_and_eof_mid_message(stream_address: str) -> None:
    with connected(stream_address) as (_listener, client, server):
        client.send_message(b"x" * 1000)
        with pytest.raises(ProtocolError):
            server.recv_message(max_size=100)
    with connected(stream_address) as (_listener, client, server):
        client.send_all(struct.pack("!I", 10) + b"abc")
        client.close()
        with pytest.raises(IncompleteRead) as info:
            server.recv_message()
        assert info.value.partial == b"abc"


def _read_declared(flavour: str, address: str, ask: str) -> ProtocolError:
    """Read from a peer that declares 1 GiB: ``recv_exactly``, ``recv_message`` with a limit
    above it, or ``recv_message`` with the default limit; the error it ends with."""
    import enchufe.aio as aio

    gib = 1 << 30
    if flavour == "sync":
        with enchufe.connect(address, timeout=IO_TIMEOUT) as client:
            client.set_timeout(IO_TIMEOUT)
            try:
                if ask == "exactly":
                    client.recv_exactly(4)
                    client.recv_exactly(gib)
                elif ask == "message":
                    client.recv_message(max_size=2 * gib)
                else:
                    client.recv_message()
            except ProtocolError as exc:
                return exc
        raise AssertionError("no error")

    async def main() -> ProtocolError:
        async with await aio.connect(address, timeout=IO_TIMEOUT) as client:
            client.set_timeout(IO_TIMEOUT)
            try:
                if ask == "exactly":
                    await client.recv_exactly(4)
                    await client.recv_exactly(gib)
                elif ask == "message":
                    await client.recv_message(max_size=2 * gib)
                else:
                    await client.recv_message()
            except ProtocolError as exc:
                return exc
        raise AssertionError("no error")

    return aio.run(main())


@pytest.mark.parametrize("flavour", ["sync", "aio"])
@pytest.mark.parametrize("ask", ["exactly", "message", "over the limit"])
def test_a_huge_declared_size_costs_only_what_arrives(stream_address: str, flavour: str, ask: str) -> None:
    """A peer declares 1 GiB, sends 10 bytes and closes: IncompleteRead (or ProtocolError over
    the limit), never MemoryError, and the reads never allocate the declared size."""
    import tracemalloc

    with enchufe.listen(stream_address) as listener:

        def peer() -> None:
            with listener.accept() as server:
                server.send_all(struct.pack("!I", 1 << 30) + b"0123456789")

        feeder = threading.Thread(target=peer)
        feeder.start()
        tracemalloc.start()
        try:
            error = _read_declared(flavour, connectable(listener.address), ask)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            feeder.join(IO_TIMEOUT)
    if ask == "over the limit":
        assert not isinstance(error, IncompleteRead)
        assert "larger than the limit" in str(error)
    else:
        assert isinstance(error, IncompleteRead)
        assert error.partial == b"0123456789"
    assert peak < 16 * 1024 * 1024, f"{peak} bytes allocated for 10 bytes received"


# --- errors --------------------------------------------------------------------------------------


def _reset(server: Connection) -> None:
    """Make the server's close abort the connection instead of ending it cleanly."""
    if server.socket.family == socket.AF_UNIX:
        # A unix socket closed with unread data resets its peer.
        for _ in range(100):
            if server.socket.recv(1, socket.MSG_PEEK):
                break
            time.sleep(0.01)
    else:
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.close()


def test_peer_reset_on_recv(stream_address: str) -> None:
    with connected(stream_address) as (_listener, client, server):
        client.send_all(b"unread")
        _reset(server)
        with pytest.raises(ConnectionReset, match="reset") as info:
            client.recv()
        assert info.value.errno == errno.ECONNRESET
        assert isinstance(info.value.__cause__, OSError)


def test_peer_reset_on_send(stream_address: str) -> None:
    with connected(stream_address) as (_listener, client, server):
        client.send_all(b"unread")
        _reset(server)
        with pytest.raises(ConnectionReset) as info:
            for _ in range(1000):
                client.send_all(b"x" * 1024)
        assert info.value.errno in (errno.ECONNRESET, errno.EPIPE)


def test_refused_connect_says_what_to_do(stream_address: str) -> None:
    target = closed_address(stream_address)
    with pytest.raises(ConnectionRefused) as info:
        enchufe.connect(target)
    message = str(info.value)
    assert message.startswith(f"cannot connect to {target}: ")
    if target.startswith("unix://"):
        assert info.value.errno == errno.ENOENT
        assert "start the server first" in message
    else:
        assert info.value.errno == errno.ECONNREFUSED
        assert "connection refused" in message
        assert "listening there" in message
    assert info.value.attempts == (info.value,)


def test_failed_retries_keep_every_attempt(stream_address: str) -> None:
    target = closed_address(stream_address)
    started = time.monotonic()
    with pytest.raises(ConnectionRefused, match=r"\(3 attempts\)") as info:
        enchufe.connect(target, retries=2, retry_delay=0.05)
    assert time.monotonic() - started >= 0.1  # two waits between three attempts
    attempts = info.value.attempts
    assert len(attempts) == 3
    assert attempts[-1] is info.value
    assert all(isinstance(a, ConnectionRefused) for a in attempts)


def test_retry_succeeds_when_the_server_appears_late(stream_address: str, trace_lines: list[str]) -> None:
    target = closed_address(stream_address)
    trace_lines.clear()

    def late_server() -> bytes:
        time.sleep(0.5)
        with trace.actor("server"), enchufe.listen(target) as listener, listener.accept() as conn:
            conn.set_timeout(IO_TIMEOUT)
            request = conn.recv_exactly(5)
            conn.send_all(request.upper())
            return request

    peer = Peer(late_server)
    with enchufe.connect(target, retries=10, retry_delay=0.1) as client:
        client.set_timeout(IO_TIMEOUT)
        client.send_all(b"hello")
        assert client.recv_exactly(5) == b"HELLO"
    assert peer.result() == b"hello"
    # Every attempt used a new socket, and every socket was closed.
    mine = [line for line in trace_lines if not line.startswith("server")]
    sockets = [line for line in mine if line.startswith("socket(")]
    failures = [line for line in mine if line.startswith("connect(") and "= -1" in line]
    closes = [line for line in mine if line.startswith("close(")]
    assert len(sockets) >= 2, mine
    assert len(failures) == len(sockets) - 1
    assert len(closes) == len(sockets)


# --- bulk integrity ------------------------------------------------------------------------------

BULK = 64 * 1024 * 1024
BLOCK = 1024 * 1024
_SEND_LINE = re.compile(r"^send\(fd \d+, (\d+) bytes\) = (\d+)$")


@pytest.mark.slow
def test_64_mib_arrive_intact_through_partial_sends(stream_address: str) -> None:
    """64 MiB with sha256 checked on both sides.

    The sender has a small SO_SNDBUF and a timeout (which makes Python's socket non-blocking
    under the hood), so the kernel takes less than asked on many ``send()`` calls: ``send_all``
    must loop over partial sends without losing or repeating a byte.  The trace proves it.
    """
    counts = {"sends": 0, "partial": 0}

    def count(line: str) -> None:
        match = _SEND_LINE.match(line)
        if match:
            counts["sends"] += 1
            counts["partial"] += int(match.group(2)) < int(match.group(1))

    base = os.urandom(BLOCK)
    with connected(stream_address) as (_listener, client, server):

        def receive() -> tuple[int, str]:
            digest = hashlib.sha256()
            size = 0
            for _ in range(BULK):  # bounded: every recv returns at least one byte or EOF
                chunk = server.recv()
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
            return size, digest.hexdigest()

        client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        client.set_timeout(30)
        peer = Peer(receive)
        sent = hashlib.sha256()
        trace.enable(count)
        try:
            for i in range(BULK // BLOCK):
                block = i.to_bytes(4, "big") + base[4:]  # every block differs: order matters
                sent.update(block)
                client.send_all(block)
        finally:
            trace.disable()
        client.shutdown_write()
        size, digest = peer.result(timeout=60)
    assert size == BULK
    assert digest == sent.hexdigest()
    assert counts["partial"] > 0, counts
    assert counts["sends"] > BULK // BLOCK


# --- listeners -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", kind_params(TCP_KINDS))
def test_listener_reports_the_real_port(kind: str, make_address: Callable[[str], str]) -> None:
    with enchufe.listen(make_address(kind)) as listener:
        address = listener.address
        assert isinstance(address, InetAddress)
        assert address.port != 0
        assert address.port == listener.socket.getsockname()[1]
        assert address.family == int(kind[-1])
        assert enchufe.parse(str(address)) == address
        with enchufe.connect(address):
            pass


@needs_ipv6
def test_wildcard_listener_reports_the_wildcard() -> None:
    with enchufe.listen("tcp://:0") as listener:
        address = listener.address
        assert isinstance(address, InetAddress)
        assert address.host == ""
        assert address.port == listener.socket.getsockname()[1] != 0
        assert str(address) == f"tcp://:{address.port}"  # not tcp://[::]:P, which is IPv6 only


def test_iteration_stops_when_closed_from_another_thread(stream_address: str) -> None:
    listener = enchufe.listen(stream_address)
    accepted: list[Connection] = []
    arrived = threading.Event()

    def serve() -> None:
        for conn in listener:
            accepted.append(conn)
            arrived.set()

    peer = Peer(serve)
    try:
        with enchufe.connect(connectable(listener.address)):
            assert arrived.wait(IO_TIMEOUT)
        time.sleep(0.1)  # the loop is blocked in accept() again
        assert peer.is_alive()
        listener.close()
        peer.result(timeout=5)
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
    assert len(accepted) == 1


def test_close_wakes_a_blocked_accept(stream_address: str) -> None:
    listener = enchufe.listen(stream_address)

    def accept() -> Connection:
        return listener.accept()

    peer = Peer(accept)
    time.sleep(0.2)
    assert peer.is_alive()
    listener.close()
    with pytest.raises(ClosedError, match="closed"):
        peer.result(timeout=5)
    with pytest.raises(ClosedError):
        listener.accept()
    listener.close()  # idempotent
    assert listener.closed


@pytest.mark.parametrize("kind", kind_params(UNIX_STREAM_KINDS))
def test_peer_credentials_on_unix(kind: str, make_address: Callable[[str], str]) -> None:
    with connected(make_address(kind)) as (_listener, client, server):
        me = Credentials(os.getpid(), os.getuid(), os.getgid())
        assert server.peer_credentials == me
        assert client.peer_credentials == me


@pytest.mark.parametrize("kind", kind_params(TCP_KINDS))
def test_peer_credentials_none_on_tcp(kind: str, make_address: Callable[[str], str]) -> None:
    with connected(make_address(kind)) as (_listener, client, server):
        assert server.peer_credentials is None
        assert client.peer_credentials is None


@needs_ipv6
@pytest.mark.parametrize("address", ["tcp6://:0", "tcp://[::]:0"])
def test_ipv6_listener_is_ipv6_only(address: str) -> None:
    with enchufe.listen(address) as listener:
        assert listener.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        port = listener.socket.getsockname()[1]
        with pytest.raises(ConnectionRefused):
            enchufe.connect(f"tcp://127.0.0.1:{port}")
        with enchufe.connect(f"tcp://[::1]:{port}"), listener.accept() as server:
            assert isinstance(server.peer_address, InetAddress)
            assert server.peer_address.host == "::1"


@needs_ipv6
def test_wildcard_listener_is_dual_stack() -> None:
    with enchufe.listen("tcp://:0") as listener:
        assert listener.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        port = listener.socket.getsockname()[1]
        # An IPv4 client is reported as IPv4 (tcp://127.0.0.1:P), never as ::ffff:127.0.0.1.
        for host, seen in (("127.0.0.1", "tcp://127.0.0.1"), ("[::1]", "tcp://[::1]")):
            with enchufe.connect(f"tcp://{host}:{port}") as client, listener.accept() as server:
                assert isinstance(client.local_address, InetAddress)
                assert str(server.peer_address) == f"{seen}:{client.local_address.port}"
                assert str(server.local_address) == f"{seen}:{port}"
                client.send_all(b"hi")
                server.set_timeout(IO_TIMEOUT)
                assert server.recv_exactly(2) == b"hi"


@pytest.mark.parametrize("kind", kind_params(TCP_KINDS))
def test_tcp_listener_sets_so_reuseaddr(kind: str, make_address: Callable[[str], str]) -> None:
    with enchufe.listen(make_address(kind)) as listener:
        assert listener.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0


@pytest.mark.parametrize("kind", kind_params(TCP_KINDS))
def test_restart_on_a_port_with_time_wait_connections(kind: str, make_address: Callable[[str], str]) -> None:
    """The server closes first, so its side lingers in TIME_WAIT; a new listener still binds."""
    with connected(make_address(kind)) as (listener, client, server):
        address = listener.address
        server.close()
        assert client.recv() == b""
    with enchufe.listen(address) as again:
        assert again.address == address


# --- closed connections --------------------------------------------------------------------------


def test_closed_connection_refuses_use(stream_address: str) -> None:
    with connected(stream_address) as (_listener, client, _server):
        client.close()
        client.close()  # idempotent
        assert client.closed
        for call in (
            client.recv,
            lambda: client.send_all(b"x"),
            client.shutdown_write,
            lambda: client.recv_exactly(1),
            client.recv_until,
            lambda: client.set_timeout(1),
        ):
            with pytest.raises(ClosedError):
                call()


def test_timeout_on_recv_exactly_is_timed_out(stream_address: str) -> None:
    with connected(stream_address) as (_listener, client, _server):
        client.set_timeout(0.05)
        raised: list[BaseException] = []

        def read() -> None:
            try:
                client.recv_exactly(1)
            except BaseException as exc:
                raised.append(exc)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(IO_TIMEOUT)  # a recv_exactly that ignores its timeout fails here, not hangs
        assert not reader.is_alive() and raised, "recv_exactly did not time out"
        with pytest.raises(TimedOut, match="timed out"):
            raise raised[0]

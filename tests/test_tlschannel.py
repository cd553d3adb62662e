"""The sans-I/O TLS channel, driven over real loopback sockets: handshakes, 4 MiB each way with
checksums, TLS 1.3 half-close both ways, truncation, and a peer that does not speak TLS."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import select
import socket
import ssl
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import trustme

from enchufe import _tls
from enchufe.tlschannel import TLSChannel, TLSTruncated
from enchufe.tlsparams import TLSParams, parse_query

STEP = 10.0


class Driven:
    """A blocking driver: the loop every real driver (sync, asyncio, relay) runs around a channel."""

    def __init__(self, sock: socket.socket, channel: TLSChannel) -> None:
        self.sock = sock
        self.channel = channel
        sock.settimeout(STEP)
        # A reader's flush may take the ciphertext a writer just made: taking and sending go
        # together, or two threads' sendall would interleave records (a bad MAC, seen under load).
        self._send_lock = threading.Lock()

    def flush(self, *, wait: bool = True) -> None:
        """Send what the channel made; with ``wait=False`` (a reader) nothing when another
        thread is sending: it sends until nothing is left, and the reader must not block."""
        if not self._send_lock.acquire(blocking=wait):
            return
        try:
            while out := self.channel.outgoing():
                self.sock.sendall(out)
        finally:
            self._send_lock.release()

    def pull(self) -> None:
        self.channel.feed(self.sock.recv(65536))

    def handshake(self) -> None:
        try:
            while not self.channel.handshake():
                self.flush()
                self.pull()
        finally:
            with contextlib.suppress(OSError):
                self.flush()  # the last flight, or the alert that says why not

    def recv(self, size: int = 65536) -> bytes:
        while True:
            data = self.channel.read(size)
            self.flush(wait=False)
            if data is not None:
                return data
            self.pull()

    def recv_all(self) -> bytes:
        chunks = []
        while chunk := self.recv():
            chunks.append(chunk)
        return b"".join(chunks)

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(view), 65536):
            self.channel.write(view[start : start + 65536])
            self.flush()

    def shutdown_write(self) -> None:
        self.channel.close_write()
        self.flush()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def contexts(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    return client, server


@pytest.fixture
def pair(contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> Iterator[tuple[Driven, Driven]]:
    """A connected client and server channel over loopback TCP, handshake done."""
    client_ctx, server_ctx = contexts
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname(), timeout=STEP)
        b, _ = listener.accept()
    client = Driven(a, TLSChannel(client_ctx, TLSParams(), server_side=False, server_hostname="localhost"))
    server = Driven(b, TLSChannel(server_ctx, TLSParams(), server_side=True))
    both(client.handshake, server.handshake)
    try:
        yield client, server
    finally:
        a.close()
        b.close()


def both(first: Callable[[], object], second: Callable[[], object]) -> None:
    """Run two blocking steps at once (each side of a handshake waits for the other)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            second()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        first()
    finally:
        thread.join(STEP)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


def test_handshake_reports_version_cipher_and_peer(pair: tuple[Driven, Driven]) -> None:
    client, server = pair
    assert client.channel.info is not None and server.channel.info is not None
    assert client.channel.info.version == "TLSv1.3"
    assert client.channel.info.cipher == server.channel.info.cipher
    assert client.channel.info.peer is not None and ("DNS", "localhost") in client.channel.info.peer.sans
    assert server.channel.info.peer is None  # no client certificate asked for


def test_four_mib_each_way_arrive_whole(pair: tuple[Driven, Driven]) -> None:
    client, server = pair
    up, down = os.urandom(4 << 20), os.urandom(4 << 20)
    got: dict[str, bytes] = {}

    def server_side() -> None:
        got["up"] = b""
        reader = threading.Thread(target=lambda: got.__setitem__("up", server.recv_all()))
        reader.start()
        server.sendall(down)
        server.shutdown_write()
        reader.join(STEP * 3)

    def client_side() -> None:
        def send() -> None:
            client.sendall(up)
            client.shutdown_write()

        sender = threading.Thread(target=send)
        sender.start()
        got["down"] = client.recv_all()
        sender.join(STEP * 3)

    # Each side reads and writes from two threads: the channel is shared, so serialise it.
    lock_client, lock_server = threading.Lock(), threading.Lock()
    _serialise(client, lock_client)
    _serialise(server, lock_server)
    both(client_side, server_side)
    assert hashlib.sha256(got["up"]).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got["down"]).digest() == hashlib.sha256(down).digest()


def _serialise(driven: Driven, lock: threading.Lock) -> None:
    """Wrap the channel calls of ``driven`` in ``lock`` (reads block in recv outside of it)."""
    channel = driven.channel
    for name in ("read", "write", "close_write", "outgoing", "feed"):
        method = getattr(channel, name)

        def locked(*args: object, _method: Callable[..., object] = method) -> object:
            with lock:
                return _method(*args)

        setattr(channel, name, locked)


@pytest.mark.parametrize("closer", ["client", "server"])
def test_half_close_the_other_side_still_answers(pair: tuple[Driven, Driven], closer: str) -> None:
    """TLS 1.3 half-close: the side that sent close_notify still reads the answer that follows."""
    client, server = pair
    first, other = (client, server) if closer == "client" else (server, client)
    first.sendall(b"question")
    first.shutdown_write()
    assert other.recv_all() == b"question"  # close_notify read as EOF
    other.sendall(b"answer after your EOF")
    other.shutdown_write()
    assert first.recv_all() == b"answer after your EOF"


def test_close_write_keeps_data_that_had_already_arrived(pair: tuple[Driven, Driven]) -> None:
    """Records already received (even decrypted) when close_notify goes out are not dropped."""
    client, server = pair
    server.sendall(b"early " * 1000)
    first = None
    for _ in range(100):  # session tickets may come first
        client.pull()
        if (first := client.channel.read(10)) is not None:
            break
    assert first == b"early earl"  # the rest waits: decrypted in OpenSSL's buffer, or in the BIO
    client.shutdown_write()
    rest = b""
    while len(rest) < 6000 - 10:
        rest += client.recv()
    assert b"early earl" + rest == b"early " * 1000


def test_a_close_without_close_notify_is_truncation(pair: tuple[Driven, Driven]) -> None:
    client, server = pair
    server.sendall(b"partial")
    server.sock.shutdown(socket.SHUT_WR)  # TCP FIN, no close_notify
    assert client.recv() == b"partial"
    with pytest.raises(TLSTruncated, match="without TLS close_notify"):
        client.recv()


def test_a_plain_client_on_a_tls_server_is_named_by_what_it_sent(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    _, server_ctx = contexts
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        server = Driven(b, TLSChannel(server_ctx, TLSParams(), server_side=True))
        with pytest.raises(_tls.TLSRefused) as info:
            server.handshake()
    assert info.value.reason == "not-tls"
    assert "it sent 'SSH-2.0-OpenSSH_9.2\\r\\n' instead" in str(info.value)


def test_a_peer_that_closes_during_the_handshake(contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    client_ctx, _ = contexts
    a, b = socket.socketpair()
    with a, b:
        b.close()
        client = Driven(
            a, TLSChannel(client_ctx, TLSParams(), server_side=False, server_hostname="localhost")
        )
        with pytest.raises((_tls.TLSRefused, OSError)) as info:
            client.handshake()
    if isinstance(info.value, _tls.TLSRefused):
        assert info.value.reason == "closed"


def test_a_wrong_pin_fails_the_handshake(contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    _, server_ctx = contexts
    params = parse_query("pin=sha256:" + "00" * 32)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname(), timeout=STEP)
        b, _ = listener.accept()
    with a, b:
        client = Driven(
            a, TLSChannel(_tls.client_context(params), params, server_side=False, server_hostname="localhost")
        )
        server = Driven(b, TLSChannel(server_ctx, TLSParams(), server_side=True))

        def serve() -> None:
            with contextlib.suppress(Exception):
                server.handshake()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with pytest.raises(_tls.TLSRefused) as info:
            client.handshake()
        a.close()
        thread.join(STEP)
    assert info.value.reason == "pin-mismatch"


def test_interop_with_the_standard_library_ssl_socket(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """The channel against ``SSLSocket`` (OpenSSL driving the socket itself) on the other end."""
    client_ctx, server_ctx = contexts
    with socket.create_server(("127.0.0.1", 0)) as listener:
        raw = socket.create_connection(listener.getsockname(), timeout=STEP)
        b, _ = listener.accept()
    received: list[bytes] = []

    def stdlib_server() -> None:
        with server_ctx.wrap_socket(b, server_side=True) as tls:
            tls.settimeout(STEP)
            chunks = []
            while chunk := tls.recv(65536):
                chunks.append(chunk)
            received.append(b"".join(chunks))
            tls.sendall(b"bye")
            tls.unwrap()

    thread = threading.Thread(target=stdlib_server, daemon=True)
    thread.start()
    with raw:
        client = Driven(
            raw, TLSChannel(client_ctx, TLSParams(), server_side=False, server_hostname="localhost")
        )
        client.handshake()
        payload = os.urandom(1 << 20)
        client.sendall(payload)
        client.shutdown_write()
        assert client.recv_all() == b"bye"
    thread.join(STEP)
    assert received == [payload]


def test_one_read_returns_every_record_already_received(pair: tuple[Driven, Driven]) -> None:
    """A record holds 16 KiB at most; a read asked for more gathers the records that are
    there, so a driver goes round its stack once per read, not once per record."""
    client, server = pair
    payload = os.urandom(64 * 1024)
    server.sendall(payload)
    server.shutdown_write()
    server.sock.shutdown(socket.SHUT_WR)
    while chunk := client.sock.recv(65536):  # every record into the channel, none read yet
        client.channel.feed(chunk)
    assert client.channel.read(1 << 20) == payload
    assert client.channel.read(1 << 20) == b""  # then close_notify, as it came


def test_receive_encrypt_and_more_drive_a_pump_that_reads_only_when_needed(
    pair: tuple[Driven, Driven],
) -> None:
    """The relay's way: ``encrypt`` makes the records, ``receive`` feeds and reads in one call,
    and the socket is read only while ``more`` is False: records glued together (close_notify
    behind data) are all delivered, and nothing is waited for that has come already."""
    client, server = pair
    channel = server.channel

    def step() -> bytes | None:
        return channel.read() if channel.more else channel.receive(server.sock.recv(65536))

    client.sock.sendall(client.channel.encrypt(b"ping"))
    while (data := step()) is None:
        pass
    assert data == b"ping" and not channel.more  # a whole record, nothing behind it
    glued = client.channel.encrypt(b"one") + client.channel.encrypt(b"two")
    client.channel.close_write()
    client.sock.sendall(glued + client.channel.outgoing())
    got = b""
    while (data := step()) != b"":  # a recv that waits for what came already times out
        got += data or b""
    assert got == b"onetwo"


@pytest.mark.parametrize("record", [16384, 8192, 4096])
def test_on_a_socket_one_read_takes_every_full_record_of_the_peers_size(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], record: int
) -> None:
    """A peer fills its records to a size of its own (socat: 8 KiB): records of that size are
    full ones, and one read takes all there are, up to the short one that ends them."""
    client_ctx, server_ctx = contexts
    with socket.create_server(("127.0.0.1", 0)) as listener:
        raw = socket.create_connection(listener.getsockname(), timeout=STEP)
        b, _ = listener.accept()
    with raw, b:
        server = TLSChannel(server_ctx, TLSParams(), server_side=True, sock=b)

        def handshake() -> None:
            while not server.handshake():
                select.select([b], [b] if server.wants_write else [], [], STEP)

        with client_ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False) as tls:
            both(tls.do_handshake, handshake)
            assert tls.version() == "TLSv1.3"
            payload = os.urandom(6 * record + 100)
            for start in range(0, len(payload), record):
                tls.sendall(payload[start : start + record])  # one record per call
            # TLS 1.3: a record carries 22 bytes more (header, content type, tag).
            ciphertext = len(payload) + 7 * 22
            deadline = time.monotonic() + STEP
            while _queued(b) < ciphertext and time.monotonic() < deadline:
                time.sleep(0.001)
            assert _queued(b) == ciphertext
            buffer = memoryview(bytearray(1 << 20))
            n = server.read_into(buffer)
            assert n == len(payload) and buffer[:n] == payload
            assert server.drained  # the short record ended it: the socket is epoll's again


def _queued(sock: socket.socket) -> int:
    """Bytes waiting in ``sock``'s receive queue."""
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0])

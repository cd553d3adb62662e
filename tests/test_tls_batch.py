"""A channel on its socket sends a large write's records together (enchufe._tls_batch): what the
socket cannot take waits, in order, behind anything OpenSSL writes meanwhile, and every byte
arrives (sha256), across a key update the peer asks for while records wait."""

from __future__ import annotations

import ctypes
import gc
import hashlib
import os
import select
import socket
import ssl
import threading
from collections.abc import Generator, Iterator

import pytest

from enchufe import _tls_batch, _tls_sessions, _tls_verify
from enchufe.tlschannel import TLSChannel
from enchufe.tlsparams import TLSParams
from tests import test_tlschannel

#: The fixtures of tests/test_tlschannel.py: a trustme CA, and client and server contexts.
ca = test_tlschannel.ca
contexts = test_tlschannel.contexts

STEP = 10.0
CHUNK = 256 * 1024


@pytest.fixture
def connected(contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> Iterator[tuple[TLSChannel, ssl.SSLSocket]]:
    """A server channel on its socket (small send buffer, so that a batch is taken in part) and
    a standard-library client, handshake done."""
    yield from _connect(contexts)


def _connect(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> Generator[tuple[TLSChannel, ssl.SSLSocket], None, None]:
    if _tls_batch._libraries() is None:
        pytest.skip("this Python's OpenSSL cannot be reached: records go one by one")
    client_ctx, server_ctx = contexts
    with socket.create_server(("127.0.0.1", 0)) as listener:
        raw = socket.create_connection(listener.getsockname(), timeout=STEP)
        sock, _ = listener.accept()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
    server = TLSChannel(server_ctx, TLSParams(), server_side=True, sock=sock)
    client = client_ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
    done = threading.Event()

    def shake() -> None:
        client.do_handshake()
        done.set()

    thread = threading.Thread(target=shake, daemon=True)
    thread.start()
    while not server.handshake():
        select.select([sock], [sock] if server.wants_write else [], [], STEP)
    thread.join(STEP)
    assert done.is_set()
    try:
        yield server, client
    finally:
        client.close()
        sock.close()


def _send_all(server: TLSChannel, data: bytes) -> int:
    """Send ``data`` in :data:`CHUNK` writes, waiting for room; how many calls found it full."""
    assert server.sock is not None
    full = 0
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        chunk = view[start : start + CHUNK]
        while not server.send(chunk):
            full += 1
            assert select.select([], [server.sock], [], STEP)[1], "no room for STEP seconds"
    return full


def _read_exactly(client: ssl.SSLSocket, size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        part = client.recv(min(65536, size - got))
        assert part, "EOF before all arrived"
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def test_a_batch_the_socket_takes_in_part_arrives_whole(connected: tuple[TLSChannel, ssl.SSLSocket]) -> None:
    server, client = connected
    payload = os.urandom(4 * 1024 * 1024 + 123)
    received: list[bytes] = []
    reader = threading.Thread(
        target=lambda: received.append(_read_exactly(client, len(payload))), daemon=True
    )
    reader.start()
    full = _send_all(server, payload)
    reader.join(STEP)
    assert received and hashlib.sha256(received[0]).digest() == hashlib.sha256(payload).digest()
    assert full > 0, "the socket always took a whole batch: the waiting path was not exercised"
    assert server._batch is not None and not server._batch.owing


def test_records_waiting_for_room_stay_ahead_of_a_key_update_and_what_follows(
    connected: tuple[TLSChannel, ssl.SSLSocket],
) -> None:
    """The client asks for a key update while the server owes it part of a batch: the owed
    records (old keys) must reach it before the server's key update and the records after it
    (new keys), or it could not decrypt them."""
    server, client = connected
    sock = server.sock
    assert sock is not None
    libraries = _tls_verify.libraries()
    pointer = _tls_sessions.ssl_pointer(client)  # type: ignore[arg-type]
    if libraries is None or pointer is None:
        pytest.skip("the client's SSL * cannot be reached to ask for a key update")
    libssl = libraries[0]
    libssl.SSL_key_update.argtypes = [ctypes.c_void_p, ctypes.c_int]
    libssl.SSL_key_update.restype = ctypes.c_int
    first, second = os.urandom(3 * CHUNK), os.urandom(3 * CHUNK)
    # The first batch, until the socket takes only part of one: records are owed.
    view, sent = memoryview(first), 0
    while sent < len(first):
        if not server.send(view[sent : sent + CHUNK]):
            break
        sent += CHUNK
    assert sent < len(first) and server._batch is not None and server._batch.owing
    # SSL_KEY_UPDATE_REQUESTED; it goes with the client's next record.
    assert libssl.SSL_key_update(pointer, 1) == 1
    client.sendall(b"k")
    while (got := server.read(16)) is None:
        assert select.select([sock], [], [], STEP)[0]
    assert got == b"k"  # the server read the key update: its answer goes with its next write
    received: list[bytes] = []
    size = len(first) + len(second)
    reader = threading.Thread(target=lambda: received.append(_read_exactly(client, size)), daemon=True)
    reader.start()
    chunk = view[sent : sent + CHUNK]
    while not server.send(chunk):  # the same bytes again, as the contract says
        assert select.select([], [sock], [], STEP)[1]
    _send_all(server, first[sent + CHUNK :] + second)
    reader.join(STEP)
    assert received and hashlib.sha256(received[0]).digest() == hashlib.sha256(first + second).digest()


def test_close_write_sends_the_owed_records_before_close_notify(
    connected: tuple[TLSChannel, ssl.SSLSocket],
) -> None:
    server, client = connected
    payload = os.urandom(3 * CHUNK)
    view, sent = memoryview(payload), 0
    while sent < len(payload) and server.send(view[sent : sent + CHUNK]):
        sent += CHUNK
    assert server._batch is not None and server._batch.owing
    # A driver that gives up on the rest (a cancelled send) and closes: what OpenSSL made goes
    # first, then close_notify; the client sees a clean EOF after exactly that.
    server.close_write()
    assert server._batch is not None and not server._batch.owing
    assert server.sock is not None
    out = server.outgoing()
    received: list[bytes] = []

    def read_to_eof() -> None:
        parts = []
        while part := client.recv(65536):
            parts.append(part)
        received.append(b"".join(parts))

    reader = threading.Thread(target=read_to_eof, daemon=True)
    reader.start()
    server.sock.setblocking(True)
    server.sock.sendall(out)
    reader.join(STEP)
    assert received and received[0] == payload[: sent + CHUNK]


def test_a_small_write_is_one_record_as_before(connected: tuple[TLSChannel, ssl.SSLSocket]) -> None:
    server, client = connected
    assert server.send(b"x" * _tls_batch.BATCH_ABOVE) == _tls_batch.BATCH_ABOVE
    assert server._batch is None  # made by the first write larger than a record
    assert _read_exactly(client, _tls_batch.BATCH_ABOVE) == b"x" * _tls_batch.BATCH_ABOVE


def test_a_write_larger_than_a_batch_goes_record_by_record(
    connected: tuple[TLSChannel, ssl.SSLSocket],
) -> None:
    """Above BATCH_UP_TO the records are not all kept while the socket is full: OpenSSL writes
    them one by one, as before (it keeps one), and all of them arrive."""
    server, client = connected
    payload = os.urandom(4 * _tls_batch.BATCH_UP_TO)
    received: list[bytes] = []
    reader = threading.Thread(
        target=lambda: received.append(_read_exactly(client, len(payload))), daemon=True
    )
    reader.start()
    assert server.sock is not None
    while not server.send(payload):  # the same bytes again until all went
        assert select.select([], [server.sock], [], STEP)[1]
    reader.join(STEP)
    assert server._batch is None
    assert received and hashlib.sha256(received[0]).digest() == hashlib.sha256(payload).digest()


def test_a_connection_let_go_while_records_wait_leaves_the_next_one_whole(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """Dropped with records owed (its peer gone, say): its BIOs are freed with it, and the next
    connection of this thread batches as before."""
    first = _connect(contexts)
    server, _client = next(first)
    payload = os.urandom(3 * CHUNK)
    view, sent = memoryview(payload), 0
    while sent < len(payload) and server.send(view[sent : sent + CHUNK]):
        sent += CHUNK
    assert server._batch is not None and server._batch.owing
    del server, view
    first.close()
    gc.collect()
    second = _connect(contexts)
    server, client = next(second)
    received: list[bytes] = []
    reader = threading.Thread(
        target=lambda: received.append(_read_exactly(client, len(payload))), daemon=True
    )
    reader.start()
    _send_all(server, payload)
    reader.join(STEP)
    assert received and received[0] == payload
    second.close()

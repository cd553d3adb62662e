"""The sync TLS connection's non-blocking calls (``send_nowait``, ``recv_nowait``,
``shutdown_write_nowait``, ``flush_nowait``, ``wants_write``), for a caller that polls the socket
itself as the stdio pump does: would-block, a full socket, half-close and close_notify."""

from __future__ import annotations

import hashlib
import os
import select
import threading

import pytest

from enchufe import sync
from tests.conformance.conftest import IO_TIMEOUT
from tests.conftest import Peer
from tests.tls.conftest import read_to_eof, tls_connected

pytestmark = pytest.mark.timeout(60)


def wait_for(sock_fd: int, event: int) -> None:
    poller = select.poll()
    poller.register(sock_fd, event)
    assert poller.poll(IO_TIMEOUT * 1000), "the socket never became ready"


def test_nowait_calls_move_a_payload_both_ways_through_a_full_socket(pem: dict[str, str]) -> None:
    payload = os.urandom(8 * 1024 * 1024)
    client_blocked = threading.Event()
    with tls_connected(sync, f"tls4://127.0.0.1:0?cert={pem['server']}", f"ca={pem['ca']}") as (
        _,
        client,
        server,
    ):

        def serve() -> bytes:
            client_blocked.wait(IO_TIMEOUT)  # not read before the client met a full socket
            got = read_to_eof(server)
            server.send_all(hashlib.sha256(got).digest())
            server.shutdown_write()
            return got

        peer = Peer(serve)
        client.socket.setblocking(False)
        fd = client.socket.fileno()
        assert client.recv_nowait() is None  # nothing sent yet: would block
        view = memoryview(payload)
        offset = 0
        for _ in range(100_000):
            if offset == len(payload):
                break
            sent = client.send_nowait(view[offset:])
            if sent == 0:
                client_blocked.set()
                wait_for(fd, select.POLLOUT)
            offset += sent
        assert offset == len(payload) and client_blocked.is_set()
        done = client.shutdown_write_nowait()
        for _ in range(1000):
            if done:
                break
            assert client.wants_write
            wait_for(fd, select.POLLOUT)
            done = client.flush_nowait()
        assert done and not client.wants_write
        answer = b""
        for _ in range(1000):
            chunk = client.recv_nowait()
            if chunk is None:
                wait_for(fd, select.POLLIN)
            elif not chunk:
                break  # the server's close_notify
            else:
                answer += chunk
        assert peer.result(IO_TIMEOUT * 3) == payload
        assert answer == hashlib.sha256(payload).digest()
        assert client.recv_nowait() == b""


@pytest.mark.parametrize("size", [16 * 1024, 256 * 1024])
def test_recv_into_nowait_decrypts_into_the_buffer_until_close_notify(pem: dict[str, str], size: int) -> None:
    """A stream read with ``recv_into_nowait`` (as the stdio pump reads it) arrives whole: the
    counts, ``None`` while nothing is there, ``0`` at close_notify, and again after it."""
    payload = os.urandom(4 * 1024 * 1024 + 77)
    with tls_connected(sync, f"tls4://127.0.0.1:0?cert={pem['server']}", f"ca={pem['ca']}") as (
        _,
        client,
        server,
    ):
        client.socket.setblocking(False)
        buffer = memoryview(bytearray(size))
        assert client.recv_into_nowait(buffer) is None  # nothing sent yet: would block

        def serve() -> None:
            server.send_all(payload)
            server.shutdown_write()

        peer = Peer(serve)
        fd = client.socket.fileno()
        parts: list[bytes] = []
        largest = 0
        for _ in range(100_000):
            got = client.recv_into_nowait(buffer)
            if got is None:
                wait_for(fd, select.POLLIN)
            elif got == 0:
                break  # the server's close_notify
            else:
                parts.append(bytes(buffer[:got]))
                largest = max(largest, got)
        peer.result(IO_TIMEOUT)
        assert hashlib.sha256(b"".join(parts)).digest() == hashlib.sha256(payload).digest()
        assert client.recv_into_nowait(buffer) == 0
        assert largest <= size

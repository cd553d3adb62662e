"""``enchufe listen`` ↔ ``enchufe connect`` on the four stream kinds, as two processes."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import struct
from collections.abc import Callable

import pytest

import enchufe
from tests.conftest import STREAM_KINDS, kind_params

from .conftest import Spawn

PAYLOAD = 2 * 1024 * 1024
EOF_TRACE = r"^recv\(fd \d+, \d+\) = 0 \(EOF\)$"
SHUT_WR_TRACE = r"^shutdown\(fd \d+, SHUT_WR\)$"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("kind", kind_params(STREAM_KINDS))
def test_both_directions_at_once_carry_every_byte(
    kind: str, make_address: Callable[[str], str], spawn: Spawn
) -> None:
    """2 MiB each way at the same time: what one stdin gets is what the other stdout prints."""
    to_client, to_server = os.urandom(PAYLOAD), os.urandom(PAYLOAD)
    server = spawn("listen", make_address(kind))
    address = server.listening()
    server.feed(to_client)
    client = spawn("connect", address)
    client.feed(to_server)

    assert client.finish() == 0, client.err
    assert server.finish() == 0, server.err
    assert len(server.out) == PAYLOAD and digest(server.out) == digest(to_server)
    assert len(client.out) == PAYLOAD and digest(client.out) == digest(to_client)
    assert "Traceback" not in server.err + client.err


@pytest.mark.parametrize("kind", kind_params(STREAM_KINDS))
def test_connect_stdin_eof_half_closes_and_listen_can_still_answer(
    kind: str, make_address: Callable[[str], str], spawn: Spawn
) -> None:
    """connect's stdin ends → listen reads EOF, yet what listen sends afterwards still arrives."""
    server = spawn("--trace", "listen", make_address(kind))
    client = spawn("connect", server.listening())
    request = b"request \x00\xff\n"
    client.feed(request)  # and EOF

    server.wait_out_equal(request)
    server.wait_err(EOF_TRACE)  # the server saw the client's EOF ...
    assert server.running() and client.running()
    answer = os.urandom(100_000)
    server.feed(answer)  # ... and answers after it
    client.wait_out_equal(answer)

    assert client.finish() == 0, client.err
    assert server.finish() == 0, server.err
    assert server.out == request
    assert client.out == answer


@pytest.mark.parametrize("kind", kind_params(STREAM_KINDS))
def test_listen_stdin_eof_half_closes_and_connect_can_still_answer(
    kind: str, make_address: Callable[[str], str], spawn: Spawn
) -> None:
    """The reverse: listen's stdin ends first; connect reads EOF and can still send."""
    server = spawn("--trace", "listen", make_address(kind))
    greeting = b"greeting\n"
    server.feed(greeting)  # and EOF, before any client
    client = spawn("--trace", "connect", server.listening())

    client.wait_out_equal(greeting)
    server.wait_err(SHUT_WR_TRACE)
    client.wait_err(EOF_TRACE)
    assert server.running() and client.running()
    answer = os.urandom(100_000)
    client.feed(answer)
    server.wait_out_equal(answer)

    assert client.finish() == 0, client.err
    assert server.finish() == 0, server.err
    assert client.out == greeting
    assert server.out == answer


def test_keep_open_serves_client_after_client(make_address: Callable[[str], str], spawn: Spawn) -> None:
    server = spawn("listen", "-k", "-v", make_address("tcp4"), stdin=False)
    address = server.listening()
    for n in range(3):
        with enchufe.connect(address, timeout=5) as conn:
            conn.set_timeout(5)
            conn.send_all(f"client {n}\n".encode())
            conn.shutdown_write()
            assert conn.recv() == b""  # the server has nothing to say (stdin was empty)
        server.wait_err(r"^closed ", count=n + 1)  # -v: done with this client
    # stdout and stderr are read by two threads: wait for the bytes, not only the "closed" line
    server.wait_out_equal(b"client 0\nclient 1\nclient 2\n")
    assert server.running()
    assert server.terminate() == 0, server.err  # between clients: nothing was cut


def test_without_keep_open_listen_serves_one_client_and_exits(
    make_address: Callable[[str], str], spawn: Spawn
) -> None:
    server = spawn("listen", make_address("unix"), stdin=False)
    with enchufe.connect(server.listening(), timeout=5) as conn:
        conn.send_all(b"only one")
        conn.shutdown_write()
        conn.set_timeout(5)
        assert conn.recv() == b""
    assert server.finish() == 0, server.err
    assert server.out == b"only one"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopped_while_idle_exits_0_and_while_serving_exits_1(
    signum: int, make_address: Callable[[str], str], spawn: Spawn
) -> None:
    idle = spawn("listen", make_address("tcp4"))
    idle.listening()
    idle.popen.send_signal(signum)
    assert idle.finish() == 0, idle.err
    assert "Traceback" not in idle.err

    busy = spawn("listen", make_address("tcp4"))
    client = spawn("connect", busy.listening())
    client.feed(b"in flight", close=False)
    busy.wait_out_equal(b"in flight")
    busy.popen.send_signal(signum)
    assert busy.finish() == 1, busy.err  # a connection was cut
    assert "Traceback" not in busy.err
    client.close_stdin()
    assert client.finish() == 0, client.err  # the peer had closed: connect ends cleanly


def test_a_client_that_resets_before_it_is_accepted_does_not_end_a_one_shot_listen(
    make_address: Callable[[str], str], spawn: Spawn
) -> None:
    """The listener is stopped (SIGSTOP) while a client connects and resets, so that accept()
    returns a connection that is already gone: nobody was served, so the next client is."""
    server = spawn("listen", "-v", make_address("tcp4"), stdin=False)
    address = server.listening()
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    server.popen.send_signal(signal.SIGSTOP)
    try:
        with socket.create_connection((host, int(port)), timeout=5) as early:
            early.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        server.popen.send_signal(signal.SIGCONT)
    server.wait_err(r"^a client left before it was accepted$")
    with enchufe.connect(address, timeout=5) as conn:
        conn.send_all(b"the real client")
        conn.shutdown_write()
        conn.set_timeout(5)
        assert conn.recv() == b""
    assert server.finish() == 0, server.err
    assert server.out == b"the real client"

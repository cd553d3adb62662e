"""``enchufe listen`` ↔ ``enchufe connect`` on the four datagram kinds, as two processes."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable

import pytest

import enchufe
from tests.conftest import DATAGRAM_KINDS, kind_params

from .conftest import Spawn


@pytest.mark.parametrize("kind", kind_params(DATAGRAM_KINDS))
def test_datagrams_both_ways_and_replies_go_to_the_last_sender(
    kind: str, make_address: Callable[[str], str], spawn: Spawn
) -> None:
    server = spawn("listen", make_address(kind))
    address = server.listening()
    client = spawn("connect", address, "--timeout", "0.5")

    # client → server: each stdin read becomes a datagram; the bytes must all arrive, in order.
    sent = b""
    for size in (1, 1000, 8000, 30000):
        payload = os.urandom(size)
        client.feed(payload, close=False)
        sent += payload
        server.wait_out(len(sent))
    assert hashlib.sha256(server.out).digest() == hashlib.sha256(sent).digest()

    # server → client: listen's stdin goes to whoever sent last, the client.
    reply = b"\x00reply\xff" + os.urandom(5000)
    server.feed(reply, close=False)
    client.wait_out_equal(reply)

    # Another sender takes over: the next reply goes to it, not to the client.
    with enchufe.connect_datagram(address) as other:
        other.set_timeout(5)
        other.send(b"other")
        server.wait_out(len(sent) + len(b"other"))
        server.feed(b"for the other one", close=False)
        assert other.recv() == b"for the other one"

    # The client's stdin ends: it waits --timeout for more replies, then exits 0.
    client.close_stdin()
    ended = time.monotonic()
    assert client.finish() == 0, client.err
    waited = time.monotonic() - ended
    assert waited >= 0.4, f"connect exited {waited:.2f} s after stdin's EOF; --timeout 0.5 asks to wait"
    assert client.out == reply
    assert server.running()
    assert server.terminate() == 0, server.err
    assert server.out == sent + b"other"


@pytest.mark.parametrize("kind", kind_params(("udp4", "unixgram")))
def test_connect_prints_replies_that_come_after_stdin_ended(
    kind: str, make_address: Callable[[str], str], spawn: Spawn
) -> None:
    """After stdin's EOF, connect keeps printing replies until --timeout passes without one."""
    with enchufe.bind_datagram(make_address(kind)) as server:
        server.set_timeout(5)
        client = spawn("connect", str(server.local_address), "--timeout", "0.8")
        client.feed(b"ping")  # and EOF
        data, sender = server.recvfrom()
        assert data == b"ping" and sender is not None
        started = time.monotonic()
        for n in range(3):  # replies 0.2 s apart: each restarts the 0.8 s of silence
            time.sleep(0.2)
            server.sendto(f"pong {n}\n".encode(), sender)
        assert client.finish() == 0, client.err
        elapsed = time.monotonic() - started
    assert client.out == b"pong 0\npong 1\npong 2\n"
    assert elapsed >= 1.3, f"connect gave up {elapsed:.2f} s after the first reply"


def test_connect_sends_a_large_stdin_read_as_datagrams(
    make_address: Callable[[str], str], spawn: Spawn
) -> None:
    """A file piped into a udp connect is sent, even though one stdin read may exceed 64 KiB - 29."""
    payload = os.urandom(120_000)
    with enchufe.bind_datagram(make_address("udp4")) as server:
        server.set_timeout(5)
        client = spawn("connect", str(server.local_address), "--timeout", "0.2")
        client.feed(payload)
        received = b""
        while len(received) < len(payload):
            data, _sender = server.recvfrom()
            assert len(data) <= 65507
            received += data
        assert client.finish() == 0, client.err
    assert received == payload

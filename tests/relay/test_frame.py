"""``--frame``: datagrams carried over a stream as length-prefixed messages, both ends."""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest

from enchufe.framing import HEADER, encode

from .conftest import (
    DatagramTarget,
    StartRelay,
    Target,
    datagram_socket,
    dial,
    final_summary,
    read_all,
)

WINDOW = 32


def _frames(data: bytes) -> list[bytes]:
    messages = []
    while data:
        (size,) = HEADER.unpack_from(data)
        messages.append(data[4 : 4 + size])
        data = data[4 + size :]
    return messages


@pytest.mark.parametrize(
    ("outer", "tunnel", "inner"),
    [("udp4", "tcp4", "udp4"), ("unixgram-abstract", "unix", "unixgram")],
    ids=["udp-tcp-udp", "unixgram-unix-unixgram"],
)
def test_a_tunnel_of_two_relays_carries_numbered_datagrams_both_ways(
    start_relay: StartRelay, make_address: Callable[[str], str], outer: str, tunnel: str, inner: str
) -> None:
    """sender → relay A (datagram → stream) → relay B (stream → datagram) → echo target: every
    datagram whole and in order, each sender's answers to that sender, exact counts at both ends."""

    def tagged(data: bytes, sender: Any) -> bytes:
        return b"echo:" + data

    clients, count = 3, 300
    with DatagramTarget(make_address(inner), tagged) as target:
        far = start_relay(make_address(tunnel), target.address, "--frame", "--json")
        near = start_relay(make_address(outer), far.address, "--frame", "--json")
        socks = [datagram_socket(near.address) for _ in range(clients)]
        rng = random.Random(7)
        try:
            for start in range(0, count, WINDOW):
                sent: dict[int, list[bytes]] = {}
                for index, sock in enumerate(socks):
                    for seq in range(start, min(start + WINDOW, count)):
                        data = struct.pack(">HI", index, seq) + rng.randbytes(rng.randrange(0, 1200))
                        sock.send(data)
                        sent.setdefault(index, []).append(data)
                for index, sock in enumerate(socks):
                    got = [sock.recv(65536) for _ in sent[index]]
                    assert got == [b"echo:" + d for d in sent[index]]
        finally:
            for sock in socks:
                sock.close()
        assert len(target.senders()) == clients  # a stream (and an upstream socket) per sender
        near_summary = final_summary(near)
        far_summary = final_summary(far)
    total = clients * count
    for summary in (near_summary, far_summary):
        assert summary["datagrams_to_target"] == summary["datagrams_to_client"] == total
        assert summary["total"] == clients
        assert summary["truncated"] == summary["dropped"] == summary["reset"] == 0
    assert near_summary["to_target"] == far_summary["to_target"] == sum(len(d) for d, _s in target.received)


def test_a_stream_client_sends_frames_half_closes_and_still_gets_the_answers(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    """A plain client of the stream end: three framed requests, then its EOF; the target answers
    each after 0.3 s, and the answers come back framed, one message per datagram."""

    def slow(data: bytes, sender: Any) -> bytes:
        time.sleep(0.3)
        return data.upper()

    with DatagramTarget(make_address("udp4"), slow) as target:
        relay = start_relay(make_address("tcp4"), target.address, "--frame", "--json", "--idle-timeout", "2")
        with dial(relay.address) as client:
            for word in (b"one", b"", b"three"):
                client.sendall(encode(word))
            client.shutdown(socket.SHUT_WR)
            received = b""
            while len(_frames(received) if len(received) >= 4 else []) < 3:
                chunk = client.recv(1000)
                assert chunk, "the stream ended before the answers"
                received += chunk
        assert [d for d, _s in target.received] == [b"one", b"", b"three"]
        summary = final_summary(relay)
    assert _frames(received) == [b"ONE", b"", b"THREE"]
    assert summary["datagrams_to_target"] == summary["datagrams_to_client"] == 3


def test_the_stream_end_closes_an_idle_session_in_order(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with DatagramTarget(make_address("unixgram-abstract")) as target:
        relay = start_relay(
            make_address("unix-abstract"), target.address, "--frame", "--json", "--idle-timeout", "0.3"
        )
        with dial(relay.address) as client:
            client.sendall(encode(b"ping"))
            assert _frames(client.recv(100)) == [b"ping"]
            assert read_all(client) == b""  # an orderly EOF, no reset (within dial's IO_TIMEOUT)
        relay.wait_err(r'"event": "close".*"reason": "idle"')
        final_summary(relay)


def test_a_frame_over_the_limit_resets_the_stream(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with DatagramTarget(make_address("udp4")) as target:
        relay = start_relay(
            make_address("tcp4"), target.address, "--frame", "--json", "--max-datagram", "100"
        )
        with dial(relay.address) as client:
            client.sendall(encode(b"fine"))
            client.sendall(HEADER.pack(101) + b"z" * 101)
            with pytest.raises(ConnectionResetError):
                read_all(client)
        relay.wait_err(r'"event": "close".*"reason": "protocol-error".*101 bytes')
        assert target.wait_received(1) == [b"fine"]


def test_datagrams_to_a_stream_end_that_is_down_are_counted_as_dropped(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    relay = start_relay(make_address("udp4"), f"tcp4://127.0.0.1:{port}", "--frame", "--json")
    with datagram_socket(relay.address) as sock:
        sock.send(b"lost")
        relay.wait_err(r'"event": "error".*cannot connect to tcp4://127\.0\.0\.1')
        with Target(f"tcp4://127.0.0.1:{port}", _echo_frames):
            sock.send(b"found")
            assert sock.recv(100) == b"found"
    summary = final_summary(relay)
    assert summary["failed"] == 1 and summary["dropped"] == 1
    assert summary["datagrams_to_target"] == summary["datagrams_to_client"] == 1


def _echo_frames(conn: socket.socket) -> None:
    """A stream target speaking the framing: it echoes the bytes, which are whole frames."""
    while data := conn.recv(65536):
        conn.sendall(data)

"""Datagram faults on a datagram → stream relay with ``--frame`` (the tunnel's entry): each
datagram meets the faults before it is framed onto the stream, each message read back from the
stream before it goes to the sender, exactly as the pure schedule decides for the seed."""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from enchufe.faults import DatagramSchedule, FaultPlan, parse_fault
from enchufe.relay import RelayConfig
from tests.cli.conftest import run_here

from .conftest import IO_TIMEOUT, RelayThread, Target, datagram_socket, relay_thread


class FramedEcho:
    """What a stream target speaking the framing received (whole messages, in order); it
    echoes every byte, which are whole frames."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self._lock = threading.Lock()

    def __call__(self, conn: socket.socket) -> None:
        data = b""
        with contextlib.suppress(OSError):
            while chunk := conn.recv(65536):
                conn.sendall(chunk)
                data += chunk
                while len(data) >= 4 and len(data) >= 4 + struct.unpack("!I", data[:4])[0]:
                    size = struct.unpack("!I", data[:4])[0]
                    with self._lock:
                        self.messages.append(data[4 : 4 + size])
                    data = data[4 + size :]

    def received(self) -> list[bytes]:
        with self._lock:
            return list(self.messages)


@contextlib.contextmanager
def tunnel(
    *faults: str, seed: int = 1, kinds: str = "udp-tcp"
) -> Iterator[tuple[RelayThread, FramedEcho, socket.socket]]:
    """``relay udp://… tcp://… --frame --fault …`` (``kinds`` ``unixgram-unix``: abstract unix
    sockets) in front of a framed echo, and a datagram client."""
    echo = FramedEcho()
    name = f"@enchufe-tunnel-{random.random()}"
    stream, listen = ("tcp://127.0.0.1:0", "udp://127.0.0.1:0")
    if kinds == "unixgram-unix":
        stream, listen = (f"unix:{name}", f"unixgram:{name}")
    with Target(stream, echo) as target:
        plan = FaultPlan(tuple(parse_fault(f) for f in faults), seed)
        config = RelayConfig(listen=listen, target=target.address, frame=True, faults=plan)
        with relay_thread(config) as relay, datagram_socket(relay.address) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            yield relay, echo, client


def replies(client: socket.socket, quiet: float = 0.5) -> list[bytes]:
    """Every datagram until none came for ``quiet`` seconds."""
    client.settimeout(quiet)
    got = []
    with contextlib.suppress(TimeoutError):
        while True:
            got.append(client.recv(65536))
    return got


def kept(fault: str, seed: int, payloads: list[bytes], direction: str) -> list[bytes]:
    """What the schedule of the relay's first session lets through, in order."""
    schedule = DatagramSchedule([parse_fault(fault)], random.Random(f"{seed}/1/{direction}"))
    return [data for payload in payloads for _, data in schedule.feed(0.0, payload)]


def digest(messages: list[bytes]) -> str:
    """One digest of messages, their boundaries and order included."""
    return hashlib.sha256(b"".join(struct.pack("!I", len(m)) + m for m in messages)).hexdigest()


@pytest.mark.parametrize("kinds", ["udp-tcp", "unixgram-unix"])
@pytest.mark.parametrize("stream", ["upstream", "downstream"])
def test_loss_drops_exactly_what_the_seed_says(stream: str, kinds: str) -> None:
    payloads = [b"%04d" % i for i in range(150)]
    fault = f"loss:probability=0.3,stream={stream}"
    want = kept(fault, 5, payloads, "up" if stream == "upstream" else "down")
    assert 80 < len(want) < 135
    with tunnel(fault, seed=5, kinds=kinds) as (relay, echo, client):
        for payload in payloads:
            client.send(payload)
        got = replies(client)
        framed = echo.received()
        stats = relay.relay.stats.snapshot()
    assert got == want  # one sender, one stream, no latency: in order
    assert framed == (want if stream == "upstream" else payloads)
    assert stats.datagrams_to_target == len(framed)
    assert stats.datagrams_to_client == len(want)


def test_latency_delays_each_datagram_and_keeps_their_order() -> None:
    rng = random.Random(11)
    payloads = [rng.randbytes(rng.randrange(1, 1400)) for _ in range(100)]
    with tunnel("latency:latency=40", "latency:latency=30,stream=upstream") as (_, echo, client):
        client.settimeout(IO_TIMEOUT)
        started = time.monotonic()
        client.send(payloads[0])
        first = client.recv(65536)
        elapsed = time.monotonic() - started
        for payload in payloads[1:]:
            client.send(payload)
        got = [first, *replies(client)]
        framed = echo.received()
    assert elapsed >= 0.070 - 0.002  # 30 ms up, 40 ms down; the timers' clock is monotonic
    assert digest(got) == digest(framed) == digest(payloads)


def test_a_stream_fault_is_refused_in_one_line_naming_frame() -> None:
    done = run_here(
        "relay", "udp://127.0.0.1:0", "tcp://127.0.0.1:9", "--frame", "--fault", "slicer:average_size=10"
    )
    assert done.returncode == 2
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "slicer acts on streams only" in lines[0] and "--frame" in lines[0], lines
    assert "loss" in lines[0]  # what it takes instead

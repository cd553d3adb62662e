"""Datagram faults on a stream → datagram relay with ``--frame``: each message is a datagram to
the faults, in both directions, exactly as the pure schedule decides for the seed."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from enchufe.faults import DatagramSchedule, FaultPlan, parse_fault
from enchufe.relay import RelayConfig

from .conftest import IO_TIMEOUT, DatagramTarget, dial, relay_thread


@contextlib.contextmanager
def framed(*faults: str, seed: int = 1) -> Iterator[tuple[DatagramTarget, socket.socket]]:
    """An echoing UDP target behind ``relay tcp://… udp://… --frame --fault …``, and a client."""
    with DatagramTarget("udp://127.0.0.1:0") as target:
        plan = FaultPlan(tuple(parse_fault(f) for f in faults), seed)
        config = RelayConfig(listen="tcp://127.0.0.1:0", target=target.address, frame=True, faults=plan)
        with relay_thread(config) as relay, dial(relay.address) as client:
            yield target, client


def send_messages(client: socket.socket, payloads: list[bytes]) -> None:
    client.sendall(b"".join(struct.pack("!I", len(p)) + p for p in payloads))


def read_messages(client: socket.socket, quiet: float = 0.5) -> list[bytes]:
    """Every message until none came for ``quiet`` seconds."""
    client.settimeout(quiet)
    data = b""
    with contextlib.suppress(TimeoutError):
        while chunk := client.recv(65536):
            data += chunk
    messages = []
    while len(data) >= 4:
        (size,) = struct.unpack("!I", data[:4])
        messages.append(data[4 : 4 + size])
        data = data[4 + size :]
    assert data == b""
    return messages


def kept(fault: str, seed: int, payloads: list[bytes], direction: str) -> list[bytes]:
    schedule = DatagramSchedule([parse_fault(fault)], random.Random(f"{seed}/1/{direction}"))
    return [data for payload in payloads for _, data in schedule.feed(0.0, payload)]


@pytest.mark.parametrize("stream", ["upstream", "downstream"])
def test_loss_drops_exactly_what_the_seed_says(stream: str) -> None:
    payloads = [b"%04d" % i for i in range(200)]
    fault = f"loss:probability=0.3,stream={stream}"
    with framed(fault, seed=5) as (target, client):
        send_messages(client, payloads)
        got = read_messages(client)
        arrived = [data for data, _ in target.received]
    want = kept(fault, 5, payloads, "up" if stream == "upstream" else "down")
    assert sorted(got) == sorted(want)
    assert sorted(arrived) == (sorted(want) if stream == "upstream" else payloads)
    assert 100 < len(want) < 180


def test_duplicate_replies_twice() -> None:
    payloads = [b"a", b"bb", b"ccc"]
    with framed("duplicate:probability=1") as (_, client):
        send_messages(client, payloads)
        assert sorted(read_messages(client)) == sorted(payloads * 2)


def test_latency_delays_each_message_both_ways() -> None:
    with framed("latency:latency=40", "latency:latency=30,stream=upstream") as (_, client):
        client.settimeout(IO_TIMEOUT)
        started = time.monotonic()
        send_messages(client, [b"ping"])
        assert client.recv(100) == b"\0\0\0\x04ping"
        assert time.monotonic() - started >= 0.070 - 0.002

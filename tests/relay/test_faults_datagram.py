"""Datagram faults through the relay (``--fault`` on udp and unixgram): loss, duplicate, corrupt,
reorder and latency, on real sockets, the relay in a thread.  Counts are exact for a seed: the
relay's schedule is the pure one (:class:`~enchufe.faults.DatagramSchedule`) seeded the same way."""

from __future__ import annotations

import contextlib
import random
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from enchufe.faults import DatagramSchedule, FaultPlan, parse_fault
from enchufe.relay import RelayConfig

from .conftest import DatagramTarget, RelayThread, datagram_socket, relay_thread

KINDS = ["udp4", "unixgram"]


@contextlib.contextmanager
def faulty(
    make_address: Callable[[str], str], kind: str, *faults: str, seed: int = 1
) -> Iterator[tuple[RelayThread, DatagramTarget, socket.socket]]:
    """An echoing datagram target behind a relay with ``faults``, and a client connected to it."""
    with DatagramTarget(make_address(kind)) as target:
        plan = FaultPlan(tuple(parse_fault(f) for f in faults), seed)
        config = RelayConfig(listen=make_address(kind), target=target.address, faults=plan)
        with relay_thread(config) as relay, datagram_socket(relay.address, timeout=1.0) as client:
            yield relay, target, client


def numbered(count: int) -> list[bytes]:
    return [b"%06d" % i for i in range(count)]


def receive_all(client: socket.socket, quiet: float = 0.5, most: int = 10_000) -> list[bytes]:
    """Every datagram until none came for ``quiet`` seconds (at most ``most``)."""
    client.settimeout(quiet)
    got = []
    with contextlib.suppress(TimeoutError):
        for _ in range(most):
            got.append(client.recv(65536))
    return got


def exchange(client: socket.socket, payloads: list[bytes]) -> list[bytes]:
    """Send one at a time, reading what came back so far after each (the client's receive queue
    never fills, whatever the load), then every reply until none came for a while."""
    got = []
    client.setblocking(False)
    for payload in payloads:
        client.send(payload)
        time.sleep(0.0005)
        with contextlib.suppress(BlockingIOError):
            for _ in range(len(payloads) * 2):
                got.append(client.recv(65536))
    return got + receive_all(client)  # blocking again, with a timeout


def expected(faults: list[str], seed: int, payloads: list[bytes], direction: str = "down") -> list[bytes]:
    """What the relay's first session lets through, by the pure schedule, in the order sent."""
    schedule = DatagramSchedule([parse_fault(f) for f in faults], random.Random(f"{seed}/1/{direction}"))
    return [data for payload in payloads for _, data in schedule.feed(0.0, payload)]


@pytest.mark.parametrize("kind", KINDS)
def test_loss_drops_exactly_what_the_seed_says(make_address: Callable[[str], str], kind: str) -> None:
    payloads = numbered(300)
    with faulty(make_address, kind, "loss:probability=0.2", seed=7) as (_, target, client):
        got = exchange(client, payloads)
        assert len(target.wait_received(300)) == 300  # the loss is downstream only
    want = expected(["loss:probability=0.2"], 7, payloads)
    assert sorted(got) == sorted(want)
    assert 200 < len(got) < 280


def test_loss_upstream_never_reaches_the_target(make_address: Callable[[str], str]) -> None:
    payloads = numbered(200)
    with faulty(make_address, "udp4", "loss:probability=0.5,stream=upstream", seed=3) as (_, target, client):
        got = exchange(client, payloads)
        arrived = [data for data, _ in target.received]
    want = expected(["loss:probability=0.5"], 3, payloads, "up")
    assert sorted(arrived) == sorted(want) == sorted(got)


def test_duplicate_sends_twice(make_address: Callable[[str], str]) -> None:
    payloads = numbered(20)
    with faulty(make_address, "udp4", "duplicate:probability=1") as (_, _target, client):
        got = exchange(client, payloads)
    assert sorted(got) == sorted(payloads * 2)


def test_corrupt_flips_one_bit(make_address: Callable[[str], str]) -> None:
    payloads = numbered(20)
    with faulty(make_address, "unixgram", "corrupt:probability=1") as (_, _target, client):
        got = exchange(client, payloads)
    assert len(got) == 20
    for data, payload in zip(got, payloads, strict=True):  # a unix datagram socket keeps the order
        flipped = int.from_bytes(data, "big") ^ int.from_bytes(payload, "big")
        assert bin(flipped).count("1") == 1


def test_reorder_holds_some_back_and_loses_none(make_address: Callable[[str], str]) -> None:
    payloads = numbered(60)
    with faulty(make_address, "udp4", "reorder:probability=0.3,delay=30") as (_, _target, client):
        for payload in payloads:
            client.send(payload)
            time.sleep(0.002)
        got = receive_all(client)
    assert sorted(got) == payloads
    assert got != payloads


@pytest.mark.parametrize("kind", KINDS)
def test_latency_delays_each_datagram(make_address: Callable[[str], str], kind: str) -> None:
    faults = ("latency:latency=40", "latency:latency=30,stream=upstream")
    with faulty(make_address, kind, *faults) as (_, _target, client):
        times = []
        for payload in numbered(3):
            started = time.monotonic()
            client.send(payload)
            assert client.recv(100) == payload
            times.append(time.monotonic() - started)
    assert min(times) >= 0.070 - 0.002


def test_toxicity_zero_changes_nothing(make_address: Callable[[str], str]) -> None:
    payloads = numbered(50)
    with faulty(make_address, "udp4", "loss:probability=1,toxicity=0") as (_, _target, client):
        assert sorted(exchange(client, payloads)) == payloads

"""Datagram loss through ``enchufe relay --fault loss … --seed``, counted by ``enchufe bench``:
exactly the datagrams the pure schedule (:class:`~enchufe.faults.DatagramSchedule`) drops for
the same seed, session by session."""

from __future__ import annotations

import json
import random

import pytest

from enchufe.faults import DatagramSchedule, parse_fault
from tests.relay.conftest import StartRelay

from .conftest import StartCommand, run

#: the relay with its compiled hot path and without it (tests/conftest.py: both_paths)
pytestmark = pytest.mark.usefixtures("both_paths")

LOSS = "loss:probability=0.1,stream=upstream"
SEED = 1
COUNT, WARMUP = 40, 10  # bench's warm-up for --count 40 (a tenth, at least 10)


def dropped(seed: int, session: int, count: int) -> list[bool]:
    """Whether each of a session's first ``count`` datagrams to the target is lost."""
    schedule = DatagramSchedule([parse_fault(LOSS)], random.Random(f"{seed}/{session}/up"))
    return [not schedule.feed(0.0, b"ping") for _ in range(count)]


def test_bench_counts_exactly_the_datagrams_the_seed_loses(
    start_command: StartCommand, start_relay: StartRelay
) -> None:
    echo = start_command("echo", "udp://127.0.0.1:0")
    relay = start_relay("udp://127.0.0.1:0", echo.address, "--fault", LOSS, "--seed", str(SEED))
    # bench probes first (session 1: one datagram, which this seed lets through), then pings
    # one at a time from another socket (session 2): warm-up pings, then the counted ones.
    assert dropped(SEED, 1, 1) == [False]
    lost = dropped(SEED, 2, WARMUP + COUNT)[WARMUP:]
    done = run("bench", relay.address, "--mode", "latency", "--count", str(COUNT), "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    latency = json.loads(done.stdout)["targets"][0]["latency"]
    # An echo later than bench's 0.25 s wait (a loaded machine) counts as lost, then as late.
    assert latency["lost"] - latency["late"] == sum(lost)
    assert sum(lost) > 0

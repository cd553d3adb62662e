"""Faults on purpose through the relay (``--fault``): real sockets on loopback, the relay in a
thread (its events recorded) or as ``enchufe relay``.  Times are asserted as lower bounds only."""

from __future__ import annotations

import contextlib
import hashlib
import random
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from enchufe.faults import FaultPlan, parse_fault
from enchufe.relay import RelayConfig

from ._harness import wait_event
from .conftest import ENCHUFE, IO_TIMEOUT, RelayThread, StartRelay, Target, dial, echo, read_all, relay_thread


@contextlib.contextmanager
def faulty(
    serve: Callable[[socket.socket], object], *faults: str, seed: int = 1, target_kind: str = "tcp"
) -> Iterator[tuple[RelayThread, Target]]:
    """A target serving with ``serve`` behind a relay with ``faults``."""
    address = "tcp://127.0.0.1:0" if target_kind == "tcp" else "unix:@enchufe-faults-" + str(random.random())
    with Target(address, serve) as target:
        plan = FaultPlan(tuple(parse_fault(f) for f in faults), seed)
        config = RelayConfig(listen="tcp://127.0.0.1:0", target=target.address, faults=plan)
        with relay_thread(config) as relay:
            yield relay, target


@pytest.fixture
def echo_target_address() -> Iterator[str]:
    with Target("tcp://127.0.0.1:0", echo) as target:
        yield target.address


def send_then_close(payload: bytes) -> Callable[[socket.socket], None]:
    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)  # until the relay closes

    return serve


def round_trip(sock: socket.socket, payload: bytes = b"ping") -> float:
    started = time.monotonic()
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(64)
        assert chunk, "closed in the middle of a round trip"
        got += chunk
    assert got == payload
    return time.monotonic() - started


@pytest.mark.parametrize("target_kind", ["tcp", "unix"])
def test_latency_adds_its_delay_to_every_round_trip(target_kind: str) -> None:
    faults = ("latency:latency=60", "latency:latency=40,stream=upstream")
    with faulty(echo, *faults, target_kind=target_kind) as (relay, _), dial(relay.address) as sock:
        times = [round_trip(sock) for _ in range(3)]
    assert min(times) >= 0.100 - 0.002  # 60 ms down + 40 ms up; the timers' clock is monotonic


def test_latency_with_jitter_loses_and_reorders_nothing() -> None:
    payload = random.Random(3).randbytes(300_000)
    jittery = faulty(send_then_close(payload), "latency:latency=5,jitter=5")
    with jittery as (relay, _), dial(relay.address) as sock:
        assert hashlib.sha256(read_all(sock)).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_limit_data_closes_after_exactly_its_bytes() -> None:
    with faulty(send_then_close(bytes(50_000)), "limit_data:bytes=1234") as (relay, _):
        with dial(relay.address) as sock:
            assert len(read_all(sock)) == 1234
        closes = wait_event(relay, "close")
    assert closes[0]["reason"] == "fault-closed"
    assert "limit_data_downstream" in closes[0]["error"]


def test_limit_data_upstream_counts_what_the_client_sends() -> None:
    received: list[bytes] = []

    def serve(conn: socket.socket) -> None:
        received.append(read_all(conn))

    with faulty(serve, "limit_data:bytes=10,stream=upstream") as (relay, target), dial(relay.address) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(b"0123456789abcdef")
            read_all(sock)
        target.wait_results(1)
    assert received == [b"0123456789"]


def test_slicer_delivers_every_byte_in_more_reads() -> None:
    payload = random.Random(4).randbytes(40_000)
    sliced = faulty(send_then_close(payload), "slicer:average_size=1000,delay=3000")
    with sliced as (relay, _), dial(relay.address) as sock:
        reads = []
        while chunk := sock.recv(65536):
            reads.append(chunk)
    assert hashlib.sha256(b"".join(reads)).digest() == hashlib.sha256(payload).digest()
    assert len(reads) >= 4  # 40 slices 3 ms apart; unsliced, 40 kB on loopback come in one or two


def test_bandwidth_delivers_everything_no_faster_than_its_rate() -> None:
    payload = random.Random(5).randbytes(60_000)
    with faulty(send_then_close(payload), "bandwidth:rate=200") as (relay, _):
        started = time.monotonic()
        with dial(relay.address) as sock:
            data = read_all(sock)
        took = time.monotonic() - started
    assert data == payload
    assert took >= 60_000 / 200_000 - 0.01  # 200 KB/s


def test_reset_peer_resets_the_client() -> None:
    with faulty(echo, "reset_peer:timeout=50") as (relay, _), dial(relay.address) as sock:
        started = time.monotonic()
        sock.sendall(b"ping")  # echoed: the first bytes downstream start the clock
        with pytest.raises(ConnectionResetError):
            read_all(sock)
        assert time.monotonic() - started >= 0.050 - 0.002
        closes = wait_event(relay, "close")
    assert closes[0]["reason"] == "fault-reset"


def test_timeout_passes_nothing_then_closes() -> None:
    with faulty(echo, "timeout:timeout=300") as (relay, _):
        started = time.monotonic()  # before the connection: its timeout starts after this
        with dial(relay.address) as sock:
            sock.sendall(b"ping")
            assert read_all(sock) == b""
        assert time.monotonic() - started >= 0.300 - 0.002


def test_timeout_zero_holds_forever() -> None:
    with faulty(echo, "timeout:timeout=0") as (relay, _), dial(relay.address) as sock:
        sock.sendall(b"ping")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(10)


def test_slow_close_delays_the_end_not_the_data() -> None:
    with faulty(send_then_close(b"hello"), "slow_close:delay=300") as (relay, _):
        started = time.monotonic()  # before the connection: the target's end comes after this
        with dial(relay.address) as sock:
            assert sock.recv(10) == b"hello"
            assert sock.recv(10) == b""
        assert time.monotonic() - started >= 0.300 - 0.002


def test_toxicity_zero_changes_nothing() -> None:
    harmless = faulty(echo, "limit_data:bytes=0,toxicity=0", "reset_peer:toxicity=0")
    with harmless as (relay, _), dial(relay.address) as sock:
        assert round_trip(sock, b"x" * 5000) >= 0
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock) == b""


def cut_pattern(seed: int, count: int) -> list[int]:
    """Through limit_data at toxicity 0.5: how many bytes each of ``count`` clients got."""
    got = []
    with faulty(send_then_close(bytes(100)), "limit_data:bytes=10,toxicity=0.5", seed=seed) as (relay, _):
        for _ in range(count):
            with dial(relay.address) as sock:
                got.append(len(read_all(sock)))
    return got


def test_the_same_seed_chooses_the_same_connections() -> None:
    first = cut_pattern(42, 12)
    assert set(first) == {10, 100}  # both happen
    assert cut_pattern(42, 12) == first


def test_the_command_line_takes_faults(start_relay: StartRelay) -> None:
    with Target("tcp://127.0.0.1:0", send_then_close(bytes(1000))) as target:
        fault = ("--fault", "limit_data:bytes=77", "--seed", "3")
        proc = start_relay("tcp://127.0.0.1:0", target.address, *fault)
        with dial(proc.listening()) as sock:
            assert len(read_all(sock)) == 77


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--fault", "latency:latency=-5"), "--fault latency: latency must be a whole number from 0 to"),
        (("--fault", "loss:probability=0.5"), "--fault loss acts on datagrams only"),
        (("--fault", "bogus"), "unknown fault type 'bogus'"),
        (("--seed", "3"), "give --fault too"),
    ],
)
def test_a_bad_fault_is_refused_with_one_line(args: tuple[str, ...], words: str) -> None:
    done = subprocess.run(
        [*ENCHUFE, "relay", "tcp://127.0.0.1:0", "tcp://127.0.0.1:9", *args],
        capture_output=True,
        text=True,
        timeout=IO_TIMEOUT,
    )
    assert done.returncode == 2
    assert words in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_stdio_through_limit_data(echo_target_address: str) -> None:
    done = subprocess.run(
        [*ENCHUFE, "relay", "-", echo_target_address, "--fault", "limit_data:bytes=10"],
        input=b"hello world, more than ten bytes\n",
        capture_output=True,
        timeout=IO_TIMEOUT,
    )
    assert (done.returncode, done.stdout) == (0, b"hello worl"), done.stderr


def test_stdio_reset_by_a_fault_fails_with_one_line(echo_target_address: str) -> None:
    done = subprocess.run(
        [*ENCHUFE, "relay", "-", echo_target_address, "--fault", "reset_peer:timeout=10"],
        input="hello\n",
        capture_output=True,
        text=True,
        timeout=IO_TIMEOUT,
    )
    assert done.returncode == 1
    assert "reset by --fault on the downstream (reset_peer_downstream)" in done.stderr
    assert done.stderr.count("\n") == 1


def test_an_exec_target_through_the_slicer() -> None:
    plan = FaultPlan((parse_fault("slicer:average_size=3,delay=20000"),), 1)
    config = RelayConfig(listen="tcp://127.0.0.1:0", target="exec:cat", faults=plan)
    with relay_thread(config) as relay, dial(relay.address) as sock:
        sock.sendall(b"abcdefghijklmnop")
        sock.shutdown(socket.SHUT_WR)
        reads = []
        while chunk := sock.recv(100):
            reads.append(chunk)
    assert b"".join(reads) == b"abcdefghijklmnop"
    assert len(reads) >= 3  # 6 pieces 20 ms apart


def test_the_faults_and_the_seed_are_said_at_v(start_relay: StartRelay) -> None:
    proc = start_relay(
        "tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--fault", "latency:latency=100,jitter=10", "-v"
    )
    line = proc.wait_err(r"faults: .*")
    seed = re.search(r"--seed (\d+)$", line.group(0))
    assert line.group(0).startswith("faults: latency_downstream latency=100 jitter=10 toxicity=1; --seed ")
    assert seed is not None

"""The library's faulty relay (:class:`enchufe.faults.FaultyRelay` and its asyncio form): real
servers from enchufe's own pytest plugin behind it, real clients in front."""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest

import enchufe
from enchufe.address import Address
from enchufe.faults import AsyncFaultyRelay, DatagramSchedule, FaultError, FaultyRelay, parse_fault
from enchufe.testing import EchoServer, ServerStarter
from tests.relay.conftest import wait_until


def round_trip(address: Address, payload: bytes = b"ping") -> float:
    with enchufe.connect(address, timeout=10) as conn:
        started = time.monotonic()
        conn.send_all(payload)
        assert conn.recv_exactly(len(payload)) == payload
        return time.monotonic() - started


def test_latency_delays_every_round_trip(echo_server: EchoServer) -> None:
    with FaultyRelay(echo_server("tcp4"), faults=["latency:latency=80"], seed=1) as relay:
        assert round_trip(relay.address) >= 0.080 - 0.002
        assert relay.stats.total == 1


def test_faults_changed_at_run_time_reach_an_open_connection(echo_server: EchoServer) -> None:
    with FaultyRelay(echo_server("tcp4")) as relay, enchufe.connect(relay.address, timeout=10) as conn:
        conn.send_all(b"one")
        assert conn.recv_exactly(3) == b"one"
        relay.add("reset_peer:timeout=0")
        with pytest.raises(enchufe.ConnectionReset):  # the open connection is reset, not only new ones
            for _ in range(100):
                conn.send_all(b"two")
                conn.recv_exactly(3)
                time.sleep(0.05)
        relay.remove("reset_peer_downstream")
        assert relay.faults == ()
        assert round_trip(relay.address) >= 0  # a new connection goes through untouched
        assert relay.stats.reset == 1


def test_set_faults_replaces_them_all(echo_server: EchoServer) -> None:
    with FaultyRelay(echo_server("unix"), ["latency:latency=10", "slicer"]) as relay:
        relay.set_faults("bandwidth:rate=100")
        assert [t.name for t in relay.faults] == ["bandwidth_downstream"]
        relay.set_faults([])
        assert relay.faults == ()
        assert round_trip(relay.address) >= 0


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda r: r.add("latency:latency=5"), "two faults are named 'latency_downstream'"),
        (lambda r: r.add("loss:probability=0.5"), "loss acts on datagrams only"),
        (lambda r: r.set_faults(["latency:latency=-1"]), "latency must be a whole number"),
        (lambda r: r.remove("slicer_downstream"), "no fault named 'slicer_downstream'; the faults: latency_"),
    ],
)
def test_a_wrong_change_is_refused_and_changes_nothing(
    echo_server: EchoServer, call: object, words: str
) -> None:
    with FaultyRelay(echo_server("tcp4"), "latency:latency=1") as relay:
        with pytest.raises((FaultError, KeyError), match=words):
            call(relay)  # type: ignore[operator]
        assert [t.name for t in relay.faults] == ["latency_downstream"]


def test_a_relay_that_cannot_be_is_refused_before_it_starts() -> None:
    with pytest.raises(FaultError, match="loss acts on datagrams only"):
        FaultyRelay("tcp://127.0.0.1:9", "loss:probability=1")
    with pytest.raises(enchufe.UsageError, match="needs a socket address to relay to"):
        FaultyRelay("exec:cat")


def test_a_unix_relay_listens_in_a_folder_removed_at_stop(echo_server: EchoServer) -> None:
    relay = FaultyRelay(echo_server("unix"), "slicer:average_size=2")
    with relay:
        path = relay.address.path  # type: ignore[union-attr]
        assert path is not None and os.path.exists(path)
        assert round_trip(relay.address, b"sliced") >= 0
    assert not os.path.exists(os.path.dirname(path))
    assert relay.stats.total == 1  # the counters stay readable after the stop
    relay.stop()  # again: nothing


def test_a_refused_unix_relay_leaves_no_folder(
    echo_server: EchoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault the relay cannot carry is refused after the folder for its socket was made:
    the folder goes too."""
    import tempfile

    made: list[str] = []
    real = tempfile.mkdtemp

    def spied(*args: object, **kwargs: object) -> str:
        made.append(real(*args, **kwargs))  # type: ignore[call-overload]
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", spied)
    with pytest.raises(FaultError, match="acts on datagrams only"):
        FaultyRelay(echo_server("unix"), "loss")
    assert made and not any(os.path.exists(folder) for folder in made)


def test_stop_cuts_open_connections(echo_server: EchoServer) -> None:
    relay = FaultyRelay(echo_server("tcp6")).start()
    with enchufe.connect(relay.address, timeout=10) as conn:
        conn.send_all(b"x")
        assert conn.recv_exactly(1) == b"x"
        relay.stop()
        with pytest.raises((enchufe.ConnectionReset, enchufe.IncompleteRead)):
            conn.send_all(b"y")
            conn.recv_exactly(1)
    assert not relay.running


def test_datagram_loss_is_exactly_what_the_seed_says(sink_server: ServerStarter) -> None:
    sink = sink_server("udp4")
    fault = "loss:probability=0.3,stream=upstream"
    payloads = [b"%05d" % i for i in range(200)]
    schedule = DatagramSchedule([parse_fault(fault)], random.Random("5/1/up"))  # session 1, upstream
    wanted = sum(len(schedule.feed(0.0, p)) for p in payloads)
    with FaultyRelay(sink.address, fault, seed=5) as relay:
        with enchufe.connect_datagram(relay.address) as client:
            for payload in payloads:
                client.send(payload)
                time.sleep(0.0005)
        wait_until(lambda: len(sink.digests) >= wanted, f"{wanted} datagrams at the sink", timeout=10)
        time.sleep(0.2)  # none more comes
        assert relay.stats.datagrams_to_target == len(sink.digests) == wanted
    assert 100 < wanted < 180


def test_the_asyncio_form(echo_server: EchoServer) -> None:
    async def main() -> float:
        async with AsyncFaultyRelay(echo_server("tcp4"), ["latency:latency=60,stream=upstream"]) as relay:
            assert relay.seed >= 0
            address = relay.address
            reader, writer = await asyncio.open_connection(address.host, address.port)  # type: ignore[union-attr]
            started = time.monotonic()
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 10) == b"ping"
            took = time.monotonic() - started
            relay.set_faults([])
            writer.close()
            await writer.wait_closed()
        assert not relay.running
        return took

    assert asyncio.run(main()) >= 0.060 - 0.002


#: A program that starts a faulty relay in front of its own unix listener and never stops it.
NEVER_STOPPED = """
import os, socket, sys, tempfile
from enchufe.faults import FaultyRelay
folder = tempfile.mkdtemp(prefix="enc-t-", dir="/tmp")
target = socket.socket(socket.AF_UNIX)
target.bind(os.path.join(folder, "target.sock"))
target.listen()
relay = FaultyRelay(f"unix://{folder}/target.sock").start()
print(os.path.dirname(relay.address.path), flush=True)
os.unlink(os.path.join(folder, "target.sock"))
os.rmdir(folder)
"""


def test_a_unix_relay_never_stopped_leaves_no_folder_when_the_program_ends() -> None:
    """A program (or a test) that ends without stop(): its folder and socket file go with it."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", NEVER_STOPPED], capture_output=True, text=True, timeout=30, check=True
    )
    folder = done.stdout.strip()
    assert folder.startswith("/tmp/enc-faults-"), done
    assert not os.path.exists(folder)


def test_a_unix_relay_dropped_without_stop_stops_and_leaves_no_folder(echo_server: EchoServer) -> None:
    import gc

    relay = FaultyRelay(echo_server("unix")).start()
    path = relay.address.path  # type: ignore[union-attr]
    assert path is not None
    folder = os.path.dirname(path)
    thread = relay._running.thread  # type: ignore[union-attr]
    del relay
    gc.collect()
    assert not os.path.exists(folder)
    thread.join(10)
    assert not thread.is_alive()


def test_a_unix_relay_started_again_after_stop_serves_at_the_same_path(echo_server: EchoServer) -> None:
    relay = FaultyRelay(echo_server("unix"))
    with relay:
        first = relay.address
    with relay:  # its folder was removed at the stop: made again
        assert relay.address == first
        assert round_trip(relay.address, b"again") >= 0
    assert first.path is not None and not os.path.exists(os.path.dirname(first.path))  # type: ignore[union-attr]

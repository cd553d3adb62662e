"""A datagram relay whose request/response traffic the loop's poller serves (compiled path,
enchufe.relay.datagram_shortcuts): the counters, the idle timeout, eviction and truncation are
what they are without it.  Every test runs with the compiled path and without it."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from enchufe.relay import RelayConfig

from .conftest import STEP, DatagramTarget, RelayThread, datagram_socket, relay_thread, wait_until

pytestmark = pytest.mark.usefixtures("both_paths")

KINDS = ["udp://127.0.0.1:0", "udp://[::1]:0"]


def ask(sock: socket.socket, payload: bytes) -> bytes:
    sock.send(payload)
    return sock.recv(65536)


def closes(running: RelayThread) -> list[dict[str, Any]]:
    return running.events.named("close")


@pytest.mark.parametrize("listen", KINDS)
def test_the_counters_are_exact_whichever_way_the_datagrams_went(listen: str) -> None:
    with DatagramTarget("udp://127.0.0.1:0") as target:
        config = RelayConfig(listen, target.address, idle_timeout=0.5)
        with relay_thread(config) as running:
            total = 0
            with datagram_socket(running.address, timeout=STEP) as sock:
                for turn in range(300):
                    payload = bytes([turn % 251]) * (1 + turn % 700)
                    assert ask(sock, payload) == payload
                    total += len(payload)

                def counted() -> bool:
                    snap = running.relay.stats.snapshot()
                    return (
                        snap.to_target,
                        snap.to_client,
                        snap.datagrams_to_target,
                        snap.datagrams_to_client,
                    ) == (
                        total,
                        total,
                        300,
                        300,
                    )

                wait_until(counted, "the snapshot's counts")  # taken from this thread, session open
                wait_until(lambda: bool(closes(running)), "the idle session's end")
            (closed,) = closes(running)
            assert (closed["to_target"], closed["to_client"]) == (total, total)
            assert (closed["datagrams_to_target"], closed["datagrams_to_client"]) == (300, 300)
            assert closed["reason"] == "idle"


def test_traffic_the_poller_carries_keeps_a_session_from_idling_out() -> None:
    with DatagramTarget("udp://127.0.0.1:0") as target:
        config = RelayConfig("udp://127.0.0.1:0", target.address, idle_timeout=0.6)
        with relay_thread(config) as running, datagram_socket(running.address, timeout=STEP) as sock:
            started = time.monotonic()
            while time.monotonic() - started < 2.0:  # three timeouts' worth, a datagram each 0.1 s
                assert ask(sock, b"ping") == b"ping"
                time.sleep(0.1)
            assert closes(running) == [], "idled out although a datagram crossed every 0.1 s"
            wait_until(lambda: bool(closes(running)), "the idle session's end")  # then silence


def test_the_least_recently_active_session_is_evicted_even_if_only_the_poller_saw_it() -> None:
    with DatagramTarget("udp://127.0.0.1:0") as target:
        config = RelayConfig("udp://127.0.0.1:0", target.address, max_sessions=2)
        with (
            relay_thread(config) as running,
            datagram_socket(running.address, timeout=STEP) as busy,
            datagram_socket(running.address, timeout=STEP) as quiet,
            datagram_socket(running.address, timeout=STEP) as newcomer,
        ):
            # Python itself reads one event in every 16, 32, … 256 (a batch is tried: ReadMode),
            # at 16, 48, 112, 240, 496…; after 250, busy's next 100 go by the poller alone.
            for _ in range(250):
                assert ask(busy, b"early") == b"early"
            assert ask(quiet, b"once") == b"once"
            for _ in range(100):  # after quiet's only datagram: busy is the most recently active
                assert ask(busy, b"again") == b"again"
            assert ask(newcomer, b"hello") == b"hello"  # a third sender: one must go
            wait_until(lambda: bool(closes(running)), "an eviction")
            (evicted,) = closes(running)
            assert evicted["reason"] == "evicted"
            assert evicted["peer"].endswith(f":{quiet.getsockname()[1]}")
            assert ask(busy, b"still here") == b"still here"


def test_a_datagram_too_large_is_counted_and_the_session_goes_on() -> None:
    with DatagramTarget("udp://127.0.0.1:0") as target:
        config = RelayConfig("udp://127.0.0.1:0", target.address, max_datagram=1000)
        with relay_thread(config) as running, datagram_socket(running.address, timeout=STEP) as sock:
            for _ in range(40):
                assert ask(sock, b"small") == b"small"
            sock.send(b"L" * 1500)  # dropped whole, counted
            assert ask(sock, b"after") == b"after"
            wait_until(lambda: running.relay.stats.snapshot().truncated == 1, "the truncated count")

"""Datagram → datagram relays: a session per sender, replies to the right sender, boundaries,
exact accounting, idle expiry, eviction, truncation (relay as a process, real sockets)."""

from __future__ import annotations

import os
import random
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import HAS_IPV6

from .conftest import (
    DatagramTarget,
    StartRelay,
    datagram_socket,
    final_summary,
    wait_until,
)

#: the relay with its compiled hot path and without it (tests/conftest.py: both_paths)
pytestmark = pytest.mark.usefixtures("both_paths")

#: Datagrams sent before waiting for their answers: loopback UDP drops nothing while the
#: receivers' queues have room, and this many stay well inside them.
WINDOW = 32

PAIRS = [
    ("udp4", "udp4"),
    pytest.param("udp6", "unixgram", marks=pytest.mark.skipif(not HAS_IPV6, reason="no IPv6")),
    ("unixgram", "udp4"),
    ("unixgram-abstract", "unixgram-abstract"),
]


def _payload(client: int, seq: int, rng: random.Random) -> bytes:
    """A sequence-numbered datagram of a random size (boundaries must survive)."""
    return struct.pack(">HI", client, seq) + rng.randbytes(rng.randrange(0, 1400))


def _exchange(sock: socket.socket, client: int, count: int, seed: int) -> list[bytes]:
    """Send ``count`` numbered datagrams in windows, and collect the answers."""
    rng = random.Random(seed)
    sent: list[bytes] = []
    answers: list[bytes] = []
    for start in range(0, count, WINDOW):
        batch = [_payload(client, seq, rng) for seq in range(start, min(start + WINDOW, count))]
        for data in batch:
            sock.send(data)
        sent += batch
        for _ in batch:
            answers.append(sock.recv(65536))
    assert answers == sent  # every datagram, whole, in order, and nothing else
    return sent


@pytest.mark.parametrize(("listen_kind", "target_kind"), PAIRS, ids=lambda k: str(k))
def test_numbered_datagrams_through_every_kind_with_exact_accounting(
    start_relay: StartRelay, make_address: Callable[[str], str], listen_kind: str, target_kind: str
) -> None:
    clients, count = 3, 400
    with DatagramTarget(make_address(target_kind)) as target:
        relay = start_relay(make_address(listen_kind), target.address, "--json")
        socks = [datagram_socket(relay.address) for _ in range(clients)]
        try:
            for index, sock in enumerate(socks):
                _exchange(sock, index, count, seed=index)
        finally:
            for sock in socks:
                sock.close()
        assert len(target.received) == clients * count
        assert len(target.senders()) == clients  # one upstream socket per sender
        summary = final_summary(relay)
    assert summary["total"] == clients
    assert summary["datagrams_to_target"] == summary["datagrams_to_client"] == clients * count
    assert summary["to_target"] == summary["to_client"] == sum(len(d) for d, _s in target.received)
    assert summary["truncated"] == summary["dropped"] == 0


def test_each_sender_gets_its_own_session_and_only_its_replies(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    """The target answers every datagram with the address it came from: each client must see
    one stable upstream address, different from every other client's."""

    def who(data: bytes, sender: Any) -> bytes:
        return data + b" from " + repr(sender).encode()

    with DatagramTarget(make_address("udp4"), who) as target:
        relay = start_relay(make_address("udp4"), target.address, "--json")
        socks = [datagram_socket(relay.address) for _ in range(4)]
        seen: dict[int, set[bytes]] = {}
        try:
            for round_ in range(5):
                for index, sock in enumerate(socks):  # interleaved senders
                    sock.send(b"%d:%d" % (index, round_))
                for index, sock in enumerate(socks):
                    answer = sock.recv(1000)
                    tag, _, upstream = answer.partition(b" from ")
                    assert tag == b"%d:%d" % (index, round_)
                    seen.setdefault(index, set()).add(upstream)
        finally:
            for sock in socks:
                sock.close()
        summary = final_summary(relay)
    assert all(len(upstreams) == 1 for upstreams in seen.values())
    assert len(set().union(*seen.values())) == 4
    sessions = [e for e in relay.json_events() if e["event"] == "session"]
    assert len(sessions) == 4 and summary["total"] == 4


def test_idle_sessions_expire_and_a_returning_sender_gets_a_new_one(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with DatagramTarget(make_address("udp4")) as target:
        relay = start_relay(make_address("udp4"), target.address, "--json", "--idle-timeout", "0.3")
        with datagram_socket(relay.address) as sock:
            sock.send(b"one")
            assert sock.recv(10) == b"one"
            relay.wait_err(r'"event": "close".*"reason": "idle"')
            sock.send(b"two")
            assert sock.recv(10) == b"two"
        summary = final_summary(relay)
    assert len(target.senders()) == 2  # the second datagram came through a new upstream socket
    assert summary["expired"] == 1 and summary["total"] == 2
    (idle,) = [e for e in relay.json_events() if e["event"] == "close" and e["reason"] == "idle"]
    assert idle["datagrams_to_target"] == idle["datagrams_to_client"] == 1


def test_the_least_recently_active_session_is_evicted_at_max_sessions(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with DatagramTarget(make_address("unixgram-abstract")) as target:
        relay = start_relay(make_address("udp4"), target.address, "--json", "--max-sessions", "2")
        socks = [datagram_socket(relay.address) for _ in range(3)]
        try:
            for index in (0, 1):
                socks[index].send(b"hello %d" % index)
                assert socks[index].recv(100) == b"hello %d" % index
            socks[0].send(b"again 0")  # 0 is now more recently active than 1
            assert socks[0].recv(100) == b"again 0"
            socks[2].send(b"hello 2")  # a third sender: 1 goes
            assert socks[2].recv(100) == b"hello 2"
            relay.wait_err(r'"event": "close".*"reason": "evicted"')
            socks[1].send(b"back 1")  # 1 comes back: a new session (and 0 is evicted)
            assert socks[1].recv(100) == b"back 1"
        finally:
            for sock in socks:
                sock.close()
        summary = final_summary(relay)
    evicted = [e for e in relay.json_events() if e["event"] == "close" and e["reason"] == "evicted"]
    assert len(evicted) == 2 and evicted[0]["id"] == 2
    assert summary["evicted"] == 2 and summary["total"] == 4
    assert len(target.senders()) == 4


def test_truncated_datagrams_are_counted_and_never_forwarded(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    def answer(data: bytes, sender: Any) -> bytes:
        return b"R" * 1500 if data == b"big answer please" else data

    with DatagramTarget(make_address("udp4"), answer) as target:
        relay = start_relay(make_address("udp4"), target.address, "--json", "--max-datagram", "1000")
        with datagram_socket(relay.address, timeout=0.5) as sock:
            sock.send(b"x" * 1001)  # one byte too many: dropped whole
            sock.send(b"y" * 1000)  # exactly the limit: relayed
            assert sock.recv(2000) == b"y" * 1000
            sock.send(b"big answer please")
            with pytest.raises(TimeoutError):
                sock.recv(2000)  # the 1500-byte answer was dropped, not cut to 1000
            sock.send(b"still here")
            assert sock.recv(2000) == b"still here"
        summary = final_summary(relay)
    assert [len(d) for d, _s in target.received] == [1000, 17, 10]
    assert summary["truncated"] == 2
    truncated = [e for e in relay.json_events() if e["event"] == "truncated"]
    assert [(e["side"], e["size"]) for e in truncated] == [("client", 1001), ("target", 1500)]


def test_a_unix_datagram_larger_than_the_limit_is_counted(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    """The default limit (64 KiB) holds any UDP datagram; a larger unix datagram is dropped."""
    with DatagramTarget(make_address("unixgram")) as target:
        relay = start_relay(make_address("unixgram"), target.address, "--json")
        with datagram_socket(relay.address) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            sock.send(os.urandom(100_000))
            sock.send(b"small")
            assert sock.recv(1000) == b"small"
        summary = final_summary(relay)
    assert [d for d, _s in target.received] == [b"small"]
    assert summary["truncated"] == 1


def test_an_unnamed_unix_sender_is_relayed_one_way(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    """A unix datagram socket that never bound has no address: its datagrams still reach the
    target (a logger, say), and the answers, having nowhere to go, are counted as dropped."""
    with DatagramTarget(make_address("unixgram")) as target:
        relay = start_relay(make_address("unixgram"), target.address, "--json")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            path = relay.address.split("://", 1)[1]
            for n in range(3):
                sock.sendto(b"log line %d" % n, path)
        wait_until(lambda: len(target.received) == 3, "the target receiving 3 datagrams")
        summary = final_summary(relay)
    assert summary["datagrams_to_target"] == 3 and summary["dropped"] == 3


def test_a_target_nobody_listens_on_is_reported_and_the_relay_goes_on(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    relay = start_relay(make_address("udp4"), f"udp4://127.0.0.1:{port}", "--json")
    with datagram_socket(relay.address, timeout=0.3) as sock:
        for _ in range(3):
            sock.send(b"anyone?")
            time.sleep(0.05)
        relay.wait_err(r'"event": "error".*refused a datagram')
        with DatagramTarget(f"udp4://127.0.0.1:{port}"):
            sock.send(b"now?")
            sock.settimeout(5)
            assert sock.recv(100) == b"now?"
    summary = final_summary(relay)
    assert summary["dropped"] >= 1


def test_sigterm_closes_the_sessions_and_exits_0(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with DatagramTarget(make_address("udp4")) as target:
        relay = start_relay(make_address("udp4"), target.address)
        with datagram_socket(relay.address) as a, datagram_socket(relay.address) as b:
            for sock in (a, b):
                sock.send(b"hi")
                assert sock.recv(10) == b"hi"
            relay.signal()
            assert relay.finish() == 0
    assert "stopping: closed 2 datagram sessions" in relay.err


def test_workers_share_a_udp_port_and_each_sender_stays_in_one(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    """SO_REUSEPORT hashes each sender to one worker: its session, and so its upstream socket,
    stay in that process (one stable upstream address per sender, as with one process)."""

    def who(data: bytes, sender: Any) -> bytes:
        return repr(sender).encode()

    with DatagramTarget(make_address("udp4"), who) as target:
        relay = start_relay(make_address("udp4"), target.address, "--workers", "2")
        socks = [datagram_socket(relay.address) for _ in range(8)]
        try:
            upstreams = []
            for sock in socks:
                seen = set()
                for _ in range(3):
                    sock.send(b"x")
                    seen.add(sock.recv(200))
                assert len(seen) == 1
                upstreams.append(seen.pop())
        finally:
            for sock in socks:
                sock.close()
        assert len(set(upstreams)) == 8
        relay.signal()
        assert relay.finish() == 0

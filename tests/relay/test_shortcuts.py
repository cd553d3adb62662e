"""The loop's shortcuts (the compiled small-message path, enchufe.relay.shortcuts) inside a real
relay: when they are armed, and that nothing changes for the peers or the counters whichever
way the bytes went.  Every test but the first runs with the compiled path and without it."""

from __future__ import annotations

import contextlib
import hashlib
import random
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from enchufe.relay import RelayConfig
from enchufe.relay.shortcuts import DOWN, UP

from .conftest import (
    STEP,
    RelayThread,
    StartRelay,
    Target,
    closed_by_peer,
    dial,
    digest_of,
    echo,
    exchange,
    ping,
    relay_thread,
    wait_until,
)

SIZES = (1, 7, 100, 1400, 4000, 30)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sessions(running: RelayThread) -> list[Any]:
    # white-box: the stream relay behind the library's Relay, and its open sessions
    handler: Any = running.relay._handler
    return list(handler.sessions)


@contextlib.contextmanager
def warmed(serve: Callable[[socket.socket], object]) -> Iterator[tuple[RelayThread, socket.socket]]:
    """A relay in front of ``serve`` and a client of it that made ten round trips (its
    session takes the shortcuts, where there are)."""
    with (
        Target("tcp://127.0.0.1:0", serve) as target,
        relay_thread(RelayConfig("tcp://127.0.0.1:0", target.address)) as running,
        dial(running.address) as sock,
    ):
        for _ in range(10):
            assert ping(sock)
        yield running, sock


def test_request_response_traffic_takes_the_shortcuts_and_one_exchange_does_not() -> None:
    """After a few messages each way a plain session is served by the poller itself; a client
    that sends one request and leaves never arms them (they would cost it more than they
    spare).  Without this, the compiled path could silently never be taken."""
    from enchufe.relay import engine

    if not engine.COMPILED:
        pytest.skip("enchufe._speedups is not built here")
    with (
        Target("tcp://127.0.0.1:0", echo) as target,
        relay_thread(RelayConfig("tcp://127.0.0.1:0", target.address)) as running,
        dial(running.address) as busy,
        dial(running.address) as brief,
    ):
        assert ping(brief)
        for _ in range(5):
            assert ping(busy)
        wait_until(lambda: len(_sessions(running)) == 2, "both sessions open")
        cuts = sorted(session._cuts for session in _sessions(running))
        assert cuts[-1] == UP | DOWN  # the busy one
        assert cuts[0] < 0  # the brief one: still warming up


pytestmark_both = pytest.mark.usefixtures("both_paths")


@pytestmark_both
def test_the_counters_are_exact_whichever_way_the_bytes_went() -> None:
    with (
        Target("tcp://127.0.0.1:0", echo) as target,
        relay_thread(RelayConfig("tcp://127.0.0.1:0", target.address)) as running,
    ):
        total = 0
        with dial(running.address) as sock:
            for turn in range(200):
                payload = bytes([turn % 251]) * SIZES[turn % len(SIZES)]
                assert ping(sock, payload)
                total += len(payload)

            # A snapshot while the session is open (taken from this thread) sees them all (once
            # the relay's thread, which may still be between its send and its count, is done).
            def counted() -> bool:
                snapshot = running.relay.stats.snapshot()
                return (snapshot.to_target, snapshot.to_client) == (total, total)

            wait_until(counted, "the snapshot's counts")
        wait_until(lambda: bool(running.events.named("close")), "the close event")
        (closed,) = running.events.named("close")
        assert (closed["to_target"], closed["to_client"]) == (total, total)
        assert (running.relay.stats.to_target, running.relay.stats.to_client) == (total, total)


@pytestmark_both
def test_a_session_armed_by_small_messages_then_moving_bulk_and_half_closing_loses_nothing() -> None:
    with warmed(echo) as (running, sock):
        result = exchange(sock, seed=7, size=4 << 20)  # then SHUT_WR, and the echo until EOF
        assert result.sent == result.received == 4 << 20
        assert result.sent_digest == result.received_digest == digest_of(7, 4 << 20)
        for _ in range(3):  # and small messages again on another connection of the same relay
            with dial(running.address) as again:
                assert all(ping(again) for _ in range(5))


@pytestmark_both
def test_a_reader_that_stalls_after_small_messages_gets_everything_when_it_resumes() -> None:
    """The poller's send takes part of a message (the target stopped reading): the rest waits
    in the relay, reads stop, and all of it arrives, in order, once the target reads again."""
    resume = __import__("threading").Event()
    received = hashlib.sha256()

    def stalling(conn: socket.socket) -> int:
        count = 0
        for _ in range(10):  # the warm-up: echo ten pings
            data = conn.recv(100)
            conn.sendall(data)
        resume.wait(STEP)
        while data := conn.recv(65536):
            received.update(data)
            count += len(data)
        return count

    sent = hashlib.sha256()
    with (
        Target("tcp://127.0.0.1:0", stalling) as target,
        relay_thread(RelayConfig("tcp://127.0.0.1:0", target.address)) as running,
        dial(running.address) as sock,
    ):
        for _ in range(10):
            assert ping(sock, b"p")
        sock.setblocking(False)
        total = 0
        deadline = time.monotonic() + STEP
        refused_since = None
        turn = 0
        while time.monotonic() < deadline:  # small messages until the path is full for 0.3 s
            message = struct.pack("!I", turn) * 50
            try:
                n = sock.send(message)
            except BlockingIOError:
                refused_since = refused_since or time.monotonic()
                if time.monotonic() - refused_since > 0.3:
                    break
                time.sleep(0.01)
                continue
            refused_since = None
            sent.update(message[:n])
            total += n
            turn += 1
        sock.setblocking(True)
        resume.set()
        sock.shutdown(socket.SHUT_WR)
        (got,) = target.wait_results(1)
        assert got == total > 0
        assert received.hexdigest() == sent.hexdigest()


@pytestmark_both
def test_the_idle_timeout_sees_traffic_the_shortcuts_carry() -> None:
    with Target("tcp://127.0.0.1:0", echo) as target:
        config = RelayConfig("tcp://127.0.0.1:0", target.address, idle_timeout=0.8)
        with relay_thread(config) as running, dial(running.address) as sock:
            started = time.monotonic()
            while time.monotonic() - started < 2.4:  # three idle timeouts' worth of pings
                assert ping(sock), "cut although a ping crossed every 0.2 s"
                time.sleep(0.2)
            assert closed_by_peer(sock, STEP)  # silence: cut
            wait_until(lambda: bool(running.events.named("close")), "the close event")
            (closed,) = running.events.named("close")
            assert closed["reason"] == "idle"


@pytestmark_both
def test_a_target_that_resets_after_small_messages_resets_the_client() -> None:
    def resets(conn: socket.socket) -> None:
        for _ in range(10):
            conn.sendall(conn.recv(100))
        conn.recv(100)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with warmed(resets) as (running, sock):
        sock.sendall(b"last")
        with pytest.raises(ConnectionResetError):
            while sock.recv(100):
                pass
        wait_until(lambda: bool(running.events.named("close")), "the close event")
        (closed,) = running.events.named("close")
        assert closed["reason"] == "target-reset"
        with contextlib.suppress(OSError):
            sock.close()


@pytest.mark.parametrize("target_says", ["bulk", "eof"])
def test_both_sides_handing_over_in_one_batch_lose_nothing_and_keep_the_order(
    start_relay: StartRelay, target_says: str
) -> None:
    """A stopped relay (SIGSTOP) finds both sides of a warmed session readable when it resumes:
    the poller hands each over (a read that fills its buffer, or the target's EOF) in one batch,
    and the session collects both before either pump reads on (enchufe.relay.shortcuts.settle).
    Every byte arrives, in order, both ways; the client's EOF still passes on."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(STEP)
        relay = start_relay(
            "tcp://127.0.0.1:0", f"tcp://127.0.0.1:{listener.getsockname()[1]}", "--json", "-vv"
        )
        with dial(relay.address) as client:
            peer, _ = listener.accept()
            with peer:
                peer.settimeout(STEP)
                for _ in range(10):  # the warm-up: the session arms its shortcuts
                    client.sendall(b"ping")
                    assert peer.recv(100) == b"ping"
                    peer.sendall(b"pong")
                    assert client.recv(100) == b"pong"
                up = random.Random(1).randbytes(1 << 20)
                down = random.Random(2).randbytes(1 << 20) if target_says == "bulk" else b""
                relay.popen.send_signal(signal.SIGSTOP)
                try:
                    peer.sendall(down[: 1 << 16])  # each fills the poller's read at once
                    client.sendall(up[: 1 << 16])
                    if target_says == "eof":
                        peer.shutdown(socket.SHUT_WR)
                finally:
                    relay.popen.send_signal(signal.SIGCONT)
                results: dict[str, bytes] = {}

                def read_all(name: str, sock: socket.socket) -> None:
                    got = bytearray()
                    while chunk := sock.recv(1 << 16):
                        got += chunk
                    results[name] = bytes(got)

                readers = [
                    threading.Thread(target=read_all, args=("at target", peer)),
                    threading.Thread(target=read_all, args=("at client", client)),
                ]
                for reader in readers:
                    reader.start()
                client.sendall(up[1 << 16 :])
                client.shutdown(socket.SHUT_WR)
                if target_says == "bulk":
                    peer.sendall(down[1 << 16 :])
                    peer.shutdown(socket.SHUT_WR)
                for reader in readers:
                    reader.join(STEP)
                assert digest(results["at target"]) == digest(up)
                assert digest(results["at client"]) == digest(down)

    def closes() -> list[str]:
        return [e["reason"] for e in relay.json_events() if e["event"] == "close"]

    wait_until(lambda: bool(closes()), "the close event")  # the relay's stderr is read as it comes
    assert closes() == ["done"]

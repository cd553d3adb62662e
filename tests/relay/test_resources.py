"""Bounded memory with a stalled reader, no pipes held by idle connections, --idle-timeout."""

from __future__ import annotations

import hashlib
import shutil
import socket
import threading
import time
from collections.abc import Callable

import pytest

from tests.conftest import Peer

from .conftest import (
    IO_TIMEOUT,
    StartRelay,
    Target,
    closed_by_peer,
    dial,
    digest_of,
    echo,
    generated,
    ping,
    wait_until,
)

MiB = 1024 * 1024

#: What the issue allows the relay to grow by while a reader stalls.
RSS_GROWTH_LIMIT_KIB = 16 * 1024


@pytest.mark.parametrize("mode", ["splice", "copy"])
def test_a_stalled_reader_pushes_back_and_gets_every_byte_when_it_resumes(
    start_relay: StartRelay, make_address: Callable[[str], str], mode: str
) -> None:
    size = 256 * MiB
    resume = threading.Event()

    def stalled_reader(conn: socket.socket) -> tuple[int, str]:
        resume.wait(IO_TIMEOUT)
        h = hashlib.sha256()
        total = 0
        while data := conn.recv(1 << 20):
            h.update(data)
            total += len(data)
        return total, h.hexdigest()

    progress = [0]

    def push(sock: socket.socket) -> None:
        for chunk in generated(3, size):
            sock.sendall(chunk)
            progress[0] += len(chunk)
        sock.shutdown(socket.SHUT_WR)

    options = ("--no-splice",) if mode == "copy" else ()
    with Target(make_address("tcp4"), stalled_reader) as target:
        relay = start_relay(make_address("tcp4"), target.address, *options)
        before = relay.rss_kib()
        with dial(relay.address) as client:
            pusher = Peer(push, client)
            # Wait until the push stalls: no progress for half a second.
            last, still_since = -1, time.monotonic()
            deadline = time.monotonic() + 20
            while time.monotonic() - still_since < 0.5:
                assert time.monotonic() < deadline, "the client never stalled"
                if progress[0] != last:
                    last, still_since = progress[0], time.monotonic()
                time.sleep(0.05)
            assert progress[0] < size, "nothing pushed back: everything was taken while the reader stalled"
            stalled_rss = max(relay.rss_kib() for _ in range(3))
            resume.set()
            pusher.result(IO_TIMEOUT)
            client.settimeout(IO_TIMEOUT)
            assert client.recv(1) == b""  # the target closed after reading everything
        ((received, digest),) = target.wait_results(1)
    assert stalled_rss - before < RSS_GROWTH_LIMIT_KIB, (before, stalled_rss)
    assert received == size
    assert digest == digest_of(3, size)


def test_idle_connections_hold_no_pipes(start_relay: StartRelay, make_address: Callable[[str], str]) -> None:
    """Pipes are borrowed while bytes are in flight: 200 idle connections hold sockets only."""
    count = 200
    with Target(make_address("tcp4"), echo) as target:
        relay = start_relay(make_address("tcp4"), target.address)
        clients = []
        try:
            for _ in range(count):
                sock = dial(relay.address)
                clients.append(sock)
                assert ping(sock)
            kinds = relay.fd_kinds()
            assert kinds["socket"] >= 2 * count
            # stderr, the loop's wake-up pipe, and the one pipe the pool kept after the pings
            assert kinds["pipe"] <= 5, kinds
            assert all(ping(sock) for sock in clients)  # every one still relays
        finally:
            for sock in clients:
                sock.close()


def test_idle_timeout_closes_only_silent_connections(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with Target(make_address("tcp4"), echo) as target:
        relay = start_relay(make_address("tcp4"), target.address, "--idle-timeout", "0.5", "--json")
        with dial(relay.address) as silent, dial(relay.address) as chatty:
            assert ping(silent) and ping(chatty)
            for _ in range(6):  # 1.2 s of traffic every 0.2 s
                time.sleep(0.2)
                assert ping(chatty)
            assert closed_by_peer(silent, timeout=IO_TIMEOUT)
            assert ping(chatty)
        relay.wait_err(r'"event": "close".*"reason": "idle"')


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is not installed")
def test_running_out_of_descriptors_turns_clients_away_and_the_relay_recovers(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    """With 48 descriptors and --max-conns far above what they hold, accept() and socket() fail
    with EMFILE: the extra clients are closed at once (never left in the backlog) and the relay
    serves again once descriptors are free."""
    with Target(make_address("tcp4"), echo) as target:
        relay = start_relay(
            make_address("tcp4"),
            target.address,
            "--max-conns",
            "1000",
            "--json",
            prefix=("prlimit", "--nofile=48:48"),
        )
        relay.wait_err(r'"event": "warning", "max_conns": 1000')
        clients: list[socket.socket] = []
        served = turned = 0
        try:
            for _ in range(30):
                try:
                    sock = dial(relay.address)
                except ConnectionResetError:
                    turned += 1
                    continue
                clients.append(sock)
                if ping(sock):
                    served += 1
                else:
                    turned += 1  # closed within dial's IO_TIMEOUT
            assert served >= 5 and turned >= 5, (served, turned)
        finally:
            for sock in clients:
                sock.close()
        relay.wait_err(r'"event": "error".*out of file descriptors')

        def serves_again() -> bool:
            try:
                sock = dial(relay.address)
            except ConnectionResetError:
                return False
            with sock:
                return ping(sock)

        wait_until(serves_again, "the relay serving again")

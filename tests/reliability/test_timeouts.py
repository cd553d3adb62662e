"""A ``timeout`` fault holds a connection open and silent: what enchufe's own idle timeouts are
for (``connect --idle-timeout``, ``relay --idle-timeout``, the library's receive timeout)."""

from __future__ import annotations

import time

import pytest

import enchufe
from enchufe.testing import EchoServer, FaultyRelayStarter
from tests.cli.conftest import Spawn
from tests.relay.conftest import STEP, StartRelay

#: the relay with its compiled hot path and without it (tests/conftest.py: both_paths)
pytestmark = pytest.mark.usefixtures("both_paths")

HELD = "timeout:timeout=0"  # nothing passes, and the connection is never closed


def test_connect_idle_timeout_ends_a_held_connection(
    echo_server: EchoServer, faulty_relay: FaultyRelayStarter, spawn: Spawn
) -> None:
    relay = faulty_relay(echo_server("tcp4"), HELD)
    client = spawn("connect", str(relay.address), "--idle-timeout", "0.5", "-v")
    client.feed(b"hello\n", close=False)  # stdin stays open: only the idle timeout can end this
    assert client.finish() == 0, client.err
    assert client.out == b""
    assert "no traffic for 0.5 s" in client.err


def test_relay_idle_timeout_cuts_a_held_connection(
    echo_server: EchoServer, faulty_relay: FaultyRelayStarter, start_relay: StartRelay
) -> None:
    held = faulty_relay(echo_server("tcp4"), HELD)
    relay = start_relay("tcp://127.0.0.1:0", str(held.address), "--idle-timeout", "0.5")
    with enchufe.connect(relay.address, timeout=5) as conn:
        conn.send_all(b"hello")
        conn.set_timeout(STEP)
        started = time.monotonic()
        with pytest.raises(enchufe.ConnectionReset):  # cut: no traffic either way for 0.5 s
            conn.recv()
        assert time.monotonic() - started < STEP
    assert held.stats.to_client == 0


def test_the_librarys_receive_timeout_through_a_held_connection(
    echo_server: EchoServer, faulty_relay: FaultyRelayStarter
) -> None:
    relay = faulty_relay(echo_server("unix"), HELD)
    with enchufe.connect(relay.address, timeout=5) as conn:
        conn.send_all(b"hello")
        conn.set_timeout(0.3)
        try:
            conn.recv()
        except enchufe.TimedOut as exc:
            assert "time" in str(exc)
        else:
            raise AssertionError("a reply came through a timeout fault")


def test_a_timeout_with_a_value_closes_in_order(
    echo_server: EchoServer, faulty_relay: FaultyRelayStarter
) -> None:
    relay = faulty_relay(echo_server("tcp4"), "timeout:timeout=300")
    started = time.monotonic()  # before the connection: its 0.3 s start later
    with enchufe.connect(relay.address, timeout=5) as conn:
        conn.send_all(b"hello")
        conn.set_timeout(STEP)
        assert conn.recv() == b""  # an orderly end, with nothing before it
        assert time.monotonic() - started >= 0.300 - 0.002

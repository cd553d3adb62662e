"""A ``timeout`` fault holds a connection open and silent: what enchufe's own idle timeouts are
for (``connect --idle-timeout``, ``relay --idle-timeout``, the library's receive timeout)."""

from __future__ import annotations

import subprocess
import time

import pytest

import enchufe
from enchufe.testing import EchoServer, FaultyRelayStarter
from tests.relay.conftest import ENCHUFE, STEP, StartRelay

HELD = "timeout:timeout=0"  # nothing passes, and the connection is never closed


def finish(client: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """What an ended client wrote (stdin was kept open to its end: communicate() closes it)."""
    assert client.stdout is not None and client.stderr is not None
    with client.stdout, client.stderr:
        return client.stdout.read(), client.stderr.read()


def test_connect_idle_timeout_ends_a_held_connection(
    echo_server: EchoServer, faulty_relay: FaultyRelayStarter
) -> None:
    relay = faulty_relay(echo_server("tcp4"), HELD)
    client = subprocess.Popen(
        [*ENCHUFE, "connect", str(relay.address), "--idle-timeout", "0.5", "-v"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert client.stdin is not None
    try:
        client.stdin.write(b"hello\n")
        client.stdin.flush()  # and stdin stays open: only the idle timeout can end this
        client.wait(STEP)
    finally:
        client.kill()
        client.wait(STEP)
        client.stdin.close()
    out, err = finish(client)
    assert client.returncode == 0, err
    assert out == b""
    assert "no traffic for 0.5 s" in err.decode()


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

"""Datagram → datagram relays send a burst from one sender as runs (UDP GSO: one ``sendmsg``
for consecutive datagrams of one size): every datagram of a burst must still arrive, whole and in
order, whatever its size, each way (relay as a process, real sockets)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from .conftest import DatagramTarget, RelayProc, StartRelay, datagram_socket

#: the relay with its compiled hot path and without it (tests/conftest.py: both_paths)
pytestmark = pytest.mark.usefixtures("both_paths")

#: A burst that mixes empty datagrams with runs of one size: a GSO send cannot carry an empty
#: datagram (the kernel makes datagrams out of bytes), alone or at the end of a run.
BURST = [b"", b"", b"", b"x" * 8, b"x" * 8, b"", b"y" * 8, b"y" * 3, b"", b""]

#: Seconds to wait for the burst: it arrives at once, or some of it never does.
WAIT = 5.0


@contextmanager
def _paused(relay: RelayProc) -> Iterator[None]:
    """The relay process stopped meanwhile: what is sent waits in its sockets' queues, to be
    read in one batch when it goes on."""
    os.kill(relay.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(relay.pid, signal.SIGCONT)


def test_a_burst_with_empty_datagrams_arrives_whole_each_way(start_relay: StartRelay) -> None:
    """Empty datagrams used to join runs (of empty ones, or as a run's shorter last one): sent
    in one GSO ``sendmsg``, all but the first were lost, yet counted as relayed."""
    with DatagramTarget("udp://127.0.0.1:0", respond=lambda _data, _sender: None) as target:
        relay = start_relay("udp://127.0.0.1:0", target.address)
        with datagram_socket(relay.address, timeout=WAIT) as client:
            with _paused(relay):
                for data in BURST:
                    client.send(data)
            assert target.wait_received(len(BURST), timeout=WAIT) == BURST
            upstream = target.received[0][1]
            with _paused(relay):
                for data in BURST:
                    target.sock.sendto(data, upstream)
            assert [client.recv(100) for _ in BURST] == BURST


def test_a_burst_of_one_size_goes_in_one_send_each_way(start_relay: StartRelay) -> None:
    """Runs are what makes a UDP burst cheap: one ``sendmsg`` (UDP_SEGMENT) per run, narrated as
    such, and the datagrams still arrive one by one, the shorter last one included."""
    burst = [bytes([n]) * 100 for n in range(5)] + [b"z" * 40]
    with DatagramTarget("udp://127.0.0.1:0", respond=lambda _data, _sender: None) as target:
        relay = start_relay("udp://127.0.0.1:0", target.address, "--trace")
        with datagram_socket(relay.address, timeout=WAIT) as client:
            with _paused(relay):
                for data in burst:
                    client.send(data)
            assert target.wait_received(len(burst), timeout=WAIT) == burst
            relay.wait_err(r"^sendmsg\(fd \d+, 6 datagrams of 100 bytes, UDP_SEGMENT\) = 540$", timeout=WAIT)
            upstream = target.received[0][1]
            with _paused(relay):
                for data in reversed(burst):
                    target.sock.sendto(data, upstream)
            assert [client.recv(200) for _ in burst] == list(reversed(burst))
        # the replies: a run of one datagram of 40 bytes goes alone, the five of 100 in one send
        relay.wait_err(r"^sendmsg\(fd \d+, 5 datagrams of 100 bytes, UDP_SEGMENT\) = 500$", timeout=WAIT)

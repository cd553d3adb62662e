"""Reads with a deadline in slices (enchufe._waits): what arrives after several slices is still
read, the deadline still holds, and a stop signal's handler runs within a slice."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable

import pytest

import enchufe
from enchufe import TimedOut
from enchufe._waits import SIGNAL_SLICE, drain_until_eof, recv_within


def _later(delay: float, action: Callable[[], object]) -> threading.Timer:
    timer = threading.Timer(delay, action)
    timer.start()
    return timer


def test_drain_until_eof_reads_what_comes_after_several_slices_then_the_eof() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        conn = enchufe.connect(f"tcp://127.0.0.1:{listener.getsockname()[1]}")
        peer, _ = listener.accept()
        with conn, peer:
            got: list[bytes] = []

            def answer_and_close() -> None:
                peer.sendall(b"answer")
                peer.shutdown(socket.SHUT_WR)

            timers = [
                _later(3 * SIGNAL_SLICE, lambda: peer.sendall(b"late ")),
                _later(5 * SIGNAL_SLICE, answer_and_close),
            ]
            assert drain_until_eof(conn, 10.0, got.append) is True
            for timer in timers:
                timer.join()
            assert b"".join(got) == b"late answer"


def test_drain_until_eof_gives_up_at_its_deadline() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        conn = enchufe.connect(f"tcp://127.0.0.1:{listener.getsockname()[1]}")
        peer, _ = listener.accept()
        with conn, peer:
            started = time.monotonic()
            assert drain_until_eof(conn, 0.7, None) is False
            assert time.monotonic() - started >= 0.7


def test_recv_within_takes_a_late_datagram_and_times_out_without_one() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        sock = enchufe.connect_datagram(f"udp://127.0.0.1:{server.getsockname()[1]}")
        with sock:
            sock.send(b"question")
            _data, client = server.recvfrom(100)
            timer = _later(3 * SIGNAL_SLICE, lambda: server.sendto(b"reply", client))
            assert recv_within(sock, 10.0) == b"reply"
            timer.join()
            started = time.monotonic()
            with pytest.raises(TimedOut):
                recv_within(sock, 0.5)
            assert time.monotonic() - started >= 0.5


class _Stopped(Exception):
    pass


def test_a_signal_whose_handler_raises_ends_the_wait_within_a_slice() -> None:
    """The handler runs when a read returns: at the latest one slice after the signal, whatever
    moment it lands.  Sent to another thread (pthread_kill), the signal interrupts nothing in
    the main thread: its handler waits for the read to return, as when a signal lands just
    before a read blocks (then too it only sets a flag).  One read of the whole timeout would
    keep it waiting 30 s."""

    def stop(signum: int, frame: object) -> None:
        raise _Stopped

    previous = signal.signal(signal.SIGUSR1, stop)
    try:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            conn = enchufe.connect(f"tcp://127.0.0.1:{listener.getsockname()[1]}")
            peer, _ = listener.accept()
            with conn, peer:
                timer = _later(0.3, lambda: signal.pthread_kill(threading.get_ident(), signal.SIGUSR1))
                started = time.monotonic()
                with pytest.raises(_Stopped):
                    drain_until_eof(conn, 30.0, None)
                assert time.monotonic() - started < 0.3 + 3.0  # not the 30 s of the timeout
                timer.join()
    finally:
        signal.signal(signal.SIGUSR1, previous)

"""Datagram rate and loss: datagrams sent as fast as the socket takes them, each numbered, and
the distinct ones that arrived counted, by bench's counting sink or from the echoes.

The rules of :mod:`.measures` hold here too; the sender looks at the clock only once per
:data:`CLOCK_EVERY` datagrams, and the count is final only when the receiver has been quiet
for :data:`SETTLE_QUIET` seconds.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from ..address import SocketAddress
from ..sync import connect_datagram
from . import sequence
from .loops import (
    CONNECT_TIMEOUT,
    IO_TIMEOUT,
    RECV_BUFFER,
    Worker,
    error_for,
    raise_first,
    set_kernel_timeouts,
)
from .results import DatagramRate
from .sequence import HEADER, MAGIC, Counts, SequenceTracker

__all__ = ["datagram_rate"]

#: After the last datagram is sent, receivers get this long without anything arriving (and at
#: most SETTLE_MAX in all) to take in what is still in flight before the count is final.
SETTLE_QUIET = 0.1
SETTLE_MAX = 1.0

#: The datagram sender looks at the clock once per this many datagrams (a power of two): often
#: enough to end within microseconds of the deadline, rarely enough to cost nothing.
CLOCK_EVERY = 32


def _blast(raw: socket.socket, payload: bytearray, token: int, seconds: float) -> tuple[int, float, float]:
    """Send datagrams numbered 0, 1, … as fast as the socket takes them for ``seconds``.

    Returns (datagrams sent, start, end).  A blocking send waits while the socket's buffer is
    full: UDP drops at the receiver instead, unix datagram sockets make the sender wait.
    """
    send, pack, clock = raw.send, HEADER.pack_into, time.perf_counter
    mask = CLOCK_EVERY - 1
    seq = 0
    start = clock()
    end = start + seconds
    while True:
        pack(payload, 0, MAGIC, token, seq)
        send(payload)
        seq += 1
        if not seq & mask and clock() >= end:
            break
    return seq, start, clock()


class _EchoCounter:
    """The receiving side of a datagram rate test against an echo server: counts echoes."""

    def __init__(self, raw: socket.socket, token: int, failed: threading.Event, where: str) -> None:
        self.raw = raw
        self.tracker = SequenceTracker(token)
        self.running = True
        self.last_arrival = time.perf_counter()
        self.where = where
        self.worker = Worker("bench-echo-counter", self._run, failed)

    def _run(self) -> None:
        buffer = bytearray(RECV_BUFFER)
        view = memoryview(buffer)
        recv_into, feed = self.raw.recv_into, self.tracker.feed
        clock = time.perf_counter
        while self.running:
            try:
                n = recv_into(buffer)
            except BlockingIOError:  # SO_RCVTIMEO: a quiet moment; look whether to stop
                continue
            except ConnectionRefusedError:
                continue  # an ICMP error for an earlier datagram; the sender reports a dead peer
            except OSError as exc:
                if not self.running:
                    return
                raise error_for(exc, f"receive echoes from {self.where}") from exc
            feed(view[:n])
            self.last_arrival = clock()


def datagram_rate(
    address: SocketAddress,
    *,
    duration: float,
    warmup: float,
    size: int,
    counter: Callable[[int], Counts] | None = None,
) -> DatagramRate:
    """Datagrams of ``size`` bytes, sent as fast as the socket takes them for ``duration`` s.

    ``counter(token)``: what bench's own counting sink received for ``token`` (the sink runs in
    another process); without it the server must echo, and the echoes are counted here.
    """
    if size < sequence.HEADER_SIZE:
        raise ValueError(f"a datagram carries at least the {sequence.HEADER_SIZE}-byte header")
    failed = threading.Event()
    with connect_datagram(address, timeout=CONNECT_TIMEOUT) as sock:
        raw = sock.socket
        set_kernel_timeouts(raw, recv=SETTLE_QUIET / 2, send=IO_TIMEOUT)
        token, warm_token = sequence.new_token(), sequence.new_token()
        payload = bytearray(size)
        echo: _EchoCounter | None = None
        if counter is None:
            echo = _EchoCounter(raw, token, failed, str(address))
            echo.worker.start()
        try:
            _blast(raw, payload, warm_token, warmup)
            sent, start, stop = _blast(raw, payload, token, duration)
        except OSError as exc:
            if echo is not None:  # let the receiver go before its socket is closed
                echo.running = False
                echo.worker.join(IO_TIMEOUT)
            raise error_for(exc, f"send datagrams to {address}") from exc
        if echo is not None:
            counts = _settle_echoes(echo, stop)
        else:
            assert counter is not None
            counts = _settle_sink(counter, token)
    return DatagramRate(
        size=size,
        seconds=stop - start,
        sent=sent,
        received=min(counts.received, sent),
        duplicates=counts.duplicates,
        reordered=counts.reordered,
        method="sink" if echo is None else "echo",
    )


def _settle_echoes(echo: _EchoCounter, sent_until: float) -> Counts:
    deadline = sent_until + SETTLE_MAX
    while True:
        now = time.perf_counter()
        if now >= deadline or now - max(echo.last_arrival, sent_until) >= SETTLE_QUIET:
            break
        time.sleep(SETTLE_QUIET / 4)
    echo.running = False
    echo.worker.join(IO_TIMEOUT)
    raise_first([echo.worker])
    return echo.tracker.counts


def _settle_sink(counter: Callable[[int], Counts], token: int) -> Counts:
    deadline = time.perf_counter() + SETTLE_MAX
    counts = counter(token)
    while time.perf_counter() < deadline:
        time.sleep(SETTLE_QUIET / 2)
        again = counter(token)
        if again.received == counts.received:
            return again
        counts = again
    return counts

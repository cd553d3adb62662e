"""The measurement loops: what is timed, how, and what is left out.

Rules every loop here follows:

* **The clock** is :func:`time.perf_counter` (monotonic, the finest Python has); a window's
  length is what the clock says it was, never what was asked for.
* **Warm-up is not counted**: timed tests run ``warmup`` seconds first, latency runs
  ``warmup`` round trips first; datagrams of the warm-up carry another token than the measured
  ones (:mod:`.sequence`), so not even a late one is counted.
* **Hot loops call the socket directly**: the library opens, resolves and connects (and
  cleans up unix socket files); then the loop calls ``send``/``recv_into`` on the socket
  itself, into buffers allocated once.  The figures are the kernel's and CPython's, not the
  per-call bookkeeping of enchufe's wrappers (a connection object costs two extra system calls,
  ``getsockname`` and ``getpeername``, which would halve the connection rate).
* **No hot loop polls**: timeouts are the kernel's (``SO_RCVTIMEO``/``SO_SNDTIMEO`` on a
  blocking socket), so waiting costs no extra system call, and a peer that makes no progress
  for :data:`IO_TIMEOUT` seconds fails the measure with :class:`~enchufe.errors.TimedOut`
  instead of hanging it.
* **Threads**: each connection's sender (and, against an echo server, receiver) is a thread of
  its own; they release the GIL in every system call.  The server is never one of them: it is
  bench's own server in another process (:mod:`.servers`) or a server already running.

Throughput is counted at the receiving end: against a sink, bytes sent after the warm-up,
with the clock stopped only when the sink has read everything (it closes after our EOF);
against an echo server, the bytes that came back, counted as they arrive.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from ..address import SocketAddress
from ..errors import ConnectionRefused, ProtocolError, TimedOut, translate
from ..i18n import _
from ..sync import connect, connect_datagram
from ..sync.stream import Connection
from . import sequence
from .datagram_rate import datagram_rate
from .loops import (
    CONNECT_TIMEOUT,
    IO_TIMEOUT,
    RECV_BUFFER,
    TIMEVAL,
    Worker,
    error_for,
    finish_stream,
    no_delay,
    open_streams,
    raise_first,
    set_kernel_timeouts,
)
from .results import ConnectRate, Latency, Throughput
from .sequence import HEADER, MAGIC
from .stats import summarize

__all__ = [
    "CONNECT_TIMEOUT",
    "IO_TIMEOUT",
    "connect_rate",
    "datagram_rate",
    "latency",
    "probe",
    "throughput",
]

#: A ping whose reply has not come back after this long counts as lost (datagram latency).
#: Far above any loopback round trip (tens of µs), below what a person notices.
REPLY_TIMEOUT = 0.25

#: This many lost pings in a row mean nobody answers: the measure stops with an error.
MAX_LOST_IN_A_ROW = 8

# ---------------------------------------------------------------------------- probe


#: Seconds a datagram server has to echo bench's first datagram before it is called silent.
PROBE_TIMEOUT = 1.0


def probe(address: SocketAddress, *, timeout: float = PROBE_TIMEOUT) -> None:
    """Check that a server answers at ``address`` before measuring it: one connection for a
    stream, one echoed datagram for a datagram kind.  Raises the error a user should see."""
    try:
        _probe(address, timeout)
    except ConnectionRefused as exc:
        raise ConnectionRefused(
            _(
                "nobody answers at {address} (connection refused); start a server there first, "
                "e.g. enchufe echo {address}"
            ).format(address=address),
            errno=exc.errno,
        ) from exc


def _probe(address: SocketAddress, timeout: float) -> None:
    if address.is_stream:
        with connect(address, timeout=CONNECT_TIMEOUT):
            return
    with connect_datagram(address, timeout=CONNECT_TIMEOUT) as sock:
        raw = sock.socket
        set_kernel_timeouts(raw, recv=timeout, send=IO_TIMEOUT)
        payload = bytearray(sequence.HEADER_SIZE)
        token = sequence.new_token()
        sequence.stamp(payload, token, 0)
        buffer = bytearray(RECV_BUFFER)
        deadline = time.monotonic() + timeout
        try:
            raw.send(payload)
            while time.monotonic() < deadline:
                size = raw.recv_into(buffer)
                if sequence.read(memoryview(buffer)[:size]) == (token, 0):
                    return
        except BlockingIOError:
            pass
        except OSError as exc:
            raise translate(exc, f"reach an echo server at {address}") from exc
        raise TimedOut(
            _(
                "no echo from {address} within {seconds} s: bench measures datagrams against an echo "
                "server (e.g. `enchufe echo ADDRESS`)"
            ).format(address=address, seconds=f"{timeout:g}")
        )


# ---------------------------------------------------------------------------- throughput


class _Pump:
    """One connection of a throughput test: a sender thread, and a receiver thread for echoes."""

    def __init__(self, conn: Connection, size: int, echo: bool, index: int, failed: threading.Event) -> None:
        self.sock = conn.socket
        self.where = str(conn.peer_address or "the server")
        set_kernel_timeouts(self.sock, recv=IO_TIMEOUT, send=IO_TIMEOUT)
        self.size = size
        self.echo = echo
        self.running = True
        self.sent = 0
        self.received = 0
        self.finished = 0.0
        self.workers = [Worker(f"bench-send-{index}", self._send, failed)]
        if echo:
            self.workers.append(Worker(f"bench-recv-{index}", self._receive, failed))

    @property
    def counted(self) -> int:
        """The bytes that count so far: received back (echo), or sent (sink)."""
        return self.received if self.echo else self.sent

    def _send(self) -> None:
        data = memoryview(bytearray(self.size))
        sendall = self.sock.sendall
        size = self.size
        try:
            while self.running:
                sendall(data)
                self.sent += size
        except OSError as exc:
            raise error_for(exc, f"send to {self.where}") from exc
        if self.echo:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
        else:
            self.finished = finish_stream(self.sock, bytearray(4096), f"finish sending to {self.where}")

    def _receive(self) -> None:
        buffer = bytearray(max(self.size, RECV_BUFFER))
        recv_into = self.sock.recv_into
        try:
            while size := recv_into(buffer):
                self.received += size
        except OSError as exc:
            raise error_for(exc, f"receive from {self.where}") from exc
        self.finished = time.perf_counter()

    def stop(self) -> None:
        self.running = False


def throughput(
    address: SocketAddress,
    *,
    duration: float,
    warmup: float,
    size: int,
    connections: int = 1,
    method: str = "sink",
) -> Throughput:
    """Stream throughput through ``connections`` connections for ``duration`` seconds.

    ``method="sink"``: the server discards (and closes after our EOF); ``"echo"``: the server
    sends everything back and what comes back is counted.
    """
    if method not in ("sink", "echo"):
        raise ValueError(f"method is sink or echo, not {method!r}")
    echo = method == "echo"
    failed = threading.Event()
    conns = open_streams(address, connections)
    try:
        pumps = [_Pump(conn, size, echo, i, failed) for i, conn in enumerate(conns)]
        counted, seconds = _timed_window(pumps, failed, warmup=warmup, duration=duration)
        return Throughput(connections, size, seconds, counted, method)
    finally:
        for conn in conns:
            conn.close()


def _timed_window(
    pumps: list[_Pump], failed: threading.Event, *, warmup: float, duration: float
) -> tuple[int, float]:
    """Run the pumps for ``warmup`` and then ``duration`` seconds (less if one fails), stop
    them; the bytes that count, and the seconds they took."""
    workers = [w for p in pumps for w in p.workers]
    for worker in workers:
        worker.start()
    failed.wait(warmup)
    start = time.perf_counter()
    marks = [p.counted for p in pumps]
    failed.wait(duration)
    stop = time.perf_counter()
    ends = [p.counted for p in pumps]
    for pump in pumps:
        pump.stop()
    for worker in workers:
        worker.join(IO_TIMEOUT * 2)
    raise_first(workers)
    if pumps[0].echo:
        return sum(end - mark for end, mark in zip(ends, marks, strict=True)), stop - start
    # Everything sent after the mark counts, and the window lasts until the sink had it.
    counted = sum(p.sent - mark for p, mark in zip(pumps, marks, strict=True))
    return counted, max(p.finished for p in pumps) - start


# ---------------------------------------------------------------------------- latency


def latency(address: SocketAddress, *, count: int, warmup: int, size: int) -> Latency:
    """Ping-pong: send ``size`` bytes, wait for all of them to come back; ``count`` times,
    after ``warmup`` uncounted round trips.  Every round trip is one sample."""
    if address.is_stream:
        return _stream_latency(address, count, warmup, size)
    return _datagram_latency(address, count, warmup, size)


def _stream_latency(address: SocketAddress, count: int, warmup: int, size: int) -> Latency:
    with connect(address, timeout=CONNECT_TIMEOUT) as conn:
        sock = conn.socket
        set_kernel_timeouts(sock, recv=IO_TIMEOUT, send=IO_TIMEOUT)
        no_delay(sock)
        message = bytes(size)
        buffer = bytearray(size)
        view = memoryview(buffer)
        samples: list[int] = []
        clock = time.perf_counter_ns
        sendall, recv_into = sock.sendall, sock.recv_into
        what = f"exchange {size} bytes with {address}"
        try:
            for i in range(warmup + count):
                started = clock()
                sendall(message)
                got = 0
                while got < size:
                    n = recv_into(view[got:])
                    if not n:
                        raise ProtocolError(
                            _(
                                "{address} closed the connection after echoing {got} of {size} bytes; "
                                "is it an echo server?"
                            ).format(address=address, got=got, size=size)
                        )
                    got += n
                if i >= warmup:
                    samples.append(clock() - started)
        except OSError as exc:
            raise error_for(exc, what) from exc
        finish_stream(sock, buffer, f"close the connection to {address}")
    return Latency(size, count, warmup, summarize(samples), samples_ns=samples)


def _datagram_latency(address: SocketAddress, count: int, warmup: int, size: int) -> Latency:
    with connect_datagram(address, timeout=CONNECT_TIMEOUT) as sock:
        raw = sock.socket
        set_kernel_timeouts(raw, recv=REPLY_TIMEOUT, send=IO_TIMEOUT)
        token = sequence.new_token()
        payload = bytearray(size)
        buffer = bytearray(RECV_BUFFER)
        view = memoryview(buffer)
        samples: list[int] = []
        lost = late = in_a_row = 0
        clock = time.perf_counter_ns
        send, recv_into = raw.send, raw.recv_into
        pack, unpack = HEADER.pack_into, HEADER.unpack_from
        try:
            for seq in range(warmup + count):
                pack(payload, 0, MAGIC, token, seq)
                started = clock()
                send(payload)
                while True:
                    try:
                        n = recv_into(buffer)
                    except BlockingIOError:  # no reply within REPLY_TIMEOUT
                        if seq >= warmup:
                            lost += 1
                        in_a_row += 1
                        if in_a_row >= MAX_LOST_IN_A_ROW:
                            raise TimedOut(
                                _(
                                    "{count} pings in a row got no echo from {address} within "
                                    "{seconds} s; is an echo server running there?"
                                ).format(count=in_a_row, address=address, seconds=f"{REPLY_TIMEOUT:g}")
                            ) from None
                        break
                    if n >= sequence.HEADER_SIZE and unpack(view, 0) == (MAGIC, token, seq):
                        if seq >= warmup:
                            samples.append(clock() - started)
                        in_a_row = 0
                        break
                    late += 1  # the echo of a ping already counted lost, or not ours
        except OSError as exc:
            raise error_for(exc, f"exchange datagrams with {address}") from exc
    if not samples:
        raise TimedOut(_("no ping came back from {address}").format(address=address))
    return Latency(size, count, warmup, summarize(samples), lost=lost, late=late, samples_ns=samples)


# ---------------------------------------------------------------------------- connection rate


def connect_rate(address: SocketAddress, *, duration: float, warmup: float) -> ConnectRate:
    """Complete connection cycles per second, one after the other.

    A cycle: ``socket()``, ``connect()``, ``shutdown(SHUT_WR)``, read until the server closes,
    ``close()``.  It needs the server to accept and close: bench's own closes at once, an echo
    server closes after our EOF.  So connect, accept and close on both sides are in every cycle.
    """
    if not address.is_stream:
        raise ValueError("connection rate is for stream kinds")
    with connect(address, timeout=CONNECT_TIMEOUT) as first:
        family = first.socket.family
        peer = first.socket.getpeername()  # resolved once; every cycle connects to it
        finish_stream(first.socket, bytearray(16), f"close the connection to {address}")
    timeval = TIMEVAL.pack(int(IO_TIMEOUT), 0)
    buffer = bytearray(4096)
    new_socket = socket.socket
    level, rcv, snd = socket.SOL_SOCKET, socket.SO_RCVTIMEO, socket.SO_SNDTIMEO
    shut = socket.SHUT_WR
    clock = time.perf_counter

    def cycles(seconds: float) -> tuple[int, float, float]:
        done = 0
        start = clock()
        end = start + seconds
        now = start
        while now < end:
            sock = new_socket(family, socket.SOCK_STREAM)
            try:
                # SO_SNDTIMEO bounds connect() itself; SO_RCVTIMEO the wait for the server's close.
                sock.setsockopt(level, snd, timeval)
                sock.setsockopt(level, rcv, timeval)
                sock.connect(peer)
                sock.shutdown(shut)
                while sock.recv_into(buffer):
                    pass
            finally:
                sock.close()
            done += 1
            now = clock()
        return done, start, now

    try:
        cycles(warmup)
        done, start, stop = cycles(duration)
    except OSError as exc:
        raise error_for(exc, f"connect to {address}") from exc
    return ConnectRate(stop - start, done)

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
import struct
import threading
import time
from collections.abc import Callable

from ..address import SocketAddress
from ..errors import ConnectionRefused, EnchufeError, ProtocolError, TimedOut, translate
from ..sync import connect, connect_datagram
from ..sync.stream import Connection
from . import sequence
from .results import ConnectRate, DatagramRate, Latency, Throughput
from .sequence import HEADER, MAGIC, Counts, SequenceTracker
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

#: Seconds a connection attempt may take: loopback answers in microseconds, a remote server in
#: milliseconds; more means nobody is there.
CONNECT_TIMEOUT = 5.0

#: Seconds a socket may make no progress (no byte taken, none arrived) before the measure fails.
#: Generous, because a loaded machine can stall a process for a while; short enough that a
#: server which stopped reading is reported, not waited for.
IO_TIMEOUT = 5.0

#: A ping whose reply has not come back after this long counts as lost (datagram latency).
#: Far above any loopback round trip (tens of µs), below what a person notices.
REPLY_TIMEOUT = 0.25

#: This many lost pings in a row mean nobody answers: the measure stops with an error.
MAX_LOST_IN_A_ROW = 8

#: After the last datagram is sent, receivers get this long without anything arriving (and at
#: most SETTLE_MAX in all) to take in what is still in flight before the count is final.
SETTLE_QUIET = 0.1
SETTLE_MAX = 1.0

#: The datagram sender looks at the clock once per this many datagrams (a power of two): often
#: enough to end within microseconds of the deadline, rarely enough to cost nothing.
CLOCK_EVERY = 32

#: Receive buffer for echoes and datagrams: larger than any UDP payload.
RECV_BUFFER = 65536 + 1024

_TIMEVAL = struct.Struct("ll")


# ---------------------------------------------------------------------------- helpers


def set_kernel_timeouts(sock: socket.socket, *, recv: float | None, send: float | None) -> None:
    """SO_RCVTIMEO / SO_SNDTIMEO on a blocking socket: a wait that ends without any system call
    beyond the blocked one; it then fails with EAGAIN (BlockingIOError)."""
    for option, seconds in ((socket.SO_RCVTIMEO, recv), (socket.SO_SNDTIMEO, send)):
        if seconds is None:
            continue
        whole = int(seconds)
        sock.setsockopt(socket.SOL_SOCKET, option, _TIMEVAL.pack(whole, int((seconds - whole) * 1e6)))


def _error(exc: OSError, what: str, timeout: float = IO_TIMEOUT) -> EnchufeError:
    """The enchufe error for a failed system call in a hot loop."""
    if isinstance(exc, BlockingIOError):  # SO_RCVTIMEO / SO_SNDTIMEO ran out
        return TimedOut(f"cannot {what}: no progress for {timeout:g} s; is the server still working?")
    return translate(exc, what)


def _no_delay(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _finish_stream(sock: socket.socket, buffer: bytearray, what: str) -> float:
    """Send EOF, read until the server closes; returns the time of its EOF."""
    try:
        sock.shutdown(socket.SHUT_WR)
        while sock.recv_into(buffer):
            pass
    except OSError as exc:
        raise _error(exc, what) from exc
    return time.perf_counter()


class _Worker:
    """A thread whose exception is kept for the measuring thread, and which flags a failure."""

    def __init__(self, name: str, body: Callable[[], None], failed: threading.Event) -> None:
        self.error: BaseException | None = None
        self._body = body
        self._failed = failed
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self._body()
        except BaseException as exc:
            self.error = exc
            self._failed.set()

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive() and self.error is None:
            self.error = TimedOut(f"{self._thread.name} did not finish within {timeout:g} s")


def _raise_first(workers: list[_Worker]) -> None:
    for worker in workers:
        if worker.error is not None:
            if isinstance(worker.error, EnchufeError):
                raise worker.error
            raise EnchufeError(f"{type(worker.error).__name__}: {worker.error}") from worker.error


def _open_streams(address: SocketAddress, count: int) -> list[Connection]:
    conns: list[Connection] = []
    try:
        for _ in range(count):
            conns.append(connect(address, timeout=CONNECT_TIMEOUT))
    except BaseException:
        for conn in conns:
            conn.close()
        raise
    return conns


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
            f"nobody answers at {address} (connection refused); start a server there first, "
            f"e.g. enchufe echo {address}",
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
            f"no echo from {address} within {timeout:g} s: bench measures datagrams against an echo server "
            "(e.g. `enchufe echo ADDRESS`)"
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
        self.workers = [_Worker(f"bench-send-{index}", self._send, failed)]
        if echo:
            self.workers.append(_Worker(f"bench-recv-{index}", self._receive, failed))

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
            raise _error(exc, f"send to {self.where}") from exc
        if self.echo:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
        else:
            self.finished = _finish_stream(self.sock, bytearray(4096), f"finish sending to {self.where}")

    def _receive(self) -> None:
        buffer = bytearray(max(self.size, RECV_BUFFER))
        recv_into = self.sock.recv_into
        try:
            while size := recv_into(buffer):
                self.received += size
        except OSError as exc:
            raise _error(exc, f"receive from {self.where}") from exc
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
    conns = _open_streams(address, connections)
    try:
        pumps = [_Pump(conn, size, echo, i, failed) for i, conn in enumerate(conns)]
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
        _raise_first(workers)
        if echo:
            counted = sum(end - mark for end, mark in zip(ends, marks, strict=True))
        else:
            # Everything sent after the mark counts, and the window lasts until the sink had it.
            counted = sum(p.sent - mark for p, mark in zip(pumps, marks, strict=True))
            stop = max(p.finished for p in pumps)
        return Throughput(connections, size, stop - start, counted, method)
    finally:
        for conn in conns:
            conn.close()


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
        _no_delay(sock)
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
                            f"{address} closed the connection after echoing {got} of {size} bytes; "
                            "is it an echo server?"
                        )
                    got += n
                if i >= warmup:
                    samples.append(clock() - started)
        except OSError as exc:
            raise _error(exc, what) from exc
        _finish_stream(sock, buffer, f"close the connection to {address}")
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
                                f"{in_a_row} pings in a row got no echo from {address} within "
                                f"{REPLY_TIMEOUT:g} s; is an echo server running there?"
                            ) from None
                        break
                    if n >= sequence.HEADER_SIZE and unpack(view, 0) == (MAGIC, token, seq):
                        if seq >= warmup:
                            samples.append(clock() - started)
                        in_a_row = 0
                        break
                    late += 1  # the echo of a ping already counted lost, or not ours
        except OSError as exc:
            raise _error(exc, f"exchange datagrams with {address}") from exc
    if not samples:
        raise TimedOut(f"no ping came back from {address}")
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
        _finish_stream(first.socket, bytearray(16), f"close the connection to {address}")
    timeval = _TIMEVAL.pack(int(IO_TIMEOUT), 0)
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
        raise _error(exc, f"connect to {address}") from exc
    return ConnectRate(stop - start, done)


# ---------------------------------------------------------------------------- datagram rate


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
        self.worker = _Worker("bench-echo-counter", self._run, failed)

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
                raise _error(exc, f"receive echoes from {self.where}") from exc
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
            raise _error(exc, f"send datagrams to {address}") from exc
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
    _raise_first([echo.worker])
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

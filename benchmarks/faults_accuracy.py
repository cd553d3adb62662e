#!/usr/bin/env python3
"""Faults on purpose, asked vs measured: `enchufe relay --fault … --seed N` as users run it.

Usage (from the repository, with enchufe installed), on a quiet machine:

    python3 benchmarks/faults_accuracy.py            # about a minute
    python3 benchmarks/faults_accuracy.py --quick    # tiny sizes: checks that every measure runs

Each measure starts its own `enchufe relay` process (TCP or UDP on 127.0.0.1) in front of a
server in this process's threads, and a client in this process:

* latency: `--fault latency:latency=50,jitter=10` (downstream), a 64-byte ping-pong through it,
  one at a time (--pings, default 400); the median and p99 of the round trip, and the same
  without the fault (the base: what the relay and loopback cost).  Asked: median 50 ms + base,
  p99 below 60 ms + base (Toxiproxy's jitter is uniform in [-10, +10) ms).  Goal: median within
  1 ms.
* bandwidth: `--fault bandwidth:rate=1000` and `rate=10000` (KB/s, as Toxiproxy: 1 MB/s and
  10 MB/s) downstream; a server writes as fast as the relay takes, the client counts what it
  receives from 0.5 s to 0.5 + --seconds (default 5) s.  Goal: within 5 %.
* loss: `--fault loss:probability=0.01` and `0.1` upstream with `--seed`, --datagrams (default
  100,000) numbered datagrams into a receiver, sent in windows that wait for what the pure
  schedule (`enchufe.faults.DatagramSchedule`, the relay's first session seeded the same way)
  lets through, so that no datagram is dropped by a full socket.  Goal: exactly the datagrams
  the schedule drops (the same numbers), for the seed.
* slicer: `--fault slicer:average_size=1000,size_variation=200,delay=1000`; a server sends
  --slice-bytes (default 2 MB), the client reads each piece (1 ms apart, so each is its own
  read); the sizes read beside the pure schedule's cuts of a 32 KiB read
  (`enchufe.faults.schedule.slices`).  Goal: every byte, and (almost) every read at most
  average + variation (two pieces read as one would be larger).

The 1-minute load average is printed before and after, with a warning above 0.5.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from enchufe.faults import DatagramSchedule, parse_fault
from enchufe.faults.schedule import slices

LISTENING = re.compile(r"listening on (?:tcp|udp)://127\.0\.0\.1:(\d+)")
SEED = 20261130


def load() -> float:
    return os.getloadavg()[0]


def say_load(when: str) -> None:
    value = load()
    warning = "  WARNING: above 0.5, figures are not trustworthy" if value > 0.5 else ""
    print(f"load average (1 min) {when}: {value:.2f}{warning}", flush=True)


@contextmanager
def relay(kind: str, target_port: int, *faults: str) -> Iterator[int]:
    """`enchufe relay KIND://127.0.0.1:0 KIND://127.0.0.1:PORT --fault … --seed SEED`: its port."""
    args = [
        sys.executable,
        "-m",
        "enchufe",
        "relay",
        f"{kind}://127.0.0.1:0",
        f"{kind}://127.0.0.1:{target_port}",
    ]
    for fault in faults:
        args += ["--fault", fault]
    if faults:
        args += ["--seed", str(SEED)]
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = LISTENING.search(line)
        if match is None:
            raise SystemExit(
                f"the relay did not start: {line}{proc.stderr.read() if proc.poll() is not None else ''}"
            )
        yield int(match.group(1))
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


@contextmanager
def tcp_server(serve: Callable[[socket.socket], None]) -> Iterator[int]:
    """A TCP listener on 127.0.0.1 serving each connection with ``serve`` in a thread."""
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_serve_one, args=(serve, conn), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def _serve_one(serve: Callable[[socket.socket], None], conn: socket.socket) -> None:
    with conn, suppress(OSError):
        serve(conn)


def echo(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


def source(conn: socket.socket) -> None:
    chunk = bytes(65536)
    while True:
        conn.sendall(chunk)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# -- the measures


def ping_pong(port: int, pings: int) -> list[float]:
    """Round trips in ms, after 5 not counted."""
    times = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        payload = bytes(64)
        for i in range(pings + 5):
            started = time.perf_counter()
            sock.sendall(payload)
            got = 0
            while got < len(payload):
                got += len(sock.recv(65536))
            if i >= 5:
                times.append((time.perf_counter() - started) * 1000)
    return times


def measure_latency(pings: int) -> list[tuple[str, str, str, str]]:
    with tcp_server(echo) as port:
        with relay("tcp", port) as plain:
            base = statistics.median(ping_pong(plain, pings))
        with relay("tcp", port, "latency:latency=50,jitter=10") as faulty:
            times = ping_pong(faulty, pings)
    median, p99 = statistics.median(times), percentile(times, 0.99)
    return [
        ("latency 50 ms ± 10 ms: median", f"{50 + base:.2f} ms (50 + base {base:.2f})", f"{median:.2f} ms",
         _verdict(abs(median - 50 - base) <= 1.0)),
        ("latency 50 ms ± 10 ms: p99", f"< {60 + base:.2f} ms", f"{p99:.2f} ms",
         _verdict(p99 < 60 + base + 1.0)),
    ]  # fmt: skip


def measure_bandwidth(rate_kb: int, seconds: float) -> tuple[str, str, str, str]:
    with (
        tcp_server(source) as port,
        relay("tcp", port, f"bandwidth:rate={rate_kb}") as faulty,
        socket.create_connection(("127.0.0.1", faulty), timeout=10) as sock,
    ):
        start = time.monotonic() + 0.5
        end = start + seconds
        counted = 0
        while (now := time.monotonic()) < end:
            data = sock.recv(1 << 20)
            if not data:
                raise SystemExit("the bandwidth source closed early")
            if now >= start:
                counted += len(data)
        measured = counted / seconds / 1e6
    asked = rate_kb / 1000
    return (
        f"bandwidth {asked:g} MB/s ({seconds:g} s)",
        f"{asked:g} MB/s",
        f"{measured:.3f} MB/s ({(measured / asked - 1) * 100:+.1f} %)",
        _verdict(abs(measured / asked - 1) <= 0.05),
    )


def measure_loss(probability: float, count: int) -> tuple[str, str, str, str]:
    fault = f"loss:probability={probability:g},stream=upstream"
    schedule = DatagramSchedule([parse_fault(fault)], random.Random(f"{SEED}/1/up"))  # the first session
    passes = [bool(schedule.feed(0.0, b"x")) for _ in range(count)]
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    received: set[int] = set()
    lock = threading.Condition()

    def receive() -> None:
        receiver.settimeout(1.0)
        while True:
            try:
                data = receiver.recv(64)
            except (TimeoutError, OSError):
                return
            with lock:
                received.add(int.from_bytes(data[:4], "big"))
                lock.notify_all()

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    with (
        relay("udp", receiver.getsockname()[1], fault) as port,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        client.connect(("127.0.0.1", port))
        window, expected = 256, 0
        for first in range(0, count, window):
            last = min(count, first + window)
            for number in range(first, last):
                client.send(number.to_bytes(4, "big") + bytes(28))
            expected += sum(passes[first:last])
            with lock:  # what the schedule lets through has arrived before the next window
                lock.wait_for(lambda wanted=expected: len(received) >= wanted, timeout=5)  # type: ignore[misc]
        time.sleep(0.3)  # none more comes
    receiver.close()
    reader.join(5)
    wanted = {number for number, passed in enumerate(passes) if passed}
    lost = count - len(received)
    exact = received == wanted
    return (
        f"loss {probability * 100:g} % of {count:,} datagrams (seed {SEED})",
        f"{count - len(wanted):,} lost ({(count - len(wanted)) / count * 100:.3f} %)",
        f"{lost:,} lost; the same datagrams: {'yes' if exact else 'no'}",
        _verdict(exact),
    )


def measure_slicer(size: int) -> tuple[str, str, str, str]:
    fault = "slicer:average_size=1000,size_variation=200,delay=1000"
    payload = os.urandom(size)

    def send(conn: socket.socket) -> None:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)

    reads: list[int] = []
    with (
        tcp_server(send) as port,
        relay("tcp", port, fault) as faulty,
        socket.create_connection(("127.0.0.1", faulty), timeout=10) as sock,
    ):
        while data := sock.recv(1 << 20):
            reads.append(len(data))
    # The relay reads up to 32 KiB at a time and the schedule cuts each read as Toxiproxy's
    # slicer does (halving, each middle moved by up to the variation): pieces of at most
    # average + variation, some smaller.  What a 32 KiB read is cut into, for comparison:
    ends = slices(32768, 1000, 200, random.Random(SEED))
    pieces = [end - start for start, end in zip([0, *ends], ends, strict=False)]
    small = sum(n <= 1200 for n in reads) / len(reads)
    return (
        f"slicer 1000 ± 200 bytes, 1 ms apart ({size:,} bytes)",
        f"pieces ≤ 1200: a 32 KiB read as {len(pieces)} pieces of {min(pieces)}..{max(pieces)}, "
        f"mean {statistics.mean(pieces):.0f}",
        f"{len(reads)} reads of {min(reads)}..{max(reads)}, mean {statistics.mean(reads):.0f}; "
        f"{small * 100:.1f} % ≤ 1200; {sum(reads):,} bytes",
        _verdict(sum(reads) == size and small >= 0.99),
    )


def _verdict(ok: bool) -> str:
    return "yes" if ok else "NO"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that every measure runs")
    parser.add_argument("--pings", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--datagrams", type=int, default=100_000)
    parser.add_argument("--slice-bytes", type=int, default=2_000_000)
    options = parser.parse_args()
    if options.quick:
        options.pings, options.seconds, options.datagrams, options.slice_bytes = 10, 0.5, 2000, 50_000
    say_load("before")
    rows = measure_latency(options.pings)
    rows += [measure_bandwidth(rate, options.seconds) for rate in (1000, 10_000)]
    rows += [measure_loss(p, options.datagrams) for p in (0.01, 0.1)]
    rows.append(measure_slicer(options.slice_bytes))
    say_load("after")
    print()
    print("| measure | asked | measured | goal met |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if options.quick:
        print("\n(--quick: tiny sizes, the figures mean nothing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

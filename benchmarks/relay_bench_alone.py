"""The enchufe-only measures of ``relay_bench.py`` (``idle`` and ``stall``): what one relay
process costs in memory, where socat has no counterpart to compare with.

* ``idle``: ``--idle`` connections held by one relay process, then 10,000 by two ``--workers``
  processes: the relay's RSS before and after, and a ping through every one at the end.
* ``stall``: RSS growth while 1 GiB is pushed at a reader that stalls (target: ≤ 16 MiB).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

from relay_bench import ENCHUFE, Bench, GiB, free_port, parse_pairs, rss_kib


@contextlib.contextmanager
def enchufe_relay(listen: str, target: str, *options: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    proc = subprocess.Popen(
        [*ENCHUFE, "relay", listen, target, *options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        port = int(line.strip().rsplit(":", 1)[1])
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def children_of(pid: int) -> list[int]:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]
    return []


def idle_connections(bench: Bench, count: int, workers: int) -> str:
    """``count`` connections through one relay (or ``workers`` processes), idle, then pinged."""
    echo_port = free_port()
    echo = bench.start(str(bench.binary), "echo", str(echo_port))
    bench.wait_tcp(echo_port)
    # No -q here: enchufe_relay() reads the port from the "listening on" line.
    options = ("--workers", str(workers)) if workers > 1 else ()
    clients: list[socket.socket] = []
    try:
        with enchufe_relay("tcp4://127.0.0.1:0", f"tcp4://127.0.0.1:{echo_port}", *options) as (proc, port):
            time.sleep(0.3)
            pids = children_of(proc.pid) if workers > 1 else [proc.pid]
            base = sum(rss_kib(p) for p in pids)
            started = time.monotonic()
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                clients.append(sock)
            for sock in clients:
                sock.sendall(b"p")
            first = sum(sock.recv(1) == b"p" for sock in clients)
            opened = time.monotonic() - started
            time.sleep(0.5)
            held = sum(rss_kib(p) for p in pids)
            for sock in clients:
                sock.sendall(b"q")
            last = sum(sock.recv(1) == b"q" for sock in clients)
            who = f"{workers} worker processes" if workers > 1 else "one process"
            return (
                f"idle: {count} relayed connections in {who}: opened and pinged in {opened:.1f} s "
                f"({first} answered); relay RSS {base / 1024:.1f} MiB → {held / 1024:.1f} MiB "
                f"({(held - base) / count:.2f} KiB per connection); a ping through every one at the end: "
                f"{last}/{count}"
            )
    finally:
        for sock in clients:
            sock.close()
        echo.terminate()
        echo.wait(5)


def stalled_reader(bench: Bench) -> str:
    port = free_port()
    stall = bench.start(str(bench.binary), "stall", str(port), stdout=subprocess.PIPE)
    bench.wait_tcp(port)
    # wait_tcp's probe was the stall server's one client: start it again for the real one.
    stall.kill()
    stall.wait()
    stall = bench.start(str(bench.binary), "stall", str(port), stdout=subprocess.PIPE)
    time.sleep(0.2)
    size = GiB
    with enchufe_relay("tcp4://127.0.0.1:0", f"tcp4://127.0.0.1:{port}") as (proc, relay_port):
        base = rss_kib(proc.pid)
        sock = socket.create_connection(("127.0.0.1", relay_port))
        pushed = [0]
        block = b"x" * (1 << 20)

        def push() -> None:
            while pushed[0] < size:
                sock.sendall(block)
                pushed[0] += len(block)
            sock.shutdown(socket.SHUT_WR)

        pusher = threading.Thread(target=push, daemon=True)
        pusher.start()
        last, still = -1, time.monotonic()
        while time.monotonic() - still < 1.0:
            if pushed[0] != last:
                last, still = pushed[0], time.monotonic()
            time.sleep(0.05)
        peak = max(rss_kib(proc.pid) for _ in range(5))
        stalled_at = pushed[0]
        os.kill(stall.pid, signal.SIGUSR1)
        while pusher.is_alive():
            peak = max(peak, rss_kib(proc.pid))
            pusher.join(0.05)
        assert stall.stdout is not None
        received = parse_pairs(stall.stdout.readline().decode())["received"]
        sock.close()
    return (
        f"stall: the client pushed {stalled_at >> 20} MiB before the stalled reader stopped it; "
        f"relay RSS {base / 1024:.1f} MiB → peak {peak / 1024:.1f} MiB "
        f"(growth {(peak - base) / 1024:.1f} MiB, "
        f"target ≤ 16 MiB: {'met' if peak - base <= 16 * 1024 else 'NOT met'}); after the reader resumed "
        f"it received {int(received)} of {size} bytes"
    )

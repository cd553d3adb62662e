#!/usr/bin/env python3
"""User-space instructions per MiB of a TLS-terminating relay, counted by callgrind (not timed).

Usage (from the repository; valgrind on PATH):

    python benchmarks/tls_callgrind.py [--small 1] [--large 16] [--direction up,down]

A relay ``enchufe relay 'tls://127.0.0.1:PORT?cert=…' tcp://127.0.0.1:SINK`` runs under
``valgrind --tool=callgrind``; a TLS 1.3 client in this process (a trustme CA, an ECDSA P-256
certificate: benchmarks/tls_bench.py's) sends ``--small`` MiB then, in another run, ``--large``
MiB through it, and the plain server behind it answers nothing (``up``: the relay decrypts); or
the plain server sends and the TLS client reads (``down``: the relay encrypts).  The relay is
stopped with SIGTERM once the bytes are through, and callgrind's total (``Ir``: instructions
executed in user space, the whole process) is read from its summary.  Instructions per MiB are
``(large run - small run) / (large - small)``: start-up, the handshake and the exit cancel out.

Instruction counts do not depend on the machine's load; they do depend on Python, OpenSSL and
the CPU's AES instructions (valgrind emulates AES-NI).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tls_bench import Certs, free_port, listening, make_certs  # this folder's: the same CA and certificate

MIB = 1 << 20
STEP = 600.0  # valgrind is slow: generous timeouts, still bounded


def sink(server: socket.socket, direction: str, size: int, done: threading.Event) -> None:
    """The plain server behind the relay: reads to EOF (``up``), or sends ``size`` bytes and
    shuts its write side (``down``)."""
    conn, _ = server.accept()
    with conn:
        conn.settimeout(STEP)
        if direction == "up":
            while conn.recv(1 << 20):
                pass
        else:
            block = b"d" * (1 << 16)
            for _ in range(size // len(block)):
                conn.sendall(block)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(1 << 16):
                pass
    done.set()


def wait_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        if listening(port):
            return
        time.sleep(0.2)
    raise SystemExit(f"the relay did not listen on port {port}")


def run(certs: Certs, mib: int, direction: str, folder: Path) -> int:
    """One relay under callgrind, ``mib`` MiB through it one way: its instruction count."""
    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()
    size = mib * MIB
    threading.Thread(target=sink, args=(server, direction, size, done), daemon=True).start()
    port = free_port()
    out = folder / f"callgrind.{direction}.{mib}"
    relay = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "enchufe",
            "relay",
            f"tls://127.0.0.1:{port}?cert={certs.server}&handshake-timeout=300",
            f"tcp://127.0.0.1:{server.getsockname()[1]}",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_port(port, time.monotonic() + STEP)
        context = ssl.create_default_context(cafile=str(certs.ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        raw = socket.create_connection(("127.0.0.1", port), STEP)
        with context.wrap_socket(raw, server_hostname="localhost") as client:
            if direction == "up":
                block = b"u" * (1 << 16)
                for _ in range(size // len(block)):
                    client.sendall(block)
                client.unwrap()
            else:
                got = 0
                while True:
                    data = client.recv(1 << 16)
                    if not data:
                        break
                    got += len(data)
                if got != size:
                    raise SystemExit(f"{direction} {mib} MiB: {got} bytes arrived")
                client.unwrap()  # close_notify back: the sink's read ends cleanly
        if not done.wait(STEP):
            raise SystemExit("the sink did not finish")
    finally:
        relay.send_signal(signal.SIGTERM)
        _, err = relay.communicate(timeout=STEP)
        server.close()
    match = re.search(r"Collected : (\d+)", err)
    if match is None:
        raise SystemExit(f"no callgrind total in:\n{err}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, default=1, help="MiB of the short run (default 1)")
    parser.add_argument("--large", type=int, default=16, help="MiB of the long run (default 16)")
    parser.add_argument("--direction", default="up,down", help="up (relay decrypts), down (encrypts)")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        certs = make_certs(folder)
        for direction in args.direction.split(","):
            small = run(certs, args.small, direction, folder)
            large = run(certs, args.large, direction, folder)
            per = (large - small) / (args.large - args.small)
            print(
                f"{direction}: {small:,} Ir ({args.small} MiB), {large:,} Ir ({args.large} MiB): "
                f"{per / 1e6:.2f} M instructions per MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()

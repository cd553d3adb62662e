#!/usr/bin/env python3
"""User-space instructions per MiB of a TLS relay, counted by callgrind (not timed).

Usage (from the repository; valgrind on PATH):

    python benchmarks/tls_callgrind.py [--small 1] [--large 16] [--direction up,down]
                                       [--side termination,origination]

A relay runs under ``valgrind --tool=callgrind``: ``termination`` is ``enchufe relay
'tls://127.0.0.1:PORT?cert=…' tcp://…`` with a TLS 1.3 client and a plain server in this
process; ``origination`` is ``enchufe relay tcp://… 'tls://…?ca=…'`` with a plain client and a
TLS server (a trustme CA, an ECDSA P-256 certificate: benchmarks/tls_bench.py's).  The client
sends ``--small`` MiB, then in another run ``--large`` MiB (``up``), or the server does
(``down``); each side then ends its stream (close_notify, or ``shutdown(SHUT_WR)``).  The relay
is stopped with SIGTERM once the bytes are through, and callgrind's total (``Ir``: instructions
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
SLOW = "handshake-timeout=300"  # a handshake under valgrind takes seconds
STEP = 600.0  # valgrind is slow: generous timeouts, still bounded


def sink(
    server: socket.socket, direction: str, size: int, done: threading.Event, tls: ssl.SSLContext | None
) -> None:
    """The server behind the relay (plain, or TLS with ``tls``): reads to EOF (``up``), or
    sends ``size`` bytes and ends its side (``down``)."""
    conn, _ = server.accept()
    conn.settimeout(STEP)
    if tls is not None:
        conn = tls.wrap_socket(conn, server_side=True)
    with conn:
        transfer(conn, direction == "down", size)
    done.set()


def transfer(conn: socket.socket, sending: bool, size: int) -> int:
    """Send ``size`` bytes and end this side, then wait for the peer's end; or read to the
    peer's end, then end this side.  The bytes read.  The end is close_notify on TLS (Python's
    blocking ``unwrap`` waits for the peer's), ``shutdown(SHUT_WR)`` on plain TCP."""
    tls = isinstance(conn, ssl.SSLSocket)
    got = 0
    if sending:
        block = b"d" * (1 << 16)
        for _ in range(size // len(block)):
            conn.sendall(block)
        if tls:
            conn.unwrap()
            return got
        conn.shutdown(socket.SHUT_WR)
    while data := conn.recv(1 << 16):
        got += len(data)
    if tls:
        conn.unwrap()
    elif not sending:
        conn.shutdown(socket.SHUT_WR)
    return got


def wait_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        if listening(port):
            return
        time.sleep(0.2)
    raise SystemExit(f"the relay did not listen on port {port}")


def run(certs: Certs, mib: int, direction: str, side: str, folder: Path) -> int:
    """One relay under callgrind, ``mib`` MiB through it one way: its instruction count.
    ``side``: ``termination`` (a TLS client, a plain server) or ``origination`` (the reverse).
    ``up``: the client sends; ``down``: the server does."""
    terminating = side == "termination"
    client_tls = ssl.create_default_context(cafile=str(certs.ca))
    client_tls.minimum_version = ssl.TLSVersion.TLSv1_3
    server_tls = None
    if not terminating:
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.load_cert_chain(str(certs.server))
    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()
    size = mib * MIB
    threading.Thread(target=sink, args=(server, direction, size, done, server_tls), daemon=True).start()
    port = free_port()
    target = f"127.0.0.1:{server.getsockname()[1]}"
    if terminating:
        listen, target = f"tls://127.0.0.1:{port}?cert={certs.server}&{SLOW}", f"tcp://{target}"
    else:
        listen, target = f"tcp://127.0.0.1:{port}", f"tls://{target}?ca={certs.ca}&{SLOW}"
    out = folder / f"callgrind.{side}.{direction}.{mib}"
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    command += [sys.executable, "-m", "enchufe", "relay", listen, target]
    relay = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, time.monotonic() + STEP)
        client = socket.create_connection(("127.0.0.1", port), STEP)
        if terminating:
            client = client_tls.wrap_socket(client, server_hostname="localhost")
        with client:
            got = transfer(client, direction == "up", size)
        if direction == "down" and got != size:
            raise SystemExit(f"{side} {direction} {mib} MiB: {got} bytes arrived")
        if not done.wait(STEP):
            raise SystemExit("the server did not finish")
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
    parser.add_argument("--direction", default="up,down", help="up (the client sends), down")
    parser.add_argument(
        "--side", default="termination", help="termination (a TLS client), origination (a TLS server)"
    )
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        certs = make_certs(folder)
        for side in args.side.split(","):
            for direction in args.direction.split(","):
                small = run(certs, args.small, direction, side, folder)
                large = run(certs, args.large, direction, side, folder)
                per = (large - small) / (args.large - args.small)
                print(
                    f"{side} {direction}: {small:,} Ir ({args.small} MiB), {large:,} Ir "
                    f"({args.large} MiB): "
                    f"{per / 1e6:.2f} M instructions per MiB",
                    flush=True,
                )


if __name__ == "__main__":
    main()

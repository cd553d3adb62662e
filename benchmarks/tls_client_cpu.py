"""CPU per TLS client connection: enchufe's sync ``connect`` against ``enchufe echo tls://``.

Usage (from the repository, with enchufe installed and trustme for the certificates):

    python3 benchmarks/tls_client_cpu.py [--connections 500] [--rounds 3] [--resume]

Each connection is a full handshake (the kept sessions are forgotten first: no resumption),
the peer's certificate read (``Connection.tls``) and a close; with ``--resume``, every
connection resumes the session its predecessor kept (checked: ``conn.tls.resumed``).  What is
printed is the client's own CPU (utime+stime of this process) per connection and the
connections per second, for each round; the server runs in its own process.  CPU per
connection moves less with the machine's other work than a rate does, but read the load
average printed with it all the same.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trustme
from relay_bench import Bench, free_port

from enchufe import sync
from enchufe._tlssetup import forget_sessions


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=500, help="connections per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--resume", action="store_true", help="resume the kept session each time")
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as folder:
        ca = trustme.CA()
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(f"{folder}/server.pem")
        ca.cert_pem.write_to_path(f"{folder}/ca.pem")
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "enchufe",
                "echo",
                f"tls://127.0.0.1:{port}?cert={folder}/server.pem",
                "-q",
            ]
        )
        try:
            Bench.wait_tcp(port)
            address = f"tls://127.0.0.1:{port}?ca={Path(folder) / 'ca.pem'}"
            for _warm_up in range(20):
                if not args.resume:
                    forget_sessions()
                sync.connect(address).close()
            for n in range(args.rounds):
                started_cpu, started = cpu(), time.monotonic()
                for _connection in range(args.connections):
                    if not args.resume:
                        forget_sessions()
                    conn = sync.connect(address)
                    assert conn.tls is not None and conn.tls.peer is not None
                    assert conn.tls.resumed is args.resume
                    conn.close()
                spent = cpu() - started_cpu
                rate = args.connections / (time.monotonic() - started)
                print(
                    f"round {n + 1}: {spent / args.connections * 1e6:,.0f} µs of client CPU per connection, "
                    f"{rate:,.0f} connections/s"
                )
        finally:
            server.terminate()
            server.wait()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

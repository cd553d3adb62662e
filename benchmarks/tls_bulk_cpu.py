"""CPU of each side of a TLS bulk transfer: ``enchufe connect`` (the file on its stdin) into
``enchufe listen`` (its output to /dev/null), and the same with socat.

Usage (from the repository, with enchufe installed; socat built with OpenSSL; trustme):

    python3 benchmarks/tls_bulk_cpu.py [--megabytes 1024] [--rounds 3] [--tools enchufe,socat]

``tls_bench.py`` gives the rate; this tells which side limits it.  For each round and tool, a
new server and client move ``--megabytes`` MiB of random bytes (TLS 1.3, a trustme ECDSA
certificate, the client verifying it) and both processes are reaped with ``wait4``: user and
system CPU of each, whole processes (start-up and the handshake included: about 0.3 s for
enchufe here, measured with an empty stdin and printed first), and MB/s from the client's start
to the server's exit.  On two cores, the side with more CPU per byte sets the rate.  Read the
load average printed with the figures: other work moves them.

To compare two revisions, run it with ``PYTHONPATH=WORKTREE/src`` (the processes inherit it).
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

from tls_bench import Certs, _commands, free_port, make_certs, wait_tcp

MiB = 1 << 20


def one(tool: str, certs: Certs, data: Path) -> tuple[float, resource.struct_rusage, resource.struct_rusage]:
    """MB/s and the client's and server's rusage for one transfer of ``data``."""
    port = free_port()
    server_args, client_args = _commands(tool, port, certs)
    server = subprocess.Popen(server_args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    wait_tcp(port, server)
    started = time.perf_counter()
    with open(data, "rb") as stdin:
        client = subprocess.Popen(client_args, stdin=stdin, stdout=subprocess.DEVNULL)
        _, status, client_usage = os.wait4(client.pid, 0)
    _, _, server_usage = os.wait4(server.pid, 0)
    client.returncode = server.returncode = 0  # reaped above
    if status:
        raise SystemExit(f"{tool}'s client exited with status {status}")
    return data.stat().st_size / (time.perf_counter() - started) / 1e6, client_usage, server_usage


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--megabytes", type=int, default=1024, help="MiB per transfer [1024]")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tools", default="enchufe,socat", help="enchufe, socat or both [both]")
    args = parser.parse_args()
    tools = args.tools.split(",")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"python: {sys.executable}; PYTHONPATH={os.environ.get('PYTHONPATH', '')}")
    with tempfile.TemporaryDirectory() as folder:
        certs = make_certs(Path(folder))
        data = Path(folder) / "data"
        with open(data, "wb") as out:
            block = os.urandom(MiB)
            for _ in range(args.megabytes):
                out.write(block)
        empty = Path(folder) / "empty"
        empty.touch()
        for tool in tools:
            _, client, server = one(tool, certs, empty)
            print(
                f"{tool}, empty stdin: client {client.ru_utime + client.ru_stime:.2f} s, "
                f"server {server.ru_utime + server.ru_stime:.2f} s of CPU"
            )
        for n in range(args.rounds):
            for tool in tools if n % 2 == 0 else tools[::-1]:
                rate, client, server = one(tool, certs, data)
                print(
                    f"round {n + 1}, {tool}: {rate:,.0f} MB/s; "
                    f"client {client.ru_utime:.2f} u + {client.ru_stime:.2f} s, "
                    f"server {server.ru_utime:.2f} u + {server.ru_stime:.2f} s",
                    flush=True,
                )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

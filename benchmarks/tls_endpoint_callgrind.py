#!/usr/bin/env python3
"""User-space instructions and system calls per MiB of a TLS endpoint, counted (not timed).

Usage (from the repository; valgrind and strace on PATH, socat for its sides):

    python benchmarks/tls_endpoint_callgrind.py [--small 1] [--large 16] [--tool callgrind,strace]
        [--side client,server,connect,listen,socat-client,socat-server]

One process is counted, one side of a one-way TLS 1.3 transfer; the other side is Python's
``ssl`` in this process (not counted).  The sides:

* ``client``: what ``enchufe bench --kind tls`` measures on its side: ``enchufe.sync.connect``,
  ``send_all`` of 128 KiB blocks (bench's default size), ``shutdown_write()``, ``recv()`` until
  the server's close_notify.
* ``server``: bench's ``lib-sink`` server: ``enchufe.sync.listen``, ``accept()``, then the very
  function the bench server runs (``recv(256 KiB)`` until close_notify, then close).
* ``connect``: ``enchufe connect tls://… -q`` with the bytes on its stdin (a file);
  ``listen``: ``enchufe listen tls://… -q > /dev/null`` (what ``benchmarks/tls_bench.py``'s bulk
  measure times).
* ``socat-client``/``socat-server``: ``socat - OPENSSL:…`` and ``socat -u OPENSSL-LISTEN:…
  /dev/null``, the same way, for comparison.

``callgrind``: callgrind's total ``Ir`` (instructions executed in user space, the whole
process); ``strace``: ``strace -f -c``'s total of system calls.  Per MiB is
``(large run - small run) / (large - small)``: start-up, the handshake and the exit cancel out.
The certificate is benchmarks/tls_bench.py's (a trustme CA, ECDSA P-256).  The suite is the
server's choice: TLS_AES_128_GCM_SHA256 where enchufe serves (``server``, ``listen``), and
OpenSSL's default, TLS_AES_256_GCM_SHA384, where Python's ``ssl`` or socat does.

``--keep DIR`` keeps the callgrind files there, for ``callgrind_annotate``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tls_bench import Certs, free_port, make_certs  # this folder's: the same CA and certificate
from tls_callgrind import SLOW, STEP, wait_port

MIB = 1 << 20
BLOCK = 128 * 1024  # bench's THROUGHPUT_SIZE
SIDES = ("client", "server", "connect", "listen", "socat-client", "socat-server")


# ---------------------------------------------------------------------------- counted: bench's code


def bench_client(address: str, mib: int) -> None:
    """The client of ``enchufe bench --kind tls``'s throughput, for ``mib`` MiB."""
    from enchufe.bench import tls

    data = memoryview(bytearray(BLOCK))
    with tls._connect(tls.parse(address)) as conn:
        for _ in range(mib * MIB // BLOCK):
            conn.send_all(data)
        conn.shutdown_write()
        while conn.recv():
            pass


def bench_server(address: str) -> None:
    """bench's ``lib-sink`` server, for one connection."""
    from enchufe.bench.servers import _LibraryServer
    from enchufe.sync import listen

    with listen(address) as listener:
        _LibraryServer._lib_sink(listener.accept())


# ---------------------------------------------------------------------------- the peer: Python's ssl


def peer_server(server: socket.socket, certs: Certs, done: threading.Event) -> None:
    """A TLS server that reads to the client's end, then ends its own side."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certs.server))
    conn, _ = server.accept()
    conn.settimeout(STEP)
    with context.wrap_socket(conn, server_side=True) as tls:
        try:
            while tls.recv(1 << 18):
                pass
            tls.unwrap()
        except (OSError, ssl.SSLError):
            pass
    done.set()


def peer_client(port: int, certs: Certs, mib: int) -> None:
    """A TLS client that sends ``mib`` MiB in bench's blocks, then ends its side."""
    context = ssl.create_default_context(cafile=str(certs.ca))
    block = bytes(BLOCK)
    raw = socket.create_connection(("127.0.0.1", port), STEP)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        for _ in range(mib * MIB // BLOCK):
            tls.sendall(block)
        # A server may close without its own close_notify (socat).
        with contextlib.suppress(OSError, ssl.SSLError):
            tls.unwrap()


# ---------------------------------------------------------------------------- one run


def command(side: str, port: int, certs: Certs, mib: int) -> list[str]:
    """What the counted process runs."""
    client = f"tls://127.0.0.1:{port}?ca={certs.ca}&{SLOW}"
    server = f"tls://127.0.0.1:{port}?cert={certs.server}&{SLOW}"
    me = [sys.executable, __file__]
    return {
        "client": [*me, "--run", "client", client.replace("127.0.0.1", "localhost"), str(mib)],
        "server": [*me, "--run", "server", server, "0"],
        "connect": [sys.executable, "-m", "enchufe", "connect", client, "-q"],
        "listen": [sys.executable, "-m", "enchufe", "listen", server, "-q"],
        "socat-client": ["socat", "-t", "60", "-", f"OPENSSL:localhost:{port},cafile={certs.ca}"],
        "socat-server": [
            "socat",
            "-u",
            f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,cert={certs.server},verify=0",
            "GOPEN:/dev/null",
        ],
    }[side]


def run(tool: str, side: str, mib: int, certs: Certs, folder: Path) -> int:
    """``side`` under ``tool`` for ``mib`` MiB: its instructions, or its system calls."""
    out = folder / f"{tool}.{side}.{mib}"
    if tool == "callgrind":
        prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    else:
        prefix = ["strace", "-f", "-c", "-o", str(out)]
    counted_is_client = side in ("client", "connect", "socat-client")
    data = folder / f"data.{mib}"
    if not data.exists():
        data.write_bytes(bytes(mib * MIB))
    done = threading.Event()
    server = None
    if counted_is_client:
        server = socket.create_server(("127.0.0.1", 0))
        port = server.getsockname()[1]
        threading.Thread(target=peer_server, args=(server, certs, done), daemon=True).start()
    else:
        port = free_port()
    stdin = data.open("rb") if side in ("connect", "socat-client") else subprocess.DEVNULL
    proc = subprocess.Popen(
        [*prefix, *command(side, port, certs, mib)],
        stdin=stdin,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if not counted_is_client:
            wait_port(port, time.monotonic() + STEP)
            peer_client(port, certs, mib)
        _, err = proc.communicate(timeout=STEP)
        if counted_is_client and not done.wait(STEP):
            raise SystemExit("the peer did not finish")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if server is not None:
            server.close()
    if proc.returncode != 0:
        raise SystemExit(f"{side} exited with {proc.returncode}:\n{err[-3000:]}")
    if tool == "callgrind":
        match = re.search(r"Collected : (\d+)", err)
        if match is None:
            raise SystemExit(f"no callgrind total in:\n{err}")
        return int(match.group(1))
    total = re.search(r"^\S+\s+\S+\s+\S+\s+(\d+)\s+(?:\d+\s+)?total$", out.read_text(), re.M)
    if total is None:
        raise SystemExit(f"no strace total in:\n{out.read_text()}")
    return int(total.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, default=1, help="MiB of the short run (default 1)")
    parser.add_argument("--large", type=int, default=16, help="MiB of the long run (default 16)")
    parser.add_argument("--side", default="client,server", help=",".join(SIDES))
    parser.add_argument("--tool", default="callgrind,strace", help="callgrind, strace")
    parser.add_argument("--keep", type=Path, help="a folder to keep callgrind's files in")
    parser.add_argument("--run", nargs=3, help=argparse.SUPPRESS)  # the counted process itself
    args = parser.parse_args()
    if args.run:
        role, address, mib = args.run
        bench_client(address, int(mib)) if role == "client" else bench_server(address)
        return
    os.environ.setdefault("PYTHONHASHSEED", "0")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        certs = make_certs(folder)
        for side in args.side.split(","):
            for tool in args.tool.split(","):
                small = run(tool, side, args.small, certs, folder)
                large = run(tool, side, args.large, certs, folder)
                per = (large - small) / (args.large - args.small)
                what = f"{per:.0f} system calls"
                if tool == "callgrind":
                    what = f"{per / 1e6:.2f} M instructions"
                print(
                    f"{side} {tool}: {small:,} ({args.small} MiB), {large:,} ({args.large} MiB): "
                    f"{what} per MiB",
                    flush=True,
                )
                if args.keep and tool == "callgrind":
                    args.keep.mkdir(parents=True, exist_ok=True)
                    for mib in (args.small, args.large):
                        shutil.copy(folder / f"callgrind.{side}.{mib}", args.keep)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The relay's Python work and system calls per round trip, counted (not timed).

Usage (from the repository; strace on PATH for the system calls):

    python benchmarks/hotpath_count.py [--only tcp,conn,udp,udp64,tls,socks,acceptproxy,acceptproxy1]
                                       [-n 5000] [--opcodes] [--socat]

A loaded machine makes wall-clock figures useless for small changes; counts are not affected.
For each measure, a relay (``Relay``, the library's, in a process of its own) stands between
a client and a server that run in this process, and after a warm-up the relay process counts,
for ``-n`` round trips:

* Python function calls (``sys.setprofile``: ``call`` events, Python functions) and calls of
  C functions (``c_call``: builtins and methods such as ``os.readv``, ``dict.get``);
* with ``--opcodes``, bytecode instructions executed (``sys.settrace`` with ``f_trace_opcodes``,
  much slower);
* system calls (``strace -c`` attached to the relay for the counted round trips only).

The measures:

* ``tcp``: TCP 1-byte ping-pong on one connection (a round trip: one byte each way);
* ``conn``: connect, send 1 byte, SHUT_WR, read the echo until EOF, close (a round trip: one
  connection);
* ``udp``: UDP 1-byte ping-pong from one sender (a round trip: one datagram each way);
* ``udp64``: 64-byte UDP datagrams one way, in bursts of 32 that the sink receives before the
  next burst is sent (a round trip: one datagram);
* ``tls``: TLS 1-byte ping-pong on one connection through a terminating relay
  (``tls://…?cert=…`` → ``tcp://``, a trustme CA and an ECDSA P-256 certificate): the client
  speaks TLS 1.3, the echo server plain TCP (a round trip: one byte each way).
* ``socks``: ``conn`` through ``enchufe socks``'s relay (no authentication, default options)
  instead of a relay with a fixed target: connect, SOCKS5 greeting and wait for the method,
  CONNECT to the echo server's IP address and wait for the reply, then as ``conn`` (a round trip:
  one connection);
* ``acceptproxy``, ``acceptproxy1``: ``conn`` through a relay with ``--accept-proxy`` (its
  default trusted proxies: loopback), the client's byte after a PROXY header (v2, as HAProxy's
  ``send-proxy-v2``; v1 text for ``acceptproxy1``) naming its own addresses, in one write as
  HAProxy does (a round trip: one connection).  Minus ``conn``: what the header costs.

With ``--socat``, the system calls of socat in the relay's place are counted beside each measure
(``socat TCP4-LISTEN:…,fork TCP4:…``, ``UDP4-LISTEN:…,fork UDP4:…``, and for ``tls``
``OPENSSL-LISTEN:…,fork`` with the same certificate; default options otherwise): ``strace -c -f``
attached to socat and its child for the connection (or, for ``conn``, the children it forks while
counting), over the same round trips, after the same warm-up.

The relay process starts and stops counting on SIGUSR2 (its handler runs in the relay's main
thread, which runs the loop), and prints the counts on stdout when it stops.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from tls_bench import Certs, make_certs  # this folder's: the same CA and certificate

MEASURES = ("tcp", "conn", "udp", "udp64", "tls", "socks", "acceptproxy", "acceptproxy1")
WARM_UP = 300
BURST = 32
STEP = 10.0


# ----------------------------------------------------------------------------- the relay process


def serve(listen: str, target: str, opcodes: bool, detail: bool, kind: str = "") -> None:
    """Run a relay LISTEN → TARGET; SIGUSR2 starts counting, the next one prints the counts.

    ``kind``: ``socks`` (``enchufe socks``'s relay: TARGET is ignored), ``acceptproxy``
    (``--accept-proxy``), else a plain relay."""
    from enchufe._socks_rules import SocksPolicy
    from enchufe.relay import Relay, RelayConfig

    counts = {"calls": 0, "c_calls": 0, "opcodes": 0}
    functions: dict[str, int] = {}
    counting = False

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            counts["calls"] += 1
            if detail:
                code = frame.f_code
                key = f"{os.path.basename(code.co_filename)}:{code.co_name}"
                functions[key] = functions.get(key, 0) + 1
        elif event == "c_call":
            counts["c_calls"] += 1
            if detail:
                key = f"C:{getattr(arg, '__qualname__', arg)}"
                functions[key] = functions.get(key, 0) + 1

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            counts["opcodes"] += 1
            if detail:
                code = frame.f_code
                key = f"opcodes in {os.path.basename(code.co_filename)}:{code.co_name}"
                functions[key] = functions.get(key, 0) + 1
        return trace

    def toggle(signum: int, frame: FrameType | None) -> None:
        nonlocal counting
        counting = not counting
        if counting:
            for key in counts:
                counts[key] = 0
            functions.clear()
            sys.setprofile(profile)
            if opcodes:
                sys.settrace(trace)
                # Frames running already (the loop's) are traced from their next instruction.
                while frame is not None:
                    frame.f_trace = trace
                    frame.f_trace_opcodes = True
                    frame = frame.f_back
        else:
            sys.setprofile(None)
            sys.settrace(None)
            print(json.dumps({**counts, "functions": functions}), flush=True)

    if kind == "socks":
        config = RelayConfig(listen, "-", socks=SocksPolicy())
    else:
        config = RelayConfig(listen, target, accept_proxy=kind == "acceptproxy")
    relay = Relay(config)
    bound = relay.open()
    signal.signal(signal.SIGUSR2, toggle)
    print(str(bound), flush=True)
    relay.run()


# ----------------------------------------------------------------------------- servers and clients


def echo_stream(listener: socket.socket) -> None:
    """Echo every connection until its EOF, then close it (one connection at a time)."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn, contextlib.suppress(ConnectionResetError):  # a TLS client left without close_notify
            while data := conn.recv(65536):
                conn.sendall(data)


def echo_datagram(sock: socket.socket, received: list[int]) -> None:
    """Echo 1-byte datagrams; count (and drop) longer ones."""
    while True:
        try:
            data, peer = sock.recvfrom(65536)
        except OSError:
            return
        received[0] += 1
        if len(data) == 1:
            sock.sendto(data, peer)


def port_of(address: str) -> tuple[str, int]:
    match = re.match(r"^\w+://(.*):(\d+)(\?.*)?$", address)
    assert match, address
    return match.group(1).strip("[]"), int(match.group(2))


class Measure:
    """One measure: its server, the relay in front of it, and what one round trip is.

    ``socat``: socat instead of the relay: system calls only."""

    def __init__(
        self, name: str, opcodes: bool, detail: bool, certs: Certs | None = None, socat: bool = False
    ) -> None:
        self.name = name
        self.certs = certs
        self.socat = socat
        udp = name.startswith("udp")
        self.server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        self.server.bind(("127.0.0.1", 0))
        self.received = [0]
        if udp:
            self.server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            args: tuple[Any, ...] = (self.server, self.received)
            run: Callable[..., None] = echo_datagram
        else:
            self.server.listen(64)
            args, run = (self.server,), echo_stream
        threading.Thread(target=run, args=args, daemon=True).start()
        scheme = "udp4" if udp else "tcp4"
        target = f"{scheme}://127.0.0.1:{self.server.getsockname()[1]}"
        listen = f"{scheme}://127.0.0.1:0"
        if name == "tls":
            assert certs is not None
            listen = f"tls://127.0.0.1:0?cert={certs.server}"
        if socat:
            self.relay, self.via = start_socat(name, certs, self.server.getsockname()[1])
        else:
            command = [sys.executable, __file__, "--serve", listen, target]
            if name in ("socks", "acceptproxy"):
                command += ["--kind", name]
            elif name == "acceptproxy1":
                command += ["--kind", "acceptproxy"]
            if opcodes:
                command.append("--opcodes")
            if detail:
                command.append("--detail")
            self.relay = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            assert self.relay.stdout is not None
            self.via = port_of(self.relay.stdout.readline().strip())
        self.client: socket.socket | None = None
        self.functions: dict[str, float] = {}
        self.trip: Callable[[], None] = getattr(self, f"_{name}")

    def _tcp(self) -> None:
        if self.client is None:
            self.client = socket.create_connection(self.via, STEP)
            self.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.sendall(b"x")
        assert self.client.recv(1) == b"x"

    def _conn(self) -> None:
        with socket.create_connection(self.via, STEP) as sock:
            sock.sendall(b"x")
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(16) == b"x"
            assert sock.recv(16) == b""

    def _socks(self) -> None:
        with socket.create_connection(self.via, STEP) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(b"\x05\x01\x00")
            assert recv_exactly(sock, 2) == b"\x05\x00"
            port = self.server.getsockname()[1]
            sock.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + port.to_bytes(2, "big"))
            assert recv_exactly(sock, 10)[:2] == b"\x05\x00"
            sock.sendall(b"x")
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(16) == b"x"
            assert sock.recv(16) == b""

    def _acceptproxy(self, version: int = 2) -> None:
        with socket.create_connection(self.via, STEP) as sock:
            (host, port), (_, peer_port) = sock.getsockname(), sock.getpeername()
            if version == 1:
                header = f"PROXY TCP4 {host} 127.0.0.1 {port} {peer_port}\r\n".encode()
            else:
                addresses = socket.inet_aton(host) + socket.inet_aton("127.0.0.1")
                ports = port.to_bytes(2, "big") + peer_port.to_bytes(2, "big")
                header = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + addresses + ports
            sock.sendall(header + b"x")
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(16) == b"x"
            assert sock.recv(16) == b""

    def _acceptproxy1(self) -> None:
        self._acceptproxy(1)

    def _udp(self) -> None:
        if self.client is None:
            self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.client.settimeout(STEP)
            self.client.connect(self.via)
        self.client.send(b"x")
        assert self.client.recv(16) == b"x"

    def _udp64(self) -> None:
        """One burst (BURST datagrams): the caller counts BURST round trips."""
        if self.client is None:
            self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.client.connect(self.via)
        goal = self.received[0] + BURST
        payload = b"d" * 64
        for _ in range(BURST):
            self.client.send(payload)
        deadline = time.monotonic() + STEP
        while self.received[0] < goal:
            if time.monotonic() > deadline:
                raise RuntimeError(f"udp64: {goal - self.received[0]} datagrams lost")
            time.sleep(0.0002)

    def _tls(self) -> None:
        if self.client is None:
            assert self.certs is not None
            context = ssl.create_default_context(cafile=str(self.certs.ca))
            context.minimum_version = ssl.TLSVersion.TLSv1_3
            raw = socket.create_connection(self.via, STEP)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.client = context.wrap_socket(raw, server_hostname="localhost")
        self.client.sendall(b"x")
        assert self.client.recv(1) == b"x"

    def trips(self, n: int) -> int:
        """Make about ``n`` round trips; how many were made."""
        if self.name == "udp64":
            for _ in range(max(1, n // BURST)):
                self.trip()
            return max(1, n // BURST) * BURST
        for _ in range(n):
            self.trip()
        return n

    def count(self, n: int, syscalls: bool) -> dict[str, float]:
        self.trips(WARM_UP)
        tracer, out = self._strace() if syscalls else (None, None)
        if self.socat:
            made = self.trips(n)
            figures: dict[str, float] = {}
        else:
            assert self.relay.stdout is not None
            os.kill(self.relay.pid, signal.SIGUSR2)
            time.sleep(0.05)  # the handler runs once the relay is back in Python (EINTR)
            made = self.trips(n)
            os.kill(self.relay.pid, signal.SIGUSR2)
            counts = json.loads(self.relay.stdout.readline())
            self.functions = {key: value / made for key, value in counts.pop("functions").items()}
            figures = {key: value / made for key, value in counts.items() if value}
        if tracer is not None and out is not None:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(STEP)
            figures.update(parse_strace(out.read(), made))
            out.close()
        return figures

    def _strace(self) -> tuple[subprocess.Popen[bytes] | None, Any]:
        if shutil.which("strace") is None:
            return None, None
        out = tempfile.NamedTemporaryFile("r", suffix=".strace")  # noqa: SIM115
        pids = [self.relay.pid, *children_of(self.relay.pid)] if self.socat else [self.relay.pid]
        command = ["strace", "-c", "-f", "-o", out.name]
        for pid in pids:
            command += ["-p", str(pid)]
        tracer = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + STEP
        while not all(traced_by(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        return tracer, out

    def close(self) -> None:
        if self.client is not None:
            self.client.close()  # first: socat's child for the connection ends with it
        if self.socat:  # a UDP child outlives its parent until its peer is silent long enough
            for child in children_of(self.relay.pid):
                with contextlib.suppress(OSError):
                    os.kill(child, signal.SIGTERM)
        self.relay.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.relay.wait(STEP)
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()


def start_socat(
    name: str, certs: Certs | None, target_port: int
) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    """socat in the relay's place for measure ``name`` (``…-LISTEN:PORT,…,fork`` towards the
    server), once it listens."""
    udp = name.startswith("udp")
    with socket.socket(type=socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    if name == "tls":
        assert certs is not None
        listen = f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={certs.server},verify=0"
    elif udp:
        listen = f"UDP4-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"
    else:
        listen = f"TCP4-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"
    target = f"{'UDP4' if udp else 'TCP4'}:127.0.0.1:{target_port}"
    process = subprocess.Popen(["socat", listen, target], text=True)
    # A UDP socket that is bound and not connected (state 07), a TCP one that listens (0A).
    table, state = ("/proc/net/udp", "07") if udp else ("/proc/net/tcp", "0A")
    wanted = f"0100007F:{port:04X}"
    deadline = time.monotonic() + STEP
    while time.monotonic() < deadline:
        with open(table) as f:  # no probe connection: socat would fork for it
            if any(line.split()[1] == wanted and line.split()[3] == state for line in f.readlines()[1:]):
                break
        time.sleep(0.01)
    else:
        process.kill()
        raise SystemExit(f"socat did not listen on 127.0.0.1:{port}")
    return process, ("127.0.0.1", port)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"EOF after {len(data)} of {n} bytes")
        data += chunk
    return data


def children_of(pid: int) -> list[int]:
    """The child processes of ``pid`` (socat's, one per connection)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(child) for child in f.read().split()]
    return found


def traced_by(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    return 0


def parse_strace(text: str, made: int) -> dict[str, float]:
    """``strace -c`` table → {"sys": total per round trip, "sys:name": per round trip}."""
    figures: dict[str, float] = {}
    total = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1].isidentifier() and parts[-1] != "total" and parts[3].isdigit():
            n = int(parts[3])
            total += n
            if n / made >= 0.01:
                figures[f"sys:{parts[-1]}"] = n / made
    figures["sys"] = total / made
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(MEASURES))
    parser.add_argument("-n", type=int, default=5000, help="round trips counted per measure")
    parser.add_argument("--opcodes", action="store_true", help="also count bytecode instructions")
    parser.add_argument("--no-strace", action="store_true")
    parser.add_argument(
        "--socat", action="store_true", help="also socat's system calls over the same round trips"
    )
    parser.add_argument(
        "--detail", action="store_true", help="also the calls per round trip of each function"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per measure")
    parser.add_argument("--serve", nargs=2, metavar=("LISTEN", "TARGET"), help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        listen, target = args.serve
        serve(listen, target, args.opcodes, args.detail, args.kind)
        return
    names = args.only.split(",")
    for name in names:
        if name not in MEASURES:
            parser.error(f"unknown measure {name!r}; accepted: {', '.join(MEASURES)}")
    if args.socat and shutil.which("socat") is None:
        parser.error("--socat needs socat on PATH")
    with tempfile.TemporaryDirectory() as folder:
        certs = make_certs(Path(folder)) if "tls" in names else None
        for name in names:
            run_measure(name, args, certs)
            if args.socat:
                run_measure(name, args, certs, socat=True)


def run_measure(name: str, args: argparse.Namespace, certs: Certs | None, socat: bool = False) -> None:
    measure = Measure(name, args.opcodes, args.detail, certs, socat)
    try:
        figures = measure.count(args.n, not args.no_strace)
    finally:
        measure.close()
    label = f"socat:{name}" if socat else name
    if args.json:
        print(json.dumps({"measure": label, **figures}), flush=True)
        return
    line = f"{label:10}"
    if not socat:
        calls = figures.get("calls", 0.0)
        c_calls = figures.get("c_calls", 0.0)
        line += f" py calls/rt {calls:7.2f}  C calls/rt {c_calls:7.2f}"
    if "opcodes" in figures:
        line += f"  opcodes/rt {figures['opcodes']:8.1f}"
    if "sys" in figures:
        detail = ", ".join(
            f"{key[4:]} {value:.2f}" for key, value in sorted(figures.items()) if key.startswith("sys:")
        )
        line += f"  syscalls/rt {figures['sys']:6.2f} ({detail})"
    print(line, flush=True)
    for key, value in sorted(measure.functions.items(), key=lambda item: -item[1]):
        if value >= 0.01:
            print(f"    {value:7.2f}  {key}")


if __name__ == "__main__":
    main()

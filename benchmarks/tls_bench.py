#!/usr/bin/env python3
"""enchufe's TLS beside plain TCP, socat's TLS and the CPU's AES-GCM limit: one command, one run.

Usage (from the repository, with enchufe installed; socat built with OpenSSL and openssl on PATH;
trustme for the certificates):

    python3 benchmarks/tls_bench.py [--megabytes 2048] [--seconds 3] [--idle 1000] [--clients 2]
    python3 benchmarks/tls_bench.py --quick        # tiny sizes: checks that it works, no figures

It refuses to run when the 1-minute load average is above 0.5 (other work moves every figure);
``--force`` runs anyway with a warning (``--quick`` warns only).  Each measure takes a few
seconds; the whole run well under a minute with the defaults.

Certificates: a trustme CA and a server certificate for 127.0.0.1 and localhost, ECDSA P-256,
in a temporary folder; every client verifies the server against that CA.

Measures (loopback, 127.0.0.1, TLS 1.3 as negotiated by default: AES-GCM):

* **bulk**: ``--megabytes`` MiB from a file on the client's stdin to a server that discards them
  (``enchufe connect`` → ``enchufe listen … > /dev/null``; ``socat - OPENSSL:…`` →
  ``socat -u OPENSSL-LISTEN:… /dev/null``; and enchufe over plain ``tcp://``).  The clock is the
  server's output (``wchar`` of /proc/PID/io, sampled every millisecond) from a tenth of the
  bytes to nine tenths, so process start, handshake and the last flush are left out alike:
  MB/s, MB = 10⁶ bytes.
* **cipher suites**: the one each pair agrees on with its own defaults, as its client reports it
  (enchufe asks for TLS_AES_128_GCM_SHA256 first; OpenSSL's default, socat's, is
  TLS_AES_256_GCM_SHA384).
* **crypto limit**: ``openssl speed -evp aes-128-gcm`` (and aes-256-gcm, OpenSSL's default
  suite) on 16 KiB blocks, one core: the most one TLS stream could carry on this CPU.
* **handshakes/s**: ``openssl s_time -new`` (a full handshake per connection, no resumption),
  ``--clients`` of them at once for ``--seconds``, against ``enchufe echo tls://…`` and against
  ``socat OPENSSL-LISTEN:…,fork PIPE`` (socat forks a process per connection).
* **idle RSS**: ``--idle`` TLS connections opened to ``enchufe echo tls://…`` from this process
  (Python's ssl, verified), each handshake finished and one byte echoed, then held; the server's
  VmRSS (/proc/PID/status) before and after, divided by the count.  Target: ≤ 64 KiB each.

Bulk transfers and handshakes run in ``--rounds`` rounds, every tool once per round, back to
back, in an order that rotates: the table gives each tool's median and, as the ratio, the median
of the per-round ratios (a VM's speed drifts over tens of seconds, moving the tools of one round
alike).  Compare ratios rather than absolute figures between runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ENCHUFE = (sys.executable, "-m", "enchufe")
MB = 1_000_000
MiB = 1 << 20
#: Above this 1-minute load average the figures say more about the other work than about TLS.
MAX_LOAD = 0.5
#: The issue's targets: enchufe / socat ratios, and KiB per idle TLS connection.
TARGET_BULK_VS_SOCAT = 1.5
TARGET_HANDSHAKES_VS_SOCAT = 2.0
TARGET_IDLE_KIB = 64
#: No single process of a measure may run longer than this (seconds).
STEP_TIMEOUT = 120.0


@dataclass
class Certs:
    ca: Path
    server: Path  # key and chain in one PEM file


def make_certs(folder: Path) -> Certs:
    import trustme

    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    issued = ca.issue_cert("127.0.0.1", "localhost", key_type=trustme.KeyType.ECDSA)
    certs = Certs(folder / "ca.pem", folder / "server.pem")
    ca.cert_pem.write_to_path(str(certs.ca))
    issued.private_key_and_cert_chain_pem.write_to_path(str(certs.server))
    return certs


def key_description(certs: Certs) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = re.search(
        rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", certs.server.read_bytes(), re.S
    )
    if pem is None:
        raise SystemExit(f"no certificate in {certs.server}")
    cert = x509.load_pem_x509_certificate(pem.group(0))
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    return type(key).__name__


# ---------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def listening(port: int) -> bool:
    """Whether a TCP socket listens on 127.0.0.1:``port`` (/proc/net/tcp: no probe connection,
    which a one-connection server such as ``listen`` without ``-k`` would take as its client)."""
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":  # 0A: TCP_LISTEN
            return True
    return False


def wait_tcp(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Until something listens on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server {proc.args!r} exited with status {proc.returncode}")
        if listening(port):
            return
        time.sleep(0.02)
    raise SystemExit(f"nothing listens on port {port} after {timeout:g} s: {proc.args!r}")


@contextlib.contextmanager
def running(args: list[str], port: int, quiet: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    """``args`` started, until something listens on ``port``; ``quiet``: its stderr dropped."""
    stderr = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_tcp(port, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---------------------------------------------------------------------------- bulk


def _commands(tool: str, port: int, certs: Certs) -> tuple[list[str], list[str]]:
    """(server, client) of one bulk transfer: the server discards, the client sends its stdin."""
    if tool == "socat":
        server = f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,cert={certs.server},verify=0"
        # The client is bidirectional (its output goes to /dev/null) so that it reads the TLS 1.3
        # session tickets the server sends: with -u it left them unread, its close became a
        # reset, and the server lost the last few hundred KB (seen on a quiet machine).
        # -t 60: after its stdin's EOF the client waits for the server to finish and close,
        # rather than the default 0.5 s after which it closed with bytes still in flight.
        return ["socat", "-u", server, "GOPEN:/dev/null"], [
            "socat",
            "-t",
            "60",
            "-",
            f"OPENSSL:127.0.0.1:{port},cafile={certs.ca}",
        ]
    if tool == "enchufe":
        listen, target = (
            f"tls://127.0.0.1:{port}?cert={certs.server}",
            f"tls://127.0.0.1:{port}?ca={certs.ca}",
        )
    else:  # enchufe without TLS
        listen = target = f"tcp://127.0.0.1:{port}"
    return [*ENCHUFE, "listen", listen, "-q"], [*ENCHUFE, "connect", target, "-q"]


def written(pid: int) -> int | None:
    """Bytes the process has written so far (``wchar`` of /proc/PID/io), None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return None
    match = re.search(r"^wchar: (\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def transfer(tool: str, certs: Certs, data: Path) -> float:
    """MB/s of ``data`` sent from the client's stdin to a server that writes it to /dev/null.

    The clock is the server's output, sampled every millisecond: from a tenth of the bytes
    written to nine tenths, so process start, handshake and the last flush are left out and
    every tool is timed alike."""
    size = data.stat().st_size
    port = free_port()
    server_args, client_args = _commands(tool, port, certs)
    samples: list[tuple[float, int]] = []
    with running(server_args, port) as server, data.open("rb") as stdin:
        client = subprocess.Popen(client_args, stdin=stdin, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + STEP_TIMEOUT
            while server.poll() is None and time.monotonic() < deadline:
                count = written(server.pid)
                if count is not None:
                    samples.append((time.perf_counter(), count))
                time.sleep(0.001)
            server.wait(1)
            client.wait(STEP_TIMEOUT)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
    if server.returncode != 0 or client.returncode != 0:
        raise SystemExit(
            f"{tool}: the transfer failed (server {server.returncode}, client {client.returncode})"
        )
    total = samples[-1][1] if samples else 0
    if total < size * 9 // 10:
        raise SystemExit(f"{tool}: the server wrote {total:,} bytes of {size:,} before it exited")
    if total < size:
        # socat 1.7.4's TLS client loses the last few hundred KB of a one-way transfer (its
        # close resets the connection), -t 60 or not; the timed window (10 %..90 %) is whole.
        print(f"note: {tool} delivered {total:,} of {size:,} bytes (lost {size - total:,} at the end)")
    start = next(t for t, n in samples if n >= size // 10)
    stop = next(t for t, n in samples if n >= size * 9 // 10)
    return (size * 8 // 10) / max(stop - start, 1e-3) / MB


BULK_TOOLS = ("enchufe", "plain", "socat")


def suite(tool: str, certs: Certs) -> str:
    """The TLS 1.3 cipher suite a bulk pair of ``tool`` agrees on, as its client reports it
    (``enchufe connect -v``, ``socat -d -d``): each pair runs with its own defaults."""
    port = free_port()
    server_args, client_args = _commands(tool, port, certs)
    if tool == "socat":
        client_args = [client_args[0], "-d", "-d", *client_args[1:]]
    else:
        client_args = [arg for arg in client_args if arg != "-q"] + ["-v"]
    with running(server_args, port, quiet=True):
        done = subprocess.run(client_args, input=b"x", capture_output=True, timeout=STEP_TIMEOUT, check=False)
    match = re.search(rb"(TLS_[A-Z0-9_]+)", done.stderr)
    return match.group(1).decode() if match else "unknown"


def bulk_rounds(certs: Certs, data: Path, rounds: int) -> list[dict[str, float]]:
    """``rounds`` rounds of one transfer per tool, back to back, in an order that rotates from
    round to round: MB/s by tool, per round.  A machine whose speed drifts (a VM's neighbours)
    moves the tools of one round alike, so their ratio within the round is what to compare."""
    results: list[dict[str, float]] = []
    for n in range(rounds):
        order = BULK_TOOLS[n % 3 :] + BULK_TOOLS[: n % 3]
        results.append({tool: transfer(tool, certs, data) for tool in order})
        print(
            f"round {n + 1}: bulk MB/s " + ", ".join(f"{tool} {results[-1][tool]:,.0f}" for tool in order),
            flush=True,
        )
    return results


def openssl_speed(cipher: str, seconds: int) -> float:
    """MB/s of ``openssl speed -evp CIPHER`` on 16 KiB blocks (machine-readable output)."""
    done = subprocess.run(
        ["openssl", "speed", "-mr", "-evp", cipher, "-seconds", str(seconds), "-bytes", "16384"],
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=True,
    )
    match = re.search(r"^\+F:\d+:[^:]+:([\d.]+)", done.stdout, re.MULTILINE)
    if match is None:
        raise SystemExit(f"cannot read `openssl speed` output:\n{done.stdout}")
    return float(match.group(1)) / MB


# ---------------------------------------------------------------------------- handshakes


def _echo_server(tool: str, port: int, certs: Certs) -> list[str]:
    if tool == "socat":
        return [
            "socat",
            f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={certs.server},verify=0",
            "PIPE",
        ]
    return [*ENCHUFE, "echo", f"tls://127.0.0.1:{port}?cert={certs.server}", "-q"]


def handshakes(tool: str, certs: Certs, seconds: float, clients: int) -> float:
    """Full handshakes per second: ``clients`` ``openssl s_time -new`` at once."""
    port = free_port()
    # s_time closes without close_notify: socat logs every one as an error, enchufe (-q) not
    with running(_echo_server(tool, port, certs), port, quiet=True):
        args = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-CAfile", str(certs.ca)]
        args += ["-time", str(max(1, round(seconds)))]
        started = time.perf_counter()
        procs = [
            subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            for _ in range(clients)
        ]
        outputs = [p.communicate(timeout=STEP_TIMEOUT)[0] for p in procs]
        wall = time.perf_counter() - started
    total = 0
    for out in outputs:
        match = re.search(r"(\d+) connections in [\d.]+ real seconds", out)
        if match is None:
            raise SystemExit(f"cannot read `openssl s_time` output:\n{out}")
        total += int(match.group(1))
    return total / wall


# ---------------------------------------------------------------------------- idle RSS


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SystemExit(f"no VmRSS for pid {pid}")


def idle_rss(certs: Certs, count: int) -> tuple[int, int, float]:
    """(RSS before KiB, RSS after KiB, KiB per connection) of ``enchufe echo tls://`` holding
    ``count`` idle TLS connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * count + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    port = free_port()
    context = ssl.create_default_context(cafile=str(certs.ca))
    held: list[ssl.SSLSocket] = []
    with running(_echo_server("enchufe", port, certs), port) as server:
        time.sleep(0.5)  # settled after start-up
        before = rss_kib(server.pid)
        try:
            for _ in range(count):
                raw = socket.create_connection(("127.0.0.1", port), timeout=10)
                conn = context.wrap_socket(raw, server_hostname="127.0.0.1")
                held.append(conn)
                conn.sendall(b"x")
                if conn.recv(1) != b"x":
                    raise SystemExit("the echo server did not echo")
            time.sleep(0.5)
            after = rss_kib(server.pid)
        finally:
            for conn in held:
                with contextlib.suppress(OSError):
                    conn.close()
    return before, after, (after - before) / max(count, 1)


# ---------------------------------------------------------------------------- report


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def check(value: float, target: float, higher: bool = True) -> str:
    met = value >= target if higher else value <= target
    return f"{'meets' if met else 'misses'} target {'≥' if higher else '≤'} {target:g}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--megabytes", type=int, default=2048, help="MiB per bulk transfer [2048]")
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="seconds of the handshake and openssl speed measures [3]"
    )
    parser.add_argument("--idle", type=int, default=1000, help="idle TLS connections held [1000]")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of bulk transfers and of handshakes, every tool in each [3]",
    )
    parser.add_argument("--clients", type=int, default=2, help="openssl s_time clients at once [2]")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: only checks that every measure runs"
    )
    parser.add_argument("--force", action="store_true", help=f"run even with a load average above {MAX_LOAD}")
    args = parser.parse_args()
    if args.quick:
        args.megabytes, args.seconds, args.idle, args.clients, args.rounds = 8, 1.0, 20, 1, 1
    return args


def check_tools() -> str:
    for tool in ("socat", "openssl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed on PATH")
    version = subprocess.run(["socat", "-V"], capture_output=True, text=True, check=False).stdout
    if "WITH_OPENSSL 1" not in version:
        raise SystemExit("this socat is built without OpenSSL (socat -V has no WITH_OPENSSL 1)")
    return version.splitlines()[1].strip() if len(version.splitlines()) > 1 else "socat"


def check_load(args: argparse.Namespace) -> tuple[float, float, float]:
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    if load[0] > MAX_LOAD:
        if not (args.force or args.quick):
            raise SystemExit(
                f"refusing to measure: the 1-minute load average is {load[0]:.2f} (> {MAX_LOAD}); "
                "other work would move every figure.  Wait for a quiet machine, or --force."
            )
        print(f"WARNING: LOAD {load[0]:.2f} > {MAX_LOAD}: THESE FIGURES ARE NOT TO BE TRUSTED", flush=True)
    return load


Row = tuple[str, str, str, str, str]  # measure, enchufe, other, ratio, note


def bulk_rows(args: argparse.Namespace, certs: Certs, folder: Path) -> list[Row]:
    full = folder / "data"
    with full.open("wb") as f:
        block = os.urandom(MiB)
        for _ in range(args.megabytes):
            f.write(block)
    speed = max(1, round(args.seconds))
    aes128, aes256 = openssl_speed("aes-128-gcm", speed), openssl_speed("aes-256-gcm", speed)
    rounds = bulk_rounds(certs, full, args.rounds)
    tls, plain, other = (statistics.median(r[tool] for r in rounds) for tool in BULK_TOOLS)
    vs_socat = statistics.median(r["enchufe"] / r["socat"] for r in rounds)
    vs_plain = statistics.median(r["enchufe"] / r["plain"] for r in rounds)
    print(f"bulk MB/s: enchufe tls {tls:,.0f}, enchufe tcp {plain:,.0f}, socat tls {other:,.0f}", flush=True)
    name = "bulk MB/s: enchufe tls vs"
    return [
        (
            f"{name} socat tls",
            f"{tls:,.0f}",
            f"{other:,.0f}",
            f"{vs_socat:.2f}x",
            check(vs_socat, TARGET_BULK_VS_SOCAT),
        ),
        (f"{name} enchufe tcp", f"{tls:,.0f}", f"{plain:,.0f}", f"{vs_plain:.2f}x", "the cost of TLS"),
        (
            f"{name} openssl speed aes-128-gcm",
            f"{tls:,.0f}",
            f"{aes128:,.0f}",
            ratio(tls, aes128),
            "one core's AES-128-GCM (enchufe's suite)",
        ),
        (
            f"{name} openssl speed aes-256-gcm",
            f"{tls:,.0f}",
            f"{aes256:,.0f}",
            ratio(tls, aes256),
            "AES-256-GCM (OpenSSL's default suite)",
        ),
    ]


def handshake_rows(args: argparse.Namespace, certs: Certs) -> list[Row]:
    rounds: list[dict[str, float]] = []
    for n in range(args.rounds):  # as bulk_rounds: back to back, the order alternating
        order = ("enchufe", "socat") if n % 2 == 0 else ("socat", "enchufe")
        rounds.append({tool: handshakes(tool, certs, args.seconds, args.clients) for tool in order})
        got = rounds[-1]
        print(f"round {n + 1}: handshakes/s enchufe {got['enchufe']:,.0f}, socat {got['socat']:,.0f}")
    ours, theirs = (statistics.median(r[tool] for r in rounds) for tool in ("enchufe", "socat"))
    each = statistics.median(r["enchufe"] / r["socat"] for r in rounds)
    print(f"handshakes/s: enchufe {ours:,.0f}, socat {theirs:,.0f}", flush=True)
    return [
        (
            "handshakes/s: enchufe echo vs socat fork",
            f"{ours:,.0f}",
            f"{theirs:,.0f}",
            f"{each:.2f}x",
            check(each, TARGET_HANDSHAKES_VS_SOCAT),
        )
    ]


def idle_rows(args: argparse.Namespace, certs: Certs) -> list[Row]:
    before, after, each = idle_rss(certs, args.idle)
    print(f"idle: {args.idle} TLS connections, server RSS {before:,} KiB → {after:,} KiB", flush=True)
    note = check(each, TARGET_IDLE_KIB, higher=False)
    return [(f"RSS KiB per idle TLS connection ({args.idle} held)", f"{each:.1f}", "-", "-", note)]


def report(args: argparse.Namespace, rows: list[Row], load: float, socat: str) -> None:
    """The table, then the same as a markdown block for RESULTS.md, with the command."""
    header = ("measure", "enchufe", "other", "ratio", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    print()
    for n, row in enumerate([header, *rows]):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    quick = " (--quick: tiny sizes, not figures)" if args.quick else ""
    command = (
        f"python3 benchmarks/tls_bench.py --megabytes {args.megabytes} --rounds {args.rounds} "
        f"--seconds {args.seconds:g} --idle {args.idle} --clients {args.clients}"
    )
    machine = (
        f"{os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}, "
        f"{ssl.OPENSSL_VERSION}, {socat}"
    )
    print(f"\nFor RESULTS.md{quick}:\n")
    day = time.strftime("%Y-%m-%d", time.gmtime())
    print(f"`{command}`, {day}, {machine}, load {load:.2f} at start{quick}:")
    print()
    print("| measure | enchufe | other | ratio | |")
    print("|---|---:|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    args = parse_args()
    socat = check_tools()
    load = check_load(args)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tls-bench-") as tmp:
        certs = make_certs(Path(tmp))
        print(
            f"certificate: {key_description(certs)}, trustme CA; {socat}; {ssl.OPENSSL_VERSION}", flush=True
        )
        print(f"cipher suites: enchufe pair {suite('enchufe', certs)}, socat pair {suite('socat', certs)}")
        rows = bulk_rows(args, certs, Path(tmp)) + handshake_rows(args, certs) + idle_rows(args, certs)
    report(args, rows, load[0], socat)
    print(f"\nwhole run: {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()

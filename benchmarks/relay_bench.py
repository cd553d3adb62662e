#!/usr/bin/env python3
"""The relay next to socat and the kernel, measured in the same run: one command, one table.

Usage (from the repository, with enchufe installed, gcc and socat on PATH):

    python benchmarks/relay_bench.py [--rounds 5] [--seconds 1.5] [--idle 9800] [--only NAME,...]
    python benchmarks/relay_bench.py --quick     # one round of tiny sizes: checks that it runs

What it does:

1. compiles ``benchmarks/relay_bench.c`` (C clients and servers, see its header) with
   ``gcc -O2`` into a temporary folder;
2. starts the C servers (a stream sink on TCP and on a unix socket, a stream echo server, a UDP
   sink and a UDP echo server), and in front of them, for every measure, a socat relay (default
   options plus ``fork`` on the listener, as people run it) and an enchufe relay
   (``enchufe relay LISTEN TARGET -q``, default options);
3. runs every measure ``--rounds`` times, each round going through the kernel alone (the C
   client straight to the C server), socat and enchufe, in a rotating order so that no contender
   is always first; prints each round's figures and then the medians with the ratios, and which
   targets of the relay issue they meet;
4. then the two enchufe-only measures (``relay_bench_alone.py``): idle connections held by one
   relay process (RSS, and a ping through every one at the end) and RSS growth while 1 GiB is
   pushed at a reader that stalls.

Measures (C client → [relay] → C server, loopback, 127.0.0.1):

* ``tcp``: TCP→TCP throughput: 1 MiB writes for ``--seconds``, then EOF; the clock stops when the
  sink's close comes back (every byte delivered).  Gbit/s.
* ``unix``: TCP→unix throughput, same; the kernel column is unix→unix.
* ``ping``: 1-byte ping-pong over TCP for ``--seconds``: round trips/s (and p50 µs).
* ``conns``: connect, send 1 byte, SHUT_WR, read the echo until EOF, close, for ``--seconds``:
  connections/s.
* ``udp``: 200,000 UDP datagrams of 64 bytes sent as fast as the socket takes them; received/s
  at the sink (first to last datagram) and loss.
* ``uping``: 1-byte UDP ping-pong for ``--seconds``: round trips/s.

The TLS-gateway legs (``tlsterm``, ``tlsterm-unix``, ``tlshs``, ``tlsping``, ``passthrough``,
``tlsidle``: the relay terminating TLS beside socat ``OPENSSL-LISTEN`` and stunnel4, and SNI
passthrough beside the plain relay) are described in ``relay_bench_tls.py``; they need stunnel4
and trustme.

The load average is printed at the start and at the end, with a warning above 0.5.  The machine
this runs on is shared and noisy: read the medians, and compare ratios, which come
from the same run, rather than absolute figures between runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
ENCHUFE = (sys.executable, "-m", "enchufe")
MEASURES = ("tcp", "unix", "ping", "conns", "udp", "uping", "idle", "stall")
UDP_COUNT = 200_000
UDP_SIZE = 64
GiB = 1 << 30
#: Above this 1-minute load average the figures say more about the other work than the relay.
MAX_LOAD = 0.5

#: The issues' targets: measure → (ratio name, threshold).  "socat" ratios are enchufe / socat.
#: Throughput: the relay issue's; the small-message measures: the latency issue's (12), which
#: raised them (and asks UDP 64 B to lose less than socat too: the loss is printed beside it).
TARGETS: dict[str, list[tuple[str, float]]] = {
    "tcp": [("socat", 3.0), ("kernel", 0.7)],
    "unix": [("socat", 5.0)],
    "ping": [("socat", 1.2)],
    "conns": [("socat", 3.0)],
    "udp": [("socat", 2.0)],
    "uping": [("socat", 1.2)],
}
UNITS = {
    "tcp": "Gbit/s",
    "unix": "Gbit/s",
    "ping": "round trips/s",
    "conns": "conn/s",
    "udp": "datagrams/s",
    "uping": "round trips/s",
}
TITLES = {
    "tcp": "TCP→TCP throughput",
    "unix": "TCP→unix throughput",
    "ping": "TCP 1-byte ping-pong",
    "conns": "connect+request+close",
    "udp": "UDP 64 B datagrams received",
    "uping": "UDP 1-byte ping-pong",
}


#: The ports free_port() handed out in this run: the kernel may offer a port again once its probe
#: is closed, before the server it was meant for has bound it (two servers given one port: the
#: second one exits and the clients of its measure reach the first).
GIVEN: set[int] = set()


def free_port(kind: int = socket.SOCK_STREAM, pair: bool = False) -> int:
    """A free port on 127.0.0.1 (with ``pair``, one whose successor is free too), never one given
    before in this run."""
    while True:
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        wanted = {port, port + 1} if pair and port < 65535 else {port}
        if wanted & GIVEN:
            continue
        if len(wanted) > 1:
            with socket.socket(socket.AF_INET, kind) as other:
                try:
                    other.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        GIVEN.update(wanted)
        return port


def parse_pairs(line: str) -> dict[str, float]:
    return {k: float(v) for k, v in (item.split("=", 1) for item in line.split())}


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass
class Bench:
    workdir: Path
    seconds: float
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    binary: Path = Path()

    # -- processes

    def start(
        self,
        *args: str,
        stdout: int | None = subprocess.DEVNULL,
        stderr: int | IO[bytes] = subprocess.DEVNULL,
    ) -> subprocess.Popen[bytes]:
        # A process group each: socat's UDP "fork" children outlive their parent (a child per
        # sender, with no timeout), so the whole group is stopped at the end.
        proc = subprocess.Popen(list(args), stdout=stdout, stderr=stderr, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def client(self, *args: str, timeout: float = 60) -> dict[str, float]:
        done = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"relay_bench {' '.join(args)}: {done.stderr.strip() or done.returncode}")
        return parse_pairs(done.stdout.strip().splitlines()[-1])

    def compile(self) -> None:
        self.binary = self.workdir / "relay_bench"
        subprocess.run(
            ["gcc", "-O2", "-Wall", "-o", str(self.binary), str(HERE / "relay_bench.c")], check=True
        )

    # -- waiting for listeners

    @staticmethod
    def wait_tcp(port: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError(f"nothing listens on port {port}")

    @staticmethod
    def wait_path(path: str) -> None:
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no socket at {path}")
            time.sleep(0.02)

    @staticmethod
    def wait_udp(port: int) -> None:
        """A UDP listener is there when binding its port fails."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    return
            time.sleep(0.02)
        raise RuntimeError(f"nothing bound to udp port {port}")


# ----------------------------------------------------------------------------- UDP sink control


def usink_query(port: int, what: str) -> dict[str, float]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(what.encode(), ("127.0.0.1", port + 1))
        return parse_pairs(sock.recv(200).decode())


def udp_rate(bench: Bench, sink_port: int, via_port: int) -> dict[str, float]:
    usink_query(sink_port, "RESET")
    sent = bench.client("ublast", str(via_port), str(UDP_COUNT), str(UDP_SIZE))
    # Wait until the sink's count stops moving (the relay may still be forwarding).
    last = -1.0
    while True:
        time.sleep(0.15)
        got = usink_query(sink_port, "GET")
        if got["received"] == last:
            break
        last = got["received"]
    received = got["received"]
    span = got["last"] - got["first"]
    rate = received / span if span > 0 else 0.0
    return {"value": rate, "loss": 1 - received / sent["sent"], "received": received}


# ----------------------------------------------------------------------------- the run


@dataclass
class Contender:
    name: str
    ports: dict[str, str]  # measure → address the C client uses


def start_servers(bench: Bench) -> dict[str, str]:
    """The C servers: measure → their address."""
    b = str(bench.binary)
    sink = free_port()
    echo = free_port()
    usink = free_port(socket.SOCK_DGRAM, pair=True)
    uecho = free_port(socket.SOCK_DGRAM)
    path = str(bench.workdir / "sink.sock")
    bench.start(b, "sink", str(sink))
    bench.start(b, "sink", path)
    bench.start(b, "echo", str(echo))
    bench.start(b, "usink", str(usink))
    bench.start(b, "uecho", str(uecho))
    bench.wait_tcp(sink)
    bench.wait_tcp(echo)
    bench.wait_path(path)
    bench.wait_udp(usink)
    bench.wait_udp(uecho)
    return {
        "tcp": str(sink),
        "unix": path,
        "ping": str(echo),
        "conns": str(echo),
        "udp": str(usink),
        "uping": str(uecho),
    }


def start_relays(bench: Bench, servers: dict[str, str], measures: list[str]) -> list[Contender]:
    """A socat and an enchufe relay in front of each server the measures use (ping and conns
    share the relays to the echo server)."""
    socat_ports: dict[str, str] = {}
    enchufe_ports: dict[str, str] = {}
    waits: list[tuple[int, bool]] = []
    for measure in measures:
        if measure not in UNITS or measure in socat_ports:
            continue
        server = servers[measure]
        udp = measure in ("udp", "uping")
        kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
        s_port, e_port = free_port(kind), free_port(kind)
        if udp:
            bench.start("socat", f"UDP4-LISTEN:{s_port},fork", f"UDP4:127.0.0.1:{server}")
            listen, target = f"udp4://127.0.0.1:{e_port}", f"udp4://127.0.0.1:{server}"
        elif server.startswith("/"):
            bench.start("socat", f"TCP4-LISTEN:{s_port},fork", f"UNIX-CONNECT:{server}")
            listen, target = f"tcp4://127.0.0.1:{e_port}", f"unix://{server}"
        else:
            bench.start("socat", f"TCP4-LISTEN:{s_port},fork", f"TCP4:127.0.0.1:{server}")
            listen, target = f"tcp4://127.0.0.1:{e_port}", f"tcp4://127.0.0.1:{server}"
        bench.start(*ENCHUFE, "relay", listen, target, "-q")
        waits += [(s_port, udp), (e_port, udp)]
        for m in ("ping", "conns") if measure in ("ping", "conns") else (measure,):
            socat_ports[m] = str(s_port)
            enchufe_ports[m] = str(e_port)
    for port, udp in waits:
        if udp:
            bench.wait_udp(port)
        else:
            bench.wait_tcp(port)
    return [
        Contender("kernel", dict(servers)),
        Contender("socat", socat_ports),
        Contender("enchufe", enchufe_ports),
    ]


def measure_once(
    bench: Bench, measure: str, contender: Contender, servers: dict[str, str]
) -> dict[str, float]:
    address = contender.ports[measure]
    seconds = f"{bench.seconds:g}"
    if measure == "unix" and contender.name == "kernel":
        address = servers["unix"]
    if measure in ("tcp", "unix"):
        result = bench.client("source", address, seconds)
        return {"value": result["gbps"]}
    if measure == "ping":
        result = bench.client("ping", address, seconds)
        return {"value": result["rtps"], "p50_us": result["p50_us"]}
    if measure == "conns":
        result = bench.client("conns", address, seconds)
        return {"value": result["cps"], "errors": result["errors"]}
    if measure == "udp":
        return udp_rate(bench, int(servers["udp"]), int(address))
    if measure == "uping":
        result = bench.client("uping", address, seconds)
        return {"value": result["rtps"], "p50_us": result["p50_us"], "lost": result["lost"]}
    raise ValueError(measure)


def fmt(measure: str, value: float) -> str:
    if measure in ("tcp", "unix"):
        return f"{value:.1f}"
    return f"{value / 1000:.1f}k"


def details(measure: str, result: dict[str, float]) -> str:
    if measure in ("ping", "uping"):
        return f" (p50 {result['p50_us']:.0f} µs)"
    if measure == "udp":
        return f" (loss {result['loss'] * 100:.1f} %)"
    return ""


def run_comparisons(bench: Bench, measures: list[str], rounds: int) -> list[str]:
    servers = start_servers(bench)
    contenders = start_relays(bench, servers, measures)
    time.sleep(0.5)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for rnd in range(rounds):
        for measure in measures:
            if measure not in UNITS:
                continue
            order = contenders[rnd % 3 :] + contenders[: rnd % 3]
            shown = []
            for contender in order:
                try:
                    result = measure_once(bench, measure, contender, servers)
                except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
                    shown.append(f"{contender.name} failed: {exc}")
                    continue
                result["round"] = rnd
                results.setdefault((measure, contender.name), []).append(result)
                shown.append(f"{contender.name} {fmt(measure, result['value'])}{details(measure, result)}")
            print(f"round {rnd + 1}: {TITLES[measure]} ({UNITS[measure]}): " + ", ".join(shown), flush=True)
    return table(measures, results)


def median_of(results: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def round_ratios(mine: list[dict[str, float]], theirs: list[dict[str, float]]) -> list[float]:
    """enchufe / other, round by round (the contenders of a round ran back to back, so a ratio
    cancels most of the machine's drift between rounds)."""
    by_round = {r["round"]: r["value"] for r in theirs}
    return [r["value"] / by_round[r["round"]] for r in mine if by_round.get(r["round"])]


def table(measures: list[str], results: dict[tuple[str, str], list[dict[str, float]]]) -> list[str]:
    if not results:
        return []
    rounds = max(len(v) for v in results.values())
    lines = [
        "",
        f"medians of {rounds} rounds (the ratios are medians of the per-round ratios, which the targets are "
        "judged on):",
        f"{'measure':<30} {'unit':<14} {'kernel':>9} {'socat':>9} {'enchufe':>9} "
        f"{'÷ socat':>8} {'÷ kernel':>9}  target",
    ]
    for measure in measures:
        if measure not in UNITS:
            continue
        med = {
            who: median_of(results[(measure, who)], "value")
            for who in ("kernel", "socat", "enchufe")
            if (measure, who) in results
        }
        if "enchufe" not in med:
            lines.append(f"{TITLES[measure]:<30} {UNITS[measure]:<14} (no enchufe result)")
            continue
        mine = results[(measure, "enchufe")]
        ratios = {
            who: statistics.median(r)
            if (r := round_ratios(mine, results.get((measure, who), [])))
            else float("nan")
            for who in ("socat", "kernel")
        }
        verdicts = []
        for against, threshold in TARGETS.get(measure, []):
            verdicts.append(
                f">= {threshold:g}x {against}: {'met' if ratios[against] >= threshold else 'NOT met'}"
            )
        if measure == "udp" and (measure, "socat") in results:
            loss_e = median_of(mine, "loss")
            loss_s = median_of(results[(measure, "socat")], "loss")
            verdicts.append(
                f"loss {loss_e * 100:.1f} % vs socat {loss_s * 100:.1f} %"
                f" ({'equal or lower' if loss_e <= loss_s + 0.005 else 'HIGHER'})"
            )
        cells = " ".join(
            f"{fmt(measure, med[w]) if w in med else '—':>9}" for w in ("kernel", "socat", "enchufe")
        )
        lines.append(
            f"{TITLES[measure]:<30} {UNITS[measure]:<14} {cells} {ratios['socat']:>7.2f}x "
            f"{ratios['kernel']:>8.2f}x  " + "; ".join(verdicts)
        )
    return lines


# ----------------------------------------------------------------------------- main


def parse_args(
    tls_measures: tuple[str, ...], add_tls_arguments: Callable[[argparse.ArgumentParser], None]
) -> argparse.Namespace:
    measures_all = MEASURES + tls_measures
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5, help="duration of each timed client run")
    parser.add_argument("--idle", type=int, default=9800, help="idle connections for the idle measure")
    parser.add_argument(
        "--only", default=",".join(measures_all), help=f"comma-separated subset of {measures_all}"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one round of tiny sizes: checks that every measure runs (no figures)",
    )
    add_tls_arguments(parser)
    args = parser.parse_args()
    args.measures = [m for m in args.only.split(",") if m]
    unknown = set(args.measures) - set(measures_all)
    if unknown:
        parser.error(f"unknown measures {sorted(unknown)}; choose from {measures_all}")
    return args


def main() -> None:
    # relay_bench_alone and relay_bench_tls import this module by name: let them find this one
    # (its free_port() and Bench), not a second copy.
    sys.modules.setdefault("relay_bench", sys.modules[__name__])
    import relay_bench_alone
    import relay_bench_tls

    args = parse_args(relay_bench_tls.TLS_MEASURES, relay_bench_tls.add_arguments)
    idle_workers = 10_000  # connections held by two worker processes
    if args.quick:
        args.rounds, args.seconds, args.idle, idle_workers = 1, 0.3, 200, 200
        relay_bench_tls.quick(args)
    measures: list[str] = args.measures
    tls = [m for m in measures if m in relay_bench_tls.TLS_MEASURES]
    for tool in ("gcc", "socat"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed on PATH")
    if tls:
        relay_bench_tls.check_tools()
    started = time.monotonic()
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}, "
        f"{subprocess.run(['socat', '-V'], capture_output=True, text=True).stdout.splitlines()[1].strip()}; "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    warn_load(load[0], "at start")
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        bench = Bench(Path(tmp), args.seconds)
        bench.compile()
        lines: list[str] = []
        try:
            if any(m in UNITS for m in measures):
                lines += run_comparisons(bench, measures, args.rounds)
            bench.stop_all()
            bench.procs.clear()
            if "idle" in measures:
                lines.append("")
                lines.append(relay_bench_alone.idle_connections(bench, args.idle, 1))
                lines.append(relay_bench_alone.idle_connections(bench, idle_workers, 2))
            if "stall" in measures:
                lines.append(relay_bench_alone.stalled_reader(bench))
            bench.stop_all()
            bench.procs.clear()
            if tls:
                lines += relay_bench_tls.run(bench, args, tls)
        finally:
            bench.stop_all()
    print("\n".join(lines))
    report_end(started, args.quick, "measure")


def report_end(started: float, quick: bool, unit: str) -> None:
    """The run's length and the load it ended at (a warning over MAX_LOAD), and, for --quick,
    that its figures are not figures."""
    load = os.getloadavg()
    print(
        f"\nwhole run: {time.monotonic() - started:.0f} s; "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
    )
    warn_load(load[0], "at the end")
    if quick:
        print(f"(--quick: one round of tiny sizes, to check that every {unit} runs: not figures)")


def warn_load(load: float, when: str) -> None:
    if load > MAX_LOAD:
        print(
            f"WARNING: load average {load:.2f} {when} (> {MAX_LOAD}): other work moved these figures",
            flush=True,
        )


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""``enchufe socks`` beside microsocks and dante, and ``--accept-proxy``'s cost, in one run.

Usage (from the repository, with enchufe installed; gcc, microsocks and danted on PATH or in
/usr/bin, /usr/sbin: ``apt-get install -y gcc microsocks dante-server``):

    python3 benchmarks/socks_bench.py [--rounds 5] [--mib 2048] [--clients 4] [--conns 1000]
                                      [--workers N]
    python3 benchmarks/socks_bench.py --quick     # one round of tiny sizes: checks that it runs

What it does:

1. compiles ``relay_bench.c`` (its sink and echo servers) and ``socks_bench.c`` (the clients, in
   C so that they cost little beside what they measure; see its header) with ``gcc -O2`` into a
   temporary folder, and starts the sink and the echo server on 127.0.0.1;
2. starts three SOCKS5 servers on 127.0.0.1, each as people run it, without authentication:
   ``enchufe socks tcp://127.0.0.1:P -q`` (default options), ``microsocks -i 127.0.0.1 -p P`` (a
   thread per client) and ``danted -f CONF -N 1`` in the foreground (CONF in the temporary
   folder: ``internal: 127.0.0.1 port = P``, ``external: lo``, ``socksmethod: none``, a
   ``client pass`` and a ``socks pass`` from and to anywhere, ``logoutput: stderr``; dante's
   own processes for negotiation, requests and I/O); with ``--workers N``, a fourth,
   ``enchufe socks … --workers N`` (contender ``enchufe-wN``: N processes on one port, as
   microsocks' threads and dante's processes use every core); and two relays in front of the echo
   server: ``enchufe relay tcp://127.0.0.1:P tcp://127.0.0.1:ECHO -q`` and the same with
   ``--accept-proxy`` (its default trusted proxies: loopback);
3. runs every leg ``--rounds`` times, each round going through every contender of the leg in a
   rotating order so that none is always first; prints each round, then the medians, the
   medians of the per-round ratios (the contenders of a round ran back to back, so a ratio
   cancels most of the machine's drift), and whether they meet the proxies issue's targets.

Legs (the same C client for every contender):

* ``connect``: CONNECT throughput: one client, SOCKS5 handshake (greeting, no authentication;
  CONNECT 127.0.0.1:SINK, each step waiting for its answer), then ``--mib`` x 1 MiB writes and
  EOF; the clock starts after the handshake and stops when the close comes back (the sink read
  everything).  Gbit/s.  Target: ≥ 2x the better of microsocks and dante.
* ``conns``: new connections per second: ``--clients`` processes at once, each ``--conns``
  times: connect, handshake, CONNECT 127.0.0.1:ECHO, 1 byte out and back, close.  All
  connections / the slowest client's time.  Target: ≥ 1.0x the better of the two.
* ``proxy``: ``enchufe relay`` connections per second with and without ``--accept-proxy``: the
  same client loop without SOCKS, straight to the relay; against ``--accept-proxy`` the client
  sends a PROXY header (v1 text, or v2 binary, as a separate contender each) naming its own
  addresses, in the same write as its byte (as HAProxy does).  Target: each ≥ 0.95x the relay
  without it (costs ≤ 5 %).

Beside each figure: the contender's CPU time (utime+stime of every process of its session in
/proc, reaped children included) per connection or per GiB, and the clients' CPU as a share of
their wall time (a client near 100 % would be the bottleneck, which a line warns about).  The
CPU times come in clock ticks (10 ms): ``--quick``'s tiny runs show 0 or a tick's worth.

The load average is printed at the start and at the end, with a warning above 0.5: run it on a
quiet machine, and compare ratios, which come from the same run, rather than figures between
runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from relay_bench import ENCHUFE, Bench, free_port, parse_pairs, report_end, warn_load

HERE = Path(__file__).resolve().parent
#: A client above this share of its wall time in CPU may be what limits the figure.
CLIENT_BUSY = 0.8
CLIENT_TIMEOUT = 300.0
SOCKS = ("enchufe", "microsocks", "dante")
PROXY = ("plain", "v1", "v2")


@dataclass(frozen=True)
class Leg:
    title: str
    unit: str
    contenders: tuple[str, ...]


LEGS = {
    "connect": Leg("SOCKS5 CONNECT throughput", "Gbit/s", SOCKS),
    "conns": Leg("SOCKS5 connect+request+close", "conn/s", SOCKS),
    "proxy": Leg("relay conn/s, --accept-proxy", "conn/s", PROXY),
}


def tool(name: str, fallback: str) -> str:
    found = shutil.which(name) or (fallback if os.access(fallback, os.X_OK) else None)
    if found is None:
        raise SystemExit(
            f"{name} is needed (apt-get install -y {'dante-server' if name == 'danted' else name})"
        )
    return found


def time_wait() -> int:
    """TCP sockets in TIME_WAIT on this machine (IPv4)."""
    with open("/proc/net/tcp") as f:
        return sum(1 for line in f if line.split()[3:4] == ["06"])


def ephemeral_ports() -> int:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = map(int, f.read().split())
    return high - low + 1


def wait_for_ports(needed: int) -> float:
    """Wait (at most TIME_WAIT's 60 s and a bit) until ``needed`` more ephemeral ports would
    still leave a third of them free; the seconds waited.

    Only dante needs this: it binds each outgoing socket to port 0 before connecting, without
    SO_REUSEADDR, so every socket in TIME_WAIT on 127.0.0.1 (the clients' and every proxy's)
    takes a port from it, and a run of new connections right after another fails with
    EADDRINUSE; connect() alone reuses them (net.ipv4.tcp_tw_reuse, loopback).
    """
    limit = ephemeral_ports() * 2 // 3 - needed
    started = time.monotonic()
    while time_wait() > limit and time.monotonic() - started < 70:
        time.sleep(1)
    return time.monotonic() - started


def session_cpu(sid: int) -> float:
    """utime+stime (and reaped children's) of every process in session ``sid``, in seconds."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        # After the ")": state is field 3 of stat(5), so field N is fields[N - 3].
        if int(fields[6 - 3]) == sid:
            ticks += sum(int(fields[n - 3]) for n in (14, 15, 16, 17))
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    bench: Bench
    client: Path
    sink: int
    echo: int
    ports: dict[str, int]  # contender → its listening port
    sessions: dict[str, int]  # contender → the session id whose CPU counts

    def clients(self, argvs: list[list[str]]) -> list[dict[str, float]]:
        procs = [
            subprocess.Popen(
                [str(self.client), *a], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for a in argvs
        ]
        out = []
        for proc, argv in zip(procs, argvs, strict=True):
            stdout, stderr = proc.communicate(timeout=CLIENT_TIMEOUT)
            if proc.returncode != 0:
                raise RuntimeError(f"socks_bench {' '.join(argv)}: {stderr.strip() or proc.returncode}")
            out.append(parse_pairs(stdout.strip().splitlines()[-1]))
        return out

    def measure(self, leg: str, who: str, mib: int, nclients: int, conns: int) -> dict[str, float]:
        port = str(self.ports[who])
        waited = wait_for_ports(2 * nclients * conns) if who == "dante" and leg == "conns" else 0.0
        cpu0 = session_cpu(self.sessions[who])
        if leg == "connect":
            got = self.clients([["source", port, str(self.sink), str(mib)]])
        elif leg == "conns":
            got = self.clients([["conns", port, str(self.echo), str(conns)]] * nclients)
        else:
            hdr = "none" if who == "plain" else who
            got = self.clients([["pconns", port, hdr, str(conns)]] * nclients)
        cpu = session_cpu(self.sessions[who]) - cpu0
        seconds = max(g["seconds"] for g in got)
        # The clients' CPU together, as a share of one core: near 1 per core they take, the
        # figure may be theirs.
        busy = sum(g["cpu"] for g in got) / seconds
        alone = max(g["cpu"] / g["seconds"] for g in got)
        if leg == "connect":
            nbytes = sum(g["bytes"] for g in got)
            return {
                "value": nbytes * 8 / seconds / 1e9,
                "cost": cpu / (nbytes / (1 << 30)),
                "busy": busy,
                "alone": alone,
            }
        count = sum(g["count"] for g in got)
        errors = sum(g["errors"] for g in got)
        return {
            "value": count / seconds,
            "cost": cpu / max(count, 1) * 1e6,
            "busy": busy,
            "alone": alone,
            "errors": errors,
            "waited": waited,
        }


def dante_config(workdir: Path, port: int) -> Path:
    config = workdir / "danted.conf"
    config.write_text(
        "logoutput: stderr\n"
        f"internal: 127.0.0.1 port = {port}\n"
        "external: lo\n"
        "socksmethod: none\n"
        "client pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }\n"
        "socks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }\n"
    )
    return config


def start(bench: Bench, workdir: Path, workers: int) -> Run:
    microsocks, danted = tool("microsocks", "/usr/bin/microsocks"), tool("danted", "/usr/sbin/danted")
    servers = workdir / "relay_bench"
    client = workdir / "socks_bench"
    for source, binary in (("relay_bench.c", servers), ("socks_bench.c", client)):
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(HERE / source)], check=True)
    sink, echo = free_port(), free_port()
    bench.start(str(servers), "sink", str(sink))
    bench.start(str(servers), "echo", str(echo))
    many = [f"enchufe-w{workers}"] if workers else []
    ports = {who: free_port() for who in (*SOCKS, *many, "plain", "accept")}
    argvs = {
        "enchufe": [*ENCHUFE, "socks", f"tcp://127.0.0.1:{ports['enchufe']}", "-q"],
        "microsocks": [microsocks, "-i", "127.0.0.1", "-p", str(ports["microsocks"])],
        "dante": [danted, "-f", str(dante_config(workdir, ports["dante"])), "-N", "1"],
        **{
            who: [*ENCHUFE, "socks", f"tcp://127.0.0.1:{ports[who]}", "-q", "--workers", str(workers)]
            for who in many
        },
        "plain": [*ENCHUFE, "relay", f"tcp://127.0.0.1:{ports['plain']}", f"tcp://127.0.0.1:{echo}", "-q"],
        "accept": [
            *ENCHUFE,
            "relay",
            f"tcp://127.0.0.1:{ports['accept']}",
            f"tcp://127.0.0.1:{echo}",
            "--accept-proxy",
            "-q",
        ],
    }
    sessions = {who: bench.start(*argv).pid for who, argv in argvs.items()}
    for port in (sink, echo, *ports.values()):
        bench.wait_tcp(port)
    ports["v1"] = ports["v2"] = ports.pop("accept")
    sessions["v1"] = sessions["v2"] = sessions.pop("accept")
    return Run(bench, client, sink, echo, ports, sessions)


def shown(leg: str, who: str, r: dict[str, float]) -> str:
    if leg == "connect":
        text = f"{who} {r['value']:.2f} ({r['cost']:.2f} s CPU/GiB"
    else:
        text = f"{who} {r['value'] / 1000:.2f}k ({r['cost']:.0f} µs CPU/conn"
        if r["errors"]:
            text += f", {r['errors']:.0f} ERRORS"
        if r["waited"] >= 1:
            text += f", after {r['waited']:.0f} s for TIME_WAIT ports"
    text += f", clients {r['busy'] * 100:.0f} % of a core)"
    if r["alone"] > CLIENT_BUSY:
        text += " CLIENT-BOUND?"
    return text


def run_rounds(
    run: Run, legs: list[str], args: argparse.Namespace
) -> dict[tuple[str, str], list[dict[str, float]]]:
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for rnd in range(args.rounds):
        for leg in legs:
            who_all = LEGS[leg].contenders
            order = who_all[rnd % len(who_all) :] + who_all[: rnd % len(who_all)]
            line = []
            for who in order:
                try:
                    r = run.measure(leg, who, args.mib, args.clients, args.conns)
                except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
                    line.append(f"{who} failed: {exc}")
                    continue
                r["round"] = rnd
                results.setdefault((leg, who), []).append(r)
                line.append(shown(leg, who, r))
            print(f"round {rnd + 1}: {LEGS[leg].title} ({LEGS[leg].unit}): " + ", ".join(line), flush=True)
    return results


def ratios(mine: list[dict[str, float]], others: list[list[dict[str, float]]]) -> float:
    """Median over rounds of mine / the best of the others in that round (nan without any)."""
    per_round = []
    for r in mine:
        theirs = [o["value"] for other in others for o in other if o["round"] == r["round"]]
        if theirs and max(theirs) > 0:
            per_round.append(r["value"] / max(theirs))
    return statistics.median(per_round) if per_round else float("nan")


def verdict(ratio: float, threshold: float) -> str:
    return f">= {threshold:g}x: {'met' if ratio >= threshold else 'NOT met'}"


def table(legs: list[str], results: dict[tuple[str, str], list[dict[str, float]]]) -> list[str]:
    def med(leg: str, who: str) -> str:
        rs = results.get((leg, who))
        if not rs:
            return f"{'—':>10}"
        value = statistics.median(r["value"] for r in rs)
        return f"{value:>10.2f}" if leg == "connect" else f"{value / 1000:>9.2f}k"

    lines = ["", "medians (ratios: medians of the per-round ratios, which the targets are judged on):"]
    for leg in legs:
        spec = LEGS[leg]
        label = f"{spec.title} ({spec.unit}):"
        lines.append(f"{label:<42}" + " ".join(f"{w:>10}" for w in spec.contenders))
        lines.append(f"{'':<42}" + " ".join(med(leg, w) for w in spec.contenders))
        if leg == "proxy":
            plain = [results.get((leg, "plain"), [])]
            for hdr in ("v1", "v2"):
                ratio = ratios(results.get((leg, hdr), []), plain)
                lines.append(
                    f"  --accept-proxy, {hdr} header ÷ without: {ratio:.3f}x  {verdict(ratio, 0.95)}"
                )
            continue
        threshold = 2.0 if leg == "connect" else 1.0
        for me in (w for w in spec.contenders if w.startswith("enchufe")):
            mine = results.get((leg, me), [])
            for other in ("microsocks", "dante"):
                lines.append(f"  {me} ÷ {other}: {ratios(mine, [results.get((leg, other), [])]):.2f}x")
            both = ratios(mine, [results.get((leg, o), []) for o in ("microsocks", "dante")])
            lines.append(
                f"  {me} ÷ the better of them (round by round): {both:.2f}x  {verdict(both, threshold)}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--mib", type=int, default=2048, help="MiB sent through each CONNECT (connect leg) [2048]"
    )
    parser.add_argument("--clients", type=int, default=4, help="client processes at once (conns, proxy legs)")
    parser.add_argument("--conns", type=int, default=1000, help="connections per client process")
    parser.add_argument("--only", default=",".join(LEGS), help=f"comma-separated subset of {list(LEGS)}")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="also measure `enchufe socks --workers N` (contender enchufe-wN) in the connect and conns legs",
    )
    parser.add_argument("--quick", action="store_true", help="one round of tiny sizes: checks that it runs")
    args = parser.parse_args()
    legs = [leg for leg in args.only.split(",") if leg]
    if unknown := set(legs) - set(LEGS):
        parser.error(f"unknown legs {sorted(unknown)}; choose from {list(LEGS)}")
    if not 0 <= args.workers <= 64:
        parser.error("--workers: 0 (not measured) to 64")
    if args.workers:
        for leg in ("connect", "conns"):
            spec = LEGS[leg]
            LEGS[leg] = Leg(spec.title, spec.unit, (*spec.contenders, f"enchufe-w{args.workers}"))
    if args.quick:
        args.rounds, args.mib, args.clients, args.conns = 1, 16, 2, 50
    if shutil.which("gcc") is None:
        raise SystemExit("gcc is needed on PATH")
    started = time.monotonic()
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}; "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
        f"sizes: {args.rounds} rounds; connect {args.mib} MiB; conns and proxy {args.clients} clients x "
        f"{args.conns} connections",
        flush=True,
    )
    warn_load(load[0], "at start")
    with tempfile.TemporaryDirectory(prefix="socks-bench-") as tmp:
        bench = Bench(Path(tmp), 0)
        try:
            run = start(bench, Path(tmp), args.workers)
            time.sleep(0.5)
            results = run_rounds(run, legs, args)
        finally:
            bench.stop_all()
    print("\n".join(table(legs, results)))
    report_end(started, args.quick, "leg")


if __name__ == "__main__":
    main()

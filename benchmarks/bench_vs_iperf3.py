#!/usr/bin/env python3
"""Loopback TCP throughput: `enchufe bench` next to iperf3, measured in the same run.

Usage (from the repository, with enchufe installed and iperf3 on PATH, e.g. `apt-get install iperf3`):

    python benchmarks/bench_vs_iperf3.py [--duration 5] [--rounds 3] [--parallel 4]

Each round runs, in alternating order so that neither always goes first:

    iperf3 -c 127.0.0.1 -p PORT -t D -O 1 -P 1 -J      (server: iperf3 -s -B 127.0.0.1 -p PORT)
    iperf3 -c 127.0.0.1 -p PORT -t D -O 1 -P N -J
    enchufe bench --kind tcp4 --mode throughput -P N --duration D --json

Both write 128 KiB per send() (iperf3's default for TCP, bench's default) from a client process
into a server process that reads and discards; both leave out a warm-up (iperf3 -O 1: one
second; bench: 0.25 s) and both count what the server received.  The figures printed are MB/s
with MB = 10^6 bytes (iperf3's bits_per_second / 8 / 10^6), and the ratio bench / iperf3 per
round and for the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def iperf3(port: int, duration: float, parallel: int) -> tuple[float, list[str]]:
    command = [
        "iperf3",
        "-c",
        "127.0.0.1",
        "-p",
        str(port),
        "-t",
        f"{duration:g}",
        "-O",
        "1",
        "-P",
        str(parallel),
        "-J",
    ]
    for _attempt in range(50):  # the server may still be starting
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            report = json.loads(done.stdout)
            return report["end"]["sum_received"]["bits_per_second"] / 8 / 1e6, command
        time.sleep(0.1)
    raise SystemExit(f"iperf3 failed: {done.stdout[-500:]} {done.stderr[-500:]}")


def enchufe(duration: float, parallel: int) -> tuple[dict[int, float], list[str]]:
    command = [
        "enchufe", "bench", "--kind", "tcp4", "--mode", "throughput",
        "-P", str(parallel), "--duration", f"{duration:g}", "--json",
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "enchufe", *command[1:]], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"enchufe bench failed: {done.stderr}")
    (target,) = json.loads(done.stdout)["targets"]
    return {t["connections"]: t["mb_per_s"] for t in target["throughput"]}, command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per test (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating the order (default 3)")
    parser.add_argument(
        "--parallel", type=int, default=4, help="connections of the parallel test (default 4)"
    )
    args = parser.parse_args()
    if shutil.which("iperf3") is None:
        raise SystemExit("iperf3 is not installed (Debian: apt-get install iperf3)")
    version = subprocess.run(
        ["iperf3", "--version"], capture_output=True, text=True, check=False
    ).stdout.split("\n")[0]
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {version}; load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    port = free_port()
    server = subprocess.Popen(
        ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    print(f"iperf3 server: iperf3 -s -B 127.0.0.1 -p {port}")
    results: dict[str, dict[int, list[float]]] = {
        "iperf3": {1: [], args.parallel: []},
        "bench": {1: [], args.parallel: []},
    }
    try:
        for round_ in range(1, args.rounds + 1):
            order = ["iperf3", "bench"] if round_ % 2 else ["bench", "iperf3"]
            for tool in order:
                if tool == "iperf3":
                    for conns in (1, args.parallel):
                        mb, command = iperf3(port, args.duration, conns)
                        results["iperf3"][conns].append(mb)
                        print(f"round {round_}: {' '.join(command)}  →  {mb:,.0f} MB/s")
                else:
                    figures, command = enchufe(args.duration, args.parallel)
                    for conns in (1, args.parallel):
                        results["bench"][conns].append(figures[conns])
                    shown = ", ".join(f"{c} conn: {figures[c]:,.0f} MB/s" for c in (1, args.parallel))
                    print(f"round {round_}: {' '.join(command)}  →  {shown}")
            ratios = ", ".join(
                f"{c} conn {results['bench'][c][-1] / results['iperf3'][c][-1]:.2f}"
                for c in (1, args.parallel)
            )
            print(f"round {round_}: bench / iperf3: {ratios}")
    finally:
        server.terminate()
        server.wait()
    print()
    print(f"medians of {args.rounds} rounds:")
    print(f"{'connections':>11}  {'iperf3 MB/s':>12}  {'bench MB/s':>11}  {'bench / iperf3':>14}")
    for conns in (1, args.parallel):
        ip = statistics.median(results["iperf3"][conns])
        be = statistics.median(results["bench"][conns])
        print(f"{conns:>11}  {ip:>12,.0f}  {be:>11,.0f}  {be / ip:>14.2f}")


if __name__ == "__main__":
    main()

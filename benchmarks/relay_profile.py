#!/usr/bin/env python3
"""What bounds the relay where it does not beat its targets: CPU and system calls, measured.

Usage (from the repository; gcc and socat on PATH, strace and perf used when installed):

    python benchmarks/relay_profile.py [--seconds 2]

For 1-byte ping-pong over TCP and over UDP, through socat and through enchufe (same C client and
echo server as relay_bench.py):

* CPU per round trip of the relay (its process and children, user + system, from
  /proc/PID/stat) — how much work a hop costs each relay;
* system calls per round trip (``strace -c -f`` on the relay, in a separate run since strace
  slows everything down) — whether the work is in the kernel's calls or between them;
* where enchufe's CPU goes (``perf record``): the kernel, the Python interpreter, libc.

For TCP→TCP throughput, CPU seconds per GB of each process — client, relay, sink — with and
without the relay: three busy processes share two cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from relay_bench import ENCHUFE, Bench, free_port

TICK = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    pids += tree(int(child))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def measured(
    bench: Bench, proc: subprocess.Popen[bytes], client: list[str]
) -> tuple[dict[str, float], float]:
    """Run the C client while sampling the relay's CPU: (client's figures, relay CPU seconds)."""
    runner = subprocess.Popen([str(bench.binary), *client], stdout=subprocess.PIPE, text=True)
    time.sleep(0.2)
    pids = tree(proc.pid)
    before = cpu_seconds(pids)
    out, _ = runner.communicate()
    after = cpu_seconds([p for p in tree(proc.pid) if p in pids] or pids)
    figures = {k: float(v) for k, v in (item.split("=") for item in out.split())}
    return figures, after - before


def syscalls_per(proc_pid: int, bench: Bench, client: list[str], count_key: str) -> str:
    if shutil.which("strace") is None:
        return "strace not installed"
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        tracer = subprocess.Popen(
            ["strace", "-c", "-f", "-o", out.name, "-p", str(proc_pid)], stderr=subprocess.DEVNULL
        )
        time.sleep(0.5)
        figures = bench.client(*client)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(10)
        text = out.read()
    count = figures[count_key]
    calls = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1].isidentifier() and parts[-1] != "total" and parts[3].isdigit():
            name, n = parts[-1], int(parts[3])
            errors = int(parts[4]) if len(parts) == 6 else 0
            if n / count >= 0.05:
                calls.append(
                    f"{name} {n / count:.2f}" + (f" ({errors / count:.2f} failing)" if errors else "")
                )
    return ", ".join(calls) + f"  [{int(count)} round trips under strace]"


def perf_split(pid: int, bench: Bench, client: list[str]) -> str:
    if shutil.which("perf") is None:
        return "perf not installed"
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        rec = subprocess.Popen(
            ["perf", "record", "-F", "4000", "-p", str(pid), "-o", data, "--", "sleep", "1.5"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.1)
        bench.client(*client)
        rec.wait(20)
        report = subprocess.run(
            ["perf", "report", "-i", data, "--sort", "dso", "--stdio"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    shares = re.findall(r"^\s+([\d.]+)%\s+(\S+)", report, re.M)
    if not shares:
        return "perf could not sample here"
    return ", ".join(f"{name} {float(pct):.0f} %" for pct, name in shares[:4])


def pingpong(bench: Bench, kind: str, seconds: float) -> list[str]:
    udp = kind == "udp"
    sock_type = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    echo_port = free_port(sock_type)
    bench.start(str(bench.binary), "uecho" if udp else "echo", str(echo_port))
    (bench.wait_udp if udp else bench.wait_tcp)(echo_port)
    scheme, socat_scheme, client = ("udp4", "UDP4", "uping") if udp else ("tcp4", "TCP4", "ping")
    lines = [f"{kind.upper()} 1-byte ping-pong, {seconds:g} s per run:"]
    for name in ("socat", "enchufe"):
        port = free_port(sock_type)
        if name == "socat":
            proc = bench.start(
                "socat", f"{socat_scheme}-LISTEN:{port},fork", f"{socat_scheme}:127.0.0.1:{echo_port}"
            )
        else:
            proc = bench.start(
                *ENCHUFE, "relay", f"{scheme}://127.0.0.1:{port}", f"{scheme}://127.0.0.1:{echo_port}", "-q"
            )
        (bench.wait_udp if udp else bench.wait_tcp)(port)
        bench.client(client, str(port), "0.3")  # warm up (socat forks its UDP child here)
        figures, cpu = measured(bench, proc, [client, str(port), f"{seconds:g}"])
        rts = figures["count"]
        line = (
            f"  {name:8} {figures['rtps']:>8.0f} round trips/s, p50 {figures['p50_us']:.0f} µs; "
            f"relay CPU {cpu / rts * 1e6:.1f} µs per round trip"
        )
        lines.append(line)
        # strace -f on the parent also follows the child socat forks for the new client
        calls = syscalls_per(proc.pid, bench, [client, str(port), "1"], "count")
        lines.append(f"           system calls per round trip: {calls}")
        if name == "enchufe":
            split = perf_split(proc.pid, bench, [client, str(port), "1"])
            lines.append(f"           enchufe's CPU by where it runs (perf): {split}")
    return lines


def throughput(bench: Bench, seconds: float) -> list[str]:
    sink_port = free_port()
    sink = bench.start(str(bench.binary), "sink", str(sink_port))
    bench.wait_tcp(sink_port)
    relay_port = free_port()
    relay = bench.start(
        *ENCHUFE, "relay", f"tcp4://127.0.0.1:{relay_port}", f"tcp4://127.0.0.1:{sink_port}", "-q"
    )
    bench.wait_tcp(relay_port)
    lines = [f"TCP→TCP throughput, {seconds:g} s, CPU seconds per GB moved:"]
    for name, port in (("kernel", sink_port), ("enchufe", relay_port)):
        source = subprocess.Popen(
            [str(bench.binary), "source", str(port), f"{seconds:g}"], stdout=subprocess.PIPE, text=True
        )
        time.sleep(0.05)
        pids = {"client": [source.pid], "relay": tree(relay.pid), "sink": [sink.pid]}
        before = {k: cpu_seconds(v) for k, v in pids.items()}
        # the client's CPU must be read before it exits: sample just before the end
        time.sleep(max(0.0, seconds - 0.15))
        client_cpu = cpu_seconds(pids["client"]) - before["client"]
        out, _ = source.communicate()
        figures = {k: float(v) for k, v in (item.split("=") for item in out.split())}
        gb = figures["bytes"] / 1e9
        relay_cpu = cpu_seconds(pids["relay"]) - before["relay"] if name == "enchufe" else 0.0
        sink_cpu = cpu_seconds(pids["sink"]) - before["sink"]
        scale = figures["seconds"] / max(seconds - 0.2, 0.1)  # the client was sampled early
        lines.append(
            f"  {name:8} {figures['gbps']:.1f} Gbit/s: client {client_cpu * scale / gb:.2f} s/GB, "
            f"relay {relay_cpu / gb:.2f} s/GB, sink {sink_cpu / gb:.2f} s/GB; "
            f"total {(client_cpu * scale + relay_cpu + sink_cpu) / figures['seconds']:.2f} of 2 cores busy"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="relay-profile-") as tmp:
        bench = Bench(Path(tmp), args.seconds)
        bench.compile()
        try:
            for lines in (pingpong(bench, "tcp", args.seconds), pingpong(bench, "udp", args.seconds)):
                print("\n".join(lines), flush=True)
            print("\n".join(throughput(bench, args.seconds)), flush=True)
        finally:
            bench.stop_all()


if __name__ == "__main__":
    main()

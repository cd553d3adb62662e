"""The relay as a TLS client of its target (origination) beside socat, in one run: connections/s.

Usage (from the repository, with enchufe installed; gcc, socat built with OpenSSL, and trustme):

    python3 benchmarks/tls_origination.py [--rounds 3] [--clients 2] [--conns 500]
    python3 benchmarks/tls_origination.py --quick     # one tiny round: checks that it runs

A plain TCP client connects to the gateway, which opens a TLS connection to the target for it:
``enchufe relay tcp://127.0.0.1:P 'tls://127.0.0.1:T?ca=CA' -q`` and ``socat
TCP-LISTEN:P,bind=127.0.0.1,reuseaddr,fork OPENSSL:127.0.0.1:T,cafile=CA,nodelay``.  The target
is the same for both: ``enchufe echo 'tls://127.0.0.1:T?cert=CERT' -q`` (a trustme CA, ECDSA
P-256).  The client is ``socks_bench.c pconns P none N`` (connect, one byte out and back,
close), ``--clients`` of them at once for ``--conns`` connections each.

enchufe's relay offers its target the session of the last connection to it (a resumed TLS 1.3
handshake: no certificate chain to verify); socat makes a full handshake per connection, in a
forked child.  Beside each rate: the gateway's CPU time (utime+stime of its process, reaped
children included) per connection.  Each round runs both, in an order that rotates; the ratio
is the median of the per-round ratios.  The load average is printed at the start and the end,
with a warning above 0.5: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import trustme
from relay_bench import ENCHUFE, Bench, free_port, parse_pairs, report_end, warn_load

HERE = Path(__file__).resolve().parent


def gateway_cpu(pid: int) -> float:
    """utime+stime of ``pid`` and of its reaped children, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(fields[n - 3]) for n in (14, 15, 16, 17)) / os.sysconf("SC_CLK_TCK")


def measure(
    client: Path, gateway: subprocess.Popen[bytes], port: int, clients: int, conns: int
) -> dict[str, float]:
    subprocess.run([str(client), "pconns", str(port), "none", "20"], capture_output=True, check=True)
    time.sleep(0.2)  # socat reaps the warm-up's children
    before = gateway_cpu(gateway.pid)
    procs = [
        subprocess.Popen(
            [str(client), "pconns", str(port), "none", str(conns)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(clients)
    ]
    results = [parse_pairs(proc.communicate(timeout=300)[0].strip().splitlines()[-1]) for proc in procs]
    time.sleep(0.3)
    count = sum(r["count"] for r in results)
    if sum(r["errors"] for r in results):
        raise RuntimeError(f"connections failed: {results}")
    seconds = max(r["seconds"] for r in results)
    return {"rate": count / seconds, "cpu": (gateway_cpu(gateway.pid) - before) / count * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--conns", type=int, default=500, help="connections per client")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.conns = 1, 20
    started = time.monotonic()
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    warn_load(load[0], "at the start")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        ca = trustme.CA()
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(work / "server.pem"))
        ca.cert_pem.write_to_path(str(work / "ca.pem"))
        client = work / "socks_bench"
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(client), str(HERE / "socks_bench.c")], check=True)
        bench = Bench(work, 0)
        try:
            target = free_port()
            bench.start(*ENCHUFE, "echo", f"tls://127.0.0.1:{target}?cert={work / 'server.pem'}", "-q")
            ports = {"enchufe": free_port(), "socat": free_port()}
            gateways = {
                "enchufe": bench.start(
                    *ENCHUFE,
                    "relay",
                    f"tcp://127.0.0.1:{ports['enchufe']}",
                    f"tls://127.0.0.1:{target}?ca={work / 'ca.pem'}",
                    "-q",
                ),
                "socat": bench.start(
                    "socat",
                    f"TCP-LISTEN:{ports['socat']},bind=127.0.0.1,reuseaddr,fork",
                    f"OPENSSL:127.0.0.1:{target},cafile={work / 'ca.pem'},nodelay",
                ),
            }
            for port in (target, *ports.values()):
                Bench.wait_tcp(port)
            rounds: list[dict[str, dict[str, float]]] = []
            for n in range(args.rounds):
                order = ("enchufe", "socat") if n % 2 == 0 else ("socat", "enchufe")
                got = {
                    who: measure(client, gateways[who], ports[who], args.clients, args.conns) for who in order
                }
                rounds.append(got)
                print(
                    f"round {n + 1}: "
                    + ", ".join(
                        f"{who} {got[who]['rate']:,.0f} conn/s ({got[who]['cpu']:,.0f} µs CPU/conn)"
                        for who in order
                    ),
                    flush=True,
                )
        finally:
            bench.stop_all()
    ours = statistics.median(r["enchufe"]["rate"] for r in rounds)
    theirs = statistics.median(r["socat"]["rate"] for r in rounds)
    ratio = statistics.median(r["enchufe"]["rate"] / r["socat"]["rate"] for r in rounds)
    print(f"\nTLS origination, conn/s: enchufe relay {ours:,.0f}, socat {theirs:,.0f}; ratio {ratio:.2f}x")
    report_end(started, args.quick, "conn/s")


if __name__ == "__main__":
    main()

"""The relay as a TLS gateway beside socat and stunnel: the TLS legs of ``relay_bench.py``.

    python3 benchmarks/relay_bench.py --only tlsterm,tlsterm-unix,tlshs,tlsping,passthrough,tlsidle

Contenders, started once and kept for the whole run, all on 127.0.0.1 with the same certificate
(a trustme CA and an ECDSA P-256 server certificate, in a temporary folder):

* socat: ``socat OPENSSL-LISTEN:PORT,bind=127.0.0.1,reuseaddr,fork,cert=CERT,verify=0 TARGET``
  (default options plus ``fork``, as people run it: a process per connection);
* stunnel: ``stunnel4 CONF``, one service per target, with ``foreground = yes``, ``pid =`` (no
  pid file) and ``cert = CERT``, everything else at its defaults (a thread per connection);
* enchufe: ``enchufe relay 'tls://127.0.0.1:PORT?cert=CERT' TARGET -q`` (default options).

The targets are relay_bench.c's servers (the sink on TCP and on a unix socket, the echo server),
the clients ``relay_bench_tls_peer.py`` in their own processes: Python's ssl (OpenSSL), TLS 1.3
required, the server verified against the CA; the same client for all three.  Each round runs
every leg through every contender, in a rotating order; the table gives medians, and ratios that
are medians of the per-round ratios (the contenders of a round ran back to back).

Legs:

* ``tlsterm``: TLS→TCP termination throughput: ``--tls-mib`` MiB in 256 KiB writes, then
  close_notify; the clock (started after the handshake) stops when the relay's close comes back,
  which it sends after the sink closed (every byte delivered).  Gbit/s.
* ``tlsterm-unix``: the same to the sink on a unix socket.
* ``tlshs``: new handshakes per second: ``--tls-clients`` processes, each ``--tls-handshakes``
  times: connect, a full handshake (no resumption), close_notify, and the gateway's close_notify
  back (it passed the EOF on to the target and the target's close back: the whole path, no data,
  see relay_bench_tls_peer.py).  All handshakes / (last end - first start); and the gateway's
  CPU time (utime+stime, /proc/PID/stat, socat's reaped children included) per handshake.
* ``tlsping``: 1-byte ping-pong through termination, ``--tls-pings`` round trips: round trips/s.
* ``passthrough``: SNI passthrough: ``enchufe relay tcp://… - --route localhost=TARGET``
  beside the plain relay (``enchufe relay tcp://… TARGET``) and the client straight to the target
  ("direct"), TARGET a TLS sink (``relay_bench_tls_peer.py sink``); the ``tlsterm`` client.
  Skipped, with a line saying so, while ``enchufe relay`` has no ``--route``.
* ``tlsidle``: ``--tls-idle`` terminated TLS connections opened from this process (each
  handshake finished and one byte echoed), then held: the relay's VmRSS (/proc/PID/status)
  before and after, per connection; a ping through every one at the end.  enchufe, and stunnel
  for comparison (socat would be a process per connection).

The header says whether kTLS is there (enchufe's ``ktls_status()``, as ``--stats`` says it: the
kernel's ``tcp_available_ulp`` must list ``tls`` and Python's ssl must be able to ask OpenSSL for
it, ``ssl.OP_ENABLE_KTLS``, Python 3.12+).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import resource
import shutil
import ssl
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from relay_bench import ENCHUFE, Bench, free_port, median_of, round_ratios, rss_kib
from relay_bench_tls_peer import bounce, client_context, connect
from tls_bench import Certs, key_description, make_certs

from enchufe.relay.tlsfiles import ktls_status

HERE = Path(__file__).resolve().parent
PEER = (sys.executable, str(HERE / "relay_bench_tls_peer.py"))
TLS_MEASURES = ("tlsterm", "tlsterm-unix", "tlshs", "tlsping", "passthrough", "tlsidle")
TARGET_IDLE_KIB = 64
#: No client process may run longer than this (seconds); the idle leg stops opening after it.
STEP_TIMEOUT = 180.0


@dataclass(frozen=True)
class Leg:
    title: str
    unit: str
    target: str  # the server behind the contenders: "tcp", "unix", "echo" or "tls"
    others: tuple[str, str]
    mine: str = "enchufe"
    #: The issue's targets: (other contender, minimum ratio mine / other).
    targets: tuple[tuple[str, float], ...] = ()


GATEWAYS = ("socat", "stunnel")
TERMINATION = (("socat", 1.5), ("stunnel", 1.0))
LEGS = {
    "tlsterm": Leg("TLS→TCP termination", "Gbit/s", "tcp", GATEWAYS, targets=TERMINATION),
    "tlsterm-unix": Leg("TLS→unix termination", "Gbit/s", "unix", GATEWAYS, targets=TERMINATION),
    "tlshs": Leg(
        "new TLS handshakes", "handshakes/s", "echo", GATEWAYS, targets=(("socat", 2.0), ("stunnel", 1.0))
    ),
    "tlsping": Leg("TLS 1-byte ping-pong", "round trips/s", "echo", GATEWAYS, targets=(("socat", 1.1),)),
    "passthrough": Leg(
        "SNI passthrough (TLS bytes)", "Gbit/s", "tls", ("direct", "relay"), "passthrough", (("relay", 0.9),)
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS legs")
    group.add_argument("--tls-mib", type=int, default=1024, help="MiB per throughput run [1024]")
    group.add_argument("--tls-clients", type=int, default=4, help="handshake client processes at once [4]")
    group.add_argument("--tls-handshakes", type=int, default=250, help="handshakes per client process [250]")
    group.add_argument("--tls-pings", type=int, default=5000, help="round trips per ping-pong run [5000]")
    group.add_argument("--tls-idle", type=int, default=5000, help="idle terminated TLS connections [5000]")


def quick(args: argparse.Namespace) -> None:
    args.tls_mib, args.tls_clients, args.tls_handshakes, args.tls_pings, args.tls_idle = 8, 2, 20, 200, 100


# ----------------------------------------------------------------------------- the contenders


def check_tools() -> None:
    """What the TLS legs need beside relay_bench's gcc and socat: one line naming what is missing."""
    if shutil.which("stunnel4") is None:
        raise SystemExit("the TLS legs need stunnel4 on PATH (apt-get install stunnel4)")
    version = subprocess.run(["socat", "-V"], capture_output=True, text=True, check=False).stdout
    if "WITH_OPENSSL 1" not in version:
        raise SystemExit("the TLS legs need a socat built with OpenSSL (socat -V has no WITH_OPENSSL 1)")
    if importlib.util.find_spec("trustme") is None:
        raise SystemExit("the TLS legs need trustme for their certificates (python3 -m pip install trustme)")


def has_route() -> bool:
    done = subprocess.run([*ENCHUFE, "relay", "--help"], capture_output=True, text=True, check=False)
    return "--route" in done.stdout


def stunnel_version() -> str:
    done = subprocess.run(["stunnel4", "-version"], capture_output=True, text=True, check=False)
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.startswith("stunnel ")]
    return lines[0].split(" on ")[0] if lines else "stunnel (version unknown)"


def start_targets(bench: Bench, legs: list[str], certs: Certs) -> dict[str, tuple[str, int]]:
    """The servers behind the contenders: target → (its address: a port or a unix path, its pid)."""
    wanted = {LEGS[leg].target for leg in legs}
    binary, unix = str(bench.binary), str(bench.workdir / "tls-sink.sock")
    tcp, echo, tls = (str(free_port()) for _ in range(3))
    commands = {
        "tcp": (tcp, (binary, "sink", tcp)),
        "unix": (unix, (binary, "sink", unix)),
        "echo": (echo, (binary, "echo", echo)),
        "tls": (tls, (*PEER, "sink", tls, str(certs.server))),
    }
    targets: dict[str, tuple[str, int]] = {}
    for target in sorted(wanted):
        address, command = commands[target]
        targets[target] = (address, bench.start(*command).pid)
    for address, _ in targets.values():
        if address.startswith("/"):
            bench.wait_path(address)
        else:
            bench.wait_tcp(int(address))
    return targets


def plain(address: str) -> str:
    return f"unix://{address}" if address.startswith("/") else f"tcp4://127.0.0.1:{address}"


#: contender → target → (the port its clients use, the pid of the process that serves it)
Gateways = dict[str, dict[str, tuple[int, int]]]
#: (leg, contender) → the figures of each round
Results = dict[tuple[str, str], list[dict[str, float]]]


def start_gateways(
    bench: Bench, certs: Certs, targets: dict[str, tuple[str, int]]
) -> tuple[Gateways, list[str]]:
    """socat, stunnel and enchufe terminating TLS in front of each plain target, and the plain and
    passthrough relays in front of the TLS sink; and the lines saying which could not start (only
    the passthrough relay may fail: it is left out)."""
    gateways: Gateways = {"socat": {}, "stunnel": {}, "enchufe": {}}
    passthrough = 0  # its pid
    stunnel: dict[str, tuple[int, str]] = {}
    for target, (address, _) in targets.items():
        if target == "tls":
            continue
        socat_to = f"UNIX-CONNECT:{address}" if address.startswith("/") else f"TCP4:127.0.0.1:{address}"
        port = free_port()
        socat = bench.start(
            "socat",
            f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={certs.server},verify=0",
            socat_to,
        )
        gateways["socat"][target] = (port, socat.pid)
        stunnel[target] = (free_port(), address)
        port = free_port()
        relay = bench.start(
            *ENCHUFE, "relay", f"tls://127.0.0.1:{port}?cert={certs.server}", plain(address), "-q"
        )
        gateways["enchufe"][target] = (port, relay.pid)
    if stunnel:
        pid = bench.start("stunnel4", str(stunnel_conf(bench.workdir, certs, stunnel))).pid
        gateways["stunnel"] = {target: (port, pid) for target, (port, _) in stunnel.items()}
    if "tls" in targets:
        gateways["direct"] = {"tls": (int(targets["tls"][0]), targets["tls"][1])}
        sink = plain(targets["tls"][0])
        port = free_port()
        gateways["relay"] = {
            "tls": (port, bench.start(*ENCHUFE, "relay", f"tcp4://127.0.0.1:{port}", sink, "-q").pid)
        }
        port = free_port()
        route = ("-", "--route", f"localhost={sink}")
        with (bench.workdir / "passthrough.err").open("wb") as stderr:
            relay = bench.start(*ENCHUFE, "relay", f"tcp4://127.0.0.1:{port}", *route, "-q", stderr=stderr)
        gateways["passthrough"] = {"tls": (port, relay.pid)}
        passthrough = relay.pid
    notes = []
    for who, by_target in list(gateways.items()):
        for port, _ in by_target.values():
            try:
                bench.wait_tcp(port)
            except RuntimeError as exc:
                if who != "passthrough":
                    raise
                notes.append(f"passthrough: skipped: the relay with --route did not start ({exc})")
                del gateways[who]
    time.sleep(0.5)
    return gateways, notes + exited(bench, gateways, passthrough)


def exited(bench: Bench, gateways: Gateways, passthrough: int) -> list[str]:
    """Every server must still run (one that could not bind its port exits, while its clients may
    reach another server): raises if one has exited, except the passthrough relay (process
    ``passthrough``), which is left out with a line saying so."""
    notes = []
    for proc in bench.procs:
        if proc.poll() is None:
            continue
        if proc.pid != passthrough:
            raise RuntimeError(f"{proc.args!r} exited with status {proc.returncode}")
        if gateways.pop("passthrough", None):
            notes.append(f"passthrough: skipped: the relay with --route exited with status {proc.returncode}")
    return notes


# ----------------------------------------------------------------------------- one measure


def peer(*args: str, timeout: float = STEP_TIMEOUT) -> dict[str, str]:
    done = subprocess.run([*PEER, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"client {args[0]}: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return dict(item.split("=", 1) for item in done.stdout.split())


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid``, its threads and its children it waited for (socat's forks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(tick) for tick in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def handshake_rate(port: int, pid: int, certs: Certs, clients: int, count: int) -> dict[str, float]:
    """``clients`` processes of ``count`` handshakes each, told to start at the same moment;
    with the CPU time the gateway (process ``pid``) spent per handshake."""
    cpu = cpu_seconds(pid)
    at = time.monotonic() + 0.5
    args = [*PEER, "handshakes", str(port), str(certs.ca), str(count), f"{at:.6f}"]
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(clients)
    ]
    outputs = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
                other.wait()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"handshake client: {err.strip().splitlines()[-1:] or proc.returncode}")
        outputs.append(dict(item.split("=", 1) for item in out.split()))
    time.sleep(0.2)  # socat's last children reaped (their CPU time counted)
    cpu = cpu_seconds(pid) - cpu
    done = sum(int(o["count"]) for o in outputs)
    span = max(float(o["last"]) for o in outputs) - min(float(o["first"]) for o in outputs)
    return {
        "value": done / span,
        "cpu_us": cpu / max(done, 1) * 1e6,
        "errors": sum(int(o["errors"]) for o in outputs),
        "unclean": sum(int(o["unclean"]) for o in outputs),
    }


def measure_once(
    leg: str, gateway: tuple[int, int], certs: Certs, args: argparse.Namespace
) -> tuple[dict[str, float], str]:
    """(figures, the words shown after the figure in the round's line)."""
    ca, port = str(certs.ca), str(gateway[0])
    if leg == "tlshs":
        result = handshake_rate(gateway[0], gateway[1], certs, args.tls_clients, args.tls_handshakes)
        words = f" ({result['cpu_us']:.0f} µs CPU each"
        words += f", {result['errors']:.0f} failed" if result["errors"] else ""
        words += f", {result['unclean']:.0f} closed without close_notify" if result["unclean"] else ""
        return result, words + ")"
    if leg == "tlsping":
        out = peer("ping", port, ca, str(args.tls_pings))
        return {"value": float(out["rtps"])}, f" (p50 {float(out['p50_us']):.0f} µs)"
    out = peer("send", port, ca, str(args.tls_mib))
    shown = f" ({out['version']} {out['cipher']}"
    shown += ")" if out["end"] == "close_notify" else f"; closed without close_notify: {out['end']})"
    return {"value": float(out["gbps"])}, shown


def fmt(unit: str, value: float) -> str:
    return f"{value:.2f}" if unit == "Gbit/s" else f"{value:,.0f}"


# ----------------------------------------------------------------------------- rounds and table


def run_rounds(legs: list[str], gateways: Gateways, certs: Certs, args: argparse.Namespace) -> Results:
    results: Results = {}
    for rnd in range(args.rounds):
        for leg in legs:
            spec = LEGS[leg]
            contenders = [*spec.others, spec.mine]
            order = contenders[rnd % 3 :] + contenders[: rnd % 3]
            shown = []
            for who in order:
                try:
                    result, words = measure_once(leg, gateways[who][spec.target], certs, args)
                except (RuntimeError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as exc:
                    shown.append(f"{who} failed: {exc}")
                    continue
                result["round"] = rnd
                results.setdefault((leg, who), []).append(result)
                shown.append(f"{who} {fmt(spec.unit, result['value'])}{words}")
            print(f"round {rnd + 1}: {spec.title} ({spec.unit}): " + ", ".join(shown), flush=True)
    return results


def row(
    title: str, unit: str, spec: Leg, results: Results, leg: str, key: str = "value"
) -> tuple[str, dict[str, float]]:
    """One line of the table (medians of ``key``, and the median per-round ratios mine / other),
    and those ratios."""
    columns = (*spec.others, spec.mine)
    runs = {
        who: [{"value": r[key], "round": r["round"]} for r in results[(leg, who)]]
        for who in columns
        if (leg, who) in results
    }
    mine = runs.get(spec.mine, [])
    ratios = {
        who: statistics.median(r) if (r := round_ratios(mine, runs.get(who, []))) else float("nan")
        for who in spec.others
    }
    cells = " ".join(f"{fmt(unit, median_of(runs[w], 'value')) if w in runs else '—':>11}" for w in columns)
    ratio_cells = " ".join(f"{ratios[w]:>9.2f}x" for w in spec.others)
    return f"{title:<28} {unit:<14} {cells} {ratio_cells}  ", ratios


def table(legs: list[str], results: Results) -> list[str]:
    if not results:
        return []
    rounds = max(len(v) for v in results.values())
    lines = ["", f"TLS legs, medians of {rounds} rounds (ratios: medians of the per-round ratios):"]
    header = None
    for leg in legs:
        spec = LEGS[leg]
        columns = (*spec.others, spec.mine)
        if columns != header:
            header = columns
            lines.append(
                f"{'measure':<28} {'unit':<14} "
                + " ".join(f"{who:>11}" for who in columns)
                + " "
                + " ".join(f"{'÷ ' + who:>10}" for who in spec.others)
                + "  target"
            )
        line, ratios = row(spec.title, spec.unit, spec, results, leg)
        verdicts = [
            f">= {threshold:g}x {against}: {'met' if ratios[against] >= threshold else 'NOT met'}"
            for against, threshold in spec.targets
        ]
        lines.append(line + "; ".join(verdicts))
        if leg == "tlshs":
            line, _ = row("  gateway CPU per handshake", "µs", spec, results, leg, "cpu_us")
            lines.append(line + "lower is better (utime+stime from /proc)")
    return lines


# ----------------------------------------------------------------------------- idle connections


def hold(port: int, certs: Certs, count: int, pid: int) -> tuple[str, float]:
    """``count`` TLS connections through the gateway on ``port`` (process ``pid``), each pinged,
    held idle, then pinged again: (what was seen, KiB of the gateway's RSS per connection)."""
    context = client_context(str(certs.ca))
    held: list[ssl.SSLSocket] = []
    stopped = ""
    try:
        time.sleep(0.3)
        base = rss_kib(pid)
        started = time.monotonic()
        while len(held) < count and time.monotonic() - started < STEP_TIMEOUT:
            try:
                held.append(connect(port, context))
                bounce(held[-1], b"p")
            except OSError as exc:
                stopped = f"; opening stopped at {len(held)}: {exc}"
                break
        opened = time.monotonic() - started
        time.sleep(0.5)
        rss = rss_kib(pid)
        last = 0
        for conn in held:
            with contextlib.suppress(OSError):
                bounce(conn, b"q")
                last += 1
    finally:
        for conn in held:
            with contextlib.suppress(OSError):
                conn.close()
    each = (rss - base) / max(len(held), 1)
    return (
        f"{len(held)} held (opened and pinged in {opened:.1f} s{stopped}); RSS {base / 1024:.1f} MiB → "
        f"{rss / 1024:.1f} MiB: {each:.1f} KiB per connection; a ping through every one at the end: "
        f"{last}/{len(held)}"
    ), each


def stunnel_conf(folder: Path, certs: Certs, services: dict[str, tuple[int, str]]) -> Path:
    """A stunnel configuration: a service NAME → (port it accepts on, address it connects to)."""
    lines = ["foreground = yes", "pid ="]
    for name, (port, address) in services.items():
        connect_to = address if address.startswith("/") else f"127.0.0.1:{address}"
        lines += [
            f"[{name}]",
            f"accept = 127.0.0.1:{port}",
            f"connect = {connect_to}",
            f"cert = {certs.server}",
        ]
    conf = folder / f"stunnel-{'-'.join(services)}.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def idle(bench: Bench, certs: Certs, count: int) -> list[str]:
    """RSS per idle terminated TLS connection: enchufe (the target ≤ 64 KiB), then stunnel."""
    echo = str(free_port())
    bench.start(str(bench.binary), "echo", echo)
    bench.wait_tcp(int(echo))
    port = free_port()
    relay = bench.start(*ENCHUFE, "relay", f"tls://127.0.0.1:{port}?cert={certs.server}", plain(echo), "-q")
    bench.wait_tcp(port)
    seen, each = hold(port, certs, count, relay.pid)
    verdict = "met" if each <= TARGET_IDLE_KIB else "NOT met"
    lines = ["", f"tlsidle, enchufe relay (one process): {seen}; target ≤ {TARGET_IDLE_KIB} KiB: {verdict}"]
    relay.terminate()
    port = free_port()
    stunnel = bench.start("stunnel4", str(stunnel_conf(bench.workdir, certs, {"idle": (port, echo)})))
    bench.wait_tcp(port)
    lines.append(f"tlsidle, stunnel (a thread each): {hold(port, certs, count, stunnel.pid)[0]}")
    stunnel.terminate()
    return lines


# ----------------------------------------------------------------------------- the legs


def run(bench: Bench, args: argparse.Namespace, legs: list[str]) -> list[str]:
    """Every TLS leg in ``legs`` (names from TLS_MEASURES): the lines of the report."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    certs = make_certs(bench.workdir)
    print(
        f"TLS legs: {key_description(certs)} certificate (trustme CA), TLS 1.3; client {ssl.OPENSSL_VERSION} "
        f"(Python's ssl); {stunnel_version()}; kTLS: {ktls_status()}; descriptors {soft} → {hard}; "
        f"{args.tls_mib} MiB a transfer, {args.tls_clients} clients of {args.tls_handshakes} handshakes, "
        f"{args.tls_pings} round trips, {args.tls_idle} idle connections",
        flush=True,
    )
    notes = []
    if "passthrough" in legs and not has_route():
        legs = [leg for leg in legs if leg != "passthrough"]
        notes.append("passthrough: skipped: this `enchufe relay` has no --route yet (SNI passthrough)")
        print(notes[-1], flush=True)
    compared = [leg for leg in legs if leg in LEGS]
    lines: list[str] = []
    if compared:
        gateways, failed = start_gateways(bench, certs, start_targets(bench, compared, certs))
        for note in failed:
            print(note, flush=True)
        notes += failed
        compared = [leg for leg in compared if LEGS[leg].mine in gateways]
        lines = table(compared, run_rounds(compared, gateways, certs, args))
        said = bench.workdir / "passthrough.err"
        if said.exists() and said.stat().st_size:
            tail = said.read_text(errors="replace").strip().splitlines()[-5:]
            notes.append(
                "the passthrough relay's last lines on stderr (-q: errors only): " + " | ".join(tail)
            )
    if "tlsidle" in legs:
        lines += idle(bench, certs, args.tls_idle)
    return lines + notes

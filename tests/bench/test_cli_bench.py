"""`enchufe bench` end to end: JSON schema and consistency, table, plot, compare, bad arguments.

Runs the command as a user does (``python -m enchufe``), against bench's own servers (no
address) or the fixture servers of :mod:`enchufe.testing` (addresses).  Figures are checked for
structure and consistency, never for speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from enchufe.address import SocketAddress
from enchufe.cli import main
from tests.conftest import HAS_IPV6, needs_ipv6

ENCHUFE = (sys.executable, "-m", "enchufe")
#: Very short tests: these check structure, not speed.
QUICK = ("--duration", "0.05", "--count", "30", "-P", "2")
#: What an echo server in this process must fill with echoes: 50 ms can pass with none coming
#: back while the suite loads the machine (a CI run once measured 0 bytes in such a window).
ECHO_WINDOW = ("--duration", "0.5")
#: No run here may take longer (the default run of the six kinds takes a few seconds).
TIMEOUT = 60.0


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ENCHUFE, "bench", *args], capture_output=True, text=True, timeout=TIMEOUT, env=env, check=False
    )


def bench_json(*args: str) -> dict[str, Any]:
    done = bench(*args, "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    document: dict[str, Any] = json.loads(done.stdout)
    check_schema(document)
    return document


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("enchufe: ") and "Traceback" not in stderr
    return lines[0]


# ---------------------------------------------------------------------------- the schema


def check_schema(doc: dict[str, Any]) -> None:
    assert doc["schema"] == "enchufe-bench/1"
    assert doc["elapsed_s"] > 0
    machine = doc["machine"]
    assert machine["cores"] >= 1 and machine["usable_cores"] >= 1
    assert machine["kernel"] and machine["python"] and machine["system"] and machine["loop"]
    settings = doc["settings"]
    assert settings["duration_s"] > 0 and settings["warmup_s"] >= 0 and settings["count"] >= 1
    assert doc["arrangement"]["server"] and doc["arrangement"]["client"]
    assert doc["targets"]
    for target in doc["targets"]:
        check_target(target, settings)


def check_target(target: dict[str, Any], settings: dict[str, Any]) -> None:
    assert set(target) >= {"name", "address", "kind", "stream", "server", "throughput", "latency", "connect"}
    assert target["errors"] == []
    if target["skipped"]:
        return
    for t in target["throughput"]:
        assert target["stream"]
        assert t["bytes"] > 0 and t["mb_per_s"] > 0 and t["seconds"] > 0
        assert t["method"] in ("sink", "echo")
        assert abs(t["mb_per_s"] - t["bytes"] / t["seconds"] / 1e6) <= 0.01 + t["mb_per_s"] * 1e-3
    if target["latency"] is not None:
        lat = target["latency"]
        assert lat["samples"] + lat["lost"] == lat["round_trips"] == settings["count"]
        assert 0 < lat["min_us"] <= lat["p50_us"] <= lat["p90_us"] <= lat["p99_us"] <= lat["max_us"]
    if target["connect"] is not None:
        assert target["stream"]
        assert target["connect"]["connections"] > 0 and target["connect"]["per_s"] > 0
    for d in target["datagram"]:
        assert not target["stream"]
        assert 0 < d["received"] <= d["sent"]
        assert d["received_per_s"] <= d["sent_per_s"]
        assert 0 <= d["loss"] < 1
        assert d["method"] in ("sink", "echo")


# ---------------------------------------------------------------------------- no address: all six kinds


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, Path]:
    """One run of every kind and measure on loopback, with --json and --plot (if matplotlib)."""
    folder = tmp_path_factory.mktemp("bench")
    png = folder / "bench.png"
    args = [*QUICK, "--json"]
    if _have_matplotlib():
        args += ["--plot", str(png)]
    done = bench(*args)
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    saved = folder / "earlier.json"
    saved.write_text(done.stdout)
    return doc, saved, png


def _have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def test_default_run_measures_every_kind_against_its_own_servers(
    default_run: tuple[dict[str, Any], Path, Path],
) -> None:
    doc = default_run[0]
    check_schema(doc)
    by_name = {t["name"]: t for t in doc["targets"]}
    assert list(by_name) == ["tcp4", "tcp6", "udp4", "udp6", "unix", "unixgram"]
    assert "separate process" in doc["arrangement"]["server"]
    for name, target in by_name.items():
        assert target["server"] == "bench"
        if name.endswith("6") and not HAS_IPV6:
            assert target["skipped"]
            continue
        assert target["skipped"] is None
        assert target["latency"] is not None
        if target["stream"]:
            assert [t["connections"] for t in target["throughput"]] == [1, 2]
            assert {t["method"] for t in target["throughput"]} == {"sink"}
            assert target["connect"] is not None
            assert target["datagram"] == []
        else:
            assert [d["size"] for d in target["datagram"]] == [64, 1400]
            assert {d["method"] for d in target["datagram"]} == {"sink"}
            assert target["throughput"] == [] and target["connect"] is None


def test_plot_writes_a_png(default_run: tuple[dict[str, Any], Path, Path]) -> None:
    if not _have_matplotlib():
        if os.environ.get("CI"):
            pytest.fail("matplotlib is part of the test extra: CI must exercise --plot")
        pytest.skip("matplotlib is not installed (pip install -e '.[test]')")
    doc, _saved, png = default_run
    assert doc["plot"] == str(png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # four panels of charts, not an empty canvas


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path: Path) -> None:
    png = tmp_path / "x.png"
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from enchufe.cli import main\n"
        f"main(['bench', '--plot', {str(png)!r}, '--kind', 'unix', *{list(QUICK)!r}])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "matplotlib" in line and "enchufe[plot]" in line
    assert done.stdout == ""
    assert not png.exists()


def test_compare_with_an_earlier_run(default_run: tuple[dict[str, Any], Path, Path]) -> None:
    _doc, saved, _png = default_run
    doc = bench_json("--kind", "tcp4", "--mode", "latency", "--compare", str(saved), *QUICK)
    changes = {c["figure"]: c for c in doc["compare"]["changes"]}
    assert doc["compare"]["file"] == str(saved)
    assert set(changes) == {"tcp4 latency p50", "tcp4 latency p90", "tcp4 latency p99", "tcp4 latency max"}
    for change in changes.values():
        assert change["before"] > 0 and change["now"] > 0
        assert change["change"].endswith("%")
    table = bench("--kind", "unix", "--mode", "connect", "--compare", str(saved), *QUICK)
    assert table.returncode == 0, table.stderr
    assert "compared with" in table.stdout and "unix connections" in table.stdout


def test_table_says_which_arrangement_was_used() -> None:
    done = bench("--kind", "unix,unixgram", *QUICK)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for needle in ("unix", "unixgram", "MB/s, 1 conn", "MB/s, 2 conns", "conn/s", "RTT p50 µs", "1400 B"):
        assert needle in out, needle
    assert "separate process" in out and "client: this process" in out
    assert "warm-up" in out and "every sample" in out


def test_tls_kinds_beside_the_same_connection_without_tls() -> None:
    """--kind tls,tls+unix: throughput, handshakes/s and ping-pong for each, and for its plain
    twin in the same run; the JSON names the twin, the table shows both and the ratio."""
    doc = bench_json("--kind", "tls,tls+unix", *QUICK)
    targets = {t["name"]: t for t in doc["targets"]}
    assert list(targets) == ["tcp4 (no TLS)", "tls", "unix (no TLS)", "tls+unix"]
    assert targets["tls"]["baseline"] == "tcp4 (no TLS)"
    assert targets["tls+unix"]["baseline"] == "unix (no TLS)"
    assert (
        targets["tls"]["address"].startswith("tls://127.0.0.1:")
        and "?pin=sha256:" in targets["tls"]["address"]
    )
    assert targets["tls+unix"]["address"].startswith("tls+unix:")
    for target in targets.values():
        assert len(target["throughput"]) == 1 and target["latency"] and target["connect"]
    done = bench("--kind", "tls", "--mode", "connect", *QUICK)
    assert done.returncode == 0, done.stderr
    assert "TLS beside the same connection without TLS" in done.stdout
    assert re.search(r"tls\W+handshakes/s\W+[\d,]+\W+[\d,]+\W+\d+\.\d\dx", done.stdout), done.stdout
    assert "MB/s" not in done.stdout.split("TLS beside")[1]  # --mode connect: that measure only


def test_plain_table_without_rich() -> None:
    code = (
        "import sys; sys.modules['rich'] = None\n"
        "from enchufe.cli import main\n"
        f"main(['bench', '--kind', 'unix', '--mode', 'latency', *{list(QUICK)!r}])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "enchufe bench, loopback"
    assert lines[1].split() == ["kind", "RTT", "p50", "µs", "p90", "p99", "max"]
    assert lines[3].startswith("unix ")


def test_progress_bar_on_a_terminal() -> None:
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [*ENCHUFE, "bench", "--kind", "tcp4", *QUICK],
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
        env={**os.environ, "TERM": "xterm-256color"},  # a terminal that can redraw a line
    )
    os.close(slave)
    seen = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    out, _ = proc.communicate(timeout=TIMEOUT)
    reader.join(5)
    os.close(master)
    assert proc.returncode == 0
    shown = seen.decode("utf-8", "replace")
    assert "tcp4: latency" in shown and "tcp4: connection rate" in shown
    assert "tcp4" in out  # the table itself goes to stdout


# ---------------------------------------------------------------------------- addresses: servers that run


def test_stream_echo_server_every_stream_measure(echo_server: Callable[..., SocketAddress]) -> None:
    address = str(echo_server("tcp4"))
    doc = bench_json(address, *QUICK, *ECHO_WINDOW)
    (target,) = doc["targets"]
    assert target["name"] == target["address"] == address
    assert target["server"] == "external" and target["kind"] == "tcp4"
    assert [t["method"] for t in target["throughput"]] == ["echo", "echo"]
    assert target["latency"] and target["connect"]
    assert "already running" in doc["arrangement"]["server"]


def test_datagram_echo_server_every_datagram_measure(echo_server: Callable[..., SocketAddress]) -> None:
    doc = bench_json(str(echo_server("udp4")), *QUICK, "--size", "100")
    (target,) = doc["targets"]
    assert [d["size"] for d in target["datagram"]] == [100]
    assert target["datagram"][0]["method"] == "echo"
    assert target["latency"]["size"] == 100
    assert target["throughput"] == [] and target["connect"] is None


@pytest.mark.parametrize(
    ("mode", "kind", "present"),
    [
        pytest.param("throughput", "unix-abstract", "throughput", id="throughput-unix"),
        pytest.param("latency", "udp6", "latency", id="latency-udp6", marks=needs_ipv6),
        pytest.param("connect", "tcp6", "connect", id="connect-tcp6", marks=needs_ipv6),
        pytest.param("datagram", "unixgram", "datagram", id="datagram-unixgram"),
    ],
)
def test_each_mode_alone(
    mode: str, kind: str, present: str, echo_server: Callable[..., SocketAddress]
) -> None:
    window = ECHO_WINDOW if mode == "throughput" else ()
    doc = bench_json(str(echo_server(kind)), "--mode", mode, *QUICK, *window)
    (target,) = doc["targets"]
    assert doc["settings"]["modes"] == [mode]
    for measure in ("throughput", "latency", "connect", "datagram"):
        assert bool(target[measure]) == (measure == present), measure


def test_throughput_into_a_sink_given(sink_server: Callable[..., Any]) -> None:
    doc = bench_json(str(sink_server("unix").address), "--mode", "throughput", "--sink", *QUICK)
    (target,) = doc["targets"]
    assert [t["method"] for t in target["throughput"]] == ["sink", "sink"]


def test_several_addresses_in_one_run(echo_server: Callable[..., SocketAddress]) -> None:
    addresses = [str(echo_server("unix")), str(echo_server("unixgram-abstract"))]
    doc = bench_json(*addresses, "--mode", "latency", *QUICK)
    assert [t["address"] for t in doc["targets"]] == addresses


def test_nobody_there_exits_1_with_one_line() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    done = bench(address, *QUICK)
    assert done.returncode == 1
    assert address in one_error_line(done.stderr)
    assert done.stdout == ""


# ---------------------------------------------------------------------------- bad arguments: exit 2, one line


BAD_ARGS = [
    (["--duration", "-1"], "--duration"),
    (["--duration", "0"], "--duration"),
    (["--duration", "soon"], "--duration"),
    (["--count", "0"], "--count"),
    (["-P", "0"], "-P"),
    (["--size", "0"], "--size"),
    (["--mode", "bandwidth"], "unknown --mode"),
    (["--mode", "datagram", "tcp://127.0.0.1:9"], "is a stream"),
    (["--mode", "throughput", "udp://127.0.0.1:9"], "is a datagram socket"),
    (["--mode", "connect", "unixgram:@x"], "is a datagram socket"),
    (["--size", "70000", "udp://127.0.0.1:9"], "65507"),
    (["--size", "8", "--mode", "datagram"], "16-byte"),
    (["--kind", "sctp"], "unknown --kind"),
    (["--kind", "tls", "--mode", "datagram"], "tls is a stream"),
    (["tls://127.0.0.1:9?insecure"], "--kind tls"),
    (["--sink"], "--sink"),
    (["tcp://127.0.0.1"], "missing port"),
    (["-"], "socket servers"),
    (["--plot", "chart.svg"], "ending in .png"),
    (["--plot", "/no/such/folder/x.png"], "does not exist"),
    (["--compare", "/no/such/run.json"], "cannot read"),
]


@pytest.mark.parametrize(("args", "needle"), BAD_ARGS, ids=[" ".join(a) for a, _n in BAD_ARGS])
def test_bad_arguments_exit_2_with_one_line(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bench", *args])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert needle in one_error_line(captured.err)
    assert captured.out == ""


def test_compare_file_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.json").write_text('{"hello": 1}')
    (tmp_path / "b.json").write_text("not json")
    for name, needle in (("a.json", "not the output of enchufe bench"), ("b.json", "is not JSON")):
        with pytest.raises(SystemExit) as exited:
            main(["bench", "--compare", str(tmp_path / name)])
        assert exited.value.code == 2
        assert needle in one_error_line(capsys.readouterr().err)


def test_bad_argument_end_to_end_has_no_traceback() -> None:
    done = bench("--duration", "-1")
    assert done.returncode == 2
    assert "--duration" in one_error_line(done.stderr)


@pytest.fixture(autouse=True)
def _no_leftover_settings() -> Iterator[None]:
    """main() in-process keeps global options in a module; leave them as found."""
    from enchufe.cli._common import settings

    saved = dict(settings.__dict__)
    yield
    settings.__dict__.update(saved)

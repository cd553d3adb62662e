"""The report as text (pure): tables, failed and skipped cells, comparison of two runs."""

from __future__ import annotations

import io

from enchufe.bench.compare import Change, compare, figures
from enchufe.bench.report import print_report, tables
from enchufe.bench.results import (
    BenchRun,
    ConnectRate,
    DatagramRate,
    Latency,
    Machine,
    Settings,
    TargetResult,
    Throughput,
)
from enchufe.bench.stats import summarize


def a_run(mb: float = 1000.0, p50_ns: int = 20_000, received: int = 900) -> BenchRun:
    machine = Machine(2, 2, "Linux", "6.1", "x86_64", "3.11.7", "CPython", "blocking", 0.5)
    settings = Settings(1.0, 0.2, 100, 10, None, 4, ("throughput", "latency", "connect", "datagram"))
    run = BenchRun(machine, settings, {"server": "a separate process", "client": "this process"})
    samples = [p50_ns] * 90 + [p50_ns * 3] * 10
    tcp = TargetResult("tcp4", "tcp://127.0.0.1:1", "tcp4", True, "bench")
    tcp.throughput = [Throughput(1, 131072, 1.0, int(mb * 1e6), "sink")]
    tcp.errors = ["throughput, 4 connections: cannot send: reset"]
    tcp.latency = Latency(64, 100, 10, summarize(samples), samples_ns=samples)
    tcp.connect = ConnectRate(1.0, 5000)
    udp = TargetResult("udp4", "udp://127.0.0.1:2", "udp4", False, "bench")
    udp.latency = Latency(64, 100, 10, summarize(samples), samples_ns=samples)
    udp.datagram = [DatagramRate(64, 1.0, 1000, received, 0, 0, "sink")]
    udp.errors = ["datagrams of 1400 B: timed out"]
    tcp6 = TargetResult("tcp6", "", "tcp6", True, "bench", skipped="no IPv6")
    run.targets = [tcp, tcp6, udp]
    return run


def test_tables_show_figures_failures_and_skipped_kinds() -> None:
    main, datagrams = tables(a_run())
    assert main.columns[:4] == ["kind", "MB/s, 1 conn", "MB/s, 4 conns", "conn/s"]
    rows = {row[0]: row for row in main.rows}
    assert rows["tcp4"][1:4] == ["1,000", "failed", "5,000"]
    assert rows["tcp4"][4] == "20.0" and rows["tcp4"][6] == "60.0"
    assert rows["tcp6"][1] == "skipped"
    assert rows["udp4"][1:4] == ["—", "—", "—"]
    assert any("separate process" in note for note in main.notes)
    assert any("tcp6 skipped: no IPv6" in note for note in main.notes)
    assert datagrams.rows == [
        ["udp4", "64 B", "1,000", "900", "10.00 %", "0.1"],
        ["udp4", "1400 B", "failed", "", "", ""],
    ]


def test_tls_grid_shows_each_tls_kind_beside_its_twin_with_the_ratio() -> None:
    run = a_run()
    twin = TargetResult("tcp4 (no TLS)", "tcp://127.0.0.1:3", "tcp4", True, "bench")
    twin.throughput = [Throughput(1, 131072, 1.0, 1_000_000_000, "sink")]
    twin.connect = ConnectRate(1.0, 2000)
    tls = TargetResult("tls", "tls://127.0.0.1:4?pin=sha256:00", "tls", True, "bench", baseline=twin.name)
    tls.throughput = [Throughput(1, 131072, 1.0, 500_000_000, "sink")]
    tls.errors = ["connection rate: the handshake timed out"]
    run.targets += [twin, tls]
    grid = tables(run)[-1]
    assert grid.title == "TLS beside the same connection without TLS"
    assert grid.rows == [
        ["tls", "MB/s", "500", "1,000", "0.50x"],
        ["tls", "handshakes/s", "failed", "2,000", "—"],
    ]
    assert tls.to_dict()["baseline"] == "tcp4 (no TLS)" and "baseline" not in twin.to_dict()
    assert not any(g.title.startswith("TLS") for g in tables(a_run()))


def test_json_form_keeps_failures_with_their_target() -> None:
    doc = a_run().to_dict()
    tcp = doc["targets"][0]
    assert tcp["errors"] == ["throughput, 4 connections: cannot send: reset"]
    assert [t["connections"] for t in tcp["throughput"]] == [1]
    assert doc["targets"][1]["skipped"] == "no IPv6"
    assert doc["targets"][2]["datagram"][0]["loss"] == 0.1
    assert a_run().errors == [
        "tcp4: throughput, 4 connections: cannot send: reset",
        "udp4: datagrams of 1400 B: timed out",
    ]


def test_comparison_says_better_or_worse_per_figure() -> None:
    before = a_run(mb=1000, p50_ns=20_000, received=900).to_dict()
    now = a_run(mb=1500, p50_ns=40_000, received=950).to_dict()
    changes = {c.name: c for c in compare(before, now)}
    assert set(changes) == set(figures(now)) == set(figures(before))
    faster = changes["tcp4 throughput, 1 connection"]
    assert (faster.describe(), faster.better) == ("+50.0 %", True)
    slower = changes["tcp4 latency p50"]
    assert (slower.describe(), slower.better) == ("+100.0 %", False)
    loss = changes["udp4 datagrams 64 B lost"]
    assert (loss.describe(), loss.better) == ("-5.00 pt", True)
    assert Change("x", "/s", 5, 5, True).better is None
    assert Change("x", "/s", 0, 5, True).describe() == "new"


def test_comparison_leaves_out_what_only_one_run_has() -> None:
    before = a_run().to_dict()
    before["targets"] = before["targets"][:1]
    names = {c.name for c in compare(before, a_run().to_dict())}
    assert names and all(name.startswith("tcp4") for name in names)


def test_report_draws_with_rich_into_a_file() -> None:
    out = io.StringIO()
    print_report(
        a_run(), changes=compare(a_run().to_dict(), a_run(mb=2000).to_dict()), source="old.json", out=out
    )
    text = out.getvalue()
    assert "tcp4" in text and "failed" in text and "skipped" in text
    assert "compared with old.json" in text and "+100.0 %" in text

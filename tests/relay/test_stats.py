"""The stats lines and summary: pure formatting of counters."""

from __future__ import annotations

import pytest

from enchufe.relay.stats import Snapshot, Stats, human_bytes, interval_report, summary_report


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (5 * 2**30, "5.0 GiB"),
        (2**50, "1024.0 TiB"),
    ],
)
def test_human_bytes(count: int, text: str) -> None:
    assert human_bytes(count) == text


def test_an_interval_line_gives_totals_and_rates() -> None:
    before = Snapshot(when=10.0, started=0.0, to_target=0, to_client=1024)
    now = Snapshot(
        when=12.0, started=0.0, open=3, total=9, refused=1, failed=2, to_target=4 * 2**20, to_client=1024
    )
    line, fields = interval_report(before, now)
    assert line == (
        "stats: 3 open, 9 total, 1 refused, 2 failed; "
        "to target 4.0 MiB (2.0 MiB/s), to client 1.0 KiB (0 B/s)"
    )
    assert fields["to_target_rate"] == 2 * 2**20 and fields["to_client_rate"] == 0
    assert fields["open"] == 3 and fields["interval"] == 2.0


def test_the_summary() -> None:
    final = Snapshot(when=5.0, started=1.0, total=4, reset=1, cut=2, to_target=10, to_client=2048)
    line, fields = summary_report(final)
    assert line == (
        "summary: 4 connections relayed in 4.0 s (0 refused, 0 target failures, 1 reset, 2 cut); "
        "to target 10 B, to client 2.0 KiB"
    )
    assert "open" not in fields and fields["seconds"] == 4.0


def test_a_snapshot_copies_the_counters() -> None:
    stats = Stats()
    stats.total = 2
    stats.to_client = 7
    snap = stats.snapshot()
    stats.total = 3
    assert snap.total == 2 and snap.to_client == 7


def test_datagram_counters_appear_once_there_are_datagrams() -> None:
    final = Snapshot(
        when=3.0,
        started=1.0,
        total=2,
        to_target=30,
        to_client=30,
        datagrams_to_target=3,
        datagrams_to_client=3,
        truncated=1,
        dropped=2,
        expired=1,
        evicted=1,
    )
    line, fields = summary_report(final)
    assert line.endswith(
        "; datagrams 3 to target, 3 to client (1 truncated, 2 dropped; sessions 1 expired, 1 evicted)"
    )
    assert fields["truncated"] == 1 and fields["evicted"] == 1
    line, fields = interval_report(Snapshot(when=0.0, started=0.0), final)
    assert "datagrams 3 to target" in line and fields["dropped"] == 2
    assert "datagrams" not in summary_report(Snapshot(when=1.0, started=0.0))[0]

"""The stats lines and summary: pure formatting of counters; the stats timer of a running relay."""

from __future__ import annotations

import time
from typing import Any

import pytest

from enchufe.relay import Recorder, Relay, RelayConfig
from enchufe.relay.stats import Snapshot, Stats, human_bytes, interval_report, summary_report
from tests.conftest import Peer

from .conftest import STEP

#: the relay with its compiled hot path and without it (tests/conftest.py: both_paths)
pytestmark = pytest.mark.usefixtures("both_paths")


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


class FailingOnce(Recorder):
    """A library user's event sink that fails (not with OSError) on the first stats line."""

    def _keep(self, name: str, message: str, /, *, level: int = 0, **fields: Any) -> None:
        if name == "stats" and not getattr(self, "failed", False):
            self.failed = True
            raise ValueError("sink failed")
        super()._keep(name, message, level=level, **fields)


def test_a_stats_line_that_fails_does_not_end_the_stats() -> None:
    events = FailingOnce()
    relay = Relay(RelayConfig("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", stats_interval=0.01), events=events)
    relay.open()
    peer = Peer(relay.run)
    try:
        deadline = time.monotonic() + STEP
        while not events.named("stats") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert events.named("stats"), "no stats line after the first one failed"
    finally:
        relay.stop(now=True)
        peer.result(STEP)
    assert any("ValueError: sink failed" in message for _name, message, _fields in events.events)

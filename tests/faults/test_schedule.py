"""Each toxic's schedule, as Toxiproxy's code would have it (pure: no sockets, no clock)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enchufe.faults import CLOSE, DATA, EOF, RESET, Action, DatagramSchedule, StreamSchedule, parse_fault
from enchufe.faults.schedule import slices


def schedule(*faults: str, seed: int = 1, now: float = 0.0) -> StreamSchedule:
    return StreamSchedule([parse_fault(f) for f in faults], random.Random(seed), now)


def data_of(actions: list[Action]) -> bytes:
    return b"".join(a.data for a in actions if a.kind == DATA)


def test_latency_delays_each_chunk_and_keeps_the_order() -> None:
    s = schedule("latency:latency=100")
    assert s.feed(1.0, b"a") == [Action(1.1, DATA, b"a")]
    (late,) = s.feed(1.05, b"b")
    assert late.at == pytest.approx(1.15) and late.data == b"b"
    assert s.end(1.2) == [Action(1.2, EOF)]  # the end waits for nothing but the data before it


def test_latency_jitter_stays_in_its_range_and_never_reorders() -> None:
    s = schedule("latency:latency=50,jitter=20", seed=7)
    times = [a.at for i in range(200) for a in s.feed(i * 0.001, b"x")]
    delays = [t - i * 0.001 for i, t in enumerate(times)]
    assert all(d >= 0.030 - 1e-9 for d in delays)
    assert times == sorted(times)
    assert len({round(d, 6) for d in delays}) > 5  # it does vary


def test_bandwidth_is_a_link_of_rate_kb_per_second_in_pieces_of_100_ms() -> None:
    s = schedule("bandwidth:rate=10")  # 10 KB/s: 1000 bytes a 100 ms piece
    actions = s.feed(0.0, bytes(2500))
    assert [len(a.data) for a in actions] == [1000, 1000, 500]
    assert [a.at for a in actions] == pytest.approx([0.1, 0.2, 0.25])
    assert s.feed(0.1, bytes(100))[0].at == pytest.approx(0.26)  # queued behind the first
    assert schedule("bandwidth:rate=0").feed(3.0, b"abc") == [Action(3.0, DATA, b"abc")]


def test_slicer_cuts_into_small_pieces_with_its_delay() -> None:
    s = schedule("slicer:average_size=10,delay=1000")
    actions = s.feed(0.0, bytes(80))
    assert [len(a.data) for a in actions] == [10] * 8
    assert [a.at for a in actions] == pytest.approx([i / 1000 for i in range(8)])
    (end,) = s.end(0.0)
    assert end.kind == EOF and end.at == pytest.approx(0.008)


def test_limit_data_passes_its_bytes_then_closes() -> None:
    s = schedule("limit_data:bytes=5")
    assert s.feed(0.0, b"abc") == [Action(0.0, DATA, b"abc")]
    assert s.feed(1.0, b"defgh") == [Action(1.0, DATA, b"de"), Action(1.0, CLOSE)]
    assert s.feed(2.0, b"more") == []
    assert schedule("limit_data:bytes=0").feed(0.5, b"x") == [Action(0.5, CLOSE)]


def test_timeout_drops_everything_and_closes_after_its_time() -> None:
    s = schedule("timeout:timeout=300", now=10.0)
    assert s.started == [Action(10.3, CLOSE)]
    assert s.feed(10.1, b"lost") == []
    forever = schedule("timeout:timeout=0")
    assert forever.started == [] and forever.feed(99.0, b"x") == []


def test_reset_peer_resets_its_timeout_after_the_first_bytes() -> None:
    s = schedule("reset_peer:timeout=200", now=0.0)
    assert s.started == []
    assert s.feed(1.0, b"x") == [Action(1.2, RESET)]
    assert s.feed(1.1, b"y") == []


def test_slow_close_delays_the_end_only() -> None:
    s = schedule("slow_close:delay=500")
    assert s.feed(0.0, b"x") == [Action(0.0, DATA, b"x")]
    assert s.end(1.0) == [Action(1.5, EOF)]


def test_toxics_chain_in_order() -> None:
    s = schedule("latency:latency=100", "limit_data:bytes=2")
    assert s.feed(0.0, b"abc") == [Action(0.1, DATA, b"ab"), Action(0.1, CLOSE)]
    s = schedule("limit_data:bytes=2", "slow_close:delay=1000")
    assert s.feed(0.0, b"abc") == [Action(0.0, DATA, b"ab"), Action(1.0, CLOSE)]


def test_toxicity_zero_lets_everything_through_and_one_always_acts() -> None:
    assert not schedule("latency:latency=100,toxicity=0").acts
    assert schedule("latency:latency=100,toxicity=1").acts
    chosen = [schedule("latency:latency=1,toxicity=0.5", seed=seed).acts for seed in range(400)]
    assert 120 < sum(chosen) < 280


chunks = st.lists(st.binary(min_size=1, max_size=3000), max_size=20)
seeds = st.integers(0, 2**32)


def run(faults: list[str], parts: list[bytes], seed: int) -> list[Action]:
    s = schedule(*faults, seed=seed)
    actions = list(s.started)
    for i, part in enumerate(parts):
        actions += s.feed(i * 0.01, part)
    return actions + s.end(len(parts) * 0.01)


@settings(max_examples=60, deadline=None)
@given(parts=chunks, seed=seeds, latency=st.integers(0, 200), jitter=st.integers(0, 100))
def test_latency_conserves_every_byte_in_order(
    parts: list[bytes], seed: int, latency: int, jitter: int
) -> None:
    actions = run([f"latency:latency={latency},jitter={jitter}"], parts, seed)
    assert data_of(actions) == b"".join(parts)
    assert [a.at for a in actions] == sorted(a.at for a in actions)
    assert actions[-1].kind == EOF


@settings(max_examples=60, deadline=None)
@given(
    parts=chunks, seed=seeds, average=st.integers(1, 500), share=st.floats(0, 1), delay=st.integers(0, 1000)
)
def test_slicer_conserves_every_byte(
    parts: list[bytes], seed: int, average: int, share: float, delay: int
) -> None:
    variation = int(average * share)
    actions = run([f"slicer:average_size={average},size_variation={variation},delay={delay}"], parts, seed)
    assert data_of(actions) == b"".join(parts)
    assert all(0 < len(a.data) <= average + variation for a in actions if a.kind == DATA)


@settings(max_examples=60, deadline=None)
@given(parts=chunks, seed=seeds, rate=st.integers(0, 100))
def test_bandwidth_conserves_every_byte(parts: list[bytes], seed: int, rate: int) -> None:
    assert data_of(run([f"bandwidth:rate={rate}"], parts, seed)) == b"".join(parts)


@settings(max_examples=60, deadline=None)
@given(parts=chunks, seed=seeds, limit=st.integers(0, 10000))
def test_limit_data_never_passes_more_than_its_bytes(parts: list[bytes], seed: int, limit: int) -> None:
    actions = run([f"limit_data:bytes={limit}", "slicer:average_size=7"], parts, seed)
    passed = data_of(actions)
    assert passed == b"".join(parts)[:limit]
    ends = [a.kind for a in actions if a.kind != DATA]
    assert ends[0] == (CLOSE if sum(map(len, parts)) >= limit and parts else EOF)


@settings(max_examples=40, deadline=None)
@given(parts=chunks, seed=seeds)
def test_the_same_seed_gives_the_same_schedule(parts: list[bytes], seed: int) -> None:
    faults = [
        "latency:latency=20,jitter=15",
        "slicer:average_size=50,size_variation=30",
        "limit_data:bytes=9000,toxicity=0.5",
    ]
    assert run(faults, parts, seed) == run(faults, parts, seed)


@given(size=st.integers(0, 100_000), average=st.integers(1, 2000), share=st.floats(0, 1), seed=seeds)
def test_slices_cover_the_chunk_in_order(size: int, average: int, share: float, seed: int) -> None:
    ends = slices(size, average, int(average * share), random.Random(seed))
    assert ends == sorted(set(ends)) and (ends[-1] == size if size else ends == [])


def datagrams(faults: list[str], count: int, seed: int) -> list[tuple[float, bytes]]:
    s = DatagramSchedule([parse_fault(f) for f in faults], random.Random(seed))
    return [out for i in range(count) for out in s.feed(i * 0.001, i.to_bytes(4, "big"))]


def test_datagram_loss_is_repeatable_and_near_its_probability() -> None:
    first = datagrams(["loss:probability=0.1"], 10_000, seed=5)
    assert first == datagrams(["loss:probability=0.1"], 10_000, seed=5)
    assert 8_700 < len(first) < 9_300


def test_datagram_duplicate_corrupt_and_reorder() -> None:
    assert len(datagrams(["duplicate:probability=1"], 10, 1)) == 20
    corrupted = datagrams(["corrupt:probability=1"], 50, 1)
    for i, (_, data) in enumerate(corrupted):
        flipped = int.from_bytes(data, "big") ^ i
        assert flipped and flipped & (flipped - 1) == 0  # exactly one bit
    held = datagrams(["reorder:probability=0.3,delay=50"], 200, 3)
    order = [int.from_bytes(d, "big") for _, d in sorted(held, key=lambda x: x[0])]
    assert sorted(order) == list(range(200)) and order != list(range(200))


def test_datagram_latency_and_toxicity() -> None:
    delayed = datagrams(["latency:latency=30"], 5, 1)
    assert [t for t, _ in delayed] == pytest.approx([0.030 + i * 0.001 for i in range(5)])
    assert len(datagrams(["loss:probability=1,toxicity=0"], 100, 1)) == 100


def test_a_limit_data_that_stays_keeps_its_count_across_a_change() -> None:
    first = schedule("limit_data:bytes=10")
    first.feed(0.0, b"123456")
    toxics = [parse_fault("limit_data:bytes=10"), parse_fault("latency")]
    second = StreamSchedule(toxics, random.Random(1), 1.0)
    second.carry_over(first)
    assert data_of(second.feed(1.0, b"abcdefgh")) == b"abcd"
    changed = StreamSchedule([parse_fault("limit_data:bytes=20")], random.Random(1), 1.0)
    changed.carry_over(first)  # another limit: counts afresh
    assert data_of(changed.feed(1.0, b"abcdefgh")) == b"abcdefgh"

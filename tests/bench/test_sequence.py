"""Datagram accounting (sans-IO): sequence numbers in, counts out; percentiles from every sample."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enchufe.bench import sequence
from enchufe.bench.sequence import Counts, SequenceBook, SequenceTracker
from enchufe.bench.stats import percentile, summarize


def payload(token: int, seq: int, size: int = 64) -> bytes:
    buffer = bytearray(size)
    sequence.stamp(buffer, token, seq)
    return bytes(buffer)


def test_header_round_trips_and_rejects_what_is_not_ours() -> None:
    assert sequence.read(payload(7, 123456789)) == (7, 123456789)
    assert sequence.read(payload(7, 1)[:15]) is None
    assert sequence.read(b"XXXX" + payload(7, 1)[4:]) is None
    assert sequence.HEADER_SIZE == 16


def test_tracker_counts_duplicates_reordering_and_foreign() -> None:
    tracker = SequenceTracker(token=5)
    for seq in (0, 1, 3, 2, 3, 9):
        tracker.feed(payload(5, seq))
    tracker.feed(payload(6, 4))  # another measurement's
    tracker.feed(b"hello")
    assert tracker.counts == Counts(received=5, duplicates=1, reordered=1, foreign=2)
    assert tracker.counts.lost(10) == 5
    assert tracker.counts.loss(10) == pytest.approx(0.5)
    assert Counts().loss(0) == 0.0


@given(st.integers(1, 3000), st.data())
def test_received_never_exceeds_sent(sent: int, data: st.DataObject) -> None:
    arrived = data.draw(st.lists(st.integers(0, sent - 1), max_size=2 * sent))
    tracker = SequenceTracker(token=1)
    for seq in arrived:
        tracker.feed_sequence(seq)
    counts = tracker.counts
    assert counts.received == len(set(arrived)) <= sent
    assert counts.duplicates == len(arrived) - len(set(arrived))
    assert counts.lost(sent) == sent - len(set(arrived))
    assert 0.0 <= counts.loss(sent) <= 1.0


def test_book_keeps_measurements_apart_and_forgets_the_oldest() -> None:
    book = SequenceBook(max_tokens=2)
    for seq in range(10):
        book.feed(payload(1, seq))
    book.feed(payload(2, 0))
    book.feed(b"noise")
    assert book.counts(1).received == 10
    assert book.counts(2).received == 1
    assert book.counts(2).foreign == 1
    book.feed(payload(3, 0))  # a third token: token 1 is forgotten
    assert book.counts(1).received == 0
    assert book.counts(3).received == 1


@pytest.mark.parametrize(
    ("samples", "p", "expected"),
    [
        ([5], 50, 5),
        ([1, 2, 3, 4], 50, 2),
        ([1, 2, 3, 4], 51, 3),
        (list(range(1, 101)), 99, 99),
        (list(range(1, 101)), 100, 100),
        (list(range(1, 1001)), 90, 900),
    ],
)
def test_percentile_is_nearest_rank(samples: list[int], p: float, expected: int) -> None:
    assert percentile(samples, p) == expected


def test_percentile_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1], 101)


@given(st.lists(st.integers(1, 10**9), min_size=1, max_size=500))
def test_summary_is_ordered_and_made_of_real_samples(samples: list[int]) -> None:
    s = summarize(samples)
    assert s.samples == len(samples)
    assert s.min_us <= s.p50_us <= s.p90_us <= s.p99_us <= s.max_us
    as_us = {x / 1000 for x in samples}
    assert {s.p50_us, s.p90_us, s.p99_us, s.max_us} <= as_us
    assert s.min_us <= s.mean_us <= s.max_us


def test_summary_is_not_an_average_of_averages() -> None:
    # 99 fast round trips and one slow one: p99 is fast, max is the slow one, mean in between.
    samples = [10_000] * 99 + [5_000_000]
    random.shuffle(samples)
    s = summarize(samples)
    assert s.p50_us == s.p99_us == 10.0
    assert s.max_us == 5000.0

"""Backoff: the pauses of every wait that no readiness event announces."""

from __future__ import annotations

import pytest

from enchufe._backoff import UNIX_RETRY_FIRST, UNIX_RETRY_MAX, Backoff


def test_pauses_double_up_to_the_ceiling() -> None:
    backoff = Backoff()
    assert [round(backoff.next() * 1000, 6) for _ in range(9)] == [1, 2, 4, 8, 16, 32, 50, 50, 50]


def test_reset_starts_short_again() -> None:
    backoff = Backoff(0.005, 0.2)
    assert [backoff.next() for _ in range(3)] == [0.005, 0.01, 0.02]
    backoff.reset()
    assert [backoff.next() for _ in range(2)] == [0.005, 0.01]


@pytest.mark.parametrize(
    ("first", "ceiling", "pauses"), [(0.05, 0.05, [0.05] * 3), (0.03, 0.05, [0.03, 0.05, 0.05])]
)
def test_a_pause_never_passes_the_ceiling(first: float, ceiling: float, pauses: list[float]) -> None:
    backoff = Backoff(first, ceiling)
    assert [backoff.next() for _ in range(3)] == pauses


def test_the_unix_defaults() -> None:
    backoff = Backoff()
    assert (backoff.first, backoff.ceiling) == (UNIX_RETRY_FIRST, UNIX_RETRY_MAX) == (0.001, 0.05)

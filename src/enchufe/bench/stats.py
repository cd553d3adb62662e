"""Percentiles from every sample: no averaging of averages, no interpolation between samples.

A percentile here is the nearest-rank one: the smallest sample such that at least ``p`` percent
of all samples are less than or equal to it.  It is always a latency that really happened, and
``p50 ≤ p90 ≤ p99 ≤ max`` holds by construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Summary", "percentile", "summarize"]


def percentile(ordered: Sequence[int | float], p: float) -> int | float:
    """The nearest-rank ``p``-th percentile of ``ordered`` (sorted ascending, not empty)."""
    if not ordered:
        raise ValueError("no samples")
    if not 0 <= p <= 100:
        raise ValueError(f"a percentile is between 0 and 100, not {p}")
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Summary:
    """Latency figures in microseconds, from ``samples`` round trips."""

    samples: int
    min_us: float
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    mean_us: float


def summarize(samples_ns: Sequence[int]) -> Summary:
    """Summarize round-trip times given in nanoseconds."""
    ordered = sorted(samples_ns)
    if not ordered:
        raise ValueError("no samples")

    def us(ns: float) -> float:
        return ns / 1000.0

    return Summary(
        samples=len(ordered),
        min_us=us(ordered[0]),
        p50_us=us(percentile(ordered, 50)),
        p90_us=us(percentile(ordered, 90)),
        p99_us=us(percentile(ordered, 99)),
        max_us=us(ordered[-1]),
        mean_us=us(sum(ordered) / len(ordered)),
    )

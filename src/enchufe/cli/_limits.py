"""Ranges of the numeric options of connect and check (finite, bounded: nan and inf refused)."""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloat(click.ParamType[float]):
    """A finite number of seconds in [low, high] (``low`` excluded when ``low_open``)."""

    name = "seconds"

    def __init__(self, low: float, high: float, *, low_open: bool = False) -> None:
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        too_low = number <= self.low if self.low_open else number < self.low
        if not math.isfinite(number) or too_low or number > self.high:
            bound = f"more than {self.low:g}" if self.low_open else f"from {self.low:g}"
            self.fail(f"{value!r} is not a finite number {bound} to {self.high:g}", param, ctx)
        return number


class BoundedInt(click.ParamType[int]):
    """A whole number in [low, high]."""

    name = "integer"

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a whole number", param, ctx)
        if not self.low <= number <= self.high:
            self.fail(f"{value!r} is not a whole number from {self.low} to {self.high}", param, ctx)
        return number


#: One day: longer than any wait a user means, short enough for poll()'s millisecond timeout.
_DAY = 86400.0
RETRIES = BoundedInt(0, 1_000_000)
RETRY_DELAY = FiniteFloat(0, 3600)
TIMEOUT = FiniteFloat(0, _DAY, low_open=True)
SECONDS = FiniteFloat(0, _DAY)

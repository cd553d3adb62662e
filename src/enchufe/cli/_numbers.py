"""Numbers on the command line: click types that take finite values in a stated range only.

Python's ``float()`` takes ``nan``, ``inf`` and ``1_000``, and ``int()`` takes non-ASCII digits
(``٣``); a timeout of ``inf`` or a backlog of 2**40 then overflows a system call far from the
option that asked for it.  These types refuse all of that where the option is read, with one
line naming the option, the value and the accepted range, and show the range in ``--help``.
The limits are the library's (:mod:`enchufe._ranges`), so the command line and the API agree.
"""

from __future__ import annotations

import math
import re
from typing import Any

import click

from .._ranges import MAX_BACKLOG, MAX_SECONDS
from ..i18n import _

__all__ = ["MAX_BACKLOG", "MAX_INT", "MAX_SECONDS", "BoundedInt", "FiniteFloat"]

#: The largest count or size an option accepts: what a C int holds, so the kernel takes it.
MAX_INT = 2**31 - 1

# Python's float() and int() also take "nan", "inf", "1_000" and non-ASCII digits ("٣"): an
# option's number is written in ASCII digits only, as every other tool reads it.
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_INT_TEXT = re.compile(r"[+-]?[0-9]+", re.ASCII)


def _show_number(value: float) -> str:
    """1000000.0 as ``1000000``, 0.5 as ``0.5``: how a user would write the bound."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class FiniteFloat(click.FloatRange):
    """A finite number in ``[min, max]`` (``(min, max]`` with ``min_open``), written in ASCII.

    ``nan``, ``inf``, values that overflow to infinity (``1e309``) and values out of range are
    refused (exit status 2) with a message naming the value and the accepted range.  ``zero``
    says what 0 means when it is accepted outside an open range (``zero="never"``: 0 disables).
    The range shows in ``--help``, e.g. ``[0 < S ≤ 1000000; 0 = never]``.
    """

    name = "number"

    def __init__(
        self,
        min: float = 0.0,
        max: float = MAX_SECONDS,
        *,
        min_open: bool = False,
        zero: str | None = None,
        symbol: str = "S",
    ) -> None:
        super().__init__(min, max, min_open=min_open)
        self.zero = zero
        self.symbol = symbol
        self.name = symbol  # the metavar in --help: "--timeout S"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, bool):
            self.fail(
                _("{value} is not a number; accepted: {range}").format(**self._shown(value)), param, ctx
            )
        if isinstance(value, int | float):
            number = float(value)
            text = _show_number(number) if math.isfinite(number) else str(number)
        else:
            text = str(value).strip()
            if not _FLOAT_TEXT.fullmatch(text):
                if text.lower().lstrip("+-") in _NON_FINITE:
                    message = _("{value} is not a finite number; accepted: {range}")
                else:
                    message = _("{value} is not a number; accepted: {range}")
                self.fail(message.format(**self._shown(text)), param, ctx)
            number = float(text)
        if not math.isfinite(number):
            self.fail(_("{value} is too large; accepted: {range}").format(**self._shown(text)), param, ctx)
        if number == 0 and self.zero is not None:
            return 0.0
        assert self.min is not None and self.max is not None
        if number < self.min or (self.min_open and number == self.min) or number > self.max:
            self.fail(_("{value} is out of range; accepted: {range}").format(**self._shown(text)), param, ctx)
        return number

    def _describe_range(self, *, translated: bool = False) -> str:
        """The range as ``--help`` shows it (English, as all help), or as an error says it."""
        assert self.min is not None and self.max is not None
        low = "<" if self.min_open else "≤"
        text = f"{_show_number(self.min)} {low} {self.symbol} ≤ {_show_number(self.max)}"
        return text + _zero(self.zero, translated)

    def _shown(self, value: object) -> dict[str, str]:
        """The fields of a refusal's message: the value as given, the range accepted."""
        return {"value": repr(value), "range": self._describe_range(translated=True)}


_NON_FINITE = {"nan", "inf", "infinity"}


class BoundedInt(click.IntRange):
    """A whole number in ``[min, max]``, written in ASCII digits.

    Anything else (``1.5``, ``nan``, ``٣``, a value out of range) is refused (exit status 2)
    with a message naming the value and the accepted range, which also shows in ``--help``.
    ``zero`` says what 0 means when it is accepted below ``min``.
    """

    name = "integer"

    def __init__(
        self, min: int = 0, max: int = MAX_INT, *, zero: str | None = None, symbol: str = "N"
    ) -> None:
        super().__init__(min, max)
        self.zero = zero
        self.symbol = symbol
        self.name = symbol

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number, text = value, str(value)
        else:
            text = str(value).strip()
            if not _INT_TEXT.fullmatch(text):
                message = _("{value} is not a whole number; accepted: {range}")
                self.fail(message.format(**self._shown(text)), param, ctx)
            # int() refuses over 4300 digits; anything over 30 is out of every range anyway.
            number = int(text) if len(text) <= 30 else MAX_INT + 1
        if number == 0 and self.zero is not None:
            return 0
        assert self.min is not None and self.max is not None
        if not self.min <= number <= self.max:
            self.fail(_("{value} is out of range; accepted: {range}").format(**self._shown(text)), param, ctx)
        return number

    def _describe_range(self, *, translated: bool = False) -> str:
        """The range as ``--help`` shows it (English, as all help), or as an error says it."""
        assert self.min is not None and self.max is not None
        return f"{self.min} ≤ {self.symbol} ≤ {self.max}" + _zero(self.zero, translated)

    def _shown(self, value: object) -> dict[str, str]:
        """The fields of a refusal's message: the value as given, the range accepted."""
        return {"value": repr(value), "range": self._describe_range(translated=True)}


def _zero(meaning: str | None, translated: bool) -> str:
    """``; 0 = never`` after a range where 0 means something (in the user's language in an
    error; ``--help`` is English)."""
    if meaning is None:
        return ""
    if translated:
        # Every meaning an option gives 0, written here so that the catalog has it.
        meaning = {"never": _("never")}.get(meaning, meaning)
    return f"; 0 = {meaning}"

"""``--compare FILE.json``: every figure of this run next to the same figure of an earlier one.

Both runs are taken in their JSON form (:meth:`~.results.BenchRun.to_dict`), so an earlier run
is read back exactly as it was written.  Figures are matched by target name (the kind for a
loopback run, the address otherwise) and measure; a figure only one of the runs has is left
out.  Rates compare as a relative change, loss as a difference in percentage points.

A figure's ``name`` and its ``change`` in the JSON are English; ``label`` and :meth:`Change.shown`
are the same in the user's language, for the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError, reason
from ..i18n import _
from .results import SCHEMA

__all__ = ["Change", "compare", "figures", "load"]


@dataclass(frozen=True)
class Figure:
    value: float
    unit: str
    higher_is_better: bool
    #: its name in the user's language
    label: str


@dataclass(frozen=True)
class Change:
    """One figure, before and now."""

    name: str
    unit: str
    before: float
    now: float
    higher_is_better: bool
    #: ``name`` in the user's language
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)

    @property
    def relative(self) -> float | None:
        """now / before - 1, or None when before is 0."""
        return self.now / self.before - 1 if self.before else None

    @property
    def better(self) -> bool | None:
        """True if now is better, False if worse, None if the same."""
        if self.now == self.before:
            return None
        return (self.now > self.before) == self.higher_is_better

    def format(self, value: float) -> str:
        if self.unit == "%":
            return f"{value:.2f} %"
        if self.unit == "µs":
            return f"{value:,.1f} µs"
        return f"{value:,.0f} {self.unit}" if value >= 100 else f"{value:.1f} {self.unit}"

    def describe(self) -> str:
        if self.unit == "%":
            return f"{self.now - self.before:+.2f} pt"
        relative = self.relative
        if relative is None:
            return "new" if self.now else "±0"
        return f"{relative * 100:+.1f} %"

    def shown(self) -> str:
        """:meth:`describe` in the user's language."""
        if self.unit == "%":
            return _("{points} pt").format(points=f"{self.now - self.before:+.2f}")
        text = self.describe()
        return _("new") if text == "new" else text

    def to_dict(self) -> dict[str, Any]:
        return {
            "figure": self.name,
            "unit": self.unit,
            "before": self.before,
            "now": self.now,
            "change": self.describe(),
            "better": self.better,
        }


def figures(run: dict[str, Any]) -> dict[str, Figure]:
    """Every comparable figure of a run (its JSON form), by a readable name."""
    found: dict[str, Figure] = {}
    for target in run.get("targets") or []:
        name = target.get("name", "?")
        for t in target.get("throughput") or []:
            conns = t["connections"]
            if conns > 1:
                key = f"{name} throughput, {conns} connections"
                label = _("{target} throughput, {connections} connections").format(
                    target=name, connections=conns
                )
            else:
                key = f"{name} throughput, {conns} connection"
                label = _("{target} throughput, {connections} connection").format(
                    target=name, connections=conns
                )
            found[key] = Figure(float(t["mb_per_s"]), "MB/s", True, label)
        latency = target.get("latency")
        if latency:
            for p in ("p50", "p90", "p99", "max"):
                label = _("{target} latency {percentile}").format(target=name, percentile=p)
                found[f"{name} latency {p}"] = Figure(float(latency[f"{p}_us"]), "µs", False, label)
        connect = target.get("connect")
        if connect:
            label = _("{target} connections").format(target=name)
            found[f"{name} connections"] = Figure(float(connect["per_s"]), "/s", True, label)
        for d in target.get("datagram") or []:
            size = d["size"]
            label = _("{target} datagrams {size} B received").format(target=name, size=size)
            found[f"{name} datagrams {size} B received"] = Figure(
                float(d["received_per_s"]), "/s", True, label
            )
            label = _("{target} datagrams {size} B lost").format(target=name, size=size)
            found[f"{name} datagrams {size} B lost"] = Figure(float(d["loss"]) * 100, "%", False, label)
    return found


def compare(before: dict[str, Any], now: dict[str, Any]) -> list[Change]:
    """The figures both runs have, in this run's order."""
    old = figures(before)
    changes = []
    for name, figure in figures(now).items():
        if name in old:
            changes.append(
                Change(
                    name, figure.unit, old[name].value, figure.value, figure.higher_is_better, figure.label
                )
            )
    return changes


def load(path: str) -> dict[str, Any]:
    """An earlier ``enchufe bench --json`` output; :class:`~enchufe.errors.UsageError` if it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        why = reason(exc, lower=False)
        raise UsageError(_("--compare: cannot read {file}: {reason}").format(file=path, reason=why)) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(
            _("--compare: {file} is not JSON ({error}); give the output of enchufe bench --json").format(
                file=path, error=exc
            )
        ) from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UsageError(
            _("--compare: {file} is not the output of enchufe bench --json (schema {schema})").format(
                file=path, schema=SCHEMA
            )
        )
    return data

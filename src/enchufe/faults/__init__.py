"""Faults on purpose: Toxiproxy's toxics (:mod:`.toxics`) and when they let bytes go
(:mod:`.schedule`), for ``enchufe relay --fault`` and ``enchufe chaos``; and for your own tests,
a faulty relay started in-process (:class:`FaultyRelay`, :class:`AsyncFaultyRelay`: :mod:`.api`).

Importing this package loads only the pure parts (the relay imports them); the two relays are
loaded when first named (``enchufe.faults.FaultyRelay``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .schedule import CLOSE, DATA, EOF, RESET, Action, DatagramSchedule, StreamSchedule
from .toxics import TYPES, FaultError, FaultPlan, Toxic, parse_fault

if TYPE_CHECKING:
    from .api import FaultyRelay
    from .api_aio import AsyncFaultyRelay

__all__ = [
    "CLOSE",
    "DATA",
    "EOF",
    "RESET",
    "TYPES",
    "Action",
    "AsyncFaultyRelay",
    "DatagramSchedule",
    "FaultError",
    "FaultPlan",
    "FaultyRelay",
    "StreamSchedule",
    "Toxic",
    "parse_fault",
]


def __getattr__(name: str) -> Any:
    """The relays on first use: they import the relay, which imports this package."""
    if name == "FaultyRelay":
        from .api import FaultyRelay

        return FaultyRelay
    if name == "AsyncFaultyRelay":
        from .api_aio import AsyncFaultyRelay

        return AsyncFaultyRelay
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

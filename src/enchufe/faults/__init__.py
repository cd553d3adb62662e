"""Faults on purpose: Toxiproxy's toxics (:mod:`.toxics`) and when they let bytes go
(:mod:`.schedule`), for ``enchufe relay --fault`` and ``enchufe chaos``.  Pure: no I/O."""

from __future__ import annotations

from .schedule import CLOSE, DATA, EOF, RESET, Action, DatagramSchedule, StreamSchedule
from .toxics import TYPES, FaultError, FaultPlan, Toxic, parse_fault

__all__ = [
    "CLOSE",
    "DATA",
    "EOF",
    "RESET",
    "TYPES",
    "Action",
    "DatagramSchedule",
    "FaultError",
    "FaultPlan",
    "StreamSchedule",
    "Toxic",
    "parse_fault",
]

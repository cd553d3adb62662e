"""Ranges for the library's numeric arguments: a finite value in a stated range, or UsageError.

A timeout of ``nan`` makes ``socket.settimeout`` raise a bare ValueError, ``inf`` an
OverflowError, and asyncio waits forever; a backlog of 2**40 overflows a C int; ``recv(2**40)``
allocates its whole size at once.  Each argument is checked here, where the library takes it,
so that a careless caller gets one :class:`~enchufe.errors.UsageError` naming the argument, the
value and the accepted range, before any socket is touched.
"""

from __future__ import annotations

import math
import numbers

from .errors import UsageError
from .i18n import _

__all__ = ["MAX_BACKLOG", "MAX_DATAGRAM_SIZE", "MAX_SECONDS", "integer", "seconds"]

#: The longest wait, in seconds, any timeout or delay may ask for (about 11.6 days; the CLI's
#: limit too).  Longer waits are what ``None`` (no timeout) is for.
MAX_SECONDS = 1_000_000.0

#: listen()'s backlog is a C int, and the kernel caps it at net.core.somaxconn (at most 65535).
MAX_BACKLOG = 65535

#: The largest receive buffer a datagram socket allocates for one datagram: above the largest
#: UDP payload (65507) and the unix datagrams default socket buffers allow.
MAX_DATAGRAM_SIZE = 16 * 1024 * 1024


def seconds(
    value: float | None, name: str, *, optional: bool = False, positive: bool = False
) -> float | None:
    """``value`` as a float of seconds in ``[0, MAX_SECONDS]`` (``(0, …]`` when ``positive``), or
    ``None`` when ``optional``; anything else (``nan``, ``inf``, a negative or huge number, a bool
    or a string) raises :class:`UsageError`."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(
            _seconds_refused(positive, optional).format(
                name=name, most=f"{MAX_SECONDS:.0f}", value=repr(value)
            )
        )
    number = float(value)
    if not math.isfinite(number) or number < 0 or number > MAX_SECONDS or (positive and number == 0):
        raise UsageError(
            _seconds_refused(positive, optional).format(
                name=name, most=f"{MAX_SECONDS:.0f}", value=repr(value)
            )
        )
    return number


def _seconds_refused(positive: bool, optional: bool) -> str:
    """The refusal of a number of seconds, with fields ``name``, ``most`` and ``value``."""
    if positive and optional:
        return _(
            "{name} must be a number of seconds more than 0 and at most {most} "
            "(or None: no limit), not {value}"
        )
    if positive:
        return _("{name} must be a number of seconds more than 0 and at most {most}, not {value}")
    if optional:
        return _("{name} must be a number of seconds from 0 to {most} (or None: no limit), not {value}")
    return _("{name} must be a number of seconds from 0 to {most}, not {value}")


def integer(value: int, name: str, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (no upper bound when ``high`` is None); a float, a
    bool or anything out of range raises :class:`UsageError`."""
    if type(value) is int and value >= low and (high is None or value <= high):
        return value  # the common case, on every recv(): no message made
    if high is None:
        refused = _("{name} must be a whole number from {low} up, not {value}")
    else:
        refused = _("{name} must be a whole number from {low} to {high}, not {value}")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UsageError(refused.format(name=name, low=low, high=high, value=repr(value)))
    number = int(value)
    if number < low or (high is not None and number > high):
        raise UsageError(refused.format(name=name, low=low, high=high, value=repr(value)))
    return number

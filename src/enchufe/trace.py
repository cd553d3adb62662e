"""System-call narration: each socket call described, as it happens, in the socket API's words.

The code that makes a system call reports it here right after the call returns (or fails), so
the narration is the real sequence of calls, not a story told beside them::

    socket(AF_INET6, SOCK_STREAM) = fd 3
    setsockopt(fd 3, SO_REUSEADDR, 1)
    bind(fd 3, [::1]:9000)
    listen(fd 3, backlog=4096)
    accept(fd 3) = fd 4 from [::1]:53012
    close(fd 4)

Nothing is formatted unless a sink is installed: every call site checks :func:`enabled` first,
which costs one global read.  A thread may name itself with :func:`actor` (the tour names its
server and client threads) and its lines are then prefixed with that name.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ._text import one_line

__all__ = ["Sink", "actor", "current_sink", "disable", "emit", "enable", "enabled", "stderr_sink"]

Sink = Callable[[str], None]

_sink: Sink | None = None
_lock = threading.Lock()
_local = threading.local()
_t0 = time.monotonic()
_timestamps = False


def stderr_sink(line: str) -> None:
    """Write one narration line to standard error, unbuffered; peer names and paths in it are
    escaped (:func:`enchufe._text.one_line`), so a call is always one line."""
    sys.stderr.write(one_line(line) + "\n")
    sys.stderr.flush()


def enable(sink: Sink | None = None, *, timestamps: bool = False) -> None:
    """Start narrating to ``sink`` (standard error by default)."""
    global _sink, _timestamps
    _sink = sink or stderr_sink
    _timestamps = timestamps


def disable() -> None:
    """Stop narrating."""
    global _sink
    _sink = None


def current_sink() -> Sink | None:
    """The sink in use, so that a caller can put it back after borrowing the narration."""
    return _sink


def enabled() -> bool:
    """True while a sink is installed.  Call sites test this before formatting anything."""
    return _sink is not None


@contextmanager
def actor(name: str) -> Iterator[None]:
    """Prefix the lines this thread emits with ``name`` while the block runs."""
    previous = getattr(_local, "actor", None)
    _local.actor = name
    try:
        yield
    finally:
        _local.actor = previous


def emit(line: str) -> None:
    """Send one narration line to the sink, prefixed with the thread's actor name if any."""
    sink = _sink
    if sink is None:
        return
    name = getattr(_local, "actor", None)
    if name:
        line = f"{name:<7} {line}"
    if _timestamps:
        line = f"{time.monotonic() - _t0:10.6f} {line}"
    with _lock:  # keep lines from two threads whole
        sink(line)

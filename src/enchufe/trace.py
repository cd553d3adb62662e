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

The text sink reads the narration in the user's language (:func:`localized`: the words around
the calls, never the calls, constants or addresses); a recorder gets it as the code wrote it, in
English, for programs to parse.

Beside the text sink, a *recorder* (:func:`record_to`) may take each call as a :class:`Record`:
the same line, unprefixed, with the thread, the actor, the times and, where the call site gives
them, when the call started and the bytes it moved.  ``--trace-file`` and the tour's diagrams
use one; either kind of listener turns the narration on.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from . import i18n
from ._text import one_line
from .i18n import _

__all__ = [
    "Record",
    "Recorder",
    "Sink",
    "actor",
    "current_recorder",
    "current_sink",
    "disable",
    "emit",
    "enable",
    "enabled",
    "localized",
    "record_to",
    "recording",
    "stderr_sink",
]

Sink = Callable[[str], None]

#: How many bytes of a call's payload a record keeps: enough for a preview, never a copy of a transfer.
PAYLOAD_HEAD = 64


@dataclass(frozen=True, slots=True)
class Record:
    """One narrated call, as a recorder gets it."""

    line: str
    actor: str | None
    thread: str
    #: time.monotonic() and time.time() when the call returned (when it was narrated).
    monotonic: float
    wall: float
    #: time.monotonic() when the call started, if the call site says; None otherwise.
    started: float | None = None
    #: The first PAYLOAD_HEAD bytes the call sent or received, if the call site gives them.
    data: bytes | None = None


Recorder = Callable[[Record], None]

_text: Sink | None = None
_recorder: Recorder | None = None
#: What call sites read to know whether anyone listens (the relay's hot paths read it inline):
#: the text sink, or a no-op one while only a recorder listens, or None.
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
    global _text, _timestamps
    _text = sink or stderr_sink
    _timestamps = timestamps
    _listeners()


def disable() -> None:
    """Stop narrating (to the text sink; a recorder keeps recording)."""
    global _text
    _text = None
    _listeners()


def record_to(recorder: Recorder | None) -> None:
    """Give every call to ``recorder`` as a :class:`Record` (None: stop recording).  A recorder
    is called with the narration's lock held, in the thread that made the call, right after it."""
    global _recorder
    _recorder = recorder
    _listeners()


def _discard(_line: str) -> None:
    pass


def _listeners() -> None:
    global _sink
    _sink = _text if _text is not None else _discard if _recorder is not None else None


def current_recorder() -> Recorder | None:
    """The recorder in use, so that a caller can put it back after borrowing the recording."""
    return _recorder


def recording() -> bool:
    """True while a recorder is installed: call sites then also pass start times and payloads."""
    return _recorder is not None


def current_sink() -> Sink | None:
    """The sink in use, so that a caller can put it back after borrowing the narration."""
    return _text


def enabled() -> bool:
    """True while a sink or a recorder is installed.  Call sites test this before formatting anything."""
    return _sink is not None


@contextmanager
def actor(name: str, shown: str | None = None) -> Iterator[None]:
    """Prefix the lines this thread emits with ``name`` while the block runs (``shown`` in the
    text sink, when given: the name in the user's language; a recorder keeps ``name``).  The
    name takes 7 columns at least: give names of one width for lines that align."""
    previous = getattr(_local, "actor", None), getattr(_local, "shown", None)
    _local.actor, _local.shown = name, shown or name
    try:
        yield
    finally:
        _local.actor, _local.shown = previous


def emit(
    line: str,
    *,
    started: float | None = None,
    data: bytes | bytearray | memoryview | None = None,
) -> None:
    """Send one narration line to the sink, prefixed with the thread's actor name if any, and to
    the recorder as a :class:`Record` (with ``started``, the call's start on the monotonic clock,
    and the head of ``data``, the bytes it moved, when the call site gives them).  The sink gets
    the line as :func:`localized` puts it; the recorder gets it as written."""
    sink = _text
    recorder = _recorder
    name = getattr(_local, "actor", None)
    if recorder is not None:
        head = bytes(data[:PAYLOAD_HEAD]) if data is not None else None
        record = Record(
            line, name, threading.current_thread().name, time.monotonic(), time.time(), started, head
        )
        with _lock:
            recorder(record)
    if sink is None:
        return
    line = localized(line)
    if name:
        line = f"{getattr(_local, 'shown', None) or name:<7} {line}"
    if _timestamps:
        line = f"{time.monotonic() - _t0:10.6f} {line}"
    with _lock:  # keep lines from two threads whole
        sink(line)


# ---------------------------------------------------------------------------- the words


def _words() -> list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]]:
    """The phrases of the narration that are words, not calls: each a whole clause, matched
    where the calls put it, and said again with its fields in the current language."""
    return [
        (
            re.compile(r" → bound to (?P<address>.*)$"),
            lambda m: " → " + _("bound to {address}").format(address=_named(m["address"])),
        ),
        (
            re.compile(r" = fd (?P<fd>\d+) from (?P<address>.*)$"),
            lambda m: " = " + _("fd {fd} from {address}").format(fd=m["fd"], address=_named(m["address"])),
        ),
        (
            re.compile(
                r" = (?P<size>\d+) bytes from (?P<address>.*?)(?: \(MSG_TRUNC: only (?P<kept>\d+) kept\))?$"
            ),
            lambda m: (
                " = "
                + _("{size} bytes from {address}").format(size=m["size"], address=_named(m["address"]))
                + (" (" + _("MSG_TRUNC: only {kept} kept").format(kept=m["kept"]) + ")" if m["kept"] else "")
            ),
        ),
        (
            re.compile(r"^(?P<call>\w+\(fd \d+, )(?P<size>\d+) bytes(?=[,)])"),
            lambda m: m["call"] + _("{size} bytes").format(size=m["size"]),
        ),
        (re.compile(r", connected peer(?=[,)])"), lambda m: ", " + _("connected peer")),
        (re.compile(r" = 0 \(EOF\)$"), lambda m: " = 0 " + _("(EOF)")),
        (re.compile(r" \(connected\)$"), lambda m: " " + _("(connected)")),
        (re.compile(r"(?<=[ (])\(unnamed\)(?=[),]|$)"), lambda m: _("(unnamed)")),
        # unlink()'s comment: an N_() phrase of the code that removes the file (_unixfiles)
        (re.compile(r"^(?P<call>unlink\(.*\))  # (?P<why>.+)$"), lambda m: f"{m['call']}  # {_(m['why'])}"),
        (
            re.compile(r" = exit status (?P<code>-?\d+)$"),
            lambda m: " = " + _("exit status {code}").format(code=m["code"]),
        ),
    ]


def _named(address: str) -> str:
    """An address as the narration shows it: ``(unnamed)`` (a unix socket with no name) is words."""
    return _("(unnamed)") if address == "(unnamed)" else address


_PHRASES = _words()


def localized(line: str) -> str:
    """A narration line as the code wrote it (English words around the calls) in the current
    language: ``recv(fd 4, 65536) = 0 (EOF)`` → ``recv(fd 4, 65536) = 0 (EOF: fin de los
    datos)``.  Calls, constants, descriptors and addresses are left as they are."""
    if i18n.language() == "en":
        return line
    for pattern, say in _PHRASES:
        line = pattern.sub(say, line, count=1)
    return line

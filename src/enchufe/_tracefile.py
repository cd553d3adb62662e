"""The trace as structured events: one JSON object per narrated call, for files and diagrams.

A :class:`Recorder` of :mod:`enchufe.trace` gets each call's narration line right after the call
returned; :class:`EventMaker` turns it into an event (a dict: the call, its arguments and result,
the process, thread and actor, the times) and adds the socket's local and peer addresses, asked
of the kernel on the spot (``getsockname``/``getpeername`` on the call's descriptor), so that the
two ends of a connection, traced by two processes, can be matched by their addresses.  A
descriptor's addresses are remembered until it is closed, for the calls after which the kernel
no longer has them (``close``).

``--trace-file FILE.jsonl`` writes the events with :func:`file_recorder`; the tour keeps them in
memory (:class:`MemoryRecorder`).  Peer-chosen text (unix paths, payload previews) is escaped
by :func:`enchufe._text.printable` and again by JSON.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import stat
import threading
from typing import Any

from . import trace
from ._calls import describe_sockaddr
from ._text import printable
from .i18n import _

__all__ = ["EventMaker", "MemoryRecorder", "file_recorder", "open_trace_file", "parse_line"]

Event = dict[str, Any]

_FD = re.compile(r"fd (\d+)")
_COUNT = re.compile(r"(-?\d+)")
_TLS = re.compile(r"tls fd (\d+): (.*)")
_FAILED = re.compile(r"-1 (\w*) ")


def _split_call(line: str) -> tuple[str, str, str] | None:
    """``name(args) rest`` → (name, args, rest), with parentheses inside the arguments balanced."""
    open_at = line.find("(")
    name = line[:open_at]
    if open_at <= 0 or not name.isidentifier():
        return None
    depth = 0
    for at in range(open_at, len(line)):
        depth += {"(": 1, ")": -1}.get(line[at], 0)
        if depth == 0:
            return name, line[open_at + 1 : at], line[at + 1 :]
    return None


def _split_args(args: str) -> list[str]:
    out: list[str] = []
    depth = 0
    current = ""
    for ch in args:
        depth += {"(": 1, "{": 1, ")": -1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            out.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        out.append(current.strip())
    return out


def parse_line(line: str) -> Event:
    """A narration line as fields: ``call``, ``args``, ``result``, ``fd``, ``error`` (the errno
    name of a failed call), ``size`` (the byte count of a transfer), ``new_fd`` (what socket()
    and accept() returned).  A line that is no call (the tour's ``·`` notes, ``tls fd N:``
    lines) is a ``note`` or a ``tls`` event with its ``text``."""
    tls = _TLS.fullmatch(line)
    if tls:
        return {"call": "tls", "fd": int(tls[1]), "text": tls[2]}
    parts = _split_call(line)
    if parts is None:
        return {"call": "note", "text": line.removeprefix("· ")}
    name, args, rest = parts
    rest, _, comment = rest.partition("  # ")
    result = rest.removeprefix(" = ").strip() if rest.startswith(" = ") else None
    event: Event = {"call": name, "args": _split_args(args), "result": result}
    if rest.startswith(" → "):
        event["result"] = rest.removeprefix(" → ").strip()
    if comment:
        event["comment"] = comment
    fd = _FD.match(event["args"][0]) if event["args"] else None
    event["fd"] = int(fd[1]) if fd else None
    if result is not None:
        failed = _FAILED.match(result + " ")
        if failed:
            event["error"] = failed[1] or "timeout"
        elif name in ("socket", "accept"):
            new = _FD.match(result)
            event["new_fd"] = int(new[1]) if new else None
        elif name in ("send", "recv", "sendto", "recvfrom", "read", "write", "splice"):
            count = _COUNT.match(result)
            event["size"] = int(count[1]) if count else None
    return event


def _addresses(fd: int) -> tuple[str, str | None] | None:
    """(local, peer) of the socket at ``fd`` as the kernel has them now; None for no socket."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        local = describe_sockaddr(sock.family, sock.getsockname())
        try:
            peer: str | None = describe_sockaddr(sock.family, sock.getpeername())
        except OSError:  # not connected: a listener, an unconnected datagram socket
            peer = None
        return printable(local), printable(peer) if peer is not None else None
    except OSError:
        return None
    finally:
        sock.detach()


class EventMaker:
    """Turns trace records into events, remembering each descriptor's addresses until it closes."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[str, str | None]] = {}

    def __call__(self, record: trace.Record) -> Event:
        line = printable(record.line)
        # Asked each time: a relay's workers are forks that go on writing to the same file.
        event: Event = {"pid": os.getpid(), "thread": record.thread, "actor": record.actor}
        event.update(parse_line(line))
        event.update(line=line, monotonic=record.monotonic, wall=record.wall)
        if record.started is not None:
            event["started"] = record.started
        if record.data is not None:
            event["data"] = printable(record.data)
        fd = event.get("new_fd") if event["call"] == "accept" else event.get("fd")
        if isinstance(fd, int):
            self._locate(event, fd)
        return event

    def _locate(self, event: Event, fd: int) -> None:
        if event["call"] == "close":
            names = self._known.pop(fd, None)
        else:
            names = _addresses(fd)
            if names is not None:
                known = self._known.get(fd)
                if names[1] is None and known is not None and known[0] == names[0]:
                    names = known  # a peer the socket had (a reset connection forgets it)
                self._known[fd] = names
        if names is not None:
            event["local"], event["peer"] = names
        if event["call"] in ("recvfrom", "sendto"):
            self._datagram_peer(event)

    @staticmethod
    def _datagram_peer(event: Event) -> None:
        """The other end of one datagram: the sender recvfrom() named, the address sendto() used."""
        result = event.get("result") or ""
        if event["call"] == "recvfrom" and " bytes from " in result:
            event["peer"] = result.split(" bytes from ", 1)[1].split(" (MSG_TRUNC", 1)[0]
        args = event.get("args") or []
        if event["call"] == "sendto" and len(args) >= 3 and args[2] != "connected peer":
            event["peer"] = args[2]


class MemoryRecorder:
    """Keeps the events in a list (the tour's diagrams)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._make = EventMaker()

    def __call__(self, record: trace.Record) -> None:
        self.events.append(self._make(record))


def open_trace_file(path: str) -> int:
    """Open ``path`` for the trace: created with mode 0o600 (the umask may only narrow it) and
    never through a symbolic link.  An existing file is emptied only if it is a regular file of
    this user that nobody else may read (the trace holds peer data: a file someone else made in
    /tmp, or left readable, would hand it over).  OSError otherwise, as the system said it or
    with the reason."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_APPEND
    fd = os.open(path, flags, 0o600)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, _("not a regular file"))
        if info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise OSError(
                errno.EPERM,
                _(
                    "it exists with mode {mode}, owned by uid {uid}; "
                    "the trace holds peer data and is only written to a file of yours with mode 600 "
                    "(remove it, or give a new path)"
                ).format(mode=f"{stat.S_IMODE(info.st_mode):o}", uid=info.st_uid),
            )
        os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def file_recorder(fd: int) -> trace.Recorder:
    """A recorder writing one JSON object per line to ``fd``, each line in one write (whole even
    if the process dies right after; the file is opened O_APPEND, so forked workers writing to
    it never overwrite each other's lines)."""
    make = EventMaker()
    lock = threading.Lock()

    def record(item: trace.Record) -> None:
        line = json.dumps(make(item), separators=(",", ":")) + "\n"
        with lock:
            os.write(fd, line.encode())

    return record

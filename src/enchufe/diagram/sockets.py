"""Which socket each call of a trace was made on: each process's descriptors followed through
``socket()``, ``accept()`` and ``close()``, with what the calls say of a socket (its addresses,
whether it listens, streams, and which call opened it).  :mod:`.model` draws the arrows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Step

__all__ = ["STREAM_IN", "STREAM_OUT", "Socket", "follow"]

#: Calls that move stream bytes out or in.
STREAM_OUT = ("send", "write")
STREAM_IN = ("recv", "read")


@dataclass
class Socket:
    """One socket of one process, from the call that made it to its close."""

    lifeline: int
    stream: bool | None
    local: str = ""
    peer: str = ""
    listening: bool = False
    steps: list[Step] = field(default_factory=list)
    opened: Step | None = None  # connect()'s (or accept()'s) step


def follow(steps: list[Step]) -> list[Socket]:
    """Each step given to the socket it was made on, following each process's descriptors
    through socket(), accept() and close()."""
    found: list[Socket] = []
    live: dict[tuple[int, int], Socket] = {}
    # Threads of one process share its descriptors, and their events are ordered by the times
    # they took, which two threads take at different points of a call: a number one thread
    # closes may be seen made again by another before that close.  The socket it replaces
    # stays here, its own lifeline's until its close comes.
    displaced: dict[tuple[int, int], list[Socket]] = {}

    def made(key: tuple[int, int], sock: Socket) -> None:
        old = live.get(key)
        if old is not None and old.lifeline != sock.lifeline:
            displaced.setdefault(key, []).append(old)
        live[key] = sock
        found.append(sock)

    def owner(key: tuple[int, int], lifeline: int) -> Socket | None:
        sock = live.get(key)
        if sock is not None and sock.lifeline != lifeline:
            for old in displaced.get(key, ()):
                if old.lifeline == lifeline:
                    return old
        return sock

    for step in steps:
        event = step.event
        pid = int(event["pid"])
        if event.get("error"):
            fd = event.get("fd")
            if isinstance(fd, int) and (sock := owner((pid, fd), step.lifeline)) is not None:
                sock.steps.append(step)
            continue
        new_fd = event.get("new_fd")
        if step.call == "socket" and isinstance(new_fd, int):
            kind = event.get("args", ["", ""])
            made((pid, new_fd), Socket(step.lifeline, "SOCK_STREAM" in kind if len(kind) > 1 else None))
        fd = event.get("fd")
        if not isinstance(fd, int):
            continue
        key = (pid, fd)
        sock = owner(key, step.lifeline) or _adopt(live, found, pid, fd, step)
        sock.steps.append(step)
        _learn(sock, step)
        if step.call == "accept" and isinstance(new_fd, int):
            accepted = Socket(step.lifeline, True, listening=False, opened=step)
            accepted.local, accepted.peer = str(event.get("local", "")), str(event.get("peer", ""))
            made((pid, new_fd), accepted)
        elif step.call == "close":
            if live.get(key) is sock:
                live.pop(key)
            elif sock in displaced.get(key, ()):
                displaced[key].remove(sock)
    return found


def _adopt(live: dict[tuple[int, int], Socket], found: list[Socket], pid: int, fd: int, step: Step) -> Socket:
    """A descriptor first seen in a call other than socket(): made before the trace began."""
    sock = Socket(step.lifeline, None)
    live[(pid, fd)] = sock
    found.append(sock)
    return sock


def _learn(sock: Socket, step: Step) -> None:
    event = step.event
    call = step.call
    if call == "listen":
        sock.listening = True
        sock.stream = True
    elif call in ("sendto", "recvfrom"):
        sock.stream = False
    elif call in STREAM_OUT + STREAM_IN and sock.stream is None:
        sock.stream = True
    if call == "accept":
        return  # its addresses are the accepted socket's
    if event.get("local"):
        sock.local = str(event["local"])
    if event.get("peer") and call not in ("sendto", "recvfrom"):
        sock.peer = str(event["peer"])
    connected = call == "connect" or (call == "getsockopt" and "SO_ERROR" in step.text)
    if connected and sock.opened is None and not sock.listening:
        sock.opened = step

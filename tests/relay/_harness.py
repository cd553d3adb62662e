"""The relay conformance suite's kit: the kind matrix, peers' views of an ending, frames, and the
narrated pump paths.

Everything here talks to the relay through its public API (:mod:`enchufe.relay`) and real sockets;
the relay runs in the test process (``relay_thread`` from the conftest), so results, stats and
events come straight from :class:`~enchufe.relay.Recorder` and :class:`~enchufe.relay.RelayResult`.

How a peer sees the end of a connection (:func:`ending`) depends on its kind, not on the relay: a
TCP socket closed with ``SO_LINGER`` 0 sends a reset, which the peer reads as ECONNRESET; a unix
stream socket has no reset, its peer reads ECONNRESET only if the closing side left bytes unread
(Linux marks the peer then), and otherwise an EOF.  So the suite asks for a *reset* where the
observing peer is TCP, and for *a close* (reset or EOF) where it is a unix socket.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from enchufe import trace
from enchufe.framing import HEADER, encode
from enchufe.relay import Snapshot
from tests.conftest import needs_ipv6

from .conftest import IO_TIMEOUT, STEP, RelayThread, wait_until

__all__ = [
    "DATAGRAM",
    "STREAM",
    "TCP",
    "Narration",
    "ending",
    "expected_endings",
    "kind_pairs",
    "narrated",
    "narrated_paths",
    "read_frames",
    "readable",
    "rotation",
    "send_frames",
    "wait_event",
    "wait_stats",
]

STREAM = ("tcp4", "tcp6", "unix", "unix-abstract")
DATAGRAM = ("udp4", "udp6", "unixgram", "unixgram-abstract")
TCP = ("tcp4", "tcp6")


def _param(listen: str, target: str) -> Any:
    marks = [needs_ipv6] if listen.endswith("6") or target.endswith("6") else []
    return pytest.param(listen, target, id=f"{listen}-to-{target}", marks=marks)


def kind_pairs(listens: tuple[str, ...], targets: tuple[str, ...]) -> list[Any]:
    """Every LISTEN kind x every TARGET kind, as ``(listen_kind, target_kind)`` parameters."""
    return [_param(listen, target) for listen in listens for target in targets]


def rotation(listens: tuple[str, ...], targets: tuple[str, ...]) -> list[Any]:
    """Each LISTEN kind once, each with a different TARGET kind (every kind on both sides, in
    len(listens) cases): for properties the combination does not change, only the kinds."""
    return [_param(listen, targets[(index + 1) % len(targets)]) for index, listen in enumerate(listens)]


def readable(sock: socket.socket, timeout: float = STEP) -> bool:
    """Wait (bounded) until ``sock`` has something to read (bytes, an EOF or an error)."""
    ready, _, _ = select.select([sock], [], [], timeout)
    return bool(ready)


def ending(sock: socket.socket, timeout: float = IO_TIMEOUT) -> tuple[str, int]:
    """Read until the peer ends the connection: ("reset" | "eof" | "timeout", bytes read)."""
    sock.settimeout(timeout)
    total = 0
    try:
        while chunk := sock.recv(65536):
            total += len(chunk)
    except ConnectionResetError:
        return "reset", total
    except TimeoutError:
        return "timeout", total
    return "eof", total


def expected_endings(kind: str) -> set[str]:
    """What a peer of ``kind`` may see when the relay resets its connection (see the module)."""
    return {"reset"} if kind in TCP else {"reset", "eof"}


def send_frames(sock: socket.socket, messages: list[bytes]) -> None:
    sock.sendall(b"".join(encode(message) for message in messages))


def read_frames(sock: socket.socket, count: int) -> list[bytes]:
    """Read exactly ``count`` length-prefixed messages (fails on an early EOF or a timeout)."""
    data = bytearray()
    messages: list[bytes] = []
    while len(messages) < count:
        while len(data) >= HEADER.size:
            (size,) = HEADER.unpack_from(data)
            if len(data) < HEADER.size + size:
                break
            messages.append(bytes(data[HEADER.size : HEADER.size + size]))
            del data[: HEADER.size + size]
        if len(messages) >= count:
            break
        chunk = sock.recv(1 << 17)
        assert chunk, f"the stream ended after {len(messages)} of {count} messages"
        data += chunk
    assert not data, f"{len(data)} bytes beyond the {count} messages"
    return messages


_ACCEPTED = re.compile(r"^accept\(fd \d+\) = fd (\d+) from ")
_OPENED = re.compile(r"^socket\(AF_\w+, SOCK_STREAM\) = fd (\d+)$")
_SPLICED = re.compile(r"^splice\(fd \d+, fd (\d+), ")
_WRITTEN = re.compile(r"^write\(fd (\d+), \d+ bytes\)")
_WRITE_RESULT = re.compile(r"^write\(fd (\d+), (\d+) bytes\) = (-1 EAGAIN|\d+)")


@contextlib.contextmanager
def narrated() -> Iterator[list[str]]:
    """The trace narration of everything the relay does while the block runs (tracing is
    process-wide: the relay's thread narrates; the test's plain sockets do not)."""
    lines: list[str] = []
    trace.enable(lines.append)
    try:
        yield lines
    finally:
        trace.disable()


def narrated_paths(lines: list[str]) -> dict[str, set[str]]:
    """Which pump path delivered bytes to each end: {"client": {"splice"|"copy"}, "target": …},
    from the narration of one relayed connection (its accept and its target socket)."""
    client = target = None
    for line in lines:
        if client is None and (match := _ACCEPTED.match(line)):
            client = match.group(1)
        elif target is None and (match := _OPENED.match(line)):
            target = match.group(1)
    assert client is not None and target is not None, "no accept or target socket in:\n" + "\n".join(lines)
    paths: dict[str, set[str]] = {"client": set(), "target": set()}
    names = {client: "client", target: "target"}
    for line in lines:
        for pattern, path in ((_SPLICED, "splice"), (_WRITTEN, "copy")):
            match = pattern.match(line)
            if match and match.group(1) in names:
                paths[names[match.group(1)]].add(path)
    return paths


class Narration:
    """Reads the narration as it grows (the relay's thread appends to ``lines``): which target
    sockets the relay opened, which descriptors a write found full (EAGAIN, or took only part of
    the bytes), which it spliced into."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.seen = 0
        self.targets: set[str] = set()
        self.full: set[str] = set()
        self.spliced: set[str] = set()

    def update(self) -> Narration:
        new = self.lines[self.seen :]
        self.seen += len(new)
        for line in new:
            if match := _OPENED.match(line):
                self.targets.add(match.group(1))
            elif match := _WRITE_RESULT.match(line):
                fd, asked, written = match.groups()
                if written.startswith("-") or int(written) < int(asked):  # bytes left in hand
                    self.full.add(fd)
            elif match := _SPLICED.match(line):
                self.spliced.add(match.group(1))
        return self


def wait_event(relay: RelayThread, name: str, count: int = 1, what: str = "") -> list[dict[str, Any]]:
    """The first ``count`` events called ``name`` (bounded wait)."""
    wait_until(lambda: len(relay.events.named(name)) >= count, what or f"{count} {name!r} event(s)")
    return relay.events.named(name)[:count]


def wait_stats(relay: RelayThread, **expected: int) -> Snapshot:
    """The relay's counters once they show ``expected`` (bounded wait): the relay's thread counts
    a delivery after the system call that made it, which a peer may already have seen."""

    def reached() -> bool:
        now = relay.relay.stats.snapshot()
        return all(getattr(now, name) == value for name, value in expected.items())

    with contextlib.suppress(AssertionError):
        wait_until(reached, f"the counters {expected}")
    return relay.relay.stats.snapshot()  # compared in full by the caller, which shows a miss

"""Helpers for the relay tests: the relay as a process (or a thread), targets, and transfers.

* :class:`RelayProc` / ``start_relay(LISTEN, TARGET, *options)``: ``python -m enchufe relay`` as
  a subprocess, its stderr collected by a thread; returns once ``listening on`` is printed.
  Every relay a test started is killed and reaped afterwards.
* ``relay_thread(config)``: the library's :class:`~enchufe.relay.Relay` run in a thread, with its
  events recorded; stopped (cut) afterwards.
* :class:`Target`: a listener the test owns, serving each connection with a function in a thread.
* :func:`exchange`: send a generated stream on a socket while receiving everything the peer
  sends, both hashed (sha256): the integrity check, without holding the data in memory.
* :func:`dial`: a blocking client socket to an enchufe address, with a timeout.

Every wait is bounded; every socket is closed (the suite turns ResourceWarning into errors).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import enchufe
from enchufe.address import InetAddress, UnixAddress
from enchufe.relay import Recorder, Relay, RelayConfig
from tests.conftest import Peer, connectable

ENCHUFE = (sys.executable, "-m", "enchufe")

#: No single step (a process starting, bytes arriving, a process ending) may take longer.
STEP = 15.0
#: Socket operations in tests give up after this long (a hang becomes a failure, not a stall).
IO_TIMEOUT = 30.0

LISTENING = re.compile(r"^(?:worker \d+: )?listening on (\S+)$", re.MULTILINE)


# ----------------------------------------------------------------------------- the relay process


class RelayProc:
    """``enchufe relay …`` with stderr collected as it comes."""

    def __init__(self, args: tuple[str, ...], prefix: tuple[str, ...] = ()) -> None:
        self.args = args
        self.popen = subprocess.Popen(
            [*prefix, *ENCHUFE, "relay", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._err = bytearray()
        self._cond = threading.Condition()
        self._open = True
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.address = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stderr is not None
        fd = self.popen.stderr.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self._cond:
                if not chunk:
                    self._open = False
                    self._cond.notify_all()
                    return
                self._err += chunk
                self._cond.notify_all()

    @property
    def err(self) -> str:
        with self._cond:
            return self._err.decode("utf-8", "replace")

    def wait_err(self, pattern: str, timeout: float = STEP) -> re.Match[str]:
        """Wait until ``pattern`` (multiline regex) matches stderr."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                match = regex.search(self._err.decode("utf-8", "replace"))
                if match:
                    return match
                left = deadline - time.monotonic()
                if left <= 0 or not self._open:
                    raise AssertionError(
                        f"relay {' '.join(self.args)}: no {pattern!r} on stderr within {timeout:g} s "
                        f"(exit status {self.popen.poll()}); stderr:\n{self._err.decode('utf-8', 'replace')}"
                    )
                self._cond.wait(min(left, 0.2))

    def listening(self) -> str:
        """The address of the ``listening on`` line (or its JSON form); a client's address."""
        match = self.wait_err(
            r'^(?:worker \d+: )?listening on (\S+)(?: pin \S+)?$|^(\{"event": "listening".*\})$'
        )
        address = match.group(1) if match.group(1) else json.loads(match.group(2))["address"]
        self.address = connectable(address)
        return self.address

    def json_events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.err.splitlines() if line.startswith("{")]

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.popen.send_signal(signum)

    def finish(self, timeout: float = STEP) -> int:
        try:
            status = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"relay still running after {timeout:g} s; stderr:\n{self.err}") from None
        self._reader.join(STEP)
        return status

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(STEP)
        self._reader.join(STEP)
        if self.popen.stderr is not None:
            self.popen.stderr.close()

    def rss_kib(self) -> int:
        """Resident memory of the relay process (VmRSS), in KiB."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def fd_kinds(self) -> dict[str, int]:
        """How many of the relay's descriptors are sockets, pipes, other."""
        counts = {"socket": 0, "pipe": 0, "other": 0}
        folder = f"/proc/{self.pid}/fd"
        for name in os.listdir(folder):
            with contextlib.suppress(OSError):
                link = os.readlink(os.path.join(folder, name))
                kind = link.split(":", 1)[0] if link.startswith(("socket:", "pipe:")) else "other"
                counts[kind] += 1
        return counts


StartRelay = Callable[..., RelayProc]


@pytest.fixture
def start_relay() -> Iterator[StartRelay]:
    """``start_relay(LISTEN, TARGET, *options)`` → a :class:`RelayProc` that is listening.

    ``prefix`` runs it under another command (``prlimit --nofile=…``)."""
    procs: list[RelayProc] = []

    def start(*args: str, wait: bool = True, prefix: tuple[str, ...] = ()) -> RelayProc:
        proc = RelayProc(args, prefix)
        procs.append(proc)
        if wait:
            proc.listening()
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            proc.kill()


# ----------------------------------------------------------------------------- the relay in a thread


@dataclass
class RelayThread:
    relay: Relay
    events: Recorder
    address: str
    peer: Peer


@contextlib.contextmanager
def relay_thread(config: RelayConfig) -> Iterator[RelayThread]:
    """Run the library's Relay in a thread; cut everything and join it at the end."""
    events = Recorder()
    relay = Relay(config, events=events)
    bound = relay.open()
    peer = Peer(relay.run)
    try:
        yield RelayThread(relay, events, connectable(bound), peer)
    finally:
        relay.stop(now=True)
        peer.result(STEP)


# ----------------------------------------------------------------------------- targets and clients


def sockaddr_of(address: str) -> tuple[int, Any]:
    """(family, sockaddr) to connect a plain socket to an enchufe address."""
    value = enchufe.parse(address)
    if isinstance(value, UnixAddress):
        return socket.AF_UNIX, value.sockaddr
    assert isinstance(value, InetAddress)
    if value.family == 6:
        return socket.AF_INET6, (value.host, value.port)
    return socket.AF_INET, (value.host, value.port)


def dial(address: str, *, family: int | None = None, timeout: float = IO_TIMEOUT) -> socket.socket:
    """A connected blocking socket (``family`` forces e.g. AF_INET6 for a mapped IPv4 host)."""
    fam, sockaddr = sockaddr_of(address)
    sock = socket.socket(family or fam, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def abort(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0)."""
    if sock.family != socket.AF_UNIX:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_all(sock: socket.socket, limit: int = 1 << 30) -> bytes:
    """Everything until EOF (raises what recv raises, e.g. ConnectionResetError)."""
    chunks = []
    total = 0
    while total < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True if the peer closes (EOF or reset) within ``timeout`` without sending anything."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(1)
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return data == b""


def turned_away(address: str, *, payload: bytes = b"", timeout: float = 5.0) -> float | None:
    """Connect, send ``payload``, and wait for the relay to close the connection without serving
    it: the seconds that took, or ``None`` if it did not happen within ``timeout``.

    A relay that resets a client at once may do so before ``connect()`` has returned on a busy
    machine: ``connect()`` then fails with ECONNRESET, which counts as turned away too.
    """
    started = time.monotonic()
    try:
        sock = dial(address)
    except ConnectionResetError:
        return time.monotonic() - started
    with sock:
        if payload:
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                sock.sendall(payload)
        if not closed_by_peer(sock, timeout):
            return None
    return time.monotonic() - started


def echo(conn: socket.socket) -> None:
    """Send back every byte, then close after the peer's EOF."""
    with contextlib.suppress(OSError):
        while data := conn.recv(65536):
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)


def ping(sock: socket.socket, payload: bytes = b"ping\n") -> bool:
    """Through an echoing target: does ``payload`` come back?"""
    try:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(len(payload) - len(got))
            if not chunk:
                return False
            got += chunk
    except OSError:
        return False
    return got == payload


class Target:
    """A listener owned by the test: each accepted connection is served by ``serve(conn)`` in a
    thread.  ``address`` is what the relay should connect to."""

    def __init__(self, address: str, serve: Callable[[socket.socket], Any], *, backlog: int = 128) -> None:
        self.listener = enchufe.listen(address, backlog=backlog)
        self.address = connectable(self.listener.address)
        self.serve = serve
        self.results: list[Peer] = []
        self.accepted = 0
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        sock = self.listener.socket
        while not self._stop:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.settimeout(IO_TIMEOUT)
            self.accepted += 1
            self.results.append(Peer(self._run, conn))

    def _run(self, conn: socket.socket) -> Any:
        with conn:
            return self.serve(conn)

    def wait_results(self, count: int, timeout: float = STEP) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.results) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the target accepted {len(self.results)} of {count} connections")
            time.sleep(0.01)
        return [peer.result(max(0.1, deadline - time.monotonic())) for peer in self.results[:count]]

    def close(self) -> None:
        self._stop = True
        self.listener.close()
        self._thread.join(STEP)

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- generated streams

_POOL_SIZE = 1 << 20
_CHUNK = 256 * 1024


def generated(seed: int, size: int) -> Iterator[bytes]:
    """``size`` bytes in chunks, reproducible from ``seed``: each chunk starts with its index, so
    a lost, repeated or reordered chunk changes the hash."""
    pool = random.Random(seed).randbytes(_POOL_SIZE + _CHUNK)
    index = 0
    left = size
    while left > 0:
        n = min(_CHUNK, left)
        offset = (index * 4099 * 16) % _POOL_SIZE
        yield (struct.pack(">Q", index) + pool[offset : offset + n])[:n]
        left -= n
        index += 1


def digest_of(seed: int, size: int) -> str:
    h = hashlib.sha256()
    for chunk in generated(seed, size):
        h.update(chunk)
    return h.hexdigest()


@dataclass
class Exchanged:
    sent: int
    sent_digest: str
    received: int
    received_digest: str


def exchange(sock: socket.socket, seed: int, size: int, *, half_close: bool = True) -> Exchanged:
    """Send ``size`` generated bytes (then shut down the write side) while receiving until EOF."""
    sent_hash = hashlib.sha256()
    sent = 0

    def send() -> None:
        nonlocal sent
        for chunk in generated(seed, size):
            sock.sendall(chunk)
            sent_hash.update(chunk)
            sent += len(chunk)
        if half_close:
            sock.shutdown(socket.SHUT_WR)

    sender = Peer(send)
    received_hash = hashlib.sha256()
    received = 0
    buffer = bytearray(256 * 1024)
    view = memoryview(buffer)
    while True:
        n = sock.recv_into(view)
        if not n:
            break
        received_hash.update(view[:n])
        received += n
    sender.result(IO_TIMEOUT)
    return Exchanged(sent, sent_hash.hexdigest(), received, received_hash.hexdigest())


def wait_until(check: Callable[[], bool], what: str, timeout: float = STEP) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.02)


# ----------------------------------------------------------------------------- datagrams


def datagram_socket(address: str, *, bind: bool = False, timeout: float = 5.0) -> socket.socket:
    """A datagram socket for ``address``: bound to it (``bind``), or connected to it.  A unix
    client is auto-bound first, so that it has an address to be answered at."""
    family, sockaddr = sockaddr_of(address)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        if bind:
            sock.bind(sockaddr)
        else:
            if family == socket.AF_UNIX:
                sock.bind("")  # autobind: an abstract name the relay can answer
            sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


Respond = Callable[[bytes, Any], "bytes | None"]


def echo_datagram(data: bytes, sender: Any) -> bytes:
    return data


class DatagramTarget:
    """A datagram socket owned by the test: every datagram is recorded with its sender and
    answered with ``respond(data, sender)`` (nothing if it returns None)."""

    def __init__(self, address: str, respond: Respond = echo_datagram) -> None:
        self.sock = datagram_socket(address, bind=True, timeout=0.2)
        bound = self.sock.getsockname()
        value = enchufe.parse(address)
        if isinstance(value, InetAddress):
            self.address = str(InetAddress(value.transport, value.host, bound[1], value.forced_family))
        else:
            self.address = address
        self.respond = respond
        self.received: list[tuple[bytes, Any]] = []
        self._arrived = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                data, sender = self.sock.recvfrom(1 << 17)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._arrived:
                self.received.append((data, sender))
                self._arrived.notify_all()
            answer = self.respond(data, sender)
            if answer is not None and sender:
                with contextlib.suppress(OSError):
                    self.sock.sendto(answer, sender)

    def wait_received(self, count: int, timeout: float = IO_TIMEOUT) -> list[bytes]:
        """Wait until ``count`` datagrams have arrived (the target's thread records them after
        the relay has sent them): every datagram so far.  Fails after ``timeout``."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"{len(self.received)} of {count} datagrams within {timeout:g} s")
            return [data for data, _sender in self.received]

    def senders(self) -> set[Any]:
        return {sender for _data, sender in self.received}

    def close(self) -> None:
        self._stop = True
        self._thread.join(STEP)
        self.sock.close()

    def __enter__(self) -> DatagramTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def final_summary(relay: RelayProc) -> dict[str, Any]:
    """Stop a ``--json`` relay and return its summary event."""
    relay.signal()
    assert relay.finish() == 0, relay.err
    (summary,) = [e for e in relay.json_events() if e["event"] == "summary"]
    return summary

"""A stalled peer costs the relay no CPU, on every path, and loses nothing when it resumes.

Each test stalls one path: a peer stops reading (the target, the client, a child, a pipe nobody
reads) while the other side writes until its own writes are refused for a while, so that every
buffer in between (kernel queues, the relay's pipes and bulk buffers) is full.  The relay's CPU
time (utime + stime of ``/proc/PID/stat``, never the wall clock) is then sampled over
:data:`STALL_SECONDS`: a relay that keeps asking to read while it cannot write wakes up for
nothing tens of thousands of times a second.  Then the staller resumes and everything must
arrive: the sha256 of what was sent is compared with that of what was received (datagrams that
the kernel may drop, UDP's, are checked one by one instead).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import select
import shlex
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

import enchufe
from tests.conftest import Peer

from .conftest import ENCHUFE, IO_TIMEOUT, STEP, StartRelay, dial, generated

#: Length of the CPU sample taken once the stall is established.
STALL_SECONDS = 2.0
#: CPU the relay may spend in that time: a few wake-ups (timers, a window probe), nothing more.
#: A relay that spins on a stalled peer spends most of the interval.
CPU_BOUND = 0.1
_CLK_TCK = os.sysconf("SC_CLK_TCK")

#: A writer counts as stalled once this many writes in a row, :data:`RETRY` seconds apart, were
#: refused (EAGAIN).
SETTLED = 8
RETRY = 0.05
#: Bytes a writer may push before the path must have stalled: every buffer on the way (socket
#: queues of a few MiB each, a 4 MiB bulk buffer, pipes) holds far less together.
MAX_PUSH = 512 << 20
#: Bytes sent after the staller resumes, before the writer's EOF.
EXTRA = 1 << 20


# ----------------------------------------------------------------------------- CPU time


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) the process ``pid`` has used so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def assert_costs_no_cpu(
    pid: int, what: str, seconds: float = STALL_SECONDS, bound: float = CPU_BOUND
) -> None:
    """Sample the CPU time of ``pid`` over ``seconds``: it must stay under ``bound``."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    used = cpu_seconds(pid) - before
    assert used < bound, (
        f"the relay used {used:.2f} s of CPU in {seconds:g} s while {what}: a stalled peer must cost nothing"
    )


# ----------------------------------------------------------------------------- writers and readers


def _wait(fd: int, events: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(timeout * 1000))


class Writer:
    """A generated stream written to a non-blocking descriptor (socket or pipe), hashed as the
    descriptor takes it."""

    def __init__(self, fd: int, seed: int, end: Callable[[], None]) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._end = end
        self._chunks = generated(seed, 1 << 50)
        self._left = memoryview(b"")
        self.sent = 0
        self._hash = hashlib.sha256()

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()

    def _write_once(self) -> int:
        """One write (raises BlockingIOError when refused)."""
        if not self._left:
            self._left = memoryview(next(self._chunks))
        n = os.write(self.fd, self._left)
        self._hash.update(self._left[:n])
        self._left = self._left[n:]
        self.sent += n
        return n

    def push_until_stalled(self) -> None:
        """Write until :data:`SETTLED` writes in a row are refused: the path is full."""
        refused = 0
        deadline = time.monotonic() + STEP
        while refused < SETTLED:
            try:
                self._write_once()
                refused = 0
            except BlockingIOError:
                refused += 1
                time.sleep(RETRY)
            assert self.sent < MAX_PUSH, f"{self.sent} bytes went in and the path never stalled"
            assert time.monotonic() < deadline, f"still writing after {STEP:g} s ({self.sent} bytes)"
        assert self.sent > 0

    def finish(self, extra: int = EXTRA) -> None:
        """Write ``extra`` more bytes (as the path lets them through), then the EOF."""
        target = self.sent + extra
        deadline = time.monotonic() + IO_TIMEOUT
        while self.sent < target:
            assert _wait(self.fd, select.POLLOUT, deadline - time.monotonic()), "the path never resumed"
            with contextlib.suppress(BlockingIOError):
                self._write_once()
        self._end()


def drain(fd: int) -> tuple[int, str]:
    """Read a descriptor until EOF: (bytes, sha256)."""
    os.set_blocking(fd, False)
    digest = hashlib.sha256()
    total = 0
    buffer = bytearray(1 << 18)
    view = memoryview(buffer)
    deadline = time.monotonic() + IO_TIMEOUT
    while True:
        try:
            n = os.readv(fd, [view])
        except BlockingIOError:
            assert _wait(fd, select.POLLIN, deadline - time.monotonic()), f"no EOF after {total} bytes"
            continue
        if not n:
            return total, digest.hexdigest()
        digest.update(view[:n])
        total += n


@dataclass
class Flow:
    """One direction of a stalled path: who writes, and where its bytes come out."""

    name: str
    writer: Writer
    out_fd: int


def resume(flows: list[Flow]) -> None:
    """The stallers read again: every byte of every flow must arrive, then its EOF."""
    readers = [Peer(drain, flow.out_fd) for flow in flows]
    writers = [Peer(flow.writer.finish) for flow in flows]
    for peer in writers:
        peer.result(IO_TIMEOUT)
    for flow, peer in zip(flows, readers, strict=True):
        received, digest = peer.result(IO_TIMEOUT)
        assert received == flow.writer.sent, f"{flow.name}: {received} of {flow.writer.sent} bytes arrived"
        assert digest == flow.writer.digest, f"{flow.name}: the bytes that arrived differ from those sent"


def socket_writer(sock: socket.socket, seed: int) -> Writer:
    return Writer(sock.fileno(), seed, lambda: sock.shutdown(socket.SHUT_WR))


# ----------------------------------------------------------------------------- stream → stream

STREAM_PATHS = [
    pytest.param("tcp4", "tcp4", (), id="tcp-tcp"),
    pytest.param("unix", "tcp4", (), id="unix-tcp"),
    pytest.param("tcp4", "unix", (), id="tcp-unix"),
    pytest.param("unix", "unix", (), id="unix-unix"),
    pytest.param("tcp4", "tcp4", ("--no-splice",), id="tcp-tcp-no-splice"),
    pytest.param("unix", "tcp4", ("--no-splice",), id="unix-tcp-no-splice"),
]

#: Who stops reading: the target (the client's bytes stall), the client (the target's replies
#: stall), or both at once.
STALLERS = ["target", "client", "both"]


@contextlib.contextmanager
def accepting(address: str) -> Iterator[tuple[str, Callable[[], socket.socket]]]:
    """A target listener: (its address, a function that accepts the relay's connection)."""
    listener = enchufe.listen(address)
    listener.socket.settimeout(STEP)
    accepted: list[socket.socket] = []

    def accept() -> socket.socket:
        conn, _ = listener.socket.accept()
        accepted.append(conn)
        return conn

    try:
        yield str(listener.address), accept
    finally:
        for conn in accepted:
            conn.close()
        listener.close()


@pytest.mark.parametrize("staller", STALLERS)
@pytest.mark.parametrize(("listen", "target", "options"), STREAM_PATHS)
def test_a_stalled_stream_peer_costs_no_cpu(
    start_relay: StartRelay,
    make_address: Callable[[str], str],
    listen: str,
    target: str,
    options: tuple[str, ...],
    staller: str,
) -> None:
    with accepting(make_address(target)) as (target_address, accept):
        relay = start_relay(make_address(listen), target_address, *options)
        with dial(relay.address) as client:
            conn = accept()
            flows = []
            if staller in ("target", "both"):
                flows.append(Flow("client → target", socket_writer(client, 1), conn.fileno()))
            if staller in ("client", "both"):
                flows.append(Flow("target → client", socket_writer(conn, 2), client.fileno()))
            for flow in flows:
                flow.writer.push_until_stalled()
            what = "neither peer read" if staller == "both" else f"the {staller} did not read"
            assert_costs_no_cpu(relay.pid, what)
            resume(flows)


def wait_queue_settled(sock: socket.socket, what: str) -> None:
    """For a writer the test does not drive (a child): wait until bytes wait in ``sock``'s receive
    queue and their count has not changed for :data:`SETTLED` looks, :data:`RETRY` s apart."""
    last = -1
    same = 0
    deadline = time.monotonic() + STEP
    while same < SETTLED:
        queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
        same = same + 1 if queued == last and queued > 0 else 0
        last = queued
        assert time.monotonic() < deadline, f"{what}: the path never stalled ({queued} bytes queued)"
        time.sleep(RETRY)


# ----------------------------------------------------------------------------- stdio


@pytest.mark.parametrize("staller", ["target", "stdout", "both"])
def test_a_stalled_stdio_relay_costs_no_cpu(
    make_address: Callable[[str], str], sock_dir: str, staller: str
) -> None:
    """``relay - TARGET``: the target does not read what comes from stdin, or nobody reads the
    relay's stdout (a pipe), or both."""
    with (
        accepting(make_address("tcp4")) as (target_address, accept),
        open(os.path.join(sock_dir, "stderr"), "w+b") as err,
    ):
        proc = subprocess.Popen(
            [*ENCHUFE, "relay", "-", target_address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            conn = accept()
            flows = []
            if staller in ("target", "both"):
                flows.append(
                    Flow("stdin → target", Writer(proc.stdin.fileno(), 3, proc.stdin.close), conn.fileno())
                )
            if staller in ("stdout", "both"):
                flows.append(Flow("target → stdout", socket_writer(conn, 4), proc.stdout.fileno()))
            for flow in flows:
                flow.writer.push_until_stalled()
            what = "nobody read" if staller == "both" else f"{staller} was not read"
            assert_costs_no_cpu(proc.pid, what)
            if staller == "target":  # the other direction ends too, so that the relay can finish
                conn.shutdown(socket.SHUT_WR)
            elif staller == "stdout":
                proc.stdin.close()
            resume(flows)
            assert proc.wait(STEP) == 0, err.seek(0) or err.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(STEP)
            proc.stdin.close()
            proc.stdout.close()


# ----------------------------------------------------------------------------- exec

#: The child of the exec tests: writes SIZE random bytes to stdout (in a thread) while it waits for
#: FLAG to exist before reading stdin to its EOF; then a trailer line: the sha256 of what it wrote,
#: the count and sha256 of what it read.
CHILD = """
import hashlib, os, sys, threading, time
size, flag = int(sys.argv[1]), sys.argv[2]
written = hashlib.sha256()
def write():
    left = size
    while left:
        chunk = os.urandom(min(left, 1 << 16))
        written.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(1, view):]
        left -= len(chunk)
writer = threading.Thread(target=write)
writer.start()
for _ in range(1200):  # at most 60 s
    if os.path.exists(flag):
        break
    time.sleep(0.05)
read = hashlib.sha256()
count = 0
while chunk := os.read(0, 1 << 16):
    read.update(chunk)
    count += len(chunk)
writer.join()
os.write(1, f"{written.hexdigest()} {count} {read.hexdigest()}\\n".encode())
"""

#: Bytes the child writes when the client is the staller: more than every buffer on the way.
CHILD_SIZE = 64 << 20


@pytest.mark.parametrize("staller", ["child", "client", "both"])
def test_a_stalled_exec_relay_costs_no_cpu(
    start_relay: StartRelay, make_address: Callable[[str], str], sock_dir: str, staller: str
) -> None:
    """``relay LISTEN exec:…``: the child does not read its stdin while the client writes, or the
    client does not read what the child writes, or both."""
    script = os.path.join(sock_dir, "child.py")
    with open(script, "w") as f:
        f.write(CHILD)
    flag = os.path.join(sock_dir, "read-now")
    if staller == "client":
        open(flag, "w").close()  # the child reads at once; only the client stalls
    size = CHILD_SIZE if staller in ("client", "both") else 0
    program = shlex.join([sys.executable, script, str(size), flag])
    relay = start_relay(make_address("tcp4"), f"exec:{program}")
    with dial(relay.address) as client:
        writer = socket_writer(client, 5)
        if staller in ("child", "both"):
            writer.push_until_stalled()
        if staller in ("client", "both"):
            wait_queue_settled(client, "the child's output")
        what = "nobody read" if staller == "both" else f"the {staller} did not read"
        assert_costs_no_cpu(relay.pid, what)
        open(flag, "w").close()
        reader = Peer(drain_bytes, client.fileno())
        writer.finish()
        received = reader.result(IO_TIMEOUT)
    data, trailer = received[:size], received[size:]
    written, count, read = trailer.decode().split()
    assert len(data) == size and hashlib.sha256(data).hexdigest() == written, "the child's output was cut"
    assert (int(count), read) == (writer.sent, writer.digest), "the child did not get what the client sent"


def drain_bytes(fd: int) -> bytes:
    """Read a descriptor until EOF, keeping the bytes."""
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    deadline = time.monotonic() + IO_TIMEOUT
    while True:
        try:
            chunk = os.read(fd, 1 << 18)
        except BlockingIOError:
            assert _wait(fd, select.POLLIN, deadline - time.monotonic()), "no EOF"
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)

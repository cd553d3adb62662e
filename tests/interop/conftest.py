"""Helpers for interop tests: enchufe against programs we did not write (socat, OpenBSD nc).

Everything runs on loopback (127.0.0.1, ::1, unix paths in ``sock_dir``, abstract names with a
random suffix).  Every child process runs under :func:`spawn`, which collects its stdout and
stderr in threads, bounds every wait and kills the child on the way out, whatever happened.

* ``program``: ``"socat"`` or ``"nc"``, parametrized; skipped when the tool is missing, or a
  failure when ``CI`` is set (CI installs both).
* :class:`Where`: where a server is bound, and how socat, nc and enchufe spell it for each
  role (:func:`socat_client`, :func:`socat_server`, :func:`nc_client`, :func:`nc_server`).
* :func:`wait_bound`: readiness of a server we did not write, read from ``/proc/net`` (a probe
  connection would use up a single-client server's one accept).
* :func:`socat_transfers`: the size of every read socat logged with ``-x`` (one per datagram).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import IO

import pytest

#: Seconds any single wait may take before the test fails (a stuck peer, never a slow one).
WAIT = 10.0

STREAM_KINDS = ("tcp4", "tcp6", "unix", "unix-abstract")
DATAGRAM_KINDS = ("udp4", "udp6", "unixgram", "unixgram-abstract")
PROGRAMS = ("socat", "nc")

#: Stream payloads: a few hundred KiB each way, different sizes so that a swap would show.
UPSTREAM_SIZE = 256 * 1024
DOWNSTREAM_SIZE = 192 * 1024
#: Both ways at once: more than loopback socket buffers hold, so both sides must read while writing.
FULL_DUPLEX_SIZE = 2 * 1024 * 1024
#: Datagram payloads: each at most PIPE_BUF (4096) so that one write to a child's stdin is read
#: whole (one datagram), and below socat's 8192-byte buffer.
REQUEST_SIZES = (1, 1400, 4096)
REPLY_SIZES = (3000, 7, 512)


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _has_ipv6()


def kind_params(kinds: tuple[str, ...]) -> list[object]:
    marks = pytest.mark.skipif(not HAS_IPV6, reason="this host cannot bind ::1")
    return [pytest.param(k, id=k, marks=[marks] if k.endswith("6") else []) for k in kinds]


# ----------------------------------------------------------------------------- tools


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, and CI installs it)")
    pytest.skip(reason)


def _find_socat() -> str:
    path = shutil.which("socat")
    if path is None:
        _missing("socat is not installed")
    assert path is not None
    return path


def _find_nc() -> str:
    path = shutil.which("nc")
    if path is None:
        _missing("nc (netcat-openbsd) is not installed")
    assert path is not None
    # -N, -q, -U with @abstract and -s for unix datagrams are OpenBSD netcat's (Debian's build).
    probe = subprocess.run([path, "-h"], capture_output=True, timeout=WAIT, check=False)
    if b"OpenBSD netcat" not in probe.stdout + probe.stderr:
        _missing(f"{path} is not OpenBSD netcat (netcat-openbsd); its flags differ")
    return path


@pytest.fixture(params=PROGRAMS)
def program(request: pytest.FixtureRequest) -> str:
    """The foreign program's name, after checking it is installed."""
    name: str = request.param
    (_find_socat if name == "socat" else _find_nc)()
    return name


# ----------------------------------------------------------------------------- children


class Proc:
    """A child with piped stdio; stdout and stderr are collected by threads as they come."""

    def __init__(self, argv: list[str], name: str) -> None:
        self.name = name
        self.argv = argv
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.out = bytearray()
        self.err = bytearray()
        self._eof = {"out": False, "err": False}
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._feed_error: BaseException | None = None
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._start(self._collect, self.popen.stdout, self.out, "out")
        self._start(self._collect, self.popen.stderr, self.err, "err")

    def _start(self, fn: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=fn, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _collect(self, stream: IO[bytes], sink: bytearray, which: str) -> None:
        fd = stream.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self._cond:
                if not chunk:
                    self._eof[which] = True
                    self._cond.notify_all()
                    return
                sink += chunk
                self._cond.notify_all()

    # -- stdin

    def write(self, data: bytes) -> None:
        """One write to the child's stdin (at most PIPE_BUF bytes arrive in one read)."""
        assert self.popen.stdin is not None
        self.popen.stdin.write(data)
        self.popen.stdin.flush()

    def close_stdin(self) -> None:
        assert self.popen.stdin is not None
        if not self.popen.stdin.closed:
            with suppress(BrokenPipeError):
                self.popen.stdin.close()

    def feed(self, data: bytes) -> None:
        """Write ``data`` to stdin from a thread (large data must not block the test), then close."""

        def run() -> None:
            try:
                self.write(data)
            except BaseException as exc:
                self._feed_error = exc
            finally:
                self.close_stdin()

        self._start(run)

    # -- waiting

    def _diagnosis(self) -> str:
        rc = self.popen.poll()
        state = "still running" if rc is None else f"exited with status {rc}"
        tail = bytes(self.err[-1500:]).decode(errors="replace")
        return (
            f"{self.name} ({' '.join(self.argv)}) {state}; stdout has {len(self.out)} bytes; stderr:\n{tail}"
        )

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}: {self._diagnosis()}")
                if self._eof["out"] and self._eof["err"] and self.popen.poll() is not None:
                    raise AssertionError(f"gave up waiting for {what}: {self._diagnosis()}")
                self._cond.wait(min(left, 0.1))

    def wait_stdout(self, size: int, timeout: float = WAIT) -> bytes:
        """Wait until stdout holds at least ``size`` bytes; returns what it holds."""
        self.wait_until(lambda: len(self.out) >= size, f"{size} bytes on {self.name}'s stdout", timeout)
        return bytes(self.out)

    def wait_lines(self, count: int, timeout: float = WAIT) -> None:
        """Wait until stdout holds at least ``count`` complete lines."""
        self.wait_until(
            lambda: self.out.count(b"\n") >= count, f"{count} lines on {self.name}'s stdout", timeout
        )

    def wait_stderr(self, pattern: re.Pattern[bytes], timeout: float = WAIT) -> re.Match[bytes]:
        found: list[re.Match[bytes]] = []

        def ready() -> bool:
            match = pattern.search(self.err)
            if match:
                found.append(match)
            return match is not None

        self.wait_until(ready, f"{pattern.pattern!r} on {self.name}'s stderr", timeout)
        return found[0]

    def finish(self, timeout: float = WAIT) -> int:
        """Wait for the child to exit and for its output to be collected; its exit status."""
        try:
            status = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout} s: {self._diagnosis()}"
            ) from None
        for thread in self._threads:
            thread.join(timeout)
        if self._feed_error is not None and not isinstance(self._feed_error, BrokenPipeError):
            raise self._feed_error
        return status

    def stop(self) -> int:
        """SIGTERM, as a user stopping a server would, then :meth:`finish`."""
        assert self.alive(), f"{self.name} exited before it was stopped: {self._diagnosis()}"
        self.popen.send_signal(signal.SIGTERM)
        return self.finish()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        try:
            self.popen.wait(WAIT)
        finally:
            self.close_stdin()
            for thread in self._threads:
                thread.join(1.0)
            for stream in (self.popen.stdout, self.popen.stderr):
                if stream is not None:
                    stream.close()


@contextmanager
def spawn(argv: list[str], name: str | None = None) -> Iterator[Proc]:
    """Run ``argv`` with piped stdio; it is killed (if still running) and reaped on exit."""
    proc = Proc(argv, name or os.path.basename(argv[0]))
    try:
        yield proc
    finally:
        proc.kill()


def enchufe(*args: str) -> list[str]:
    return [sys.executable, "-m", "enchufe", *args]


LISTENING = re.compile(rb'listening on (\S+)|"event": "listening", "address": "([^"]+)"')


def listening_address(server: Proc) -> str:
    """The address in enchufe's ``listening on ADDRESS`` line (plain or ``--json``)."""
    match = server.wait_stderr(LISTENING)
    return (match.group(1) or match.group(2)).decode()


# ----------------------------------------------------------------------------- addresses


@dataclass(frozen=True)
class Where:
    """A server's location: ``port`` for inet kinds, ``path`` (a file, or an abstract name)."""

    kind: str
    port: int = 0
    path: str = ""

    @property
    def inet(self) -> bool:
        return self.kind[-1] in "46"

    @property
    def v6(self) -> bool:
        return self.kind.endswith("6")

    @property
    def abstract(self) -> bool:
        return self.kind.endswith("-abstract")

    @property
    def stream(self) -> bool:
        return self.kind in STREAM_KINDS

    @property
    def host(self) -> str:
        return "::1" if self.v6 else "127.0.0.1"

    @property
    def socat_host(self) -> str:
        return "[::1]" if self.v6 else "127.0.0.1"

    def enchufe(self) -> str:
        """enchufe's spelling of this location."""
        if self.inet:
            scheme = ("tcp" if self.stream else "udp") + self.kind[-1]
            host = "[::1]" if self.v6 else "127.0.0.1"
            return f"{scheme}://{host}:{self.port}"
        scheme = "unix" if self.stream else "unixgram"
        return f"{scheme}:@{self.path}" if self.abstract else f"{scheme}://{self.path}"

    def nc_target(self) -> list[str]:
        if self.inet:
            return [self.host, str(self.port)]
        return [f"@{self.path}" if self.abstract else self.path]


def new_where(kind: str, sock_dir: str, *, free: bool = True) -> Where:
    """A fresh location: a free loopback port (bound to 0 first), a new path, or a new name.

    With ``free=False`` inet kinds get port 0, for servers that report the port they got.
    """
    if kind in ("unix", "unixgram"):
        return Where(kind, path=os.path.join(sock_dir, f"srv-{uuid.uuid4().hex[:8]}.sock"))
    if kind.endswith("-abstract"):
        return Where(kind, path=f"enc-interop-{uuid.uuid4().hex[:12]}")
    port = 0
    if free:
        family = socket.AF_INET6 if kind.endswith("6") else socket.AF_INET
        sock_type = socket.SOCK_STREAM if kind in STREAM_KINDS else socket.SOCK_DGRAM
        with socket.socket(family, sock_type) as probe:
            probe.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
            port = probe.getsockname()[1]
    return Where(kind, port=port)


def located(kind: str, address: str, requested: Where) -> Where:
    """``requested`` with the port enchufe reported in its listening line."""
    if not requested.inet:
        assert address == requested.enchufe(), f"enchufe listens on {address}, not {requested.enchufe()}"
        return requested
    return Where(kind, port=int(address.rsplit(":", 1)[1]))


def socat_client(where: Where, sock_dir: str) -> str:
    """socat's address for a client of ``where``; datagram clients are bound so replies reach them."""
    kind = where.kind
    if where.inet:
        prefix = {"tcp4": "TCP4", "tcp6": "TCP6", "udp4": "UDP4-SENDTO", "udp6": "UDP6-SENDTO"}[kind]
        return f"{prefix}:{where.socat_host}:{where.port}"
    if kind == "unix":
        return f"UNIX-CONNECT:{where.path}"
    if kind == "unix-abstract":
        return f"ABSTRACT-CONNECT:{where.path}"
    if kind == "unixgram":
        return f"UNIX-SENDTO:{where.path},bind={os.path.join(sock_dir, 'socat-client.sock')}"
    return f"ABSTRACT-SENDTO:{where.path},bind={where.path}-client"


def socat_server(where: Where, replies: str = "many") -> str:
    """socat's address for a server at ``where``.

    Datagram servers: ``replies="many"`` talks with the first sender both ways (UDP*-LISTEN;
    unix datagrams have no such address, so UNIX-RECVFROM: one datagram in, any number out),
    ``"one"`` takes one datagram and may answer it (*-RECVFROM), ``"none"`` only receives (*-RECV).
    """
    kind = where.kind
    if where.inet:
        family = kind[-1]
        if where.stream:
            return f"TCP{family}-LISTEN:{where.port},bind={where.socat_host},reuseaddr"
        mode = {"many": "LISTEN", "one": "RECVFROM", "none": "RECV"}[replies]
        return f"UDP{family}-{mode}:{where.port},bind={where.socat_host}"
    prefix = "ABSTRACT" if where.abstract else "UNIX"
    if where.stream:
        return f"{prefix}-LISTEN:{where.path}"
    return f"{prefix}-{'RECV' if replies == 'none' else 'RECVFROM'}:{where.path}"


def socat(*args: str) -> list[str]:
    return [_find_socat(), *args]


def nc_client(where: Where, sock_dir: str) -> list[str]:
    """nc as a client of ``where``: -N shuts the socket down on stdin's EOF; datagram clients
    quit at stdin's EOF (-q 0) and unix ones bind a reply path (-s) so that replies reach them."""
    flags = ["-4" if where.kind.endswith("4") else "-6"] if where.inet else ["-U"]
    if where.stream:
        flags.append("-N")
    else:
        flags += ["-u", "-q", "0"]
        if not where.inet:
            flags += ["-s", os.path.join(sock_dir, "nc-client.sock")]
    return [_find_nc(), *flags, *where.nc_target()]


def nc_server(where: Where, replies: str = "many") -> list[str]:
    """nc listening at ``where``: -N shuts the socket down on stdin's EOF (stream).

    A datagram server connects to its first sender, answers it and quits at stdin's EOF
    (-q 0); with ``replies="none"`` it takes datagrams from every sender and answers none (-k:
    it never connects, for a sender may be gone already; it never ends by itself either).
    """
    flags = ["-4" if where.kind.endswith("4") else "-6"] if where.inet else ["-U"]
    if where.stream:
        flags += ["-l", "-N"]
    elif replies == "none":
        flags += ["-l", "-u", "-k"]
    else:
        flags += ["-l", "-u", "-q", "0"]
    return [_find_nc(), *flags, *where.nc_target()]


# ----------------------------------------------------------------------------- readiness


def _bound_now(where: Where) -> bool:
    if where.inet:
        proto = ("tcp" if where.stream else "udp") + ("6" if where.v6 else "")
        with open(f"/proc/net/{proto}") as table:
            next(table)
            for line in table:
                fields = line.split()
                local, state = fields[1], fields[3]
                if int(local.rsplit(":", 1)[1], 16) == where.port and (not where.stream or state == "0A"):
                    return True
        return False
    name = f"@{where.path}" if where.abstract else where.path
    with open("/proc/net/unix") as table:
        next(table)
        for line in table:
            fields = line.split()
            if len(fields) < 8 or fields[7] != name:
                continue
            flags, sock_type = int(fields[3], 16), int(fields[4], 16)
            if where.stream and sock_type == socket.SOCK_STREAM and flags & 0x10000:  # __SO_ACCEPTCON
                return True
            if not where.stream and sock_type == socket.SOCK_DGRAM:
                return True
    return False


def wait_bound(where: Where, server: Proc, timeout: float = WAIT) -> None:
    """Wait until ``server`` listens (stream) or is bound (datagram) at ``where``.

    Read from /proc/net rather than probed: a probe connection would be the one client that
    socat or nc serves.
    """
    deadline = time.monotonic() + timeout
    while not _bound_now(where):
        if not server.alive():
            raise AssertionError(f"server exited before binding {where}: {server._diagnosis()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing bound at {where} after {timeout} s: {server._diagnosis()}")
        time.sleep(0.01)


# ----------------------------------------------------------------------------- data


def danted_config(port: int, allowed: int, commands: str) -> str:
    """A dante-server configuration: listening on 127.0.0.1:``port``, no authentication, allowing
    ``commands`` (``connect``, ``udpassociate``…) from loopback to 127.0.0.1:``allowed`` only
    (and the UDP replies of an association), blocking the rest."""
    udp_replies = (
        "socks pass { from: 127.0.0.1/32 to: 127.0.0.1/32\n  command: udpreply\n  log: connect error }\n"
        if "udpassociate" in commands
        else ""
    )
    return (
        "logoutput: stderr\n"
        f"internal: 127.0.0.1 port = {port}\n"
        "external: lo\n"
        "socksmethod: none\n"
        "client pass { from: 127.0.0.1/32 to: 0.0.0.0/0 }\n"
        f"socks pass {{ from: 127.0.0.1/32 to: 127.0.0.1/32 port = {allowed}\n"
        f"  command: {commands}\n  log: connect error }}\n"
        f"{udp_replies}"
        "socks block { from: 0.0.0.0/0 to: 0.0.0.0/0\n  log: connect error }\n"
    )


def digest(data: bytes | bytearray) -> str:
    return f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}"


def assert_same(got: bytes | bytearray, expected: bytes, what: str) -> None:
    assert digest(got) == digest(expected), f"{what}: got {digest(got)}, expected {digest(expected)}"


_TRANSFER = re.compile(rb"^([<>]) \d{4}/\d\d/\d\d [\d:.]+\s+length=(\d+) from=", re.MULTILINE)


def socat_transfers(stderr: bytes | bytearray, direction: str) -> list[int]:
    """Sizes of socat's ``-x`` transfers: ``">"`` first address → second, ``"<"`` back."""
    return [int(m.group(2)) for m in _TRANSFER.finditer(stderr) if m.group(1).decode() == direction]


def json_datagrams(stdout: bytes | bytearray) -> list[dict[str, object]]:
    """enchufe's ``--json`` datagram records (complete lines only)."""
    lines = bytes(stdout).split(b"\n")[:-1]
    return [json.loads(line) for line in lines]

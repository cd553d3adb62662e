"""`enchufe check` beside `nc -z`, and connect's nc-like options beside nc's own.

Each test gives OpenBSD nc and enchufe the same server and compares what a script would see:
exit status, stdout, and what the server received or saw as its peer.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from .conftest import WAIT, _find_nc, enchufe, spawn

pytestmark = pytest.mark.interop

Argv = Callable[[int], list[str]]

#: A closed UDP port says so with ICMP port unreachable, which the kernel rate-limits for the
#: whole host (net.ipv4.icmp_msgs_per_sec, bursts of 50): under a load of other tests one probe
#: may go unanswered.  A refusal is therefore looked for a few times, each on a new port.
UDP_REFUSAL_TRIES = 3


@pytest.fixture
def nc() -> str:
    return _find_nc()


@dataclass
class Banner:
    """A TCP server on 127.0.0.1 that, for each client, sends ``greeting``, then holds the
    connection until the client closes (at most ``hold`` seconds); records each client."""

    greeting: bytes = b""
    hold: float = 30.0
    sock: socket.socket = field(default_factory=socket.socket)
    peers: list[object] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(WAIT)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append(peer)
            data = bytearray()
            with conn:
                conn.sendall(self.greeting)
                conn.settimeout(self.hold)
                try:
                    while chunk := conn.recv(65536):
                        data += chunk
                except OSError:
                    pass
            self.received.append(bytes(data))


@pytest.fixture
def banner() -> Iterator[Banner]:
    server = Banner(greeting=b"220 interop ready\r\n")
    yield server
    # close() alone does not wake a thread blocked in accept() on Linux (it waited WAIT, 10 s,
    # in every teardown); shutdown() does.
    with contextlib.suppress(OSError):
        server.sock.shutdown(socket.SHUT_RDWR)
    server.sock.close()
    server.thread.join(WAIT)


def test_idle_timeout_ends_like_nc_w(nc: str, banner: Banner) -> None:
    """A server that greets and holds: `nc -w 1` and `connect --idle-timeout 1` both print the
    greeting and end with status 0 once nothing has moved for a second (stdin left open)."""
    results = []
    for argv in (
        [nc, "-w", "1", "127.0.0.1", str(banner.port)],
        enchufe("connect", "--idle-timeout", "1", f"tcp://127.0.0.1:{banner.port}"),
    ):
        with spawn(argv) as proc:  # stdin is a pipe we never close
            proc.wait_stdout(len(banner.greeting))
            status = proc.finish()
            results.append((status, bytes(proc.out)))
    assert results[0] == results[1] == (0, banner.greeting)


def test_crlf_sends_what_nc_C_sends(nc: str) -> None:
    text = b"HELO example\nQUIT\n"
    got = []
    commands: list[Argv] = [
        lambda port: [nc, "-C", "-N", "127.0.0.1", str(port)],
        lambda port: enchufe("connect", "--crlf", f"tcp://127.0.0.1:{port}"),
    ]
    for argv_for in commands:
        server = Banner(hold=WAIT)
        try:
            subprocess.run(argv_for(server.port), input=text, capture_output=True, timeout=WAIT, check=True)
            deadline = time.monotonic() + WAIT
            while not server.received and time.monotonic() < deadline:
                time.sleep(0.02)
            got.append(server.received[0])
        finally:
            server.sock.close()
    assert got[0] == got[1] == b"HELO example\r\nQUIT\r\n"


def test_source_address_like_nc_s(nc: str) -> None:
    peers = []
    commands: list[Argv] = [
        lambda port: [nc, "-N", "-s", "127.0.0.2", "127.0.0.1", str(port)],
        lambda port: enchufe("connect", "--source", "tcp://127.0.0.2:0", f"tcp://127.0.0.1:{port}"),
    ]
    for argv_for in commands:
        server = Banner(hold=WAIT)
        try:
            subprocess.run(argv_for(server.port), input=b"", capture_output=True, timeout=WAIT, check=True)
            peers.append(server.peers[0][0])  # type: ignore[index]
        finally:
            server.sock.close()
    assert peers == ["127.0.0.2", "127.0.0.2"]


def _closed_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_check_tcp_agrees_with_nc_z(nc: str, banner: Banner) -> None:
    closed = _closed_port(socket.SOCK_STREAM)
    for port, status in ((banner.port, 0), (closed, 1)):
        theirs = subprocess.run([nc, "-z", "127.0.0.1", str(port)], capture_output=True, timeout=WAIT)
        ours = subprocess.run(enchufe("check", f"tcp://127.0.0.1:{port}"), capture_output=True, timeout=WAIT)
        assert theirs.returncode == ours.returncode == status, (port, theirs, ours)


def test_check_udp_agrees_with_nc_zu(nc: str) -> None:
    """A closed UDP port answers ICMP unreachable: both say no (1).  A bound one that never
    replies: nc -zuv calls it success, and so does check ("no reply", 0).

    (-v matters: without it Debian's nc -zu only connect()s the UDP socket, which sends
    nothing, and reports success for any port; with it, it writes "X" datagrams and fails on
    ICMP unreachable.  check always probes, with one empty datagram.)"""

    def statuses(port: int) -> tuple[int, int]:
        theirs = subprocess.run(
            [nc, "-zuv", "-w", "1", "127.0.0.1", str(port)], capture_output=True, timeout=WAIT
        )
        ours = subprocess.run(
            enchufe("check", "--timeout", "0.5", f"udp://127.0.0.1:{port}"), capture_output=True, timeout=WAIT
        )
        return theirs.returncode, ours.returncode

    for _ in range(UDP_REFUSAL_TRIES):
        closed = statuses(_closed_port(socket.SOCK_DGRAM))
        if closed == (1, 1):
            break
    assert closed == (1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        assert statuses(silent.getsockname()[1]) == (0, 0)

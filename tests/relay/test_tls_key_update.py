"""A TLS 1.3 key update through termination while the relay's socket towards the client is full
(relay/tls_pump.py, tlschannel.py's ``read_into``).

OpenSSL answers a key update that asks for one back with the relay's next send to that client.
When that send finds the socket full, the answer waits half-written, and until it is out every
read of the client's records says "want write".  The session must go on (the answer leaves
once the client reads again, as any write would), not end as a failed handshake.

The peer is ``openssl s_client`` (its input line ``K`` sends a key update that asks for one
back).  It stops reading its socket while its output waits: its output is a unix socket the
test reads only at the end.  The relay listens on ``tls+unix:``, where a full socket takes no
byte more (TCP may still append a few bytes to its last segment), and the test fills it one
record at a time from the target, until the kernel says it is full with nothing held back.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import socket
import stat
import struct
import subprocess
import threading
import time
from typing import Any

from enchufe.relay import RelayConfig
from tests.tls import conftest as tls_conftest

from ._gateway import tool
from .conftest import STEP, Target, relay_thread
from .test_tls_on_socket import _lines_of, _wait_for

#: PEM files of one trustme CA (tests/tls/conftest.py)
pem = tls_conftest.pem

#: getsockopt(SOL_SOCKET, SO_MEMINFO): the kernel's memory counters of a socket (Linux).
SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)
_WMEM_ALLOC, _SNDBUF = 2, 3
#: Plaintext per record the target sends while filling the relay's socket.
PIECE = 4000
#: The key update's sign, the bytes the target sends once it came, and the client's last line.
MARK, ANSWER, AFTER = b"mark\n", b"q" * 100, b"after\n"


def test_a_key_update_while_the_clients_socket_is_full_waits_for_room(
    pem: dict[str, str], sock_dir: str
) -> None:
    path = f"{sock_dir}/relay.sock"
    pieces: queue.Queue[bytes | None] = queue.Queue()
    with (
        Target("tcp://127.0.0.1:0", lambda conn: _target(conn, pieces)) as target,
        relay_thread(RelayConfig(f"tls+unix://{path}?cert={pem['server']}", target.address)) as relay,
    ):
        mine, theirs = socket.socketpair()
        command = [tool("openssl"), "s_client", "-unix", path, "-CAfile", pem["ca"], "-brief"]
        with (
            mine,
            subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=theirs.fileno(), stderr=subprocess.PIPE, text=True
            ) as client,
        ):
            theirs.close()
            assert client.stdin is not None and client.stderr is not None
            said = _lines_of(client.stderr)
            try:
                _wait_for(said, "CONNECTION ESTABLISHED")
                fd, relay_end = _relay_socket(path)
                sent = _fill(relay_end, pieces, relay)
                # The key update, then a line behind it: once the target has that line, the relay
                # read the key update, and the target's answer is the relay's next send.
                _type(client, "K\n")
                _wait_for(said, "KEYUPDATE")
                _type(client, MARK.decode())
                _wait(lambda: _to_client(relay) == sent + len(ANSWER), "send of the target's answer")
                _type(client, AFTER.decode())  # read by the relay only once its answer went
                # Meanwhile the relay waits for room, not for bytes it cannot read yet (epoll would
                # say readable again and again); it used to end the session here.
                _wait(lambda: _waits_for_room_alone(fd, relay), "wait for room alone")
                assert relay.relay.stats.snapshot().reset == 0, relay.events.named("close")
                received = _read_until(mine, AFTER, sent + len(ANSWER) + len(AFTER))
                snapshot = relay.relay.stats.snapshot()
            finally:
                client.kill()
                pieces.put(None)
        assert received == b"p" * sent + ANSWER + AFTER
        assert snapshot.reset == 0 and snapshot.open == 1, relay.events.named("close")


def _target(conn: socket.socket, pieces: queue.Queue[bytes | None]) -> None:
    """Send what the test queues; answer ``mark`` with :data:`ANSWER`, echo any other line."""

    def lines() -> None:
        with contextlib.suppress(OSError):  # the client killed at the end: the relay resets us
            for line in conn.makefile("rb"):
                pieces.put(ANSWER if line == MARK else line)

    threading.Thread(target=lines, daemon=True).start()
    while (piece := pieces.get(timeout=STEP)) is not None:
        conn.sendall(piece)


def _relay_socket(path: str) -> tuple[int, socket.socket]:
    """The relay's socket towards the client (the relay runs in this process): its descriptor,
    and a duplicate."""
    for name in os.listdir("/proc/self/fd"):
        try:
            if not stat.S_ISSOCK(os.fstat(int(name)).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        if (
            sock.family == socket.AF_UNIX
            and sock.type == socket.SOCK_STREAM
            and sock.getsockname() == path
            and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        ):
            return int(name), sock
        sock.close()
    raise AssertionError("the relay's socket towards the client was not found")


def _waits_for_room_alone(fd: int, relay: Any) -> bool:
    """Whether the relay's session goes on, waiting to write ``fd`` and not to read it."""
    assert relay.relay.stats.snapshot().reset == 0, relay.events.named("close")
    return not _interest(fd) & select.EPOLLIN


def _interest(fd: int) -> int:
    """The events an epoll of this process (the relay's) waits for on ``fd`` (EPOLLIN if none
    does: the session just ended, which the caller's next look says)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") != "anon_inode:[eventpoll]":
                continue
            with open(f"/proc/self/fdinfo/{name}") as info:
                for line in info:
                    fields = line.split()
                    if fields[:2] == ["tfd:", str(fd)]:
                        return int(fields[3], 16)
        except OSError:
            continue
    return select.EPOLLIN


def _full(sock: socket.socket) -> bool:
    counters = struct.unpack("9I", sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36))
    return bool(counters[_WMEM_ALLOC] >= counters[_SNDBUF])


def _fill(sock: socket.socket, pieces: queue.Queue[bytes | None], relay: Any) -> int:
    """Records from the target until the relay's socket towards the client is full, every one
    of them taken whole (nothing held back by the relay): the plaintext bytes sent."""
    sent = 0
    with sock:
        for _ in range(2000):  # bounded: the client reads about 50 KiB, the socket holds 208 KiB
            if _full(sock):
                time.sleep(0.05)
                if _full(sock):  # not the client's read still under way
                    return sent
            pieces.put(b"p" * PIECE)
            sent += PIECE
            _wait(lambda total=sent: _to_client(relay) == total, "send of a record")
    raise AssertionError(f"the relay's socket never filled ({sent} bytes sent)")


def _to_client(relay: Any) -> int:
    return int(relay.relay.stats.snapshot().to_client)


def _type(client: subprocess.Popen[str], text: str) -> None:
    assert client.stdin is not None
    client.stdin.write(text)
    client.stdin.flush()


def _wait(check: Any, what: str) -> None:
    deadline = time.monotonic() + STEP
    while not check():
        assert time.monotonic() < deadline, f"no {what} by the relay"
        time.sleep(0.001)


def _read_until(sock: socket.socket, end: bytes, size: int) -> bytes:
    """What ``sock`` delivers until ``end`` arrives (``size`` bytes at most)."""
    sock.settimeout(STEP)
    data = b""
    while len(data) < size and not data.endswith(end):
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    return data

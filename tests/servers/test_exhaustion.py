"""Descriptor exhaustion: ``enchufe echo`` under a low RLIMIT_NOFILE keeps serving, recovers,
and does not spin while it waits for descriptors."""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from enchufe import parse
from enchufe.address import InetAddress, UnixAddress
from tests.servers.cli_helpers import ServerProcess

pytestmark = pytest.mark.timeout(90)

#: The server's descriptor limit: the interpreter and its event loop take about a dozen, so
#: some twenty clients fit and the rest wait in the listen backlog.
NOFILE = 32
CLIENTS = 40

#: The CPU sample taken during the episode of exhaustion, and the CPU seconds the server may use
#: in it (a quarter).  Pausing between accept() attempts costs next to nothing (0.00 s measured);
#: retrying at once would use the whole second.
SPIN_SECONDS = 1.0
SPIN_LIMIT = 0.25


@pytest.fixture
def server(make_address: Callable[[str], str], request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    process = ServerProcess("echo", make_address(request.param), "-v", nofile=NOFILE)
    try:
        yield process
    finally:
        process.kill()


def open_client(address: str) -> socket.socket:
    target = parse(address)
    if isinstance(target, UnixAddress):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(b"\0" + target.name.encode() if target.abstract else target.name)
    else:
        assert isinstance(target, InetAddress)
        sock = socket.create_connection((target.host, target.port))
    sock.setblocking(False)
    return sock


def echoed(
    clients: list[socket.socket], message: Callable[[int], bytes], wait: float, leave: bool = False
) -> set[int]:
    """Indexes of the clients whose ``message(i)`` came back within ``wait`` seconds (each
    closed as soon as it has its echo, when ``leave``)."""
    expected = {i: message(i) for i in range(len(clients))}
    got = {i: b"" for i in expected}
    done: set[int] = set()
    deadline = time.monotonic() + wait
    while len(done) < len(clients):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        readable, _, _ = select.select([c for i, c in enumerate(clients) if i not in done], [], [], left)
        for sock in readable:
            i = clients.index(sock)
            with contextlib.suppress(BlockingIOError):
                got[i] += sock.recv(1024)
            assert expected[i].startswith(got[i]), f"client {i}: wrong bytes {got[i]!r}"
            if got[i] == expected[i]:
                done.add(i)
                if leave:
                    sock.close()
    return done


@pytest.mark.parametrize("server", ["tcp4", "unix"], indirect=True)
def test_echo_under_fd_exhaustion(server: ServerProcess) -> None:
    address = server.listening_address()
    clients = [open_client(address) for _ in range(CLIENTS)]  # the kernel queues them all
    try:
        for i, sock in enumerate(clients):
            sock.sendall(b"hello %d\n" % i)
        served = echoed(clients, lambda i: b"hello %d\n" % i, wait=1.5)
        assert 5 <= len(served) < CLIENTS, f"{len(served)} of {CLIENTS} clients served"
        said = server.wait_for_line(lambda line: "pausing" in line)  # it said what happens
        assert said.count(address) == 1 and "too many open files" in said, said

        # The episode: out of descriptors with clients waiting.  It must not spin...
        cpu_before = server.cpu_seconds()
        time.sleep(SPIN_SECONDS)
        used = server.cpu_seconds() - cpu_before
        assert used < SPIN_LIMIT, (
            f"the server used {used:.2f} s of CPU in {SPIN_SECONDS:g} s while out of descriptors"
        )

        # ...and keeps serving the clients it has.
        have = [clients[i] for i in sorted(served)]
        for n, sock in enumerate(have):
            sock.sendall(b"again %d\n" % n)
        assert len(echoed(have, lambda n: b"again %d\n" % n, wait=5.0)) == len(have)

        # When they leave, it recovers: the clients that waited are served in turn (each
        # leaving once served, making room for the next).
        for sock in have:
            sock.close()
        waiting = [sock for i, sock in enumerate(clients) if i not in served]
        index = {id(sock): i for i, sock in enumerate(clients)}
        late = echoed(waiting, lambda n: b"hello %d\n" % index[id(waiting[n])], wait=20.0, leave=True)
        assert len(late) == len(waiting)
    finally:
        for sock in clients:
            sock.close()
    assert server.stop() == 0  # nothing was cut: every client had left


#: Run in a child process whose address space leaves room for two or three 256 MiB thread stacks:
#: the sync server's next thread cannot start.  It must turn that client away and serve on.
NO_THREAD_LEFT = r"""
import resource, socket, sys, threading, time
import enchufe
from enchufe.sync.serve import Server

release = threading.Event()
def handler(conn):
    if conn.recv(10) == b"hold":
        release.wait(30)
    conn.send_all(b"served")

server = Server("tcp://127.0.0.1:0", handler)
server.start()
outcome = []
serving = threading.Thread(target=lambda: outcome.append(server.serve_forever()), daemon=True)
serving.start()
threading.stack_size(256 * 1024 * 1024)
size = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 700 * 1024 * 1024, resource.RLIM_INFINITY))
held = []
for _ in range(6):
    client = socket.create_connection(("127.0.0.1", server.bound_address.port), timeout=10)
    client.sendall(b"hold")
    held.append(client)
deadline = time.monotonic() + 20
while server.stats.refused == 0 and time.monotonic() < deadline:
    time.sleep(0.01)
assert server.stats.refused >= 1, server.stats
assert serving.is_alive(), outcome
release.set()
# A handler counts as done a moment before its thread is gone and its stack unmapped: until
# then a new thread may still find no room, and that client is turned away too (as it should).
# So the next client tries again, a bounded number of times, until one is served.
deadline = time.monotonic() + 20
while (server.stats.active or threading.active_count() > 2) and time.monotonic() < deadline:
    time.sleep(0.01)
for attempt in range(50):
    try:
        with socket.create_connection(("127.0.0.1", server.bound_address.port), timeout=10) as client:
            client.sendall(b"next")
            if client.recv(10) == b"served":
                break
    except ConnectionResetError:
        pass
    time.sleep(0.1)
else:
    raise AssertionError(f"no client served after the threads ended: {server.stats}")
assert serving.is_alive(), outcome
print("ok", server.stats.refused)
"""


def test_sync_server_with_no_thread_left_turns_the_client_away_and_serves_on() -> None:
    """A thread that cannot start (memory, RLIMIT_NPROC) is like a descriptor that cannot be
    had: that client is closed and counted, the loop pauses; the server does not die."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", NO_THREAD_LEFT], capture_output=True, text=True, timeout=80, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok ")

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

#: CPU seconds the server may use during a 2 s episode of exhaustion.  Pausing between
#: accept() attempts costs next to nothing; retrying at once would use the whole 2 s.
SPIN_LIMIT = 0.5


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
        server.wait_for_line(lambda line: "pausing" in line)  # it said what happens

        # The episode: out of descriptors with clients waiting.  It must not spin...
        cpu_before = server.cpu_seconds()
        time.sleep(2.0)
        used = server.cpu_seconds() - cpu_before
        assert used < SPIN_LIMIT, f"the server used {used:.2f} s of CPU in 2 s while out of descriptors"

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

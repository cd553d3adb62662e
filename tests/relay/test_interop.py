"""socat and nc (netcat-openbsd) as clients of the relay and as its targets."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Peer

from .conftest import STEP, StartRelay, Target, dial, echo, read_all, wait_until

pytestmark = pytest.mark.interop

needs_socat = pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")
needs_nc = pytest.mark.skipif(shutil.which("nc") is None, reason="nc is not installed")


@contextlib.contextmanager
def _socat_target(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    """socat as a forking target, stopped with its children however the test ends.

    SIGKILL to the whole process group: socat 1.7.4 can miss a SIGTERM that arrives while its
    forking parent waits for a child (seen once in CI: still running 15 s after SIGTERM).
    """
    target = subprocess.Popen(
        ["socat", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        yield target
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(target.pid, signal.SIGKILL)
        target.wait(STEP)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _host_port(address: str) -> tuple[str, str]:
    host, port = address.split("://", 1)[1].rsplit(":", 1)
    return host.strip("[]"), port


@needs_socat
def test_socat_as_a_client(start_relay: StartRelay, make_address: Callable[[str], str]) -> None:
    payload = os.urandom(200_000)
    with Target(make_address("unix"), echo) as target:
        relay = start_relay(make_address("tcp4"), target.address)
        host, port = _host_port(relay.address)
        done = subprocess.run(
            ["socat", "-t", "5", "-", f"TCP4:{host}:{port}"],
            input=payload,
            capture_output=True,
            timeout=STEP,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == payload


@needs_socat
def test_socat_as_a_target(
    start_relay: StartRelay, make_address: Callable[[str], str], sock_dir: str
) -> None:
    path = os.path.join(sock_dir, "socat.sock")
    with _socat_target(f"UNIX-LISTEN:{path},fork", "SYSTEM:tr a-z A-Z"):
        wait_until(lambda: os.path.exists(path), "socat listening")
        relay = start_relay(make_address("tcp4"), f"unix://{path}")
        for _ in range(2):
            with dial(relay.address) as client:
                client.sendall(b"hello through socat\n")
                client.shutdown(socket.SHUT_WR)
                assert read_all(client) == b"HELLO THROUGH SOCAT\n"


@needs_nc
def test_nc_as_a_client(start_relay: StartRelay, make_address: Callable[[str], str]) -> None:
    payload = b"".join(b"line %d\n" % i for i in range(5000))
    with Target(make_address("tcp4"), echo) as target:
        relay = start_relay(make_address("tcp4"), target.address)
        host, port = _host_port(relay.address)
        done = subprocess.run(
            ["nc", "-N", host, port], input=payload, capture_output=True, timeout=STEP, check=False
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == payload


@needs_nc
def test_nc_as_a_target(start_relay: StartRelay, make_address: Callable[[str], str]) -> None:
    port = _free_port()
    target = subprocess.Popen(
        ["nc", "-N", "-l", "127.0.0.1", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        relay = start_relay(make_address("unix"), f"tcp4://127.0.0.1:{port}", "--connect-timeout", "5")

        def nc_listening() -> bool:
            with open("/proc/net/tcp") as f:
                return any(f":{port:04X} 00000000:0000 0A" in line for line in f)

        wait_until(nc_listening, "nc listening")
        with dial(relay.address) as client:
            client.sendall(b"to nc\n")
            client.shutdown(socket.SHUT_WR)
            out, err = target.communicate(b"from nc\n", timeout=STEP)
            assert read_all(client) == b"from nc\n"
        assert out == b"to nc\n", err
    finally:
        if target.poll() is None:
            target.kill()
        target.communicate(timeout=STEP)


# ----------------------------------------------------------------------------- datagram relays


@needs_socat
def test_socat_as_a_datagram_client_and_as_a_unixgram_target(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    """socat sends UDP to the relay; the target is socat too (a unix datagram echo, a child per
    sender): each socat client gets its own upstream, and its own answer."""
    name = make_address("unixgram-abstract").split("@", 1)[1]
    with _socat_target(f"ABSTRACT-RECVFROM:{name},fork", "PIPE"):
        relay = start_relay(make_address("udp4"), f"unixgram:@{name}", "--json")
        host, port = _host_port(relay.address)

        def client(n: int) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                ["socat", "-t", "1", "-", f"UDP4:{host}:{port}"],
                input=b"datagram %d\n" % n,
                capture_output=True,
                timeout=STEP,
                check=False,
            )

        # The three clients at once: each waits its second (-t 1) for its answer side by side.
        clients = [Peer(client, n) for n in range(3)]
        for n, peer in enumerate(clients):
            done = peer.result(STEP + 5)
            assert done.returncode == 0, done.stderr
            assert done.stdout == b"datagram %d\n" % n
        relay.signal()
        assert relay.finish() == 0
    (summary,) = [e for e in relay.json_events() if e["event"] == "summary"]
    assert summary["total"] == 3 and summary["datagrams_to_client"] == 3


@needs_nc
@needs_socat
def test_nc_as_a_datagram_client_through_a_socat_udp_target(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    port = _free_udp_port()
    with _socat_target(f"UDP4-RECVFROM:{port},fork", "PIPE"):
        relay = start_relay(make_address("udp4"), f"udp4://127.0.0.1:{port}")
        host, relay_port = _host_port(relay.address)
        # nc -u quits at stdin's EOF without waiting for answers: keep stdin open meanwhile.
        client = subprocess.Popen(
            ["nc", "-u", "-w", "5", host, relay_port],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert client.stdin is not None and client.stdout is not None
            client.stdin.write(b"hello over udp\n")
            client.stdin.flush()
            line = Peer(client.stdout.readline).result(STEP)
            assert line == b"hello over udp\n"
        finally:
            client.kill()
            client.communicate(timeout=STEP)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port

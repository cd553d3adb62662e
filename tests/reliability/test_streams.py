"""enchufe's own commands through faults on purpose: latency and slicer never lose or reorder a
byte (sha256 both ways), reset_peer and limit_data end the client with exit status 1 and the
line that says so, a proxy that refuses then comes back is what ``connect(retries=…)`` is for."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import urllib.request
from typing import Any

import pytest

import enchufe
from enchufe.faults import FaultyRelay
from enchufe.testing import EchoServer, FaultyRelayStarter
from tests.relay.conftest import STEP, StartRelay

from .conftest import StartCommand, run

#: the relay with its compiled hot path and without it (tests/conftest.py: both_paths)
pytestmark = pytest.mark.usefixtures("both_paths")

#: Both directions sliced and delayed, with jitter: what a slow, fragmenting network does.
MANGLING = (
    "latency:latency=4,jitter=4",
    "slicer:average_size=700,size_variation=300",
    "latency:latency=3,jitter=3,stream=upstream",
    "slicer:average_size=500,size_variation=400,stream=upstream",
)


def faults_args(*faults: str, seed: int = 7) -> tuple[str, ...]:
    args: tuple[str, ...] = ()
    for fault in faults:
        args += ("--fault", fault)
    return (*args, "--seed", str(seed))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_connect_through_a_mangling_relay_to_enchufe_echo_keeps_every_byte(
    kind: str, start_command: StartCommand, start_relay: StartRelay, sock_dir: str
) -> None:
    listen = "tcp://127.0.0.1:0" if kind == "tcp" else f"unix://{sock_dir}/echo.sock"
    echo = start_command("echo", listen)
    relay = start_relay("tcp://127.0.0.1:0", echo.address, *faults_args(*MANGLING))
    payload = os.urandom(200_000)
    done = run("connect", relay.address, input=payload)
    assert done.returncode == 0, done.stderr
    assert sha(done.stdout) == sha(payload)


def test_enchufe_listen_receives_every_byte_through_the_library_relay(start_command: StartCommand) -> None:
    receiver = start_command("listen", "tcp://127.0.0.1:0")
    payload = os.urandom(150_000)
    with FaultyRelay(receiver.address, MANGLING, seed=3) as relay:
        sent = run("send", str(relay.address), input=payload)
        assert sent.returncode == 0, sent.stderr
        assert receiver.proc.finish() == 0  # one client, then listen ends
        assert sha(receiver.proc.out) == sha(payload)
        assert relay.stats.to_target == len(payload)


@pytest.mark.parametrize("address", ["unix", "udp"])
def test_send_wait_reply_through_latency(
    address: str, start_command: StartCommand, start_relay: StartRelay, sock_dir: str
) -> None:
    if address == "unix":
        echo = start_command("echo", f"unix://{sock_dir}/echo.sock")
        relay = start_relay(f"unix://{sock_dir}/relay.sock", echo.address, *faults_args("latency:latency=30"))
    else:
        echo = start_command("echo", "udp://127.0.0.1:0")
        relay = start_relay(
            "udp://127.0.0.1:0", echo.address, *faults_args("latency:latency=30", "duplicate:probability=1")
        )
    done = run("send", relay.address, "hello", "--wait-reply")
    assert (done.returncode, done.stdout, done.stderr) == (0, b"hello", b"")


def test_reset_peer_ends_connect_and_send_with_one_line(
    echo_server: EchoServer, start_relay: StartRelay
) -> None:
    relay = start_relay("tcp://127.0.0.1:0", str(echo_server("tcp4")), *faults_args("reset_peer:timeout=20"))
    for args in (("connect", relay.address), ("send", relay.address, "hello", "--wait-reply")):
        done = run(*args, input=b"hello\n")
        assert done.returncode == 1, (args, done.stderr)
        lines = done.stderr.decode().splitlines()
        assert len(lines) == 1 and "connection reset by peer" in lines[0], lines
        assert "Traceback" not in lines[0]


def test_limit_data_upstream_cuts_an_upload_with_one_line(
    echo_server: EchoServer, faulty_relay: FaultyRelayStarter
) -> None:
    """The relay cuts the upload with a reset.  If the target's close came through first (the
    client's socket half-closed by then), the kernel reports that reset to the next send as a
    broken pipe: either is the cut, said in one line."""
    relay = faulty_relay(echo_server("tcp4"), "limit_data:bytes=1000,stream=upstream")
    done = run("connect", str(relay.address), input=os.urandom(2_000_000))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert (
        "connection reset by peer" in lines[0] or "broken pipe; the peer closed the connection" in lines[0]
    ), lines
    assert relay.stats.to_target == 1000
    assert len(done.stdout) <= 1000


def test_limit_data_downstream_is_an_orderly_end_for_send(
    echo_server: EchoServer, faulty_relay: FaultyRelayStarter
) -> None:
    """The reply is cut where the toxic says, and the connection closed in order: the reply
    is what came, exit status 0 (as with a server that sent that much and closed)."""
    relay = faulty_relay(echo_server("unix"), "limit_data:bytes=5")
    done = run("send", str(relay.address), "hello world", "--wait-reply")
    assert (done.returncode, done.stdout) == (0, b"hello"), done.stderr


def api(url: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data, method=method), timeout=10) as answer:
        return json.loads(answer.read() or b"null")


def test_check_and_connect_retries_through_a_proxy_that_comes_back(
    echo_server: EchoServer, chaos_server: str
) -> None:
    upstream = echo_server("tcp4")
    proxy = api(
        f"{chaos_server}/proxies",
        "POST",
        {"name": "db", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{upstream.port}"},  # type: ignore[union-attr]
    )
    address = f"tcp://{proxy['listen']}"
    api(f"{chaos_server}/proxies/db/toxics", "POST", {"type": "latency", "attributes": {"latency": 20}})
    assert run("check", address).returncode == 0
    api(f"{chaos_server}/proxies/db", "POST", {"enabled": False})
    refused = run("check", address)
    assert refused.returncode == 1 and b"refused" in refused.stdout
    back = threading.Timer(0.3, lambda: api(f"{chaos_server}/proxies/db", "POST", {"enabled": True}))
    back.start()
    try:
        with enchufe.connect(address, timeout=5, retries=100, retry_delay=0.05) as conn:
            conn.send_all(b"again")
            assert conn.recv_exactly(5) == b"again"
    finally:
        back.join(STEP)

"""The relay command's contract: bad input exit 2 in one line, runtime failures exit 1, --workers."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable

import pytest

from .conftest import ENCHUFE, STEP, StartRelay, Target, dial, echo, ping


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ENCHUFE, "relay", *args], capture_output=True, text=True, timeout=STEP, check=False
    )


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("tcp://127.0.0.1:0", "udp://127.0.0.1:53"), ("without framing", "stream", "datagram")),
        (("udp://127.0.0.1:0", "tcp://127.0.0.1:9"), ("without framing",)),
        (("tcp://127.0.0.1:0", "tcp://:80"), ("needs a host", "tcp://127.0.0.1:80")),
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:0"), ("needs a host and a port",)),
        (("tcp://127.0.0.1", "tcp://127.0.0.1:9"), ("missing port",)),
        (("-", "-"), ("cannot relay - to -",)),
        (("exec:cat", "tcp://127.0.0.1:9"), ("only be the TARGET",)),
        (("udp://127.0.0.1:0", "udp://127.0.0.1:9", "--frame"), ("--frame carries datagrams",)),
        (("udp://127.0.0.1:0", "udp://127.0.0.1:9", "--max-sessions", "0"), ("--max-sessions",)),
        (
            ("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--allow", "10.0.0.300/8"),
            ("--allow", "not an IP network"),
        ),
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--deny", "banana"), ("--deny 'banana'",)),
        (("unix:@x", "tcp://127.0.0.1:9", "--allow", "10.0.0.0/8"), ("unix socket", "--allow-uid")),
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--allow-uid", "0"), ("need a unix LISTEN",)),
        (("unix:@x", "tcp://127.0.0.1:9", "--allow-uid", "no-such-user-here"), ("no such user",)),
        (("unix:@x", "tcp://127.0.0.1:9", "--allow-uid", "\u0663"), ("no such user", "ASCII digits")),
        (("unix:@x", "tcp://127.0.0.1:9", "--allow-gid", "\u00b3"), ("no such group", "ASCII digits")),
        (("unix:@x", "tcp://127.0.0.1:9", "--workers", "2"), ("SO_REUSEPORT", "--workers 1")),
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--max-conns", "0"), ("--max-conns",)),
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--connect-timeout", "0"), ("--connect-timeout",)),
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--mode", "999"), ("octal",)),
    ],
)
def test_bad_input_is_refused_with_one_line_and_status_2(
    args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    done = _run(*args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    if done.stderr.startswith("Usage:"):  # an option click itself checks: usage, then one Error: line
        (line,) = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    else:
        line = _one_line(done.stderr)
        assert line.startswith("enchufe: "), line
    for needle in needles:
        assert needle.lower() in line.lower(), (needle, line)


def test_an_address_in_use_is_a_runtime_failure() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _run(f"tcp4://127.0.0.1:{port}", "tcp4://127.0.0.1:9")
    assert done.returncode == 1
    assert "address already in use" in _one_line(done.stderr).lower()


def test_workers_share_the_port_and_stop_together(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with Target(make_address("tcp4"), echo) as target:
        relay = start_relay(make_address("tcp4"), target.address, "--workers", "2", "-v")
        clients = [dial(relay.address) for _ in range(16)]
        try:
            assert all(ping(client) for client in clients)
        finally:
            for client in clients:
                client.close()
        relay.signal()
        assert relay.finish() == 0, relay.err
    err = relay.err
    assert err.count("listening on") == 1
    # The kernel spread the clients over both workers.
    assert "worker 1: accepted" in err and "worker 2: accepted" in err

"""Failures through the CLI: exit 1 for runtime failures, 2 for bad input, one line, no traceback."""

from __future__ import annotations

import re
import socket
import time

import pytest

import enchufe
from tests.conftest import needs_ipv6

from .conftest import Spawn, assert_one_error_line, free_port, run, run_here

# ---------------------------------------------------------------------------- refused


@pytest.mark.parametrize(
    ("args", "family", "kind"),
    [
        pytest.param(
            ["connect", "tcp://127.0.0.1:{}"], socket.AF_INET, socket.SOCK_STREAM, id="connect-tcp4"
        ),
        pytest.param(
            ["connect", "tcp://[::1]:{}"],
            socket.AF_INET6,
            socket.SOCK_STREAM,
            id="connect-tcp6",
            marks=needs_ipv6,
        ),
        pytest.param(["send", "tcp://127.0.0.1:{}"], socket.AF_INET, socket.SOCK_STREAM, id="send-tcp4"),
        # udp: the ICMP "port unreachable" comes back as a refusal on the connected socket.
        pytest.param(["connect", "udp://127.0.0.1:{}"], socket.AF_INET, socket.SOCK_DGRAM, id="connect-udp4"),
        pytest.param(
            ["send", "udp://127.0.0.1:{}", "--wait-reply"], socket.AF_INET, socket.SOCK_DGRAM, id="send-udp4"
        ),
    ],
)
def test_refused_exits_1_with_one_line(args: list[str], family: int, kind: int) -> None:
    args[1] = args[1].format(free_port(family, kind))
    done = run(*args, input=b"data")
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "refused", args[1])
    assert done.stdout == b""


@pytest.mark.parametrize("scheme", ["unix", "unixgram"])
def test_missing_unix_socket_file_exits_1_with_one_line(scheme: str, sock_dir: str) -> None:
    done = run("connect", f"{scheme}://{sock_dir}/nobody.sock", input=b"data")
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "nobody.sock")


def test_debug_shows_the_traceback() -> None:
    done = run("--debug", "connect", f"tcp://127.0.0.1:{free_port()}", input=b"")
    assert done.returncode == 1
    stderr = done.stderr.decode()
    assert "Traceback (most recent call last)" in stderr
    assert "ConnectionRefused" in stderr
    assert stderr.rstrip().splitlines()[-1].startswith("enchufe: ")


def test_retries_are_counted_and_each_uses_a_new_socket() -> None:
    done = run(
        "connect", f"tcp://127.0.0.1:{free_port()}", "--retry", "2", "--retry-delay", "0.05", "--trace"
    )
    assert done.returncode == 1
    stderr = done.stderr.decode()
    assert stderr.count("socket(AF_INET, SOCK_STREAM)") == 3
    assert stderr.count("ECONNREFUSED") == 3
    errors = [line for line in stderr.splitlines() if line.startswith("enchufe: ")]
    assert len(errors) == 1 and "3 attempts" in errors[0], errors
    assert "Traceback" not in stderr


# ---------------------------------------------------------------------------- retry until the server comes


@pytest.mark.parametrize("kind", ["tcp4", "unix"])
def test_connect_retries_until_the_server_appears(kind: str, sock_dir: str, spawn: Spawn) -> None:
    address = f"tcp://127.0.0.1:{free_port()}" if kind == "tcp4" else f"unix://{sock_dir}/late.sock"
    client = spawn("--trace", "connect", address, "--retry", "50", "--retry-delay", "0.1")
    client.feed(b"ping")
    client.wait_err(r"connect\(fd \d+, .*\) = -1 (ECONNREFUSED|ENOENT)")  # refused at least once
    time.sleep(0.3)
    assert client.running()
    server = spawn("listen", address)
    server.feed(b"pong")
    assert client.finish() == 0, client.err
    assert server.finish() == 0, server.err
    assert client.out == b"pong"
    assert server.out == b"ping"
    assert client.err.count("socket(AF_") >= 2, "every attempt needs a new socket"


# ---------------------------------------------------------------------------- bad input: exit 2


def accepted_forms(line: str) -> list[str]:
    """The addresses in an error message that do parse (the examples it shows)."""
    found = []
    for token in re.findall(r"[a-z0-9]+:[^\s,;()'\"]+", line):
        token = token.rstrip(".")
        try:
            enchufe.parse(token)
        except enchufe.AddressError:
            continue
        found.append(token)
    return found


# An address with a NUL byte is not here: argv cannot carry one (the parser's test covers it).
TOO_LONG = "unix:///tmp/" + "a" * 120 + ".sock"

BAD_ADDRESSES = [
    pytest.param("connect", "foo://127.0.0.1:80", "unknown scheme", id="unknown-scheme"),
    pytest.param("connect", "tcp://127.0.0.1", "missing port", id="missing-port"),
    pytest.param("listen", "tcp://127.0.0.1:", "missing port", id="empty-port"),
    pytest.param("connect", "tcp://127.0.0.1:70000", "70000", id="port-out-of-range"),
    pytest.param("listen", "udp://127.0.0.1:99999", "99999", id="udp-port-out-of-range"),
    pytest.param("connect", "tcp://127.0.0.1:nosuchservice", "port", id="port-not-a-number"),
    pytest.param("connect", "tcp://::1:80", "bracket", id="unbracketed-ipv6"),
    pytest.param("listen", TOO_LONG, "107", id="path-too-long"),
    pytest.param("recv", "unixgram:@" + "n" * 108, "107", id="abstract-too-long"),
    pytest.param("connect", "tcp://:80", "host", id="client-without-host"),
    pytest.param("send", "udp://:53", "host", id="send-without-host"),
    pytest.param("connect", "unix://rel/path.sock", "absolute", id="unix-two-slashes"),
    pytest.param("listen", "127.0.0.1:80", "scheme", id="no-scheme"),
    pytest.param("listen", "tcp6://127.0.0.1:80", "IPv6", id="family-mismatch"),
]


# These refusals run the command in this process (run_here: the same entry point and output,
# without a Python start for each); that --trace's lines reach what it captures is checked here.
def test_the_trace_of_a_command_run_in_process_is_captured() -> None:
    done = run_here("--trace", "send", f"tcp://127.0.0.1:{free_port()}", "x")
    assert done.returncode == 1, done.stderr
    assert b"socket(" in done.stderr


@pytest.mark.parametrize(("command", "address", "needle"), BAD_ADDRESSES)
def test_bad_address_exits_2_before_any_socket(command: str, address: str, needle: str) -> None:
    done = run_here("--trace", command, address, *(["x"] if command == "send" else []))
    assert done.returncode == 2, done.stderr
    line = assert_one_error_line(done.stderr, needle)
    assert "socket(" not in done.stderr.decode()  # --trace would have shown a socket
    assert accepted_forms(line), f"no accepted form shown: {line}"
    assert done.stdout == b""


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["listen"], id="missing-argument"),
        pytest.param(["frobnicate", "tcp://127.0.0.1:1"], id="unknown-command"),
        pytest.param(["connect", "tcp://127.0.0.1:1", "--retry", "-1"], id="negative-retry"),
        pytest.param(["listen", "tcp://127.0.0.1:0", "--no-such-option"], id="unknown-option"),
        pytest.param(["listen", "unix:@enc-mode", "--mode", "999"], id="bad-mode"),
    ],
)
def test_bad_usage_exits_2_without_traceback(args: list[str]) -> None:
    done = run_here("--trace", *args)
    assert done.returncode == 2, done.stderr
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr
    assert "socket(" not in stderr
    assert stderr.strip(), "no message for bad usage"


def test_a_host_name_that_does_not_resolve_exits_1() -> None:
    done = run("connect", "tcp://no-such-host.invalid:80", input=b"")
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "no-such-host.invalid")


def test_address_in_use_exits_1() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = run("listen", f"tcp://127.0.0.1:{port}")
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "in use")

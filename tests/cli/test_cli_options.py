"""Global options (--trace, --quiet, --debug) before and after the command, --json, --help, tour."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable

import pytest

import enchufe
from tests.conftest import needs_ipv6

from .conftest import ENCHUFE, STEP, Spawn, assert_one_error_line, free_port, run, wait_until


def one_client(address: str, data: bytes = b"hi", *, retries: int = 0) -> None:
    with enchufe.connect(address, timeout=5, retries=retries, retry_delay=0.05) as conn:
        conn.set_timeout(5)
        conn.send_all(data)
        conn.shutdown_write()
        assert conn.recv() == b""


@pytest.mark.parametrize("where", ["before", "after"])
def test_trace_narrates_the_lifecycle_wherever_it_stands(where: str, spawn: Spawn) -> None:
    args = ["listen", "tcp://127.0.0.1:0", "--backlog", "7"]
    args = ["--trace", *args] if where == "before" else [*args, "--trace"]
    server = spawn(*args, stdin=False)
    one_client(server.listening())
    assert server.finish() == 0, server.err
    err = server.err

    created = re.search(r"^socket\(AF_INET, SOCK_STREAM\) = fd (\d+)$", err, re.MULTILINE)
    assert created, err
    fd = created.group(1)
    assert re.search(rf"^bind\(fd {fd}, 127\.0\.0\.1:0\)", err, re.MULTILINE), err
    assert re.search(rf"^listen\(fd {fd}, backlog=7\)$", err, re.MULTILINE), err
    accepted = re.search(rf"^accept\(fd {fd}\) = fd (\d+) from 127\.0\.0\.1:\d+$", err, re.MULTILINE)
    assert accepted, err
    conn_fd = accepted.group(1)
    assert re.search(rf"^close\(fd {conn_fd}\)$", err, re.MULTILINE), err
    assert re.search(rf"^close\(fd {fd}\)$", err, re.MULTILINE), err
    # In lifecycle order.
    order = [err.index(s) for s in ("socket(", "bind(", "listen(", "accept(", f"close(fd {fd})")]
    assert order == sorted(order), err


def test_without_trace_no_system_call_is_narrated(spawn: Spawn) -> None:
    server = spawn("listen", "tcp://127.0.0.1:0", stdin=False)
    address = server.listening()
    one_client(address)
    assert server.finish() == 0
    assert server.err == f"listening on {address}\n"


@needs_ipv6
def test_trace_on_a_client(make_address: Callable[[str], str]) -> None:
    with enchufe.bind_datagram(make_address("udp6")) as sock:
        done = run("send", str(sock.local_address), "x", "--trace")
        assert done.returncode == 0, done.stderr
        err = done.stderr.decode()
        assert re.search(r"^socket\(AF_INET6, SOCK_DGRAM\) = fd \d+$", err, re.MULTILINE), err
        assert re.search(r"^connect\(fd \d+, \[::1\]:\d+\) = 0$", err, re.MULTILINE), err
        assert "sendto(" in err and "close(" in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_silences_the_listening_line(where: str, sock_dir: str, spawn: Spawn) -> None:
    path = os.path.join(sock_dir, "quiet.sock")
    args = ["listen", f"unix://{path}"]
    server = spawn(*(["--quiet", *args] if where == "before" else [*args, "-q"]), stdin=False)
    wait_until(lambda: os.path.exists(path), "the socket file to appear")
    # The file appears at bind(), a moment before listen(): a refusal then is worth a retry.
    one_client(f"unix://{path}", b"shh", retries=100)
    assert server.finish() == 0
    assert server.out == b"shh"
    assert server.err == ""


@pytest.mark.parametrize(
    ("command", "address"),
    [
        ("listen", "tcp://127.0.0.1:0"),
        pytest.param("listen", "udp6://[::1]:0", marks=needs_ipv6),
        ("recv", "udp://127.0.0.1:0"),
    ],
)
def test_json_makes_the_listening_line_an_object(command: str, address: str, spawn: Spawn) -> None:
    server = spawn(command, address, "--json", stdin=False)
    line = server.wait_err(r"^\{.*\}$").group(0)
    record = json.loads(line)
    assert record["event"] == "listening"
    real = enchufe.parse(record["address"])
    wanted = enchufe.parse(address)
    assert isinstance(real, enchufe.InetAddress) and isinstance(wanted, enchufe.InetAddress)
    assert real.port != 0 and real.host == wanted.host and real.is_stream == wanted.is_stream
    assert "listening on" not in server.err
    assert server.terminate() == 0


def test_json_listening_line_for_tcp_is_exactly_as_documented(spawn: Spawn) -> None:
    server = spawn("listen", "tcp://127.0.0.1:0", "--json", stdin=False)
    line = server.wait_err(r"^\{.*\}$").group(0)
    record = json.loads(line)
    assert set(record) == {"event", "address"}
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", record["address"])
    one_client(record["address"])
    assert server.finish() == 0


def test_debug_after_the_command_shows_the_traceback(sock_dir: str) -> None:
    done = run("connect", f"unix://{sock_dir}/none.sock", "--debug")
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr.decode()


def test_help_lists_the_commands() -> None:
    done = run("--help")
    assert done.returncode == 0
    out = done.stdout.decode()
    for name in ("listen", "connect", "send", "recv", "tour"):
        assert re.search(rf"^\s+{name}\s", out, re.MULTILINE), f"{name} missing from --help:\n{out}"
    for option in ("--trace", "--quiet", "--debug"):
        assert option in out


@pytest.mark.parametrize("command", ["listen", "connect", "send", "recv", "tour"])
def test_each_command_has_help(command: str) -> None:
    done = run(command, "--help")
    assert done.returncode == 0, done.stderr
    assert f"Usage: enchufe {command}" in done.stdout.decode()


KIND_LABELS = ("tcp4", "tcp6", "udp4", "udp6", "unix", "unixgram", "tls")

#: What the TLS leg must narrate: both sides' handshake, the pin trusted, what was agreed, close_notify.
TLS_LINES = (
    "tls fd",
    "handshake as client: ClientHello",
    "handshake as server",
    "pin sha256:",
    "the server's key matches the pin",
    "agreed: TLSv1.",
    "close_notify sent",
    "close_notify received",
)


def check_tour(out: str) -> None:
    assert "\x1b[" not in out, "ANSI escapes in piped output"
    sections = re.split(r"^== ", out, flags=re.MULTILINE)[1:]
    assert [s.split(":")[0] for s in sections] == list(KIND_LABELS)
    for section in sections:
        label = section.split(":")[0]
        stream = label in ("tcp4", "tcp6", "unix", "tls")
        calls = ["socket(", "bind(", "connect(", "close("]
        calls += ["listen(", "accept("] if stream else ["sendto(", "recvfrom("]
        calls += list(TLS_LINES) if label == "tls" else ["shutdown("] if stream else []
        for call in calls:
            assert call in section, f"{label}: no {call} in\n{section}"
        assert "FAILED" not in section
    rows = [line.split() for line in out.splitlines() if line.split()[:1] and line.split()[0] in KIND_LABELS]
    assert [row[0] for row in rows] == list(KIND_LABELS), out
    assert all(row[-1] == "ok" for row in rows), out
    assert "7 of 7 kinds worked." in out


def test_tour_runs_all_six_kinds_and_tls_when_piped() -> None:
    done = run("tour")
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    check_tour(done.stdout.decode())


def test_tour_with_trace_narrates_the_tls_handshake() -> None:
    done = run("--trace", "tour")
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    check_tour(done.stdout.decode())


def test_tour_works_with_a_long_tmpdir(sock_dir: str) -> None:
    """The tour's socket files must fit sun_path even when TMPDIR is a long path."""
    long_tmp = os.path.join(sock_dir, "t" * 100)
    os.mkdir(long_tmp)
    env = {**os.environ, "TMPDIR": long_tmp}
    done = subprocess.run([*ENCHUFE, "tour"], capture_output=True, timeout=STEP, env=env, check=False)
    assert done.returncode == 0, done.stdout.decode()
    check_tour(done.stdout.decode())


def test_verbose_reports_each_client(spawn: Spawn) -> None:
    server = spawn("listen", "tcp://127.0.0.1:0", "-v")
    server.feed(b"12345")
    done = run("send", server.listening(), "abc", "--wait-reply")
    assert done.returncode == 0 and done.stdout == b"12345", done
    assert server.finish() == 0, server.err
    assert re.search(r"^accepted tcp4?://127\.0\.0\.1:\d+$", server.err, re.MULTILINE), server.err
    assert re.search(
        r"^closed tcp4?://127\.0\.0\.1:\d+ after 3 bytes in, 5 out$", server.err, re.MULTILINE
    ), server.err


def test_json_makes_every_stderr_line_an_event(spawn: Spawn) -> None:
    server = spawn("listen", "tcp://127.0.0.1:0", "--json", stdin=False)
    one_client(server.listening(), b"abc")
    assert server.finish() == 0, server.err
    records = [json.loads(line) for line in server.err.splitlines()]
    assert [r["event"] for r in records] == ["listening", "accept", "close"], records
    assert records[-1]["received"] == 3


def test_quiet_still_shows_errors() -> None:
    done = run("-q", "connect", f"tcp://127.0.0.1:{free_port()}", input=b"")
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "refused")

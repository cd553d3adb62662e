"""Options that do not apply to the address given are refused (exit 2, one line saying why),
never ignored: the user meant something by them, and silence would hide the mistake."""

from __future__ import annotations

import json
import os
import socket

import pytest

from .conftest import Spawn, assert_one_error_line, run, run_here


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("listen", "udp://127.0.0.1:0", "-k"), ("--keep-open", "datagram")),
        (("listen", "unixgram:@inapplicable", "--keep-open"), ("--keep-open", "datagram")),
        (("listen", "udp://127.0.0.1:0", "--backlog", "5"), ("--backlog", "datagram")),
        (("listen", "tcp://127.0.0.1:0", "--mode", "600"), ("--mode", "no file")),
        (("listen", "unix:@inapplicable", "--mode", "600"), ("--mode", "abstract")),
        (("listen", "tcp://127.0.0.1:0", "--hex"), ("--hex", "stream")),
        (("listen", "tcp://127.0.0.1:0", "--count", "3"), ("--count", "stream")),
        (("listen", "udp://127.0.0.1:0", "--exec", "cat"), ("--exec", "stream address")),
        (("listen", "tcp://127.0.0.1:0", "--exec", "cat", "--backlog", "5"), ("--backlog", "--exec")),
        (("listen", "tcp://127.0.0.1:0", "--drain-timeout", "1"), ("--drain-timeout", "--exec")),
        (("listen", "udp://127.0.0.1:0", "--hex", "--json"), ("--hex", "--json")),
        (("echo", "tcp://127.0.0.1:0", "--mode", "600"), ("--mode", "no file")),
        (("echo", "udp://127.0.0.1:0", "--mode", "600"), ("--mode", "no file")),
        (("echo", "unix:@inapplicable", "--mode", "600"), ("--mode", "abstract")),
        (("chat", "tcp://127.0.0.1:0", "--mode", "600"), ("--mode", "no file")),
        (("chat", "udp://127.0.0.1:0", "--queue-limit", "100"), ("--queue-limit", "datagram")),
        (("recv", "udp://127.0.0.1:0", "--mode", "600"), ("--mode", "no file")),
        (("recv", "unixgram:@inapplicable", "--mode", "600"), ("--mode", "abstract")),
        (("recv", "udp://127.0.0.1:0", "--hex", "--json"), ("--hex", "--json")),
        (("recv", "tcp://127.0.0.1:0"), ("datagram address", "enchufe listen")),
        (("send", "udp://127.0.0.1:9", "x", "--timeout", "2"), ("--timeout", "--wait-reply")),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, tuple) and len(value) > 2 else None,
)
def test_an_option_that_does_not_apply_is_refused(args: tuple[str, ...], needles: tuple[str, ...]) -> None:
    done = run_here(*args)  # refused before anything opens: in this process, no Python start
    assert done.returncode == 2, done.stderr
    if "--json" in args:  # the error is an event like any other
        (line,) = done.stderr.decode().splitlines()
        record = json.loads(line)
        assert record["event"] == "error"
        assert all(needle in record["message"] for needle in needles), record
    else:
        assert_one_error_line(done.stderr, *needles)
    assert done.stdout == b""


@pytest.mark.parametrize(
    "args",
    [
        ("listen", "unix://{dir}/ok.sock", "--mode", "600", "-k"),
        ("listen", "unixgram://{dir}/ok.sock", "--mode", "600", "--hex", "--count", "1"),
        ("listen", "unix://{dir}/ok.sock", "-k", "--exec", "cat", "--drain-timeout", "1"),
        ("echo", "unix://{dir}/ok.sock", "--mode", "600"),
        ("chat", "unix://{dir}/ok.sock", "--mode", "600", "--queue-limit", "100"),
        ("recv", "unixgram://{dir}/ok.sock", "--mode", "600"),
    ],
)
def test_the_same_options_where_they_apply_are_taken(
    args: tuple[str, ...], sock_dir: str, spawn: Spawn
) -> None:
    server = spawn(*(arg.format(dir=sock_dir) for arg in args))
    server.listening()
    assert os.stat(os.path.join(sock_dir, "ok.sock")).st_mode & 0o777 in (0o600, 0o755, 0o777, 0o775)
    assert server.terminate() == 0, server.err


def test_send_timeout_applies_to_a_datagram_with_wait_reply() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))
        port = quiet.getsockname()[1]
        done = run("send", f"udp://127.0.0.1:{port}", "x", "--wait-reply", "--timeout", "0.2")
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "no reply", "0.2 s")

"""SIGHUP (the terminal went away) stops every command as cleanly as SIGTERM does.

By default SIGHUP kills a process on the spot: its unix socket file stays behind (the next
``listen`` on that path must clean it up) and ``--exec`` children are orphaned.  Each test runs
once with SIGTERM, the reference, and once with SIGHUP, which must do exactly the same.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time

import pytest

from .conftest import ENCHUFE, STEP, Spawn, wait_until

SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGHUP, id="SIGHUP")]


@pytest.mark.parametrize("signum", SIGNALS)
@pytest.mark.parametrize(
    ("command", "scheme", "options"),
    [
        ("listen", "unix", ()),
        ("listen", "unixgram", ()),
        ("listen", "unix", ("-k", "--exec", "cat")),
        ("recv", "unixgram", ()),
        ("echo", "unix", ()),
        ("echo", "unixgram", ()),
        ("chat", "unix", ()),
        ("chat", "unixgram", ()),
    ],
)
def test_an_idle_server_stops_cleanly_and_removes_its_socket_file(
    command: str, scheme: str, options: tuple[str, ...], signum: int, sock_dir: str, spawn: Spawn
) -> None:
    path = os.path.join(sock_dir, "s.sock")
    server = spawn(command, f"{scheme}://{path}", *options)
    server.listening()
    assert os.path.exists(path)
    server.popen.send_signal(signum)
    assert server.finish() == 0, server.err
    assert not os.path.exists(path), "the socket file was left behind"
    assert "Traceback" not in server.err


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, dead but not reaped, counts as gone only
    once its parent reaps it, which is what the test checks)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("signum", SIGNALS)
def test_exec_children_are_ended_and_reaped(signum: int, sock_dir: str, spawn: Spawn) -> None:
    """A child running when the signal comes is ended and reaped; the socket file is removed.

    The child outlives the short drain (it waits for its stdin, which the client keeps open),
    so it is cut: exit status 1, as for SIGTERM."""
    import socket

    path = os.path.join(sock_dir, "x.sock")
    server = spawn(
        "listen", "-k", f"unix://{path}", "--drain-timeout", "0.2", "--exec", "sh -c 'echo $$; exec cat'"
    )
    server.listening()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(path)
        line = b""
        while not line.endswith(b"\n"):
            chunk = client.recv(100)
            assert chunk, "the child said nothing"
            line += chunk
        pid = int(line)
        assert _alive(pid)
        server.popen.send_signal(signum)
        assert server.finish() == 1, server.err
    wait_until(lambda: not _alive(pid), f"the exec child {pid} to be gone", timeout=5)
    assert not os.path.exists(path)
    assert "Traceback" not in server.err


@pytest.mark.parametrize("signum", SIGNALS)
def test_what_exec_children_started_is_ended_too(signum: int, sock_dir: str, spawn: Spawn) -> None:
    """A child's background process stays in the child's process group, which is stopped with
    it: gone once the listener has exited, not left running (holding its stderr)."""
    import contextlib
    import socket

    path = os.path.join(sock_dir, "x.sock")
    program = "sh -c 'sleep 300 2>/dev/null & echo $!; exec cat'"
    server = spawn("listen", "-k", f"unix://{path}", "--drain-timeout", "0.2", "--exec", program)
    server.listening()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(path)
        line = b""
        for _ in range(100):
            if line.endswith(b"\n"):
                break
            chunk = client.recv(100)
            assert chunk, "the child said nothing"
            line += chunk
        background = int(line)
        try:
            assert _alive(background)
            server.popen.send_signal(signum)
            assert server.finish() == 1, server.err
            # (SIGKILL, if it came to that, takes effect a moment after the listener sent it)
            wait_until(lambda: not _alive(background), "the background process gone", timeout=2)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(background, signal.SIGKILL)


@pytest.mark.parametrize("signum", SIGNALS)
def test_send_waiting_for_a_reply_stops_with_status_1(signum: int, sock_dir: str, spawn: Spawn) -> None:
    """send --wait-reply to a server that never answers: the signal cuts it, exit status 1."""
    path = os.path.join(sock_dir, "quiet.sock")
    server = spawn("listen", f"unix://{path}")  # stdin kept open: it never closes its side
    server.listening()
    sender = spawn("send", f"unix://{path}", "question", "--wait-reply", "--timeout", "60")
    server.wait_out_equal(b"question")
    sender.popen.send_signal(signum)
    assert sender.finish() == 1, sender.err
    assert re.search(r"interrupted", sender.err), sender.err
    assert "Traceback" not in sender.err


def _sigint_ignored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(
    ("command", "scheme"), [("listen", "unix"), ("recv", "unixgram"), ("echo", "unix"), ("relay", "unix")]
)
def test_sigint_stops_a_command_started_with_sigint_ignored(command: str, scheme: str, sock_dir: str) -> None:
    """A shell starts a script's background commands (``enchufe listen … &``) with SIGINT
    ignored, and Python keeps it so unless told: ``kill -INT`` must still stop them, as it
    stops socat."""
    path = os.path.join(sock_dir, "s.sock")
    target = (f"unix://{sock_dir}/target.sock",) if command == "relay" else ()
    proc = subprocess.Popen(
        [*ENCHUFE, command, f"{scheme}://{path}", *target],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_sigint_ignored,
    )
    assert proc.stderr is not None
    try:
        # "listening on" is said once the stop handlers are set.
        deadline = time.monotonic() + STEP
        said = b""
        while b"listening on" not in said:
            if not select.select([proc.stderr], [], [], max(0.0, deadline - time.monotonic()))[0]:
                break
            if not (chunk := os.read(proc.stderr.fileno(), 65536)):
                break
            said += chunk
        assert b"listening on" in said, said
        proc.send_signal(signal.SIGINT)
        assert proc.wait(STEP) == 0
        assert not os.path.exists(path)  # stopped cleanly: its socket file removed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()

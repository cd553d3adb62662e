"""``-v`` says what happens to each connection, on every command: ``connected to …``,
``accepted …``, ``closed … after N bytes in, M out``; and ``listen --exec`` says why a program
cannot start."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat

import pytest

from .conftest import STEP, Spawn, assert_one_error_line, run


def talk(address: str, data: bytes) -> bytes:
    """One client through ``enchufe send --wait-reply``; returns what came back."""
    done = run("send", address, data.decode(), "--wait-reply")
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("command", ["echo", "chat"])
def test_servers_report_each_connection(command: str, spawn: Spawn) -> None:
    server = spawn(command, "tcp://127.0.0.1:0", "-v")
    address = server.listening()
    reply = talk(address, b"hello\n")
    assert reply == (b"hello\n" if command == "echo" else b"")
    server.wait_err(r"^closed ")
    assert server.terminate() == 0, server.err
    assert re.search(r"^accepted tcp4?://127\.0\.0\.1:\d+$", server.err, re.MULTILINE), server.err
    received, sent = (6, 6) if command == "echo" else (6, 0)
    pattern = rf"^closed tcp4?://127\.0\.0\.1:\d+ after {received} bytes in, {sent} out$"
    assert re.search(pattern, server.err, re.MULTILINE), server.err


def test_echo_reports_each_datagram_peer(spawn: Spawn) -> None:
    server = spawn("echo", "udp://127.0.0.1:0", "-v")
    address = server.listening()
    assert talk(address, b"ping") == b"ping"
    server.wait_err(r"^new peer udp4?://127\.0\.0\.1:\d+$")
    assert server.terminate() == 0, server.err


def test_without_verbose_nothing_per_connection(spawn: Spawn) -> None:
    server = spawn("echo", "tcp://127.0.0.1:0")
    address = server.listening()
    assert talk(address, b"x") == b"x"
    assert server.terminate() == 0
    assert server.err.splitlines() == [f"listening on {address}"]


def test_send_verbose_reports_its_connection(spawn: Spawn) -> None:
    server = spawn("echo", "tcp://127.0.0.1:0")
    address = server.listening()
    done = run("send", address, "abc", "--wait-reply", "-v")
    assert done.returncode == 0 and done.stdout == b"abc"
    lines = done.stderr.decode().splitlines()
    assert lines[0] == f"connected to {address}", lines
    assert lines[-1] == f"closed {address} after 3 bytes in, 3 out", lines


def test_recv_verbose_reports_each_sender(spawn: Spawn) -> None:
    server = spawn("recv", "udp://127.0.0.1:0", "-v", "--count", "1")
    address = server.listening()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind(("127.0.0.1", 0))
        sender.sendto(b"12345", ("127.0.0.1", int(address.rsplit(":", 1)[1])))
        port = sender.getsockname()[1]
    assert server.finish() == 0, server.err
    assert server.out == b"12345"
    assert re.search(rf"^received 5 bytes from udp4?://127\.0\.0\.1:{port}$", server.err, re.MULTILINE)


def test_listen_exec_reports_each_client(sock_dir: str, spawn: Spawn) -> None:
    server = spawn("listen", "-k", f"unix://{sock_dir}/e.sock", "--exec", "cat", "-v")
    address = server.listening()
    assert talk(address, b"meow") == b"meow"
    server.wait_err(r"^cat for .* exited with status 0$")
    server.wait_err(r"^closed \(unnamed\) after 4 bytes in, 4 out$")
    assert server.terminate() == 0, server.err


# ---------------------------------------------------------------------------- exec that cannot start


def _not_executable(sock_dir: str) -> str:
    path = os.path.join(sock_dir, "script.txt")
    with open(path, "w") as script:
        script.write("#!/bin/sh\necho hi\n")
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    return path


@pytest.mark.parametrize("program", ["/no/such/program", "not-executable"])
def test_exec_that_cannot_start_is_said_and_ends_listen(program: str, sock_dir: str, spawn: Spawn) -> None:
    """Without -k: the reason on stderr at default verbosity, exit status 1."""
    if program == "not-executable":
        program = _not_executable(sock_dir)
    server = spawn("listen", f"unix://{sock_dir}/x.sock", "--exec", program)
    address = server.listening()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(STEP)
        client.connect(address.split("://", 1)[1])
        with contextlib.suppress(ConnectionResetError):  # closed, nothing said to the client
            assert client.recv(100) == b""
    assert server.finish() == 1, server.err
    errors = [line for line in server.err.splitlines() if not line.startswith("listening on")]
    line = assert_one_error_line("\n".join(errors), "cannot run", program)
    assert "no such file" in line.lower() or "permission denied" in line.lower(), line


def test_exec_that_cannot_start_with_keep_open_says_it_for_each_client(sock_dir: str, spawn: Spawn) -> None:
    server = spawn("listen", "-k", f"unix://{sock_dir}/x.sock", "--exec", "/no/such/program")
    address = server.listening()
    path = address.split("://", 1)[1]
    for attempt in range(2):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(STEP)
            client.connect(path)
            with contextlib.suppress(ConnectionResetError):
                client.recv(100)
        server.wait_err(r"^enchufe: cannot run .*/no/such/program", count=attempt + 1)
    assert server.running()
    assert server.terminate() == 0, server.err

"""Unix socket files through the CLI: live, stale, in the way, and cleaned up at the end."""

from __future__ import annotations

import os
import signal
import socket
import stat

import pytest

import enchufe

from .conftest import Spawn, assert_one_error_line, run

SCHEMES = {"unix": (socket.SOCK_STREAM, "listen"), "unixgram": (socket.SOCK_DGRAM, "recv")}


def is_socket(path: str) -> bool:
    return os.path.exists(path) and stat.S_ISSOCK(os.lstat(path).st_mode)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_listen_on_a_live_socket_path_fails_and_leaves_it_alone(
    scheme: str, sock_dir: str, spawn: Spawn
) -> None:
    path = os.path.join(sock_dir, "live.sock")
    command = SCHEMES[scheme][1]
    # -k: the liveness probe of the second listen is a real connection, which a one-shot
    # listen would take for its client (reported).
    keep_open = ["-k"] if scheme == "unix" else []
    first = spawn(command, f"{scheme}://{path}", *keep_open, stdin=False)
    first.listening()
    inode = os.lstat(path).st_ino

    second = run("--trace", command, f"{scheme}://{path}")
    assert second.returncode == 1
    stderr = second.stderr.decode()
    errors = [line for line in stderr.splitlines() if line.startswith("enchufe: ")]
    assert len(errors) == 1 and path in errors[0], stderr
    assert "Traceback" not in stderr and "unlink(" not in stderr
    assert os.lstat(path).st_ino == inode, "the live server's socket file was replaced"
    assert first.running()
    if scheme == "unix":
        done = run("send", f"unix://{path}", "still the first")
        assert done.returncode == 0, done.stderr
        first.wait_out_equal(b"still the first")
    assert first.terminate() == 0, first.err
    assert not os.path.exists(path)


def test_a_live_socket_path_is_reported_as_address_in_use(sock_dir: str, spawn: Spawn) -> None:
    path = os.path.join(sock_dir, "live.sock")
    # A one-shot server (no -k): the liveness probe must not be taken for its one client.
    first = spawn("listen", f"unix://{path}", stdin=False)
    first.listening()
    second = run("listen", f"unix://{path}")
    assert second.returncode == 1
    assert_one_error_line(second.stderr, "address in use")
    assert first.running(), "the probe of the live path ended the one-shot server"
    assert os.path.exists(path)
    assert first.terminate() == 0, first.err


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_stale_socket_file_is_replaced(scheme: str, sock_dir: str, spawn: Spawn) -> None:
    path = os.path.join(sock_dir, "stale.sock")
    sock_type, command = SCHEMES[scheme]
    with socket.socket(socket.AF_UNIX, sock_type) as dead:  # a server that died without cleaning up
        dead.bind(path)
    assert is_socket(path)

    server = spawn("--trace", command, f"{scheme}://{path}", stdin=False)
    server.listening()
    assert "unlink(" in server.err and "stale" in server.err
    if scheme == "unix":
        with enchufe.connect(f"unix://{path}", timeout=5) as conn:
            conn.send_all(b"reached the new server")
            conn.shutdown_write()
            conn.set_timeout(5)
            assert conn.recv() == b""
        assert server.finish() == 0, server.err
    else:
        with enchufe.connect_datagram(f"unixgram://{path}") as sender:
            sender.send(b"reached the new server")
            server.wait_out(len(b"reached the new server"))
        assert server.terminate() == 0, server.err
    assert server.out == b"reached the new server"
    assert not os.path.exists(path)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_regular_file_in_the_way_is_never_touched(scheme: str, sock_dir: str) -> None:
    path = os.path.join(sock_dir, "precious.txt")
    with open(path, "wb") as f:
        f.write(b"keep me")
    before = os.stat(path)

    done = run("--trace", SCHEMES[scheme][1], f"{scheme}://{path}")
    assert done.returncode == 1
    stderr = done.stderr.decode()
    errors = [line for line in stderr.splitlines() if line.startswith("enchufe: ")]
    assert len(errors) == 1 and "not a socket" in errors[0], stderr
    assert "Traceback" not in stderr
    assert "unlink(" not in stderr
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )
    with open(path, "rb") as f:
        assert f.read() == b"keep me"


@pytest.mark.parametrize(
    ("scheme", "command"),
    [("unix", "listen"), ("unixgram", "listen"), ("unixgram", "recv")],
)
def test_the_server_removes_its_socket_file_on_sigterm(
    scheme: str, command: str, sock_dir: str, spawn: Spawn
) -> None:
    path = os.path.join(sock_dir, "mine.sock")
    server = spawn(command, f"{scheme}://{path}", stdin=False)
    assert server.listening() == f"{scheme}://{path}"
    assert is_socket(path)
    assert server.terminate() == 0, server.err
    assert not os.path.exists(path)
    assert "Traceback" not in server.err


def test_the_server_leaves_a_socket_file_that_is_no_longer_its_own(sock_dir: str, spawn: Spawn) -> None:
    path = os.path.join(sock_dir, "taken.sock")
    server = spawn("listen", f"unix://{path}", stdin=False)
    server.listening()
    os.unlink(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as successor:
        successor.bind(path)  # someone else's socket file now
        inode = os.lstat(path).st_ino
        assert server.terminate() == 0, server.err
        assert is_socket(path) and os.lstat(path).st_ino == inode


def test_the_client_finishing_removes_the_servers_socket_file_when_it_exits(
    sock_dir: str, spawn: Spawn
) -> None:
    """A stream listen without -k ends after its client; its file goes with it."""
    path = os.path.join(sock_dir, "once.sock")
    server = spawn("listen", f"unix://{path}", stdin=False)
    server.listening()
    done = run("send", f"unix://{path}", "bye")
    assert done.returncode == 0, done.stderr
    assert server.finish() == 0, server.err
    assert server.out == b"bye"
    assert not os.path.exists(path)


def test_relative_unix_path(sock_dir: str, spawn: Spawn) -> None:
    """unix:rel/path is relative to the working directory, and stays so in the listening line."""
    cwd = os.getcwd()
    os.chdir(sock_dir)
    try:
        server = spawn("listen", "unix:rel.sock", stdin=False)
        assert server.listening() == "unix:rel.sock"
        assert is_socket(os.path.join(sock_dir, "rel.sock"))
        done = run("send", "unix:rel.sock", "relative")
    finally:
        os.chdir(cwd)
    assert done.returncode == 0, done.stderr
    assert server.finish() == 0, server.err
    assert server.out == b"relative"


@pytest.mark.parametrize(
    ("scheme", "command"), [("unix", "listen"), ("unixgram", "listen"), ("unixgram", "recv")]
)
def test_sigterm_right_after_the_listening_line_is_a_clean_stop(
    scheme: str, command: str, sock_dir: str, spawn: Spawn
) -> None:
    """A script that waits for the line and stops the server at once gets 0 (several servers at once,
    so that some are stopped while still finishing the line)."""
    paths = [os.path.join(sock_dir, f"s{n}.sock") for n in range(6)]
    servers = [spawn(command, f"{scheme}://{path}", stdin=False) for path in paths]
    for server in servers:
        server.listening()
        server.popen.send_signal(signal.SIGTERM)
    statuses = [server.finish() for server in servers]
    assert statuses == [0] * len(servers), [server.err for server in servers]
    assert not any(os.path.exists(path) for path in paths)

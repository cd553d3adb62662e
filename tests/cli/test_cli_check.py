"""``enchufe check ADDRESS…``: real listeners, closed ports, missing and stale socket files."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import abstract_name, needs_ipv6

from .conftest import STEP, Spawn, assert_one_error_line, free_port, run, run_here


@pytest.fixture
def tcp_listener() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock


def tcp(sock: socket.socket) -> str:
    return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def lines(stdout: bytes) -> list[str]:
    return stdout.decode().splitlines()


def test_open_and_refused_tcp(tcp_listener: socket.socket) -> None:
    closed = f"tcp://127.0.0.1:{free_port()}"
    done = run("check", tcp(tcp_listener), closed)
    assert done.returncode == 1, done.stderr
    assert lines(done.stdout) == [f"{tcp(tcp_listener)} open", f"{closed} refused"]
    assert done.stderr == b""


def test_every_address_open_exits_0(tcp_listener: socket.socket, sock_dir: str) -> None:
    path = os.path.join(sock_dir, "s.sock")
    with socket.socket(socket.AF_UNIX) as unix, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as gram:
        unix.bind(path)
        unix.listen()
        name = abstract_name()
        gram.bind("\0" + name)
        done = run("check", tcp(tcp_listener), f"unix://{path}", f"unixgram:@{name}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [line.rsplit(" ", 1)[1] for line in lines(done.stdout)] == ["open"] * 3


@needs_ipv6
def test_ipv6() -> None:
    with socket.socket(socket.AF_INET6) as six:
        six.bind(("::1", 0))
        six.listen()
        address = f"tcp6://[::1]:{six.getsockname()[1]}"
        done = run("check", address)
    assert done.returncode == 0
    assert lines(done.stdout) == [f"{address} open"]


def test_service_name_port() -> None:
    """tcp://127.0.0.1:echo is port 7 (a privileged port: the tests run as root)."""
    with socket.socket() as echo:
        try:
            echo.bind(("127.0.0.1", 7))
        except OSError as exc:
            pytest.skip(f"cannot bind 127.0.0.1:7 here: {exc}")
        echo.listen()
        done = run("check", "tcp://127.0.0.1:echo")
    assert done.returncode == 0, done.stdout
    assert lines(done.stdout) == ["tcp://127.0.0.1:7 open"]


def test_the_server_sees_a_client_that_says_nothing(tcp_listener: socket.socket) -> None:
    """check connects and closes: the server's accept() gets a connection at EOF, no data."""
    got: list[bytes] = []

    def accept() -> None:
        tcp_listener.settimeout(STEP)
        conn, _ = tcp_listener.accept()
        with conn:
            conn.settimeout(STEP)
            got.append(conn.recv(100))

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    done = run("check", tcp(tcp_listener))
    thread.join(STEP)
    assert done.returncode == 0
    assert got == [b""]


def test_unix_files_missing_stale_and_not_a_socket(sock_dir: str) -> None:
    missing = os.path.join(sock_dir, "missing.sock")
    stale = os.path.join(sock_dir, "stale.sock")
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(stale)  # bound, never listening, then closed: the file stays, nobody answers
    regular = os.path.join(sock_dir, "file.txt")
    with open(regular, "w") as f:
        f.write("x")
    done = run("check", f"unix://{missing}", f"unix://{stale}", f"unix://{regular}", f"unixgram://{stale}")
    assert done.returncode == 1
    assert lines(done.stdout) == [
        f"unix://{missing} no socket file",
        f"unix://{stale} refused",
        f"unix://{regular} not a socket",
        f"unixgram://{stale} refused",
    ]


def test_unixgram_at_a_stream_socket_says_wrong_type(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "stream.sock")
    with socket.socket(socket.AF_UNIX) as stream:
        stream.bind(path)
        stream.listen()
        done = run("check", f"unixgram://{path}")
    assert done.returncode == 1
    assert lines(done.stdout) == [f"unixgram://{path} wrong socket type"]


def test_unixgram_check_sends_nothing() -> None:
    name = abstract_name()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as gram:
        gram.bind("\0" + name)
        done = run("check", f"unixgram:@{name}")
        gram.setblocking(False)
        with pytest.raises(BlockingIOError):
            gram.recv(10)
    assert done.returncode == 0


#: A closed UDP port says so with ICMP port unreachable, which the kernel rate-limits for the
#: whole host (net.ipv4.icmp_msgs_per_sec, bursts of 50): under a load of other tests one probe
#: may go unanswered.  A refusal is therefore looked for a few times, each on a new port.
UDP_REFUSAL_TRIES = 3


def test_udp_closed_port_is_refused() -> None:
    for _ in range(UDP_REFUSAL_TRIES):
        closed = f"udp://127.0.0.1:{free_port(kind=socket.SOCK_DGRAM)}"
        done = run("check", "--timeout", "2", closed)
        if lines(done.stdout) == [f"{closed} refused"]:
            break
    assert lines(done.stdout) == [f"{closed} refused"]
    assert done.returncode == 1


def test_udp_no_reply_and_open() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as answering,
    ):
        silent.bind(("127.0.0.1", 0))
        answering.bind(("127.0.0.1", 0))
        answering.settimeout(STEP)

        def answer() -> None:
            _data, sender = answering.recvfrom(100)
            answering.sendto(b"here", sender)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        quiet = f"udp://127.0.0.1:{silent.getsockname()[1]}"
        loud = f"udp://127.0.0.1:{answering.getsockname()[1]}"
        done = run("check", "--timeout", "0.3", quiet, loud)
        thread.join(STEP)
        silent.settimeout(STEP)
        probe = silent.recv(100)
    assert lines(done.stdout) == [f"{quiet} no reply", f"{loud} open"]
    assert probe == b"", "the probe is one empty datagram"
    assert done.returncode == 0  # as nc -zuv: not refused counts as answering


def test_udp_no_reply_counts_as_answering_as_nc_zu_does() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        done = run("check", "--timeout", "0.2", f"udp://127.0.0.1:{silent.getsockname()[1]}")
    assert done.returncode == 0


def test_json_one_object_per_address(tcp_listener: socket.socket) -> None:
    closed = f"tcp://127.0.0.1:{free_port()}"
    done = run("check", "--json", tcp(tcp_listener), closed)
    records = [json.loads(line) for line in lines(done.stdout)]
    assert [(r["address"], r["status"], r["ok"]) for r in records] == [
        (tcp(tcp_listener), "open", True),
        (closed, "refused", False),
    ]
    assert all(isinstance(r["seconds"], float) for r in records)
    assert "refused" in records[1]["detail"]


def test_quiet_prints_nothing(tcp_listener: socket.socket) -> None:
    done = run("-q", "check", tcp(tcp_listener))
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")


def test_unknown_host_is_a_runtime_answer() -> None:
    done = run("check", "--timeout", "2", "tcp://nonexistent.invalid:80")
    assert done.returncode == 1
    assert lines(done.stdout) == ["tcp://nonexistent.invalid:80 unknown host"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("tcp://127.0.0.1:22", "127.0.0.1:80"), "write tcp://127.0.0.1:80"),
        (("tcp://:22",), "needs a host and a port"),
        (("udp://127.0.0.1:0",), "needs a host and a port"),
        (("-",), "needs a socket address"),
        (("--timeout", "nan", "tcp://127.0.0.1:22"), "--timeout"),
        (("--timeout", "inf", "tcp://127.0.0.1:22"), "--timeout"),
        (("--timeout", "0", "tcp://127.0.0.1:22"), "--timeout"),
        (("--timeout", "-1", "tcp://127.0.0.1:22"), "--timeout"),
        (("--timeout", "1e309", "tcp://127.0.0.1:22"), "--timeout"),
    ],
)
def test_bad_input_exits_2_before_checking_anything(args: tuple[str, ...], needle: str) -> None:
    done = run_here("--trace", "check", *args)  # refused before anything opens: in-process
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, needle)
    assert done.stdout == b""


def test_no_address_is_bad_usage() -> None:
    done = run("check")
    assert done.returncode == 2


def test_help_has_examples() -> None:
    done = run("check", "--help")
    assert done.returncode == 0
    text = done.stdout.decode()
    assert text.split("Examples:", 1)[1].count("enchufe") >= 3


def test_help_keeps_the_table_of_what_each_kind_says_as_written() -> None:
    text = run_here("check", "--help").stdout.decode()
    # Every row of the table on its lines, as written (click rewraps a paragraph outside \b).
    for row in (
        "  tls, tls+unix:  open only once the TLS handshake and the server's verification passed\n",
        '  --via:          through the proxies: open once the last one opened its tunnel; "refused"\n',
    ):
        assert row in text


@pytest.fixture
def full_listener() -> Iterator[socket.socket]:
    """A listener whose accept queue is full (backlog 0, one connection pending): Linux drops
    further SYNs, so a connect() to it waits until its timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        with socket.create_connection(sock.getsockname(), timeout=STEP):
            yield sock


def test_timed_out(full_listener: socket.socket) -> None:
    done = run("check", "--timeout", "0.3", tcp(full_listener))
    assert done.returncode == 1
    assert lines(done.stdout) == [f"{tcp(full_listener)} timed out"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_ends_a_check_at_once(
    signum: signal.Signals, full_listener: socket.socket, spawn: Spawn
) -> None:
    """A check blocked in connect() (a full accept queue, --timeout 60) ends at the signal,
    exit status 1, without waiting for the timeout."""
    proc = spawn("--trace", "check", "--timeout", "60", tcp(full_listener))
    proc.wait_err(r"^socket\(AF_INET, SOCK_STREAM\)")
    time.sleep(0.2)  # into the connect() call that the trace line announced
    proc.popen.send_signal(signum)
    assert proc.finish(timeout=STEP) == 1, proc.err
    assert "check interrupted" in proc.err

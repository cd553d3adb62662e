"""``enchufe echo`` and ``enchufe chat`` as real processes: listening line, signals, exit
statuses, limits."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

import enchufe
from enchufe import ConnectionReset, TimedOut
from tests.conftest import kind_params
from tests.servers.cli_helpers import PROCESS_TIMEOUT, ServerProcess

pytestmark = pytest.mark.timeout(60)

IO_TIMEOUT = 10.0


@pytest.fixture
def run_server() -> Iterator[Callable[..., ServerProcess]]:
    processes: list[ServerProcess] = []

    def starter(*args: str) -> ServerProcess:
        process = ServerProcess(*args)
        processes.append(process)
        return process

    try:
        yield starter
    finally:
        for process in processes:
            process.kill()


def connect(address: str) -> enchufe.Connection:
    conn = enchufe.connect(address, timeout=IO_TIMEOUT)
    conn.set_timeout(IO_TIMEOUT)
    return conn


def closed_by_server(conn: enchufe.Connection) -> bool:
    try:
        return conn.recv() == b""
    except ConnectionReset:
        return True


def no_traceback(process: ServerProcess) -> None:
    assert not any("Traceback" in line for line in process.lines), process.lines


@pytest.mark.parametrize("kind", kind_params(("tcp4", "tcp6", "unix", "unix-abstract")))
def test_echo_stream(
    run_server: Callable[..., ServerProcess], make_address: Callable[[str], str], kind: str
) -> None:
    server = run_server("echo", make_address(kind))
    line = server.wait_for_line(lambda text: "listening" in text)
    assert re.fullmatch(r"listening on \S+", line)
    address = server.listening_address()
    if kind.startswith("tcp"):
        assert not address.endswith(":0")  # the real port
    with connect(address) as conn:
        conn.send_all(b"hello\n")
        conn.shutdown_write()
        assert conn.recv_exactly(6) == b"hello\n"
        assert conn.recv() == b""  # closed after our EOF, once all was echoed
    assert server.stop() == 0  # SIGTERM while idle
    no_traceback(server)


@pytest.mark.parametrize("kind", kind_params(("udp4", "udp6", "unixgram", "unixgram-abstract")))
def test_echo_datagram(
    run_server: Callable[..., ServerProcess], make_address: Callable[[str], str], kind: str
) -> None:
    server = run_server("echo", make_address(kind), "--json")
    record = json.loads(server.wait_for_line(lambda text: "listening" in text))
    assert record["event"] == "listening"
    assert isinstance(enchufe.parse(record["address"]), enchufe.InetAddress | enchufe.UnixAddress)
    with enchufe.connect_datagram(record["address"]) as sock:
        sock.set_timeout(IO_TIMEOUT)
        for payload in (b"one", b"", b"x" * 5000):
            sock.send(payload)
            assert sock.recv() == payload
    assert server.stop(signal.SIGINT) == 0
    no_traceback(server)


def test_cut_transfer_exits_1(
    run_server: Callable[..., ServerProcess], make_address: Callable[[str], str]
) -> None:
    server = run_server("echo", make_address("tcp4"), "--drain-timeout", "0")
    with connect(server.listening_address()) as conn:
        conn.send_all(b"in flight")
        assert conn.recv_exactly(9) == b"in flight"
        assert server.stop() == 1  # the connection was cut
        assert closed_by_server(conn)
    assert any("cut" in line for line in server.lines)
    no_traceback(server)


def test_json_stopped_event(
    run_server: Callable[..., ServerProcess], make_address: Callable[[str], str]
) -> None:
    server = run_server("echo", make_address("unix"), "--json", "--drain-timeout", "0")
    with connect(server.listening_address()) as conn:
        conn.send_all(b"x")
        assert conn.recv() == b"x"
        assert server.stop() == 1
    events = [json.loads(line) for line in server.lines]
    assert events[0]["event"] == "listening"
    assert events[-1] == {"event": "stopped", "cut": 1, "accepted": 1}


def test_drain_lets_a_transfer_finish(
    run_server: Callable[..., ServerProcess], make_address: Callable[[str], str]
) -> None:
    server = run_server("echo", make_address("unix-abstract"))
    with connect(server.listening_address()) as conn:
        conn.send_all(b"first part, ")
        assert conn.recv_exactly(12) == b"first part, "
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # draining: still serving what is open
        conn.send_all(b"second part")
        conn.shutdown_write()
        assert conn.recv_exactly(11) == b"second part"
        assert conn.recv() == b""
    assert server.proc.wait(PROCESS_TIMEOUT) == 0
    with pytest.raises(enchufe.ConnectionRefused):
        enchufe.connect(server.listening_address())


def test_second_signal_cuts(
    run_server: Callable[..., ServerProcess], make_address: Callable[[str], str]
) -> None:
    server = run_server("echo", make_address("tcp4"))
    with connect(server.listening_address()) as conn:
        conn.send_all(b"x")
        assert conn.recv() == b"x"
        server.proc.send_signal(signal.SIGINT)
        # The drain is said, with how to cut it, as the relay says it.
        draining = "stopping: no new clients; waiting up to 10 s for 1 open connection"
        server.wait_for_line(lambda text: text == f"{draining} (signal again to cut them now)")
        assert server.proc.poll() is None  # draining (10 s by default)
        assert server.stop(signal.SIGINT) == 1  # a second Ctrl-C cuts at once
        assert closed_by_server(conn)
    server.wait_for_line(lambda text: text == "stopping now: cutting 1 open connection(s)")


def test_max_conns(run_server: Callable[..., ServerProcess], make_address: Callable[[str], str]) -> None:
    server = run_server("echo", make_address("tcp4"), "--max-conns", "1", "-v")
    address = server.listening_address()
    with connect(address) as first:
        first.send_all(b"1")
        assert first.recv() == b"1"
        with connect(address) as second:
            assert closed_by_server(second)  # closed at once
        server.wait_for_line(lambda text: "refused" in text)
        first.send_all(b"2")
        assert first.recv() == b"2"
    assert server.stop() == 0


def test_idle_timeout(run_server: Callable[..., ServerProcess], make_address: Callable[[str], str]) -> None:
    server = run_server("echo", make_address("unix"), "--idle-timeout", "0.3")
    address = server.listening_address()
    with connect(address) as idle, connect(address) as active:
        started = time.monotonic()
        while time.monotonic() - started < 0.9:
            active.send_all(b".")
            assert active.recv() == b"."
            time.sleep(0.05)
        assert closed_by_server(idle)
        active.send_all(b"still here")
        assert active.recv_exactly(10) == b"still here"
    assert server.stop() == 0


@pytest.mark.parametrize(
    "args", [("tcp://localhost",), ("bogus:x",), ("tcp://127.0.0.1:0", "--max-conns", "0")]
)
def test_bad_usage_exits_2(args: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "enchufe", "echo", *args], capture_output=True, timeout=PROCESS_TIMEOUT
    )
    assert result.returncode == 2
    assert b"Traceback" not in result.stderr
    assert result.stderr.strip()


# --- chat -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", kind_params(("tcp4", "unix")))
def test_chat_stream(
    run_server: Callable[..., ServerProcess], make_address: Callable[[str], str], kind: str
) -> None:
    server = run_server("chat", make_address(kind), "-v")
    address = server.listening_address()
    with connect(address) as alice, connect(address) as bob, connect(address) as carol:
        for _ in range(3):
            server.wait_for_line(lambda text: "joined (3 in the room)" in text)
        alice.send_all(b"hi all\n")
        from_alice = bob.recv_until(b"\n")
        assert carol.recv_until(b"\n") == from_alice
        name, _, text = from_alice.partition(b": ")
        assert text == b"hi all\n"
        if kind == "tcp4":
            assert name.decode() == str(alice.local_address).split("://")[1]
        bob.send_all(b"hello alice\n")
        assert alice.recv_until(b"\n").endswith(b": hello alice\n")
        assert carol.recv_until(b"\n").endswith(b": hello alice\n")
        alice.set_timeout(0.2)
        with pytest.raises(TimedOut):
            alice.recv()  # never our own lines back
    assert server.stop() == 0


def test_chat_raw(run_server: Callable[..., ServerProcess], make_address: Callable[[str], str]) -> None:
    server = run_server("chat", make_address("unix-abstract"), "--raw", "-v")
    address = server.listening_address()
    with connect(address) as a, connect(address) as b:
        server.wait_for_line(lambda text: "(2 in the room)" in text)
        blob = b"no newline, \x00 binary"
        a.send_all(blob)
        assert b.recv_exactly(len(blob)) == blob
    assert server.stop() == 0


def test_chat_datagram(run_server: Callable[..., ServerProcess], make_address: Callable[[str], str]) -> None:
    server = run_server("chat", make_address("unixgram"), "--idle-timeout", "0.5")
    address = server.listening_address()
    with enchufe.connect_datagram(address) as a, enchufe.connect_datagram(address) as b:
        for sock in (a, b):
            sock.set_timeout(IO_TIMEOUT)
        a.send(b"a is here")
        time.sleep(0.1)
        b.send(b"b is here")  # joining is sending
        assert a.recv().endswith(b": b is here")
        a.send(b"hello b")
        assert b.recv().endswith(b": hello b")
        time.sleep(0.8)  # both idle out of the room
        a.send(b"anyone?")
        b.set_timeout(0.3)
        with pytest.raises(TimedOut):
            b.recv()
    assert server.stop() == 0

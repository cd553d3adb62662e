"""``enchufe connect``: --idle-timeout, --source, --crlf, --hex, -v, signals, hints, bad input.

The servers are plain sockets in a thread of the test (real sockets on loopback), so that a test
controls exactly when the peer talks, holds or closes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from enchufe.cli.connect import CrlfWriter
from tests.conftest import abstract_name

from .conftest import STEP, Spawn, assert_one_error_line, free_port, run, run_here, wait_until

#: How long a test's server holds a connection open without a word: far longer than any idle
#: timeout a test asks for, so that only the client's timeout can end the session in time.
HOLD = 60.0


class Server:
    """A one-client stream server in a thread: sends ``greeting`` (and ``drip`` chunks), then
    holds the connection open until the client closes or ``HOLD`` passes; records what arrived
    and who the peer was."""

    def __init__(
        self,
        family: int = socket.AF_INET,
        bind: str | bytes = "127.0.0.1",
        greeting: bytes = b"",
        drip: tuple[bytes, float, int] | None = None,
    ) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((bind, 0) if family != socket.AF_UNIX else bind)
        self.sock.listen(4)
        self.sock.settimeout(STEP)
        self.greeting = greeting
        self.drip = drip
        self.received = bytearray()
        self.peer: object = None
        self.closed_by_client = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        name = self.sock.getsockname()
        if self.sock.family == socket.AF_INET:
            return f"tcp://{name[0]}:{name[1]}"
        if self.sock.family == socket.AF_INET6:
            return f"tcp://[{name[0]}]:{name[1]}"
        if isinstance(name, bytes) or name.startswith("\0"):
            return "unix:@" + (name[1:].decode() if isinstance(name, bytes) else name[1:])
        return f"unix://{name}"

    def _serve(self) -> None:
        try:
            conn, self.peer = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.sendall(self.greeting)
            if self.drip is not None:
                chunk, every, count = self.drip
                for _ in range(count):
                    time.sleep(every)
                    conn.sendall(chunk)
            conn.settimeout(HOLD)
            try:
                while chunk := conn.recv(65536):
                    self.received += chunk
                self.closed_by_client.set()
            except OSError:
                self.closed_by_client.set()

    def close(self) -> None:
        # close() alone does not wake a thread blocked in accept() on Linux (a client that never
        # came held the teardown for STEP, 15 s); shutdown() does.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(STEP)


@pytest.fixture
def server() -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(*args: object, **kwargs: object) -> Server:
        found = Server(*args, **kwargs)  # type: ignore[arg-type]
        made.append(found)
        return found

    yield make
    for found in made:
        found.close()


# --- --idle-timeout ------------------------------------------------------------------------------


def test_idle_timeout_ends_a_held_connection_with_exit_0(spawn: Spawn, server: Callable[..., Server]) -> None:
    """A banner server that holds the connection: --timeout alone would wait for it; with
    --idle-timeout the client closes once nothing has moved for that long, exit 0 as nc -w."""
    banner = server(greeting=b"220 ready\r\n")
    client = spawn("-v", "connect", "--idle-timeout", "0.5", banner.address)  # stdin stays open
    client.wait_out_equal(b"220 ready\r\n")
    assert client.finish() == 0, client.err
    assert banner.closed_by_client.wait(STEP), "the server never saw the client close"
    assert "no traffic for 0.5 s" in client.err
    assert "Traceback" not in client.err


def test_idle_timeout_without_any_data(spawn: Spawn, server: Callable[..., Server]) -> None:
    silent = server()
    client = spawn("connect", "--idle-timeout", "0.3", silent.address)
    assert client.finish() == 0, client.err
    assert client.out == b""
    assert client.err == ""


def test_idle_timeout_counts_from_the_last_traffic(spawn: Spawn, server: Callable[..., Server]) -> None:
    """Chunks 0.1 s apart keep a 1 s idle timeout from firing: all of them arrive."""
    drip = server(drip=(b"x", 0.1, 15))
    client = spawn("connect", "--idle-timeout", "1", drip.address)
    assert client.finish() == 0, client.err
    assert client.out == b"x" * 15


def test_idle_timeout_zero_means_never(spawn: Spawn, server: Callable[..., Server]) -> None:
    held = server(greeting=b"hi")
    client = spawn("connect", "--idle-timeout", "0", held.address)
    client.wait_out_equal(b"hi")
    time.sleep(0.5)  # longer than any timeout 0 could be mistaken for
    assert client.running()
    client.close_stdin()
    assert client.finish() == 0, client.err


def test_idle_timeout_on_a_datagram_connect(spawn: Spawn) -> None:
    """Datagram: stdin still open, nothing moving: the client ends after the idle timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        client = spawn("connect", "--idle-timeout", "0.3", f"udp://127.0.0.1:{peer.getsockname()[1]}")
        assert client.finish() == 0, client.err


# --- --crlf and --hex ----------------------------------------------------------------------------


def test_crlf_sends_line_ends_as_crlf(spawn: Spawn, server: Callable[..., Server]) -> None:
    sink = server()
    client = spawn("connect", "--crlf", sink.address)
    client.feed(b"HELO a\nMAIL b\r\nlast")
    assert client.finish() == 0, client.err
    assert sink.closed_by_client.wait(STEP)
    assert bytes(sink.received) == b"HELO a\r\nMAIL b\r\nlast"


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"a\nb\n"], b"a\r\nb\r\n"),
        ([b"a\r\n"], b"a\r\n"),
        ([b"a\r", b"\nb"], b"a\r\nb"),  # a CRLF split across two reads stays one CRLF
        ([b"a", b"\n"], b"a\r\n"),
        ([b"\n\n"], b"\r\n\r\n"),
        ([b"\r", b"\n", b"\n"], b"\r\n\r\n"),
        ([b"", b"x"], b"x"),
    ],
)
def test_crlf_writer(chunks: list[bytes], expected: bytes) -> None:
    writer = CrlfWriter()
    assert b"".join(writer(chunk) for chunk in chunks) == expected


def test_hex_dumps_both_directions_on_stderr(spawn: Spawn, server: Callable[..., Server]) -> None:
    peer = server(greeting=b"OK\x00\xff")
    client = spawn("connect", "--hex", peer.address)
    client.wait_out_equal(b"OK\x00\xff")
    client.feed(b"hello")
    assert client.finish() == 0, client.err
    assert client.out == b"OK\x00\xff"  # stdout carries the data untouched
    assert "< received 4 bytes (offset 0)" in client.err
    assert "4f 4b 00 ff" in client.err and "|OK..|" in client.err
    assert "> sent 5 bytes (offset 0)" in client.err
    assert "68 65 6c 6c 6f" in client.err


def test_hex_and_crlf_on_a_datagram_connect(spawn: Spawn) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(STEP)
        client = spawn("connect", "--hex", "--crlf", f"udp://127.0.0.1:{peer.getsockname()[1]}")
        client.feed(b"ping\n", close=False)
        data, sender = peer.recvfrom(100)
        assert data == b"ping\r\n"
        peer.sendto(b"pong", sender)
        client.wait_out_equal(b"pong")
        client.close_stdin()
        assert client.finish() == 0, client.err
    assert "> sent 6 bytes" in client.err and "< received 4 bytes" in client.err


# --- --source ------------------------------------------------------------------------------------


def test_source_host_is_what_the_server_sees(spawn: Spawn, server: Callable[..., Server]) -> None:
    peer = server()
    client = spawn("connect", "--source", "tcp://127.0.0.2:0", peer.address)
    client.close_stdin()
    assert client.finish() == 0, client.err
    assert isinstance(peer.peer, tuple) and peer.peer[0] == "127.0.0.2"


def test_source_port_is_what_the_server_sees(spawn: Spawn, server: Callable[..., Server]) -> None:
    port = free_port()
    for _ in range(2):  # the second run reuses the port despite the first one's TIME_WAIT
        peer = server()
        client = spawn("connect", "--source", f"tcp://127.0.0.1:{port}", peer.address)
        client.close_stdin()
        assert client.finish() == 0, client.err
        assert isinstance(peer.peer, tuple) and peer.peer == ("127.0.0.1", port)


def test_source_unix_path_names_the_peer_and_is_removed(
    spawn: Spawn, server: Callable[..., Server], sock_dir: str
) -> None:
    peer = server(socket.AF_UNIX, os.path.join(sock_dir, "server.sock"))
    mine = os.path.join(sock_dir, "client.sock")
    client = spawn("connect", "--source", f"unix://{mine}", peer.address)
    wait_until(lambda: peer.peer is not None, "the server accepting")
    assert peer.peer == mine
    client.close_stdin()
    assert client.finish() == 0, client.err
    assert not os.path.exists(mine), "the client's socket file was left behind"


def test_source_abstract_name(spawn: Spawn, server: Callable[..., Server]) -> None:
    peer = server(socket.AF_UNIX, b"\0" + abstract_name().encode())
    name = abstract_name()
    client = spawn("connect", "--source", f"unix:@{name}", peer.address)
    client.close_stdin()
    assert client.finish() == 0, client.err
    assert peer.peer in (b"\0" + name.encode(), "\0" + name)


def test_source_on_a_datagram_connect(spawn: Spawn) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(STEP)
        port = free_port(kind=socket.SOCK_DGRAM)
        client = spawn(
            "connect", "--source", f"udp://127.0.0.1:{port}", f"udp://127.0.0.1:{peer.getsockname()[1]}"
        )
        client.feed(b"x")
        _data, sender = peer.recvfrom(10)
        assert sender == ("127.0.0.1", port)
        assert client.finish() == 0, client.err


@pytest.mark.parametrize(
    ("source", "target", "needle"),
    [
        ("tcp://[::1]:0", "tcp://127.0.0.1:9", "IPv6 source cannot reach the IPv4"),
        ("tcp://127.0.0.1:0", "tcp6://[::1]:9", "IPv4 source cannot reach the IPv6"),
        ("unix:@x", "tcp://127.0.0.1:9", "needs a tcp:// source"),
        ("udp://127.0.0.1:0", "tcp://127.0.0.1:9", "needs a tcp:// source"),
        ("tcp://127.0.0.1:0", "unix:@x", "needs a unix: source"),
        ("unixgram:@x", "unix:@x", "needs a unix: source"),
        ("-", "tcp://127.0.0.1:9", "a source is a socket address"),
        ("tcp://127.0.0.1", "tcp://127.0.0.1:9", "missing port"),
    ],
)
def test_source_that_cannot_work_is_refused_before_any_socket(source: str, target: str, needle: str) -> None:
    done = run_here("--trace", "connect", "--source", source, target)
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, needle)


def test_source_in_use_is_a_runtime_error_naming_the_source(server: Callable[..., Server]) -> None:
    peer = server()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run("connect", "--source", f"tcp://127.0.0.1:{port}", peer.address)
    assert done.returncode == 1, done.stderr
    assert_one_error_line(done.stderr, f"source address tcp://127.0.0.1:{port}", "in use")


# --- -v, signals, hints --------------------------------------------------------------------------


def test_verbose_says_connected_and_closed_with_byte_counts(
    spawn: Spawn, server: Callable[..., Server]
) -> None:
    peer = server(greeting=b"12345")
    client = spawn("-v", "connect", peer.address)
    client.wait_out_equal(b"12345")
    client.feed(b"abc")
    client.wait_err(r"^connected to tcp://127\.0\.0\.1:\d+ from tcp://127\.0\.0\.1:\d+$")
    assert peer.closed_by_client.wait(STEP)
    peer.close()  # the server closes its side: the session is done
    assert client.finish() == 0, client.err
    client.wait_err(r"^closed tcp://127\.0\.0\.1:\d+ after 5 bytes in, 3 out$")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_cuts_and_says_so(
    signum: signal.Signals, spawn: Spawn, server: Callable[..., Server]
) -> None:
    peer = server(greeting=b"xyz")
    client = spawn("connect", peer.address)
    client.wait_out_equal(b"xyz")
    client.popen.send_signal(signum)
    assert client.finish() == 1, client.err
    line = assert_one_error_line(client.err, f"interrupted by {signum.name}")
    assert "cut after 3 bytes in, 0 out" in line


def test_refused_says_which_flag_helps() -> None:
    port = free_port()
    done = run("connect", f"tcp://127.0.0.1:{port}")
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "refused", "there? --retry N waits for a server to start.")
    done = run("connect", "--retry", "1", "--retry-delay", "0", f"tcp://127.0.0.1:{port}")
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "(2 attempts). Raise --retry or --retry-delay to wait longer.")


def test_missing_unix_socket_file_says_which_flag_helps(sock_dir: str) -> None:
    done = run("connect", f"unix://{sock_dir}/none.sock")
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "(start the server first). --retry N waits for a server to start.")


def test_untrusted_name_in_an_error_stays_on_one_line() -> None:
    """U+2028 (a line separator to str.splitlines and many log readers) in an abstract name."""
    done = run("connect", f"unix:@{abstract_name()}\u2028forged: line\x85x")
    assert done.returncode == 1
    line = assert_one_error_line(done.stderr, "\\u2028forged")
    assert line.isprintable()


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("127.0.0.1", "80"), "write tcp://127.0.0.1:80"),
        (("::1", "80"), "write tcp://[::1]:80"),
        (("localhost", "http"), "write tcp://localhost:80"),
        (("127.0.0.1:80",), "write tcp://127.0.0.1:80"),
        (("a", "b", "c"), "one address, not 3"),
        (("tcp://127.0.0.1:80", "extra"), "one address, not 2"),
        (("tcp://1.2.3:80",), "tcp://1.2.0.3:80"),
        (("tcp://127.0.0.1:nosuch",), "unknown tcp service"),
        (("exec:cat",), "needs a socket address"),
    ],
)
def test_address_mistakes_get_one_line_with_the_form_to_write(args: tuple[str, ...], needle: str) -> None:
    done = run_here("--trace", "connect", *args)
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, needle)


@pytest.mark.parametrize("option", ["--retry", "--retry-delay", "--timeout", "--idle-timeout"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "1e309", "99999999999", "x", ""])
def test_numeric_options_refuse_non_finite_negative_and_out_of_range(option: str, value: str) -> None:
    done = run_here("--trace", "connect", option, value, "tcp://127.0.0.1:9")
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, option)


def test_fractional_retry_is_refused() -> None:
    done = run("connect", "--retry", "1.5", "tcp://127.0.0.1:9")
    assert done.returncode == 2
    assert_one_error_line(done.stderr, "--retry")


def test_help_has_examples() -> None:
    done = run("connect", "--help")
    assert done.returncode == 0
    text = done.stdout.decode()
    assert "Examples:" in text
    examples = text.split("Examples:", 1)[1]
    assert examples.count("enchufe connect") >= 3


@pytest.fixture
def full_listener() -> Iterator[str]:
    """A listener whose accept queue is full (backlog 0, one connection pending): Linux drops
    further SYNs, so a connect() to it waits until its timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        with socket.create_connection(sock.getsockname(), timeout=STEP):
            yield f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def test_connect_timeout_says_which_flag_helps(full_listener: str) -> None:
    done = run("connect", "--timeout", "0.3", full_listener)
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "timed out", "Raise --timeout (now 0.3 s).")


def test_idle_timeout_also_bounds_the_connection_attempt(full_listener: str) -> None:
    """As nc -w: without --timeout, --idle-timeout limits each connection attempt too."""
    done = run("connect", "--idle-timeout", "0.3", full_listener)
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "timed out", "Raise --idle-timeout (now 0.3 s).")


def test_stop_signal_while_connecting_removes_the_source_file(spawn: Spawn, sock_dir: str) -> None:
    """A unix listener with a full queue makes connect() block; SIGTERM then ends the client,
    which says so and leaves no socket file of its --source behind."""
    path = os.path.join(sock_dir, "full.sock")
    mine = os.path.join(sock_dir, "mine.sock")
    with socket.socket(socket.AF_UNIX) as full:
        full.bind(path)
        full.listen(0)
        with socket.socket(socket.AF_UNIX) as pending:
            pending.connect(path)
            client = spawn("connect", "--source", f"unix://{mine}", f"unix://{path}")
            wait_until(lambda: os.path.exists(mine), "the client binding its source")
            client.popen.send_signal(signal.SIGTERM)
            assert client.finish() == 1, client.err
    assert_one_error_line(client.err, f"interrupted by SIGTERM while connecting to unix://{path}")
    assert not os.path.exists(mine)

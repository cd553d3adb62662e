"""``enchufe socks LISTEN``: enchufe's own ``connect --via socks5://`` through it (sha256 both
ways, a half-close), the open-proxy warning, --json events, drain and --workers, bad input."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import socket
import threading
from collections.abc import Iterator

import pytest

from .conftest import STEP, Spawn, assert_one_error_line, run, run_here

#: Each way through the proxy.
SIZE = 1 << 20


class AnswerAfterEOF:
    """A target that reads everything until the client's EOF, then sends ``answer`` and closes:
    it answers only if the client's half-close came through the proxy."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.received = hashlib.sha256()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(STEP)
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(STEP)
            while data := conn.recv(65536):
                self.received.update(data)
            conn.sendall(self.answer)
        self.done.set()

    def close(self) -> None:
        self.listener.close()
        self._thread.join(STEP)


def replies(sock: socket.socket) -> bytes:
    """The method choice and the reply to an IPv4 request: 12 bytes, in as many reads as it takes."""
    data = b""
    while len(data) < 12 and (chunk := sock.recv(12 - len(data))):
        data += chunk
    return data


@pytest.fixture
def target() -> Iterator[AnswerAfterEOF]:
    server = AnswerAfterEOF(random.Random(2).randbytes(SIZE))
    yield server
    server.close()


def test_connect_via_socks5_through_enchufe_socks(spawn: Spawn, target: AnswerAfterEOF) -> None:
    proxy = spawn("socks", "tcp://127.0.0.1:0", "--auth", "alice:s3cret", "--json")
    address = proxy.listening()
    port = address.rpartition(":")[2]
    sent = random.Random(1).randbytes(SIZE)
    client = spawn(
        "connect", f"tcp://localhost:{target.port}", "--via", f"socks5://alice:s3cret@127.0.0.1:{port}"
    )
    client.feed(sent)
    assert client.finish() == 0, client.err
    assert target.done.wait(STEP)
    assert target.received.hexdigest() == hashlib.sha256(sent).hexdigest()
    assert hashlib.sha256(client.out).hexdigest() == hashlib.sha256(target.answer).hexdigest()
    proxy.wait_err(r'"event": "close"')
    events = [json.loads(line) for line in proxy.err.splitlines() if line.startswith("{")]
    (request,) = [e for e in events if e["event"] == "request"]
    assert request["destination"] == f"localhost:{target.port}" and request["user"] == "alice"
    (close,) = [e for e in events if e["event"] == "close"]
    assert close["to_target"] == SIZE and close["to_client"] == SIZE
    assert "s3cret" not in proxy.err
    assert proxy.terminate() == 0


@pytest.mark.parametrize(
    ("listen", "extra", "warned"),
    [
        ("tcp://0.0.0.0:0", (), True),
        ("tcp://:0", (), True),
        ("tcp://127.0.0.1:0", (), False),
        ("tcp://localhost:0", (), False),
        ("tcp://0.0.0.0:0", ("--auth", "u:p"), False),
    ],
)
def test_an_open_proxy_off_loopback_warns_once(
    spawn: Spawn, listen: str, extra: tuple[str, ...], warned: bool
) -> None:
    proxy = spawn("socks", listen, *extra)
    proxy.listening()
    assert proxy.terminate() == 0
    warnings = [line for line in proxy.err.splitlines() if "open proxy" in line]
    assert len(warnings) == (1 if warned else 0), proxy.err


def test_a_stop_drains_an_open_tunnel_then_exits_0(spawn: Spawn) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        proxy = spawn("socks", "tcp://127.0.0.1:0")
        port = proxy.listening().rpartition(":")[2]
        with socket.create_connection(("127.0.0.1", int(port)), timeout=STEP) as sock:
            sock.sendall(
                b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01" + listener.getsockname()[1].to_bytes(2, "big")
            )
            assert replies(sock)[:4] == b"\x05\x00\x05\x00"
            conn, _ = listener.accept()
            with conn:
                proxy.popen.send_signal(signal.SIGTERM)
                proxy.wait_err(r"stopping: no new clients; waiting up to")
                sock.sendall(b"still here")
                assert conn.recv(10) == b"still here"
        assert proxy.finish() == 0


def test_workers_share_the_port(spawn: Spawn) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        proxy = spawn("socks", "tcp://127.0.0.1:0", "--workers", "2")
        port = int(proxy.listening().rpartition(":")[2])
        target = listener.getsockname()[1].to_bytes(2, "big")
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", port), timeout=STEP) as sock:
                sock.sendall(b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01" + target)
                assert replies(sock)[:4] == b"\x05\x00\x05\x00"
                conn, _ = listener.accept()
                conn.close()
        assert proxy.terminate() == 0


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--auth", "alice"), ("--auth", "USER:PASS")),
        (("--auth", "alice:" + "p" * 300), ("--auth", "255 bytes")),
        (("--deny-dest", "a b"), ("--deny-dest", "CIDR, IP, HOST")),
        (("--allow-dest", "10.0.0.0/8:0"), ("--allow-dest", "port")),
        (("--handshake-timeout", "0"), ("--handshake-timeout",)),
    ],
)
def test_bad_options_are_one_line_exit_2(args: tuple[str, ...], needles: tuple[str, ...]) -> None:
    done = run_here("socks", "tcp://127.0.0.1:0", *args)
    assert done.returncode == 2
    line = assert_one_error_line(done.stderr, *needles)
    assert "ppppp" not in line


@pytest.mark.parametrize("listen", ["udp://127.0.0.1:0", "unixgram:@x", "tls://127.0.0.1:0?cert=auto"])
def test_a_listen_address_that_is_no_stream_socket_is_refused(listen: str) -> None:
    done = run_here("socks", listen)
    assert done.returncode == 2
    assert_one_error_line(done.stderr, "tcp:// or unix: stream")


def test_auth_files(tmp_path: object) -> None:
    folder = str(tmp_path)
    missing = os.path.join(folder, "missing")
    done = run_here("socks", "tcp://127.0.0.1:0", "--auth-file", missing)
    assert done.returncode == 2  # bad input, as a TLS address's missing file is
    assert_one_error_line(done.stderr, "cannot read --auth-file", "missing")
    bad = os.path.join(folder, "bad")
    with open(bad, "w") as f:
        f.write("# users\nalice:secret\nbob\n")
    done = run_here("socks", "tcp://127.0.0.1:0", "--auth-file", bad)
    assert done.returncode == 2
    line = assert_one_error_line(done.stderr, "line 3", "USER:PASS")
    assert "secret" not in line


def test_help_names_the_options() -> None:
    done = run("socks", "--help")
    text = done.stdout.decode()
    for option in (
        "--auth USER:PASS",
        "--auth-file",
        "--allow-dest",
        "--deny-dest",
        "--handshake-timeout",
        "--workers",
        "--stats",
    ):
        assert option in text


def test_connect_udp_via_enchufe_socks_datagram_by_datagram(spawn: Spawn) -> None:
    """enchufe's own UDP ASSOCIATE client: each stdin write one datagram through the relay to a
    UDP echo, each answer back whole, in order."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as echo:
        echo.bind(("127.0.0.1", 0))
        echo.settimeout(STEP)
        seen: list[bytes] = []

        def serve() -> None:
            with contextlib.suppress(OSError):
                while len(seen) < len(payloads):
                    data, source = echo.recvfrom(65535)
                    seen.append(data)
                    echo.sendto(data.upper(), source)

        payloads = [b"one", b"two" * 100, b"three" * 600]
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        proxy = spawn("socks", "tcp://127.0.0.1:0", "--json")
        port = proxy.listening().rpartition(":")[2]
        client = spawn(
            "connect", f"udp://localhost:{echo.getsockname()[1]}", "--via", f"socks5://127.0.0.1:{port}"
        )
        expected = b""
        for payload in payloads:  # one write, one datagram, its answer before the next
            client.feed(payload, close=False)
            expected += payload.upper()
            client.wait_out(len(expected))
        client.feed(b"", close=True)
        assert client.finish() == 0, client.err
        assert client.out == expected
        thread.join(STEP)
        assert seen == payloads
        proxy.wait_err(r'"event": "close"')
        assert proxy.terminate() == 0

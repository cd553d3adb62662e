"""``enchufe socks`` with SOCKS5 and HTTP proxy clients we did not write: curl (``--socks5-hostname``,
``--proxy socks5h://USER:PASS@…``) fetching a file from ``python3 -m http.server`` (sha256), and
ncat (``--proxy-type socks5``) to an echo server."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import WAIT, Proc, _missing, listening_address, spawn
from .conftest import enchufe as enchufe_argv

pytestmark = pytest.mark.interop

#: The file curl fetches: large enough for many splice rounds, small enough to be quick.
FILE_SIZE = 3 * 1024 * 1024


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        _missing(f"{name} is not installed (Debian package {name})")
    assert found is not None
    return found


def _port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


@pytest.fixture
def http_server(tmp_path: object) -> Iterator[tuple[int, str]]:
    """``python3 -m http.server`` serving a random file: (port, its sha256)."""
    folder = str(tmp_path)
    data = random.Random(3).randbytes(FILE_SIZE)
    with open(os.path.join(folder, "file"), "wb") as f:
        f.write(data)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", folder]
    with spawn(argv, "http.server") as server:
        _wait_port(port, server)
        yield port, hashlib.sha256(data).hexdigest()


def _wait_port(port: int, server: Proc) -> None:
    import time

    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        assert server.alive(), "http.server exited"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after {WAIT} s")


def _socks(*options: str) -> Iterator[tuple[Proc, int]]:
    with spawn(enchufe_argv("socks", "tcp://127.0.0.1:0", "-v", *options), "enchufe socks") as proxy:
        yield proxy, _port_of(listening_address(proxy))


@pytest.fixture
def open_socks() -> Iterator[tuple[Proc, int]]:
    yield from _socks()


@pytest.fixture
def auth_socks() -> Iterator[tuple[Proc, int]]:
    yield from _socks("--auth", "alice:s3cret")


def _curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    argv = [_tool("curl"), "-sS", "--max-time", str(WAIT), *args]
    return subprocess.run(argv, capture_output=True, timeout=WAIT + 5, check=False)


def test_curl_socks5_hostname_fetches_a_file(
    open_socks: tuple[Proc, int], http_server: tuple[int, str]
) -> None:
    proxy, port = open_socks
    http_port, digest = http_server
    done = _curl("--socks5-hostname", f"127.0.0.1:{port}", f"http://localhost:{http_port}/file")
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(done.stdout).hexdigest() == digest
    proxy.wait_stderr(re.compile(rf"CONNECT localhost:{http_port}".encode()))


def test_curl_with_credentials_accepted_and_refused(
    auth_socks: tuple[Proc, int], http_server: tuple[int, str]
) -> None:
    proxy, port = auth_socks
    http_port, digest = http_server
    url = f"http://localhost:{http_port}/file"
    done = _curl("--proxy", f"socks5h://alice:s3cret@127.0.0.1:{port}", url)
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(done.stdout).hexdigest() == digest
    refused = _curl("--proxy", f"socks5h://alice:wrong@127.0.0.1:{port}", url)
    assert refused.returncode != 0 and refused.stdout == b""
    assert b"rejected" in refused.stderr, refused.stderr  # "User was rejected by the SOCKS5 server (1 1)"
    proxy.wait_stderr(re.compile(rb"username/password refused \(user alice\)"))
    assert b"wrong" not in proxy.err and b"s3cret" not in proxy.err


def test_curl_to_a_denied_destination_gets_reply_2(http_server: tuple[int, str]) -> None:
    http_port, _digest = http_server
    for proxy, port in _socks("--deny-dest", "127.0.0.0/8", "--deny-dest", "::1"):
        done = _curl("--socks5-hostname", f"127.0.0.1:{port}", f"http://localhost:{http_port}/file")
        assert done.returncode != 0
        assert b"(2)" in done.stderr or b"not allowed" in done.stderr.lower(), done.stderr
        proxy.wait_stderr(re.compile(rb"SOCKS reply 2"))


def test_curl_through_enchufe_socks_as_an_http_proxy(
    auth_socks: tuple[Proc, int], http_server: tuple[int, str]
) -> None:
    """curl --proxy http://…: an http:// URL is forwarded (GET in absolute form), with
    --proxytunnel it goes through CONNECT (as https:// would); the same listener and Basic
    credentials for both, and the same file (sha256)."""
    proxy, port = auth_socks
    http_port, digest = http_server
    url = f"http://localhost:{http_port}/file"
    for tunnel in ((), ("--proxytunnel",)):
        done = _curl(*tunnel, "--proxy", f"http://alice:s3cret@127.0.0.1:{port}", url)
        assert done.returncode == 0, (tunnel, done.stderr)
        assert hashlib.sha256(done.stdout).hexdigest() == digest, tunnel
    refused = _curl("--proxytunnel", "--proxy", f"http://alice:wrong@127.0.0.1:{port}", url)
    assert refused.returncode != 0 and b"407" in refused.stderr, refused.stderr
    plain = _curl(
        "-o", "/dev/null", "-w", "%{http_code}", "--proxy", f"http://alice:wrong@127.0.0.1:{port}", url
    )
    assert plain.stdout == b"407", plain
    proxy.wait_stderr(re.compile(rb"no valid Proxy-Authorization \(Basic\) for GET http://localhost:"))
    assert b"wrong" not in proxy.err and b"s3cret" not in proxy.err


class _EchoBody(http.server.BaseHTTPRequestHandler):
    """Python's own HTTP server, answering a POST with what it received: its body, and the
    headers as they came (JSON), so that what the proxy forwarded can be checked."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        seen = json.dumps({"path": self.path, "headers": dict(self.headers.items())}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) + len(seen) + 1))
        self.end_headers()
        self.wfile.write(seen + b"\n" + body)

    def log_message(self, *args: object) -> None:
        pass


def test_http_proxy_forwards_a_post_with_its_body_and_without_the_proxy_s_headers(
    auth_socks: tuple[Proc, int], tmp_path: Path
) -> None:
    """http_proxy=http://alice:…@proxy curl --data-binary @1MiB http://127.0.0.1:P/up?x=1: the
    server gets the path in origin form, the whole body (sha256), no Proxy-Authorization and
    Connection: close; curl gets the server's answer."""
    _proxy, port = auth_socks
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoBody)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        body = random.Random(5).randbytes(1 << 20)
        upload = tmp_path / "body"
        upload.write_bytes(body)
        env = {**os.environ, "http_proxy": f"http://alice:s3cret@127.0.0.1:{port}"}
        done = subprocess.run(
            [
                _tool("curl"),
                "-sS",
                "--max-time",
                str(WAIT),
                "--data-binary",
                f"@{upload}",
                f"http://127.0.0.1:{server.server_address[1]}/up?x=1",
            ],
            capture_output=True,
            timeout=WAIT + 5,
            check=False,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        seen_line, _nl, echoed = done.stdout.partition(b"\n")
        seen = json.loads(seen_line)
        assert hashlib.sha256(echoed).hexdigest() == hashlib.sha256(body).hexdigest()
        assert seen["path"] == "/up?x=1"
        headers = {name.lower(): value for name, value in seen["headers"].items()}
        assert "proxy-authorization" not in headers and "proxy-connection" not in headers
        assert headers["connection"] == "close" and headers["host"] == f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("proxy_type", ["socks5", "http"])
def test_ncat_through_enchufe_socks_to_an_echo_server(open_socks: tuple[Proc, int], proxy_type: str) -> None:
    _proxy, port = open_socks
    with socket.create_server(("127.0.0.1", 0)) as listener:
        echo_port = listener.getsockname()[1]

        def echo() -> None:
            listener.settimeout(WAIT)
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(WAIT)
                while data := conn.recv(65536):
                    conn.sendall(data)

        thread = threading.Thread(target=echo, daemon=True)
        thread.start()
        payload = random.Random(4).randbytes(256 * 1024)
        argv = [
            _tool("ncat"),
            "--proxy",
            f"127.0.0.1:{port}",
            "--proxy-type",
            proxy_type,
            "127.0.0.1",
            str(echo_port),
        ]
        with spawn(argv, "ncat") as ncat:
            ncat.feed(payload)
            got = ncat.wait_stdout(len(payload))
            assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest()
        thread.join(WAIT)

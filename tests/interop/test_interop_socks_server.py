"""``enchufe socks`` with SOCKS5 and HTTP CONNECT clients we did not write: curl (``--socks5-hostname``,
``--proxy socks5h://USER:PASS@…``) fetching a file from ``python3 -m http.server`` (sha256), and
ncat (``--proxy-type socks5``) to an echo server."""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

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
    """curl --proxy http://… (with --proxytunnel for an http:// URL: CONNECT, as curl sends for
    https://): the same listener, HTTP CONNECT and Basic credentials; a plain GET is told 405."""
    proxy, port = auth_socks
    http_port, digest = http_server
    url = f"http://localhost:{http_port}/file"
    done = _curl("--proxytunnel", "--proxy", f"http://alice:s3cret@127.0.0.1:{port}", url)
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(done.stdout).hexdigest() == digest
    refused = _curl("--proxytunnel", "--proxy", f"http://alice:wrong@127.0.0.1:{port}", url)
    assert refused.returncode != 0 and b"407" in refused.stderr, refused.stderr
    plain = _curl(
        "-o", "/dev/null", "-w", "%{http_code}", "--proxy", f"http://alice:s3cret@127.0.0.1:{port}", url
    )
    assert plain.stdout == b"405", plain
    proxy.wait_stderr(re.compile(rb"GET is not served: this proxy only tunnels"))
    assert b"wrong" not in proxy.err and b"s3cret" not in proxy.err


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

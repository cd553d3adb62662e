"""``enchufe relay LISTEN TARGET --via URL …``: each client's target reached through proxy hops,
their handshakes driven on the relay's loop without blocking.

Through proxies we did not write (microsocks, tinyproxy, dante; ``CI`` set: missing is a
failure) and through small proxies written here where a behaviour must be forced: one that
never answers, and one that sends its reply and the target's first bytes in one segment.
microsocks and tinyproxy end the whole tunnel when the client half-closes, so the transfers
through them read everything back before the client's EOF; dante keeps a half-closed tunnel,
so the client's EOF goes first there and the answer still comes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from enchufe.errors import UsageError
from enchufe.hops import parse_hop
from enchufe.relay import RelayConfig
from enchufe.relay.config import check_config
from tests.interop.conftest import Proc, Where, danted_config, listening_address, spawn, wait_bound
from tests.interop.conftest import enchufe as enchufe_argv
from tests.interop.test_interop_via import Proxy, _free_port, _tool

from .conftest import (
    ENCHUFE,
    IO_TIMEOUT,
    STEP,
    StartRelay,
    Target,
    closed_by_peer,
    dial,
    exchange,
    final_summary,
    ping,
    relay_thread,
)
from .test_socks_server import recv_exactly

pytestmark = pytest.mark.interop

#: Each way through the hops: a few MiB, more than the loopback buffers of the tunnel hold.
SIZE = 3 * 1024 * 1024
#: What a server that speaks first says before anything is asked.
BANNER = b"220 hello from a server that speaks first\r\n"


class _Proxies:
    """Starts proxies we did not write on free loopback ports; all killed at the test's end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.running: list[Proc] = []

    def _started(self, argv: list[str], name: str, port: int) -> Proc:
        proc = Proc(argv, name)
        self.running.append(proc)
        wait_bound(Where("tcp4", port=port), proc)
        return proc

    def microsocks(self, user: str | None = None, password: str | None = None, port: int = 0) -> Proxy:
        path = _tool("microsocks", "/usr/bin/microsocks")
        port = port or _free_port()
        auth = ["-u", user, "-P", password or ""] if user else []
        proc = self._started([path, "-i", "127.0.0.1", "-p", str(port), *auth], "microsocks", port)
        creds = f"{user}:{password}@" if user else ""
        return Proxy(f"socks5://{creds}127.0.0.1:{port}", port, proc)

    def tinyproxy(self, *ports: int) -> Proxy:
        path = _tool("tinyproxy", "/usr/bin/tinyproxy")
        port = _free_port()
        lines = [f"Port {port}", "Listen 127.0.0.1", "Allow 127.0.0.1", "MaxClients 16", "LogLevel Info"]
        lines += [f"ConnectPort {p}" for p in ports]
        config = self.tmp_path / f"tinyproxy-{port}.conf"
        config.write_text("\n".join(lines) + "\n")
        proc = self._started([path, "-d", "-c", str(config)], "tinyproxy", port)
        return Proxy(f"http://127.0.0.1:{port}", port, proc)

    def dante(self, allowed: int) -> Proxy:
        path = _tool("danted", "/usr/sbin/danted")
        port = _free_port()
        config = self.tmp_path / f"danted-{port}.conf"
        config.write_text(danted_config(port, allowed, "connect"))
        proc = self._started([path, "-f", str(config), "-N", "1"], "danted", port)
        return Proxy(f"socks5://127.0.0.1:{port}", port, proc)


@pytest.fixture
def proxies(tmp_path: Path) -> Iterator[_Proxies]:
    started = _Proxies(tmp_path)
    try:
        yield started
    finally:
        for proc in started.running:
            proc.kill()


@pytest.fixture
def echo_port() -> Iterator[int]:
    """An enchufe echo server on 127.0.0.1: its port."""
    with spawn(enchufe_argv("echo", "tcp://127.0.0.1:0"), "enchufe echo") as server:
        yield int(listening_address(server).rsplit(":", 1)[1])


def _sha(data: bytes | bytearray) -> str:
    return f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}"


def _roundtrip_then_eof(address: str, payload: bytes) -> tuple[bytes, bytes]:
    """Send ``payload`` while reading it back; once all of it came back, half-close: what came
    back, and what came after the half-close (EOF: nothing)."""
    with dial(address) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
        sender.start()
        got = bytearray()
        while len(got) < len(payload):
            chunk = sock.recv(1 << 18)
            if not chunk:
                break
            got += chunk
        sender.join(IO_TIMEOUT)
        sock.shutdown(socket.SHUT_WR)
        return bytes(got), sock.recv(1)


# ----------------------------------------------------------------------------- data through hops


@pytest.mark.parametrize("hops", ["microsocks", "tinyproxy", "microsocks+tinyproxy"])
def test_sha256_both_ways_through_hops_then_half_close(
    hops: str, proxies: _Proxies, echo_port: int, start_relay: StartRelay
) -> None:
    """The target is named ``localhost``: the (last) proxy resolves it."""
    via: list[str] = []
    for name in hops.split("+"):
        proxy = proxies.microsocks() if name == "microsocks" else proxies.tinyproxy(echo_port)
        via += ["--via", proxy.url]
    relay = start_relay("tcp://127.0.0.1:0", f"tcp://localhost:{echo_port}", *via)
    payload = os.urandom(SIZE)
    got, after = _roundtrip_then_eof(relay.address, payload)
    assert _sha(got) == _sha(payload)
    assert after == b"", "the client's EOF went through the tunnel, and the target's came back"


def test_half_close_through_dante_the_answer_comes_after_the_client_s_eof(
    proxies: _Proxies, echo_port: int, start_relay: StartRelay
) -> None:
    proxy = proxies.dante(echo_port)
    relay = start_relay("tcp://127.0.0.1:0", f"tcp://localhost:{echo_port}", "--via", proxy.url)
    with dial(relay.address) as sock:
        done = exchange(sock, seed=13, size=SIZE, half_close=True)
    assert (done.received, done.received_digest) == (done.sent, done.sent_digest)


def test_tls_target_through_a_hop_with_the_target_s_name_as_sni(
    proxies: _Proxies, start_relay: StartRelay
) -> None:
    """The relay's TLS handshake with the target runs through the tunnel, SNI the target's
    name; --trace narrates the hop as connect --via does."""
    with spawn(enchufe_argv("echo", "tls://127.0.0.1:0?cert=auto"), "enchufe echo tls") as server:
        match = server.wait_stderr(
            re.compile(rb"listening on tls://127\.0\.0\.1:(\d+)\S* pin (sha256:[0-9a-f]+)")
        )
        port, pin = int(match.group(1)), match.group(2).decode()
        proxy = proxies.microsocks()
        relay = start_relay(
            "tcp://127.0.0.1:0", f"tls://localhost:{port}?pin={pin}", "--via", proxy.url, "--trace"
        )
        with dial(relay.address) as sock:
            assert ping(sock, b"plain here, TLS behind the proxy\n")
    relay.wait_err(rf"via {re.escape(proxy.url)}: CONNECT localhost:{port} \(a name, resolved by the proxy\)")
    relay.wait_err(r"SNI localhost")


def test_trace_narrates_each_hop(proxies: _Proxies, echo_port: int, start_relay: StartRelay) -> None:
    socks = proxies.microsocks()
    http = proxies.tinyproxy(echo_port)
    relay = start_relay(
        "tcp://127.0.0.1:0", f"tcp://localhost:{echo_port}", "--via", socks.url, "--via", http.url, "--trace"
    )
    with dial(relay.address) as sock:
        assert ping(sock)
    relay.wait_err(rf"via {re.escape(socks.url)}: connect to the proxy at 127\.0\.0\.1:{socks.port}")
    relay.wait_err(rf"via {re.escape(socks.url)}: CONNECT 127\.0\.0\.1:{http.port}")
    relay.wait_err(rf"via {re.escape(http.url)}: request: CONNECT localhost:{echo_port} HTTP/1\.1")


# ----------------------------------------------------------------------------- refusals and failures


def test_auth_refused_closes_the_client_with_a_line_naming_the_hop_then_the_next_is_served(
    proxies: _Proxies, echo_port: int, start_relay: StartRelay
) -> None:
    first = proxies.microsocks("alice", "s3cret")
    wrong = first.url.replace("s3cret", "wrong")
    relay = start_relay("tcp://127.0.0.1:0", f"tcp://localhost:{echo_port}", "--via", wrong, "--json")
    with dial(relay.address) as sock:
        assert closed_by_peer(sock, STEP), "the refused client is closed"
    line = relay.wait_err(r"^.*username/password refused by the proxy.*$").group(0)
    assert f"via socks5://alice:***@127.0.0.1:{first.port}: username/password refused" in line
    assert "wrong" not in relay.err
    # The same relay serves the next client: the proxy now takes that password.
    first.proc.kill()
    proxies.microsocks("alice", "wrong", port=first.port)
    with dial(relay.address) as sock:
        assert ping(sock)
    summary = final_summary(relay)
    assert (summary["failed"], summary["total"]) == (1, 2)


def test_proxy_down_is_a_target_failure_naming_the_proxy(echo_port: int, start_relay: StartRelay) -> None:
    down = _free_port()
    relay = start_relay(
        "tcp://127.0.0.1:0",
        f"tcp://localhost:{echo_port}",
        "--via",
        f"socks5://u:pw@127.0.0.1:{down}",
        "--stats=60",
    )
    try:
        sock = dial(relay.address)
    except ConnectionResetError:
        pass  # the relay's reset came before connect() returned (a loaded machine)
    else:
        with sock:
            assert closed_by_peer(sock, STEP)
    relay.wait_err(
        rf"^enchufe: cannot connect to the proxy socks5://u:\*\*\*@127\.0\.0\.1:{down}: connection refused"
    )
    relay.signal()
    assert relay.finish() == 0
    assert "1 target failures" in relay.err
    assert ":pw@" not in relay.err


class _Forwarder:
    """A proxy of our own in front of a real one: the first connection is never answered (a
    proxy that hangs), the others are passed to ``upstream`` byte for byte."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.served = 0
        self.target = Target("tcp://127.0.0.1:0", self._serve)
        self.port = int(self.target.address.rsplit(":", 1)[1])

    def _serve(self, conn: socket.socket) -> None:
        self.served += 1
        if self.served == 1:
            with contextlib.suppress(OSError):
                while conn.recv(4096):  # reads the greeting, answers nothing, until closed
                    pass
            return
        with socket.create_connection(("127.0.0.1", self.upstream), timeout=IO_TIMEOUT) as up:
            back = threading.Thread(target=_copy, args=(up, conn), daemon=True)
            back.start()
            _copy(conn, up)
            back.join(IO_TIMEOUT)


def _copy(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)


def test_a_proxy_that_never_answers_is_cut_at_connect_timeout_while_others_are_served(
    proxies: _Proxies, echo_port: int, start_relay: StartRelay
) -> None:
    forwarder = _Forwarder(proxies.microsocks().port)
    url = f"socks5://127.0.0.1:{forwarder.port}"
    with forwarder.target:
        relay = start_relay(
            "tcp://127.0.0.1:0", f"tcp://localhost:{echo_port}", "--via", url, "--connect-timeout", "3"
        )
        started = time.monotonic()
        with dial(relay.address) as stuck:
            deadline = time.monotonic() + STEP
            while forwarder.target.accepted < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            with dial(relay.address) as other:
                assert ping(other), "a client behind the stuck one is served"
            assert not closed_by_peer(stuck, 0.05), "the stuck client is still waiting"
            assert closed_by_peer(stuck, STEP)
            waited = time.monotonic() - started
        assert waited >= 2.5, f"cut after {waited:.2f} s, before --connect-timeout"
        relay.wait_err(rf"^enchufe: via {re.escape(url)}: the proxy did not finish its handshake in time")


# ----------------------------------------------------------------------------- a target that speaks first


def _speaks_first(conn: socket.socket) -> None:
    conn.sendall(BANNER)
    with contextlib.suppress(OSError):
        while data := conn.recv(65536):
            conn.sendall(data)


def test_a_target_that_speaks_first_through_microsocks(proxies: _Proxies, start_relay: StartRelay) -> None:
    proxy = proxies.microsocks()
    with Target("tcp://127.0.0.1:0", _speaks_first) as server:
        port = server.address.rsplit(":", 1)[1]
        relay = start_relay("tcp://127.0.0.1:0", f"tcp://localhost:{port}", "--via", proxy.url)
        with dial(relay.address) as sock:
            assert recv_exactly(sock, len(BANNER)) == BANNER  # before the client says anything
            assert ping(sock)


def _glued_proxy(conn: socket.socket) -> None:
    """A SOCKS5 proxy whose CONNECT reply and the target's first bytes come in one segment
    (BANNER right after the reply, in one send); then an echo."""
    with contextlib.suppress(OSError):
        greeting = recv_exactly(conn, 3)
        assert greeting == b"\x05\x01\x00", greeting
        conn.sendall(b"\x05\x00")
        request = recv_exactly(conn, 5)
        request += recv_exactly(conn, _request_size(request) - 5)
        conn.sendall(b"\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38" + BANNER)
        while data := conn.recv(65536):
            conn.sendall(data)


def _request_size(request: bytes) -> int:
    kind = request[3]
    return {1: 10, 4: 22}.get(kind, 7 + request[4])


def test_target_bytes_glued_to_the_proxy_s_reply_reach_the_client(start_relay: StartRelay) -> None:
    with Target("tcp://127.0.0.1:0", _glued_proxy) as proxy:
        relay = start_relay(
            "tcp://127.0.0.1:0", "tcp://target.invalid:25", "--via", f"socks5://{proxy.address[6:]}"
        )
        with dial(relay.address) as sock:
            assert recv_exactly(sock, len(BANNER)) == BANNER
            assert ping(sock)


# ----------------------------------------------------------------------------- what --via does not take


@pytest.mark.parametrize(
    ("listen", "target", "extra", "said"),
    [
        (
            "udp://127.0.0.1:0",
            "udp://127.0.0.1:53",
            ("--fault", "loss:probability=0.1"),
            "--fault with --via on datagrams",
        ),
        ("udp://127.0.0.1:0", "unixgram:///tmp/x.sock", (), "reaches tcp://, tls:// and udp:// targets"),
        ("tcp://127.0.0.1:0", "udp://127.0.0.1:53", ("--frame",), "with --frame"),
        ("tcp://127.0.0.1:0", "exec:cat", (), "not exec:cat"),
        ("tcp://127.0.0.1:0", "-", (), "not -"),
        ("tcp://127.0.0.1:0", "unix:///tmp/x.sock", (), "reaches tcp://, tls:// and udp:// targets"),
    ],
)
def test_via_refused_where_it_does_not_apply(
    listen: str, target: str, extra: tuple[str, ...], said: str
) -> None:
    done = subprocess.run(
        [*ENCHUFE, "relay", listen, target, "--via", "socks5://127.0.0.1:1080", *extra],
        capture_output=True,
        timeout=STEP,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and said in lines[0], lines


def test_bad_via_url_is_refused_naming_the_option() -> None:
    done = subprocess.run(
        [*ENCHUFE, "relay", "tcp://127.0.0.1:0", "tcp://127.0.0.1:7", "--via", "ftp://u:secret@h:1"],
        capture_output=True,
        timeout=STEP,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("enchufe: --via ftp://u:***@h:1: unknown proxy scheme"), (
        lines
    )


# ----------------------------------------------------------------------------- the library


def test_library_relay_config_takes_hop_values(proxies: _Proxies, echo_port: int) -> None:
    proxy = proxies.microsocks()
    config = RelayConfig("tcp://127.0.0.1:0", f"tcp://localhost:{echo_port}", via=[parse_hop(proxy.url)])
    with relay_thread(config) as running, dial(running.address) as sock:
        assert ping(sock)
    routed = RelayConfig(
        "tcp://127.0.0.1:0", "tcp://127.0.0.1:7", routes=("a.example=tcp://127.0.0.1:8",), via=[proxy.url]
    )
    with pytest.raises(UsageError, match="--via with --route is not built yet"):
        check_config(routed)


def test_the_connect_line_names_the_route(proxies: _Proxies, echo_port: int, start_relay: StartRelay) -> None:
    """-v's "connected to" line and its --json event name the hops, as connect --via says them."""
    socks = proxies.microsocks()
    http = proxies.tinyproxy(echo_port)
    route = f"{socks.url}, {http.url}"
    target = f"tcp://localhost:{echo_port}"
    relay = start_relay("tcp://127.0.0.1:0", target, "--via", socks.url, "--via", http.url, "-v")
    with dial(relay.address) as sock:
        assert ping(sock)
    relay.wait_err(rf"^#1 connected to {re.escape(target)} via {re.escape(route)} in [\d.]+ ms$")
    json_relay = start_relay("tcp://127.0.0.1:0", target, "--via", socks.url, "--json", "-v")
    with dial(json_relay.address) as sock:
        assert ping(sock)
    line = json_relay.wait_err(r'^\{"event": "connect".*$').group(0)
    event = json.loads(line)
    assert (event["target"], event["via"]) == (target, socks.url), event

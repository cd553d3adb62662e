"""``--via`` and ``via=[…]`` through proxies we did not write: microsocks and dante (SOCKS5),
tinyproxy (HTTP CONNECT), alone and chained, to an enchufe echo server on loopback.

What each proxy can show: microsocks takes a username and password (``-u``/``-P``); tinyproxy
Basic credentials (407 without them) and its ``ConnectPort`` rule (403 for other ports); dante
its rules (``socks block`` → SOCKS reply 2) and, in its log, the target as it was asked for (the
name ``localhost``, not an address: the proxy resolved it).  microsocks and tinyproxy end the
whole tunnel when the client half-closes, so the transfers through them send and read at once
and close without a half-close; dante keeps a half-closed tunnel open, so the CLI's
stdin-EOF-then-read runs through it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import enchufe
import enchufe.aio
from enchufe.hops import HopRefused

from .conftest import (
    WAIT,
    Proc,
    Where,
    _missing,
    danted_config,
    listening_address,
    spawn,
    wait_bound,
)
from .conftest import (
    enchufe as enchufe_argv,
)

pytestmark = pytest.mark.interop

#: Each way through a chain: a few MiB, more than the loopback buffers of three connections hold.
CHAIN_SIZE = 3 * 1024 * 1024
#: Through the CLI (stdin to stdout).
CLI_SIZE = 2 * 1024 * 1024


def _tool(name: str, path: str) -> str:
    found = shutil.which(name) or (path if os.path.exists(path) else None)
    if found is None:
        _missing(f"{name} is not installed (Debian package {'dante-server' if name == 'danted' else name})")
    assert found is not None
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class Proxy:
    url: str
    port: int
    proc: Proc


Start = Callable[..., Proxy]


@pytest.fixture
def echo() -> Iterator[int]:
    """An enchufe echo server on 127.0.0.1: its port."""
    with spawn(enchufe_argv("echo", "tcp://127.0.0.1:0"), "enchufe echo") as server:
        yield int(listening_address(server).rsplit(":", 1)[1])


@pytest.fixture
def microsocks() -> Iterator[Start]:
    path = _tool("microsocks", "/usr/bin/microsocks")
    with _proxies() as started:

        def start(user: str | None = None, password: str | None = None) -> Proxy:
            port = _free_port()
            auth = ["-u", user, "-P", password or ""] if user else []
            proc = started([path, "-i", "127.0.0.1", "-p", str(port), *auth], "microsocks", port)
            creds = f"{user}:{password}@" if user else ""
            return Proxy(f"socks5://{creds}127.0.0.1:{port}", port, proc)

        yield start


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[Start]:
    path = _tool("tinyproxy", "/usr/bin/tinyproxy")
    with _proxies() as started:

        def start(*ports: int, user: str | None = None, password: str | None = None) -> Proxy:
            port = _free_port()
            lines = [f"Port {port}", "Listen 127.0.0.1", "Allow 127.0.0.1", "MaxClients 16", "LogLevel Info"]
            lines += [f"ConnectPort {p}" for p in ports]
            if user:
                lines.append(f"BasicAuth {user} {password}")
            config = tmp_path / f"tinyproxy-{port}.conf"
            config.write_text("\n".join(lines) + "\n")
            proc = started([path, "-d", "-c", str(config)], "tinyproxy", port)
            creds = f"{user}:{password}@" if user else ""
            return Proxy(f"http://{creds}127.0.0.1:{port}", port, proc)

        yield start


@pytest.fixture
def dante(tmp_path: Path) -> Iterator[Start]:
    path = _tool("danted", "/usr/sbin/danted")
    with _proxies() as started:

        def start(allowed: int) -> Proxy:
            port = _free_port()
            config = tmp_path / f"danted-{port}.conf"
            config.write_text(danted_config(port, allowed, "connect udpassociate"))
            proc = started([path, "-f", str(config), "-N", "1"], "danted", port)
            return Proxy(f"socks5://127.0.0.1:{port}", port, proc)

        yield start


class _proxies:
    """Proxies started by one test, all killed and reaped at its end."""

    def __enter__(self) -> Callable[[list[str], str, int], Proc]:
        self._running: list[Proc] = []

        def started(argv: list[str], name: str, port: int) -> Proc:
            proc = Proc(argv, name)
            self._running.append(proc)
            wait_bound(Where("tcp4", port=port), proc)
            return proc

        return started

    def __exit__(self, *exc: object) -> None:
        for proc in self._running:
            proc.kill()


def _sha(data: bytes | bytearray) -> str:
    return f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}"


def _roundtrip_sync(target: str, via: list[str], payload: bytes) -> bytes:
    """Send ``payload`` while reading it back, then close (no half-close)."""
    with enchufe.connect(target, via=via, timeout=WAIT) as conn:
        conn.set_timeout(WAIT)
        sender = threading.Thread(target=conn.send_all, args=(payload,), daemon=True)
        sender.start()
        got = conn.recv_exactly(len(payload))
        sender.join(WAIT)
        return got


async def _roundtrip_async(target: str, via: list[str], payload: bytes) -> bytes:
    conn = await enchufe.aio.connect(target, via=via, timeout=WAIT)
    try:
        conn.set_timeout(WAIT)
        sender = asyncio.create_task(conn.send_all(payload))
        got = await conn.recv_exactly(len(payload))
        await sender
        return got
    finally:
        await conn.aclose()


# ----------------------------------------------------------------------------- chains


def test_socks5_then_http_chain_sync(echo: int, microsocks: Start, tinyproxy: Start) -> None:
    """microsocks → tinyproxy → echo: the HTTP hop is asked for by the SOCKS5 hop by address,
    the target by name (tinyproxy resolves localhost)."""
    socks = microsocks()
    http = tinyproxy(echo)
    payload = os.urandom(CHAIN_SIZE)
    got = _roundtrip_sync(f"tcp://localhost:{echo}", [socks.url, http.url], payload)
    assert _sha(got) == _sha(payload)


def test_http_then_socks5_chain_asyncio_with_credentials(
    echo: int, microsocks: Start, tinyproxy: Start
) -> None:
    socks = microsocks("alice", "s3cret")
    http = tinyproxy(socks.port, user="bob", password="hunter2")
    payload = os.urandom(CHAIN_SIZE)
    got = asyncio.run(_roundtrip_async(f"tcp://localhost:{echo}", [http.url, socks.url], payload))
    assert _sha(got) == _sha(payload)


def test_cli_check_through_a_chain(echo: int, microsocks: Start, tinyproxy: Start) -> None:
    socks = microsocks()
    http = tinyproxy(echo)
    closed = _free_port()
    done = subprocess.run(
        enchufe_argv(
            "check",
            "--via",
            socks.url,
            "--via",
            http.url,
            f"tcp://localhost:{echo}",
            f"tcp://localhost:{closed}",
        ),
        capture_output=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    # tinyproxy allows only the echo server's port: the other is refused by its rules (403).
    assert done.stdout.decode().splitlines() == [
        f"tcp://localhost:{echo} open",
        f"tcp://localhost:{closed} proxy refused (via {http.url}: 403 Access violation)",
    ]


# ----------------------------------------------------------------------------- the CLI, one hop


def test_cli_connect_through_dante_with_half_close(echo: int, dante: Start) -> None:
    proxy = dante(echo)
    payload = os.urandom(CLI_SIZE)
    done = subprocess.run(
        enchufe_argv("connect", "--via", proxy.url, f"tcp://localhost:{echo}"),
        input=payload,
        capture_output=True,
        timeout=WAIT * 2,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert _sha(done.stdout) == _sha(payload)


def test_dante_refuses_by_its_rules_and_was_asked_for_a_name(echo: int, dante: Start) -> None:
    proxy = dante(echo)
    blocked = _free_port()
    done = subprocess.run(
        enchufe_argv("connect", "--via", proxy.url, f"tcp://localhost:{blocked}"),
        capture_output=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.decode() == (
        f"enchufe: via {proxy.url}: connection refused by the proxy's rules (SOCKS reply 2)\n"
    )
    # dante logs the target as the client asked for it: a name it resolves itself.
    proxy.proc.wait_stderr(re.compile(rf"block\(\d+\): tcp/connect .* localhost\.{blocked}".encode()))


def test_tls_through_a_hop_has_the_target_s_name_as_sni(dante: Start) -> None:
    with spawn(enchufe_argv("echo", "tls://127.0.0.1:0?cert=auto"), "enchufe echo tls") as server:
        match = server.wait_stderr(
            re.compile(rb"listening on tls://127\.0\.0\.1:(\d+)\S* pin (sha256:[0-9a-f]+)")
        )
        port, pin = int(match.group(1)), match.group(2).decode()
        proxy = dante(port)
        done = subprocess.run(
            enchufe_argv("--trace", "connect", "--via", proxy.url, f"tls://localhost:{port}?pin={pin}"),
            input=b"over TLS, through SOCKS5\n",
            capture_output=True,
            timeout=WAIT,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"over TLS, through SOCKS5\n"
    trace = done.stderr.decode()
    assert f"via {proxy.url}: CONNECT localhost:{port} (a name, resolved by the proxy)" in trace
    assert "SNI localhost" in trace


# ----------------------------------------------------------------------------- UDP ASSOCIATE


#: One datagram per stdin write (each at most PIPE_BUF, so one read), different sizes.
DATAGRAMS = (b"a", os.urandom(1400), os.urandom(4000), b"last\n")


def test_datagrams_through_a_dante_udp_association_one_by_one(dante: Start) -> None:
    """connect udp://localhost:P --via socks5://…: each datagram goes to dante's relay with the
    name in its header, is echoed, and comes back whole, without the header."""
    with spawn(enchufe_argv("echo", "udp://127.0.0.1:0"), "enchufe echo udp") as server:
        port = int(listening_address(server).rsplit(":", 1)[1])
        proxy = dante(port)
        with spawn(
            enchufe_argv("-v", "connect", "--via", proxy.url, "--timeout", "0.5", f"udp://localhost:{port}"),
            "enchufe connect",
        ) as client:
            client.wait_stderr(re.compile(rb"connected to udp://localhost:\d+ via socks5://"))
            expected = b""
            for datagram in DATAGRAMS:
                client.write(datagram)
                expected += datagram
                assert client.wait_stdout(len(expected)) == expected
            client.close_stdin()
            assert client.finish() == 0, client.err
    sizes = [
        int(size) for size in re.findall(rb"received (\d+) bytes from udp://127\.0\.0\.1:\d+", client.err)
    ]
    assert sizes == [len(d) for d in DATAGRAMS]
    assert f"after {sum(map(len, DATAGRAMS))} bytes in, {sum(map(len, DATAGRAMS))} out".encode() in client.err


def test_the_library_sends_datagrams_through_dante_sync_and_asyncio(dante: Start) -> None:
    """connect_datagram(udp://localhost:P, via=[dante]): send and recv carry whole datagrams (the
    header added and taken off by the socket), sendto reaches the target by another name, and
    the asyncio socket does the same; each payload checked by SHA-256."""
    with spawn(enchufe_argv("echo", "udp://127.0.0.1:0"), "enchufe echo udp") as server:
        port = int(listening_address(server).rsplit(":", 1)[1])
        proxy = dante(port)
        target = f"udp://localhost:{port}"
        with enchufe.connect_datagram(target, via=[proxy.url], timeout=WAIT) as dgram:
            dgram.set_timeout(WAIT)
            for datagram in DATAGRAMS:
                dgram.send(datagram)
                got, sender = dgram.recvfrom()
                assert _sha(got) == _sha(datagram) and str(sender) == f"udp://127.0.0.1:{port}"
            dgram.sendto(b"by address", f"udp://127.0.0.1:{port}")
            assert dgram.recv() == b"by address"

        async def through_asyncio() -> list[bytes]:
            dgram = await enchufe.aio.connect_datagram(target, via=proxy.url, timeout=WAIT)
            async with dgram:
                dgram.set_timeout(WAIT)
                got = []
                for datagram in DATAGRAMS:
                    await dgram.send(datagram)
                    got.append(await dgram.recv())
                return got

        assert [_sha(d) for d in asyncio.run(through_asyncio())] == [_sha(d) for d in DATAGRAMS]


def test_send_a_datagram_through_dante_and_wait_for_the_reply(dante: Start) -> None:
    with spawn(enchufe_argv("echo", "udp://127.0.0.1:0"), "enchufe echo udp") as server:
        port = int(listening_address(server).rsplit(":", 1)[1])
        proxy = dante(port)
        done = subprocess.run(
            enchufe_argv("send", "--via", proxy.url, "--wait-reply", f"udp://localhost:{port}", "ping"),
            capture_output=True,
            timeout=WAIT * 4,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"ping"


def test_microsocks_says_it_does_not_do_udp(microsocks: Start) -> None:
    proxy = microsocks()
    done = subprocess.run(
        enchufe_argv("connect", "--via", proxy.url, "udp://localhost:53"),
        input=b"x",
        capture_output=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 1
    assert (
        done.stderr.decode()
        == f"enchufe: via {proxy.url}: command not supported by the proxy (SOCKS reply 7)\n"
    )


# ----------------------------------------------------------------------------- credentials


def test_socks5_credentials_accepted_and_refused(echo: int, microsocks: Start) -> None:
    proxy = microsocks("alice", "s3cret")
    target = f"tcp://localhost:{echo}"
    assert _roundtrip_sync(target, [proxy.url], b"with the right password") == b"with the right password"
    wrong = proxy.url.replace("s3cret", "wrong")
    with pytest.raises(HopRefused, match=r"username/password refused by the proxy \(RFC 1929 status \d+\)"):
        enchufe.connect(target, via=[wrong], timeout=WAIT)
    anonymous = f"socks5://127.0.0.1:{proxy.port}"
    with pytest.raises(HopRefused, match="accepts no method offered"):
        enchufe.connect(target, via=[anonymous], timeout=WAIT)
    done = subprocess.run(
        enchufe_argv("send", "--via", wrong, target, "x"), capture_output=True, timeout=WAIT, check=False
    )
    assert done.returncode == 1
    assert re.fullmatch(
        rf"enchufe: via socks5://alice:\*\*\*@127\.0\.0\.1:{proxy.port}: username/password refused by the "
        r"proxy \(RFC 1929 status \d+\)\n",
        done.stderr.decode(),
    ), done.stderr
    assert b"wrong" not in done.stderr


def test_http_basic_credentials_accepted_and_refused(echo: int, tinyproxy: Start) -> None:
    proxy = tinyproxy(echo, user="bob", password="hunter2")
    target = f"tcp://localhost:{echo}"
    assert _roundtrip_sync(target, [proxy.url], b"with Basic credentials") == b"with Basic credentials"
    # tinyproxy refuses wrong credentials with 401, missing ones with 407: each says what to try.
    refusals = {
        f"http://127.0.0.1:{proxy.port}": (
            f"via http://127.0.0.1:{proxy.port}: 407 Proxy Authentication Required "
            "(give USER:PASS@ in the proxy URL)"
        ),
        f"http://bob:wrong@127.0.0.1:{proxy.port}": (
            f"via http://bob:***@127.0.0.1:{proxy.port}: 401 Unauthorized "
            "(the proxy refused these credentials)"
        ),
    }
    for url, said in refusals.items():
        done = subprocess.run(
            enchufe_argv("connect", "--via", url, target), capture_output=True, timeout=WAIT, check=False
        )
        assert done.returncode == 1
        assert done.stderr.decode() == f"enchufe: {said}\n"

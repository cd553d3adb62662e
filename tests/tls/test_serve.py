"""TLS servers (``sync.serve.Server`` with threads, ``aio.serve.Server`` on asyncio and uvloop):
the handshake runs in each connection's own thread or task, never in the accept loop, so a
client that never finishes it holds only its own slot, until its ``handshake-timeout``; a failed
handshake ends only that connection, counted and logged with the reason."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import enchufe
from enchufe.errors import TLSRefused
from enchufe.sync import serve as sync_serve
from tests.servers.conftest import SERVER_FLAVOURS, LogRecords, Running, wait_until
from tests.tls.conftest import client_of

pytestmark = pytest.mark.timeout(90)

WAIT = 20.0


def echo_handler(flavour: str) -> Callable[..., Any]:
    if flavour == "sync":

        def echo(conn: Any) -> None:
            while data := conn.recv():
                conn.send_all(data)
            conn.shutdown_write()

        return echo

    async def echo_async(conn: Any) -> None:
        while data := await conn.recv():
            await conn.send_all(data)
        await conn.shutdown_write()

    return echo_async


@pytest.fixture(params=SERVER_FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> str:
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return str(request.param)


def echo_once(address: str, size: int = 256 * 1024) -> None:
    """A TLS client: ``size`` random bytes out, the same back, checked by SHA-256."""
    payload = os.urandom(size)
    with enchufe.connect(address, timeout=WAIT) as conn:
        conn.set_timeout(WAIT)
        conn.send_all(payload)
        conn.shutdown_write()
        received = b""
        while chunk := conn.recv():
            received += chunk
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


@pytest.mark.parametrize("kind", ["tls", "tls+unix"])
def test_a_tls_echo_server_serves_clients(
    serve: Callable[..., Running], flavour: str, kind: str, pem: dict[str, str], sock_dir: str
) -> None:
    where = "tls://127.0.0.1:0" if kind == "tls" else f"tls+unix://{sock_dir}/echo.sock"
    running = serve(flavour, f"{where}?cert={pem['server']}", echo_handler(flavour))
    target = client_of(running.server.bound_address, f"ca={pem['ca']}&sni=localhost")
    for _ in range(3):
        echo_once(target)
    wait_until(lambda: running.stats.completed == 3, WAIT, "three completed connections")


def test_a_client_that_never_finishes_its_handshake_blocks_nobody(
    serve: Callable[..., Running], flavour: str, pem: dict[str, str], serve_log: LogRecords
) -> None:
    """Two clients connect and never finish a handshake (one sends nothing, one half a
    ClientHello): others are served meanwhile, while both still hold their slots.  A handshake
    in the accept loop would hold every later client up for the whole handshake-timeout."""
    running = serve(
        flavour, f"tls://127.0.0.1:0?cert={pem['server']}&handshake-timeout=60", echo_handler(flavour)
    )
    port = running.server.bound_address.port
    target = f"tls://127.0.0.1:{port}?ca={pem['ca']}&sni=localhost"
    with (
        socket.create_connection(("127.0.0.1", port), timeout=WAIT),  # sends nothing
        socket.create_connection(("127.0.0.1", port), timeout=WAIT) as partial,
    ):
        partial.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
        wait_until(lambda: running.stats.active == 2, WAIT, "both stalled clients accepted")
        for _ in range(3):
            echo_once(target, 4096)
        # The client has its echo before the server's handler has returned and been counted.
        wait_until(lambda: running.stats.completed == 3, WAIT, "three completed connections")
        assert running.stats.failed == 0
        assert running.stats.active == 2  # still waiting for their handshakes
    wait_until(lambda: running.stats.failed == 2, WAIT, "both stalled handshakes ended")
    assert "closed the connection during the handshake" in serve_log.wait_for("TLS handshake with")


def test_a_handshake_that_does_not_finish_in_time_is_given_up(
    serve: Callable[..., Running], flavour: str, pem: dict[str, str], serve_log: LogRecords
) -> None:
    running = serve(
        flavour, f"tls://127.0.0.1:0?cert={pem['server']}&handshake-timeout=0.5", echo_handler(flavour)
    )
    port = running.server.bound_address.port
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as silent:
        wait_until(lambda: running.stats.failed == 1, WAIT, "the stalled handshake given up")
        assert silent.recv(100) == b""  # closed by the server (no alert: it never spoke TLS)
    assert "did not finish within 0.5 s (handshake-timeout)" in serve_log.wait_for("TLS handshake with")
    assert running.stats.completed == 0


def test_a_refused_handshake_ends_only_that_connection(
    serve: Callable[..., Running], flavour: str, pem: dict[str, str], serve_log: LogRecords
) -> None:
    running = serve(flavour, f"tls://127.0.0.1:0?cert={pem['server']}", echo_handler(flavour))
    port = running.server.bound_address.port
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as plain:
        plain.sendall(b"HELO plain text\r\n")
        plain.settimeout(WAIT)
        # The server answers with an alert (or nothing) and closes.
        for _ in range(100):
            if not plain.recv(4096):
                break
    line = serve_log.wait_for("TLS handshake with")
    assert "does not speak TLS" in line and "HELO plain text" in line
    echo_once(f"tls://127.0.0.1:{port}?ca={pem['ca']}")
    wait_until(lambda: running.stats.completed == 1 and running.stats.failed == 1, WAIT, "counts")
    with pytest.raises(TLSRefused):  # the client side of a refusal: no client certificate trusted
        enchufe.connect(f"tls://127.0.0.1:{port}?ca={pem['other_ca']}", timeout=WAIT)


def test_on_handshake_failure_is_told_each_refusal_and_may_raise(
    serve: Callable[..., Running], flavour: str, pem: dict[str, str], serve_log: LogRecords
) -> None:
    """The hook gets the connection and the refusal (what listen --exec prints); a hook that
    raises is logged, and the server serves on."""
    told: list[tuple[Any, Exception]] = []

    def hook(conn: Any, exc: Exception) -> None:
        told.append((conn.peer_address, exc))
        raise RuntimeError("a broken hook")

    query = f"cert={pem['server']}&client-ca={pem['ca']}"
    running = serve(flavour, f"tls://127.0.0.1:0?{query}", echo_handler(flavour), on_handshake_failure=hook)
    port = running.server.bound_address.port
    # TLS 1.3: the client may learn of the refusal only at its first read.
    with (
        contextlib.suppress(enchufe.NetworkError),
        enchufe.connect(f"tls://127.0.0.1:{port}?ca={pem['ca']}", timeout=WAIT) as conn,
    ):
        conn.set_timeout(WAIT)
        conn.recv()
    wait_until(lambda: len(told) == 1 and running.stats.failed == 1, WAIT, "the hook told")
    peer, error = told[0]
    assert isinstance(error, TLSRefused) and error.reason == "client-certificate-missing"
    assert peer is not None and peer.port > 0
    assert "127.0.0.1" in serve_log.wait_for("on_handshake_failure failed")
    echo_once(f"tls://127.0.0.1:{port}?ca={pem['ca']}&cert={pem['client']}")
    assert running.stats.failed == 1 and len(told) == 1


def test_reload_tls_serves_the_next_clients_with_the_new_files(
    serve: Callable[..., Running], flavour: str, pem: dict[str, str], sock_dir: str, serve_log: LogRecords
) -> None:
    """Server.reload_tls(), what SIGUSR1 asks: the rewritten certificate serves the next client;
    a broken file is logged and the current one stays."""
    import trustme

    cert = os.path.join(sock_dir, "server.pem")
    shutil.copy(pem["server"], cert)
    running = serve(flavour, f"tls://127.0.0.1:0?cert={cert}", echo_handler(flavour))
    port = running.server.bound_address.port
    new_ca = trustme.CA()
    new_ca_file = os.path.join(sock_dir, "new-ca.pem")
    new_ca.cert_pem.write_to_path(new_ca_file)
    new_ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(cert)
    echo_once(f"tls://127.0.0.1:{port}?ca={pem['ca']}")  # not reloaded yet
    assert running.server.reload_tls() is True
    assert "reloaded" in serve_log.wait_for("TLS certificates and CAs reloaded")
    echo_once(f"tls://127.0.0.1:{port}?ca={new_ca_file}")
    with open(cert, "w") as broken:
        broken.write("not PEM\n")
    assert running.server.reload_tls() is False
    assert "cert=" in serve_log.wait_for("TLS reload on")
    echo_once(f"tls://127.0.0.1:{port}?ca={new_ca_file}")


def test_a_plain_server_has_nothing_to_reload(serve: Callable[..., Running], flavour: str) -> None:
    running = serve(flavour, "tcp://127.0.0.1:0", echo_handler(flavour))
    assert running.server.reload_tls() is False


def test_a_server_says_its_pin_and_what_a_reload_did(
    serve: Callable[..., Running], flavour: str, pem: dict[str, str], sock_dir: str
) -> None:
    """Public ``tls_pin`` and ``reload_tls_files()`` (what the CLI reports on SIGUSR1): the
    outcome, and a bad file's error, without a log line to parse."""
    auto = serve(flavour, "tls://127.0.0.1:0?cert=auto", echo_handler(flavour)).server
    assert auto.tls_pin is not None and auto.tls_pin.startswith("sha256:")
    echo_once(f"tls://127.0.0.1:{auto.bound_address.port}?pin={auto.tls_pin}")
    assert auto.reload_tls_files().outcome == "cert-auto"
    plain = serve(flavour, "tcp://127.0.0.1:0", echo_handler(flavour)).server
    assert plain.tls_pin is None and plain.reload_tls_files().outcome == "not-tls"
    cert = os.path.join(sock_dir, "server.pem")
    shutil.copy(pem["server"], cert)
    files = serve(flavour, f"tls://127.0.0.1:0?cert={cert}", echo_handler(flavour)).server
    assert files.tls_pin is None
    result = files.reload_tls_files()
    assert result.reloaded and result.error is None
    with open(cert, "w") as broken:
        broken.write("not PEM\n")
    result = files.reload_tls_files()
    assert result.outcome == "failed" and not result.reloaded and "cert=" in str(result.error)


def test_sigusr1_reloads_a_tls_server_run_by_serve(pem: dict[str, str], sock_dir: str) -> None:
    """sync serve() in the main thread: SIGUSR1 (sent by the process to itself) reloads."""
    cert = os.path.join(sock_dir, "server.pem")
    shutil.copy(pem["server"], cert)
    reloaded: list[bool] = []
    ready = threading.Event()
    bound: list[Any] = []

    def on_ready(address: Any) -> None:
        bound.append(address)
        ready.set()

    def poke() -> None:
        assert ready.wait(WAIT)
        echo_once(f"tls://127.0.0.1:{bound[0].port}?ca={pem['ca']}")
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGTERM)

    original = sync_serve.Server.reload_tls

    def spy(self: Any) -> bool:
        reloaded.append(original(self))
        return reloaded[-1]

    sync_serve.Server.reload_tls = spy  # type: ignore[method-assign]
    # Ours while serve() is not running, so that a serve() without its own cannot kill pytest.
    ours = signal.signal(signal.SIGUSR1, lambda *_: reloaded.append(False))
    try:
        poker = threading.Thread(target=poke, daemon=True)
        poker.start()
        stats = sync_serve.serve(f"tls://127.0.0.1:0?cert={cert}", echo_handler("sync"), ready=on_ready)
        poker.join(WAIT)
    finally:
        sync_serve.Server.reload_tls = original  # type: ignore[method-assign]
        restored = signal.signal(signal.SIGUSR1, ours)
    assert reloaded == [True] and stats.completed == 1
    assert restored is not None and restored not in (signal.SIG_DFL, signal.SIG_IGN)  # ours, put back

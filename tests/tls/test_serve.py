"""TLS servers (``sync.serve.Server`` with threads, ``aio.serve.Server`` on asyncio and uvloop):
the handshake runs in each connection's own thread or task, never in the accept loop, so a
client that never finishes it holds only its own slot, until its ``handshake-timeout``; a failed
handshake ends only that connection, counted and logged with the reason."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest

import enchufe
from enchufe.errors import TLSRefused
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
        assert running.stats.completed == 3 and running.stats.failed == 0
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

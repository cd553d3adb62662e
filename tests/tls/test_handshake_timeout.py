"""A client's connect timeout bounds its TLS handshake too, when it is shorter than the
address's ``handshake-timeout``: a server that accepts and never answers the ClientHello ends
the attempt at the caller's timeout, and the error says which bound it hit (sync, asyncio, CLI)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

import enchufe
import enchufe.aio
from enchufe.errors import TimedOut

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A listening socket nobody accepts from: the kernel completes TCP, nothing answers TLS."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as server:
        yield server.getsockname()[1]


def test_sync_connect_timeout_bounds_the_handshake(silent_server: int) -> None:
    with pytest.raises(TimedOut) as caught:
        enchufe.connect(f"tls://127.0.0.1:{silent_server}?insecure", timeout=0.5)
    assert "did not finish within 0.5 s (the connect timeout)" in str(caught.value)


def test_without_a_timeout_handshake_timeout_is_the_bound(silent_server: int) -> None:
    with pytest.raises(TimedOut) as caught:
        enchufe.connect(f"tls://127.0.0.1:{silent_server}?insecure&handshake-timeout=0.3")
    assert "did not finish within 0.3 s (handshake-timeout)" in str(caught.value)


def test_the_shorter_bound_wins(silent_server: int) -> None:
    with pytest.raises(TimedOut) as caught:
        enchufe.connect(f"tls://127.0.0.1:{silent_server}?insecure&handshake-timeout=0.3", timeout=30)
    assert "within 0.3 s (handshake-timeout)" in str(caught.value)


def test_asyncio_connect_timeout_bounds_the_handshake(silent_server: int) -> None:
    async def attempt() -> None:
        await enchufe.aio.connect(f"tls://127.0.0.1:{silent_server}?insecure", timeout=0.5)

    with pytest.raises(TimedOut) as caught:
        asyncio.run(attempt())
    assert "did not finish within 0.5 s (the connect timeout)" in str(caught.value)


@pytest.mark.parametrize(
    "command",
    [["connect", "--timeout", "0.5"], ["check", "--json", "--timeout", "0.5"]],
    ids=["connect", "check"],
)
def test_the_cli_timeout_bounds_the_handshake(silent_server: int, command: list[str]) -> None:
    address = f"tls://127.0.0.1:{silent_server}?insecure"
    result = subprocess.run(
        [sys.executable, "-m", "enchufe", *command, address],
        input=b"",
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1, result.stderr
    assert b"within 0.5 s (the connect timeout)" in result.stdout + result.stderr, result

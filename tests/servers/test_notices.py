"""Lines peers cause at will (a failed TLS handshake, a refused PROXY header): said without -v,
at most five of a kind a second, the rest counted."""

from __future__ import annotations

import logging
import socket

import pytest

from enchufe import _serving

from .cli_helpers import ServerProcess

STEP = 10.0


def test_five_a_second_of_each_kind_then_a_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    notices = _serving.Notices(clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="enchufe")
    for n in range(8):
        notices.say("failed TLS handshakes", f"handshake {n} failed")
    notices.say("clients refused over their PROXY header", "header refused")
    assert [r.getMessage() for r in caplog.records] == [
        *(f"handshake {n} failed" for n in range(5)),
        "header refused",
    ]
    caplog.clear()
    now[0] += 1.0
    notices.say("failed TLS handshakes", "handshake 8 failed")
    assert [r.getMessage() for r in caplog.records] == [
        "… and 3 more failed TLS handshakes in 1 s (not shown; -v shows each)",
        "handshake 8 failed",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_with_verbose_logging_every_one_is_said(caplog: pytest.LogCaptureFixture) -> None:
    notices = _serving.Notices()
    caplog.set_level(logging.INFO, logger="enchufe")
    for n in range(8):
        notices.say("failed TLS handshakes", f"handshake {n} failed")
    assert len(caplog.records) == 8


@pytest.mark.parametrize("command", ["echo", "chat"])
def test_a_failed_tls_handshake_is_said_without_verbose(command: str) -> None:
    server = ServerProcess(command, "tls://127.0.0.1:0?cert=auto")
    try:
        address = server.listening_address()
        host, port = address.split("://", 1)[1].split("?", 1)[0].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=STEP) as client:
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert client.recv(100) == b""  # refused: not TLS
        line = server.wait_for_line(lambda text: "TLS handshake with" in text)
        assert "failed" in line and "HTTP" in line, line
    finally:
        server.kill()

"""Lines peers cause at will (a failed TLS handshake, a refused PROXY header): said without -v,
at most five of a kind a second, the rest counted."""

from __future__ import annotations

import logging
import socket

import pytest

from enchufe import _notices

from .cli_helpers import ServerProcess

STEP = 10.0


def test_five_a_second_of_each_kind_then_a_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    notices = _notices.Notices(clock=lambda: now[0])
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


def test_flush_says_what_is_still_held_back(caplog: pytest.LogCaptureFixture) -> None:
    notices = _notices.Notices(clock=lambda: 5.0)
    caplog.set_level(logging.WARNING, logger="enchufe")
    for n in range(7):
        notices.say("failed TLS handshakes", f"handshake {n} failed")
    caplog.clear()
    notices.flush()
    notices.flush()  # said once
    assert [r.getMessage() for r in caplog.records] == [
        "… and 2 more failed TLS handshakes in 1 s (not shown; -v shows each)"
    ]


def test_a_server_that_stops_says_the_count_it_held_back() -> None:
    """Eight clients that are not TLS, at once, then SIGTERM: five lines and the count of the
    other three (none waits for a ninth client to be said)."""
    server = ServerProcess("echo", "tls://127.0.0.1:0?cert=auto")
    try:
        address = server.listening_address()
        host, port = address.split("://", 1)[1].split("?", 1)[0].rsplit(":", 1)
        clients = [socket.create_connection((host, int(port)), timeout=STEP) for _ in range(8)]
        for client in clients:
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        for client in clients:
            assert client.recv(100) == b""
            client.close()
        server.wait_for_line(lambda text: "TLS handshake with" in text)
        assert server.stop() == 0
        failed = [line for line in server.lines if "TLS handshake with" in line]
        counted = [line for line in server.lines if "more failed TLS handshakes" in line]
        # Within one second: 5 said, 3 counted (a slower machine may open a second window).
        assert len(failed) + sum(int(line.split(" and ", 1)[1].split()[0]) for line in counted) == 8
        assert len(failed) >= 5 and (counted or len(failed) == 8)
    finally:
        server.kill()


def test_with_verbose_logging_every_one_is_said(caplog: pytest.LogCaptureFixture) -> None:
    notices = _notices.Notices()
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

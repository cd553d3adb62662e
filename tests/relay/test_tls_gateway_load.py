"""The relay as a TLS gateway under load, run as ``enchufe relay`` (a process, as users run it):
64 MiB each way through termination in front of a unix socket, the half-close and truncation
across the TLS boundary both ways, a slowloris of 1,000 clients that never send a ClientHello,
and certificates reloaded while clients keep handshaking.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import enchufe
from enchufe.errors import NetworkError
from tests.conftest import Peer
from tests.tls.conftest import client_of

from ._gateway import NAME, Gateway, gateway
from ._harness import ending
from .conftest import IO_TIMEOUT, STEP, RelayProc, StartRelay, Target, dial, echo, final_summary, wait_until
from .test_tls_relay import TLSTarget, _tls_exchange
from .test_tls_reload import Certificates, certs

__all__ = ["certs", "gateway"]  # the fixtures, for pytest


def _client(relay: RelayProc, gateway: Gateway) -> str:
    return client_of(relay.address, f"ca={gateway.ca}&sni={NAME}")


def _terminating(gateway: Gateway, query: str = "") -> str:
    return f"tls://127.0.0.1:0?cert={gateway.server}" + (f"&{query}" if query else "")


# ----------------------------------------------------------------------------- every byte

BIG = 64 << 20


def test_64_mib_each_way_through_termination_to_a_unix_socket(
    gateway: Gateway, start_relay: StartRelay, sock_dir: str
) -> None:
    with Target(f"unix://{sock_dir}/app.sock", echo) as target:
        relay = start_relay("--json", "--stats=60", _terminating(gateway), target.address)
        relay.listening()
        with enchufe.connect(_client(relay, gateway)) as conn:
            sent, received, count = _tls_exchange(conn, 64, BIG)
        assert count == BIG and received == sent
        summary = final_summary(relay)
    assert summary["to_target"] == BIG and summary["to_client"] == BIG, summary
    assert summary["reset"] == 0 and summary["tls_handshakes"] == 1, summary


# ----------------------------------------------------------------------------- half-close


def _answer_after_eof(conn: Any) -> bytes:
    """Read the request to its EOF, then answer it and EOF (plain socket or TLS connection)."""
    request = b""
    if isinstance(conn, socket.socket):
        while data := conn.recv(65536):
            request += data
        conn.sendall(b"answer:" + request)
        conn.shutdown(socket.SHUT_WR)
    else:
        while data := conn.recv():
            request += data
        conn.send_all(b"answer:" + request)
        conn.shutdown_write()
    return request


def _speak_first(conn: Any) -> bytes:
    """Say ``greeting`` and EOF, then read what the client says after it, to its EOF."""
    late = b""
    if isinstance(conn, socket.socket):
        conn.sendall(b"greeting")
        conn.shutdown(socket.SHUT_WR)
        while data := conn.recv(65536):
            late += data
    else:
        conn.send_all(b"greeting")
        conn.shutdown_write()
        while data := conn.recv():
            late += data
    return late


class _Plain:
    """A plain client socket with the calls of an enchufe connection used here."""

    def __init__(self, address: str) -> None:
        self.sock = dial(address)

    def send_all(self, data: bytes) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def recv(self) -> bytes:
        return self.sock.recv(65536)

    def __enter__(self) -> _Plain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


@contextlib.contextmanager
def _across(way: str, serve: Any, gateway: Gateway, start_relay: StartRelay) -> Iterator[tuple[Any, Any]]:
    """(client connection, the target's result): ``termination`` (a TLS client, a plain target)
    or ``origination`` (a plain client, a TLS target), through ``enchufe relay``."""
    if way == "termination":
        with Target("tcp://127.0.0.1:0", serve) as target:
            relay = start_relay(_terminating(gateway), target.address)
            relay.listening()
            with enchufe.connect(_client(relay, gateway)) as conn:
                yield conn, lambda: target.wait_results(1)[0]
        return
    tls_target = TLSTarget(f"tls://127.0.0.1:0?cert={gateway.server}", serve)
    try:
        relay = start_relay("tcp://127.0.0.1:0", f"{tls_target.address}?ca={gateway.ca}&sni={NAME}")
        with _Plain(relay.listening()) as plain:

            def result() -> Any:
                wait_until(lambda: len(tls_target.peers) == 1, "the TLS target's connection")
                return tls_target.peers[0].result(STEP)

            yield plain, result
    finally:
        tls_target.close()


WAYS = ["termination", "origination"]


@pytest.mark.parametrize("way", WAYS)
def test_the_clients_eof_crosses_and_the_answer_comes_back(
    gateway: Gateway, start_relay: StartRelay, way: str
) -> None:
    with _across(way, _answer_after_eof, gateway, start_relay) as (conn, result):
        conn.send_all(b"request")
        conn.shutdown_write()
        got = b""
        while data := conn.recv():  # a TLS client: ends with close_notify, not a truncation
            got += data
        assert got == b"answer:request"
        assert result() == b"request"


@pytest.mark.parametrize("way", WAYS)
def test_the_targets_eof_crosses_and_the_client_can_still_send(
    gateway: Gateway, start_relay: StartRelay, way: str
) -> None:
    with _across(way, _speak_first, gateway, start_relay) as (conn, result):
        got = b""
        while data := conn.recv():
            got += data
        assert got == b"greeting"
        conn.send_all(b"late words")
        conn.shutdown_write()
        assert conn.recv() == b""
        assert result() == b"late words"


# ----------------------------------------------------------------------------- truncation


def test_a_truncated_client_is_a_reset_of_the_target(gateway: Gateway, start_relay: StartRelay) -> None:
    with Target("tcp://127.0.0.1:0", ending) as target:
        relay = start_relay(_terminating(gateway), target.address)
        context = ssl.create_default_context(cafile=gateway.ca)
        with context.wrap_socket(dial(relay.listening()), server_hostname=NAME) as tls:
            tls.sendall(b"partial")
            wait_until(lambda: target.accepted == 1, "the target's connection")
            # SSLSocket.close() sends no close_notify: a truncation.  Its tickets are read first,
            # or the kernel would reset (and might lose "partial" on the way).
            tls.setblocking(False)
            with contextlib.suppress(ssl.SSLWantReadError):
                tls.recv(1)
        assert target.wait_results(1) == [("reset", len(b"partial"))]


def _truncating_target(gateway: Gateway) -> tuple[socket.socket, Peer]:
    """A TLS server (Python's ssl) that reads a little, answers ``partial``, then closes its
    socket without close_notify: its listening socket, and the thread serving one client."""
    listener = socket.create_server(("127.0.0.1", 0))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(gateway.server)

    def serve() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.settimeout(IO_TIMEOUT)
            tls.recv(16)
            tls.sendall(b"partial")
        # SSLSocket.close() sends no close_notify: a truncation.

    return listener, Peer(serve)


def test_a_truncating_target_is_a_reset_of_the_client(gateway: Gateway, start_relay: StartRelay) -> None:
    listener, server = _truncating_target(gateway)
    with listener:
        port = listener.getsockname()[1]
        relay = start_relay("tcp://127.0.0.1:0", f"tls://127.0.0.1:{port}?ca={gateway.ca}&sni={NAME}")
        with dial(relay.listening()) as sock:
            sock.sendall(b"go")
            how, count = ending(sock, timeout=STEP)
        server.result(STEP)
    assert how == "reset" and count in (0, len(b"partial")), (how, count)


# ----------------------------------------------------------------------------- slowloris

SILENT = 1000
#: What the relay may grow by for each silent client.  It holds the client's socket (no buffer
#: in use), its session and a timer: about 2 KiB of Python objects (1.7 MiB for 1,000 here).  An
#: OpenSSL object made before the client speaks (about 44 KiB with its buffers, which was the
#: case) is caught; the margin over 2 KiB is for the allocator's arenas.
PER_CLIENT_KIB = 8


def _last_stats(relay: RelayProc) -> dict[str, Any]:
    stats = [event for event in relay.json_events() if event["event"] == "stats"]
    return stats[-1] if stats else {}


def test_a_slowloris_of_1000_silent_clients(gateway: Gateway, start_relay: StartRelay) -> None:
    """1,000 clients connect and never send a ClientHello: they wait in the relay's engine (no
    thread, no blocking read) while a real client is served, and the relay's RSS grows by at
    most :data:`PER_CLIENT_KIB` for each.  handshake-timeout cuts them later (not waited for)."""
    with Target("tcp://127.0.0.1:0", echo) as target:
        relay = start_relay(
            "--json", "--stats=0.2", _terminating(gateway, "handshake-timeout=60"), target.address
        )
        relay.listening()
        address = _client(relay, gateway)
        with enchufe.connect(address) as conn:  # the first handshake loads what every one uses
            conn.send_all(b"warm")
            assert conn.recv() == b"warm"
        before = relay.rss_kib()
        silent: list[socket.socket] = []
        try:
            for _ in range(SILENT):
                silent.append(dial(relay.address))
            wait_until(lambda: _last_stats(relay).get("open") == SILENT, f"{SILENT} silent clients admitted")
            with enchufe.connect(address) as conn:
                conn.send_all(b"served")
                assert conn.recv() == b"served"
            grown = relay.rss_kib() - before
            assert grown <= SILENT * PER_CLIENT_KIB, f"RSS grew by {grown} KiB for {SILENT} silent clients"
            assert relay.popen.poll() is None
        finally:
            for sock in silent:
                sock.close()
        assert target.accepted == 2


# ----------------------------------------------------------------------------- reload under load

RELOADS = 5
HANDSHAKERS = 3
#: Handshakes each client thread may make at most (the loop is bounded in count and time).
MAX_HANDSHAKES = 2000


class _Handshaker:
    """Handshakes again and again (a new connection each, one echoed line) until stopped:
    the pins it was shown, in order, and every failure."""

    def __init__(self, address: str, stop: threading.Event) -> None:
        self.address = address
        self.stop = stop
        self.pins: list[str] = []
        self.failures: list[str] = []
        self.peer = Peer(self._run)

    def _run(self) -> None:
        deadline = time.monotonic() + 4 * STEP
        for _ in range(MAX_HANDSHAKES):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            try:
                with enchufe.connect(self.address, timeout=IO_TIMEOUT) as conn:
                    conn.send_all(b"x")
                    assert conn.recv() == b"x"
                    assert conn.tls is not None and conn.tls.peer is not None
                    self.pins.append(conn.tls.peer.pin)
            except (NetworkError, OSError, AssertionError) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")


def _rotate(relay: RelayProc, certs: Certificates, clients: list[_Handshaker], established: Any) -> list[str]:
    """Install a new certificate and SIGUSR1, :data:`RELOADS` times; after each, wait until every
    client was shown the new one, and check the established connection still answers: the pins
    installed, in order."""
    pins = []
    for number in range(1, RELOADS + 1):
        pins.append(certs.install())
        relay.signal(signal.SIGUSR1)
        wait_until(lambda n=number: relay.err.count('"reloaded": true') == n, f"reload {number}")  # type: ignore[misc]
        wait_until(
            lambda: all(client.pins[-1:] == [pins[-1]] for client in clients),
            f"every client shown certificate {number}",
        )
        established.send_all(b"still %d" % number)
        assert established.recv() == b"still %d" % number
    return pins


def _changes(pins: list[str]) -> list[str]:
    """The pins in the order they were first shown (repeats of the one before dropped)."""
    return [pin for index, pin in enumerate(pins) if index == 0 or pin != pins[index - 1]]


def test_reload_under_load_fails_no_handshake_and_cuts_no_connection(
    certs: Certificates, start_relay: StartRelay
) -> None:
    first = certs.install()
    with Target("tcp://127.0.0.1:0", echo) as target:
        relay = start_relay("--json", "--stats=60", f"tls://127.0.0.1:0?cert={certs.path}", target.address)
        address = client_of(relay.listening(), f"ca={certs.ca_path}")
        stop = threading.Event()
        with enchufe.connect(address) as established:
            clients = [_Handshaker(address, stop) for _ in range(HANDSHAKERS)]
            try:
                pins = [first, *_rotate(relay, certs, clients, established)]
            finally:
                stop.set()
                for client in clients:
                    client.peer.result(STEP)
        summary = final_summary(relay)
    failures = [failure for client in clients for failure in client.failures]
    assert not failures, failures
    assert summary["tls_failed"] == {} and summary["cut"] == 0 and summary["reset"] == 0, summary
    assert summary["tls_handshakes"] >= 1 + HANDSHAKERS * (RELOADS + 1), summary
    for client in clients:  # each client was shown the certificates in the order installed
        shown = _changes(client.pins)
        assert shown == pins[pins.index(shown[0]) :], (shown, pins)

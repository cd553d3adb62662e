"""Session tickets and resumption: servers send TLS 1.3 tickets, a client's next connection to the
same server resumes its session (``conn.tls.resumed``), and a client that writes then closes
without reading still delivers every byte (the tickets it never read are taken in at close,
so its close is no reset that would throw away what it sent last)."""

from __future__ import annotations

import hashlib
import os
import resource
import ssl
import time
from typing import Any

import pytest

import enchufe
from enchufe import _tls_sessions, _tlssetup, _tlsstream
from tests.conformance.conftest import IO_TIMEOUT
from tests.conftest import Peer
from tests.interop.conftest import WAIT, new_where, spawn, wait_bound
from tests.tls.conftest import read_to_eof
from tests.tls.test_interop import tool

pytestmark = pytest.mark.timeout(120)

#: More than the kernel takes at once on loopback: the client's close comes while some of it is
#: still in its send queue, which a reset would throw away.
UNREAD_PAYLOAD = 4 << 20
ROUNDS = 12
ROUNDS_SECONDS = 40.0


def sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_second_connection_resumes_the_session_of_the_first(api: Any, pem: dict[str, str]) -> None:
    """The first connection has a full handshake, the next ones to the same server resume
    (both sides say so), and the peer's certificate is still known on a resumed one."""
    _tlsstream.forget_sessions()
    with api.listen(f"tls://127.0.0.1:0?cert={pem['server']}") as listener:
        target = f"tls://localhost:{listener.address.port}?ca={pem['ca']}"
        resumed = []
        for _ in range(3):
            client = Peer(lambda: api.connect(target, timeout=IO_TIMEOUT))
            with listener.accept() as server:
                server.set_timeout(IO_TIMEOUT)
                server.handshake()
                server.send_all(b"hi")
                with client.result() as conn:
                    conn.set_timeout(IO_TIMEOUT)
                    assert conn.recv_exactly(2) == b"hi"
                    assert conn.tls.peer is not None and conn.tls.peer.common_name == "localhost"
                    resumed.append((conn.tls.resumed, server.tls.resumed))
    assert resumed == [(False, False), (True, True), (True, True)]


@pytest.mark.parametrize("shared", [True, False], ids=["openssl-session", "python-session"])
def test_the_kept_session_is_openssl_s_own_or_python_s(
    shared: bool, pem: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client keeps OpenSSL's own session (shared, not copied through Python's property, which
    parses the server's certificate again both ways); where that cannot be reached, Python's
    ``SSLSession``.  Either way the next connection resumes it and still knows the peer."""
    if not shared:
        monkeypatch.setattr(_tls_sessions, "_declared", [None])
    elif (
        _tls_sessions.ssl_pointer(
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
        )
        is None
    ):
        pytest.skip("this Python's ssl objects are not reachable through ctypes")
    _tlsstream.forget_sessions()
    with enchufe.sync.listen(f"tls://127.0.0.1:0?cert={pem['server']}") as listener:
        assert isinstance(listener.address, enchufe.InetAddress)
        target = f"tls://localhost:{listener.address.port}?ca={pem['ca']}"
        for expected in (False, True, True):
            client = Peer(lambda: enchufe.sync.connect(target, timeout=IO_TIMEOUT))
            with listener.accept() as server:
                server.set_timeout(IO_TIMEOUT)
                server.send_all(b"hi")
                with client.result() as conn:
                    conn.set_timeout(IO_TIMEOUT)
                    assert conn.recv_exactly(2) == b"hi"
                    assert conn.tls.resumed is expected
                    assert conn.tls.peer is not None and conn.tls.peer.common_name == "localhost"
            kept = list(_tlssetup._sessions.values())
            assert len(kept) == 1
            assert isinstance(kept[0], _tls_sessions.Session if shared else ssl.SSLSession)


def test_a_client_that_writes_and_closes_without_reading_delivers_every_byte(pem: dict[str, str]) -> None:
    """The server sends its tickets once the handshake is done and reads only after a moment;
    the client sends 4 MiB and closes without reading a byte.  Unread, the tickets made that
    close a reset, which lost the end of the 4 MiB still queued; now every round arrives whole."""
    payload = os.urandom(UNREAD_PAYLOAD)
    with enchufe.listen(f"tls://127.0.0.1:0?cert={pem['server']}") as listener:
        target = f"tls://127.0.0.1:{listener.address.port}?ca={pem['ca']}"  # type: ignore[union-attr]
        deadline = time.monotonic() + ROUNDS_SECONDS
        for round_ in range(ROUNDS):
            _tlsstream.forget_sessions()

            def upload() -> None:
                with enchufe.connect(target, timeout=IO_TIMEOUT) as conn:
                    conn.set_timeout(IO_TIMEOUT)
                    conn.send_all(payload)

            client = Peer(upload)
            with listener.accept() as server:
                server.set_timeout(IO_TIMEOUT)
                server.handshake()
                time.sleep(0.02)  # the client's close comes while its data is still queued
                got = read_to_eof(server)
            client.result(IO_TIMEOUT)
            assert len(got) == len(payload) and sha(got) == sha(payload), f"round {round_}"
            if time.monotonic() > deadline:
                break


def test_against_openssl_s_server_tickets_are_taken_in_and_resumed(
    sock_dir: str, pem: dict[str, str]
) -> None:
    """``openssl s_server`` sends tickets: clients that write and close without reading deliver
    every byte (its stdout holds them all, in order), and every connection after the first
    resumes."""
    _tlsstream.forget_sessions()
    where = new_where("tcp4", sock_dir)
    rounds = 4
    payloads = [os.urandom(1 << 20) for _ in range(rounds)]
    argv = [tool("openssl"), "s_server", "-accept", f"127.0.0.1:{where.port}", "-cert", pem["server"]]
    resumed = []
    with spawn([*argv, "-quiet", "-naccept", str(rounds)], "s_server") as server:  # stdin stays open
        wait_bound(where, server)
        sent = 0
        for payload in payloads:
            with enchufe.connect(f"tls://localhost:{where.port}?ca={pem['ca']}", timeout=WAIT) as conn:
                conn.set_timeout(WAIT)
                assert conn.tls is not None
                resumed.append(conn.tls.resumed)
                conn.send_all(payload)
                sent += len(payload)
                # s_server sends its tickets right after the handshake, before it reads: once it
                # has read all, they are here for the close to take in.  Without this wait a
                # loaded machine could close before they came (no ticket: no resumption), which
                # no client that writes and closes can help.
                server.wait_stdout(sent)
        assert sha(server.out) == sha(b"".join(payloads))
    assert resumed == [False] + [True] * (rounds - 1)


def test_a_lingering_close_works_on_a_descriptor_past_1024(pem: dict[str, str]) -> None:
    """The close that waits for the peer to take what was sent polls the socket: select() would
    refuse a descriptor past 1024 (a busy server's), and close() would raise."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip("cannot open 1100 descriptors here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        payload = os.urandom(UNREAD_PAYLOAD)
        with enchufe.listen(f"tls://127.0.0.1:0?cert={pem['server']}") as listener:
            target = f"tls://127.0.0.1:{listener.address.port}?ca={pem['ca']}"  # type: ignore[union-attr]

            def upload() -> None:
                with enchufe.connect(target, timeout=IO_TIMEOUT) as conn:
                    assert conn.socket.fileno() > 1024
                    conn.set_timeout(IO_TIMEOUT)
                    conn.send_all(payload)

            client = Peer(upload)
            with listener.accept() as server:
                server.set_timeout(IO_TIMEOUT)
                server.handshake()
                time.sleep(0.05)  # the client closes with its data still queued: it lingers
                got = read_to_eof(server)
            client.result(IO_TIMEOUT)
        assert sha(got) == sha(payload)
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

"""A channel on its socket reads the records there are in one compiled call (enchufe._tls_records,
driven by enchufe._tls_batch): every byte arrives (sha256), and the end of a stream (close_notify,
a close without it, a record that fails its check) is told exactly as the one-call-per-record
loop in Python tells it, after the data that came before it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from enchufe import _tls_batch
from enchufe._tls_batch import RECORD
from enchufe.tlschannel import TLSChannel
from enchufe.tlsparams import TLSParams
from tests import test_tlschannel

#: The fixtures of tests/test_tlschannel.py: a trustme CA, and client and server contexts.
ca = test_tlschannel.ca
contexts = test_tlschannel.contexts

STEP = 10.0
BUFFER = 256 * 1024

needs_records = pytest.mark.skipif(
    _tls_batch._records() is None,
    reason="no compiled reader here (enchufe._tls_records not built, or OpenSSL cannot be reached)",
)


@pytest.fixture(params=["compiled", "python"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test runs with the compiled reader and without it (the loop in Python)."""
    if request.param == "compiled":
        if _tls_batch._records() is None:
            pytest.skip("no compiled reader here (not built, or OpenSSL cannot be reached)")
    else:
        monkeypatch.setattr(_tls_batch, "_bound", [None])
    yield request.param


Pair = tuple[TLSChannel, ssl.SSLSocket]


@pytest.fixture
def pair(contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> Iterator[Pair]:
    yield from _pair(contexts)


def _pair(contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> Iterator[Pair]:
    """A server channel on its socket and a standard-library client, handshake done."""
    client_ctx, server_ctx = contexts
    with socket.create_server(("127.0.0.1", 0)) as listener:
        raw = socket.create_connection(listener.getsockname(), timeout=STEP)
        sock, _ = listener.accept()
    server = TLSChannel(server_ctx, TLSParams(), server_side=True, sock=sock)
    # Each record goes out as it is written: a reset drops what the client's kernel still holds.
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = client_ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
    thread = threading.Thread(target=client.do_handshake, daemon=True)
    thread.start()
    while not server.handshake():
        select.select([sock], [sock] if server.wants_write else [], [], STEP)
    thread.join(STEP)
    try:
        yield server, client
    finally:
        client.close()
        sock.close()


def _read_all(server: TLSChannel, limit: int = 64 << 20) -> tuple[bytes, list[int], BaseException | None]:
    """``read_into`` a 256 KiB buffer until the end: the bytes, the count of each call that gave
    some, and what ended it (``None`` for close_notify)."""
    assert server.sock is not None
    buffer = memoryview(bytearray(BUFFER))
    parts: list[bytes] = []
    counts: list[int] = []
    while sum(counts) < limit:
        try:
            got = server.read_into(buffer)
        except Exception as exc:  # what ends the stream is what is compared
            return b"".join(parts), counts, exc
        if got == 0:
            return b"".join(parts), counts, None
        if got < 0:
            assert select.select([server.sock], [], [], STEP)[0], "nothing for STEP seconds"
            continue
        parts.append(bytes(buffer[:got]))
        counts.append(got)
    raise AssertionError("no end after the limit")


def _counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The records each compiled call decrypted (by count of bytes), as the calls are made."""
    calls: list[int] = []
    records = _tls_batch._records()
    if records is None:
        return calls
    original: Callable[..., tuple[int, int, int, int]] = records.read_records

    def read_records(*args: object) -> tuple[int, int, int, int]:
        outcome = original(*args)
        calls.append(outcome[0])
        return outcome

    monkeypatch.setattr(records, "read_records", read_records)
    return calls


def test_a_bulk_stream_arrives_whole(path: str, pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    server, client = pair
    calls = _counted(monkeypatch)
    payload = os.urandom(8 * 1024 * 1024 + 4321)

    def send() -> None:
        client.sendall(payload)
        client.unwrap()  # close_notify; waits for the server's

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    data, counts, end = _read_all(server)
    server.close_write()
    assert server.sock is not None
    server.sock.setblocking(True)
    server.sock.sendall(server.outgoing())
    sender.join(STEP)
    assert end is None
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(payload).hexdigest()
    if path == "compiled":
        assert sum(calls) > len(payload) // 2, "the compiled reader decrypted little of the stream"
        assert max(counts) > 2 * RECORD, "no call gathered more than two records"
    else:
        assert not calls


def _records_then(client: ssl.SSLSocket, count: int) -> bytes:
    """Send ``count`` full records (16 KiB of plaintext each): what the server must read first."""
    payload = os.urandom(count * RECORD)
    client.sendall(payload)
    return payload


def _outcome(server: TLSChannel) -> tuple[str, list[int], str]:
    data, counts, end = _read_all(server)
    return hashlib.sha256(data).hexdigest(), counts, f"{type(end).__name__}: {end}"


@needs_records
def test_the_ends_are_told_alike_on_both_paths(contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    """Three full records, then each end: close_notify, a close without it, a forged record, a
    reset.  Compiled and in Python, the same bytes come in the same calls, and the same end
    after: the records the kernel holds before a reset are read first, then it ends as Python's
    ``_ssl`` tells it (an EOF without close_notify)."""
    seen: dict[str, dict[str, tuple[list[int], str]]] = {}
    for name in ("compiled", "python"):
        for end in ("close_notify", "truncated", "forged", "reset"):
            with pytest.MonkeyPatch.context() as monkeypatch:
                if name == "python":
                    monkeypatch.setattr(_tls_batch, "_bound", [None])
                fixture = _pair(contexts)
                server, client = next(fixture)
                try:
                    payload = _records_then(client, 3)
                    _end(end, client)
                    outcome = _outcome(server)
                finally:
                    fixture.close()  # type: ignore[attr-defined]
            assert outcome[0] == hashlib.sha256(payload).hexdigest()
            seen.setdefault(name, {})[end] = outcome[1:]
    assert seen["compiled"] == seen["python"]
    ends = seen["compiled"]
    assert ends["close_notify"][1] == "NoneType: None"
    assert ends["truncated"][1].startswith("TLSTruncated")
    assert ends["forged"][1].startswith("TLSRefused")
    assert ends["reset"] == ([3 * RECORD], ends["truncated"][1])


def _end(how: str, client: ssl.SSLSocket) -> None:
    if how == "close_notify":
        # SSL_shutdown once, by hand: unwrap() would wait for the server's close_notify.
        client.setblocking(False)
        with contextlib.suppress(ssl.SSLWantReadError, BlockingIOError):
            client.unwrap()
    elif how == "truncated":
        client.shutdown(socket.SHUT_WR)  # TCP's end: SSLSocket.shutdown sends no close_notify
    elif how == "reset":
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
    else:
        assert how == "forged"
        # An application-data record with a body no key made: its check fails.
        forged = b"\x17\x03\x03\x40\x11" + os.urandom(16401)
        assert os.write(client.fileno(), forged) == len(forged)


def test_read_error_words_errors_as_pythons_ssl() -> None:
    # A system call's error with nothing queued (a reset): EOF, as _ssl tells it for SSL_read_ex.
    assert isinstance(_tls_batch.read_error(ssl.SSL_ERROR_SYSCALL, 0), ssl.SSLEOFError)
    if ssl.OPENSSL_VERSION_INFO < (3,):
        pytest.skip("the error codes below are packed as OpenSSL 3 packs them")
    unexpected_eof = (20 << 23) | 294  # ERR_LIB_SSL, SSL_R_UNEXPECTED_EOF_WHILE_READING
    assert isinstance(_tls_batch.read_error(ssl.SSL_ERROR_SSL, unexpected_eof), ssl.SSLEOFError)
    bad_mac = (20 << 23) | 281  # SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC
    exc = _tls_batch.read_error(ssl.SSL_ERROR_SSL, bad_mac)
    assert type(exc) is ssl.SSLError
    assert (exc.library, exc.reason) == ("SSL", "DECRYPTION_FAILED_OR_BAD_RECORD_MAC")
    assert str(exc).startswith("[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC]")

"""``enchufe send`` to a library peer in a thread: stream and datagram, with and without --wait-reply."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

import enchufe
from tests.conftest import DATAGRAM_KINDS, STREAM_KINDS, Peer, kind_params

from .conftest import Spawn, assert_one_error_line, run


def stream_peer(listener: enchufe.Listener, answer: Callable[[bytes], bytes] | None) -> bytes:
    """Accept one client, read to EOF, send ``answer(request)`` if given, close; return the request."""
    with listener.accept() as conn:
        conn.set_timeout(10)
        request = b""
        while chunk := conn.recv():
            request += chunk
        if answer is not None:
            conn.send_all(answer(request))
    return request


def datagram_peer(sock: enchufe.DatagramSocket, answer: bool) -> bytes:
    """Receive one datagram, send it back reversed if ``answer``; return it."""
    sock.set_timeout(10)
    data, sender = sock.recvfrom()
    if answer:
        assert sender is not None, "the sender has no address to answer"
        sock.sendto(data[::-1], sender)
    return data


@pytest.mark.parametrize("kind", kind_params(STREAM_KINDS))
def test_stream_send_writes_data_and_closes(kind: str, make_address: Callable[[str], str]) -> None:
    with enchufe.listen(make_address(kind)) as listener:
        peer = Peer(stream_peer, listener, None)
        done = run("send", str(listener.address), "hello \u00e9")
        assert peer.result() == "hello \u00e9".encode()
    assert done.returncode == 0, done.stderr
    assert done.stdout == b""
    assert done.stderr == b""


def test_data_argument_that_is_not_utf8_is_sent_byte_for_byte(make_address: Callable[[str], str]) -> None:
    raw = b"\xff\xfe caf\xc3\xa9"  # argv holds bytes; a non-UTF-8 one once gave a traceback
    with enchufe.bind_datagram(make_address("udp4")) as sock:
        peer = Peer(datagram_peer, sock, False)
        done = run("send", str(sock.local_address), os.fsdecode(raw))
        assert peer.result() == raw
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""


@pytest.mark.parametrize("kind", kind_params(STREAM_KINDS))
def test_stream_send_wait_reply_prints_everything_until_the_peer_closes(
    kind: str, make_address: Callable[[str], str]
) -> None:
    payload = os.urandom(300_000)  # from stdin this time, binary
    reply = os.urandom(200_000)
    with enchufe.listen(make_address(kind)) as listener:
        peer = Peer(stream_peer, listener, lambda request: reply)
        done = run("send", str(listener.address), "--wait-reply", input=payload)
        assert peer.result() == payload
    assert done.returncode == 0, done.stderr
    assert done.stdout == reply


@pytest.mark.parametrize("kind", kind_params(DATAGRAM_KINDS))
@pytest.mark.parametrize("wait_reply", [False, True], ids=["no-reply", "wait-reply"])
def test_datagram_send(kind: str, wait_reply: bool, make_address: Callable[[str], str]) -> None:
    with enchufe.bind_datagram(make_address(kind)) as sock:
        peer = Peer(datagram_peer, sock, wait_reply)
        args = ["send", str(sock.local_address), "datagram \u00fc"]
        done = run(*args, "--wait-reply") if wait_reply else run(*args)
        assert peer.result() == "datagram \u00fc".encode()
    assert done.returncode == 0, done.stderr
    assert done.stdout == ("datagram \u00fc".encode()[::-1] if wait_reply else b"")


def test_datagram_send_from_stdin_is_one_datagram(make_address: Callable[[str], str]) -> None:
    payload = os.urandom(60_000)
    with enchufe.bind_datagram(make_address("udp4")) as sock:
        peer = Peer(datagram_peer, sock, False)
        done = run("send", str(sock.local_address), input=payload)
        assert peer.result() == payload
    assert done.returncode == 0, done.stderr


def test_send_to_enchufe_listen(make_address: Callable[[str], str], spawn: Spawn) -> None:
    """The peer can be enchufe itself: listen answers from its stdin."""
    server = spawn("listen", make_address("tcp4"))
    server.feed(b"answer from listen")
    done = run("send", server.listening(), "question", "--wait-reply")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"answer from listen"
    assert server.finish() == 0, server.err
    assert server.out == b"question"


@pytest.mark.parametrize("kind", ["udp4", "unixgram"])
def test_datagram_wait_reply_times_out_with_exit_1(kind: str, make_address: Callable[[str], str]) -> None:
    with enchufe.bind_datagram(make_address(kind)) as silent:
        started = time.monotonic()
        done = run("send", str(silent.local_address), "anyone?", "--wait-reply", "--timeout", "0.5")
        elapsed = time.monotonic() - started
        silent.set_timeout(5)
        assert silent.recv() == b"anyone?"
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "0.5 s")
    assert done.stdout == b""
    assert elapsed >= 0.5


@pytest.mark.parametrize("kind", ["tcp4", "unix"])
def test_stream_wait_reply_times_out_when_the_peer_never_closes(
    kind: str, make_address: Callable[[str], str]
) -> None:
    with enchufe.listen(make_address(kind)) as listener:
        done = run("send", str(listener.address), "anyone?", "--wait-reply", "--timeout", "0.5")
        with listener.accept() as conn:  # queued by the kernel; never answered
            conn.set_timeout(5)
            assert conn.recv() == b"anyone?"
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "0.5 s")

"""Replies to the senders of a datagram listener (real UDP sockets on loopback)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from enchufe.relay.datagram_listener import Upstream
from enchufe.relay.datagram_replies import Replies
from enchufe.relay.engine import Loop
from enchufe.relay.stats import Stats

#: the relay with its compiled hot path and without it (tests/conftest.py: both_paths)
pytestmark = pytest.mark.usefixtures("both_paths")

#: SO_NO_CHECK (not in Python's socket module): a socket that sends without UDP checksums, which
#: the kernel refuses for UDP GSO (EINVAL), so that replies go one by one.
SO_NO_CHECK = 11


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
    with sock:
        yield sock


def _replies(listener: socket.socket, errors: list[str]) -> tuple[Replies, Stats, Loop]:
    stats = Stats()
    loop = Loop()
    replies = Replies(
        loop, listener, stats, error=errors.append, on_sent=lambda s: None, on_change=lambda: None
    )
    return replies, stats, loop


def test_replies_sent_one_by_one_after_gso_is_refused_count_their_send_errors(
    listener: socket.socket,
) -> None:
    """GSO refused, each reply of the run sent alone fails too (port 0: EINVAL): all three are
    dropped, counted and reported, none counted as delivered."""
    errors: list[str] = []
    replies, stats, loop = _replies(listener, errors)
    session = Upstream(1, ("127.0.0.1", 0), "udp4://127.0.0.1:0")
    try:
        assert replies.send(session, b"a" * 30, 10, 3)
    finally:
        loop.close()
    assert not replies.gso  # the fallback was taken
    assert (stats.dropped, stats.to_client, stats.datagrams_to_client) == (3, 0, 0)
    assert (session.to_client, session.datagrams_to_client) == (0, 0)
    assert len(errors) == 1 and "cannot answer udp4://127.0.0.1:0: invalid argument" in errors[0]


def test_replies_sent_one_by_one_after_gso_is_refused_are_delivered_and_counted(
    listener: socket.socket,
) -> None:
    """The fallback's good path: each reply arrives whole, in order, counted once."""
    errors: list[str] = []
    replies, stats, loop = _replies(listener, errors)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind(("127.0.0.1", 0))
        sender.settimeout(5.0)
        session = Upstream(1, sender.getsockname(), "sender")
        try:
            assert replies.send(session, b"aaaabbbbcc", 4, 3)
        finally:
            loop.close()
        assert [sender.recv(64) for _ in range(3)] == [b"aaaa", b"bbbb", b"cc"]
    assert not replies.gso and errors == []
    assert (stats.dropped, stats.to_client, stats.datagrams_to_client) == (0, 10, 3)
    assert (session.to_client, session.datagrams_to_client) == (10, 3)

"""The ends of a relayed stream: what interest :meth:`Side.want` asks of the loop, on real sockets
and pipes (the readiness contract every stream session relies on)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from enchufe._nonblocking import abort
from enchufe.relay.engine import ERROR, READ, WRITE, Loop
from enchufe.relay.sides import UNREGISTERED, Side


@pytest.fixture
def loop() -> Iterator[Loop]:
    loop = Loop()
    yield loop
    loop.close()


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        server, _ = listener.accept()
    return client, server


def _run_briefly(loop: Loop, seconds: float = 0.2) -> None:
    over: list[bool] = []
    loop.call_later(seconds, lambda: over.append(True))
    loop.run(lambda: bool(over))


def _never(events: int) -> None:
    raise AssertionError(f"called with events {events}")


def test_a_socket_wanting_nothing_still_hears_its_reset(loop: Loop) -> None:
    ours, peer = _tcp_pair()
    with ours:
        seen: list[int] = []

        def on_events(events: int) -> None:
            seen.append(events)
            loop.unregister(ours.fileno())  # once is enough (it would be reported every turn)

        side = Side(ours)
        side.handle(on_events, _never, _never, str)
        side.want(loop, 0, False)
        assert side.mask == 0 and loop.watching(ours.fileno())
        abort(peer)  # SO_LINGER 0: a reset
        _run_briefly(loop)
        assert len(seen) == 1 and seen[0] & ERROR


def test_a_socket_shut_for_writing_is_unwatched_while_nothing_is_wanted(loop: Loop) -> None:
    ours, peer = _tcp_pair()
    with ours, peer:
        side = Side(ours)
        calls: list[int] = []
        side.handle(calls.append, _never, _never, str)
        side.want(loop, READ, False)
        ours.shutdown(socket.SHUT_WR)
        peer.shutdown(socket.SHUT_WR)  # both shut: an empty mask would report EPOLLHUP forever
        side.want(loop, 0, True)
        assert side.mask == UNREGISTERED and not loop.watching(ours.fileno())
        _run_briefly(loop, 0.1)
        assert calls == []
        side.want(loop, READ, True)  # wanted again
        assert side.mask == READ and loop.watching(ours.fileno())
        loop.forget(ours.fileno())


def test_a_descriptor_side_registers_each_descriptor_only_while_wanted(loop: Loop) -> None:
    rfd, their_w = os.pipe2(os.O_NONBLOCK)
    their_r, wfd = os.pipe2(os.O_NONBLOCK)
    try:
        side = Side(rfd=rfd, wfd=wfd)
        reads: list[int] = []
        writes: list[int] = []
        side.handle(_never, reads.append, writes.append, str)
        side.want(loop, READ, False)
        assert loop.watching(rfd) and not loop.watching(wfd)
        side.want(loop, WRITE, False)
        assert not loop.watching(rfd) and loop.watching(wfd)
        side.want(loop, 0, False)
        assert not loop.watching(rfd) and not loop.watching(wfd)
        assert side.mask == 0
        os.close(their_w)  # the writer is gone: the read end reports EPOLLHUP whatever the mask
        their_w = -1
        _run_briefly(loop, 0.1)
        assert reads == [] and writes == []  # nothing asked of it: not woken by its hang-up
    finally:
        for fd in (rfd, wfd, their_r, their_w):
            if fd >= 0:
                os.close(fd)

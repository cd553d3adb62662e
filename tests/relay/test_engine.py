"""The event loop: readiness dispatch, timers (order, cancel, compaction), wake-ups."""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Callable

from enchufe.relay.engine import COMPACT_AFTER, READ, WRITE, Loop


def test_timers_fire_in_order_and_cancelled_ones_do_not() -> None:
    loop = Loop()
    fired: list[str] = []
    try:
        loop.call_later(0.03, lambda: fired.append("c"))
        loop.call_later(0.01, lambda: fired.append("a"))
        loop.call_later(0.02, lambda: fired.append("b"))
        loop.call_later(0.015, lambda: fired.append("never")).cancel()
        loop.call_later(0.0, lambda: fired.append("now"))
        loop.run(until=lambda: len(fired) >= 4)
    finally:
        loop.close()
    assert fired == ["now", "a", "b", "c"]


def test_cancelled_timers_do_not_pile_up() -> None:
    loop = Loop()
    fired: list[int] = []
    try:
        timers = [loop.call_later(60 + i, lambda: None) for i in range(3 * COMPACT_AFTER)]
        for timer in timers[: 2 * COMPACT_AFTER + 10]:
            timer.cancel()
        assert len(loop._timers) < 2 * COMPACT_AFTER  # rebuilt without the cancelled ones
        loop.call_later(0.0, lambda: fired.append(1))
        loop.run(until=lambda: bool(fired))
    finally:
        loop.close()


def test_readiness_is_dispatched_to_the_registered_handler() -> None:
    loop = Loop()
    a, b = socket.socketpair()
    seen: list[int] = []
    try:
        loop.register(b.fileno(), READ, seen.append)
        a.send(b"x")
        loop.run(until=lambda: bool(seen))
        assert seen[0] & READ
        seen.clear()
        loop.modify(b.fileno(), WRITE)
        loop.run(until=lambda: bool(seen))
        assert seen[0] & WRITE and not seen[0] & READ
        loop.unregister(b.fileno())
        assert not loop.watching(b.fileno())
    finally:
        loop.close()
        a.close()
        b.close()


def test_wake_from_another_thread_runs_the_wake_handler() -> None:
    loop = Loop()
    woken = threading.Event()
    try:
        loop.set_wake_handler(woken.set)
        timer = threading.Timer(0.05, loop.wake)
        timer.start()
        loop.run(until=woken.is_set)  # no timer and no socket: only the wake-up ends the wait
        timer.join()
    finally:
        loop.close()


def test_an_event_for_a_descriptor_closed_in_the_same_batch_is_not_delivered_to_its_new_owner() -> None:
    """Two readable sockets: whichever handler runs first closes the other one and puts a new
    socket (which gets the same, lowest free, number) in its place.  The old socket's event in
    that batch must not reach the new socket's handler."""
    loop = Loop()
    pairs = [socket.socketpair(), socket.socketpair()]
    replacements: list[socket.socket] = []
    calls: list[str] = []
    done: list[bool] = []

    def newcomer(events: int) -> None:
        calls.append("newcomer")

    def make_handler(me: int) -> Callable[[int], None]:
        def handler(events: int) -> None:
            calls.append(f"pair{me}")
            if replacements:
                return
            other = pairs[1 - me][1]
            number = other.fileno()
            loop.forget(number)
            other.close()
            fresh, partner = socket.socketpair()
            replacements.extend([fresh, partner])
            if fresh.fileno() == number:
                loop.register(fresh.fileno(), READ, newcomer)
            done.append(True)

        return handler

    try:
        for index, (a, b) in enumerate(pairs):
            a.send(b"x")
            loop.register(b.fileno(), READ, make_handler(index))
        loop.call_later(0.05, lambda: done.append(True))
        loop.run(until=lambda: len(done) >= 2)
        assert "newcomer" not in calls
        assert len([c for c in calls if c.startswith("pair")]) >= 1
    finally:
        loop.close()
        for a, b in pairs:
            a.close()
            b.close()
        for sock in replacements:
            sock.close()


def test_a_descriptor_epoll_refuses_is_always_ready() -> None:
    """A regular file (stdin redirected from one) cannot be registered with epoll: its handler
    runs on every turn while its mask asks for something, and never once the mask is empty."""
    loop = Loop()
    calls: list[int] = []
    with tempfile.TemporaryFile() as f:
        fd = f.fileno()

        def handler(events: int) -> None:
            calls.append(events)
            if len(calls) == 3:
                loop.modify(fd, 0)

        try:
            loop.register(fd, READ, handler)
            loop.call_later(0.05, lambda: calls.append(-1))
            loop.run(until=lambda: -1 in calls)
            assert calls == [READ, READ, READ, -1]
            loop.unregister(fd)
            assert not loop.watching(fd)
        finally:
            loop.close()

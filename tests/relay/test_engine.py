"""The event loop: readiness dispatch, timers (order, cancel, compaction), wake-ups."""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from enchufe.relay import RelayConfig, engine
from enchufe.relay.datagram import DatagramRelay
from enchufe.relay.engine import COMPACT_AFTER, READ, WRITE, Loop
from enchufe.relay.shortcuts import NO_SHORTCUTS
from enchufe.relay.stream import Side, StreamRelay, StreamSession

from .conftest import (
    STEP,
    DatagramTarget,
    RelayThread,
    StartRelay,
    Target,
    closed_by_peer,
    datagram_socket,
    dial,
    digest_of,
    echo,
    exchange,
    ping,
    relay_thread,
    wait_until,
)


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


# ----------------------------------------------------------------------------- a handler that raises
#
# A hostile or unlucky peer may end its own session, never the loop and everyone else's: a
# handler or timer that raises ends its owner (``on_error``), one line is reported, the loop
# goes on.  Faults are injected into handlers; the sockets are real.


class Reports:
    """A Loop's report hook that keeps every line."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, Exception]] = []

    def __call__(self, line: str, exc: Exception) -> None:
        self.lines.append((line, exc))


def test_a_handler_that_raises_ends_only_its_owner_and_the_loop_goes_on() -> None:
    reports = Reports()
    loop = Loop(report=reports)
    bad_a, bad_b = socket.socketpair()
    good_a, good_b = socket.socketpair()
    seen: list[bytes] = []
    ended: list[Exception] = []

    def bad(events: int) -> None:
        raise RuntimeError("boom\nforged line")

    def on_error(exc: Exception) -> str:
        ended.append(exc)
        loop.forget(bad_b.fileno())
        bad_b.close()
        return "closed the bad one"

    def good(events: int) -> None:
        seen.append(good_b.recv(100))

    try:
        loop.register(bad_b.fileno(), READ, bad, on_error)
        loop.register(good_b.fileno(), READ, good)
        bad_a.send(b"x")
        good_a.send(b"1")
        loop.run(until=lambda: bool(ended) and bool(seen))
        good_a.send(b"2")
        loop.run(until=lambda: len(seen) >= 2)
        assert seen == [b"1", b"2"]
        assert len(ended) == 1 and isinstance(ended[0], RuntimeError)
        bad_a.settimeout(5)
        with contextlib.suppress(ConnectionResetError):  # its owner closed it (a byte unread: reset)
            assert bad_a.recv(1) == b""
        (line, exc), *_ = reports.lines
        assert len(reports.lines) == 1 and exc is ended[0]
        assert line == (
            "enchufe: unexpected error in a handler: RuntimeError: boom\\nforged line; "
            "closed the bad one; the relay goes on"
        )
    finally:
        loop.close()
        for sock in (bad_a, bad_b, good_a, good_b):
            sock.close()


def test_a_handler_that_raises_without_on_error_is_no_longer_watched_so_it_cannot_spin() -> None:
    reports = Reports()
    loop = Loop(report=reports)
    a, b = socket.socketpair()
    calls: list[int] = []

    def bad(events: int) -> None:
        calls.append(events)
        raise OSError(5, "odd")

    try:
        loop.register(b.fileno(), READ, bad)
        a.send(b"x")  # stays unread: level-triggered, it would be reported on every turn
        done: list[bool] = []
        loop.call_later(0.2, lambda: done.append(True))
        loop.run(until=lambda: bool(done))
        assert len(calls) == 1
        assert not loop.watching(b.fileno())
        (line, _exc), *_ = reports.lines
        assert len(reports.lines) == 1
        assert f"OSError: [Errno 5] odd; descriptor {b.fileno()} is no longer watched" in line
    finally:
        loop.close()
        a.close()
        b.close()


def test_an_on_error_that_raises_too_still_stops_the_descriptor_being_watched() -> None:
    reports = Reports()
    loop = Loop(report=reports)
    a, b = socket.socketpair()
    calls: list[int] = []

    def bad(events: int) -> None:
        calls.append(events)
        raise ValueError("first")

    def worse(exc: Exception) -> str:
        raise KeyError("second")

    try:
        loop.register(b.fileno(), READ, bad, worse)
        a.send(b"x")
        done: list[bool] = []
        loop.call_later(0.2, lambda: done.append(True))
        loop.run(until=lambda: bool(done))
        assert len(calls) == 1 and not loop.watching(b.fileno())
        (line, _exc), *_ = reports.lines
        assert "ValueError: first; ending its owner failed too (KeyError: 'second')" in line
    finally:
        loop.close()
        a.close()
        b.close()


def test_a_handler_that_closed_its_descriptor_before_raising_leaves_the_numbers_new_owner_alone() -> None:
    """Linux reuses the lowest free number: the descriptor a handler closed before raising may
    already belong to someone else, who must be neither ended nor unwatched."""
    reports = Reports()
    loop = Loop(report=reports)
    a, b = socket.socketpair()
    fresh: list[socket.socket] = []
    ended: list[str] = []
    reused: list[int] = []

    def ends(who: str) -> Callable[[Exception], str]:
        def on_error(exc: Exception) -> str:
            ended.append(who)
            return f"ended {who}"

        return on_error

    def bad(events: int) -> None:
        number = b.fileno()
        loop.forget(number)
        b.close()
        new, partner = socket.socketpair()
        fresh.extend([new, partner])
        if new.fileno() == number:
            reused.append(number)
            loop.register(number, READ, lambda events: None, ends("innocent"))
        raise RuntimeError("after closing")

    try:
        loop.register(b.fileno(), READ, bad, ends("owner"))
        a.send(b"x")
        loop.run(until=lambda: bool(reports.lines))
        assert reused, "the new socket did not get the closed one's number"
        assert not ended
        assert loop.watching(reused[0])
        (line, _exc), *_ = reports.lines
        assert line.endswith("RuntimeError: after closing; its work is skipped; the relay goes on")
    finally:
        loop.close()
        for sock in (a, b, *fresh):
            sock.close()


def test_a_timer_that_raises_ends_its_owner_and_later_timers_still_fire() -> None:
    reports = Reports()
    loop = Loop(report=reports)
    fired: list[str] = []
    ended: list[Exception] = []

    def bad() -> None:
        raise LookupError("timer")

    def on_error(exc: Exception) -> str:
        ended.append(exc)
        return "its session was closed"

    try:
        loop.call_later(0.0, bad, on_error)
        loop.call_later(0.0, lambda: fired.append("same turn"))
        loop.call_later(0.01, bad)  # no on_error: reported, skipped
        loop.call_later(0.02, lambda: fired.append("later"))
        loop.run(until=lambda: len(fired) >= 2)
        assert fired == ["same turn", "later"]
        assert len(ended) == 1
        lines = [line for line, _exc in reports.lines]
        start = "enchufe: unexpected error in a timer: LookupError: timer; "
        assert lines == [
            start + "its session was closed; the relay goes on",
            start + "its work is skipped; the relay goes on",
        ]
    finally:
        loop.close()


def test_a_repeating_timer_that_raises_is_reported_and_goes_on_until_cancelled() -> None:
    reports = Reports()
    loop = Loop(report=reports)
    calls: list[int] = []

    def tick() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise LookupError("tick")
        if len(calls) == 3:
            ticks.cancel()

    try:
        ticks = loop.call_every(0.001, tick)
        later: list[bool] = []
        loop.call_later(0.05, lambda: later.append(True))
        loop.run(until=lambda: bool(later))
        assert calls == [0, 1, 2]  # the raise did not end the series; the cancel did
        assert [line for line, _exc in reports.lines] == [
            "enchufe: unexpected error in a timer: LookupError: tick; its work is skipped; the relay goes on"
        ]
    finally:
        loop.close()


def test_a_timer_that_cancels_many_timers_leaves_a_repeating_one_due_once() -> None:
    """Cancelling many timers compacts the heap (a new list) in the middle of a turn's timers:
    a repeating timer due in the same turn still fires once per interval, neither lost nor
    doubled."""
    loop = Loop()
    ticks: list[float] = []
    interval = 0.1
    try:
        doomed = [loop.call_later(3600.0, lambda: None) for _ in range(COMPACT_AFTER + 10)]

        def cancel_all() -> None:
            for timer in doomed:
                timer.cancel()

        loop.call_later(interval, cancel_all)
        loop.call_every(interval, lambda: ticks.append(time.monotonic()))
        time.sleep(2 * interval)  # both due in the loop's first turn, the cancelling one first
        loop.run(until=lambda: len(ticks) >= 3)
        assert len(loop._timers) < COMPACT_AFTER  # compacted
        gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
        assert min(gaps) > interval / 2, gaps  # not due again at once (a doubled entry)
        assert sum(1 for _when, _seq, timer in loop._timers if timer.interval) == 1
    finally:
        loop.close()


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, MemoryError])
def test_interrupts_exits_and_memory_errors_still_end_the_loop(error: type[BaseException]) -> None:
    reports = Reports()
    loop = Loop(report=reports)
    a, b = socket.socketpair()
    ended: list[Exception] = []

    def bad(events: int) -> None:
        raise error

    def on_error(exc: Exception) -> str:
        ended.append(exc)
        return ""

    def bad_timer() -> None:
        raise error

    try:
        loop.register(b.fileno(), READ, bad, on_error)
        a.send(b"x")
        with pytest.raises(error):
            loop.run(until=lambda: False)
        loop.unregister(b.fileno())
        loop.call_later(0.0, bad_timer, on_error)
        with pytest.raises(error):
            loop.run(until=lambda: False)
        assert not ended and not reports.lines
    finally:
        loop.close()
        a.close()
        b.close()


def test_without_a_report_hook_the_line_goes_to_the_enchufe_relay_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = Loop()
    done: list[bool] = []

    def bad() -> None:
        done.append(True)
        raise RuntimeError("logged")

    try:
        with caplog.at_level(logging.DEBUG, logger="enchufe.relay"):
            loop.call_later(0.0, bad)
            loop.run(until=lambda: bool(done))
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
        assert [r.getMessage() for r in errors] == [
            "enchufe: unexpected error in a timer: RuntimeError: logged; its work is skipped; "
            "the relay goes on"
        ]
        assert errors[0].exc_info is None  # the traceback only at DEBUG level
        assert debug and debug[0].exc_info is not None
    finally:
        loop.close()


# ----------------------------------------------------------------------------- in a running relay

#: A client that starts a write with this makes its session's handler raise (the fault injected
#: below; no generated stream starts a chunk with it).
MARKER = b"\x00FAULT\x00"
SIZE = 4 << 20


class FaultySession(StreamSession):
    """A session whose client handler raises when the marker waits on the client socket
    (peeked, so that the socket is untouched), and whose idle check raises for the clients
    whose port is in :attr:`doomed`."""

    doomed: ClassVar[set[int]] = set()
    #: the session with this number raises once it has started (in the listener's handler)
    fail_start: ClassVar[int] = 0
    #: the session with this number raises the first time it is cut
    fail_cut: ClassVar[int] = 0
    #: the session with this number raises when told that its exec: child exited
    fail_exit: ClassVar[int] = 0

    def _may_cut(self, stop_early: bool) -> int:
        return NO_SHORTCUTS  # every event reaches _on_client, where the fault is injected

    def cut(self, reason: str) -> None:
        if self.id == self.fail_cut:
            FaultySession.fail_cut = 0
            raise RuntimeError("injected cut fault")
        super().cut(reason)

    def start(self) -> None:
        super().start()
        if self.id == self.fail_start:
            raise RuntimeError("injected start fault")

    def _on_client(self, events: int) -> None:
        sock = self.client_sock
        if events & READ and sock is not None:
            with contextlib.suppress(BlockingIOError):
                if sock.recv(16, socket.MSG_PEEK | socket.MSG_DONTWAIT).startswith(MARKER):
                    raise RuntimeError("injected\nfault")
        super()._on_client(events)

    def _idle_check(self) -> None:
        if self.peer[1] in self.doomed:
            raise RuntimeError("injected timer fault")
        super()._idle_check()

    def _child_exited(self, delay: float, check: bool = False) -> None:
        if not check and self.id == self.fail_exit:
            raise RuntimeError("injected exit fault")
        super()._child_exited(delay, check)


@pytest.fixture
def faulty(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FaultySession]]:
    def make_session(relay: StreamRelay, conn: socket.socket, peer: Any, session_id: int) -> StreamSession:
        return FaultySession(relay, Side(conn), conn, peer, session_id)

    monkeypatch.setattr(StreamRelay, "make_session", make_session)
    FaultySession.doomed = set()
    FaultySession.fail_start = 0
    FaultySession.fail_cut = 0
    FaultySession.fail_exit = 0
    yield FaultySession


def _unexpected(running: RelayThread) -> list[str]:
    return [message for name, message, _fields in running.events.events if "unexpected error" in message]


def _healthy_exchange(sock: socket.socket, seed: int) -> None:
    result = exchange(sock, seed, SIZE)
    assert result.sent == result.received == SIZE
    assert result.sent_digest == result.received_digest == digest_of(seed, SIZE)


def test_a_session_whose_handler_raises_is_reset_and_the_relay_serves_the_others(
    faulty: type[FaultySession],
) -> None:
    with (
        Target("tcp://127.0.0.1:0", echo) as target,
        relay_thread(RelayConfig("tcp://127.0.0.1:0", target.address)) as running,
    ):
        with dial(running.address) as healthy, dial(running.address) as doomed:
            assert ping(healthy) and ping(doomed)
            doomed.sendall(MARKER)
            assert closed_by_peer(doomed, STEP)
            _healthy_exchange(healthy, seed=1)
        with dial(running.address) as later:
            assert ping(later, b"served afterwards\n")
        assert running.peer.is_alive()
        (line,) = _unexpected(running)
        assert "RuntimeError: injected\\nfault; closed #2 tcp://127.0.0.1:" in line
        assert line.endswith(", both peers reset; the relay goes on")
        assert running.relay.stats.cut == 1


def test_a_session_whose_timer_raises_is_reset_and_the_relay_serves_the_others(
    faulty: type[FaultySession],
) -> None:
    with Target("tcp://127.0.0.1:0", echo) as target:
        config = RelayConfig("tcp://127.0.0.1:0", target.address, idle_timeout=0.3)
        with relay_thread(config) as running:
            with dial(running.address) as healthy, dial(running.address) as doomed:
                faulty.doomed.add(doomed.getsockname()[1])
                assert ping(healthy) and ping(doomed)
                doomed.settimeout(0.05)
                gone = False
                for _ in range(int(STEP / 0.05)):  # the healthy one keeps busy, the doomed one idles
                    assert ping(healthy)
                    if closed_by_peer(doomed, 0.05):
                        gone = True
                        break
                assert gone
                _healthy_exchange(healthy, seed=2)
            with dial(running.address) as later:
                assert ping(later, b"served afterwards\n")
            assert running.peer.is_alive()
            (line,) = _unexpected(running)
            assert line.startswith(
                "enchufe: unexpected error in a timer: RuntimeError: injected timer fault; closed #2 "
            )


def _reset_at_once(address: str) -> bool:
    """Connect and wait to be closed by the peer: True if that happens within 5 s.  A relay that
    resets at once may do it before this thread's ``connect()`` has returned (it then fails with
    ECONNRESET), which counts too."""
    try:
        sock = dial(address)
    except ConnectionResetError:
        return True
    with sock:
        return closed_by_peer(sock, 5.0)


def test_a_session_that_raises_while_starting_is_reset_and_the_listener_serves_on(
    faulty: type[FaultySession],
) -> None:
    """The session starts inside the listener's handler: its failure is its own."""
    faulty.fail_start = 1
    with (
        Target("tcp://127.0.0.1:0", echo) as target,
        relay_thread(RelayConfig("tcp://127.0.0.1:0", target.address)) as running,
    ):
        assert _reset_at_once(running.address)
        with dial(running.address) as later:
            assert ping(later, b"served afterwards\n")
            _healthy_exchange(later, seed=3)
        assert running.peer.is_alive()
        (line,) = _unexpected(running)
        assert line.startswith(
            "enchufe: unexpected error in a handler: RuntimeError: injected start fault; closed #1 "
        )
        wait_until(lambda: running.relay.stats.open == 0, "the sessions to end")
        assert running.relay.stats.cut == 1


def test_a_session_that_cannot_be_cut_keeps_neither_the_others_open_nor_the_relay_running(
    faulty: type[FaultySession],
) -> None:
    faulty.fail_cut = 1
    with (
        Target("tcp://127.0.0.1:0", echo) as target,
        relay_thread(RelayConfig("tcp://127.0.0.1:0", target.address)) as running,
    ):
        with dial(running.address) as doomed, dial(running.address) as healthy:
            assert ping(doomed) and ping(healthy)
            running.relay.stop(now=True)
            assert closed_by_peer(healthy, STEP)
            assert closed_by_peer(doomed, STEP)  # closed the way a failed session is
            running.peer.result(STEP)  # the relay ended
        (line,) = _unexpected(running)
        assert line.startswith(
            "enchufe: unexpected error in a handler: RuntimeError: injected cut fault; closed #1 "
        )


#: A child that exits at once, leaving a process that holds its stdout open: its session ends when
#: told of the exit (after CHILD_EXIT_GRACE), since no EOF comes.
LEAVES_ITS_OUTPUT_OPEN = "exec:sh -c 'sleep 30 & echo started'"


def _started_then_closed(sock: socket.socket) -> bool:
    sock.settimeout(STEP)
    got = b""
    while not got.endswith(b"started\n"):
        chunk = sock.recv(64)
        assert chunk, got
        got += chunk
    return closed_by_peer(sock, STEP)


def _reset_after_at_most_started(sock: socket.socket) -> bool:
    """True once the peer resets (a reset may come before "started" was passed on: the child's
    exit and its output can be seen in one turn, and a reset session forwards nothing more)."""
    sock.settimeout(STEP)
    got = b""
    try:
        while chunk := sock.recv(64):
            got += chunk
    except ConnectionResetError:
        return b"started\n".startswith(got)
    return False


def test_a_session_whose_child_exit_callback_raises_is_reset_and_the_relay_serves_the_others(
    faulty: type[FaultySession],
) -> None:
    """The child's pidfd is forgotten before its session is told: the failure must still end
    that session (it waits for that exit, no EOF comes), and only that one."""
    faulty.fail_exit = 1
    with relay_thread(RelayConfig("tcp://127.0.0.1:0", LEAVES_ITS_OUTPUT_OPEN)) as running:
        try:
            doomed: socket.socket | None = dial(running.address)
        except ConnectionResetError:
            # Reset before connect() returned (seen once, in a CI run under the whole suite's
            # load): most likely this thread was not run again until the relay had accepted,
            # started the child, seen it exit and reset the session; the kernel then reports
            # the reset to the connect() still waiting.
            doomed = None
        with contextlib.ExitStack() as held:
            if doomed is not None:
                held.enter_context(doomed)
            healthy = held.enter_context(dial(running.address))
            if doomed is not None:
                assert _reset_after_at_most_started(doomed)
            assert _started_then_closed(healthy)
        with dial(running.address) as later:
            assert _started_then_closed(later)
        assert running.peer.is_alive()
        (line,) = _unexpected(running)
        assert line.startswith(
            "enchufe: unexpected error in a handler: RuntimeError: injected exit fault; closed #1 "
        )
        assert line.endswith(", both peers reset; the relay goes on")
        wait_until(lambda: running.relay.stats.open == 0, "the sessions to end")
        assert running.relay.stats.cut == 1


def test_a_stream_listener_whose_handler_raises_rests_and_serves_on(monkeypatch: pytest.MonkeyPatch) -> None:
    original = StreamRelay._on_accept
    calls: list[float] = []

    def failing(self: StreamRelay, events: int) -> None:
        calls.append(time.monotonic())
        if len(calls) <= 3:
            raise OSError(errno.EIO, "injected")
        original(self, events)

    monkeypatch.setattr(StreamRelay, "_on_accept", failing)
    with (
        Target("tcp://127.0.0.1:0", echo) as target,
        relay_thread(RelayConfig("tcp://127.0.0.1:0", target.address)) as running,
    ):
        with dial(running.address) as client:
            assert ping(client)
        assert running.peer.is_alive()
        lines = _unexpected(running)
        assert (
            lines
            == [
                "enchufe: unexpected error in a handler: OSError: [Errno 5] injected; "
                "the listener rests 0.1 s; the relay goes on"
            ]
            * 3
        )
        assert len(calls) == 4  # it rested between failures: one call each, no spinning
        assert all(b - a >= 0.09 for a, b in itertools.pairwise(calls))


def test_a_datagram_listener_whose_receive_fails_rests_and_serves_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A receive error that is not transient (EIO here) used to end the relay."""
    original = DatagramRelay._receive
    calls: list[float] = []

    def failing(self: DatagramRelay) -> None:
        calls.append(time.monotonic())
        if len(calls) <= 3:
            raise OSError(errno.EIO, "injected")
        original(self)

    monkeypatch.setattr(DatagramRelay, "_receive", failing)
    with (
        DatagramTarget("udp://127.0.0.1:0") as target,
        relay_thread(RelayConfig("udp://127.0.0.1:0", target.address)) as running,
        datagram_socket(running.address, timeout=STEP) as client,
    ):
        client.send(b"hello")
        assert client.recv(100) == b"hello"
        assert running.peer.is_alive()
        lines = _unexpected(running)
        assert (
            lines
            == [
                "enchufe: unexpected error in a handler: OSError: [Errno 5] injected; "
                "the listener rests 0.1 s; the relay goes on"
            ]
            * 3
        )
        assert len(calls) == 4
        assert all(b - a >= 0.09 for a, b in itertools.pairwise(calls))


# ----------------------------------------------------------------------------- the command

#: ``python -c FAULTY python -m enchufe relay …``: the relay command, with the handler fault of
#: :class:`FaultySession` (a client write starting with the marker) injected before it runs.
FAULTY = f"""
import socket, sys
from enchufe.relay.stream import StreamSession
original = StreamSession._on_client
def _on_client(self, events):
    sock = self.client_sock
    if sock is not None and events & 1:
        try:
            if sock.recv(16, socket.MSG_PEEK | socket.MSG_DONTWAIT).startswith({MARKER!r}):
                raise RuntimeError("injected\\nfault")
        except BlockingIOError:
            pass
    original(self, events)
StreamSession._on_client = _on_client
StreamSession._may_cut = lambda self, stop_early: -1  # every event reaches _on_client
from enchufe.cli import main
sys.argv = ["enchufe", *sys.argv[4:]]
main()
"""


@pytest.mark.parametrize("debug", [False, True])
def test_the_command_logs_one_line_and_the_traceback_only_with_debug(
    start_relay: StartRelay, debug: bool
) -> None:
    with Target("tcp://127.0.0.1:0", echo) as target:
        options = ("--debug",) if debug else ()
        relay = start_relay(
            "tcp://127.0.0.1:0", target.address, *options, prefix=(sys.executable, "-c", FAULTY)
        )
        with dial(relay.address) as healthy, dial(relay.address) as doomed:
            assert ping(healthy) and ping(doomed)
            doomed.sendall(MARKER)
            assert closed_by_peer(doomed, STEP)
            _healthy_exchange(healthy, seed=4)
        with dial(relay.address) as later:
            assert ping(later)
        line = relay.wait_err(r"^enchufe: unexpected error.*$").group(0)
        assert line.startswith(
            "enchufe: unexpected error in a handler: RuntimeError: injected\\nfault; closed #2 "
        )
        relay.signal()
        assert relay.finish() == 0, relay.err
        err = relay.err
        # the event's line; with --debug, the engine's DEBUG record repeats it before the traceback
        assert err.count("RuntimeError: injected\\nfault; closed #2") == (2 if debug else 1)
        assert ("Traceback (most recent call last)" in err) is debug


def test_a_datagram_session_whose_handler_raises_is_ended_and_the_relay_serves_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The target's answer to the marker makes that session's upstream handler raise."""
    original = DatagramRelay._on_upstream

    def on_upstream(self: DatagramRelay, session: Any, events: int) -> None:
        if events & READ:
            with contextlib.suppress(BlockingIOError):
                if session.sock.recv(16, socket.MSG_PEEK | socket.MSG_DONTWAIT).startswith(MARKER):
                    raise RuntimeError("injected datagram fault")
        original(self, session, events)

    monkeypatch.setattr(DatagramRelay, "_on_upstream", on_upstream)
    monkeypatch.setattr(engine, "COMPILED", False)  # every event reaches _on_upstream
    with (
        DatagramTarget("udp://127.0.0.1:0") as target,
        relay_thread(RelayConfig("udp://127.0.0.1:0", target.address)) as running,
        datagram_socket(running.address, timeout=STEP) as healthy,
        datagram_socket(running.address, timeout=STEP) as doomed,
    ):
        for sock, payload in ((healthy, b"one"), (doomed, b"two")):
            sock.send(payload)
            assert sock.recv(100) == payload
        doomed.send(MARKER)
        wait_until(lambda: running.relay.stats.cut == 1, "the session to be ended")
        for index in range(100):  # the others go on; the doomed sender gets a new session
            for sock in (healthy, doomed):
                payload = b"%d" % index
                sock.send(payload)
                assert sock.recv(100) == payload
        assert running.peer.is_alive()
        (line,) = _unexpected(running)
        assert line == (
            "enchufe: unexpected error in a handler: RuntimeError: injected datagram fault; "
            f"closed session #2 udp://127.0.0.1:{doomed.getsockname()[1]}; the relay goes on"
        )
        assert running.relay.stats.total == 3

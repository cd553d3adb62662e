"""SessionTable: per-peer datagram sessions, with time passed in (no sockets, no sleeping)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from enchufe import UsageError
from enchufe.sessions import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_SESSIONS, Session, SessionTable


class Ended:
    """Records ``on_end`` calls as (peer, reason)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, str]] = []

    def __call__(self, session: Session[Any, Any], reason: str) -> None:
        self.calls.append((session.peer, reason))


def table(**options: Any) -> tuple[SessionTable[str, str], Ended]:
    ended = Ended()
    return SessionTable(on_end=ended, **options), ended


def state_for(peer: str) -> str:
    return f"state of {peer}"


def test_defaults() -> None:
    sessions: SessionTable[str, str] = SessionTable()
    assert sessions.idle_timeout == DEFAULT_IDLE_TIMEOUT == 60.0
    assert sessions.max_sessions == DEFAULT_MAX_SESSIONS
    assert len(sessions) == 0
    assert sessions.next_expiry() is None
    assert sessions.expire(1e9) == []


@pytest.mark.parametrize(
    ("option", "value"), [("idle_timeout", 0), ("idle_timeout", -1), ("max_sessions", 0)]
)
def test_bad_options(option: str, value: float) -> None:
    options: dict[str, Any] = {option: value}
    with pytest.raises(UsageError, match=option):
        SessionTable(**options)


def test_new_then_seen() -> None:
    sessions, ended = table(idle_timeout=10)
    session, new = sessions.seen("a", 1.0, state_for)
    assert new
    assert (session.peer, session.state, session.created, session.last_seen, session.datagrams) == (
        "a",
        "state of a",
        1.0,
        1.0,
        1,
    )
    again, new = sessions.seen("a", 3.0, lambda peer: pytest.fail("the factory runs once per session"))
    assert not new
    assert again is session
    assert (session.created, session.last_seen, session.datagrams) == (1.0, 3.0, 2)
    assert "a" in sessions
    assert sessions.get("a") is session
    assert sessions.get("b") is None
    assert sessions.stats.created == 1
    assert ended.calls == []


def test_expiry_order_and_next_expiry() -> None:
    sessions, ended = table(idle_timeout=10)
    sessions.seen("a", 0.0, state_for)
    sessions.seen("b", 1.0, state_for)
    sessions.seen("c", 2.0, state_for)
    sessions.seen("a", 3.0, state_for)  # a is now the most recently active
    assert sessions.next_expiry() == 11.0  # b's
    assert [s.peer for s in sessions] == ["b", "c", "a"]
    assert sessions.expire(10.999) == []
    gone = sessions.expire(12.0)  # idle for exactly the timeout counts as expired
    assert [s.peer for s in gone] == ["b", "c"]
    assert ended.calls == [("b", "idle"), ("c", "idle")]
    assert sessions.next_expiry() == 13.0
    assert [s.peer for s in sessions.expire(100)] == ["a"]
    assert sessions.next_expiry() is None
    assert sessions.stats.expired == 3
    assert len(sessions) == 0


def test_touch_counts_as_activity() -> None:
    sessions, _ended = table(idle_timeout=10)
    sessions.seen("a", 0.0, state_for)
    sessions.seen("b", 1.0, state_for)
    sessions.touch("a", 5.0)
    sessions.touch("nobody", 5.0)  # unknown peers are ignored
    assert "nobody" not in sessions
    assert sessions.get("a").datagrams == 1  # type: ignore[union-attr]  # a touch is not a datagram
    assert [s.peer for s in sessions.expire(14.0)] == ["b"]
    assert list(s.peer for s in sessions) == ["a"]


def test_eviction_of_the_least_recently_active() -> None:
    sessions, ended = table(idle_timeout=100, max_sessions=3)
    for t, peer in enumerate("abc"):
        sessions.seen(peer, float(t), state_for)
    sessions.seen("a", 3.0, state_for)  # order now b, c, a
    _d, new = sessions.seen("d", 4.0, state_for)
    assert new
    assert ended.calls == [("b", "evicted")]
    assert [s.peer for s in sessions] == ["c", "a", "d"]
    sessions.seen("e", 5.0, state_for)
    assert ended.calls == [("b", "evicted"), ("c", "evicted")]
    assert sessions.stats.evicted == 2
    assert sessions.stats.created == 5
    assert len(sessions) == 3


def test_max_one_session() -> None:
    sessions, ended = table(max_sessions=1)
    for t, peer in enumerate("abab"):
        _s, new = sessions.seen(peer, float(t), state_for)
        assert new
    assert [s.peer for s in sessions] == ["b"]
    assert ended.calls == [("a", "evicted"), ("b", "evicted"), ("a", "evicted")]


def test_remove_and_clear() -> None:
    sessions, ended = table()
    for peer in "abc":
        sessions.seen(peer, 0.0, state_for)
    removed = sessions.remove("b")
    assert removed is not None and removed.peer == "b"
    assert sessions.remove("b") is None
    sessions.clear()
    assert len(sessions) == 0
    assert ended.calls == [("b", "removed"), ("a", "removed"), ("c", "removed")]
    assert sessions.stats.expired == sessions.stats.evicted == 0


def test_iteration_is_a_snapshot() -> None:
    sessions, _ended = table()
    for peer in "abc":
        sessions.seen(peer, 0.0, state_for)
    for session in sessions:  # removing while iterating is allowed
        sessions.remove(session.peer)
    assert len(sessions) == 0


def test_on_end_may_look_at_the_table() -> None:
    """The ended session is already out of the table when ``on_end`` runs."""
    seen_inside: list[bool] = []
    sessions: SessionTable[str, None] = SessionTable(
        idle_timeout=1, max_sessions=1, on_end=lambda s, _r: seen_inside.append(s.peer in sessions)
    )
    sessions.seen("a", 0.0, lambda _p: None)
    sessions.seen("b", 0.5, lambda _p: None)  # evicts a
    sessions.expire(10.0)  # expires b
    sessions.seen("c", 10.0, lambda _p: None)
    sessions.remove("c")
    assert seen_inside == [False, False, False]


# --- against a model ------------------------------------------------------------------------------

PEERS = st.sampled_from(["p0", "p1", "p2", "p3", "p4", "p5"])


class SessionTableMachine(RuleBasedStateMachine):
    """Random sequences of datagrams, touches, expiries and removals, against a plain model:
    a dict peer → last activity, ordered by when that activity happened."""

    @initialize(idle=st.floats(0.5, 20), max_sessions=st.integers(1, 5))
    def start(self, idle: float, max_sessions: int) -> None:
        self.ended: list[tuple[str, str]] = []
        self.table: SessionTable[str, list[str]] = SessionTable(
            idle_timeout=idle,
            max_sessions=max_sessions,
            on_end=lambda s, reason: self.ended.append((s.peer, reason)),
        )
        self.idle = idle
        self.max = max_sessions
        self.now = 0.0
        self.model: dict[str, float] = {}  # insertion order = least recently active first
        self.expected_ends: list[tuple[str, str]] = []
        self.counts: dict[str, int] = {}
        self.created = self.expired = self.evicted = 0

    @rule(step=st.floats(0, 10))
    def time_passes(self, step: float) -> None:
        self.now += step

    @rule(peer=PEERS)
    def datagram(self, peer: str) -> None:
        session, new = self.table.seen(peer, self.now, lambda p: [p])
        assert new == (peer not in self.model)
        if new:
            if len(self.model) >= self.max:
                oldest = next(iter(self.model))
                del self.model[oldest]
                self.expected_ends.append((oldest, "evicted"))
                self.evicted += 1
            self.created += 1
            self.counts[peer] = 0
        else:
            del self.model[peer]
        self.model[peer] = self.now
        self.counts[peer] += 1
        assert session.state == [peer]
        assert session.datagrams == self.counts[peer]

    @rule(peer=PEERS)
    def touch(self, peer: str) -> None:
        self.table.touch(peer, self.now)
        if peer in self.model:
            del self.model[peer]
            self.model[peer] = self.now

    @rule()
    def expire(self) -> None:
        gone = [s.peer for s in self.table.expire(self.now)]
        expected = [p for p, last in self.model.items() if self.now >= last + self.idle]
        assert gone == expected
        for peer in expected:
            del self.model[peer]
            self.expected_ends.append((peer, "idle"))
        self.expired += len(expected)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        peer = data.draw(st.sampled_from(sorted(self.model)))
        assert self.table.remove(peer) is not None
        del self.model[peer]
        self.expected_ends.append((peer, "removed"))

    @invariant()
    def agrees_with_the_model(self) -> None:
        assert [s.peer for s in self.table] == list(self.model)
        assert [s.last_seen for s in self.table] == list(self.model.values())
        assert len(self.table) <= self.max
        expiry = self.table.next_expiry()
        if self.model:
            assert expiry == next(iter(self.model.values())) + self.idle
        else:
            assert expiry is None
        assert self.ended == self.expected_ends
        stats = self.table.stats
        assert (stats.created, stats.expired, stats.evicted) == (self.created, self.expired, self.evicted)


SessionTableMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_session_table_against_a_model = SessionTableMachine.TestCase


@given(
    events=st.lists(st.tuples(PEERS, st.floats(0, 5)), max_size=60),
    idle=st.floats(0.1, 10),
)
def test_no_session_outlives_its_timeout(events: list[tuple[str, float]], idle: float) -> None:
    """Expiring at any time leaves only sessions active within the timeout, and every
    session ends exactly once however it ends."""
    ended: list[str] = []
    sessions: SessionTable[str, None] = SessionTable(
        idle_timeout=idle, max_sessions=3, on_end=lambda s, _r: ended.append(s.peer)
    )
    now = 0.0
    for peer, step in events:
        now += step
        sessions.expire(now)
        sessions.seen(peer, now, lambda _p: None)
        assert all(now < s.last_seen + idle for s in sessions)
    sessions.clear()
    assert len(ended) == sessions.stats.created


@given(
    times=st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=5),
    idle=st.floats(0.001, 1e4, allow_nan=False),
)
def test_expire_at_next_expiry_ends_the_oldest(times: list[float], idle: float) -> None:
    """A server sleeps until ``next_expiry()`` and then calls ``expire``: that must end the
    session it woke up for (else it would wake again at once, and again: a spin)."""
    sessions: SessionTable[int, None] = SessionTable(idle_timeout=idle)
    for peer, t in enumerate(sorted(times)):
        sessions.seen(peer, t, lambda _p: None)
    deadline = sessions.next_expiry()
    assert deadline is not None
    gone = sessions.expire(deadline)
    assert [s.peer for s in gone][:1] == [0]

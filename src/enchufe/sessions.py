"""Per-peer sessions over one datagram socket, with no I/O: who is new, who idled out, who goes.

A datagram socket has no connections; servers that want them (a relay that needs one upstream
socket per client, a chat room that needs to know who is in) keep a session per sender
address.  :class:`SessionTable` is that bookkeeping: the caller says "a datagram came from
PEER at time NOW" and the table answers with the peer's session, creating it if new and
evicting the least recently active one when full; :meth:`SessionTable.expire` hands back the
sessions idle for longer than the timeout.  Time is passed in, never read, so the logic is
tested without sleeping and works the same under any event loop.

Every operation is O(1) (amortised): sessions are kept in order of last activity.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from . import _ranges

__all__ = ["DEFAULT_IDLE_TIMEOUT", "DEFAULT_MAX_SESSIONS", "Session", "SessionStats", "SessionTable"]

#: A datagram peer is gone after a minute of silence, as socat's and most NAT tables' UDP
#: timeouts assume; long enough for a chatty protocol's pauses, short enough to free memory.
DEFAULT_IDLE_TIMEOUT = 60.0

#: Sessions one socket keeps at once before the least recently active is evicted: bounds
#: memory (and upstream sockets in a relay) whatever number of senders shows up.
DEFAULT_MAX_SESSIONS = 1024

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass
class Session(Generic[K, T]):
    """One peer's session: its address, the caller's state, and activity times."""

    peer: K
    state: T
    created: float
    last_seen: float
    datagrams: int = 0
    #: A datagram server with ``accept_proxy``: the client the PROXY header of the peer's first
    #: datagram named (``peer`` is then the proxy's socket, where replies go); else ``None``.
    client: K | None = None

    @property
    def name(self) -> K:
        """Whom the session is for: its :attr:`client`, else its peer."""
        return self.peer if self.client is None else self.client


@dataclass
class SessionStats:
    created: int = 0
    expired: int = 0
    evicted: int = 0


@dataclass
class SessionTable(Generic[K, T]):
    """Sessions keyed by peer address, least recently active first.

    ``on_end(session, reason)`` is called for every session that ends through the table
    (``"idle"``, ``"evicted"`` or ``"removed"``), so the caller can close what it holds.
    """

    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_sessions: int = DEFAULT_MAX_SESSIONS
    on_end: Callable[[Session[K, T], str], None] | None = None
    stats: SessionStats = field(default_factory=SessionStats)
    _sessions: OrderedDict[K, Session[K, T]] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.idle_timeout = _ranges.seconds(self.idle_timeout, "idle_timeout", positive=True) or 0.0
        self.max_sessions = _ranges.integer(self.max_sessions, "max_sessions", 1)

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, peer: object) -> bool:
        return peer in self._sessions

    def __iter__(self) -> Iterator[Session[K, T]]:
        return iter(list(self._sessions.values()))

    def get(self, peer: K) -> Session[K, T] | None:
        return self._sessions.get(peer)

    def seen(self, peer: K, now: float, factory: Callable[[K], T]) -> tuple[Session[K, T], bool]:
        """Record a datagram from ``peer``: its session (created with ``factory`` if new), and
        whether it is new.  A new session in a full table evicts the least recently active."""
        session = self._sessions.get(peer)
        if session is not None:
            session.last_seen = now
            session.datagrams += 1
            self._sessions.move_to_end(peer)
            return session, False
        while len(self._sessions) >= self.max_sessions:
            _peer, oldest = self._sessions.popitem(last=False)
            self.stats.evicted += 1
            self._ended(oldest, "evicted")
        session = Session(peer, factory(peer), created=now, last_seen=now, datagrams=1)
        self._sessions[peer] = session
        self.stats.created += 1
        return session, True

    def touch(self, peer: K, now: float) -> None:
        """Count activity that is not a datagram from the peer (e.g. a reply sent to it)."""
        session = self._sessions.get(peer)
        if session is not None:
            session.last_seen = now
            self._sessions.move_to_end(peer)

    def expire(self, now: float) -> list[Session[K, T]]:
        """Remove and return the sessions idle for ``idle_timeout`` or more."""
        gone: list[Session[K, T]] = []
        while self._sessions:
            peer, oldest = next(iter(self._sessions.items()))
            # Compared as next_expiry() computes it: with ``now - last_seen < idle_timeout``
            # float rounding can keep a session alive at its own deadline, and a loop that
            # sleeps until next_expiry() would wake, expire nothing and wake again at once.
            if now < oldest.last_seen + self.idle_timeout:
                break
            del self._sessions[peer]
            self.stats.expired += 1
            gone.append(oldest)
            self._ended(oldest, "idle")
        return gone

    def next_expiry(self) -> float | None:
        """When the least recently active session will idle out (``None`` if there is none)."""
        for oldest in self._sessions.values():
            return oldest.last_seen + self.idle_timeout
        return None

    def remove(self, peer: K) -> Session[K, T] | None:
        session = self._sessions.pop(peer, None)
        if session is not None:
            self._ended(session, "removed")
        return session

    def clear(self) -> None:
        for peer in list(self._sessions):
            self.remove(peer)

    def _ended(self, session: Session[K, T], reason: str) -> None:
        if self.on_end is not None:
            self.on_end(session, reason)

"""A datagram listener with a session per sender: what every datagram relay shares.

A datagram listener has no connections, so the relay keeps one session per sender address in a
:class:`~enchufe.sessions.SessionTable`: the first datagram from a sender opens its upstream
(:meth:`DatagramListener._open`, the relay's own), later ones reuse it, and whatever comes back
goes to that session's sender only (:class:`~enchufe.relay.datagram_replies.Replies`).  Sessions
end after the idle timeout without a datagram either way, when ``max_sessions`` are open and a new
sender evicts the least recently active one, or from inside (:meth:`DatagramListener.end`); each
end is counted and told as a ``close`` event.

Reading the listener is a loop (:meth:`DatagramListener._receive`) with a policy: how many
datagrams per readiness event (:class:`~enchufe.relay.datagram_io.ReadMode`), and whether the
relay takes them one by one (:meth:`DatagramListener._forward`) or, in a batch, as runs of one
session's datagrams of one size (:meth:`DatagramListener._forward_runs`, for UDP GSO).  Every
session is an :class:`~enchufe.relay.datagram_upstream.Upstream`."""

from __future__ import annotations

import contextlib
import itertools
import socket
import time
from collections.abc import Callable
from typing import Any, ClassVar

from .. import _calls, _nonblocking, trace
from .._buffer import DEFAULT_MAX_DATAGRAM
from .._text import printable
from ..address import from_sockaddr
from ..errors import translate
from ..i18n import N_, _
from ..sessions import Session, SessionTable
from .datagram_io import (
    BATCH,
    BATCH_BYTES,
    GSO_BYTES,
    GSO_SEGMENTS,
    ReadMode,
    enlarge_buffers,
    traced_recvfrom,
    transient_or_raise,
)
from .datagram_replies import Replies
from .datagram_upstream import Key, Upstream
from .engine import ERROR, FAILED, READ, WRITE, Loop, Timer
from .events import EventSink
from .stats import Stats
from .targets import TargetResolver

__all__ = [
    "LISTENER_PAUSE",
    "DatagramListener",
    "Key",
    "Upstream",
    "describe_sender",
    "existing_only",
    "transient_or_raise",
]

#: When the listener's handler raises (a receive error that is not transient, or a bug), the
#: listener rests this long before reading again: an error on every turn must not spin.
LISTENER_PAUSE = 0.1


#: A run of one session's datagrams read in a batch: [session, data, segment size, count].
Run = list[Any]

#: How the listener is read: ``recv(buffer, 0, MSG_TRUNC)`` → (real size, sender's sockaddr).
Receiver = Callable[[memoryview, int, int], tuple[int, Any]]


def describe_sender(family: int, sockaddr: Any) -> str:
    found = from_sockaddr(family, socket.SOCK_DGRAM, sockaddr) if sockaddr else None
    # The sender chose its name (a unixgram path or abstract name): escaped where labels are
    # made, so that no event message can carry a line break or a terminal escape.
    return printable(str(found)) if found is not None else "unixgram:(unnamed)"


class DatagramListener:
    """A datagram listener with a session per sender (see the module).  Subclasses open the
    sessions (:meth:`_open`) and carry their datagrams (:meth:`_forward`, :meth:`_forward_runs`)."""

    kind = "datagram"
    #: a batch of more datagrams than this is passed on as runs (:meth:`_forward_runs`), a
    #: smaller one datagram by datagram (:meth:`_forward`); the default: never as runs
    runs_above: ClassVar[int] = BATCH

    def __init__(
        self,
        loop: Loop,
        listener: socket.socket,
        resolver: TargetResolver,
        *,
        stats: Stats,
        events: EventSink,
        max_sessions: int,
        idle_timeout: float,
        max_datagram: int = DEFAULT_MAX_DATAGRAM,
        connect_timeout: float = 10.0,
        on_listener_closed: Callable[[], None] | None = None,
    ) -> None:
        self.loop = loop
        self.listener = listener
        self.resolver = resolver
        self.target_label = str(resolver.address)
        self.stats = stats
        self.events = events
        self.max_datagram = max_datagram
        self.connect_timeout = connect_timeout
        self.table: SessionTable[Key, Upstream] = SessionTable(
            idle_timeout=idle_timeout, max_sessions=max_sessions, on_end=self._ended
        )
        self.finished = False
        self.failed = False
        self._buffer = memoryview(bytearray(max_datagram))
        self._read_mode = ReadMode()
        #: how to read the listener, by whether tracing is off: narrated, or its own method
        self._receivers = (traced_recvfrom(listener), listener.recvfrom_into)
        self._ids = itertools.count(1)
        self._on_listener_closed = on_listener_closed
        self._accepting = False
        self._listener_mask = 0
        #: upstreams whose datagrams wait (EAGAIN): the listener is not read meanwhile
        self.blocked: set[Upstream] = set()
        self.replies = Replies(
            loop,
            listener,
            stats,
            error=self._error,
            on_sent=lambda session: session.resume(self),
            on_change=self._listen_for,
        )
        self._expiry: Timer | None = None
        #: why a session is being ended from inside (the table only knows "removed")
        self._reasons: dict[int, tuple[str, str | None]] = {}

    @property
    def sessions(self) -> SessionTable[Key, Upstream]:
        return self.table

    # -- the listener

    def start(self) -> None:
        self.listener.setblocking(False)
        enlarge_buffers(self.listener)
        self._listener_mask = READ
        self.loop.register(self.listener.fileno(), READ, self._listener_handler(), self._listener_failed)
        self._accepting = True

    def _listener_handler(self) -> Callable[[int], None]:
        """What handles the listener's readiness (hook: the compiled path's, see datagram)."""
        return self._on_listener

    def _listener_failed(self, exc: Exception) -> str:
        """The listener's handler raised (the engine reports it): rest the listener a moment,
        then serve on."""
        if not self._accepting:
            return _("the listener was already closed")
        self._listener_mask = 0
        self.loop.modify(self.listener.fileno(), 0)
        self.loop.call_later(LISTENER_PAUSE, self._listen_for)
        return _("the listener rests {seconds} s").format(seconds=f"{LISTENER_PAUSE:g}")

    def _session_failed(self, session: Upstream, exc: Exception) -> str:
        """A handler or timer of one session raised (the engine reports it): end that session."""
        self.stats.cut += 1
        self.end(session, "error", type(exc).__name__)
        return _("closed session #{id} {peer}").format(id=session.id, peer=session.label)

    def _listen_for(self) -> None:
        mask = (0 if self.blocked else READ) | (WRITE if self.replies.wants_writable() else 0)
        if mask != self._listener_mask and self._accepting:
            self._listener_mask = mask
            self.loop.modify(self.listener.fileno(), mask)

    def _on_listener(self, events: int) -> None:
        if events & FAILED:
            with contextlib.suppress(OSError):
                _nonblocking.socket_error(self.listener)  # clear it: nothing is lost on a listener
        if events & (WRITE | ERROR) and self.replies.waiting:
            self.replies.flush()
        if events & (READ | ERROR) and not self.blocked:
            self._receive()
        self._listen_for()

    def _entry_for(self, sender: Any, now: float) -> Session[Key, Upstream] | None:
        """The sender's session entry (opened if new, LRU order updated, its datagram counted);
        None if it cannot be opened (counted and reported)."""
        key = sender or None
        table = self.table
        entry = table.get(key)
        if entry is not None:
            table.seen(key, now, existing_only)
            return entry
        try:
            session = self._open(key)
        except OSError as exc:
            self.stats.dropped += 1
            self.stats.failed += 1
            who = describe_sender(self.listener.family, sender)
            error = translate(exc, f"connect to {self.target_label}")
            self._error(
                _("cannot open a session for {peer}: {error}").format(peer=who, error=error), peer=who
            )
            return None
        entry, _new = table.seen(key, now, _Factory(session))
        self._arm_expiry()
        return entry

    def _receive(self) -> None:
        """Read a batch from the listener, as many datagrams as the read mode says, and pass
        them on.  One by one (:meth:`_receive_each`), unless the relay takes runs and more than
        one may come (:attr:`runs_above`): then as runs (:meth:`_receive_runs`).  The policy is
        decided once per batch."""
        mode = self._read_mode
        reads = mode.limit()
        raw = not trace.enabled()
        recv = self._receivers[raw]
        if reads > self.runs_above:
            got = self._receive_runs(recv, reads)
        else:
            got = self._receive_each(recv, reads, raw)
        mode.got(got, reads)

    def _receive_each(self, recv: Receiver, reads: int, raw: bool) -> int:
        """Up to ``reads`` datagrams, each passed on straight from the receive buffer
        (:meth:`_forward`); how many were read."""
        view = self._buffer
        limit = len(view)
        now = time.monotonic()
        got = 0
        for _turn in range(reads):
            try:
                size, sender = recv(view, 0, _MSG_TRUNC)
            except BlockingIOError:
                break
            except OSError as exc:
                transient_or_raise(exc)
                continue
            got += 1
            if size > limit:
                self._truncated(describe_sender(self.listener.family, sender), size, "client")
                continue
            self._received(sender, view[:size], now, raw)
        return got

    def _received(self, sender: Any, data: memoryview, now: float, raw: bool) -> None:
        """One whole datagram of :meth:`_receive_each`: to its sender's session (opened if new)."""
        entry = self._entry_for(sender, now)
        if entry is not None:
            self._forward(entry.state, data, raw)

    def _receive_runs(self, recv: Receiver, reads: int) -> int:
        """Up to ``reads`` datagrams (and :data:`BATCH_BYTES`), gathered into runs: one
        session's consecutive non-empty datagrams of one size (the last may be shorter), passed
        on once the batch is read (:meth:`_forward_runs`); how many were read.

        Per datagram this loop calls nothing of its own but the session lookup, and not even
        that for the sender of the datagram before: nothing touches the table between the two
        (the runs go after the batch), so its entry is the most recent already, seen at the
        same time; only its datagram is counted."""
        view = self._buffer
        limit = len(view)
        now = time.monotonic()
        runs: list[Run] = []
        run: Run = _NO_RUN
        grows: Upstream | None = None  # the session whose last run may take the next datagram
        held = got = 0
        last: Any = _NOBODY  # the sender of the datagram before, whose entry is ``entry``
        entry: Session[Key, Upstream] | None = None
        for _turn in range(reads):
            try:
                size, sender = recv(view, 0, _MSG_TRUNC)
            except BlockingIOError:
                break
            except OSError as exc:
                transient_or_raise(exc)
                continue
            got += 1
            if size > limit:
                self._truncated(describe_sender(self.listener.family, sender), size, "client")
                continue
            if sender == last:
                entry.datagrams += 1  # type: ignore[union-attr]  # set with last
            else:
                entry = self._entry_for(sender, now)
                if entry is None:
                    last = _NOBODY
                    continue
                last = sender
            session = entry.state  # type: ignore[union-attr]  # set with last
            if (
                session is grows
                and 0 < size <= run[2]
                and run[3] < GSO_SEGMENTS
                and len(run[1]) + size <= GSO_BYTES
            ):
                run[1] += view[:size]
                run[3] += 1
                grows = session if size == run[2] else None  # a shorter datagram ends its run
            else:
                run = [session, bytearray(view[:size]), size, 1]
                runs.append(run)
                grows = session if session.gso else None
            held += size
            if held >= BATCH_BYTES:
                break
        if runs:
            self._forward_runs(runs)
        return got

    def _truncated(self, who: str, size: int, side: str) -> None:
        self.stats.truncated += 1
        self.events.notice(
            N_("oversized datagrams"),
            "truncated",
            _(
                "enchufe: dropped a datagram of {size} bytes from {peer}: larger than --max-datagram {limit}"
            ).format(size=size, peer=who, limit=self.max_datagram),
            peer=who,
            size=size,
            side=side,
            max_datagram=self.max_datagram,
        )

    def _error(self, message: str, **fields: Any) -> None:
        # A notice: datagrams come in floods, so their errors are rate-limited (and counted).
        self.events.notice(
            N_("datagram errors"),
            "error",
            f"enchufe: {message}",
            error=message,
            target=self.target_label,
            **fields,
        )

    # -- sessions

    def _open(self, key: Key) -> Upstream:
        raise NotImplementedError

    def _forward(self, session: Upstream, data: memoryview, raw: bool) -> None:
        """Pass a client's datagram on (``data`` is the receive buffer: copy what is kept; ``raw``:
        tracing is off, the socket may be called directly).  An upstream that cannot take it now
        keeps it and adds the session to :attr:`blocked`: the listener is not read until the
        upstream takes it."""
        raise NotImplementedError

    def _forward_runs(self, runs: list[Run]) -> None:
        """Pass on the runs of a batch, in order (only for a relay whose :attr:`runs_above` is
        below :data:`~enchufe.relay.datagram_io.BATCH`)."""
        raise NotImplementedError

    def _announce(self, session: Upstream) -> None:
        self.stats.total += 1
        self.stats.open += 1
        if self.events.wants(1):
            named, route = self._routed()
            said = _("new session #{id} for {peer} → {target}")
            self.events(
                "session",
                said.format(id=session.id, peer=session.label, target=named),
                level=1,
                id=session.id,
                peer=session.label,
                target=self.target_label,
                **route,
            )

    def _routed(self) -> tuple[str, dict[str, str]]:
        """The target as session lines name it, and the route's event fields (hook: --via)."""
        return self.target_label, {}

    def _arm_expiry(self) -> None:
        if self._expiry is None:
            when = self.table.next_expiry()
            if when is not None:
                self._expiry = self.loop.call_later(max(0.0, when - time.monotonic()), self._expire)

    def _expire(self) -> None:
        self._expiry = None
        self.table.expire(time.monotonic())
        self._arm_expiry()

    def current(self, session: Upstream) -> bool:
        """Whether ``session`` is still open."""
        entry = self.table.get(session.peer)
        return entry is not None and entry.state is session

    def end(self, session: Upstream, reason: str, error: str | None = None) -> None:
        """End a session from inside (its upstream failed or closed)."""
        if self.current(session):
            self._reasons[id(session)] = (reason, error)
            self.table.remove(session.peer)

    def _ended(self, entry: Session[Key, Upstream], why: str) -> None:
        session = entry.state
        reason, error = self._reasons.pop(id(session), (why, None))
        if why == "idle":
            self.stats.expired += 1
        elif why == "evicted":
            self.stats.evicted += 1
        # Replies (and datagrams for the target) still waiting are lost with the session: a
        # summary that says "0 dropped" then would be wrong.
        self.stats.dropped += session.undelivered()
        session.close(self.loop)
        if session in self.blocked:
            self.blocked.discard(session)
            self._listen_for()
        self.replies.forget(session)
        self.stats.open -= 1
        if self.events.wants(1):
            self._tell_closed(session, reason, error)

    def _tell_closed(self, session: Upstream, reason: str, error: str | None) -> None:
        seconds = time.monotonic() - session.started
        why_text = f" ({reason}: {error})" if error else f" ({reason})"
        self.events(
            "close",
            _(
                "closed session #{id} {peer}: {datagrams_to_target} datagrams ({to_target} bytes) to "
                "target, {datagrams_to_client} ({to_client} bytes) to client in {seconds} s{why}"
            ).format(
                id=session.id,
                peer=session.label,
                datagrams_to_target=session.datagrams_to_target,
                to_target=session.to_target,
                datagrams_to_client=session.datagrams_to_client,
                to_client=session.to_client,
                seconds=f"{seconds:.3f}",
                why=why_text,
            ),
            level=1,
            id=session.id,
            peer=session.label,
            reason=reason,
            to_target=session.to_target,
            to_client=session.to_client,
            datagrams_to_target=session.datagrams_to_target,
            datagrams_to_client=session.datagrams_to_client,
            seconds=round(seconds, 6),
            **({"error": error} if error else {}),
        )

    # -- stopping

    def stop_accepting(self) -> None:
        """Stop: close the listener and every session (nothing is in flight to drain)."""
        if not self._accepting:
            return
        self._accepting = False
        self.loop.forget(self.listener.fileno())
        with contextlib.suppress(OSError):
            _calls.close(self.listener)
        for entry in list(self.table):
            self._reasons[id(entry.state)] = ("shutdown", None)
        self.table.clear()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.replies.close()
        if self._on_listener_closed is not None:
            self._on_listener_closed()

    def abort_all(self, reason: str) -> int:
        count = len(self.table)
        for entry in list(self.table):
            self._reasons[id(entry.state)] = (reason, None)
        self.table.clear()
        return count

    def close(self) -> None:
        self.stop_accepting()


#: No run yet (never grows: no session is ``grows`` then).
_NO_RUN: Run = [None, bytearray(), 0, 0]

#: No sender before (equal to no sender's address).
_NOBODY = object()

_MSG_TRUNC = socket.MSG_TRUNC


def existing_only(_key: Key) -> Upstream:
    """The SessionTable factory for a sender whose session exists (never called)."""
    raise AssertionError("the session exists")


class _Factory:
    """A SessionTable factory handing over a session made beforehand (so that a failure to open
    it leaves the table untouched)."""

    __slots__ = ("session",)

    def __init__(self, session: Upstream) -> None:
        self.session = session

    def __call__(self, _key: Key) -> Upstream:
        return self.session

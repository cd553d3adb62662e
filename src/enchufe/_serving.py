"""What the sync and async serve loops share, with no I/O: every decision they make.

The two servers (:mod:`enchufe.sync.serve` with threads, :mod:`enchufe.aio.serve` with tasks)
differ only in how they wait: for a client, a datagram, a handler, room in a peer's queue.
What they do with what they get is here: the statistics, the log lines, the pause when
descriptors run out, the refusals at the limit, what a handler's end counts as, the per-peer
sessions of a datagram server and the patience granted to a unix peer that does not read.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from . import _ranges
from ._backoff import Backoff
from ._notices import notices
from ._proxypolicy import ProxyPolicy, datagram_header
from ._text import one_line, printable
from .address import Address, InetAddress, SocketAddress, UnixAddress, parse
from .errors import ClosedError, DatagramTruncated, EnchufeError, NetworkError, TimedOut, UsageError
from .i18n import N_, _
from .proxyproto import ProxyHeader
from .sessions import DEFAULT_IDLE_TIMEOUT, Session, SessionTable

log = logging.getLogger("enchufe.serve")

#: Connections one server handles at once unless told otherwise.  Beyond it, new clients are
#: closed at once (and counted) rather than queued: a client that waits silently looks hung.
DEFAULT_MAX_CONNECTIONS = 1024

#: How long to leave handlers to finish after a shutdown request, unless told otherwise.
DEFAULT_DRAIN_TIMEOUT = 10.0

#: After accept() fails for lack of descriptors or memory, pause before trying again, doubling
#: up to the maximum: the listener stays readable, so retrying at once would spin the CPU.
EXHAUSTION_PAUSE = 0.05
EXHAUSTION_PAUSE_MAX = 1.0

#: How long a datagram server waits for a unix peer whose queue is full before dropping the
#: datagram (as UDP would have dropped it).  A peer that makes us wait this long in vain has
#: stopped reading: until it takes a datagram again, the next ones for it are dropped at once,
#: so it costs the server one such wait, not one per datagram.
DELIVER_PATIENCE = 1.0

#: One unix peer may make a server wait for room in its queue at most :data:`DELIVER_PATIENCE`
#: per this many seconds, waits that ended with room included: a peer that lets its queue fill
#: and takes one datagram just before the patience runs out, again and again, would otherwise
#: hold every other peer's replies up for as long as it likes.
PATIENCE_WINDOW = 10.0

#: Peers remembered as not reading, per socket, before the memory is cleared.
MAX_STALLED_PEERS = 4096

_EXHAUSTION = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def is_exhaustion(exc: NetworkError) -> bool:
    """accept() failed because the process or system ran out of descriptors or memory."""
    return exc.errno in _EXHAUSTION


class StalledPeers:
    """The unix peers of one datagram socket that made a server wait in vain for room in their
    queue (see :data:`DELIVER_PATIENCE`): ``peer in stalled`` until they take a datagram again.

    At most :data:`MAX_STALLED_PEERS` are remembered; past that the memory is cleared, so a
    server that many peers stall stays small, and a peer forgotten costs one more wait.
    """

    __slots__ = ("_peers", "_waits")

    def __init__(self) -> None:
        self._peers: set[SocketAddress] = set()
        #: peer → [when its current PATIENCE_WINDOW began, seconds waited for it in it]
        self._waits: dict[SocketAddress, list[float]] = {}

    def patience(self, peer: SocketAddress, now: float) -> float:
        """How long ``peer``'s full queue may be waited for now: what is left of its
        :data:`DELIVER_PATIENCE` in its current :data:`PATIENCE_WINDOW` (0: drop at once)."""
        window = self._waits.get(peer)
        if window is None or now - window[0] >= PATIENCE_WINDOW:
            return DELIVER_PATIENCE
        return max(0.0, DELIVER_PATIENCE - window[1])

    def waited(self, peer: SocketAddress, started: float, seconds: float) -> None:
        """Count a wait for room in ``peer``'s queue that began at ``started``, whether it ended
        with room or in vain."""
        window = self._waits.get(peer)
        if window is None or started - window[0] >= PATIENCE_WINDOW:
            if len(self._waits) >= MAX_STALLED_PEERS:
                self._waits.clear()
            self._waits[peer] = [started, seconds]
        else:
            window[1] += seconds

    def allowance(self, peer: SocketAddress, now: float) -> float:
        """After a first attempt found ``peer``'s queue full: how long to wait for room now
        (0: drop the datagram at once, as UDP would have dropped it).  A peer that already
        made us wait in vain gets none until it reads again; others get their :meth:`patience`."""
        return 0.0 if peer in self._peers else self.patience(peer, now)

    def __contains__(self, peer: SocketAddress) -> bool:
        return peer in self._peers

    def __len__(self) -> int:
        return len(self._peers)

    def recovered(self, peer: SocketAddress) -> None:
        """``peer`` took a datagram: the next ones for it wait for room again."""
        self._peers.discard(peer)

    def gave_up(self, peer: SocketAddress) -> None:
        """``peer`` made us wait :data:`DELIVER_PATIENCE` in vain: drop its next datagrams at once."""
        if len(self._peers) >= MAX_STALLED_PEERS:
            self._peers.clear()
        self._peers.add(peer)

    def waiting(self, peer: SocketAddress) -> RoomWait:
        """``with stalled.waiting(peer) as wait:`` around a wait for room in ``peer``'s queue
        that sets ``wait.sent``: the wait is counted however it ends, and a peer that did not
        make room in time is :meth:`gave_up` on."""
        return RoomWait(self, peer)


class RoomWait:
    """One wait for room in a unix peer's queue (see :meth:`StalledPeers.waiting`)."""

    __slots__ = ("_peer", "_stalled", "sent", "started")

    def __init__(self, stalled: StalledPeers, peer: SocketAddress) -> None:
        self._stalled = stalled
        self._peer = peer
        self.started = 0.0
        #: Whether the datagram went before the patience ran out.
        self.sent = False

    def __enter__(self) -> RoomWait:
        self.started = time.monotonic()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_rest: object) -> None:
        self._stalled.waited(self._peer, self.started, time.monotonic() - self.started)
        if exc_type is None and not self.sent:
            self._stalled.gave_up(self._peer)


def first_try(sock: Any, data: bytes, peer: SocketAddress) -> float | None:
    """Send one datagram from a server's unix socket to ``peer`` if its queue has room now:
    ``None``.  Otherwise how long to wait for room (0: drop it at once, as UDP would)."""
    stalled: StalledPeers = sock.stalled_peers
    if sock.sendto_nowait(data, peer):
        stalled.recovered(peer)
        return None
    return stalled.allowance(peer, time.monotonic())


class Refusals:
    """Says that clients were turned away for want of room, at most once per :attr:`interval`
    seconds, counting the ones not shown: each is worth a warning (nobody else would know),
    but a flood of them must not flood the log."""

    interval = 1.0

    def __init__(self) -> None:
        self._next = float("-inf")
        self._unsaid = 0

    def refused(self, peer: str, reason: str, now: float) -> None:
        if now < self._next:
            self._unsaid += 1
            return
        if self._unsaid:
            line = _("refused {peer}: {reason} (and {count} more since the last such line)")
        else:
            line = _("refused {peer}: {reason}")
        log.warning(line.format(peer=peer, reason=reason, count=self._unsaid))
        self._next = now + self.interval
        self._unsaid = 0


@dataclass
class ServeStats:
    """What a server did; ``cut`` counts connections closed by shutdown before they finished."""

    accepted: int = 0
    refused: int = 0
    active: int = 0
    completed: int = 0
    idle_closed: int = 0
    failed: int = 0
    cut: int = 0
    exhaustion_pauses: int = 0
    datagrams: int = 0
    truncated: int = 0
    #: Replies dropped because a unix peer did not read (its queue stayed full).
    dropped: int = 0


# -- the server's options and names


def server_options(
    address: Address | str, max_connections: int, idle_timeout: float | None
) -> tuple[SocketAddress, int, float | None]:
    """A server's address and limits, checked: (address, max_connections, idle_timeout)."""
    max_connections = _ranges.integer(max_connections, "max_connections", 1)
    idle_timeout = _ranges.seconds(idle_timeout, "idle_timeout", optional=True, positive=True)
    target = parse(address) if isinstance(address, str) else address
    if not isinstance(target, InetAddress | UnixAddress):
        raise UsageError(_("{address}: a server needs a socket address").format(address=target))
    return target, max_connections, idle_timeout


def bound_address(listener: Any, sock: Any) -> SocketAddress:
    """The real address of a started server: its listener's, or its datagram socket's."""
    if listener is not None:
        return listener.address  # type: ignore[no-any-return]
    if sock is not None and sock.local_address is not None:
        return sock.local_address  # type: ignore[no-any-return]
    raise UsageError(_("the server is not started"))


def shown(value: object) -> str:
    """A peer's address, or an error that names one, safe on a log line (peers choose their
    unix names: a newline there must not start a line of their own)."""
    return printable(str(value))


def message(exc: BaseException) -> str:
    """An error's message on one line (it may name a peer; names it shows escaped stay so)."""
    return one_line(str(exc))


def new_state(_peer: object) -> dict[str, Any]:
    """A datagram peer's session state: an empty dict for the handler to fill."""
    return {}


# -- accepting


class AcceptPolicy:
    """What an accept loop does besides accepting: pause when descriptors (or threads) run out,
    doubling the pause, and turn away, counted and logged, the clients beyond the limit."""

    def __init__(self, stats: ServeStats) -> None:
        self.stats = stats
        self._backoff = Backoff(EXHAUSTION_PAUSE, EXHAUSTION_PAUSE_MAX)
        self._refusals = Refusals()

    def exhausted(self, exc: NetworkError) -> float:
        """accept() failed for want of descriptors or memory (``exc`` names the listener:
        "cannot accept on ADDRESS: too many open files"): the pause to take, in seconds."""
        self.stats.exhaustion_pauses += 1
        pause = self._backoff.next()
        log.warning(_("{error}; pausing {seconds} s").format(error=message(exc), seconds=f"{pause:.2f}"))
        return pause

    def no_room(self, peer: SocketAddress | None, error: str) -> float:
        """No thread could start for a client: it is turned away, and the loop pauses (the
        handlers running end in time) rather than die or spin.  The pause, in seconds."""
        self.stats.refused += 1
        self.stats.exhaustion_pauses += 1
        pause = self._backoff.next()
        log.warning(
            _("refused {peer}: {error}; pausing {seconds} s").format(
                peer=shown(peer), error=error, seconds=f"{pause:.2f}"
            )
        )
        return pause

    def accepted(self) -> None:
        """A client came and descriptors were there: the next pause starts short again."""
        self._backoff.reset()

    def at_limit(self, peer: SocketAddress | None, limit: int) -> None:
        """A client beyond the server's ``limit`` of connections: counted, and said at most
        once a second."""
        self.stats.refused += 1
        if limit == 1:
            reason = _("the server is at its limit of 1 open connection")
        else:
            reason = _("the server is at its limit of {limit} open connections").format(limit=limit)
        self._refusals.refused(shown(peer), reason, time.monotonic())


def handler_outcome(exc: Exception, peer: SocketAddress | None, idle_timeout: float | None) -> str:
    """What a stream handler that raised ``exc`` counts as in :class:`ServeStats`
    (``idle_closed`` or ``failed``), logged; call it in the ``except`` block."""
    if isinstance(exc, TimedOut):
        log.info(
            _("closed {peer}: idle for {seconds} s").format(peer=shown(peer), seconds=f"{idle_timeout:g}")
        )
        return "idle_closed"
    if isinstance(exc, EnchufeError):
        log.info(_("connection from {peer} ended: {error}").format(peer=shown(peer), error=message(exc)))
    else:
        log.exception(_("handler failed on the connection from {peer}").format(peer=shown(peer)))
    return "failed"


def proxy_refused(exc: Exception) -> str:
    """A connection closed over its PROXY header (:class:`~enchufe._proxyaccept.ProxyRefused`,
    whose message is the line, peer escaped): logged (see :class:`~enchufe._notices.Notices`), and counted as
    ``refused``."""
    notices.say(N_("clients refused over their PROXY header"), message(exc))
    return "refused"


def reload_tls(listener: Any) -> bool:
    """Have a server's TLS ``listener`` read its certificate, key and CA files again (SIGUSR1).
    A missing or bad file is logged, and the listener keeps what it had: whether it reloaded.
    Nothing to do (``False``) without a TLS listener."""
    if listener is None or not listener.address.is_tls:
        log.info(_("SIGUSR1: nothing to reload (not a TLS server)"))
        return False
    try:
        listener.reload_tls()
    except EnchufeError as exc:
        log.warning(
            _("TLS reload on {address} failed, the current certificates stay: {error}").format(
                address=listener.address, error=message(exc)
            )
        )
        return False
    log.info(_("TLS certificates and CAs reloaded on {address}").format(address=listener.address))
    return True


C = TypeVar("C")


def handshake_outcome(
    exc: NetworkError, conn: C, on_failure: Callable[[C, NetworkError], object] | None
) -> str:
    """A TLS client's handshake failed (refused, timed out, cut): that connection ends, and only
    it; counted as ``failed``, logged with the reason, and told to the server's
    ``on_handshake_failure`` hook (whose own exception is logged).  The handler is not called."""
    peer = getattr(conn, "peer_address", None)
    # A warning, shown without -v as other refused clients are (see enchufe._notices).
    line = _("TLS handshake with {peer} failed: {error}").format(peer=shown(peer), error=message(exc))
    notices.say(N_("failed TLS handshakes"), line)
    if on_failure is not None:
        try:
            on_failure(conn, exc)
        except Exception:
            log.exception(
                _("on_handshake_failure failed for the connection from {peer}").format(peer=shown(peer))
            )
    return "failed"


# -- datagrams

S = TypeVar("S")


@dataclass
class DatagramBase(Generic[S]):
    """One datagram handed to a datagram handler: payload, sender, the sender's session.

    Behind a proxy (a server with ``accept_proxy``), ``sender`` is the client the datagram's
    PROXY header names, ``proxy_address`` the proxy it came through: replies go to the proxy
    (:attr:`reply_address`), which sends them on to the client.
    """

    data: bytes
    sender: SocketAddress | None
    socket: S
    session: Session[Any, dict[str, Any]] | None = None
    new_peer: bool = False
    #: Every peer seen within the idle timeout (the server's session table), sender included.
    #: Their ``peer`` is where a datagram to them goes (the proxy's socket behind a proxy).
    peers: SessionTable[Any, dict[str, Any]] | None = None
    #: The server's statistics: a dropped reply is counted in ``dropped``.
    stats: ServeStats | None = field(default=None, repr=False)
    #: With ``accept_proxy``: the proxy's address (the socket's sender) and the header it sent.
    proxy_address: SocketAddress | None = None
    proxy_header: ProxyHeader | None = field(default=None, repr=False)

    @property
    def reply_address(self) -> SocketAddress | None:
        """Where a reply goes: the proxy the datagram came through, else its sender."""
        return self.sender if self.proxy_header is None else self.proxy_address

    def _counted(self, delivered: bool) -> bool:
        if not delivered and self.stats is not None:
            self.stats.dropped += 1
        return delivered


D = TypeVar("D", bound=DatagramBase[Any])


def received(
    kind: type[D],
    sock: Any,
    data: bytes,
    sender: SocketAddress | None,
    sessions: SessionTable[Any, dict[str, Any]],
    stats: ServeStats,
    proxy: ProxyPolicy | None,
) -> D | None:
    """The datagram a handler gets for ``data`` from ``sender`` (counted, its session found or
    opened).  With ``proxy`` (``accept_proxy``), its PROXY header taken off and its client made
    the sender (see :class:`DatagramBase`); ``None`` when it is dropped over that header: from a
    peer that is not a trusted proxy or an unbound unix socket, or without a valid version 2
    header (counted in ``refused``, said as a warning a few times a second at most)."""
    if proxy is None:
        session, new = arrived(sessions, stats, sender)
        return kind(data, sender, sock, session, new, sessions, stats)
    header = datagram_header(proxy, sender, data)
    if header is None:  # dropped, and said
        stats.refused += 1
        return None
    session, new = arrived(sessions, stats, sender)
    if new and session is not None:
        session.client = header.source  # the session is named for its first datagram's client
    client = sender if header.source is None else header.source  # LOCAL: the proxy's own
    return kind(data[header.consumed :], client, sock, session, new, sessions, stats, sender, header)


def peer_sessions(
    idle_timeout: float | None,
    max_sessions: int,
    on_end: Callable[[Session[Any, dict[str, Any]], str], None],
) -> SessionTable[Any, dict[str, Any]]:
    """The table of a datagram server's peers: each forgotten after ``idle_timeout`` seconds of
    silence (default :data:`~enchufe.sessions.DEFAULT_IDLE_TIMEOUT`), at most ``max_sessions``."""
    return SessionTable(
        idle_timeout=idle_timeout or DEFAULT_IDLE_TIMEOUT, max_sessions=max_sessions, on_end=on_end
    )


def session_ended(
    stats: ServeStats,
    on_session_end: Callable[[Session[Any, dict[str, Any]]], None] | None,
    session: Session[Any, dict[str, Any]],
    reason: str,
) -> None:
    """A datagram peer's session ended (idle, or forgotten for room): counted, and told to
    ``on_session_end``, whose failure is logged and counted, never the server's end."""
    if reason == "idle":
        stats.idle_closed += 1
    if on_session_end is not None:
        try:
            on_session_end(session)
        except Exception:  # the caller's code, about one peer
            stats.failed += 1
            log.exception(_("on_session_end failed for {peer}").format(peer=shown(session.peer)))


def receive_failed(exc: ClosedError | NetworkError, stats: ServeStats, where: object) -> bool:
    """A datagram server's receive raised ``exc``: counted and logged; ``True`` if the loop
    ends (the socket was closed)."""
    if isinstance(exc, ClosedError):
        return True
    if isinstance(exc, DatagramTruncated):
        stats.truncated += 1
        log.warning("%s", message(exc))
    else:  # e.g. an ICMP error queued on the socket
        log.info(_("on {address}: {error}").format(address=where, error=message(exc)))
    return False


def arrived(
    sessions: SessionTable[Any, dict[str, Any]], stats: ServeStats, sender: SocketAddress | None
) -> tuple[Session[Any, dict[str, Any]] | None, bool]:
    """A datagram came from ``sender``: counted, sessions gone idle ended, and the sender's
    session (``None`` for an unbound sender) with whether it is new."""
    stats.datagrams += 1
    now = time.monotonic()
    sessions.expire(now)
    if sender is None:
        return None, False
    return sessions.seen(sender, now, new_state)


def datagram_failed(exc: Exception, sender: SocketAddress | None, stats: ServeStats, *, closed: bool) -> bool:
    """A datagram handler raised ``exc``: logged (and counted when it is not an enchufe error);
    ``True`` if the loop ends: a :class:`ClosedError` while the server's socket is ``closed``.
    Call it in the ``except`` block."""
    if isinstance(exc, ClosedError) and closed:
        return True
    if isinstance(exc, EnchufeError):
        # A ClosedError here is of something of the handler's own: that datagram's failure only.
        log.info(_("datagram from {peer}: {error}").format(peer=shown(sender), error=message(exc)))
    else:
        stats.failed += 1
        log.exception(_("handler failed on a datagram from {peer}").format(peer=shown(sender)))
    return False

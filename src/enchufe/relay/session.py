"""What every relayed client's session shares: its lifecycle, from the target's opening to its end.

::

    RelaySession(relay, client_sock, peer, id)
      ├─ _announce_accept()        the "accept" event
      ├─ _open_targets()           connect phase: each resolved address in order, a full unix
      │    _try_connect()          backlog retried with back-off, all within the connect
      │    _connected()  (hook)    timeout; _fail_target() if none answers
      ├─ _arm_idle()/_idle_check() no traffic for idle_timeout: _idle_expired() (hook)
      └─ cut() / crashed() / _end(reason, abortive=, error=, quiet=)
           _release(abortive) (hook: close the ends), stats, the relay told, the "close" event

Subclasses say what differs: :class:`~enchufe.relay.stream_session.StreamSession` (two pumps,
half-close, reset propagation; a socket, a child or stdio as the target) and
:class:`~enchufe.relay.framed.FramedStreamSession` (a stream carrying datagrams).  A datagram
flow could use the parts that apply (the idle timer, the end and its event).

A session is :data:`CONNECTING` until its target is open, :data:`OPEN` while it relays, and
:data:`CLOSED` once ended; every handler and timer does nothing once it is closed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from .. import _calls, trace
from .._backoff import Backoff
from .._calls import close, new_socket
from .._nonblocking import connect_again, connect_nonblocking, socket_error
from .._resolve import Target
from .._text import printable
from ..address import from_sockaddr
from ..errors import TimedOut, translate
from ..i18n import N_, _
from .engine import Loop, Timer
from .events import EventSink
from .stats import Stats
from .targets import TargetResolver

if TYPE_CHECKING:
    from .proxying import Proxied

__all__ = [
    "CLOSED",
    "CONNECTING",
    "OPEN",
    "Owner",
    "RelaySession",
    "describe_peer",
    "nodelay",
    "pending_error",
]

CONNECTING, OPEN, CLOSED = 0, 1, 2

#: First delay before connecting again to a unix target whose backlog is full (EAGAIN: nothing
#: was started); doubled up to :data:`MAX_RETRY_DELAY` until the connect timeout.  Slower than
#: the library's (:mod:`enchufe._backoff`): the relay's own numbers, until a measurement says
#: the library's cost no more CPU with many sessions waiting.
FIRST_RETRY_DELAY = 0.005
MAX_RETRY_DELAY = 0.2


def describe_peer(sock: socket.socket | None, peer: Any) -> str:
    """The client's address for events: ``stdio`` without a socket."""
    if sock is None:
        return "stdio"
    found = from_sockaddr(sock.family, socket.SOCK_STREAM, peer) if peer else None
    # The peer chose its name: escaped here, where event messages get it, so that a newline in
    # an abstract name never starts a forged line in anyone's log.
    return printable(str(found)) if found is not None else "unix:(unnamed)"


def pending_error(sock: socket.socket) -> int:
    """The error waiting on ``sock`` (``SO_ERROR``: a reset, a failed connect), or 0."""
    try:
        return socket_error(sock)
    except OSError as exc:
        return exc.errno or errno.EIO


def nodelay(sock: socket.socket) -> None:
    # The relay must not add latency: the endpoints decided when to send; Nagle would hold
    # back the small writes a request/response protocol makes through us.
    try:  # no contextlib.suppress, no _calls.setsockopt while quiet: once per connection
        if trace._sink is None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            _calls.setsockopt(sock, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1, "TCP_NODELAY")
    except OSError:
        pass


class Owner(Protocol):
    """What a session needs of the handler that admitted it (a listener's, or stdio's)."""

    loop: Loop
    stats: Stats
    events: EventSink
    resolver: TargetResolver | None
    target_label: str
    connect_timeout: float
    idle_timeout: float | None
    #: the relay serves this one client (stdio): a broken session is the whole run's failure
    one_client: bool
    #: a child per client (exec:): a target that fails to open is a program that failed to start
    runs_programs: bool

    def session_ended(self, session: Any, failed: bool) -> None: ...

    def one_shot_broken(self, session: Any, reason: str, error: str | None) -> None: ...


class RelaySession:
    """One client of a relay, from the opening of its target to its end (see the module)."""

    __slots__ = (
        "_connect_deadline",
        "_connect_timer",
        "_idle_timer",
        "_last_active",
        "_retry_backoff",
        "_retry_timer",
        "_target_index",
        "_targets",
        "client_sock",
        "id",
        "peer",
        "proxied",
        "relay",
        "resolver",
        "started",
        "state",
        "target_label",
        "target_sock",
        "to_client",
        "to_target",
    )

    #: what :meth:`crashed` says was done to the peers
    crash_outcome: ClassVar[str] = N_("the client reset")

    relay: Owner

    def __init__(self, relay: Owner, client_sock: socket.socket | None, peer: Any, session_id: int) -> None:
        self.relay = relay
        self.client_sock = client_sock
        self.peer = peer
        self.id = session_id
        #: --accept-proxy: the client its proxy's header named (then the peer everywhere)
        self.proxied: Proxied | None = None
        #: where this client goes: the relay's TARGET, unless a route chose another
        self.resolver = relay.resolver
        self.target_label = relay.target_label
        self.target_sock: socket.socket | None = None
        self.state = CONNECTING
        self.to_target = 0
        self.to_client = 0
        self.started = time.monotonic()
        self._last_active = self.started
        self._targets: list[Target] = []
        self._target_index = 0
        self._connect_timer: Timer | None = None
        #: when the connect phase times out (its timer is made once it has to wait)
        self._connect_deadline = 0.0
        self._retry_timer: Timer | None = None
        self._idle_timer: Timer | None = None
        self._retry_backoff: Backoff | None = None  # made on the first full backlog, rare

    def peer_label(self) -> str:
        """The client for events: behind a proxy, the one its header named."""
        if self.proxied is not None:
            return self.proxied.label
        return describe_peer(self.client_sock, self.peer)

    def _proxy_fields(self) -> dict[str, str]:
        """The proxy a client came through, for events (``proxy``: its own address)."""
        return {"proxy": self.proxied.proxy_label} if self.proxied is not None else {}

    def _announce_accept(self) -> None:
        relay = self.relay
        if relay.events.level >= 1:  # events.wants(1), inline: once per connection
            shown = self.peer_label()
            proxied = self.proxied
            if proxied is not None and proxied.peer is not None:
                line = _("accepted {peer} via {proxy} (#{id})").format(
                    peer=shown, proxy=proxied.proxy_label, id=self.id
                )
            else:
                line = _("accepted {peer} (#{id})").format(peer=shown, id=self.id)
            relay.events(
                "accept",
                line,
                level=1,
                id=self.id,
                peer=shown,
                **self._proxy_fields(),
                **self._event_fields(),
            )

    # -- the connect phase (a socket target)

    def _open_targets(self, opens_at_once: bool = False) -> None:
        """Resolve the target, then connect to its addresses in order within the timeout.

        The timer of the connect phase is made at once, or, if ``opens_at_once`` (the caller
        knows that reaching the target ends the connect phase before :meth:`_reached` returns,
        or arms the timer itself if what goes first has to wait: no tunnel), only once the phase
        has to wait (a connect in progress, a full backlog, a target not taking what goes
        first): a loopback target, which answers within connect(), then costs no timer made and
        cancelled in the same breath."""
        relay = self.relay
        assert self.resolver is not None
        try:
            self._targets = self.resolver.targets()
        except Exception as exc:  # NameResolutionError: the target's name stopped resolving
            self._fail_target(str(exc))
            return
        self._connect_deadline = time.monotonic() + relay.connect_timeout
        if not opens_at_once:
            self._arm_connect_timer()
        self._try_connect()

    def _arm_connect_timer(self) -> None:
        """The connect phase waits: its timer, due at the deadline set when it began."""
        if self._connect_timer is None:
            left = max(self._connect_deadline - time.monotonic(), 0.0)
            self._connect_timer = self.relay.loop.call_later(left, self._connect_timed_out, self.crashed)

    def _try_connect(self) -> None:
        target = self._targets[self._target_index]
        sock = self.target_sock
        if sock is None:
            try:
                sock = new_socket(target.family, socket.SOCK_STREAM, nonblocking=True)
            except OSError as exc:
                self._next_target(exc)
                return
            if target.family != socket.AF_UNIX:
                if trace._sink is None:  # nodelay(), inline while quiet: once per connection
                    try:  # noqa: SIM105  # contextlib.suppress costs three Python calls
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    except OSError:
                        pass
                else:
                    nodelay(sock)
            self.target_sock = sock
            self._target_opened(sock)
        try:
            status = self._start_connect(sock, target)
        except OSError as exc:
            self._next_target(exc)
            return
        if status == 0:
            self._reached()
            return
        if self._connect_timer is None:
            self._arm_connect_timer()
        if status == errno.EINPROGRESS:
            self._wait_connect()
        else:  # EAGAIN: a unix listener's backlog is full; nothing started, try again soon
            if self._retry_backoff is None:
                self._retry_backoff = Backoff(FIRST_RETRY_DELAY, MAX_RETRY_DELAY)
            delay = self._retry_backoff.next()
            self._retry_timer = self.relay.loop.call_later(delay, self._try_connect, self.crashed)

    @staticmethod
    def _start_connect(sock: socket.socket, target: Target) -> int:
        """0 (connected), EINPROGRESS or EAGAIN; raises OSError (refused, typically)."""
        sockaddr = target.sockaddr
        status = connect_nonblocking(sock, sockaddr)
        if status != errno.EINPROGRESS or target.family == socket.AF_UNIX:
            return status
        # On loopback (and to any peer that answers within the call) the handshake is over
        # before connect() returns: asking again costs one call, an epoll round costs more.
        code = sock.connect_ex(sockaddr) if trace._sink is None else connect_again(sock, sockaddr)
        if code in (0, errno.EISCONN):  # 0: the pending connect completed meanwhile
            return 0
        if code not in (errno.EALREADY, errno.EINPROGRESS):
            raise OSError(code, os.strerror(code))
        return status

    def _target_opened(self, sock: socket.socket) -> None:
        """A socket was made for the target (hook: make it an end of the session)."""

    def _wait_connect(self) -> None:
        """The connect is under way (hook: ask for writability, then :meth:`_connect_ready`)."""
        raise NotImplementedError

    def _connected(self) -> None:
        """The target is open (hook: start relaying)."""
        raise NotImplementedError

    def _reached(self) -> None:
        """The socket is connected (hook: through proxies, the tunnel is opened first)."""
        self._connected()

    def _dialled(self) -> str:
        """What the connect phase connects to, as its failures name it (hook: the first proxy)."""
        return self.target_label

    def _connect_ready(self) -> None:
        assert self.target_sock is not None
        code = pending_error(self.target_sock)
        if code:
            self._next_target(OSError(code, os.strerror(code)))
        else:
            self._reached()

    def _drop_target(self) -> None:
        sock = self.target_sock
        if sock is not None:
            self.relay.loop.forget(sock.fileno())
            with contextlib.suppress(OSError):
                close(sock)
            self.target_sock = None

    def _next_target(self, exc: OSError) -> None:
        """This address failed: try the next one the target resolved to, or give up."""
        self._drop_target()
        self._target_index += 1
        if self._target_index < len(self._targets):
            self._try_connect()
            return
        error = translate(exc, f"connect to {self._dialled()}")
        self._fail_target(str(error))

    def _connect_timed_out(self) -> None:
        self._connect_timer = None
        if self.state != CONNECTING:
            return
        seconds = self.relay.connect_timeout
        error = TimedOut(
            _(
                "cannot connect to {target}: no answer within {seconds} s; "
                "is the target up and reachable? (raise --connect-timeout if it is slow)"
            ).format(target=self._dialled(), seconds=f"{seconds:g}")
        )
        self._fail_target(str(error))

    def _connect_done(self) -> None:
        """The connect phase is over: stop its timer; the session relays."""
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        self.state = OPEN

    def _fail_target(self, message: str, *, abortive: bool = True) -> None:
        """The target could not be opened for this client: close it (reset it, unless not
        ``abortive``: a SOCKS client was just told why), and say why (a notice: every client of
        a target that is down would print one)."""
        relay = self.relay
        relay.stats.failed += 1
        shown = self.peer_label()
        kind = N_("programs that failed to start") if relay.runs_programs else N_("failed connects")
        relay.events.notice(
            kind,
            "error",
            _("enchufe: {message} (client {peer} #{id} closed)").format(
                message=message, peer=shown, id=self.id
            ),
            id=self.id,
            peer=shown,
            target=self.target_label,
            error=message,
        )
        self._end("target-failed", abortive=abortive, quiet=True)

    # -- the idle timer

    def _arm_idle(self) -> None:
        relay = self.relay
        if relay.idle_timeout:
            self._idle_timer = relay.loop.call_later(relay.idle_timeout, self._idle_check, self.crashed)

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self.state != OPEN:
            return
        self._collect()
        relay = self.relay
        timeout = relay.idle_timeout
        assert timeout is not None
        left = self._last_active + timeout - time.monotonic()
        if left > 0:
            self._idle_timer = relay.loop.call_later(left, self._idle_check, self.crashed)
            return
        self._idle_expired(timeout)

    def _idle_expired(self, timeout: float) -> None:
        """Nothing moved for ``timeout`` seconds (hook: end the session)."""
        raise NotImplementedError

    def _collect(self) -> bool:
        """Count what moved without this session's Python seeing it (hook: the loop's
        shortcuts, see :mod:`.shortcuts`); whether anything did."""
        return False

    # -- ending

    def cut(self, reason: str) -> None:
        """Close now, whatever is in flight (the end of a drain)."""
        if self.state == CLOSED:
            return
        self.relay.stats.cut += 1
        self._end(reason, abortive=True)

    def crashed(self, exc: Exception) -> str:
        """A handler or timer of this session raised (the engine reports it): end the session
        as a cut, the peers reset; the relay serves the others.  Returns what was done."""
        shown = f"#{self.id} {self.peer_label()}"
        if self.state != CLOSED:
            self.cut("error")
        else:  # it raised while ending: close what is still open, or it would wake us forever
            self._close_leftovers()
        return _("closed {session}, {outcome}").format(session=shown, outcome=_(self.crash_outcome))

    def _close_leftovers(self) -> None:
        """Ending raised half-way: close what is still open (hook)."""

    def _release(self, abortive: bool) -> None:
        """Close the ends and stop what the session runs (hook)."""
        raise NotImplementedError

    def _close_summary(self) -> tuple[str, dict[str, int]]:
        """What went through, for the "close" event: its words and its fields (hook)."""
        return _("{to_target} bytes to target, {to_client} to client").format(
            to_target=self.to_target, to_client=self.to_client
        ), {}

    def _event_fields(self) -> dict[str, Any]:
        """More fields for the "accept" and "close" events (hook: what a TLS session agreed)."""
        return {}

    def _end(
        self, reason: str, *, abortive: bool = False, error: str | None = None, quiet: bool = False
    ) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        for timer in (self._connect_timer, self._retry_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._connect_timer = self._retry_timer = self._idle_timer = None
        self._release(abortive)
        relay = self.relay
        relay.stats.open -= 1
        relay.session_ended(self, failed=abortive and reason != "shutdown")
        if relay.one_client and abortive and not quiet and reason != "shutdown":
            relay.one_shot_broken(self, reason, error)
        if not quiet and relay.events.level >= 1:  # events.wants(1), inline
            self._close_event(reason, error)

    def _close_event(self, reason: str, error: str | None) -> None:
        seconds = time.monotonic() - self.started
        shown = self.peer_label()
        why = f" ({reason}: {error})" if error else ("" if reason == "done" else f" ({reason})")
        summary, counts = self._close_summary()
        extra = self._event_fields()
        self.relay.events(
            "close",
            _("closed #{id} {peer}: {summary} in {seconds} s{why}").format(
                id=self.id, peer=shown, summary=summary, seconds=f"{seconds:.3f}", why=why
            ),
            level=1,
            id=self.id,
            peer=shown,
            reason=reason,
            to_target=self.to_target,
            to_client=self.to_client,
            **counts,
            seconds=round(seconds, 6),
            **({"error": error} if error else {}),
            **self._proxy_fields(),
            **extra,
        )

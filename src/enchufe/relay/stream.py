"""Stream relaying: a listener handler that admits clients, and one session per client.

::

    client ──accept──▶ StreamRelay._admit ──rules, limits──▶ StreamSession
                                                             ├─ open TARGET: connect (non-blocking,
                                                             │  timed), spawn exec:, or stdio
                                                             ├─ up:   Pump(client → target)
                                                             └─ down: Pump(target → client)

A session lives until both pumps are done: each direction ends on its own (EOF passed on as
``shutdown(SHUT_WR)``, or as closing a pipe, once its bytes are delivered), so a target may answer
long after the client's EOF.  A reset or error on either side ends both at once, and the other
side is reset too (``SO_LINGER`` 0), so that neither peer mistakes a broken relay for an orderly
end.  Clients the relay will not serve (over ``--max-conns``, denied, target unreachable) are
reset likewise, at once: never left hanging.

Each end of a session is a :class:`Side`: a socket (read and written through one descriptor), or
a pair of descriptors, for standard input/output (``-``) and for an ``exec:`` child's pipes.

Interest in readiness follows the pumps after every step: read a socket only while its pump has
room (backpressure), write it only while bytes wait for it.  A socket we want nothing from stays
registered with an empty mask so that its reset is still seen, except once our write side of it
is shut (then an empty mask would report EPOLLHUP forever; it is unregistered until needed).
Pipes and terminals are registered only while something is wanted from them, for the same
reason (a pipe whose other end closed reports EPOLLHUP or EPOLLERR whatever the mask).

:class:`StdioRelay` is the relay whose LISTEN is ``-``: no listener, one session whose client is
this process's stdin and stdout, and the relay ends with it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import select
import socket
import stat
import time
from collections.abc import Callable
from typing import Any

from .. import _calls, _nonblocking
from .._backoff import Backoff
from .._calls import accept, close, new_socket
from .._nonblocking import abort, connect_nonblocking, socket_error
from .._resolve import Target
from .._spawn import CHILD_EXIT_GRACE, socket_environment
from .._text import printable
from ..address import Address, ExecAddress, SocketAddress, StdioAddress, from_sockaddr
from ..errors import TimedOut, translate
from .children import Children
from .engine import ERROR, FAILED, READ, WRITE, Loop, OnError, Timer
from .events import EventSink
from .limits import AccessRules
from .pump import Pools, Pump
from .stats import Stats
from .targets import TargetResolver, resolver_address

__all__ = ["Side", "StdioRelay", "StreamRelay", "StreamSession", "TargetResolver", "stdio_side"]

#: Clients accepted per readiness event before serving the connections already relayed: a burst
#: of connects must not starve transfers, nor wait behind them.
ACCEPT_BATCH = 64

#: Longest pause between two looks at a session whose exited child left output on its way to
#: a client that reads slowly.
CHILD_EXIT_RECHECK_MAX = 5.0

#: First delay before connecting again to a unix target whose backlog is full (EAGAIN: nothing
#: was started); doubled up to :data:`MAX_RETRY_DELAY` until the connect timeout.  Slower than
#: the library's (:mod:`enchufe._backoff`): the relay's own numbers, until a measurement says
#: the library's cost no more CPU with many sessions waiting.
FIRST_RETRY_DELAY = 0.005
MAX_RETRY_DELAY = 0.2

#: When accept() fails (for want of descriptors, typically), the listener rests this long before
#: trying again, instead of spinning; a client waiting meanwhile is turned away with the spare
#: descriptor kept for that.
ACCEPT_PAUSE = 0.1

_CONNECTING, _RELAYING, _CLOSED = 0, 1, 2
_UNREGISTERED = -1


def _describe_peer(sock: socket.socket | None, peer: Any) -> str:
    if sock is None:
        return "stdio"
    found = from_sockaddr(sock.family, socket.SOCK_STREAM, peer) if peer else None
    # The peer chose its name: escaped here, where event messages get it, so that a newline in
    # an abstract name never starts a forged line in anyone's log.
    return printable(str(found)) if found is not None else "unix:(unnamed)"


# ----------------------------------------------------------------------------- the ends of a session


class Side:
    """One end of a relayed stream.

    A socket side reads and writes one descriptor (``rfd == wfd``), whose interest mask is
    :attr:`mask`.  A descriptor side has a read descriptor and a write descriptor of its own
    (stdin and stdout; a child's stdout and stdin), each registered only while wanted
    (:attr:`rmask`, :attr:`wmask`); either is -1 once closed.
    """

    __slots__ = (
        "mask",
        "rfd",
        "rmask",
        "saved_flags",
        "sock",
        "stop_at_peer_eof",
        "wfd",
        "wfd_is_socket",
        "wmask",
    )

    def __init__(self, sock: socket.socket | None = None, *, rfd: int = -1, wfd: int = -1) -> None:
        self.sock = sock
        if sock is not None:
            rfd = wfd = sock.fileno()
        self.rfd = rfd
        self.wfd = wfd
        self.mask = _UNREGISTERED
        self.rmask = _UNREGISTERED
        self.wmask = _UNREGISTERED
        #: original file status flags of descriptors we made non-blocking (shared with others)
        self.saved_flags: dict[int, int] = {}
        self.wfd_is_socket = False
        #: a terminal may never send EOF: the session ends once the other side's EOF is through
        self.stop_at_peer_eof = False

    @property
    def is_socket(self) -> bool:
        return self.sock is not None

    def shut_write(self, loop: Loop) -> None:
        """Pass EOF on: ``shutdown(SHUT_WR)`` of a socket, or close the write descriptor."""
        if self.sock is not None:
            _calls.shutdown(self.sock, socket.SHUT_WR)
            return
        fd = self.wfd
        if fd < 0:
            return
        if self.wfd_is_socket:  # stdout is a socket (inetd style): a FIN, whoever else holds it
            with socket.socket(fileno=os.dup(fd)) as sock:
                _calls.shutdown(sock, socket.SHUT_WR)
        self._close_fd(loop, fd)
        self.wfd = -1
        self.wmask = _UNREGISTERED

    def close_read(self, loop: Loop) -> None:
        """The read descriptor of a descriptor side reached EOF: close it."""
        if self.sock is None and self.rfd >= 0:
            self._close_fd(loop, self.rfd)
            self.rfd = -1
            self.rmask = _UNREGISTERED

    def _close_fd(self, loop: Loop, fd: int) -> None:
        loop.forget(fd)
        flags = self.saved_flags.pop(fd, None)
        with contextlib.suppress(OSError):
            if flags is not None:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
            _nonblocking.close_fd(fd)

    def close(self, loop: Loop, *, abortive: bool) -> None:
        if self.sock is not None:
            loop.forget(self.rfd)
            with contextlib.suppress(OSError):
                if abortive:
                    abort(self.sock)
                else:
                    close(self.sock)
            return
        for fd in (self.rfd, self.wfd):
            if fd >= 0:
                self._close_fd(loop, fd)
        self.rfd = self.wfd = -1


def _make_nonblocking(side: Side, fd: int) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if not flags & os.O_NONBLOCK:
        side.saved_flags[fd] = flags
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)


def stdio_side() -> Side:
    """This process's stdin and stdout as one end of a session.

    They are duplicated for the relay and descriptors 0 and 1 are pointed at /dev/null, so that
    closing our duplicate of stdout is the EOF its reader sees.  They are made non-blocking (the
    flag is shared with whoever else holds them, a shell's terminal for instance) and their
    flags are put back when the relay closes them.
    """
    rfd = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    wfd = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    side = Side(rfd=rfd, wfd=wfd)
    side.wfd_is_socket = stat.S_ISSOCK(os.fstat(wfd).st_mode)
    side.stop_at_peer_eof = os.isatty(rfd)
    _make_nonblocking(side, rfd)
    _make_nonblocking(side, wfd)
    return side


# ----------------------------------------------------------------------------- the listener handler


class StreamRelay:
    """The handler of one stream listener: accept, check, and relay each client to the target.

    The target is a socket address (reached through ``resolver``), an ``exec:`` program (a
    child per client) or stdio (``-``: the first client only; the listener closes once it is in).
    """

    def __init__(
        self,
        loop: Loop,
        listener: socket.socket | None,
        resolver: TargetResolver | None,
        *,
        pools: Pools,
        stats: Stats,
        events: EventSink,
        rules: AccessRules,
        max_conns: int,
        connect_timeout: float,
        idle_timeout: float | None,
        use_splice: bool,
        on_listener_closed: Callable[[], None] | None = None,
        target: Address | None = None,
        local: SocketAddress | None = None,
    ) -> None:
        self.loop = loop
        self.listener = listener
        self.resolver = resolver
        self.target: Address = target if target is not None else resolver_address(resolver)
        self.target_label = str(self.target)
        #: the listening address, for the ENCHUFE_LOCAL of exec children
        self.local = local
        self.pools = pools
        self.stats = stats
        self.events = events
        self.rules = rules
        self.max_conns = max_conns
        #: where max_conns comes from, for the refusal message
        self.limit_origin = "--max-conns"
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.use_splice = use_splice
        self.sessions: set[Any] = set()
        self.children = Children(loop, events)
        #: one client only (stdio target): the relay is over once its session ends
        self.one_client = isinstance(self.target, StdioAddress)
        #: a child per client (exec: target)
        self.runs_programs = isinstance(self.target, ExecAddress)
        self.finished = False
        #: a one-shot relay lost data (a reset, an unreachable target): exit status 1
        self.failed = False
        self._ids = itertools.count(1)
        self._on_listener_closed = on_listener_closed
        self._accepting = False
        self._spare: int | None = None
        self._next_pause_report = 0.0

    # -- accepting

    def start(self) -> None:
        assert self.listener is not None
        self.listener.setblocking(False)
        self._spare = _open_spare()
        self.loop.register(self.listener.fileno(), READ, self._on_accept, self._listener_failed)
        self._accepting = True

    @property
    def accepting(self) -> bool:
        return self._accepting

    def _on_accept(self, _events: int) -> None:
        listener = self.listener
        assert listener is not None
        for _ in range(ACCEPT_BATCH):
            if not self._accepting:
                return
            try:
                conn, peer = accept(listener)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR or exc.errno in _calls.ACCEPT_CLIENT_ERRORS:
                    continue  # that client left while queued, or a firewall said no
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._shed()
                    self._pause(
                        f"cannot accept: {(exc.strerror or str(exc)).lower()}; out of file descriptors "
                        f"with {len(self.sessions)} open connections: clients are turned away; lower "
                        "--max-conns or raise the limit (ulimit -n)"
                    )
                else:
                    self._pause(f"cannot accept: {(exc.strerror or str(exc)).lower()}")
                return
            self._admit(conn, peer)

    def _shed(self) -> None:
        """No descriptor left for accept(): turn one waiting client away with the spare
        descriptor, so that it is not left hanging in the backlog."""
        if self._spare is None or self.listener is None:
            return
        with contextlib.suppress(OSError):
            os.close(self._spare)
        self._spare = None
        with contextlib.suppress(OSError):
            conn, _peer = accept(self.listener)
            abort(conn)
            self.stats.refused += 1
        self._spare = _open_spare()

    def _pause(self, message: str) -> None:
        """accept() failed: report it (at most once a second) and rest the listener a moment
        instead of spinning on it."""
        now = time.monotonic()
        if now >= self._next_pause_report:
            self._next_pause_report = now + 1.0
            self.events("error", f"enchufe: {message}", error=message, open=len(self.sessions))
        self._rest()

    def _listener_failed(self, exc: Exception) -> str:
        """The accept handler raised (the engine reports it): rest the listener a moment, so
        that an error on every turn never spins, then serve on."""
        if not self._accepting:
            return "the listener was already closed"
        self._rest()
        return f"the listener rests {ACCEPT_PAUSE:g} s"

    def _rest(self) -> None:
        assert self.listener is not None
        fd = self.listener.fileno()
        self.loop.modify(fd, 0)

        def resume() -> None:
            if self._accepting:
                self.loop.modify(fd, READ)

        self.loop.call_later(ACCEPT_PAUSE, resume)

    def _refuse(self, conn: socket.socket, peer: Any, reason: str, why: str) -> None:
        """Turn a client away (reset) and say so: a notice, shown without -v but rate-limited,
        since any client can cause one."""
        self.stats.refused += 1
        shown = _describe_peer(conn, peer)
        kind = "denied clients" if reason == "denied" else "clients turned away"
        self.events.notice(
            kind, "refused", f"enchufe: refused {shown}: {why}", peer=shown, reason=reason, detail=why
        )
        abort(conn)

    def _admit(self, conn: socket.socket, peer: Any) -> None:
        if len(self.sessions) >= self.max_conns:
            self._refuse(
                conn, peer, "max-conns", f"{len(self.sessions)} connections open ({self.limit_origin})"
            )
            return
        rules = self.rules
        if rules.filters_ip and conn.family != socket.AF_UNIX:
            denied = rules.check_ip(peer[0])
            if denied is not None:
                self._refuse(conn, peer, "denied", denied)
                return
        if rules.filters_credentials and conn.family == socket.AF_UNIX:
            try:
                creds = _calls.peer_credentials(conn)
            except OSError:
                self._refuse(conn, peer, "denied", "no peer credentials")
                return
            denied = rules.check_credentials(creds.uid, creds.gid)
            if denied is not None:
                self._refuse(conn, peer, "denied", denied)
                return
        conn.setblocking(False)
        if conn.family != socket.AF_UNIX:
            _nodelay(conn)
        self.stats.total += 1
        self.stats.open += 1
        session = self.make_session(conn, peer, next(self._ids))
        self.sessions.add(session)
        if self.one_client:
            self.stop_accepting()  # stdio serves one client: later ones are refused by the kernel
        try:
            session.start()
        except Exception as exc:  # this client's failure, not the listener's
            self.loop.fail(exc, session.crashed)

    def make_session(self, conn: socket.socket, peer: Any, session_id: int) -> Any:
        """The session of an admitted client (framed relays make theirs)."""
        return StreamSession(self, Side(conn), conn, peer, session_id)

    def one_shot_broken(self, session: StreamSession, reason: str, error: str | None) -> None:
        """The one session of a one-shot relay (stdio) broke: that is the whole run, and its
        exit status 1 must not come without a word."""
        side, _, what = reason.partition("-")
        if what == "reset" and side == "target":
            happened = f"{self.target_label} reset the connection ({error or 'reset'})"
            hint = f"check that {self.target_label} speaks the protocol of what was sent, and its log"
        elif what == "reset" and session.client_sock is None:
            happened = f"stdin/stdout failed ({error or 'reset'})"
            hint = "was the reader of stdout gone before the end?"
        elif what == "reset":
            happened = f"the client {session.peer_label()} reset the connection ({error or 'reset'})"
            hint = "the client went away before the end"
        else:
            happened = f"the session ended early ({reason}{': ' + error if error else ''})"
            hint = "run with -v to see each step"
        self.events(
            "error",
            f"enchufe: {happened} after {session.to_target} bytes to the target and "
            f"{session.to_client} back; the exchange is incomplete: {hint}",
            id=session.id,
            reason=reason,
            error=error or reason,
            to_target=session.to_target,
            to_client=session.to_client,
        )

    def session_ended(self, session: Any, failed: bool) -> None:
        self.sessions.discard(session)
        if failed and self.one_client:
            self.failed = True
        if self.one_client and not self.sessions:
            self.finished = True

    # -- stopping

    def stop_accepting(self) -> None:
        """Close the listener at once (new clients are refused by the kernel); sessions go on."""
        if not self._accepting:
            return
        self._accepting = False
        assert self.listener is not None
        self.loop.forget(self.listener.fileno())
        with contextlib.suppress(OSError):
            close(self.listener)
        if self._spare is not None:
            with contextlib.suppress(OSError):
                os.close(self._spare)
            self._spare = None
        if self._on_listener_closed is not None:
            self._on_listener_closed()

    def abort_all(self, reason: str) -> int:
        """Close every session now (each peer sees a reset); how many there were.  One that
        raises is reported, closed the way a failed session is if it can be, and dropped: it
        must not keep the others open, nor the relay running."""
        sessions = list(self.sessions)
        for session in sessions:
            try:
                session.cut(reason)
            except Exception as exc:
                self.loop.fail(exc, session.crashed)
                self.sessions.discard(session)
        return len(sessions)

    def close(self) -> None:
        """The relay ends: stop and reap the children still running."""
        self.children.close()


class StdioRelay(StreamRelay):
    """LISTEN is ``-``: one session, whose client is this process's stdin and stdout.

    There is nothing to accept; the relay is over when the session ends, and it failed (exit
    status 1) if the session ended in a reset or could not reach the target.
    """

    def __init__(self, loop: Loop, resolver: TargetResolver | None, **options: Any) -> None:
        super().__init__(loop, None, resolver, **options)
        self.one_client = True

    def start(self) -> None:
        self.stats.total += 1
        self.stats.open += 1
        session = StreamSession(self, stdio_side(), None, None, next(self._ids))
        self.sessions.add(session)
        session.start()

    @property
    def accepting(self) -> bool:
        return False

    def stop_accepting(self) -> None:
        """Nothing to stop: the one session goes on (the drain)."""
        if self._on_listener_closed is not None:
            self._on_listener_closed()
            self._on_listener_closed = None


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _is_tcp(sock: socket.socket | None) -> bool:
    """Whether a pump towards ``sock`` should copy through bulk buffers (see :mod:`.pump`)."""
    return sock is not None and sock.family != socket.AF_UNIX


def _nodelay(sock: socket.socket) -> None:
    # The relay must not add latency: the endpoints decided when to send; Nagle would hold
    # back the small writes a request/response protocol makes through us.
    with contextlib.suppress(OSError):
        _calls.setsockopt(sock, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1, "TCP_NODELAY")


# ----------------------------------------------------------------------------- one relayed client


class StreamSession:
    """One client relayed to the target: open the target, then two pumps until both are done."""

    __slots__ = (
        "_child_timer",
        "_connect_timer",
        "_idle_timer",
        "_last_active",
        "_retry_backoff",
        "_retry_timer",
        "_target_index",
        "_targets",
        "child",
        "client",
        "client_sock",
        "down",
        "id",
        "peer",
        "relay",
        "started",
        "state",
        "target",
        "target_sock",
        "to_client",
        "to_target",
        "up",
    )

    def __init__(
        self, relay: StreamRelay, client: Side, client_sock: socket.socket | None, peer: Any, session_id: int
    ) -> None:
        self.relay = relay
        self.client = client
        self.client_sock = client_sock
        self.peer = peer
        self.id = session_id
        self.target: Side | None = None
        self.target_sock: socket.socket | None = None
        self.child: Any = None
        self.up: Pump | None = None
        self.down: Pump | None = None
        self.state = _CONNECTING
        self.to_target = 0
        self.to_client = 0
        self.started = time.monotonic()
        self._last_active = self.started
        self._targets: list[Target] = []
        self._target_index = 0
        self._connect_timer: Timer | None = None
        self._retry_timer: Timer | None = None
        self._idle_timer: Timer | None = None
        self._child_timer: Timer | None = None
        self._retry_backoff: Backoff | None = None  # made on the first full backlog, rare

    def peer_label(self) -> str:
        return _describe_peer(self.client_sock, self.peer)

    # -- opening the target

    def start(self) -> None:
        relay = self.relay
        if relay.events.wants(1):
            shown = self.peer_label()
            relay.events("accept", f"accepted {shown} (#{self.id})", level=1, id=self.id, peer=shown)
        client = self.client
        if client.sock is not None:
            # Registered with an empty mask: a client that resets while we connect is noticed.
            relay.loop.register(client.rfd, 0, self._on_client, self.crashed)
            client.mask = 0
        target = relay.target
        if isinstance(target, ExecAddress):
            self._spawn(target)
            return
        if isinstance(target, StdioAddress):
            self.target = stdio_side()
            self._connected()
            return
        assert relay.resolver is not None
        try:
            self._targets = relay.resolver.targets()
        except Exception as exc:  # NameResolutionError: the target's name stopped resolving
            self._fail_connect(str(exc))
            return
        self._connect_timer = relay.loop.call_later(
            relay.connect_timeout, self._connect_timed_out, self.crashed
        )
        self._try_connect()

    def _spawn(self, program: ExecAddress) -> None:
        relay = self.relay
        try:
            env = socket_environment(self.client_sock, self.peer, relay.local)
            child = relay.children.spawn(program, env, session_id=self.id)
        except (OSError, ValueError) as exc:  # this client only: the relay serves on
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._fail_connect(f"cannot run {program}: {reason.lower()}")
            return
        self.child = child
        child.on_exit = lambda: self._child_exited(CHILD_EXIT_GRACE)
        self.target = Side(rfd=child.stdout_r, wfd=child.stdin_w)
        if relay.events.wants(1):
            relay.events(
                "exec",
                f"#{self.id} started {program} (pid {child.pid})",
                level=1,
                id=self.id,
                target=relay.target_label,
                pid=child.pid,
            )
        self._connected(announce=False)

    def _try_connect(self) -> None:
        target = self._targets[self._target_index]
        sock = self.target_sock
        if sock is None:
            try:
                sock = new_socket(target.family, socket.SOCK_STREAM)
            except OSError as exc:
                self._next_target(exc)
                return
            sock.setblocking(False)
            if target.family != socket.AF_UNIX:
                _nodelay(sock)
            self.target_sock = sock
            self.target = Side(sock)
        try:
            status = connect_nonblocking(sock, target.sockaddr)
        except OSError as exc:
            self._next_target(exc)
            return
        if status == errno.EINPROGRESS and target.family != socket.AF_UNIX:
            # On loopback (and to any peer that answers within the call) the handshake is over
            # before connect() returns: asking again costs one call, an epoll round costs more.
            code = _nonblocking.connect_again(sock, target.sockaddr)
            if code in (0, errno.EISCONN):  # 0: the pending connect completed meanwhile
                status = 0
            elif code not in (errno.EALREADY, errno.EINPROGRESS):
                self._next_target(OSError(code, os.strerror(code)))  # refused, typically
                return
        if status == 0:
            self._connected()
        elif status == errno.EINPROGRESS:
            side = self.target
            assert side is not None
            side.mask = self._interest(side.rfd, side.mask, WRITE, False, self._on_target)
        else:  # EAGAIN: a unix listener's backlog is full; nothing started, try again soon
            if self._retry_backoff is None:
                self._retry_backoff = Backoff(FIRST_RETRY_DELAY, MAX_RETRY_DELAY)
            delay = self._retry_backoff.next()
            self._retry_timer = self.relay.loop.call_later(delay, self._try_connect, self.crashed)

    def _drop_target(self) -> None:
        sock = self.target_sock
        if sock is not None:
            self.relay.loop.forget(sock.fileno())
            with contextlib.suppress(OSError):
                close(sock)
            self.target_sock = None
            self.target = None

    def _next_target(self, exc: OSError) -> None:
        """This address failed: try the next one the target resolved to, or give up."""
        self._drop_target()
        self._target_index += 1
        if self._target_index < len(self._targets):
            self._try_connect()
            return
        error = translate(exc, f"connect to {self.relay.target_label}")
        self._fail_connect(str(error))

    def _connect_timed_out(self) -> None:
        self._connect_timer = None
        if self.state != _CONNECTING:
            return
        seconds = self.relay.connect_timeout
        error = TimedOut(
            f"cannot connect to {self.relay.target_label}: no answer within {seconds:g} s; "
            "is the target up and reachable? (raise --connect-timeout if it is slow)"
        )
        self._fail_connect(str(error))

    def _fail_connect(self, message: str) -> None:
        """The target could not be opened for this client: close it, and say why (a notice:
        every client of a target that is down would print one)."""
        relay = self.relay
        relay.stats.failed += 1
        shown = self.peer_label()
        kind = "programs that failed to start" if relay.runs_programs else "failed connects"
        relay.events.notice(
            kind,
            "error",
            f"enchufe: {message} (client {shown} #{self.id} closed)",
            id=self.id,
            peer=shown,
            target=relay.target_label,
            error=message,
        )
        self._end("target-failed", abortive=True, quiet=True)

    def _connected(self, *, announce: bool = True) -> None:
        relay = self.relay
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        self.state = _RELAYING
        client, target = self.client, self.target
        assert target is not None
        loop = relay.loop
        self.up = Pump(
            client.rfd,
            target.wfd,
            relay.pools,
            use_splice=relay.use_splice,
            finish=lambda: target.shut_write(loop),
            dst_is_pipe=not target.is_socket,
            bulk=_is_tcp(target.sock),
        )
        self.down = Pump(
            target.rfd,
            client.wfd,
            relay.pools,
            use_splice=relay.use_splice,
            finish=lambda: client.shut_write(loop),
            dst_is_pipe=not client.is_socket,
            bulk=_is_tcp(client.sock),
        )
        if announce and relay.events.wants(1):
            seconds = time.monotonic() - self.started
            relay.events(
                "connect",
                f"#{self.id} connected to {relay.target_label} in {seconds * 1000:.1f} ms",
                level=1,
                id=self.id,
                target=relay.target_label,
                seconds=round(seconds, 6),
            )
        if relay.idle_timeout:
            self._idle_timer = loop.call_later(relay.idle_timeout, self._idle_check, self.crashed)
        if client.sock is None or target.sock is None:
            # Descriptors epoll cannot watch for us yet (a file as stdin is always ready, a
            # pipe may hold bytes already): step once now, as if everything were ready.
            self._step(1, 1)
            return
        # A client usually sends its request right after connecting: it is likely waiting
        # already, and reading it now saves a turn of the loop.
        self._step(1, 0)

    # -- readiness

    def _on_client(self, events: int) -> None:
        if self.state != _RELAYING:
            if self.state == _CONNECTING:  # only errors are asked for while connecting
                self._client_gone_while_connecting()
            return
        if events & FAILED and self._failed(self.client_sock, "client"):
            return
        self._step(events & (READ | ERROR), events & (WRITE | ERROR))

    def _on_target(self, events: int) -> None:
        if self.state != _RELAYING:
            if self.state == _CONNECTING:
                self._connect_ready()
            return
        if events & FAILED and self._failed(self.target_sock, "target"):
            return
        self._step(events & (WRITE | ERROR), events & (READ | ERROR))

    # Descriptor sides: one handler per descriptor.
    def _on_client_read(self, events: int) -> None:
        if self.state == _RELAYING:
            self._step(1, 0)

    def _on_client_write(self, events: int) -> None:
        if self.state == _RELAYING:
            self._step(0, 1)

    def _on_target_read(self, events: int) -> None:
        if self.state == _RELAYING:
            self._step(0, 1)

    def _on_target_write(self, events: int) -> None:
        if self.state == _RELAYING:
            self._step(1, 0)

    def _failed(self, sock: socket.socket | None, side: str) -> bool:
        """EPOLLERR: end the session if the socket really has an error (a reset), which may be
        on a side neither pump is using right now."""
        assert sock is not None
        try:
            code = socket_error(sock)
        except OSError as exc:
            code = exc.errno or errno.EIO
        if not code:
            return False
        self.relay.stats.reset += 1
        self._end(f"{side}-reset", abortive=True, error=os.strerror(code).lower())
        return True

    def _connect_ready(self) -> None:
        assert self.target_sock is not None
        try:
            code = socket_error(self.target_sock)
        except OSError as exc:
            code = exc.errno or errno.EIO
        if code:
            self._next_target(OSError(code, os.strerror(code)))
        else:
            self._connected()

    def _client_gone_while_connecting(self) -> None:
        assert self.client_sock is not None
        try:
            code = socket_error(self.client_sock)
        except OSError as exc:
            code = exc.errno or errno.EIO
        self.relay.stats.reset += 1
        self._end("client-reset", abortive=True, error=os.strerror(code) if code else "client hung up")

    def _step(self, run_up: int, run_down: int) -> None:
        up = self.up
        down = self.down
        assert up is not None and down is not None
        relay = self.relay
        stats = relay.stats
        pump = up
        active = False
        try:
            if run_up:
                eof = up.eof
                moved = up.run()
                if moved:
                    self.to_target += moved
                    stats.to_target += moved
                    active = True
                if up.eof and not eof:
                    self._eof_event("client")
            if run_down:
                pump = down
                eof = down.eof
                moved = down.run()
                if moved:
                    self.to_client += moved
                    stats.to_client += moved
                    active = True
                if down.eof and not eof:
                    self._eof_event("target")
        except OSError as exc:
            self._reset(pump, exc)
            return
        if active and relay.idle_timeout:
            self._last_active = time.monotonic()
        if up.done and down.done:
            self._end("done")
            return
        if (down.done and self.client.stop_at_peer_eof) or (
            up.done and self.target is not None and self.target.stop_at_peer_eof
        ):
            self._end("done")  # a terminal on the other side may never send its EOF
            return
        self._update()

    def _eof_event(self, side: str) -> None:
        events = self.relay.events
        if events.wants(2):
            sent = self.to_target if side == "client" else self.to_client
            other = "target" if side == "client" else "client"
            events(
                "eof",
                f"#{self.id} {side} finished sending after {sent} bytes; shutting down the write side "
                f"towards the {other} once they are delivered",
                level=2,
                id=self.id,
                side=side,
                bytes=sent,
            )

    def _reset(self, pump: Pump, exc: OSError) -> None:
        side = (
            ("client" if pump.failed_on == "read" else "target")
            if pump is self.up
            else ("target" if pump.failed_on == "read" else "client")
        )
        self.relay.stats.reset += 1
        reason = exc.strerror or str(exc)
        self._end(f"{side}-reset", abortive=True, error=reason.lower())

    def _update(self) -> None:
        up = self.up
        down = self.down
        assert up is not None and down is not None
        # Pump.wants_read / wants_write, inlined: this runs after every step of every connection.
        # A full buffer or pipe means no read interest, whatever the mode (a bulk buffer is used
        # while use_splice holds): otherwise a stalled reader makes every wake-up a futile write.
        view = up.view
        up_read = not (up.eof or up.stalled) and (
            (up.pipe is None or up.in_flight < up.pipe.capacity) if view is None else up.end < len(view)
        )
        view = down.view
        down_read = not (down.eof or down.stalled) and (
            (down.pipe is None or down.in_flight < down.pipe.capacity)
            if view is None
            else down.end < len(view)
        )
        client = self.client
        target = self.target
        assert target is not None
        if client.sock is not None:
            mask = (READ if up_read else 0) | (WRITE if down.in_flight else 0)
            if mask != client.mask:
                client.mask = self._interest(client.rfd, client.mask, mask, down.done, self._on_client)
        else:
            self._fd_interest(
                client, up_read, up.eof, down.in_flight > 0, self._on_client_read, self._on_client_write
            )
        if target.sock is not None:
            mask = (READ if down_read else 0) | (WRITE if up.in_flight else 0)
            if mask != target.mask:
                target.mask = self._interest(target.rfd, target.mask, mask, up.done, self._on_target)
        else:
            self._fd_interest(
                target, down_read, down.eof, up.in_flight > 0, self._on_target_read, self._on_target_write
            )

    def _interest(
        self, fd: int, current: int, mask: int, write_shut: bool, handler: Callable[[int], None]
    ) -> int:
        loop = self.relay.loop
        if mask == 0 and write_shut:
            # Nothing wanted and our side of it shut: EPOLLHUP would wake us forever once the
            # peer shuts too.  Unregister until there is something to wait for again.
            if current != _UNREGISTERED:
                loop.unregister(fd)
            return _UNREGISTERED
        if current == _UNREGISTERED:
            loop.register(fd, mask, handler, self.crashed)
        else:
            loop.modify(fd, mask)
        return mask

    def _fd_interest(
        self,
        side: Side,
        reading: bool,
        read_eof: bool,
        writing: bool,
        on_read: Callable[[int], None],
        on_write: Callable[[int], None],
    ) -> None:
        """A descriptor side: each descriptor registered only while something is wanted of it."""
        loop = self.relay.loop
        if read_eof:
            side.close_read(loop)
        elif side.rfd >= 0:
            side.rmask = _want(loop, side.rfd, side.rmask, READ if reading else 0, on_read, self.crashed)
        if side.wfd >= 0:
            side.wmask = _want(loop, side.wfd, side.wmask, WRITE if writing else 0, on_write, self.crashed)

    # -- timers

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self.state != _RELAYING:
            return
        relay = self.relay
        assert relay.idle_timeout is not None
        left = self._last_active + relay.idle_timeout - time.monotonic()
        if left > 0:
            self._idle_timer = relay.loop.call_later(left, self._idle_check, self.crashed)
            return
        relay.stats.cut += 1
        self._end("idle", abortive=True, error=f"no traffic for {relay.idle_timeout:g} s (--idle-timeout)")

    def _child_exited(self, delay: float, check: bool = False) -> None:
        """The exec: child has exited: once what it wrote is through (``delay`` seconds later,
        then less and less often while a slow client still reads it), the session is over, even
        if a process the child left behind holds its stdout open, so that no EOF would come."""
        self._child_timer = None
        if self.state == _CLOSED:
            return
        down = self.down
        target = self.target
        if check and down is not None and target is not None:
            if down.done:
                return  # its output's EOF came: the session goes on as any half-closed one
            if not (down.in_flight > 0 or (target.rfd >= 0 and _readable(target.rfd))):
                if self.relay.events.wants(1):
                    self.relay.events(
                        "exec",
                        f"#{self.id} {self.relay.target_label} exited, but a process it started holds "
                        "its output open: closing",
                        level=1,
                        id=self.id,
                        pid=self.child.pid,
                    )
                self._end("done")
                return
            delay = min(delay * 2, CHILD_EXIT_RECHECK_MAX)
        self._child_timer = self.relay.loop.call_later(
            delay, lambda: self._child_exited(delay, check=True), self.crashed
        )

    # -- ending

    def cut(self, reason: str) -> None:
        """Close now, whatever is in flight (the end of a drain)."""
        if self.state == _CLOSED:
            return
        self.relay.stats.cut += 1
        self._end(reason, abortive=True)

    def crashed(self, exc: Exception) -> str:
        """A handler or timer of this session raised (the engine reports it): end the session
        as a cut, both peers reset; the relay serves the others.  Returns what was done."""
        shown = f"#{self.id} {self.peer_label()}"
        if self.state != _CLOSED:
            self.cut("error")
        else:  # it raised while ending: close what is still open, or it would wake us forever
            loop = self.relay.loop
            for side in (self.client, self.target):
                if side is not None and (side.sock is None or side.sock.fileno() >= 0):
                    side.close(loop, abortive=True)
        return f"closed {shown}, both peers reset"

    def _end(
        self, reason: str, *, abortive: bool = False, error: str | None = None, quiet: bool = False
    ) -> None:
        if self.state == _CLOSED:
            return
        self.state = _CLOSED
        relay = self.relay
        for timer in (self._connect_timer, self._retry_timer, self._idle_timer, self._child_timer):
            if timer is not None:
                timer.cancel()
        self._connect_timer = self._retry_timer = self._idle_timer = self._child_timer = None
        for pump in (self.up, self.down):
            if pump is not None:
                pump.discard()
        loop = relay.loop
        self.client.close(loop, abortive=abortive)
        if self.target is not None:
            self.target.close(loop, abortive=abortive)
        if self.child is not None:  # its group goes with the session (at once, if it broke)
            if abortive:
                relay.children.terminate(self.child)
            else:
                relay.children.release(self.child)
        relay.stats.open -= 1
        relay.session_ended(self, failed=abortive and reason != "shutdown")
        if relay.one_client and abortive and not quiet and reason != "shutdown":
            relay.one_shot_broken(self, reason, error)
        if not quiet and relay.events.wants(1):
            seconds = time.monotonic() - self.started
            shown = self.peer_label()
            why = f" ({reason}: {error})" if error else ("" if reason == "done" else f" ({reason})")
            relay.events(
                "close",
                f"closed #{self.id} {shown}: {self.to_target} bytes to target, {self.to_client} to client "
                f"in {seconds:.3f} s{why}",
                level=1,
                id=self.id,
                peer=shown,
                reason=reason,
                to_target=self.to_target,
                to_client=self.to_client,
                seconds=round(seconds, 6),
                **({"error": error} if error else {}),
            )


def _readable(fd: int) -> bool:
    """Something (data, or the EOF) waits to be read on ``fd`` now."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _want(
    loop: Loop, fd: int, current: int, mask: int, handler: Callable[[int], None], on_error: OnError
) -> int:
    """Register ``fd`` for ``mask``, or unregister it when nothing is wanted."""
    if mask == current:
        return current
    if mask == 0:
        loop.unregister(fd)
        return _UNREGISTERED
    if current == _UNREGISTERED:
        loop.register(fd, mask, handler, on_error)
    else:
        loop.modify(fd, mask)
    return mask

"""The state of a TLS stream connection, and TLS on its socket: the base of
:class:`enchufe._tlsstream.TLSStreamCore` (which has the operations, the close and the handshake).

On the socket (:mod:`enchufe._tls_socket`): OpenSSL reads the socket itself and decrypts into
the bytes a receive returns, and encrypts a send straight into the socket, with no memory BIO and
none of its copies in between (half of what a MiB cost).  OpenSSL then never waits: the sync
side's socket is non-blocking underneath whatever its timeout (OpenSSL is given an
:class:`_Alias` of the descriptor, which never waits), and the waiting is done here
(:meth:`TLSCore._wait_for`), within that timeout, with no lock held.  Memory BIOs remain while
tracing (each system call is narrated), on a Python without the means, and on a server that may
refuse a client after its handshake (``allow-san``, ``allow-cn``, ``alpn``), as in the relay.

A close_notify, and the first step of a handshake, are made with the descriptor pointing at a
socketpair for a moment (:func:`enchufe._tls_socket.shutdown_caught`): one per process, so one
at a time (that function takes turns); and a wait watches the socket itself, not the descriptor's number
(:class:`_Poller`), so that another thread's swap cannot leave it watching the wrong file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

from . import _calls
from ._streams import StreamCore
from ._tls_batch import RECORD
from ._tlssetup import TLSSetup, session_for
from .errors import ConnectionReset, NetworkError, TLSTruncated, translate
from .tlsinfo import TLSInfo

#: Plaintext encrypted per ``_send_once``: four full TLS records, one system call's worth.
SEND_CHUNK = 64 * 1024
#: Ciphertext asked of the kernel per receive: what it holds beyond what the caller wants waits
#: in the channel, decrypted as it is asked for.
RECV_CHUNK = 128 * 1024
#: Plaintext encrypted per ``_send_once`` on the socket: OpenSSL writes each record as it makes
#: it, so a larger chunk costs no memory, only fewer calls.
DIRECT_SEND_CHUNK = 256 * 1024
#: Receives a closing connection makes, at most, of what arrived unread.
DRAIN_RECEIVES = 8
#: Seconds a closing sync TCP connection waits, at most, for the peer to take what it sent
#: (see ``TLSStreamCore._linger`` in :mod:`enchufe._tlsstream`).
LINGER = 2.0


#: ``tcpi_state`` of a TCP connection that is over without an orderly close (a reset).
_TCP_CLOSE = 7


def _was_reset(sock: socket.socket) -> bool:
    """Whether the TCP connection of ``sock`` was reset (its state is CLOSED while this side
    never closed it); False for other sockets, or when the kernel does not say."""
    if sock.family == socket.AF_UNIX:
        return False
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except OSError:
        return False
    return bool(info) and info[0] == _TCP_CLOSE


def unacknowledged(sock: socket.socket) -> int:
    """Bytes sent on a TCP socket that the peer has not acknowledged yet (Linux's SIOCOUTQ);
    0 where that cannot be asked."""
    try:
        import fcntl
        import termios

        answer = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")  # SIOCOUTQ
    except (ImportError, AttributeError, OSError):
        return 0
    return int.from_bytes(answer, sys.byteorder, signed=True)


class _Alias(socket.socket):
    """The descriptor of a sync connection's socket again, as a socket that never waits (its
    timeout is 0 whatever the connection's): OpenSSL's, so that it never waits in the kernel
    while a lock is held.  It never closes the descriptor, which the connection's socket owns."""

    def __del__(self) -> None:
        self.detach()


class _Poller:
    """Waits for one event of one socket.  epoll where there is one: it watches the socket
    itself, not its descriptor's number, so that a close_notify caught meanwhile by another
    thread (:func:`enchufe._tls_socket.shutdown_caught` points the number elsewhere for a
    moment) cannot leave it watching the wrong file."""

    def __init__(self, fd: int, event: int) -> None:
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        if self._epoll is not None:
            self._epoll.register(fd, event)
        else:
            self._poll = select.poll()  # not select(): descriptors past 1024
            self._poll.register(fd, event)

    def wait(self, timeout: float | None) -> bool:
        """Whether the event came within ``timeout`` seconds (``None``: no limit)."""
        if self._epoll is not None:
            return bool(self._epoll.poll(-1 if timeout is None else timeout, 1))
        return bool(self._poll.poll(None if timeout is None else timeout * 1000))

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()


#: Plaintext one receive on the socket gathers, at most: a few records, each decrypted into a
#: buffer of the thread's (:func:`_gathering`) and copied out together.  A receive of up to
#: GATHER bytes (the default size) uses a buffer of that size; a larger one (the stdio pump asks
#: for 256 KiB) a buffer of GATHER_MORE, made only in the threads that ask: each handler thread
#: of a threaded server holds 64 KiB, not 256.
GATHER = 64 * 1024
GATHER_MORE = 256 * 1024
_threads = threading.local()


_T = TypeVar("_T")


def _count(got: int) -> int | None:
    """A count from ``TLSChannel.read_into``, ``None`` for its "nothing yet" (-1)."""
    return None if got < 0 else got


def _gathering(size: int) -> memoryview:
    """``size`` bytes (at most :data:`GATHER_MORE`) of this thread's buffer: one per thread (an
    asyncio loop's connections share one), not one per connection, so that an idle connection
    holds none."""
    if size <= GATHER:
        view: memoryview | None = getattr(_threads, "view", None)
        if view is None:
            view = _threads.view = memoryview(bytearray(GATHER))
    else:
        view = getattr(_threads, "more", None)
        if view is None:
            view = _threads.more = memoryview(bytearray(GATHER_MORE))
    return view[:size]


def _direct(setup: TLSSetup) -> bool:
    """Whether a connection of ``setup`` puts its channel on the socket (see the module)."""
    from . import _tls_socket, trace

    if not _tls_socket.AVAILABLE or trace.enabled():
        return False
    params = setup.params
    return not (setup.server_side and (params.allow_san or params.allow_cn or params.alpn))


class NoLock:
    """The asyncio side's lock: one thread, nothing to guard."""

    def acquire(self, blocking: bool = True) -> bool:
        return True

    def release(self) -> None:
        pass

    def __enter__(self) -> NoLock:
        return self

    def __exit__(self, *args: object) -> None:
        pass


class TLSCore(StreamCore):
    """The TLS layer of a connected stream: the channel, the ciphertext not sent yet, and TLS on
    the socket where it is used.  :class:`enchufe._tlsstream.TLSStreamCore` adds the operations."""

    _state_lock: threading.Lock | NoLock
    _send_lock: threading.Lock | NoLock

    def __init__(self, sock: socket.socket, setup: TLSSetup) -> None:
        super().__init__(sock)
        if sock.family != socket.AF_UNIX:
            # TLS writes whole records, and the handshake's last flight is small: with Nagle on,
            # the first write after it waits for that flight's ACK, which the peer delays
            # (about 40 ms on Linux).  Go's crypto/tls and most TLS servers turn Nagle off too.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._session_key, session = session_for(sock, setup)
        #: What OpenSSL reads and writes itself (see the module), ``None`` for memory BIOs: the
        #: asyncio side's own socket (never waits), an :class:`_Alias` of the sync side's.
        self._alias: socket.socket | None = None
        if _direct(setup):
            if self._polled:
                self._alias = sock
            elif hasattr(socket, "SOCK_NONBLOCK"):  # Linux: an alias that never waits, at no cost
                self._alias = _Alias(sock.family, sock.type | socket.SOCK_NONBLOCK, sock.proto, sock.fileno())
                os.set_blocking(sock.fileno(), False)
        self._channel = setup.channel(f"tls fd {sock.fileno()}", session, self._alias)
        if setup.server_side:
            # A server writes nothing before it has read the ClientHello, and the channel peeks
            # before OpenSSL reads: its first step needs no catching (see _advance).
            self._stepped = True
        self._pollers: dict[int, _Poller] = {}
        self._params = setup.params
        self._unsent = memoryview(b"")  # ciphertext made, not yet taken by the kernel
        #: The plaintext of the chunk whose ciphertext is still going out (a receive may flush
        #: it meanwhile: only the next send counts it as sent).
        self._carried: bytes | None = None
        self._failed: Exception | None = None  # a handshake's failure, raised again on any use

    def _reset_or(self, truncated: TLSTruncated) -> ConnectionReset:
        """What a truncation met while receiving was: a reset, if the socket had one.  The
        kernel says a reset once, to whichever call meets it first: OpenSSL reads the socket
        again after it and reports the EOF that follows, or a send took it.  TCP keeps the
        mark: a reset connection is CLOSED, one the peer closed in order CLOSE_WAIT."""
        if self._channel.alpn_refusal() is not None:
            return truncated  # a server that wanted none of the ALPN protocols: says why
        if not _was_reset(self._sock):
            return truncated
        reset = translate(
            ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET)),
            f"receive from {self._where()}",
        )
        return reset if isinstance(reset, ConnectionReset) else truncated

    @property
    def tls(self) -> TLSInfo | None:
        """What the handshake agreed on (version, cipher, ALPN, resumption, the peer's
        certificate); ``None`` until the handshake is done (an accepted connection's runs at
        its first use, or at ``handshake()``)."""
        return self._channel.info

    @property
    def handshaken(self) -> bool:
        return self._channel.handshaken

    # -- ciphertext out

    def _flush(self) -> None:
        """Give the kernel every byte of ciphertext made so far, in order.  On the asyncio side,
        ``BlockingIOError`` when it would not take them all: what is left goes next time."""
        with self._send_lock:
            self._flush_held()

    def _flush_held(self, wait: bool = True) -> None:
        """:meth:`_flush`, with ``_send_lock`` held by the caller; with ``wait=False`` only what
        the kernel takes at once (``BlockingIOError`` for the rest)."""
        while True:
            if not self._unsent:
                with self._state_lock:
                    out = self._channel.outgoing()
                if not out:
                    return
                self._unsent = memoryview(out)
            try:
                if wait:
                    sent = _calls.send(self._sock, self._unsent)
                else:
                    sent = _calls.send_nowait(self._sock, self._unsent)
            except BlockingIOError:
                if not (wait and self._alias is not None):
                    raise
                try:
                    self._wait_for(select.POLLOUT)  # the descriptor never blocks: wait here
                except TimeoutError as exc:
                    raise self._translated(exc, f"send to {self._where()}") from exc
                continue
            except OSError as exc:
                raise self._translated(exc, f"send to {self._where()}") from exc
            self._unsent = self._unsent[sent:]

    def _flush_quietly(self) -> None:
        """Flush what can go now, before waiting for the peer; a sender busy flushing (another
        thread), a full socket buffer or a gone peer are left for the next send to meet.

        Never waits for room: a receiver that did would not read meanwhile, and two peers whose
        receivers both waited to send, each to the other's full buffer, would never read again
        (both ends sending and receiving at once, each in two threads)."""
        if not self._send_lock.acquire(blocking=False):
            return
        try:
            self._flush_held(wait=False)
        except (BlockingIOError, ConnectionReset):
            pass
        finally:
            self._send_lock.release()

    @property
    def _owes_peer(self) -> bool:
        """Ciphertext is waiting for room in the kernel (the asyncio side waits writable)."""
        return bool(self._unsent) or self._channel.wants_write

    def _wait_for(self, event: int) -> None:
        """On the socket (:attr:`_alias`): wait until it is readable or writable (``event``),
        within the socket's timeout, with no lock held.  ``BlockingIOError`` on the asyncio side
        and on a non-blocking socket (the caller waits); ``TimeoutError`` when the timeout
        passes, as a socket with a timeout raises it."""
        timeout = self._sock.gettimeout()
        if self._polled or timeout == 0:
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        poller = self._pollers.get(event)
        if poller is None:  # one per direction: a sender and a receiver may wait at once
            with self._state_lock:  # never while a close_notify is caught (see _Poller)
                poller = self._pollers[event] = _Poller(self._sock.fileno(), event)
        if not poller.wait(timeout):
            raise TimeoutError("timed out")

    def _nonblocking_underneath(self) -> None:
        """On the socket, sync side: a timeout of ``None`` just set made the descriptor blocking
        again; OpenSSL must never wait in the kernel (see :class:`_Alias`)."""
        if self._alias is not None and self._alias is not self._sock and self._sock.gettimeout() is None:
            os.set_blocking(self._sock.fileno(), False)

    # -- the three operations of a stream, through the channel

    def _send_direct(self, view: memoryview) -> int:
        """:meth:`_send_once` on the socket: OpenSSL encrypts and writes the records itself.
        When the kernel takes only part, OpenSSL keeps the rest and wants the same bytes again;
        a call that gives up meanwhile (``BlockingIOError``, a timeout) keeps them in
        ``_carried``, for the next (the caller may come back with other bytes, after a
        cancelled ``send_all``)."""
        carried = self._carried
        chunk: bytes | memoryview = view[:DIRECT_SEND_CHUNK] if carried is None else carried
        channel = self._channel
        try:
            with self._send_lock:
                while True:
                    with self._state_lock:
                        sent = channel.send(chunk)
                    if sent:
                        break
                    try:
                        self._wait_for(select.POLLOUT)
                    except OSError:
                        self._carried = bytes(chunk)
                        raise
        except OSError as exc:
            if isinstance(exc, BlockingIOError) and self._polled:
                raise
            raise self._translated(exc, f"send to {self._where()}") from exc
        if carried is None:
            return sent
        self._carried = None
        # After a cancelled send_all the caller may bring other bytes: those still go.  (Compared
        # as bytes: comparing a memoryview walks it byte by byte, 600 µs for 256 KiB here.)
        return len(carried) if view[: len(carried)].tobytes() == carried else 0

    def _recv_direct(self, max_bytes: int) -> bytes:
        """:meth:`_recv_once` on the socket: OpenSSL reads it and decrypts into the bytes
        returned.  Up to one record (16 KiB) into the bytes themselves; more, the records there
        are now, gathered in this thread's :func:`_gathering` buffer first (one copy more, and
        one trip through the layers above per buffer instead of per record)."""
        channel = self._channel
        if max_bytes <= RECORD:
            return self._direct(lambda: channel.read(max_bytes))
        view = _gathering(max_bytes)
        return bytes(view[: self._direct(lambda: _count(channel.read_into(view)))])

    def _recv_direct_into(self, buffer: memoryview) -> int:
        """:meth:`_recv_direct` into ``buffer`` (the records there are now, as many as it has a
        record's room for): the count, ``0`` at close_notify."""
        channel = self._channel
        return self._direct(lambda: _count(channel.read_into(buffer)))

    def _direct(self, attempt: Callable[[], _T | None]) -> _T:
        """``attempt`` (a read of the channel: ``None`` when the socket has nothing yet) under the
        state lock, until it gives something, waiting for the socket in between."""
        channel = self._channel
        while True:
            try:
                with self._state_lock:
                    data = attempt()
                if data is not None:
                    return data
                self._flush_quietly()
                wanted = select.POLLIN
                if channel.wants_write:  # TLS must send first (see TLSChannel.read)
                    channel.wants_write = False
                    wanted = select.POLLOUT
                self._wait_for(wanted)
            except OSError as exc:
                if isinstance(exc, BlockingIOError) and self._polled:
                    raise
                refusal = channel.alpn_refusal() if isinstance(exc, ConnectionResetError) else None
                raise (refusal or self._translated(exc, f"receive from {self._where()}")) from exc

    def _let_go(self) -> None:
        """Before the socket closes: the waits' pollers closed, the alias detached (the
        descriptor is the socket's to close)."""
        for poller in self._pollers.values():
            poller.close()
        self._pollers.clear()
        if isinstance(self._alias, _Alias):
            self._alias.detach()

    def _close_write(self) -> None:
        """Queue close_notify in the channel."""
        with self._state_lock:
            self._channel.close_write()

    def _discard_unread(self) -> None:
        """On the socket, after a refused handshake: take what the peer sent that OpenSSL left
        unread (it reads a record's header, then stops at a broken one), without waiting.  A
        socket closed with unread bytes is reset, and the peer would read the reset, not the
        alert (or the clean close) that says why."""
        if self._alias is None:
            return
        with contextlib.suppress(OSError):
            for _attempt in range(DRAIN_RECEIVES):
                if not self._alias.recv(RECV_CHUNK):
                    return

    def _drain_direct(self) -> bool:
        """:meth:`_drain` on the socket: OpenSSL reads it, its plaintext dropped."""
        for _attempt in range(DRAIN_RECEIVES * RECV_CHUNK // RECORD):
            try:
                with self._state_lock:
                    data = self._channel.read(RECORD)
            except (OSError, NetworkError):  # reset, truncated, broken: the end
                return True
            if data is None:
                return False
            if not data:
                return True
        return False

    #: Whether the handshake's first step was made (on the socket, see :meth:`_advance`).
    _stepped = False

    def _advance(self) -> bool:
        """:meth:`TLSChannel.handshake`, ``_state_lock`` held.  On the socket, the first step
        (a client's ClientHello) is made with the descriptor pointing elsewhere (as a
        close_notify is caught, :func:`enchufe._tls_socket.shutdown_caught`), its bytes sent
        from the outbox: OpenSSL reads nothing from the peer before the peer's first bytes were
        seen (peeked), so that a peer that does not speak TLS is shown saying what it said, not
        what followed the record header OpenSSL took."""
        channel = self._channel
        if self._alias is None or self._stepped:
            return channel.handshake()
        from ._tls_socket import shutdown_caught

        self._stepped = True
        done: list[bool] = []
        caught = shutdown_caught(self._alias.fileno(), lambda: done.append(channel.handshake()))
        channel.outbox.write(caught)
        return done[0]

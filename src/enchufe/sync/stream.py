"""Blocking stream endpoints: :class:`Connection` and :class:`Listener` for tcp and unix alike."""

from __future__ import annotations

import contextlib
import functools
import select
import socket
import threading
import time
from collections.abc import Iterator

from .. import _calls, _ranges, _wakeup, framing
from .._buffer import DEFAULT_MAX_UNTIL, DEFAULT_RECV_SIZE
from .._endpoint import Closing
from .._streams import ListenerCore, StreamCore
from .._tlsstream import TLSSetup, TLSStreamCore
from ..errors import ClosedError, ConnectionReset, IncompleteRead
from ..tlsinfo import TLSInfo

__all__ = ["Connection", "Listener", "TLSConnection", "connection_over"]


class Connection(StreamCore, Closing):
    """A connected stream socket: TCP over IPv4 or IPv6, or a unix stream socket.

    * ``recv`` returns ``b""`` if and only if the peer has closed its sending side (EOF).
    * ``send_all`` returns once the kernel has taken every byte (backpressure: nothing is
      buffered in Python); it raises :class:`~enchufe.errors.ConnectionReset` if the peer is gone.
    * ``shutdown_write`` sends EOF to the peer and keeps the receiving side open (half-close).
    * ``close`` releases the socket; it is idempotent.  Further use raises
      :class:`~enchufe.errors.ClosedError`.

    Operating-system errors surface as :class:`~enchufe.errors.NetworkError` subclasses.
    A connection of a TLS address is a :class:`TLSConnection`, which keeps all of this.
    """

    @property
    def tls(self) -> TLSInfo | None:
        """What TLS negotiated (see :class:`TLSConnection`); ``None`` on a plain connection."""
        return None

    def handshake(self) -> None:
        """Run the TLS handshake now (see :class:`TLSConnection`); nothing on a plain connection."""

    def set_timeout(self, seconds: float | None) -> None:
        """Make ``recv``/``send_all`` raise :class:`~enchufe.errors.TimedOut` after ``seconds``."""
        self._check()
        self._sock.settimeout(_ranges.seconds(seconds, "timeout", optional=True))

    # -- sending

    def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send every byte of ``data``, calling ``send()`` as often as the kernel needs."""
        self._check_send()
        view = memoryview(data).cast("B")
        while view:
            view = view[self._send_once(view) :]

    def shutdown_write(self) -> None:
        """Half-close: the peer reads EOF; we can still receive what it sends."""
        self._shutdown_write()

    def send_message(self, message: bytes, *, max_size: int = framing.DEFAULT_MAX_MESSAGE_SIZE) -> None:
        """Send one length-prefixed message (see :mod:`enchufe.framing`)."""
        self.send_all(framing.encode(message, max_size=max_size))

    # -- receiving

    def recv(self, max_bytes: int = DEFAULT_RECV_SIZE) -> bytes:
        """Up to ``max_bytes`` bytes, as soon as some are there; ``b""`` at EOF."""
        max_bytes = self._recv_size(max_bytes)
        if len(self._buffer):
            return self._buffer.take_some(max_bytes)
        return self._recv_once(max_bytes)

    def recv_exactly(self, size: int) -> bytes:
        """Exactly ``size`` bytes; :class:`~enchufe.errors.IncompleteRead` if EOF comes first."""
        _ranges.integer(size, "size", 0)
        while (data := self._buffer.take_exactly(size)) is None:
            chunk = self._recv_once(self._buffer.wanted(size))
            if not chunk:
                raise self._buffer.incomplete(size, self._where())
            self._buffer.feed(chunk)
        return data

    def recv_until(self, delimiter: bytes = b"\n", *, max_bytes: int = DEFAULT_MAX_UNTIL) -> bytes:
        """Bytes up to and including ``delimiter``.

        At EOF, returns what is left without a delimiter (``b""`` when nothing is), like a file's
        ``readline``.  :class:`~enchufe.errors.ProtocolError` if ``max_bytes`` pass without one.
        """
        while (data := self._buffer.take_until(delimiter, max_bytes, self._where())) is None:
            chunk = self._recv_once(DEFAULT_RECV_SIZE)
            if not chunk:
                return self._buffer.take_rest()
            self._buffer.feed(chunk)
        return data

    def recv_message(self, *, max_size: int = framing.DEFAULT_MAX_MESSAGE_SIZE) -> bytes | None:
        """One length-prefixed message, or ``None`` at a clean EOF between messages.

        EOF inside a message raises :class:`~enchufe.errors.IncompleteRead`; an announced length
        above ``max_size`` raises :class:`~enchufe.errors.ProtocolError` before reading it.
        """
        framing._check_max_size(max_size)  # before waiting for a header
        try:
            header = self.recv_exactly(framing.HEADER_SIZE)
        except IncompleteRead as exc:
            if not exc.partial:
                return None
            raise
        return self.recv_exactly(framing.parse_header(header, max_size=max_size))

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd {self._fd}"
        return f"<Connection {self.local_address} ↔ {self.peer_address} {state}>"


class TLSConnection(TLSStreamCore, Connection):
    """A :class:`Connection` over TLS: the same calls, through a TLS channel.

    * ``connect()`` returns it with the handshake done and the peer accepted; ``accept()``
      returns it before the handshake, which runs at its first use or at :meth:`handshake`
      (so that a client that never finishes holds up nobody but itself).
    * ``shutdown_write`` sends close_notify and keeps reading (the peer may answer after it);
      ``recv`` returns ``b""`` at the peer's close_notify, and raises
      :class:`~enchufe.errors.TLSTruncated` if the connection ends without one.
    * A refused handshake raises :class:`~enchufe.errors.TLSRefused` (``reason`` says why);
      one that does not finish within ``handshake-timeout`` seconds,
      :class:`~enchufe.errors.TimedOut`.  Either is raised again by any later use.

    One thread may send while another receives, as on a plain connection.
    """

    def __init__(self, sock: socket.socket, setup: TLSSetup) -> None:
        super().__init__(sock, setup)
        self._state_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._handshake_lock = threading.Lock()

    def handshake(self, timeout: float | None = None) -> None:
        """Run the handshake if it has not run: returns once it is done and the peer accepted.
        Bounded by the address's ``handshake-timeout`` (default 10 s), or by ``timeout`` seconds
        when that is shorter."""
        if self._channel.handshaken:
            return
        self._check()
        with self._handshake_lock:
            self._bound = bound = self._handshake_bound(timeout)
            deadline = time.monotonic() + bound[0]
            before = self._sock.gettimeout()
            try:
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise self._handshake_timed_out(bound)
                    self._sock.settimeout(left)
                    if self._handshake_once():
                        return
            finally:
                with contextlib.suppress(OSError):
                    self._sock.settimeout(before)
                    self._nonblocking_underneath()

    def set_timeout(self, seconds: float | None) -> None:
        super().set_timeout(seconds)
        self._nonblocking_underneath()

    def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.handshake()
        super().send_all(data)

    def shutdown_write(self) -> None:
        self.handshake()
        super().shutdown_write()

    def recv(self, max_bytes: int = DEFAULT_RECV_SIZE) -> bytes:
        self.handshake()
        return super().recv(max_bytes)

    def recv_exactly(self, size: int) -> bytes:
        self.handshake()
        return super().recv_exactly(size)

    def recv_until(self, delimiter: bytes = b"\n", *, max_bytes: int = DEFAULT_MAX_UNTIL) -> bytes:
        self.handshake()
        return super().recv_until(delimiter, max_bytes=max_bytes)

    # -- non-blocking use, for a caller that waits on ``socket`` itself (poll/select): the
    # socket is non-blocking (``conn.socket.setblocking(False)``) and the handshake is done (an
    # accepted connection's runs here first, blocking, within its handshake-timeout).  Not to be
    # mixed with blocking calls of another thread on the same connection.

    def send_nowait(self, data: memoryview) -> int:
        """Encrypt and send the start of ``data`` (up to 256 KiB where OpenSSL writes the socket
        itself, its records in one system call; else 64 KiB): the count of plaintext bytes
        whose ciphertext the kernel took, ``0`` when it would block.  After ``0``, call again
        with the same bytes once the socket is writable: what was encrypted already is counted
        then.  Errors as :meth:`send_all` (:class:`~enchufe.errors.ClosedError` after
        ``shutdown_write``, :class:`~enchufe.errors.ConnectionReset` …)."""
        with self._nowait():
            self._check_send()
            try:
                return self._send_once(data)
            except BlockingIOError:
                return 0

    def recv_nowait(self, max_bytes: int = DEFAULT_RECV_SIZE) -> bytes | None:
        """Up to ``max_bytes`` of plaintext already there or readable now; ``None`` when the
        socket has nothing yet (wait readable); ``b""`` at the peer's close_notify.  A
        connection that ends without close_notify raises :class:`~enchufe.errors.TLSTruncated`.
        Call it until ``None``: records read into the TLS layer no longer make the socket
        readable."""
        max_bytes = self._recv_size(max_bytes)
        with self._nowait():
            if len(self._buffer):
                return self._buffer.take_some(max_bytes)
            try:
                return self._recv_once(max_bytes)
            except BlockingIOError:
                return None

    def recv_into_nowait(self, buffer: memoryview) -> int | None:
        """:meth:`recv_nowait` into ``buffer`` (at least 16 KiB, a record's room): the count,
        ``0`` at the peer's close_notify, ``None`` when the socket has nothing yet.  On a socket
        OpenSSL decrypts into ``buffer`` itself, with no copy; errors as :meth:`recv_nowait`."""
        with self._nowait():
            if len(self._buffer):
                data = self._buffer.take_some(len(buffer))
                buffer[: len(data)] = data
                return len(data)
            try:
                return self._recv_once_into(buffer)
            except BlockingIOError:
                return None

    def shutdown_write_nowait(self) -> bool:
        """Queue close_notify (the peer reads EOF; this side keeps reading) and send what can go:
        ``True`` when all of it went, ``False`` when the rest waits for :meth:`flush_nowait`."""
        with self._nowait():
            try:
                self._shutdown_write()
            except BlockingIOError:
                return False
            return True

    def flush_nowait(self) -> bool:
        """Send the ciphertext the kernel had no room for (see :attr:`wants_write`): ``True``
        when none is left, ``False`` when the socket would block again."""
        with self._nowait():
            try:
                self._flush()
            except BlockingIOError:
                return False
            return True

    @property
    def wants_write(self) -> bool:
        """Ciphertext is waiting for room in the kernel: wait writable, then :meth:`flush_nowait`
        (or send more)."""
        return self._owes_peer

    @contextlib.contextmanager
    def _nowait(self) -> Iterator[None]:
        self.handshake()
        self._polled = True  # the TLS layer's calls let EAGAIN through, as on the asyncio side
        try:
            yield
        finally:
            del self._polled  # the class's own value again (blocking calls)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd {self._fd}"
        return f"<TLSConnection {self.local_address} ↔ {self.peer_address} {state}>"


class Listener(ListenerCore, Closing):
    """A passive stream socket.  ``accept()`` returns the next :class:`Connection`.

    Iterating yields connections until the listener is closed.  ``address`` is the real bound
    address (port 0 resolved).  ``close()`` may be called from another thread to stop a blocked
    ``accept()``, which then raises :class:`~enchufe.errors.ClosedError`.  A unix listener
    removes its socket file on close, if the file is still its own.

    A TLS listener (``tls://``, ``tls+unix:``) returns :class:`TLSConnection` objects whose
    handshake has not run yet; ``tls_pin`` is the pin of a ``cert=auto`` certificate.
    """

    def accept(self) -> Connection:
        """Wait for the next client and return its connection (a TLS one before its handshake).

        In the main thread the wait also watches the signal wake-up pipe (see
        :mod:`enchufe._wakeup`), so that a signal handler runs at once (raising, or closing
        this listener) even when the signal lands just before the wait or another thread takes
        it."""
        self._wait_for_client()
        conn = self._accept_once()
        setup = self._tls  # read once the client is there: reload_tls() may have run meanwhile
        if setup is None:
            return self._wrap(conn, Connection)
        return self._wrap(conn, functools.partial(TLSConnection, setup=setup))

    def __iter__(self) -> Iterator[Connection]:
        while True:
            try:
                yield self.accept()
            except ClosedError:
                return
            except ConnectionReset:
                continue  # ECONNABORTED: that client left while queued; the next may come

    def _wait_for_client(self) -> None:
        """Main thread only: poll the listener and the wake-up pipe until a client is there, or
        the listener is closed (by a signal's handler, or another thread).  A signal whose
        handler does neither (e.g. SIGUSR1's reload) lets the wait go on."""
        if self._sock.gettimeout() is not None:
            return  # a bounded (or non-blocking) accept() is left as its owner set it
        wake = _wakeup.signal_fd()
        if wake is None:
            return
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(wake, select.POLLIN)
        while not self._closed:
            ready = poller.poll()
            if any(fd != wake for fd, _ in ready):
                return  # a client, or the socket shut down or closed: accept() says which
            _wakeup.drain()  # the handler runs at the next bytecode, before the next poll

    def _wake_waiters(self) -> None:
        # close() alone does not wake a thread blocked in accept() on Linux; shutdown() does.
        with contextlib.suppress(OSError):
            _calls.shutdown(self._sock, socket.SHUT_RDWR)

    def __repr__(self) -> str:
        return f"<Listener {self.address}{' closed' if self._closed else ''}>"


def connection_over(sock: socket.socket, setup: TLSSetup | None, timeout: float | None = None) -> Connection:
    """The connection over a connected ``sock``: plain when ``setup`` is ``None``, else a
    :class:`TLSConnection` with its handshake done, within ``timeout`` if that is shorter than
    the address's ``handshake-timeout`` (:class:`~enchufe.errors.TLSRefused` or
    :class:`~enchufe.errors.TimedOut` if not, and ``sock`` is closed then)."""
    if setup is None:
        return Connection(sock)
    conn = TLSConnection(sock, setup)
    try:
        conn.handshake(timeout)
    except BaseException:
        conn.close()
        raise
    return conn

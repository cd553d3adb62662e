"""TLS on a stream connection, shared by ``enchufe.sync`` and ``enchufe.aio``: one attempt each.

A connection to or from a TLS address is a subclass of the plain one whose ``_send_once``,
``_recv_once`` and ``_shutdown_write`` move bytes through a :class:`~enchufe.tlschannel.TLSChannel`
instead of straight to the kernel; the choice is made once, when the connection is made, so a
plain connection pays nothing for TLS.  As in :mod:`enchufe._streams`, every method makes at
most one attempt at each system call: blocking sockets wait in the kernel, the asyncio side
(``_polled``) gets ``BlockingIOError`` and waits on the loop before calling again.

Where it can, the channel is on the socket: OpenSSL reads and writes it itself, and the
waiting is done here (see :mod:`enchufe._tlscore`, which holds the state and that path).

Ciphertext the kernel did not take yet is kept in ``_unsent`` and goes first at the next
attempt; ``_send_once`` counts plaintext as sent only once its ciphertext is gone, so
``send_all`` still returns only once the kernel has everything.  Before a receive waits for
the peer, what this side owes the peer is flushed (or the peer may never answer).

The sync side can use one connection from two threads (one sending, one receiving), as with a
plain socket: OpenSSL's state is guarded by ``_state_lock``, and ``_send_lock`` keeps the
ciphertext in the order it was made.  Neither lock is held while waiting to receive.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import time

from . import _calls
from ._tlscore import (
    DRAIN_RECEIVES,
    LINGER,
    RECV_CHUNK,
    SEND_CHUNK,
    NoLock,
    TLSCore,
    unacknowledged,
)
from ._tlssetup import (
    MAX_CLIENT_CONTEXTS,
    MAX_SESSIONS,
    TLSSetup,
    client_context,
    client_setup,
    forget_sessions,
    keep_session,
    server_setup,
    tls_params,
    with_tls,
)
from .errors import NetworkError, TimedOut, TLSRefused, TLSTruncated
from .i18n import _

# What this module's importers (the endpoints, the relay, the CLI) take from it besides its own.
__all__ = [
    "MAX_CLIENT_CONTEXTS",
    "MAX_SESSIONS",
    "NoLock",
    "TLSSetup",
    "TLSStreamCore",
    "client_context",
    "client_setup",
    "forget_sessions",
    "server_setup",
    "tls_params",
    "with_tls",
]

# ssl (and OpenSSL) load with the first TLS address, not with the package: `enchufe --help` and
# plain sockets never pay for them.  Hence the imports of _tls and tlschannel inside functions.


class TLSStreamCore(TLSCore):
    """A TLS stream connection's operations: send, receive, shut down, close, the handshake.
    The sync and asyncio connections add how they wait."""

    def _send_once(self, view: memoryview) -> int:
        """Encrypt up to :data:`SEND_CHUNK` bytes of ``view`` and send them: the count of
        plaintext bytes whose ciphertext the kernel has taken (``BlockingIOError`` when not all
        of it: the next call, with the same ``view``, finishes it and counts it)."""
        if self._alias is not None:
            return self._send_direct(view)
        carried = self._carried
        if carried is not None:  # encrypted by an earlier call; its ciphertext still going out
            self._flush()
            self._carried = None
            # After a cancelled send_all the caller may bring other bytes: those still go.
            return len(carried) if view[: len(carried)] == carried else 0
        chunk = view[:SEND_CHUNK]
        with self._state_lock:
            self._channel.write(chunk)
        try:
            self._flush()
        except BlockingIOError:
            self._carried = bytes(chunk)
            raise
        return len(chunk)

    def _recv_once(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of plaintext: ``b""`` once the peer sent close_notify;
        :class:`~enchufe.errors.TLSTruncated` if the connection ended without one, unless a
        send met a reset before (the kernel says a reset once, and the read after it EOF): then
        that :class:`~enchufe.errors.ConnectionReset`."""
        self._check()
        try:
            if self._alias is not None:
                return self._recv_direct(max_bytes)
            return self._recv_buffered(max_bytes)
        except TLSTruncated as truncated:
            raise self._reset_or(truncated) from None

    def _recv_once_into(self, buffer: memoryview) -> int:
        """:meth:`_recv_once` into ``buffer`` (16 KiB or more): the count, ``0`` at close_notify.
        On the socket, OpenSSL decrypts into ``buffer`` itself."""
        self._check()
        try:
            if self._alias is not None:
                return self._recv_direct_into(buffer)
            data = self._recv_buffered(len(buffer))
        except TLSTruncated as truncated:
            raise self._reset_or(truncated) from None
        buffer[: len(data)] = data
        return len(data)

    def _recv_buffered(self, max_bytes: int) -> bytes:
        """:meth:`_recv_once` through the channel's memory buffers."""
        channel = self._channel
        while True:
            with self._state_lock:
                data = channel.read(max_bytes)
            if data is not None:
                return data
            self._flush_quietly()
            try:
                raw = _calls.recv(self._sock, RECV_CHUNK)
            except OSError as exc:
                refusal = channel.alpn_refusal() if isinstance(exc, ConnectionResetError) else None
                raise (refusal or self._translated(exc, f"receive from {self._where()}")) from exc
            with self._state_lock:
                channel.feed(raw)

    def _shutdown_write(self) -> None:
        """Send close_notify: the peer reads EOF, and this side keeps reading (TLS 1.3 allows
        the peer to answer).  The TCP or unix stream itself stays open both ways."""
        self._check()
        if self._write_shut:
            return
        self._write_shut = True
        self._close_write()
        self._flush()

    def close(self) -> None:
        """Take in what arrived unread (session tickets above all: unread, they would make the
        close a reset that loses the last bytes sent), send close_notify if it can go at once
        (the peer then reads a clean EOF, not a truncation: closing is deliberate), keep a
        client's session for the next connection to the same server, then close the socket.
        A sync TCP connection waits up to :data:`LINGER` seconds for the peer to acknowledge
        what it sent (:meth:`_linger`), a sync unix one as long for room for its close_notify
        (a peer slow to read leaves none at once); nothing else waits for the peer.  Idempotent."""
        if not self._closed and self._channel.handshaken and self._failed is None:
            self._say_goodbye()
        self._let_go()
        super().close()

    def _say_goodbye(self) -> None:
        import ssl

        with contextlib.suppress(OSError, ssl.SSLError, NetworkError):
            self._sock.setblocking(False)  # never wait long for a peer that does not read
            self._drain()
            if not (self._write_shut or self._channel.truncated):
                self._close_write()
            self._flush_now()
            if not self._polled:
                self._linger(time.monotonic() + LINGER, self._sock.family != socket.AF_UNIX)
        if self._session_key is not None:
            with self._state_lock:
                keep_session(self._session_key, self._channel.session())

    def _flush_now(self) -> None:
        """Send what the kernel takes now of the ciphertext made (the socket is non-blocking)."""
        if self._send_lock.acquire(blocking=False):
            try:
                self._flush_held()
            except BlockingIOError:
                pass
            finally:
                self._send_lock.release()

    def _drain(self) -> bool:
        """Receive what the kernel holds for this socket, without waiting, and let TLS take it
        in (:meth:`TLSChannel.drain`); at most :data:`DRAIN_RECEIVES` receives, for a peer
        that does not stop sending.  Whether the peer's end (EOF) came."""
        if self._alias is not None:
            return self._drain_direct()
        eof = False
        for _attempt in range(DRAIN_RECEIVES):
            try:
                raw = _calls.recv(self._sock, RECV_CHUNK)
            except OSError:
                break
            with self._state_lock:
                self._channel.feed(raw)
            if not raw:
                eof = True
                break
        with self._state_lock:
            self._channel.drain()
        return eof

    def _linger(self, deadline: float, acknowledged: bool = True) -> None:
        """Wait, until ``deadline`` at most, for the peer's kernel to acknowledge every byte
        sent, taking in what arrives meanwhile.

        A TLS 1.3 server sends its session tickets once it has read the client's Finished,
        which may be after a client that only writes has closed: data arriving for a closed
        socket is answered with a reset, and a reset throws away what was still queued to
        send.  Waiting for the queue to empty first (what socat's ``-t`` does too) closes that
        window; a peer that stops reading costs at most :data:`LINGER` seconds.  With
        ``acknowledged`` false (a unix socket: what it sent is not lost), only until the
        ciphertext made has gone."""
        import select

        poller = select.poll()  # not select(): a busy server's descriptors go past 1024
        poller.register(self._sock, select.POLLIN)
        while self._unsent or (acknowledged and unacknowledged(self._sock)):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if poller.poll(min(left, 0.005) * 1000) and self._drain():
                return  # the peer closed: nothing more it would read
            self._flush_now()

    # -- the handshake

    def _handshake_once(self) -> bool:
        """One step of the handshake: ``True`` once done and the peer accepted.

        On the asyncio side ``BlockingIOError`` means: wait (writable while :attr:`_owes_peer`,
        else readable) and call again.  Raises :class:`~enchufe.errors.TLSRefused` with the
        reason in words; a failure is kept and raised again by any later use."""
        if self._failed is not None:
            raise self._failed
        try:
            with self._state_lock:
                done = self._advance()
        except TLSRefused as exc:
            self._failed = exc
            if exc.after_handshake:
                with self._state_lock:  # no alert was made, but session tickets: not for it
                    self._channel.outgoing()
            self._flush_quietly()  # the alert that tells the peer why
            self._discard_unread()
            raise
        except OSError as exc:  # on the socket: a reset met by OpenSSL
            raise self._handshake_failed(exc) from exc
        try:
            self._flush()
            if done:
                return True
            if self._alias is not None:
                wanted = select.POLLOUT if self._channel.wants_write else select.POLLIN
                self._wait_for(wanted)
                return False
            raw = _calls.recv(self._sock, RECV_CHUNK)
        except BlockingIOError:
            if self._polled:
                raise
            raise self._handshake_failed(TimeoutError()) from None
        except OSError as exc:
            raise self._handshake_failed(exc) from exc
        with self._state_lock:
            self._channel.feed(raw)
        return False

    def _handshake_failed(self, exc: OSError) -> Exception:
        """What the socket said during the handshake, as the error to raise."""
        if isinstance(exc, TimeoutError) and exc.errno is None:
            return self._handshake_timed_out()
        if isinstance(exc, ConnectionError):
            from ._tls_refusals import explain

            error: Exception = explain(exc, server_side=self._channel.server_side)
        else:
            error = self._translated(exc, f"complete the TLS handshake with {self._where()}")
        self._failed = error
        return error

    def _handshake_timed_out(self, bound: tuple[float, str] | None = None) -> TimedOut:
        seconds, what = bound or self._bound or self._handshake_bound(None)
        error = TimedOut(
            _("the TLS handshake with {peer} did not finish within {seconds} s ({bound})").format(
                peer=self._where(), seconds=f"{seconds:g}", bound=what
            ),
            errno=errno.ETIMEDOUT,
            action="handshake",
        )
        self._failed = error
        return error

    #: The bound of the handshake under way (seconds, what set it): a timeout the socket raises
    #: mid-handshake is reported against it.
    _bound: tuple[float, str] | None = None

    def _handshake_bound(self, timeout: float | None) -> tuple[float, str]:
        """How long the handshake may take, and what says so: the address's
        ``handshake-timeout``, or the caller's connect ``timeout`` when that is shorter (a
        client that gives up after 0.5 s means the whole attempt, handshake included)."""
        if timeout is not None and timeout < self._params.handshake_timeout:
            return timeout, _("the connect timeout")
        return self._params.handshake_timeout, "handshake-timeout"

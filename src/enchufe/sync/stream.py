"""Blocking stream endpoints: :class:`Connection` and :class:`Listener` for tcp and unix alike."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from .. import _calls, _ranges, framing
from .._buffer import DEFAULT_MAX_UNTIL, DEFAULT_RECV_SIZE
from .._endpoint import Closing
from .._streams import ListenerCore, StreamCore
from ..errors import ClosedError, ConnectionReset, IncompleteRead

__all__ = ["Connection", "Listener"]


class Connection(StreamCore, Closing):
    """A connected stream socket: TCP over IPv4 or IPv6, or a unix stream socket.

    * ``recv`` returns ``b""`` if and only if the peer has closed its sending side (EOF).
    * ``send_all`` returns once the kernel has taken every byte (backpressure: nothing is
      buffered in Python); it raises :class:`~enchufe.errors.ConnectionReset` if the peer is gone.
    * ``shutdown_write`` sends EOF to the peer and keeps the receiving side open (half-close).
    * ``close`` releases the socket; it is idempotent.  Further use raises
      :class:`~enchufe.errors.ClosedError`.

    Operating-system errors surface as :class:`~enchufe.errors.NetworkError` subclasses.
    """

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


class Listener(ListenerCore, Closing):
    """A passive stream socket.  ``accept()`` returns the next :class:`Connection`.

    Iterating yields connections until the listener is closed.  ``address`` is the real bound
    address (port 0 resolved).  ``close()`` may be called from another thread to stop a blocked
    ``accept()``, which then raises :class:`~enchufe.errors.ClosedError`.  A unix listener
    removes its socket file on close, if the file is still its own.
    """

    def accept(self) -> Connection:
        """Wait for the next client and return its connection."""
        return self._wrap(self._accept_once(), Connection)

    def __iter__(self) -> Iterator[Connection]:
        while True:
            try:
                yield self.accept()
            except ClosedError:
                return
            except ConnectionReset:
                continue  # ECONNABORTED: that client left while queued; the next may come

    def _wake_waiters(self) -> None:
        # close() alone does not wake a thread blocked in accept() on Linux; shutdown() does.
        with contextlib.suppress(OSError):
            _calls.shutdown(self._sock, socket.SHUT_RDWR)

    def __repr__(self) -> str:
        return f"<Listener {self.address}{' closed' if self._closed else ''}>"

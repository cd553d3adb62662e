"""TLS without I/O: bytes from the socket in, plaintext and bytes for the socket out.

A :class:`TLSChannel` wraps ``ssl.SSLObject`` over two memory BIOs, in the style of h11: it
never touches a socket, so the sync API, the asyncio API and the relay's event engine drive the
same object and differ only in how they wait.  The driver's loop is always the same::

    channel.feed(sock.recv(65536))      # b"" when the socket reached EOF
    done = channel.handshake()          # or: data = channel.read(n)
    sock.sendall(channel.outgoing())    # after every call: TLS may have something to say

A driver that moves every record of a busy connection (the relay) does the same in fewer calls:
``receive(data)`` is ``feed`` then ``read``, ``encrypt(data)`` is ``write`` then ``outgoing``, and
``more`` says whether a read may give something before the socket is read again (records that
came glued to others, or to the handshake's last flight).

Why not ``SSLSocket``: TLS 1.3 lets a side send close_notify and keep reading (a client that
says "that was my request" and waits for the answer).  ``SSLSocket.unwrap()`` cannot: it sends
close_notify, then reads the peer's on the socket, meets the answer and fails
(``APPLICATION_DATA_AFTER_CLOSE_NOTIFY``), losing it.  Here reading goes on.

On a socket (``sock=``: the relay, the endpoints), OpenSSL reads and writes it itself, as
``ssl.SSLSocket`` does: records are decrypted straight into the caller's buffer (:meth:`read`,
:meth:`read_into`) and encrypted straight into the socket (:meth:`send`), with none of the copies
into and out of the memory BIOs (half of what a MiB cost).  The rest (the handshake, its checks
and narration, EOF and truncation) is the same; close_notify is caught on its way out and left
in :meth:`outgoing` (:meth:`close_write` says why), so that the peer can still answer.

EOF: close_notify from the peer is a clean end (``read`` returns ``b""``); the socket's EOF
without one is :class:`TLSTruncated` (a peer, or something in the middle, cut the stream: what
arrived may be incomplete), never a silent EOF.

With :mod:`enchufe.trace` on, the channel narrates what TLS does, prefixed with its ``label``
(the driver's name for the connection, e.g. ``tls fd 4``): what the handshake offers, the peer's
certificate, how it was verified, what was agreed, and close_notify sent, received or missing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
from collections.abc import Callable
from typing import cast

from . import _tls_batch, _tls_seen, _tls_sessions, trace
from . import _tls_trace as _trace
from ._tls import TLSRefused, check_client_certificate, check_server_certificate, info
from ._tls_batch import FULL_RECORD_FLOOR, RECORD
from ._tls_refusals import TRUNCATED, alpn_refused, explain
from ._tls_socket import on_socket, shutdown_caught
from .errors import TLSTruncated
from .i18n import _
from .tlsinfo import TLSInfo
from .tlsparams import TLSParams

__all__ = ["TLSChannel", "TLSTruncated"]

#: How many of the peer's first bytes are kept, to show what a peer that does not speak TLS sent.
_FIRST_BYTES = 64


class TLSChannel:
    """One side of a TLS connection, as a state machine over bytes.

    ``params`` are the address's TLS settings, checked after the handshake (pins on a client;
    ``allow-san``/``allow-cn`` and ALPN on a server).  Every method may leave bytes in
    :meth:`outgoing`, which the driver sends before it waits.  A client given a ``session``
    (:meth:`session` of an earlier connection made from the same context) offers to resume it;
    ``info.resumed`` says whether the server agreed.
    """

    #: On a socket, from the first write that is batched on: its records go out together.  A
    #: class default, not set in ``__init__``: one attribute more per connection would leave
    #: Python's shared-key instance dict (30 keys at most), 1.3 KiB more per idle connection.
    _batch: _tls_batch.Batcher | None = None

    def __init__(
        self,
        context: ssl.SSLContext,
        params: TLSParams,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        label: str = "tls",
        session: ssl.SSLSession | _tls_sessions.Session | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._context = context
        #: the socket OpenSSL reads and writes itself (see the module's docstring), or ``None``
        self.sock = sock
        if sock is None:
            self._ssl = context.wrap_bio(
                self._in, self._out, server_side=server_side, server_hostname=server_hostname
            )
        else:
            self._ssl = on_socket(context, sock, server_side, server_hostname)
        if session is not None:
            _tls_sessions.offer(self._ssl, session)
        # The C object's own read and write: ssl.SSLObject's are Python functions that only call
        # them, and the relay calls them for every record it moves.
        core = getattr(self._ssl, "_sslobj", self._ssl)
        self._decrypt = core.read
        self._encrypt = core.write
        self._decrypt_into = cast(Callable[[int, memoryview], int], core.read)  # with a buffer: a count
        self._plaintext_left = core.pending
        self._params = params
        self._server_side = server_side
        self._server_hostname = server_hostname
        self._first = b""
        self._socket_eof = False
        self._handshaken = False
        self._write_closed = False
        self._read_closed = False
        self._held = b""  # plaintext decrypted by close_write() before the caller read it
        self._heard = False  # whether any plaintext came from the peer
        #: The peer's stream ended without its close_notify (reported as TLSTruncated).  OpenSSL
        #: then counts the connection failed (it sends its own decode_error alert, at once on a
        #: socket), and a close_notify after that makes nothing: closing does not ask for one.
        self.truncated = False
        self._started = False
        self._error: Exception | None = None  # met by read_into after data: raised next time
        #: On a socket: whether the handshake waits for the socket to take what it sends.
        self.wants_write = False
        #: On a socket: whether the last :meth:`read_into` left the socket to epoll (it was empty,
        #: or a short record ended a message).
        self.drained = False
        self._largest = FULL_RECORD_FLOOR  # of the records' plaintext read_into met: see there
        self.label = label
        self.info: TLSInfo | None = None
        #: Whether :meth:`read` may give something (data, the end, an error) without more input:
        #: False only when the last read showed it surely needs more.  True at first (the
        #: handshake may have taken in records that came right behind it).
        self.more = True
        #: What :meth:`outgoing` reads: its ``pending`` tells, without a call, whether it has bytes.
        self.outbox = self._out

    # --- input and output

    def feed(self, data: bytes) -> None:
        """Give the channel what the socket delivered; ``b""`` means the socket reached EOF."""
        if not data:
            if not self._socket_eof:
                self._socket_eof = True
                self._in.write_eof()
            return
        if len(self._first) < _FIRST_BYTES:
            self._first += data[: _FIRST_BYTES - len(self._first)]
        self._in.write(data)

    def receive(self, data: bytes, size: int = 65536) -> bytes | None:
        """:meth:`feed` then :meth:`read` in one call: the same results and errors as ``read``."""
        if data and self._handshaken:
            self._in.write(data)  # feed's other concerns are the handshake's
        else:
            self.feed(data)
        return self.read(size)

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        """:meth:`write` then :meth:`outgoing` in one call: the bytes for the peer, in order."""
        if self._write_closed:
            raise ssl.SSLError("write after close_notify")
        self._encrypt(data)
        return self._out.read()

    def outgoing(self) -> bytes:
        """Bytes the peer must be sent, in order; empty when there are none."""
        return self._out.read() if self._out.pending else b""

    @property
    def socket_eof(self) -> bool:
        return self._socket_eof

    # --- the handshake

    def handshake(self) -> bool:
        """Advance the handshake: ``True`` once it is done and the peer accepted, ``False`` when
        more input is needed.  Raises :class:`TLSRefused` with the reason in words."""
        if self._handshaken:
            return True
        if not self._started:
            self._started = True
            if trace.enabled():
                self._narrate(_trace.offer(self._params, self._server_side, self._server_hostname))
        try:
            self._finish_handshake()
        except TLSRefused as exc:
            if trace.enabled():
                self._narrate(_("handshake refused ({reason}): {error}").format(reason=exc.reason, error=exc))
            raise
        return self._handshaken

    def _finish_handshake(self) -> None:
        if self.sock is not None:
            self.wants_write = False
            if not self._first:
                self._peek()
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            if self._socket_eof:
                raise explain(EOFError(), server_side=self._server_side) from None
            return
        except ssl.SSLWantWriteError:  # on a socket whose buffer is full: wait until it takes more
            self.wants_write = True
            return
        except (ssl.SSLError, OSError) as exc:
            if not isinstance(exc, ssl.SSLError) and self.sock is not None:
                raise  # a reset: the driver's to report, as when it reads the socket itself
            raise self._explained(
                exc, first_bytes=self._first, certificate=_tls_seen.certificate(self._ssl)
            ) from None
        _tls_seen.quiet(self._ssl, self._context)
        try:
            if self._server_side:
                check_client_certificate(self._ssl, self._params)
            else:
                check_server_certificate(self._ssl, self._params)
        except TLSRefused as exc:
            exc.after_handshake = True
            raise
        self._handshaken = True
        self.info = info(self._ssl)
        if trace.enabled():
            for line in _trace.agreed(self.info, self._params, self._server_side):
                self._narrate(line)

    def _peek(self) -> None:
        """On a socket: the peer's first bytes, left for OpenSSL (shown if it does not speak TLS)."""
        assert self.sock is not None
        with contextlib.suppress(OSError):  # nothing yet, or a reset the handshake will meet
            self._first = self.sock.recv(_FIRST_BYTES, socket.MSG_PEEK)

    def _explained(
        self, exc: Exception, first_bytes: bytes = b"", certificate: bytes | None = None
    ) -> TLSRefused:
        return explain(
            exc,
            server_side=self._server_side,
            server_name=self._server_hostname,
            first_bytes=first_bytes,
            certificate=certificate,
            established=self._handshaken,
            alpn=self._params.alpn if self._params is not None else None,
        )

    def _narrate(self, text: str) -> None:
        trace.emit(f"{self.label}: {text}")

    # --- data

    def read(self, size: int = 65536) -> bytes | None:
        """Up to ``size`` bytes of plaintext; ``b""`` once the peer sent close_notify; ``None``
        when :meth:`feed` must bring more.  Raises :class:`TLSTruncated` when the socket ended
        without close_notify, :class:`TLSRefused` if the peer broke the protocol."""
        self.more = True  # unless it surely needs input (below): asking again costs little
        if self._held:
            data, self._held = self._held[:size], self._held[size:]
            return data
        if self._read_closed:
            return b""
        try:
            data = self._decrypt(size)
        except ssl.SSLWantReadError:
            if self._socket_eof:
                raise self._truncated() from None
            self.more = False
            return None
        except ssl.SSLWantWriteError:  # on a socket: TLS must send first (a key update's answer)
            self.wants_write = True
            return None
        except ssl.SSLZeroReturnError:
            data = b""
        except ssl.SSLEOFError:
            raise self._truncated() from None
        except ssl.SSLError as exc:
            raise self._explained(exc) from None
        if not data:  # close_notify (Python raises SSLZeroReturnError only once this side sent its own)
            self._read_closed = True
            if trace.enabled():
                self._narrate(_("close_notify received: the peer's end of data"))
            return data
        self._heard = True
        if self._in.pending:
            if len(data) < size:
                return self._gather(data, size)
        elif len(data) < size:
            self.more = False  # the record was read whole, and no other came
        return data

    def read_into(self, buffer: memoryview) -> int:
        """On a socket: decrypt into ``buffer`` the records the socket holds now, whole, while
        ``buffer`` has room for one and they are full ones (a short record ends a message: the
        read that would say EAGAIN is left to epoll); the bytes put there.  ``0`` once the peer
        sent close_notify; ``-1`` when there is nothing yet (:attr:`drained`: wait until the
        socket is readable), or when OpenSSL must first finish sending what a send began, a key
        update's answer (:attr:`wants_write`: wait until the socket is writable).
        :attr:`more` says whether OpenSSL keeps plaintext for a next call (the socket will not
        say so).  Errors as :meth:`read`; one met after some data is raised by the next call.
        ``OSError`` (a reset) passes."""
        if self._error is not None:
            raise self._error
        if self._held:
            size = min(len(self._held), len(buffer))
            buffer[:size] = self._held[:size]
            self._held = self._held[size:]
            self.more = bool(self._held)
            return size
        if self._read_closed:
            return 0
        read = self._decrypt_into
        size = len(buffer)
        total = 0
        self.drained = False
        while size - total >= RECORD or not total:
            # A full record came: likely more behind it, read in one compiled call.
            if total and _tls_batch.reads_records() and (batch := self._batcher()) is not None:
                return self._read_rest(total, *batch.read_records(buffer, total, RECORD, self._largest))
            try:
                n = read(size - total, buffer[total:] if total else buffer)
            except ssl.SSLWantReadError:
                self.drained = True
                self.more = False
                return total or -1
            except ssl.SSLWantWriteError:  # a key update's answer, begun by a send, waits for room
                self.wants_write = True
                return total or -1
            except ssl.SSLZeroReturnError:
                n = 0
            except ssl.SSLError as exc:
                return self._failed_after(exc, total)
            if not n:  # close_notify: reported once what came before it is taken
                return self._later(total, None) if total else self._closed_by_peer()
            total += n
            if n < self._largest:  # a short record: likely the last there is (epoll tells if not)
                self.drained = True
                break
            self._largest = n
        self._heard = True
        self.more = self._plaintext_left() > 0
        return total

    def _read_rest(self, total: int, count: int, largest: int, stop: int, error: int) -> int:
        """:meth:`read_into` after its first record, ``total`` bytes: the outcome of
        :meth:`~enchufe._tls_batch.Batcher.read_records`, told as the loop in Python tells it."""
        total += count
        self._largest = largest
        if stop == _tls_batch.STOP_SHORT or stop == ssl.SSL_ERROR_WANT_READ:
            self.drained = True
        elif stop == ssl.SSL_ERROR_WANT_WRITE:
            self.wants_write = True
        elif stop == ssl.SSL_ERROR_ZERO_RETURN:
            return self._later(total, None)
        elif stop != _tls_batch.STOP_FULL:
            return self._failed_after(_tls_batch.read_error(stop, error), total)
        self._heard = True
        self.more = stop != ssl.SSL_ERROR_WANT_READ and self._plaintext_left() > 0
        return total

    def _failed_after(self, exc: ssl.SSLError, total: int) -> int:
        """:meth:`read_into` met ``exc``: raised now (as :meth:`read` does), or by the next call
        if ``total`` bytes came before it."""
        error = self._truncated() if isinstance(exc, ssl.SSLEOFError) else self._explained(exc)
        if not total:
            raise error from None
        return self._later(total, error)

    def _later(self, total: int, error: Exception | None) -> int:
        """``total`` bytes now; the end (``error``, or close_notify) at the next call."""
        self._heard = True
        self._error = error
        self.more = True
        return total

    def _closed_by_peer(self) -> int:
        self._read_closed = True
        if trace.enabled():
            self._narrate(_("close_notify received: the peer's end of data"))
        return 0

    def send(self, data: bytes | memoryview) -> int:
        """On a socket: encrypt ``data`` and write the records: ``len(data)`` once all went,
        ``0`` when the socket took only part (or none): call again with the same bytes once it
        is writable (OpenSSL remembers what went).  A reset is ``OSError``, and so is a write
        after the peer's close_notify or EOF (the read after a reset); :class:`TLSRefused` when
        TLS wants something else first (a renegotiation)."""
        if self._write_closed:
            raise ssl.SSLError("write after close_notify")
        batch = self._batch
        if batch is None and _tls_batch.batched(len(data)):
            batch = self._batcher()
        try:
            if batch is not None and (batch.owing or _tls_batch.batched(len(data))):
                return batch.send(data)
            n: int = self._encrypt(data)
        except ssl.SSLWantWriteError:
            return 0
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            raise ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET)) from None
        except ssl.SSLError as exc:
            raise self._explained(exc) from None
        return n

    def _batcher(self) -> _tls_batch.Batcher | None:
        """The connection's batcher, made at the first call on a socket; ``None`` where its
        ``SSL *`` cannot be reached (asked again at the next call)."""
        if self._batch is None and self.sock is not None:
            self._batch = _tls_batch.for_channel(self._ssl, self.sock, self._encrypt)
        return self._batch

    def _gather(self, first: bytes, size: int) -> bytes:
        """``first`` and the records already received after it, up to ``size`` bytes in all.

        One read returns one record (16 KiB at most); a driver asked for more would go round
        its whole stack per record.  Whatever stops the gathering (no whole record left, the
        peer's close_notify, an error) is met again, and reported, by the next :meth:`read`."""
        parts = [first]
        total = len(first)
        while total < size and self._in.pending:
            try:
                chunk = self._decrypt(size - total)
            except ssl.SSLWantReadError:
                self.more = False  # the rest of a record is still to come
                break
            except ssl.SSLError:
                break
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
        else:
            self.more = total >= size
        return b"".join(parts)

    def _truncated(self) -> TLSTruncated:
        self.truncated = True
        if trace.enabled():
            self._narrate(_("the connection ended without close_notify: truncated"))
        return self.alpn_refusal() or TLSTruncated(_(TRUNCATED))

    def alpn_refusal(self) -> TLSTruncated | None:
        """The error to say when the server left (no close_notify, or a reset) before a word of
        data, having agreed on no ALPN protocol this client offered: what a server that
        requires one does (it cannot say why: the handshake was done on its side, and Python's
        ssl sends no alert for it).  ``None`` in every other case."""
        if self._server_side or not self._params.alpn or self._heard:
            return None
        if self.info is None or self.info.alpn is not None:
            return None
        return alpn_refused(self._params.alpn)

    def drain(self) -> None:
        """Process what was fed and not read, and drop its plaintext: what TLS sends besides data
        (the session tickets a TLS 1.3 server sends after the handshake, key updates) is taken
        in.  For a driver about to close: a socket closed with data it never read is reset (RST),
        and a reset throws away what this side sent last and the peer did not read yet."""
        self._held = b""
        while True:
            try:
                if not self._ssl.read(65536):
                    return
            except ssl.SSLError:  # nothing whole left, close_notify, or a broken record: done
                return

    def session(self) -> ssl.SSLSession | _tls_sessions.Session | None:
        """This client's session, for a later connection to resume: ``None`` on a server,
        before the handshake, or when it cannot be resumed (a TLS 1.3 server sent no ticket, or
        it came after what was read).  Call it last: the connection may return to its context.

        OpenSSL's own session where :mod:`enchufe._tls_sessions` can take it (shared, not
        copied), else Python's."""
        if self._server_side or not self._handshaken:
            return None
        return _tls_sessions.of(self._ssl, self._context)

    def pending(self) -> int:
        """Plaintext already decrypted and waiting for :meth:`read` (no input needed for it)."""
        return len(self._held) + self._ssl.pending()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` into :meth:`outgoing`."""
        if self._write_closed:
            raise ssl.SSLError("write after close_notify")
        self._encrypt(data)

    def close_write(self) -> None:
        """Queue close_notify: the peer sees EOF; this side can still :meth:`read` what it answers.

        OpenSSL's shutdown goes on to read the peer's close_notify, and fails on (and drops) any
        data it meets instead; so what is waiting is set aside first: decrypted plaintext into
        :meth:`read`'s holding buffer, undecrypted records out of the input BIO and back after."""
        if self._write_closed:
            return
        self._write_closed = True
        if trace.enabled():
            self._narrate(_("close_notify sent: this side's end of data (still reading)"))
        while self._ssl.pending():
            self._held += self._ssl.read(self._ssl.pending())
        if self.sock is not None:
            # The shutdown's close_notify caught, and left for the driver to send after what it
            # sends already; the read that follows it kept off the socket (see _tls_socket).
            owed = self._batch.take_owed() if self._batch is not None else b""
            self._out.write(owed + shutdown_caught(self.sock.fileno(), self._shutdown))
            return
        records = self._in.read() if self._in.pending else b""
        self._shutdown()
        if records:
            self._in.write(records)

    def _shutdown(self) -> None:
        try:
            self._ssl.unwrap()
        except ssl.SSLWantReadError:
            pass  # close_notify is queued; the peer's own comes later, or never (TLS 1.3 allows it)
        except ssl.SSLZeroReturnError:
            self._read_closed = True
        except ssl.SSLError as exc:
            raise self._explained(exc) from None

    @property
    def on_socket(self) -> bool:
        """Whether OpenSSL reads and writes the socket itself (see the module's docstring)."""
        return self.sock is not None

    @property
    def server_side(self) -> bool:
        """Whether this is the server's side (refusals are worded for the side that reads them)."""
        return self._server_side

    @property
    def handshaken(self) -> bool:
        return self._handshaken

    @property
    def write_closed(self) -> bool:
        return self._write_closed

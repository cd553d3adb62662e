"""Length-prefixed framing: carry whole messages (e.g. datagrams) over a byte stream.

Wire format
-----------

Every message is sent as a 4-byte unsigned big-endian length followed by exactly that many
payload bytes::

    +----------------+---------------------------+
    | length (!I)    | payload (length bytes)    |
    +----------------+---------------------------+

A zero length is valid and carries an empty message.  A receiver refuses any announced length
above its limit (:data:`DEFAULT_MAX_MESSAGE_SIZE` unless configured otherwise) as soon as the
4 header bytes are in, before any of the payload is buffered.

Usage
-----

This module does no I/O at all (in the style of h11): the caller moves bytes, the framer only
turns them into messages and back.

Message in, bytes out::

    sock.sendall(encode(b"hello"))          # or framer.send(b"hello")

Bytes in, messages out::

    framer = Framer()
    while data := sock.recv(65536):
        framer.feed(data)
        for message in framer.messages():
            handle(message)
    framer.feed_eof()                       # IncompleteRead if the peer stopped mid-message

A blocking connection that reads with ``recv_exactly`` can skip the :class:`Framer` and use
:func:`parse_header` directly: read :data:`HEADER_SIZE` bytes, ``parse_header`` them, then read
that many payload bytes.

Errors follow :mod:`enchufe.errors`: :class:`~enchufe.errors.ProtocolError` when the peer
announces a message over the limit, :class:`~enchufe.errors.IncompleteRead` when the stream ends
mid-message, :class:`~enchufe.errors.UsageError` when the caller sends a message over the limit
or feeds data after the end of the stream.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from .errors import IncompleteRead, ProtocolError, UsageError
from .i18n import N_, _

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "HEADER",
    "HEADER_SIZE",
    "MAX_WIRE_SIZE",
    "Framer",
    "encode",
    "parse_header",
]

#: The length prefix: one unsigned 32-bit integer, network (big-endian) byte order.
HEADER = struct.Struct("!I")

#: Size of the length prefix in bytes.
HEADER_SIZE = 4
assert HEADER.size == HEADER_SIZE

#: The largest length the 4-byte header can express; no limit may exceed it.
MAX_WIRE_SIZE = 2**32 - 1

#: Default limit on a message's payload: 16 MiB.  Large enough for any datagram (a UDP payload is
#: at most 65507 bytes over IPv4, a jumbogram or a unix datagram a few MiB at most), small enough
#: that a hostile or corrupt length prefix cannot make us allocate gigabytes.
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024

# Once this many consumed bytes sit at the front of the receive buffer (and they are at least
# half of it), they are dropped.  Compacting only then keeps the total copying linear in the
# number of bytes fed, however the stream is chunked.
_COMPACT_THRESHOLD = 64 * 1024


def _check_max_size(max_size: int) -> int:
    if isinstance(max_size, bool) or not isinstance(max_size, int) or not 0 <= max_size <= MAX_WIRE_SIZE:
        raise UsageError(
            _(
                "max_size must be between 0 and {limit} bytes (what a 4-byte length can express), not {value}"
            ).format(limit=MAX_WIRE_SIZE, value=repr(max_size))
        )
    return max_size


#: How the error for an announced length over the limit ends; a command that calls the limit
#: something else (an option) says so in place of this (``_(RAISE_LIMIT_HINT)`` in the message).
RAISE_LIMIT_HINT = N_("raise max_size if it is")


def _check_announced(length: int, max_size: int) -> int:
    if length > max_size:
        raise ProtocolError(
            _(
                "the peer announced a message of {size} bytes, larger than the limit of {limit} bytes; "
                "is it speaking this framing? ({hint})"
            ).format(size=length, limit=max_size, hint=_(RAISE_LIMIT_HINT))
        )
    return length


def encode(message: bytes | bytearray | memoryview, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> bytes:
    """Return the bytes that carry ``message`` on the wire: its length prefix, then the payload.

    ``message`` may be any bytes-like object; its size is counted in bytes.  Raises
    :class:`~enchufe.errors.UsageError` if it is larger than ``max_size`` bytes, since the
    receiving side would refuse it.
    """
    _check_max_size(max_size)
    with memoryview(message) as view:
        size = view.nbytes
        if size > max_size:
            raise UsageError(
                _(
                    "cannot send a message of {size} bytes: the limit is {limit} bytes; "
                    "split it, or raise max_size on both sides"
                ).format(size=size, limit=max_size)
            )
        payload: bytes | memoryview = view if view.c_contiguous else view.tobytes()
        return b"".join((HEADER.pack(size), payload))


def parse_header(header: bytes | bytearray | memoryview, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> int:
    """Return the payload length announced by a :data:`HEADER_SIZE`-byte length prefix.

    Use it to read framed messages with blocking reads: read exactly :data:`HEADER_SIZE` bytes,
    call this, then read exactly the returned number of bytes (possibly 0).

    Raises :class:`~enchufe.errors.ProtocolError` naming the announced length and the limit if
    the length is above ``max_size``, so the caller never tries to read (or allocate) it, and
    :class:`~enchufe.errors.UsageError` if ``header`` is not exactly :data:`HEADER_SIZE` bytes.
    """
    _check_max_size(max_size)
    with memoryview(header) as view:
        if view.nbytes != HEADER_SIZE:
            raise UsageError(
                _("a header is {size} bytes, not {given}").format(size=HEADER_SIZE, given=view.nbytes)
            )
        (length,) = HEADER.unpack(view.tobytes())
    return _check_announced(length, max_size)


class Framer:
    """Turns a byte stream into messages and messages into bytes, without doing any I/O.

    Feed it what arrives with :meth:`feed`, take whole messages out with :meth:`next_message` or
    :meth:`messages`, and call :meth:`feed_eof` when the stream ends.  :meth:`send` encodes an
    outgoing message with this framer's limit.

    A header announcing more than ``max_size`` bytes makes :meth:`feed` raise
    :class:`~enchufe.errors.ProtocolError` as soon as its 4 bytes are in.  The stream is broken
    from then on: the messages complete before the bad header can still be taken out, after
    which :meth:`next_message` raises the same error, as does every further :meth:`feed`
    (which then buffers nothing).
    """

    def __init__(self, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._max_size = _check_max_size(max_size)
        self._buf = bytearray()
        # _buf[:_start] is consumed.  _buf[_start:_scan] holds whole, validated frames not yet
        # taken out.  _buf[_scan:] is the beginning of the next frame; _pending is its payload
        # length once its header has been read and validated, None before that.
        self._start = 0
        self._scan = 0
        self._pending: int | None = None
        self._error: str | None = None
        self._eof = False

    @property
    def max_size(self) -> int:
        """The largest payload, in bytes, this framer accepts and sends."""
        return self._max_size

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken out as messages (headers included)."""
        return len(self._buf) - self._start

    @property
    def at_eof(self) -> bool:
        """Whether :meth:`feed_eof` has been called."""
        return self._eof

    def send(self, message: bytes | bytearray | memoryview) -> bytes:
        """Return the bytes carrying ``message``; :func:`encode` with this framer's limit."""
        return encode(message, max_size=self._max_size)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer ``data`` from the stream (any amount, including none).

        Raises :class:`~enchufe.errors.ProtocolError` if a header now complete announces a
        message over the limit, and :class:`~enchufe.errors.UsageError` after :meth:`feed_eof`.
        """
        if self._eof:
            raise UsageError(_("cannot feed data after feed_eof(): the stream has ended"))
        if self._error is not None:
            raise ProtocolError(self._error)
        self._buf += data
        self._scan_frames()

    def _scan_frames(self) -> None:
        # Advance _scan over every frame now complete, validating each header as soon as it is
        # whole.  Each frame is visited once, so this costs O(frames), not O(bytes).
        buf = self._buf
        end = len(buf)
        while True:
            if self._pending is None:
                if end - self._scan < HEADER_SIZE:
                    return
                (length,) = HEADER.unpack_from(buf, self._scan)
                try:
                    self._pending = _check_announced(length, self._max_size)
                except ProtocolError as exc:
                    # Whatever follows the bad header is not framed data: drop it.
                    del buf[self._scan :]
                    self._error = str(exc)
                    raise
            frame_end = self._scan + HEADER_SIZE + self._pending
            if frame_end > end:
                return
            self._scan = frame_end
            self._pending = None

    def next_message(self) -> bytes | None:
        """Return the next whole message, or None if more data is needed for it.

        An empty message is returned as ``b""``, which is not None.  Raises
        :class:`~enchufe.errors.ProtocolError` once the messages before a bad header are taken.
        """
        start = self._start
        if start == self._scan:
            if self._error is not None:
                raise ProtocolError(self._error)
            return None
        buf = self._buf
        (length,) = HEADER.unpack_from(buf, start)
        payload_start = start + HEADER_SIZE
        message = bytes(buf[payload_start : payload_start + length])
        self._start = payload_start + length
        self._compact()
        return message

    def _compact(self) -> None:
        start = self._start
        if start == len(self._buf):
            # Everything consumed (so _scan == start too and no header is pending).
            self._buf.clear()
            self._start = self._scan = 0
        elif start >= _COMPACT_THRESHOLD and 2 * start >= len(self._buf):
            del self._buf[:start]
            self._scan -= start
            self._start = 0

    def messages(self) -> Iterator[bytes]:
        """Yield every whole message available now, in order, taking each out of the buffer."""
        while (message := self.next_message()) is not None:
            yield message

    def feed_eof(self) -> None:
        """Mark the end of the stream.

        Fine at a message boundary: whole messages still buffered can be taken out afterwards.
        If the stream ended partway through a message, raises
        :class:`~enchufe.errors.IncompleteRead` whose ``partial`` holds the bytes of that
        unfinished frame (its header, or part of it, and any payload); they leave the buffer.
        After this, :meth:`feed` raises :class:`~enchufe.errors.UsageError`.  Calling it again
        does nothing.
        """
        if self._eof:
            return
        self._eof = True
        if self._error is not None:
            return  # the ProtocolError already reported is what went wrong with this stream
        got = len(self._buf) - self._scan
        if got == 0:
            return
        partial = bytes(self._buf[self._scan :])
        del self._buf[self._scan :]
        if self._pending is None:
            message = _(
                "the stream ended in the middle of a message: {got} of the {size} header bytes arrived"
            )
            message = message.format(got=got, size=HEADER_SIZE)
        else:
            message = _(
                "the stream ended in the middle of a message: "
                "{got} of the {size} bytes of the message's payload arrived"
            ).format(got=got - HEADER_SIZE, size=self._pending)
        self._pending = None
        raise IncompleteRead(message, partial)

"""The pumps of a relayed stream with a TLS end (see :mod:`.tls`): :class:`TLSLink`, a TLS
side's channel and the ciphertext waiting for its socket, and :class:`TLSPump`, one direction
moving plaintext through OpenSSL (decrypting what comes from a TLS side, encrypting what goes to
one), never blocking.

Every relayed record passes here, so a step is lean: one read of ``src`` fed and decrypted in
one call of the channel (:meth:`~enchufe.tlschannel.TLSChannel.receive`), the plaintext
encrypted in one (:meth:`~enchufe.tlschannel.TLSChannel.encrypt`) and written to ``dst`` at
once; nothing is copied into a buffer of the pump unless ``dst`` takes only part of it.  A
short read (fewer bytes than asked) means ``src`` was drained: the pump waits for epoll rather
than spend a read on the EAGAIN, unless the channel holds more (:attr:`TLSChannel.more`).

A TLS side whose channel reads and writes its socket itself (:attr:`TLSChannel.on_socket`: a
terminated client, a TLS target) costs about half as much: its records are decrypted straight into the
relay's shared hop buffer (:meth:`TLSChannel.read_into`) and written on from there, and the
plaintext for it is read into that buffer and encrypted straight into its socket
(:meth:`TLSChannel.send`).  Nothing is copied unless ``dst`` takes only part of it; a write
that OpenSSL could not finish keeps its plaintext, to be given again, the same bytes, once the
socket is writable.

OpenSSL (1.1.1 on) answers a peer's key update with the next send to that peer.  If that send
finds the socket full, every read of the peer's records says "want write" until the answer is
out: the reading pump then reads nothing (:attr:`TLSPump.stalled`) until the sending pump's
bytes went (:meth:`TLSLink.hold_reader`).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, Protocol

from .. import trace
from .._nonblocking import read_into
from .._nonblocking import write as traced_write
from ..errors import TLSRefused, TLSTruncated
from ..i18n import _
from .pump import MAX_ROUNDS
from .pump_state import pass_eof

if TYPE_CHECKING:
    from ..tlschannel import TLSChannel

__all__ = ["CHUNK", "Sender", "SocketTLSPump", "TLSLink", "TLSPump", "make_pump", "receive"]

#: Plaintext read (or ciphertext received) per system call; the most a pump holds in flight.
CHUNK = 64 * 1024

_EMPTY = memoryview(b"")

#: ``os.write``, or its narrated twin while tracing.
Writer = Callable[[int, "bytes | memoryview"], int]


class Sender(Protocol):
    """The pump that sends what a link's channel makes (:class:`TLSPump`, or the fault
    pump of :mod:`.faulty_tls`)."""

    @property
    def in_flight(self) -> int: ...

    def queue(self, data: bytes) -> None: ...


class TLSLink:
    """A TLS side's channel, and who sends what it makes for its socket.

    During the handshake the link sends (:attr:`unsent`, :meth:`flush`); once relaying, the pump
    towards this side (:attr:`sender`) does: reading may make ciphertext too (a TLS 1.3 key
    update's answer), and it goes out with that pump's, in order (:meth:`pull`).  A reader that
    waits for the sender is :attr:`waiting`; :attr:`wake` (the session's) runs it again."""

    __slots__ = ("channel", "fd", "sender", "unsent", "waiting", "wake")

    def __init__(self, channel: TLSChannel, fd: int) -> None:
        self.channel = channel
        self.fd = fd
        self.unsent = bytearray()
        self.sender: Sender | None = None
        self.waiting: TLSPump | None = None
        self.wake: Callable[[TLSPump], None] | None = None

    def hold_reader(self, reader: TLSPump) -> None:
        """``reader`` reads nothing until the sender's waiting bytes went (:meth:`release_reader`),
        and OpenSSL's answer before them.  ``ConnectionResetError`` if the sender holds none
        (no send is under way: nothing would ever let the reader go on)."""
        sender = self.sender
        if sender is None or not sender.in_flight:
            reader.failed_on = "read"
            raise ConnectionResetError(
                errno.ECONNRESET,
                _("TLS: OpenSSL must send to the peer before it reads on, and no send is under way"),
            )
        reader.stalled = True
        self.waiting = reader

    def release_reader(self) -> None:
        """The sender's bytes went: the reader that waited reads again (:attr:`wake` runs it)."""
        reader, self.waiting = self.waiting, None
        if reader is None:
            return
        reader.stalled = False
        if self.wake is not None:
            self.wake(reader)

    def pull(self) -> None:
        """Take what the channel made for the peer: queued with the sender's bytes, or (before
        the pumps) in :attr:`unsent`."""
        out = self.channel.outgoing()
        if not out:
            return
        if self.sender is not None:
            self.sender.queue(out)
        else:
            self.unsent += out

    def attach(self, sender: Sender) -> None:
        """``sender`` sends to this side's socket from now on: what the handshake left unsent
        first."""
        self.sender = sender
        if self.unsent:
            sender.queue(bytes(self.unsent))
            self.unsent.clear()

    def flush(self) -> int:
        """Send what waits (one attempt): the bytes the kernel took; ``BlockingIOError`` passes."""
        if not self.unsent:
            return 0
        with memoryview(self.unsent) as view:  # released before the bytearray is resized
            n = traced_write(self.fd, view)
        del self.unsent[:n]
        return n


def receive(fd: int, size: int = CHUNK) -> bytes:
    """Up to ``size`` bytes from ``fd`` (narrated while tracing); ``BlockingIOError`` passes."""
    if not trace.enabled():
        return os.read(fd, size)
    buffer = bytearray(size)  # only while tracing: no buffer is held per session
    n = read_into(fd, memoryview(buffer))
    return bytes(buffer[:n])


#: How a pump reads and writes, by whether tracing is off: the system calls themselves, or the
#: narrated ones.
_IO: dict[bool, tuple[Callable[[int, int], bytes], Writer]] = {
    True: (os.read, os.write),
    False: (receive, traced_write),
}


def _as_reset(exc: TLSTruncated | TLSRefused) -> OSError:
    """A truncated or broken TLS stream ends the session as a reset does (the peers are reset)."""
    return ConnectionResetError(errno.ECONNRESET, str(exc))


class TLSPump:
    """One direction of a session with a TLS end: plaintext from ``src`` (decrypted when
    ``src_link``) to ``dst`` (encrypted when ``dst_link``).

    It offers what :class:`~enchufe.relay.stream_session.StreamSession` reads of a
    :class:`~enchufe.relay.pump.Pump` (:meth:`run`, :attr:`eof`, :attr:`done`, :attr:`in_flight`,
    :attr:`stalled`, :attr:`failed_on`, :meth:`discard`; no pipe and no buffer view), as plain
    attributes: the session reads them after every step.  At most one chunk is in flight
    (:attr:`in_flight` bytes, ciphertext towards a TLS ``dst``, plaintext towards a plain one):
    ``src`` is read only once it is delivered (backpressure).
    EOF: ``src``'s close_notify (or plain EOF) is passed on once delivered: close_notify
    towards a TLS ``dst``, ``finish()`` (``shutdown(SHUT_WR)``) towards a plain one.
    """

    __slots__ = (
        "_buffer",
        "_finish_cb",
        "_iov",
        "_pending",
        "_src_channel",
        "_tls_in",
        "_tls_out",
        "discarded",
        "discarding",
        "done",
        "dst_channel",
        "dst_fd",
        "dst_is_pipe",
        "dst_link",
        "end",
        "eof",
        "failed_on",
        "in_flight",
        "pipe",
        "src_fd",
        "src_link",
        "stalled",
        "unreported",
        "view",
    )

    def __init__(
        self,
        src_fd: int,
        dst_fd: int,
        *,
        src_link: TLSLink | None,
        dst_link: TLSLink | None,
        finish: Callable[[], None],
        dst_is_pipe: bool = False,
        buffer: memoryview | None = None,
    ) -> None:
        self.src_fd = src_fd
        self.dst_fd = dst_fd
        self.src_link = src_link
        self.dst_link = dst_link
        self._src_channel: TLSChannel | None = src_link.channel if src_link is not None else None
        self.dst_channel: TLSChannel | None = dst_link.channel if dst_link is not None else None
        # Channels that read or write their socket themselves (see the module's docstring).
        self._tls_in: TLSChannel | None = None
        self._tls_out: TLSChannel | None = None
        if self._src_channel is not None and self._src_channel.on_socket:
            self._tls_in, self._src_channel = self._src_channel, None
        if self.dst_channel is not None and self.dst_channel.on_socket:
            self._tls_out = self.dst_channel
        #: where they read into: the pools' hop buffer, shared (a view of it is never held)
        self._buffer = buffer if buffer is not None else memoryview(bytearray(CHUNK))
        self._iov = [self._buffer]
        self._finish_cb = finish
        #: a broken pipe as ``dst`` means its reader left: what follows is read and dropped
        self.dst_is_pipe = dst_is_pipe
        self.eof = False
        self.done = False
        self.failed_on = ""
        #: bytes a run delivered before it raised (the session takes them into its counts)
        self.unreported = 0
        #: bytes read but not yet taken by ``dst`` (:attr:`in_flight` of them; :attr:`stalled`
        #: while there are any: ``src`` is not read meanwhile)
        self._pending = _EMPTY
        self.in_flight = 0
        self.stalled = False
        # What the session's interest computation reads of a Pump: never a pipe or a view.
        self.pipe = None
        self.view = None
        self.end = 0
        self.discarding = False
        self.discarded = 0
        if dst_link is not None:
            dst_link.attach(self)

    def queue(self, data: bytes) -> None:
        """Send ``data`` after what waits already (ciphertext its reading side's channel made)."""
        self._hold(memoryview(bytes(self._pending) + data))

    def _hold(self, rest: memoryview) -> None:
        self._pending = rest
        self.in_flight = n = len(rest)
        self.stalled = n > 0

    def run(self) -> int:
        """Move what can move now; the plaintext bytes passed on.  ``OSError`` (with
        :attr:`failed_on`) on a reset, a truncated TLS stream, or a TLS protocol failure."""
        moved = 0
        reads = MAX_ROUNDS  # system calls on src per wake-up; the channel is always emptied
        read, write = _IO[trace._sink is None]  # trace.enabled(), inline
        channel = self._src_channel
        drained = False
        try:
            while True:
                if self.in_flight and not self._flush(write):
                    return moved
                if self.eof:
                    self._finish()
                    return moved
                if channel is not None and channel.more:
                    data = self._decrypt(None)
                elif drained or not reads:
                    return moved
                else:
                    reads -= 1
                    try:
                        data = read(self.src_fd, CHUNK)
                    except BlockingIOError:
                        return moved
                    except OSError:
                        self.failed_on = "read"
                        raise
                    drained = 0 < len(data) < CHUNK
                    if channel is not None:
                        data = self._decrypt(data)
                if data:
                    moved += self._send(data, write)
                    if self.in_flight:
                        return moved
                elif data is not None:
                    self._ended()
        except OSError:
            self.unreported += moved  # moved before the failure: the session counts them
            raise

    def _run_on_socket(self) -> int:
        """:meth:`run` for a ``src`` read into the buffer: a channel on its socket (decrypting
        there), or plaintext for one (which encrypts straight into its socket)."""
        moved = 0
        reads = MAX_ROUNDS
        raw = trace._sink is None  # not trace.enabled(), inline
        write = _IO[raw][1]
        tls_in = self._tls_in
        drained = False
        try:
            while True:
                if self.in_flight and not self._flush(write):
                    return moved
                if self.eof:
                    self._finish()
                    return moved
                if tls_in is not None and tls_in.more:  # OpenSSL holds plaintext: epoll cannot tell
                    data = self._receive(tls_in)
                elif drained or not reads:
                    return moved
                else:
                    reads -= 1
                    data = self._receive(tls_in) if tls_in is not None else self._read_plain(raw)
                if data is None:
                    return moved
                # The socket had no more (or a short read drained src): epoll says when it has.
                drained = tls_in.drained if tls_in is not None else len(data) < len(self._buffer)
                if data:
                    moved += self._send(data, write)
                    if self.in_flight:
                        return moved
                else:
                    self._ended()
        except OSError:
            self.unreported += moved  # moved before the failure: the session counts them
            raise

    def _decrypt(self, raw: bytes | None) -> bytes | None:
        """The plaintext of ``raw`` (``None``: of what the channel holds already), ``None`` when
        it needs more input, ``b""`` at close_notify; an answer the channel made is queued for its
        peer."""
        link = self.src_link
        assert link is not None
        try:
            data = link.channel.read(CHUNK) if raw is None else link.channel.receive(raw, CHUNK)
        except (TLSTruncated, TLSRefused) as exc:
            self.failed_on = "read"
            raise _as_reset(exc) from None
        if link.channel.outbox.pending:
            link.pull()
        return data

    def _receive(self, channel: TLSChannel) -> memoryview | None:
        """What ``channel`` decrypts from its socket into the buffer: a view of it (empty at
        close_notify), ``None`` when the socket has nothing yet.  A reset, a truncated stream
        or a broken record is ``OSError`` (:attr:`failed_on` ``"read"``)."""
        try:
            n = channel.read_into(self._buffer)
        except (TLSTruncated, TLSRefused) as exc:
            self.failed_on = "read"
            raise _as_reset(exc) from None
        except OSError:
            self.failed_on = "read"
            raise
        if n < 0 and channel.wants_write:  # a key update's answer waits for room first
            channel.wants_write = False
            assert self.src_link is not None
            self.src_link.hold_reader(self)
        return self._buffer[:n] if n >= 0 else None

    def _read_plain(self, raw: bool) -> memoryview | None:
        """Plaintext from ``src`` into the buffer (for a channel that encrypts straight into its
        socket): a view of it (empty at EOF), ``None`` when ``src`` has nothing yet."""
        try:
            n = os.readv(self.src_fd, self._iov) if raw else read_into(self.src_fd, self._buffer)
        except BlockingIOError:
            return None
        except OSError:
            self.failed_on = "read"
            raise
        return self._buffer[:n]

    def _send(self, data: bytes | memoryview, write: Writer) -> int:
        """Write ``data`` (encrypted first towards a TLS ``dst``); what ``dst`` does not take now
        waits (:attr:`in_flight`).  The plaintext bytes passed on: 0 while discarding them."""
        size = len(data)
        if self.discarding:
            self.discarded += size
            return 0
        tls_out = self._tls_out
        if tls_out is not None:
            try:
                n = tls_out.send(data)
            except OSError as exc:
                self._tls_write_failed(exc)
            if not n:
                self._hold(memoryview(bytes(data)))  # given again, the same bytes (not the buffer's)
            return size
        if self.dst_channel is not None:
            data = self.dst_channel.encrypt(data)
        try:
            n = write(self.dst_fd, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            n = self._write_failed(exc, len(data))
        if n < len(data):
            rest = memoryview(data)[n:]  # a view of what is left: of bytes of its own, not the buffer
            self._hold(rest if type(data) is bytes else memoryview(bytes(rest)))
        return size

    def _tls_write_failed(self, exc: OSError) -> NoReturn:
        """A channel on its socket could not send: a reset, or a TLS failure (as a reset)."""
        self.failed_on = "write"
        if isinstance(exc, TLSRefused):
            raise _as_reset(exc) from None
        raise exc

    def _flush(self, write: Writer) -> bool:
        """Write what waits: True once all of it is taken."""
        pending = self._pending
        if self._tls_out is not None and not self.eof:  # plaintext, given to OpenSSL again
            try:
                if not self._tls_out.send(pending):
                    return False
            except OSError as exc:
                self._tls_write_failed(exc)
            self._hold(_EMPTY)
            link = self.dst_link
            if link is not None and link.waiting is not None:  # what its reads waited for went
                link.release_reader()
            return True
        # Else ciphertext (plaintext towards a plain dst); towards a channel on its socket, once
        # src ended, the close_notify it left in outgoing().
        try:
            n = write(self.dst_fd, pending)
        except BlockingIOError:
            return False
        except OSError as exc:
            n = self._write_failed(exc, len(pending))
        self._hold(pending[n:] if n < len(pending) else _EMPTY)  # the buffer goes once all is sent
        return not self.in_flight

    def _write_failed(self, exc: OSError, size: int) -> int:
        """Raise ``exc``, unless ``dst`` is a pipe whose reader left: then, like the plain pump,
        read on to the EOF and drop it, so that the peer hears the rest out."""
        if not (self.dst_is_pipe and exc.errno == errno.EPIPE):
            self.failed_on = "write"
            raise exc
        self.discarding = True
        self.discarded += size
        return size

    def _ended(self) -> None:
        """``src`` ended cleanly: close_notify towards a TLS ``dst`` (sent before done)."""
        self.eof = True
        link = self.dst_link
        if link is not None:
            link.channel.close_write()
            link.pull()

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self.dst_link is not None:
            return  # close_notify went; the TCP stream stays open both ways
        pass_eof(self)

    def discard(self) -> None:
        """The session ends: what waits is dropped, and the link forgets its sender (no cycle
        keeps either alive)."""
        self._hold(_EMPTY)
        link = self.dst_link
        if link is not None:
            link.sender = link.waiting = link.wake = None


class SocketTLSPump(TLSPump):
    """A :class:`TLSPump` whose ``src`` is read into the buffer: a TLS side whose channel reads
    its socket itself, or a plain side towards one whose channel writes its socket itself (see
    the module's docstring; :func:`make_pump` chooses)."""

    __slots__ = ()

    run = TLSPump._run_on_socket


def make_pump(
    src_fd: int,
    dst_fd: int,
    *,
    src_link: TLSLink | None,
    dst_link: TLSLink | None,
    finish: Callable[[], None],
    dst_is_pipe: bool,
    buffer: memoryview,
) -> TLSPump:
    """The pump for one direction: a :class:`SocketTLSPump` when ``src`` is read into ``buffer``."""
    src = src_link.channel if src_link is not None else None
    dst = dst_link.channel if dst_link is not None else None
    on_socket = src.on_socket if src is not None else dst is not None and dst.on_socket
    kind = SocketTLSPump if on_socket else TLSPump
    return kind(
        src_fd,
        dst_fd,
        src_link=src_link,
        dst_link=dst_link,
        finish=finish,
        dst_is_pipe=dst_is_pipe,
        buffer=buffer,
    )

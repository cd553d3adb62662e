"""The pumps of a relayed stream with a TLS end (see :mod:`.tls`): :class:`TLSLink`, a TLS
side's channel and the ciphertext waiting for its socket, and :class:`TLSPump`, one direction
moving plaintext through OpenSSL (decrypting what comes from a TLS side, encrypting what goes to
one), never blocking.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import trace
from .._nonblocking import read_into
from .._nonblocking import write as traced_write
from ..errors import TLSRefused, TLSTruncated
from .pump import MAX_ROUNDS, WOULD_BLOCK

if TYPE_CHECKING:
    from .._tlsstream import TLSSetup

__all__ = ["CHUNK", "TLSLink", "TLSPump", "receive"]

#: Plaintext read (or ciphertext received) per system call; the most a pump holds in flight.
CHUNK = 64 * 1024


class TLSLink:
    """A TLS side's channel and the ciphertext made for its socket but not yet taken by it.

    Both pumps of a session share it: reading may make ciphertext (a TLS 1.3 key update's
    answer), and it goes out with the other direction's."""

    __slots__ = ("channel", "fd", "unsent")

    def __init__(self, setup: TLSSetup, fd: int, label: str) -> None:
        self.channel = setup.channel(label)
        self.fd = fd
        self.unsent = bytearray()

    def pull(self) -> None:
        """Take what the channel made for the peer."""
        out = self.channel.outgoing()
        if out:
            self.unsent += out

    def flush(self) -> int:
        """Send what waits (one attempt): the bytes the kernel took; ``BlockingIOError`` passes."""
        if not self.unsent:
            return 0
        if trace.enabled():
            with memoryview(self.unsent) as view:  # released before the bytearray is resized
                n = traced_write(self.fd, view)
        else:
            n = os.write(self.fd, self.unsent)
        del self.unsent[:n]
        return n


def receive(fd: int) -> bytes:
    """Up to :data:`CHUNK` bytes from ``fd`` (narrated while tracing); ``BlockingIOError`` passes."""
    if not trace.enabled():
        return os.read(fd, CHUNK)
    buffer = bytearray(CHUNK)  # only while tracing: no buffer is held per session
    n = read_into(fd, memoryview(buffer))
    return bytes(buffer[:n])


def _as_reset(exc: TLSTruncated | TLSRefused) -> OSError:
    """A truncated or broken TLS stream ends the session as a reset does (the peers are reset)."""
    return ConnectionResetError(errno.ECONNRESET, str(exc))


class TLSPump:
    """One direction of a session with a TLS end: plaintext from ``src`` (decrypted when
    ``src_link``) to ``dst`` (encrypted when ``dst_link``).

    It offers what :class:`~enchufe.relay.stream_session.StreamSession` reads of a
    :class:`~enchufe.relay.pump.Pump` (:meth:`run`, :attr:`eof`, :attr:`done`, :attr:`in_flight`,
    :attr:`stalled`, :attr:`failed_on`, :meth:`discard`; no pipe and no buffer view).  At most
    one chunk is in flight: ``src`` is read only once the last one is delivered (backpressure).
    EOF: ``src``'s close_notify (or plain EOF) is passed on once delivered: close_notify
    towards a TLS ``dst``, ``finish()`` (``shutdown(SHUT_WR)``) towards a plain one.
    """

    __slots__ = (
        "_finish_cb",
        "_plain",
        "discarded",
        "discarding",
        "done",
        "dst_fd",
        "dst_is_pipe",
        "dst_link",
        "end",
        "eof",
        "failed_on",
        "pipe",
        "src_fd",
        "src_link",
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
    ) -> None:
        self.src_fd = src_fd
        self.dst_fd = dst_fd
        self.src_link = src_link
        self.dst_link = dst_link
        self._finish_cb = finish
        #: a broken pipe as ``dst`` means its reader left: what follows is read and dropped
        self.dst_is_pipe = dst_is_pipe
        self._plain = memoryview(b"")  # plaintext read, not yet written to a plain dst
        self.eof = False
        self.done = False
        self.failed_on = ""
        # What the session's interest computation reads of a Pump: never a pipe or a view.
        self.pipe = None
        self.view = None
        self.end = 0
        self.discarding = False
        self.discarded = 0

    @property
    def in_flight(self) -> int:
        """Bytes waiting for ``dst``: ciphertext (a TLS dst) or plaintext (a plain one)."""
        link = self.dst_link
        return len(link.unsent) if link is not None else len(self._plain)

    @property
    def stalled(self) -> bool:
        """Read ``src`` only once what was read is delivered."""
        return self.in_flight > 0

    def run(self) -> int:
        """Move what can move now; the plaintext bytes passed on.  ``OSError`` (with
        :attr:`failed_on`) on a reset, a truncated TLS stream, or a TLS protocol failure."""
        moved = 0
        reads = MAX_ROUNDS  # system calls on src per wake-up; the channel is always emptied
        while True:
            if self.in_flight and self._write() == WOULD_BLOCK:
                return moved
            if self.in_flight:
                return moved  # partly taken: wait until dst is writable
            if self.eof:
                self._finish()
                return moved
            data, reads = self._read(reads)
            if data is None:
                return moved
            if not data:
                self._ended()
                continue
            if self.discarding:
                self.discarded += len(data)
                continue
            moved += len(data)
            link = self.dst_link
            if link is None:
                self._plain = memoryview(data)
            else:
                link.channel.write(data)
                link.pull()

    def _read(self, reads: int) -> tuple[bytes | None, int]:
        """Plaintext from ``src``: bytes, ``b""`` at its end, ``None`` when there is none now."""
        link = self.src_link
        if link is None:
            if not reads:
                return None, 0
            return self._recv(), reads - 1
        channel = link.channel
        while True:
            try:
                data = channel.read(CHUNK)
            except (TLSTruncated, TLSRefused) as exc:
                self.failed_on = "read"
                raise _as_reset(exc) from None
            link.pull()
            if data is not None or not reads:
                return data, reads
            raw = self._recv()
            reads -= 1
            if raw is None:
                return None, reads
            channel.feed(raw)

    def _recv(self) -> bytes | None:
        try:
            return receive(self.src_fd)
        except BlockingIOError:
            return None
        except OSError:
            self.failed_on = "read"
            raise

    def _write(self) -> int:
        try:
            link = self.dst_link
            if link is not None:
                return link.flush()
            n = (
                traced_write(self.dst_fd, self._plain)
                if trace.enabled()
                else os.write(self.dst_fd, self._plain)
            )
        except BlockingIOError:
            return WOULD_BLOCK
        except OSError as exc:
            if not (self.dst_is_pipe and exc.errno == errno.EPIPE):
                self.failed_on = "write"
                raise
            # The reader of the pipe left (a program that stopped reading its stdin): like the
            # plain pump, read on to the EOF and drop it, so that the peer hears the rest out.
            self.discarding = True
            self.discarded += len(self._plain)
            n = len(self._plain)
        self._plain = self._plain[n:]
        return n

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
        try:
            self._finish_cb()
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                self.failed_on = "write"
                raise

    def discard(self) -> None:
        self._plain = memoryview(b"")

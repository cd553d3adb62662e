"""One direction of a relayed stream: bytes from ``src`` to ``dst``, then EOF passed on.

``src`` and ``dst`` are descriptors: sockets, or pipes and files (stdio, a child's stdin and
stdout).  The fast path never copies a byte into Python: ``splice(src → pipe)`` then
``splice(pipe → dst)``, both ``SPLICE_F_MOVE | SPLICE_F_NONBLOCK``.  The fallback (for what
splice cannot serve, such as a terminal, or when no descriptor is left for a pipe) is ``readv``
into a pooled buffer and ``write`` from it.  EOF is passed on by the ``finish`` callback: a
socket's ``shutdown(SHUT_WR)``, or closing a pipe.

A destination that is a pipe whose reader went away (a child that stopped reading its stdin,
``relay … | head``) is not a failure of the connection: the pump goes on reading ``src`` and
discards what it reads (:attr:`Pump.discarding`), so that the peer can finish sending and still
hear the other direction out.

Splice or copy: measured, not assumed
-------------------------------------
Splicing into a TCP socket hands the kernel the pipe's pages as they came (many fragments), and
on this kernel (6.x) that costs more than copying: TCP→TCP through a 4 MiB buffer moved 25 Gbit/s
where splice moved 16 (benchmarks/RESULTS.md).  So a pump whose destination is a TCP socket
copies through a *bulk* buffer (:data:`BULK_CHUNK`) while one is free, and splices otherwise;
towards unix sockets and pipes, splice wins (36 against 27 Gbit/s) and is always used.  At most
:data:`BULK_BUFFERS` bulk buffers are in use at once, so their memory is bounded whatever the
number of connections; they are anonymous mappings whose pages the kernel provides as they are
first written, and a buffer, like a pipe, is held only while bytes are in flight.

Backpressure and memory
-----------------------
Bytes in flight live in the pipe (kernel pages, at most its capacity) or in the buffer (at most
:data:`BULK_CHUNK`), never anywhere else, so a connection holds a bounded amount whatever its
peers do.  The pump asks to read only while there is room (:attr:`Pump.wants_read`), so a stalled
reader on ``dst`` stops reads from ``src``; TCP's window then stalls the writer behind ``src``.
A pipe or buffer is held only while bytes are in flight (lent by :class:`~.pools.Pools`).

A pipe counts its capacity in page-sized slots, not bytes: splicing from TCP can fill every slot
with a small segment and then refuse more (EAGAIN) although far fewer bytes than the capacity
are in it.  Reading again at once would spin, so after an EAGAIN with bytes still in the pipe the
pump waits until some of them have been written out (:attr:`Pump.stalled`).

A short read (fewer bytes than asked) means the socket was drained at that moment: the pump
stops reading until epoll says there is more, which saves the EAGAIN a retry would cost.

The readiness contract
----------------------
The caller (a session, driven by the event loop) calls :meth:`Pump.run` whenever ``src`` or
``dst`` is ready (or may be), and then waits for what :attr:`Pump.wants_read` and
:attr:`Pump.wants_write` say.  :meth:`Pump.run` is a loop of half-steps, each one system call on
one side, which say what happened in one word:

* a *read* half-step (``src`` into the pipe or buffer) says :data:`READ_MORE` (bytes read, as
  many as there was room for: ``src`` may have more), :data:`READ_DRAINED` (``src`` has nothing
  more now: fewer bytes than asked, or EAGAIN), :data:`READ_FULL` (no room, or a pipe out of
  slots, :attr:`Pump.stalled`: write first), :data:`READ_EOF` (``src`` ended), or
  :data:`SWITCHED`;
* a *write* half-step (pipe or buffer into ``dst``) says how many bytes it delivered (more than
  0), :data:`WOULD_BLOCK` (``dst`` said EAGAIN) or :data:`SWITCHED`;
* :data:`SWITCHED`: the pump changed how it moves bytes (splice to copy when splice cannot serve
  a descriptor or no pipe is left, copy to splice when no bulk buffer is free, or it now discards
  what ``src`` sends): :meth:`Pump.run` starts again in the new way;
* a real failure raises ``OSError`` with :attr:`Pump.failed_on` saying which side.
A half-step that leaves nothing in flight gives its pipe or buffer back, and passes the EOF on
once ``src`` has ended.  Rounds go on while a half-step moves bytes, at most :data:`MAX_ROUNDS`.
The half-steps make the system calls themselves while tracing is off (``raw``), skipping the
narrated wrappers: this is the path of every relayed byte.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import cast

from .. import trace
from .._nonblocking import SPLICE_FLAGS, read_into, write
from .._nonblocking import splice as traced_splice
from .pools import COPY_CHUNK, PIPE_SIZE, Pipe, Pools
from .pump_state import NEVER, PumpState, Step

__all__ = [
    "COPY_CHUNK",
    "MAX_ROUNDS",
    "PIPE_SIZE",
    "READ_DRAINED",
    "READ_EOF",
    "READ_FULL",
    "READ_MORE",
    "SWITCHED",
    "WOULD_BLOCK",
    "Pipe",
    "Pools",
    "Pump",
]

#: Read/write rounds per wake-up before yielding to other connections (level-triggered epoll
#: calls us again at once if there is more): with 256 KiB pipes, up to 2 MiB per turn.
MAX_ROUNDS = 8

# What a read half-step says (see "The readiness contract" in the module's docstring).
READ_MORE = 1
READ_DRAINED = 2
READ_FULL = 3
READ_EOF = 4
# What a write half-step says when it delivered nothing.
WOULD_BLOCK = -1
# Either half-step: the pump now moves bytes another way.
SWITCHED = -2

#: After a run that moved this many bytes (a bulk transfer), the small-message path stands aside
#: until :data:`STREAMING_HYSTERESIS` runs in a row moved fewer (see :meth:`Pump.run`).
STREAMING_BYTES = COPY_CHUNK
STREAMING_HYSTERESIS = 8
_os_splice = cast(Callable[..., int], getattr(os, "splice", None))
_readv = os.readv
_write = os.write


class Pump(PumpState):
    """Move bytes from ``src`` to ``dst`` (non-blocking descriptors) whenever :meth:`run` is called
    (what a pump holds, and :attr:`wants_read` / :attr:`wants_write`: :class:`.PumpState`).

    * :meth:`run` moves what can move now and returns the bytes delivered to ``dst``; it raises
      ``OSError`` on a real failure (a reset), with :attr:`failed_on` saying which side.
    * :attr:`eof`: ``src`` has ended.  Once everything read is delivered, ``finish()`` passes the
      EOF on (default: ``shutdown(SHUT_WR)`` of a ``dst`` socket) and :attr:`done` becomes true.
    """

    __slots__ = ()

    def run(self) -> int:
        """Move bytes until both sides would block (or :data:`MAX_ROUNDS`); bytes delivered.

        Small messages (request and response: nothing in flight, tracing off) take one read
        into the pools' shared hop buffer and one write, with no pipe or buffer of their own
        and no call between them: most of a ping-pong's latency is the work around those two
        system calls.  What that cannot finish (a partial or refused write, a read that fills
        the hop buffer: a bulk transfer begins) is moved into a buffer of the pump's own, as
        if the general path (:meth:`_general`) had read it, and that path takes over.
        """
        if self.in_flight or self.hold_off or trace._sink is not None or self.taken:  # inline checks
            return self._general()
        pools = self._pools
        try:
            n = _readv(self.src_fd, pools.hop_iov)
        except BlockingIOError:
            return 0
        except OSError:
            self.failed_on = "read"
            raise
        if not n:
            self._ended()
            return 0
        hop = pools.hop
        if n == pools.hop_size:  # maybe more behind: a bulk transfer, the general path's way
            self.hold_off = STREAMING_HYSTERESIS
            self._hand_over(hop[:n])
            return self._run()
        try:
            sent = _write(self.dst_fd, hop[:n])
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._hand_over(hop[:n])
            self._write_failed(exc)  # raises, or switched to discarding (EPIPE on a pipe)
            return self._run()
        if sent < n:  # dst is full: the rest waits in a buffer, dst's readiness is awaited
            self._hand_over(hop[sent:n])
        return sent

    def _resume(self) -> int:
        """Finish what the loop's shortcut began (:attr:`taken`): the small-message path after
        its two system calls, as :meth:`run` would have gone on from them."""
        taken = self.taken
        assert taken is not None
        self.taken = None
        data, sent, read_errno, send_errno = taken
        if read_errno:
            self.failed_on = "read"
            raise OSError(read_errno, os.strerror(read_errno))
        n = len(data)
        if not n:
            self._ended()
            return 0
        if n == self._pools.hop_size:  # a bulk transfer begins (the shortcut sent nothing)
            self.hold_off = STREAMING_HYSTERESIS
        if sent < n:
            self._hand_over(memoryview(data)[sent:])
        if send_errno:
            self._write_failed(OSError(send_errno, os.strerror(send_errno)))
        return sent

    def _hand_over(self, data: memoryview) -> None:
        """Bytes read on the small-message path that did not go: into a buffer of this pump's
        own (a bulk one if it copies towards TCP and one is free), in flight, for the general
        path (copying until they are out)."""
        view = self._pools.bulk() if self.bulk and self.use_splice else None
        if view is None:
            view = self._pools.buffer()
        size = len(data)
        view[:size] = data
        self.view = view
        self._start = 0
        self.end = self.in_flight = size
        self._way = _COPYING

    def _general(self) -> int:
        """Rounds of a read and a write half-step (see the module's docstring) while either
        moves bytes: a short read or EAGAIN ends the reads of this wake-up, EAGAIN from ``dst``
        the writes.  A run that moved :data:`STREAMING_BYTES` or more (a bulk transfer) keeps
        the small-message path aside for :data:`STREAMING_HYSTERESIS` runs that move fewer."""
        if self.done:
            return 0
        moved = self._resume() if self.taken else 0
        try:
            moved += self._run()
        except OSError:
            self.unreported += moved  # moved before the failure: the session counts them
            raise
        hold = self.hold_off
        if moved >= STREAMING_BYTES:
            if hold >= 0:
                self.hold_off = STREAMING_HYSTERESIS
        elif hold > 0:
            self.hold_off = hold - 1
        return moved

    def _run(self) -> int:
        if self.bulk and not self.in_flight:
            self._choose_bulk()
        read, write = self._way
        raw = not trace.enabled()
        moved = 0
        drained = self.eof  # src has nothing more for now: wait for epoll
        blocked = False  # dst said EAGAIN
        try:
            for _ in range(MAX_ROUNDS):
                progress = False
                if not (drained or self.stalled):
                    said = read(self, raw)
                    if said == READ_MORE:
                        progress = True
                    elif said == SWITCHED:
                        return moved + self._run()
                    elif said != READ_FULL:  # READ_DRAINED or READ_EOF
                        drained = True
                if self.in_flight and not blocked:
                    n = write(self, raw)
                    if n > 0:
                        moved += n
                        progress = True
                    elif n == SWITCHED:
                        return moved + self._run()
                    else:
                        blocked = True
                if not progress:
                    break
            return moved
        except OSError:
            self.unreported += moved  # moved before the failure: the session counts them
            raise

    def _choose_bulk(self) -> None:
        """Towards TCP, copy through a bulk buffer while one is free, else splice (see the module's
        docstring); the choice is made afresh whenever nothing is in flight."""
        if not self.use_splice or self.pipe is not None or self.view is not None:
            return
        view = self._pools.bulk()
        if view is not None:
            self.view = view
            self._way = _COPYING
        else:
            self._way = _SPLICING

    # -- splicing: src → pipe → dst, the bytes never enter this process

    def _splice_in(self, raw: bool) -> int:
        pipe = self.pipe
        if pipe is None:
            pipe = self.pipe = self._pools.pipe()
            if pipe is None:  # no descriptor for a pipe: copy through a buffer instead
                return self._copy_from_now()
        flight = self.in_flight
        room = pipe.capacity - flight
        if room <= 0:
            return READ_FULL
        try:
            if raw:
                n = _os_splice(self.src_fd, pipe.w, room, flags=SPLICE_FLAGS)
            else:
                n = traced_splice(self.src_fd, pipe.w, room)
        except BlockingIOError:
            if flight:
                self.stalled = True  # maybe out of pipe slots: write some first
                return READ_FULL
            self._pools.release_pipe(pipe)  # nothing in flight: no pipe held
            self.pipe = None
            return READ_DRAINED
        except OSError as exc:
            return self._splice_in_failed(exc)
        if not n:
            return self._ended()
        self.in_flight = flight + n
        return READ_DRAINED if n < room else READ_MORE

    def _splice_out(self, raw: bool) -> int:
        pipe = self.pipe
        assert pipe is not None
        flight = self.in_flight
        try:
            if raw:
                n = _os_splice(pipe.r, self.dst_fd, flight, flags=SPLICE_FLAGS)
            else:
                n = traced_splice(pipe.r, self.dst_fd, flight)
        except BlockingIOError:
            return WOULD_BLOCK
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                # splice cannot write to this descriptor (a terminal): drain the pipe into a
                # buffer and copy from now on.
                return self._pipe_to_copy()
            return self._write_failed(exc)
        self.stalled = False  # room in the pipe again: the EAGAIN may have been ours
        flight -= n
        self.in_flight = flight
        if not flight:  # inline, as in _copy_out: the last write of nearly every wake-up
            self._pools.release_pipe(pipe)
            self.pipe = None
            if self.eof:
                self._finish()
        return n

    def _splice_in_failed(self, exc: OSError) -> int:
        if exc.errno == errno.EINVAL and not self.in_flight:
            # splice cannot serve this kind of descriptor: copy from now on.
            self._release()
            return self._copy_from_now()
        self.failed_on = "read"
        raise exc

    def _pipe_to_copy(self) -> int:
        """Move what sits in the pipe into a copy buffer, then go on copying."""
        pipe = self.pipe
        assert pipe is not None
        view = self.view = self._pools.buffer()
        if self.in_flight > len(view):
            view = self.view = memoryview(bytearray(self.in_flight))
        n = read_into(pipe.r, view[: self.in_flight])
        self._start, self.end = 0, n
        self._pools.release_pipe(pipe)
        self.pipe = None
        self.stalled = False
        return self._copy_from_now()

    # -- copying: src → buffer (a bulk or a copy buffer) → dst

    def _copy_in(self, raw: bool) -> int:
        view = self.view
        if view is None:
            if self.bulk and self.use_splice:
                view = self._pools.bulk()
                if view is None:  # every bulk buffer is taken: splice meanwhile
                    self._way = _SPLICING
                    return SWITCHED
            else:
                view = self._pools.buffer()
            self.view = view
        end = self.end
        room = len(view) - end
        if room <= 0:
            return READ_FULL
        try:
            n = _readv(self.src_fd, [view[end:]]) if raw else read_into(self.src_fd, view[end:])
        except BlockingIOError:
            if not self.in_flight:  # no buffer held while nothing is in flight
                self._pools.release_buffer(view)
                self.view = None
            return READ_DRAINED
        except OSError:
            self.failed_on = "read"
            raise
        if not n:
            return self._ended()
        self.end = end + n
        self.in_flight += n
        return READ_DRAINED if n < room else READ_MORE

    def _copy_out(self, raw: bool) -> int:
        view = self.view
        assert view is not None
        start = self._start
        chunk = view[start : self.end]
        try:
            n = _write(self.dst_fd, chunk) if raw else write(self.dst_fd, chunk)
        except BlockingIOError:
            return WOULD_BLOCK
        except OSError as exc:
            return self._write_failed(exc)
        finally:
            # A live slice pins a bulk buffer's mapping: released now, the buffer given back
            # below can be unmapped (else mmap.close() raises BufferError in the pool).
            chunk.release()
        self.in_flight -= n
        if self.in_flight:
            self._start = start + n
            return n
        self._start = self.end = 0
        self._pools.release_buffer(view)
        self.view = None
        if self.eof:
            self._finish()
        return n

    def _discard_in(self, raw: bool) -> int:
        """``dst`` is gone: read ``src`` until its EOF and drop what it sends."""
        view = self.view
        if view is None:
            view = self.view = self._pools.buffer()
        try:
            n = read_into(self.src_fd, view)
        except BlockingIOError:
            return READ_DRAINED
        except OSError:
            self.failed_on = "read"
            raise
        if not n:
            self.eof = self.done = True
            self._pools.release_buffer(view)
            self.view = None
            return READ_EOF
        self.discarded += n
        return READ_DRAINED if n < len(view) else READ_MORE

    # -- what every way shares

    def _copy_from_now(self) -> int:
        """Splice cannot serve (a kind of descriptor, no descriptor left for a pipe): copy."""
        self.use_splice = False
        self._way = _COPYING
        return SWITCHED

    def _ended(self) -> int:
        """``src`` ended: pass the EOF on now if nothing is in flight (else the last write will)."""
        self.eof = True
        if not self.in_flight:
            self._release()
            self._finish()
        return READ_EOF

    def _write_failed(self, exc: OSError) -> int:
        """A write failed: a pipe whose reader left is :data:`SWITCHED` to discarding; anything
        else is raised, as a failure of the write side."""
        if self._broken(exc):
            return SWITCHED
        self.failed_on = "write"
        raise exc

    def _broken(self, exc: OSError) -> bool:
        """EPIPE on a pipe: its reader left.  Discard from now on instead of failing."""
        if not (self.dst_is_pipe and exc.errno == errno.EPIPE):
            return False
        self.discarding = True
        self.hold_off = NEVER
        self.discarded += self.in_flight
        self.in_flight = 0
        self._start = self.end = 0
        if self.pipe is not None:
            self._pools.discard_pipe(self.pipe)
            self.pipe = None
        self.use_splice = False
        self.stalled = False
        self._way = _DISCARDING
        return True


# The ways bytes move: a read and a write half-step each (plain functions, so that a pump holds
# no reference to itself).
_SPLICING: tuple[Step, Step] = (Pump._splice_in, Pump._splice_out)
_COPYING: tuple[Step, Step] = (Pump._copy_in, Pump._copy_out)
_DISCARDING: tuple[Step, Step] = (Pump._discard_in, Pump._copy_out)  # nothing in flight to write
Pump.splicing = _SPLICING
Pump.copying = _COPYING

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

A pipe is needed only while bytes are in flight: it is taken from the :class:`Pools` when the
first bytes arrive and given back as soon as it is empty, so thousands of idle connections hold
no pipe at all, and a busy relay reuses a few.

A pipe counts its capacity in page-sized slots, not bytes: splicing from TCP can fill every slot
with a small segment and then refuse more (EAGAIN) although far fewer bytes than the capacity
are in it.  Reading again at once would spin, so after an EAGAIN with bytes still in the pipe the
pump waits until some of them have been written out (:attr:`Pump.stalled`).

A short read (fewer bytes than asked) means the socket was drained at that moment: the pump
stops reading until epoll says there is more, which saves the EAGAIN a retry would cost.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import socket
from collections.abc import Callable

from .. import trace
from .._calls import shutdown
from .._nonblocking import SPLICE_FLAGS, close_fd, make_pipe, read_into, write
from .._nonblocking import splice as traced_splice

__all__ = ["COPY_CHUNK", "MAX_ROUNDS", "PIPE_SIZE", "Pipe", "Pools", "Pump"]

#: Capacity asked for each splice pipe.  The more a pipe holds, the more one pair of splice calls
#: moves (loopback TCP delivers hundreds of KiB per wake-up); 256 KiB measured close to 1 MiB in
#: throughput while tying up a quarter of the kernel memory per busy direction.
PIPE_SIZE = 256 * 1024

#: Size of each copy-mode buffer: one 64 KiB ``recv`` is what a socket typically has ready, and
#: it bounds what a connection that fell back to copying holds per direction.
COPY_CHUNK = 64 * 1024

#: Size of a bulk copy buffer (towards TCP): one recv() and one send() move up to this much; 2 to 4
#: MiB measured best (1 MiB: 21 Gbit/s, 4 MiB: 25, 8 MiB: 23).
BULK_CHUNK = 4 * 1024 * 1024

#: Bulk buffers in use at once, at most (BULK_CHUNK each: 64 MiB); pumps that find none free
#: splice instead.  Idle bulk buffers kept for reuse: :data:`MAX_IDLE_BULK`.
BULK_BUFFERS = 16
MAX_IDLE_BULK = 4

#: Empty pipes kept for reuse (two descriptors each).  Creating a pipe and sizing it costs two
#: system calls; a busy relay reuses pipes instead, and an idle one gives most of them back.
MAX_IDLE_PIPES = 64

#: Read/write rounds per wake-up before yielding to other connections (level-triggered epoll
#: calls us again at once if there is more): with 256 KiB pipes, up to 2 MiB per turn.
MAX_ROUNDS = 8

_HAS_SPLICE = hasattr(os, "splice")
_os_splice = getattr(os, "splice", None)
_readv = os.readv
_write = os.write


class Pipe:
    """A pipe used as the splice buffer of one direction while bytes are in flight."""

    __slots__ = ("capacity", "r", "w")

    def __init__(self, r: int, w: int, capacity: int) -> None:
        self.r = r
        self.w = w
        self.capacity = capacity

    def close(self) -> None:
        for fd in (self.r, self.w):
            with contextlib.suppress(OSError):
                close_fd(fd)


class Pools:
    """Pipes and copy buffers shared by every pump of one relay process."""

    def __init__(
        self,
        *,
        pipe_size: int = PIPE_SIZE,
        copy_size: int = COPY_CHUNK,
        keep: int = MAX_IDLE_PIPES,
        bulk_size: int = BULK_CHUNK,
        bulk_buffers: int = BULK_BUFFERS,
    ) -> None:
        self.pipe_size = pipe_size
        self.copy_size = copy_size
        self.keep = keep
        self.bulk_size = bulk_size
        self.bulk_buffers = bulk_buffers
        self._pipes: list[Pipe] = []
        self._buffers: list[memoryview] = []
        self._bulk: list[memoryview] = []
        self._maps: list[tuple[mmap.mmap, memoryview]] = []
        self._bulk_ids: set[int] = set()
        #: bulk buffers in use now
        self.bulk_in_use = 0
        #: pipes that exist (in use or idle), for tests and stats
        self.pipes_open = 0

    def pipe(self) -> Pipe | None:
        """An empty pipe, or ``None`` when none can be made (no descriptor left)."""
        if self._pipes:
            return self._pipes.pop()
        try:
            r, w, capacity = make_pipe(self.pipe_size)
        except OSError:
            return None
        self.pipes_open += 1
        return Pipe(r, w, capacity)

    def release_pipe(self, pipe: Pipe) -> None:
        """Take back an empty pipe."""
        if len(self._pipes) < self.keep:
            self._pipes.append(pipe)
        else:
            self.discard_pipe(pipe)

    def discard_pipe(self, pipe: Pipe) -> None:
        """Close a pipe that may still hold bytes nobody will read."""
        pipe.close()
        self.pipes_open -= 1

    @property
    def idle_pipes(self) -> int:
        return len(self._pipes)

    def buffer(self) -> memoryview:
        if self._buffers:
            return self._buffers.pop()
        return memoryview(bytearray(self.copy_size))

    def bulk(self) -> memoryview | None:
        """A bulk buffer, or ``None`` when :data:`BULK_BUFFERS` are in use (or none can be mapped)."""
        if self.bulk_in_use >= self.bulk_buffers:
            return None
        if self._bulk:
            view = self._bulk.pop()
        else:
            try:
                area = mmap.mmap(-1, self.bulk_size)  # pages come as they are first written
            except OSError:
                return None
            view = memoryview(area)
            self._maps.append((area, view))
            self._bulk_ids.add(id(view))
        self.bulk_in_use += 1
        return view

    def release_buffer(self, view: memoryview) -> None:
        if id(view) in self._bulk_ids:
            self.bulk_in_use -= 1
            if len(self._bulk) < MAX_IDLE_BULK:
                self._bulk.append(view)
            else:
                self._unmap(view)
        elif len(self._buffers) < self.keep and len(view) == self.copy_size:
            self._buffers.append(view)

    def _unmap(self, view: memoryview) -> None:
        for index, (area, mapped) in enumerate(self._maps):
            if mapped is view:
                del self._maps[index]
                self._bulk_ids.discard(id(view))
                view.release()
                area.close()
                return

    def close(self) -> None:
        while self._pipes:
            self.discard_pipe(self._pipes.pop())
        self._buffers.clear()
        self._bulk.clear()
        for area, view in self._maps:
            with contextlib.suppress(BufferError):
                view.release()
                area.close()
        self._maps.clear()
        self._bulk_ids.clear()


class Pump:
    """Move bytes from ``src`` to ``dst`` (non-blocking descriptors) whenever :meth:`run` is called.

    * :meth:`run` moves what can move now and returns the bytes delivered to ``dst``; it raises
      ``OSError`` on a real failure (a reset), with :attr:`failed_on` saying which side.
    * :attr:`eof`: ``src`` has ended.  Once everything read is delivered, ``finish()`` passes the
      EOF on (default: ``shutdown(SHUT_WR)`` of a ``dst`` socket) and :attr:`done` becomes true.
    * :attr:`wants_read` / :attr:`wants_write`: the readiness to wait for on ``src`` / ``dst``.
    * Bytes in flight sit in :attr:`pipe` (splicing) or in :attr:`view` (copying, through a bulk
      or copy buffer), whose bytes up to :attr:`end` have been read; at most one of them is held.

    ``src`` and ``dst`` may be sockets or bare descriptors; ``dst_is_pipe`` says that a broken
    ``dst`` (EPIPE) means its reader left rather than that the connection failed.
    """

    __slots__ = (
        "_finish_cb",
        "_pools",
        "_start",
        "bulk",
        "discarded",
        "discarding",
        "done",
        "dst_fd",
        "dst_is_pipe",
        "end",
        "eof",
        "failed_on",
        "in_flight",
        "pipe",
        "src_fd",
        "stalled",
        "use_splice",
        "view",
    )

    def __init__(
        self,
        src: socket.socket | int,
        dst: socket.socket | int,
        pools: Pools,
        *,
        use_splice: bool = True,
        finish: Callable[[], None] | None = None,
        dst_is_pipe: bool = False,
        bulk: bool = False,
    ) -> None:
        self.src_fd = src if isinstance(src, int) else src.fileno()
        self.dst_fd = dst if isinstance(dst, int) else dst.fileno()
        if finish is None:
            if isinstance(dst, int):
                raise TypeError("a pump to a bare descriptor needs a finish callback")
            sock = dst

            def finish() -> None:
                shutdown(sock, socket.SHUT_WR)

        self._finish_cb = finish
        self.dst_is_pipe = dst_is_pipe
        #: copy through a bulk buffer while one is free (the destination is a TCP socket)
        self.bulk = bulk
        self._pools = pools
        self.use_splice = use_splice and _HAS_SPLICE
        self.pipe: Pipe | None = None
        self.view: memoryview | None = None
        self._start = 0
        self.end = 0
        self.in_flight = 0
        self.eof = False
        self.done = False
        self.stalled = False
        self.failed_on = ""
        self.discarding = False
        self.discarded = 0

    @property
    def wants_read(self) -> bool:
        """Read ``src`` only while what is read has somewhere to go.

        Whatever the mode, a full buffer (the copy or bulk buffer, or the pipe) means no read
        interest: ``dst`` is not taking bytes, and reading would find no room, so every wake-up
        would be spent on a write that says EAGAIN.  The pump then waits for ``dst`` to become
        writable only (:attr:`wants_write`).  A bulk buffer is used while :attr:`use_splice`
        stays true, so the buffer in use, not the mode, decides.
        """
        if self.eof or self.stalled:
            return False
        view = self.view
        if view is not None:
            return self.end < len(view)
        pipe = self.pipe  # None when copying with no buffer yet, or splicing with no bytes held
        return pipe is None or self.in_flight < pipe.capacity

    @property
    def wants_write(self) -> bool:
        return self.in_flight > 0

    def run(self) -> int:
        """Move bytes until both sides would block (or :data:`MAX_ROUNDS`); bytes delivered."""
        if self.done:
            return 0
        if not self.use_splice or self.view is not None:
            return self._run_copy()
        if self.bulk and self.pipe is None:
            view = self._pools.bulk()
            if view is not None:  # towards TCP copying is faster: see the module's docstring
                self.view = view
                return self._run_copy()
        return self._run_splice()

    def _run_splice(self) -> int:
        # The splice loop is inline here, its state in locals: this is the hot path of every
        # relayed byte (a ping-pong message costs two splices and this loop's Python).  While
        # tracing is off it calls os.splice itself, skipping the narration wrapper.
        raw = None if trace.enabled() else _os_splice
        moved = 0
        drained = False  # src said EAGAIN, or gave less than asked: wait for epoll
        blocked = False  # dst said EAGAIN
        pipe = self.pipe
        flight = self.in_flight
        src = self.src_fd
        dst = self.dst_fd
        for _ in range(MAX_ROUNDS):
            progress = False
            if not (drained or self.eof or self.stalled):
                if pipe is None:
                    pipe = self.pipe = self._pools.pipe()
                    if pipe is None:  # no descriptor for a pipe: copy through a buffer instead
                        self.use_splice = False
                        return moved + self._run_copy()
                room = pipe.capacity - flight
                if room > 0:
                    try:
                        if raw is not None:
                            n = raw(src, pipe.w, room, flags=SPLICE_FLAGS)
                        else:
                            n = traced_splice(src, pipe.w, room)
                    except BlockingIOError:
                        drained = True
                        if flight:
                            self.stalled = True  # maybe out of pipe slots: write some first
                    except OSError as exc:
                        self.in_flight = flight
                        if exc.errno == errno.EINVAL and not flight:
                            # splice cannot serve this kind of descriptor: copy from now on.
                            self._pools.release_pipe(pipe)
                            self.pipe = None
                            self.use_splice = False
                            return moved + self._run_copy()
                        self.failed_on = "read"
                        raise
                    else:
                        if n:
                            flight += n
                            progress = True
                            drained = n < room
                        else:
                            self.eof = True
            if flight and not blocked:
                assert pipe is not None
                try:
                    if raw is not None:
                        n = raw(pipe.r, dst, flight, flags=SPLICE_FLAGS)
                    else:
                        n = traced_splice(pipe.r, dst, flight)
                except BlockingIOError:
                    blocked = True
                except OSError as exc:
                    self.in_flight = flight
                    if exc.errno == errno.EINVAL:
                        # splice cannot write to this descriptor (a terminal): drain the pipe
                        # into a buffer and copy from now on.
                        return moved + self._pipe_to_copy()
                    if self._broken(exc):
                        return moved + self._run_discard()
                    self.failed_on = "write"
                    raise
                else:
                    flight -= n
                    moved += n
                    progress = True
                    if self.stalled:  # room in the pipe again: the EAGAIN may have been ours
                        self.stalled = drained = False
            if not flight:
                if pipe is not None:
                    self._pools.release_pipe(pipe)
                    self.pipe = pipe = None
                if self.eof:
                    self.in_flight = 0
                    self._finish()
                    break
            if not progress:
                break
        self.in_flight = flight
        return moved

    def _broken(self, exc: OSError) -> bool:
        """EPIPE on a pipe: its reader left.  Discard from now on instead of failing."""
        if not (self.dst_is_pipe and exc.errno == errno.EPIPE):
            return False
        self.discarding = True
        self.discarded += self.in_flight
        self.in_flight = 0
        self._start = self.end = 0
        if self.pipe is not None:
            self._pools.discard_pipe(self.pipe)
            self.pipe = None
        self.use_splice = False
        self.stalled = False
        return True

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
        self.use_splice = False
        self.stalled = False
        return self._run_copy()

    def _run_copy(self) -> int:
        if self.discarding:
            return self._run_discard()
        raw = not trace.enabled()
        moved = 0
        drained = False
        blocked = False
        view = self.view
        src = self.src_fd
        dst = self.dst_fd
        for _ in range(MAX_ROUNDS):
            progress = False
            if not (self.eof or drained):
                if view is None:
                    if self.bulk and self.use_splice:
                        view = self._pools.bulk()
                        if view is None:  # every bulk buffer is taken: splice meanwhile
                            return moved + self._run_splice()
                    else:
                        view = self._pools.buffer()
                    self.view = view
                end = self.end
                room = len(view) - end
                if room > 0:
                    try:
                        n = _readv(src, [view[end:]]) if raw else read_into(src, view[end:])
                    except BlockingIOError:
                        drained = True
                    except OSError:
                        self.failed_on = "read"
                        raise
                    else:
                        if n:
                            self.end = end + n
                            self.in_flight += n
                            progress = True
                            drained = n < room
                        else:
                            self.eof = True
            if self.in_flight and not blocked:
                assert view is not None
                start = self._start
                chunk = view[start : self.end]
                try:
                    n = _write(dst, chunk) if raw else write(dst, chunk)
                except BlockingIOError:
                    blocked = True
                except OSError as exc:
                    if self._broken(exc):
                        return moved + self._run_discard()
                    self.failed_on = "write"
                    raise
                else:
                    self._start = start + n
                    self.in_flight -= n
                    moved += n
                    progress = True
                    if not self.in_flight:
                        self._start = self.end = 0
            if not self.in_flight:
                if view is not None:
                    self._pools.release_buffer(view)
                    self.view = view = None
                if self.eof:
                    self._finish()
                    break
            if not progress:
                break
        return moved

    def _run_discard(self) -> int:
        """``dst`` is gone: read ``src`` until its EOF and drop what it sends."""
        if self.view is None:
            self.view = self._pools.buffer()
        view = self.view
        for _ in range(MAX_ROUNDS):
            try:
                n = read_into(self.src_fd, view)
            except BlockingIOError:
                return 0
            except OSError:
                self.failed_on = "read"
                raise
            if not n:
                self.eof = self.done = True
                self._pools.release_buffer(view)
                self.view = None
                return 0
            self.discarded += n
            if n < len(view):
                return 0
        return 0

    def _finish(self) -> None:
        """Everything ``src`` sent is delivered: pass its EOF on."""
        self.done = True
        try:
            self._finish_cb()
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:  # the peer is gone already: nothing to tell it
                self.failed_on = "write"
                raise

    def discard(self) -> None:
        """The connection is over: give back (or, if it still holds bytes, close) the buffers."""
        if self.pipe is not None:
            if self.in_flight:
                self._pools.discard_pipe(self.pipe)
            else:
                self._pools.release_pipe(self.pipe)
            self.pipe = None
        if self.view is not None:
            self._pools.release_buffer(self.view)
            self.view = None
        self.in_flight = 0

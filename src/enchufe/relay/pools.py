"""Pipes and buffers lent to the relay's pumps while bytes are in flight, and given back.

A relayed connection holds a pipe or a buffer only while bytes are in flight: it borrows one
from the :class:`Pools` when the first bytes arrive and gives it back as soon as it is empty, so
thousands of idle connections hold none, and a busy relay reuses a few.  What is kept for reuse
is bounded (:data:`MAX_IDLE_PIPES`, :data:`MAX_IDLE_BULK`), and so is the memory of the bulk
buffers in use at once (:data:`BULK_BUFFERS` of :data:`BULK_CHUNK`): pumps that find none free
splice instead (see :mod:`.pump`).
"""

from __future__ import annotations

import contextlib
import mmap

from .._nonblocking import close_fd, make_pipe

__all__ = [
    "BULK_BUFFERS",
    "BULK_CHUNK",
    "COPY_CHUNK",
    "MAX_IDLE_BULK",
    "MAX_IDLE_PIPES",
    "PIPE_SIZE",
    "TLS_HOP",
    "Pipe",
    "Pools",
]

#: Capacity asked for each splice pipe.  The more a pipe holds, the more one pair of splice calls
#: moves (loopback TCP delivers hundreds of KiB per wake-up); 256 KiB measured close to 1 MiB in
#: throughput while tying up a quarter of the kernel memory per busy direction.
PIPE_SIZE = 256 * 1024

#: Size of each copy-mode buffer: one 64 KiB ``recv`` is what a socket typically has ready, and
#: it bounds what a connection that fell back to copying holds per direction.
COPY_CHUNK = 64 * 1024

#: Size of the buffer TLS pumps decrypt into (and read plaintext into, to encrypt), shared by all
#: of them as the hop buffer is: the records a socket holds go on to the other side in one write.
#: TLS→TCP termination of 4 GiB, four runs alternating: 8.4 Gbit/s on average with 256 KiB, 6.9
#: with 64 KiB (a write to the target per 16 records instead of per 4); then nine pairs, 1 MiB
#: against 256 KiB: 1 MiB faster in each of the last four (10.0 Gbit/s on average against 9.3),
#: 8.7 against 7.9 in the first five.  What the target does not take is kept by the connection:
#: up to this much per stalled direction, less than the kernel lets each socket buffer.
TLS_HOP = 1024 * 1024

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
        #: the buffer of the pumps' small-message path (:meth:`.pump.Pump.run`), shared by all:
        #: the loop is one thread, and a hop's bytes are written on, or moved to a buffer of
        #: their pump's own, before the next hop reads; and its iovec for ``readv``
        self.hop = memoryview(bytearray(copy_size))
        self.hop_iov = [self.hop]
        self.hop_size = copy_size
        self._tls_hop: memoryview | None = None

    @property
    def tls_hop(self) -> memoryview:
        """The TLS pumps' shared buffer (:data:`TLS_HOP` bytes), made when the first is."""
        if self._tls_hop is None:
            self._tls_hop = memoryview(bytearray(TLS_HOP))
        return self._tls_hop

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

    @property
    def idle_buffers(self) -> int:
        """Copy buffers kept for reuse (for tests)."""
        return len(self._buffers)

    @property
    def idle_bulk(self) -> int:
        """Bulk buffers kept for reuse (for tests)."""
        return len(self._bulk)

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
                # A slice still alive pins the mapping: then it is unmapped when that slice
                # goes (the mmap object's last reference), never an error here.
                with contextlib.suppress(BufferError):
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

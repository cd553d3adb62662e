"""What one direction of a relayed stream holds: its descriptors, the bytes in flight (in a
pooled pipe or buffer), whether ``src`` ended, and how it gives back what it holds.

How bytes move (the half-steps, the small-message path) is :class:`.pump.Pump`, this class's
only subclass; the state is kept apart so that each module stays one idea of a readable size.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from typing import Any, ClassVar

from .. import _calls
from .pools import Pipe, Pools

__all__ = ["HAS_SPLICE", "NEVER", "PumpState", "Step", "pass_eof"]

HAS_SPLICE = hasattr(os, "splice")

#: :attr:`PumpState.hold_off` of a pump that never takes the small-message path.
NEVER = -1

#: A half-step: ``step(pump, raw)`` (``raw``: make the system call itself, tracing is off).
Step = Callable[[Any, bool], int]


def pass_eof(pump: Any) -> None:
    """Call ``pump``'s EOF callback (``shutdown(SHUT_WR)``, or closing a pipe) once everything
    its source sent is delivered: a peer that is gone already (ENOTCONN) has nothing to be told;
    any other failure is the pump's write failing.  Every kind of pump ends this way."""
    try:
        pump._finish_cb()
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            pump.failed_on = "write"
            raise


class PumpState:
    """One direction's state (see the module).

    * :attr:`wants_read` / :attr:`wants_write`: the readiness to wait for on ``src`` / ``dst``.
    * Bytes in flight sit in :attr:`pipe` (splicing) or in :attr:`view` (copying, through a bulk
      or copy buffer), whose bytes up to :attr:`end` have been read; at most one of them is held.

    ``src`` and ``dst`` may be sockets or bare descriptors; ``dst_is_pipe`` says that a broken
    ``dst`` (EPIPE) means its reader left rather than that the connection failed.
    """

    #: the ways bytes move, set by the subclass: splicing, and copying through a buffer
    splicing: ClassVar[tuple[Step, Step]]
    copying: ClassVar[tuple[Step, Step]]

    __slots__ = (
        "_finish_cb",
        "_pools",
        "_start",
        "_way",
        "bulk",
        "discarded",
        "discarding",
        "done",
        "dst_fd",
        "dst_is_pipe",
        "end",
        "eof",
        "failed_on",
        "hold_off",
        "in_flight",
        "pipe",
        "src_fd",
        "stalled",
        "taken",
        "unreported",
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
                _calls.shutdown(sock, socket.SHUT_WR)

        self._finish_cb = finish
        #: bytes a run delivered before it raised (the session takes them into its counts)
        self.unreported = 0
        self.dst_is_pipe = dst_is_pipe
        #: copy through a bulk buffer while one is free (the destination is a TCP socket)
        self.bulk = bulk
        self._pools = pools
        self.use_splice = use_splice and HAS_SPLICE
        #: the read and write half-steps of the way bytes move now (:attr:`splicing`, …)
        self._way = self.splicing if self.use_splice else self.copying
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
        #: runs of the general path before the small-message path is tried again (bytes came
        #: in bulk), or :data:`NEVER` (a pump that splices: towards unix sockets and pipes; a
        #: pump that is done, or discards)
        self.hold_off = NEVER if self.use_splice and not bulk else 0
        #: what the loop's shortcut for ``src`` read and could not finish (``Loop.take``: the
        #: bytes, how many were sent, the errno of a failed read and send), for :meth:`run`
        self.taken: tuple[bytes, int, int, int] | None = None

    @property
    def simple(self) -> bool:
        """Nothing in flight, no EOF, the small-message path open: what the loop's shortcut
        (one read and one send, compiled) may do for this pump is all it would do."""
        return not (self.in_flight or self.hold_off or self.eof or self.stalled or self.taken)

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

    def _release(self) -> None:
        """Nothing is in flight: give back the pipe or buffer."""
        if self.pipe is not None:
            self._pools.release_pipe(self.pipe)
            self.pipe = None
        if self.view is not None:
            self._pools.release_buffer(self.view)
            self.view = None
        self._start = self.end = 0

    def _finish(self) -> None:
        """Everything ``src`` sent is delivered: pass its EOF on."""
        self.done = True
        self.hold_off = NEVER
        pass_eof(self)

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
        # The callback is its session's (it may hold the session itself): let go of it, so that
        # reference counting frees a finished session at once (see Side.close).
        self._finish_cb = _finished


def _finished() -> None:
    """A discarded pump's EOF goes nowhere: its connection is over."""

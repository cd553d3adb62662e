"""The policy of a half-close copy between two byte endpoints, without any I/O (sans-IO).

A :class:`HalfClose` is two :class:`Flow` objects, one per direction, plus the rules that say
when the whole exchange is over.  The driver does the I/O and the waiting (``selectors`` for
:func:`enchufe.stdio.pump_stream`, the asyncio loop for :func:`enchufe.exec.run_exec`) and only
asks and tells the core::

    flow.wants_read      → read the source when it is readable; then flow.read(data)  (b"": EOF)
    flow.wants_write     → write flow.pending to the sink when it is writable; then flow.wrote(n)
    flow.wants_shutdown  → pass the EOF on (shutdown(SHUT_WR), close a pipe); then flow.shutdown()
    flow.abandon()       → the sink is gone (EPIPE): what is pending is dropped, the flow is done
    copy.over            → both directions are done, or the incoming one is and a terminal may
                           never send EOF (``stop_at_incoming_eof``)
    copy.wait_for()      → how long to wait for readiness (None: forever); copy.idle once the
                           idle timeout has passed with nothing moving

Backpressure is the flow's: a source is read only while nothing read from it is pending, so
one chunk per direction is ever held.  A ``rewrite`` hook turns each chunk read into what is
written (``--crlf``; it may keep state across chunks and return nothing); an ``observe`` hook
sees each chunk as it is taken (``--hex``).  Errors are the driver's: a reset is raised where
the read or write failed and the driver closes its ends abortively.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Flow", "HalfClose", "Observer", "Rewriter"]

#: Turns a chunk read into the bytes to write (``b""``: nothing this time, read on).
Rewriter = Callable[[bytes], bytes]
#: Sees every chunk with its flow's name (``"out"`` or ``"in"``) once it is taken.
Observer = Callable[[str, bytes], None]

_EMPTY = memoryview(b"")


class Flow:
    """One direction of the copy: what was read from the source and is not yet written."""

    __slots__ = ("_observe", "_rewrite", "eof", "moved", "name", "pending", "shut")

    def __init__(
        self, name: str, *, rewrite: Rewriter | None = None, observe: Observer | None = None
    ) -> None:
        self.name = name
        self._rewrite = rewrite
        self._observe = observe
        #: read from the source, not yet taken by the sink
        self.pending = _EMPTY
        #: the source ended
        self.eof = False
        #: the EOF was passed on to the sink (or the sink is gone): this direction is done
        self.shut = False
        #: bytes the sink took
        self.moved = 0

    @property
    def wants_read(self) -> bool:
        return not (self.eof or self.pending)

    @property
    def wants_write(self) -> bool:
        return bool(self.pending)

    @property
    def wants_shutdown(self) -> bool:
        return self.eof and not self.pending and not self.shut

    @property
    def done(self) -> bool:
        return self.shut

    def read(self, data: bytes | memoryview) -> None:
        """What the source gave (``b""``: its EOF), rewritten and observed, is now pending.  A
        memoryview (of a buffer the source reuses) must be written before the next read; the
        rewriter and the observer get bytes of their own."""
        if not data:
            self.eof = True
            return
        if self._rewrite is not None:
            data = self._rewrite(bytes(data))
        if data:
            if self._observe is not None:
                self._observe(self.name, data if isinstance(data, bytes) else bytes(data))
            self.pending = memoryview(data)

    def wrote(self, count: int) -> None:
        """The sink took the first ``count`` pending bytes."""
        self.moved += count
        self.pending = self.pending[count:]

    def shutdown(self) -> None:
        """The EOF was passed on."""
        self.shut = True

    def abandon(self) -> None:
        """The sink is gone (its reader left): nothing more goes this way."""
        self.pending = _EMPTY
        self.eof = self.shut = True


class HalfClose:
    """Two flows, ``outgoing`` (towards the peer) and ``incoming`` (from it), and when they end.

    ``stop_at_incoming_eof``: the exchange is over once the incoming flow is done (the local
    source is a terminal, which may never send EOF).  ``idle_timeout``: it is over, with
    :attr:`idle` set, once nothing was ready for that many seconds (see :meth:`touch`).
    """

    __slots__ = ("_clock", "_last", "idle", "idle_timeout", "incoming", "outgoing", "stop_at_incoming_eof")

    def __init__(
        self,
        outgoing: Flow,
        incoming: Flow,
        *,
        stop_at_incoming_eof: bool = False,
        idle_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outgoing = outgoing
        self.incoming = incoming
        self.stop_at_incoming_eof = stop_at_incoming_eof
        self.idle_timeout = idle_timeout
        self.idle = False
        self._clock = clock
        self._last = clock()

    @property
    def over(self) -> bool:
        if self.idle:
            return True
        return self.incoming.done and (self.outgoing.done or self.stop_at_incoming_eof)

    def touch(self) -> None:
        """Something was ready: the idle clock starts again."""
        self._last = self._clock()

    def wait_for(self) -> float | None:
        """Seconds to wait for readiness (``None``: no limit); sets :attr:`idle` (and returns 0)
        once the idle timeout has passed."""
        if self.idle_timeout is None:
            return None
        left = self.idle_timeout - (self._clock() - self._last)
        if left <= 0:
            self.idle = True
            return 0.0
        return left

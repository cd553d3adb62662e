"""Host names resolved off the relay's loop: a few threads call getaddrinfo, the loop gets the answers.

::

    lookups = Lookups(loop)
    pending = lookups.resolve(InetAddress("tcp", "example.com", 80), done, on_error)
    # later, in the loop's thread: done([Target, …]) or done(NameResolutionError(…))
    pending.cancel()        # the session ended first: done is never called
    lookups.close()

:mod:`.targets` resolves TARGET on the loop (blocking it, once every 30 s); a SOCKS server gets a
new name from every client, so a slow DNS server would stall every relayed connection.  Here the
lookup runs in one of :data:`MAX_THREADS` threads, and its answer comes back through a pipe the
loop watches.  An IP literal needs no thread: it is answered at once, in the caller's turn.
The threads are made on the first lookup (after a ``--workers`` fork, in the worker).
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import _resolve
from .._resolve import Target
from ..address import InetAddress
from ..errors import EnchufeError, NameResolutionError
from ..i18n import _
from .engine import READ, Loop, OnError

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["MAX_THREADS", "Lookups", "Pending"]

#: Lookups at once; more wait their turn (each holds its client's slot meanwhile, bounded by
#: its session's timer), so that a few names a slow DNS server sits on do not stall the rest.
MAX_THREADS = 16

Answer = list[Target] | EnchufeError
Done = Callable[[Answer], None]


class Pending:
    """A lookup under way; :meth:`cancel` drops its answer, and takes it out of the queue if no
    thread has started it (a flood of names whose clients are gone must not keep the threads
    busy for the clients that come next).  ``cancelled`` is also true once the answer was given."""

    __slots__ = ("cancelled", "done", "future", "on_error")

    def __init__(self, done: Done, on_error: OnError) -> None:
        self.done = done
        self.on_error = on_error
        self.cancelled = False
        self.future: Future[Answer] | None = None

    def cancel(self) -> None:
        self.cancelled = True
        if self.future is not None:
            self.future.cancel()


class Lookups:
    """Threads that resolve, and the pipe their answers come back through (see the module)."""

    def __init__(self, loop: Loop) -> None:
        self._loop = loop
        self._pool: ThreadPoolExecutor | None = None
        self._answers: collections.deque[tuple[Pending, Answer]] = collections.deque()
        self._pipe: tuple[int, int] | None = None
        #: held while a thread posts and while the pipe closes: a closed pipe's number may be
        #: someone's socket by then
        self._lock = threading.Lock()

    def resolve(self, address: InetAddress, done: Done, on_error: OnError) -> Pending:
        """Resolve ``address`` (a host and a port); ``done(answer)`` runs in the loop's thread."""
        pending = Pending(done, on_error)
        if address.family is not None:  # a literal: parsed, no lookup
            pending.cancelled = True  # answered: nothing left to cancel
            done(_answer(address))
            return pending
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._pipe = (read_end, write_end)
            self._loop.register(read_end, READ, self._on_answers)
            self._pool = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="enchufe-lookup")
        future = pending.future = self._pool.submit(_answer, address)
        future.add_done_callback(lambda f: self._post(pending, f))
        return pending

    def _post(self, pending: Pending, future: Future[Answer]) -> None:
        """In a lookup thread: queue the answer and wake the loop."""
        if future.cancelled():
            return
        with self._lock:
            if self._pipe is None:  # closed meanwhile
                return
            self._answers.append((pending, future.result()))
            with contextlib.suppress(OSError):  # full: the loop is behind, and drains all at once
                os.write(self._pipe[1], b"\0")

    def _on_answers(self, _events: int) -> None:
        assert self._pipe is not None
        with contextlib.suppress(OSError):
            while os.read(self._pipe[0], 4096):
                pass
        while self._answers:
            pending, answer = self._answers.popleft()
            if pending.cancelled:
                continue
            pending.cancelled = True
            try:
                pending.done(answer)
            except Exception as exc:  # that session's failure, not the others'
                self._loop.fail(exc, pending.on_error)

    def close(self) -> None:
        """Stop the threads (a lookup under way finishes on its own; its answer is dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        with self._lock:
            if self._pipe is not None:
                self._loop.unregister(self._pipe[0])
                for fd in self._pipe:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                self._pipe = None


def _answer(address: InetAddress) -> Answer:
    try:
        return _resolve.resolve(address, passive=False)
    except EnchufeError as exc:
        return exc
    except Exception as exc:  # UnicodeError from IDNA, say: the answer must come back
        return NameResolutionError(
            _("cannot resolve {host}: {reason}").format(host=repr(address.host), reason=exc)
        )

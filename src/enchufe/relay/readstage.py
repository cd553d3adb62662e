"""What a client sends before its bytes are relayed, read off its socket on the relay's loop.

A stream session may first have to read something from its client: its PROXY protocol header
(``--accept-proxy``, :class:`~enchufe.relay.proxying.ProxyRead`), then its TLS ClientHello
(``--route``, :class:`~enchufe.relay.routing.HelloRead`).  Each is a :class:`ReadStage`: the
client's descriptor is watched for reading only meanwhile, never blocking, and a timer bounds the
whole stage, so a client that sends nothing (or too little) holds its slot until then and is cut.
The answer is given once, to ``done``; a session that ends first cancels the stage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .engine import READ, Loop, Timer

if TYPE_CHECKING:
    from .engine import OnError

__all__ = ["ReadStage"]


class ReadStage:
    """A bounded read of ``fd`` before relaying: :meth:`start` watches it and arms the timer;
    subclasses read in :meth:`_on_read`, answer in :meth:`_timed_out` when the time is up, and
    give their answer with :meth:`_finish` (once: later answers are dropped)."""

    __slots__ = ("_done", "_fd", "_loop", "_on_error", "_registered", "_timeout", "_timer")

    def __init__(
        self, loop: Loop, fd: int, timeout: float, done: Callable[..., None], on_error: OnError
    ) -> None:
        self._loop = loop
        self._fd = fd
        self._timeout = timeout
        self._done = done
        self._on_error = on_error
        self._timer: Timer | None = None
        #: whether :meth:`start` watched the descriptor (not when the answer was there at once)
        self._registered = False

    def start(self) -> None:
        """Read what is there already (often all of it: no registration, no timer then); else
        watch the descriptor and arm the timer."""
        self._on_read(READ)
        if self._done is _spent:
            return
        self.watch()

    def watch(self) -> None:
        """Watch the descriptor and arm the timer: for a stage whose first read was done before
        it was made (what was there is in it already)."""
        self._loop.register(self._fd, READ, self._on_read, self._on_error)
        self._registered = True
        self._timer = self._loop.call_later(self._timeout, self._expired, self._on_error)

    def _on_read(self, _events: int) -> None:
        """The descriptor is readable: read, and :meth:`_finish` once there is an answer."""
        raise NotImplementedError

    def _timed_out(self) -> None:
        """The time is up: :meth:`_finish` with the refusal that says so."""
        raise NotImplementedError

    def _expired(self) -> None:
        self._timer = None
        self._timed_out()

    def _finish(self, *answer: Any) -> None:
        """Stop watching and timing; ``answer`` goes to ``done`` (the first time only)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._registered and self._loop.watching(self._fd):
            self._loop.unregister(self._fd)
        done, self._done = self._done, _spent
        done(*answer)

    def cancel(self) -> None:
        """The session ended first: stop, without an answer (closing the descriptor is its
        owner's)."""
        self._done = _spent
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _spent(*answer: Any) -> None:
    """The answer was given (or the session ended): later calls do nothing."""

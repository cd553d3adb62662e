"""What every endpoint object of ``enchufe.sync`` and ``enchufe.aio`` holds, with no waiting.

An endpoint owns one socket and its descriptor, and knows whether it is closed.  The sync and
asyncio endpoints are built on the same cores (:mod:`enchufe._streams`,
:mod:`enchufe._datagrams`), which make one attempt of each operation and let the caller wait:
the sync side by blocking in the kernel, the asyncio side on the event loop.  The two mixins
here are the two ways to be closed by a ``with`` block.
"""

from __future__ import annotations

import contextlib
import socket
from types import TracebackType
from typing import Self

from . import _calls, _unixfiles
from .errors import ClosedError
from .i18n import N_, _


class Endpoint:
    """One socket, its descriptor, whether :meth:`close` was called, and the socket file it
    created (a unix listener or datagram socket), removed when it closes."""

    #: What :class:`~enchufe.errors.ClosedError` says once it is closed (translated when raised).
    _closed_message = N_("this socket is closed")

    def __init__(self, sock: socket.socket, owned: _unixfiles.SocketFile | None = None) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._owned = owned
        self._closed = False

    @property
    def socket(self) -> socket.socket:
        """The underlying socket, for options enchufe does not wrap."""
        return self._sock

    def fileno(self) -> int:
        return self._fd

    @property
    def closed(self) -> bool:
        return self._closed

    def _check(self) -> None:
        if self._closed:
            raise ClosedError(_(self._closed_message))

    def _wake_waiters(self) -> None:
        """Wake whoever waits on the socket: called once it counts as closed, before the
        descriptor goes (which would leave them asleep)."""

    def close(self) -> None:
        """Close the socket, and remove the socket file it created if it is still its own.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wake_waiters()
        with contextlib.suppress(OSError):
            _calls.close(self._sock)
        if self._owned is not None:
            self._owned.release()


class Closing(Endpoint):
    """``with endpoint:`` closes it on the way out."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClosing(Endpoint):
    """``async with endpoint:`` closes it on the way out; ``await aclose()`` closes it too."""

    async def aclose(self) -> None:
        """Close the socket.  Idempotent."""
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

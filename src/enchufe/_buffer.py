"""The receive-side bookkeeping shared by the sync and async connections, with no I/O.

``recv_exactly`` and ``recv_until`` read more than they return; what is left over waits here
for the next call.  Each ``take_*`` method returns the bytes when it can, or ``None`` when the
caller must receive more and :meth:`feed` it.  The sizes every receiver uses are here too.
"""

from __future__ import annotations

from . import _ranges
from .errors import IncompleteRead, ProtocolError, UsageError
from .i18n import _

#: What one ``recv()`` asks the kernel for by default: 64 KiB matches the loopback MTU and
#: typical socket buffers, so one call usually drains what is there without a huge allocation.
DEFAULT_RECV_SIZE = 65536

#: The most one ``recv()`` of ``recv_exactly`` asks for.  A peer declares a size, not the bytes:
#: asking the kernel for all of it at once would allocate it all before a byte arrives (a
#: 1 GiB length prefix, then nothing, must not cost 1 GiB).  What is buffered then grows only
#: with what really arrives.
MAX_RECV_CHUNK = 256 * 1024

#: ``recv_until`` gives up after this many bytes without the delimiter: a peer that never sends
#: one must not make us buffer without bound.
DEFAULT_MAX_UNTIL = 65536

#: Receive buffer for one datagram.  The largest UDP payload is 65,507 bytes (IPv4) / 65,527
#: (IPv6), so 64 KiB never truncates UDP; unix datagrams may be larger (up to the socket's
#: send buffer) and are reported as truncated rather than silently cut.
DEFAULT_MAX_DATAGRAM = 65536


class ReceiveBuffer:
    def __init__(self) -> None:
        self._data = bytearray()
        self._searched = 0  # bytes already searched for the delimiter without success
        self._searched_for = b""  # ... for this delimiter (a call with another searches anew)

    def __len__(self) -> int:
        return len(self._data)

    def feed(self, chunk: bytes) -> None:
        self._data += chunk

    def _take(self, size: int) -> bytes:
        data = bytes(self._data[:size])
        del self._data[:size]
        self._searched = 0
        return data

    def take_some(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of what is buffered (``b""`` when nothing is)."""
        return self._take(max_bytes)

    def take_exactly(self, size: int) -> bytes | None:
        return self._take(size) if len(self._data) >= size else None

    def wanted(self, size: int) -> int:
        """How much to ask one ``recv()`` for, towards ``size`` buffered bytes: what is missing,
        at least :data:`DEFAULT_RECV_SIZE`, at most :data:`MAX_RECV_CHUNK`."""
        return min(max(size - len(self._data), DEFAULT_RECV_SIZE), MAX_RECV_CHUNK)

    def incomplete(self, size: int, where: str) -> IncompleteRead:
        """The error for EOF before ``size`` bytes; the partial bytes go with it."""
        partial = self._take(len(self._data))
        return IncompleteRead(
            _("{peer} closed the connection after {got} of {size} bytes").format(
                peer=where, got=len(partial), size=size
            ),
            partial,
        )

    def take_until(self, delimiter: bytes, max_bytes: int, where: str) -> bytes | None:
        """Bytes up to and including ``delimiter``; ``ProtocolError`` past ``max_bytes`` without one."""
        if not delimiter:
            raise UsageError(_("the delimiter must not be empty"))
        _ranges.integer(max_bytes, "max_bytes", 1)
        if delimiter != self._searched_for:
            self._searched, self._searched_for = 0, bytes(delimiter)
        # Search again only where a delimiter could newly complete.
        start = max(0, self._searched - len(delimiter) + 1)
        found = self._data.find(delimiter, start)
        if found >= 0:
            end = found + len(delimiter)
            if end <= max_bytes:
                return self._take(end)
        elif len(self._data) < max_bytes:
            self._searched = len(self._data)
            return None
        raise ProtocolError(
            _("{peer} sent {count} bytes without {delimiter}").format(
                peer=where, count=max_bytes, delimiter=repr(delimiter)
            )
        )

    def take_rest(self) -> bytes:
        """Everything buffered (at EOF, what came after the last delimiter)."""
        return self._take(len(self._data))

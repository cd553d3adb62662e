"""Blocking reads with a deadline that a stop signal never waits behind (``send --wait-reply``).

A stop signal that lands just before a read blocks only sets a flag (see
:mod:`enchufe._wakeup`): its handler runs when the read returns.  These reads wait in slices of
:data:`SIGNAL_SLICE` seconds, so that SIGTERM, SIGHUP or Ctrl-C end them within that, not at the
end of a whole ``--timeout`` (seen: ``send --wait-reply --timeout 60`` still waiting 15 s after
SIGHUP, its one ``recv`` started just after the signal came).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .errors import ConnectionReset, TimedOut
from .sync import Connection, DatagramSocket

__all__ = ["CHUNK", "SIGNAL_SLICE", "drain_until_eof", "recv_within"]

#: Bytes per read of :func:`drain_until_eof`.
CHUNK = 65536
#: The longest one blocking read waits, in seconds.
SIGNAL_SLICE = 0.2


def drain_until_eof(conn: Connection, timeout: float, sink: Callable[[bytes], None] | None) -> bool:
    """Read until the peer closes, handing each chunk to ``sink``; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        conn.set_timeout(min(left, SIGNAL_SLICE))
        try:
            chunk = conn.recv(CHUNK)
        except TimedOut:
            continue  # a slice without data: the deadline is looked at again
        except ConnectionReset:
            if sink is not None:
                raise  # the answer was cut short: not a clean end
            return True  # nothing was wanted from the peer; our data had been sent
        if not chunk:
            return True
        if sink is not None:
            sink(chunk)


def recv_within(sock: DatagramSocket, timeout: float) -> bytes:
    """One datagram, waited for at most ``timeout`` seconds (:class:`~enchufe.errors.TimedOut`
    after that), in slices of :data:`SIGNAL_SLICE`: a stop signal is acted on at once."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        sock.set_timeout(max(min(left, SIGNAL_SLICE), 0.001))
        try:
            return sock.recv()
        except TimedOut:
            if left <= SIGNAL_SLICE:
                raise

"""The building blocks of the measurement loops (:mod:`.measures`): the kernel's timeouts on a
blocking socket, the error a stalled or failed loop raises, worker threads whose failure the
measuring thread sees, and the streams a test opens.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable

from ..address import SocketAddress
from ..errors import EnchufeError, TimedOut, doing, translate
from ..i18n import _
from ..sync import connect
from ..sync.stream import Connection

__all__ = [
    "CONNECT_TIMEOUT",
    "IO_TIMEOUT",
    "RECV_BUFFER",
    "TIMEVAL",
    "Worker",
    "error_for",
    "finish_stream",
    "no_delay",
    "open_streams",
    "raise_first",
    "set_kernel_timeouts",
]

#: Seconds a connection attempt may take: loopback answers in microseconds, a remote server in
#: milliseconds; more means nobody is there.
CONNECT_TIMEOUT = 5.0

#: Seconds a socket may make no progress (no byte taken, none arrived) before the measure fails.
#: Generous, because a loaded machine can stall a process for a while; short enough that a
#: server which stopped reading is reported, not waited for.
IO_TIMEOUT = 5.0

#: Receive buffer for echoes and datagrams: larger than any UDP payload.
RECV_BUFFER = 65536 + 1024

#: A ``struct timeval`` as SO_RCVTIMEO and SO_SNDTIMEO take it.
TIMEVAL = struct.Struct("ll")


def set_kernel_timeouts(sock: socket.socket, *, recv: float | None, send: float | None) -> None:
    """SO_RCVTIMEO / SO_SNDTIMEO on a blocking socket: a wait that ends without any system call
    beyond the blocked one; it then fails with EAGAIN (BlockingIOError)."""
    for option, seconds in ((socket.SO_RCVTIMEO, recv), (socket.SO_SNDTIMEO, send)):
        if seconds is None:
            continue
        whole = int(seconds)
        sock.setsockopt(socket.SOL_SOCKET, option, TIMEVAL.pack(whole, int((seconds - whole) * 1e6)))


def error_for(exc: OSError, what: str, timeout: float = IO_TIMEOUT) -> EnchufeError:
    """The enchufe error for a failed system call in a hot loop."""
    if isinstance(exc, BlockingIOError):  # SO_RCVTIMEO / SO_SNDTIMEO ran out
        return TimedOut(
            _("cannot {what}: no progress for {seconds} s; is the server still working?").format(
                what=doing(what), seconds=f"{timeout:g}"
            )
        )
    return translate(exc, what)


def no_delay(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def finish_stream(sock: socket.socket, buffer: bytearray, what: str) -> float:
    """Send EOF, read until the server closes; returns the time of its EOF."""
    try:
        sock.shutdown(socket.SHUT_WR)
        while sock.recv_into(buffer):
            pass
    except OSError as exc:
        raise error_for(exc, what) from exc
    return time.perf_counter()


class Worker:
    """A thread whose exception is kept for the measuring thread, and which flags a failure."""

    def __init__(self, name: str, body: Callable[[], None], failed: threading.Event) -> None:
        self.error: BaseException | None = None
        self._body = body
        self._failed = failed
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self._body()
        except BaseException as exc:
            self.error = exc
            self._failed.set()

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive() and self.error is None:
            self.error = TimedOut(
                _("{thread} did not finish within {seconds} s").format(
                    thread=self._thread.name, seconds=f"{timeout:g}"
                )
            )


def raise_first(workers: list[Worker]) -> None:
    for worker in workers:
        if worker.error is not None:
            if isinstance(worker.error, EnchufeError):
                raise worker.error
            error = _("{kind}: {error}").format(kind=type(worker.error).__name__, error=worker.error)
            raise EnchufeError(error) from worker.error


def open_streams(address: SocketAddress, count: int) -> list[Connection]:
    conns: list[Connection] = []
    try:
        for _i in range(count):
            conns.append(connect(address, timeout=CONNECT_TIMEOUT))
    except BaseException:
        for conn in conns:
            conn.close()
        raise
    return conns

"""The TLS measures of ``enchufe bench --kind tls,tls+unix``: throughput, handshakes per second
and ping-pong, each run twice on the same kind of connection, with TLS and without.

Unlike :mod:`.measures`, whose hot loops call the raw socket, these go through the library's
connection object (``send_all``/``recv``), the only way to speak TLS; the plain twin goes through
the same object, so the ratio between the two is what TLS costs and nothing else.  The servers
are bench's ``lib-`` roles (:mod:`.servers`) in the separate server process; the TLS one has a
``cert=auto`` certificate and the client trusts it by its pin (no files).

Every wait is bounded: connections time out after :data:`~.loops.IO_TIMEOUT` seconds without
progress, handshakes after :data:`~.loops.CONNECT_TIMEOUT`; a failure raises the library's
:class:`~enchufe.errors.EnchufeError`, recorded by the runner as that measure's error.
"""

from __future__ import annotations

import time

from .._tlsstream import forget_sessions
from ..address import InetAddress, SocketAddress, UnixAddress, parse
from ..errors import ProtocolError
from ..i18n import _
from ..sync import connect
from ..sync.stream import Connection
from .loops import CONNECT_TIMEOUT, IO_TIMEOUT, no_delay
from .results import ConnectRate, Latency, Throughput
from .stats import summarize

__all__ = ["TLS_KINDS", "client_address", "handshake_rate", "pingpong", "throughput"]

#: The TLS kinds --kind accepts: the address bench's server binds, and the plain twin's.
TLS_KINDS: dict[str, tuple[str, str]] = {
    "tls": ("tls://127.0.0.1:0?cert=auto", "tcp://127.0.0.1:0"),
    "tls+unix": ("tls+unix://{folder}/tls.sock?cert=auto", "unix://{folder}/plain.sock"),
}

#: What the plain twin of each TLS kind is called in the report.
PLAIN_TWIN = {"tls": "tcp4", "tls+unix": "unix"}


def client_address(bound: SocketAddress, pin: str | None) -> SocketAddress:
    """The address a client connects to: the server's, trusting its certificate by ``pin``."""
    if pin is None:
        return bound
    address = parse(str(bound).split("?", 1)[0] + f"?pin={pin}")
    assert isinstance(address, InetAddress | UnixAddress)  # the same scheme as ``bound``
    return address


def _connect(address: SocketAddress) -> Connection:
    conn = connect(address, timeout=CONNECT_TIMEOUT)
    conn.set_timeout(IO_TIMEOUT)
    return conn


def throughput(address: SocketAddress, *, duration: float, warmup: float, size: int) -> Throughput:
    """One connection sending ``size``-byte writes into a sink for ``warmup`` then ``duration``
    seconds; the clock stops when the sink has read everything (it closes after our EOF)."""
    data = memoryview(bytearray(size))
    clock = time.perf_counter
    with _connect(address) as conn:
        send_all = conn.send_all
        end = clock() + warmup
        while clock() < end:
            send_all(data)
        sent = 0
        start = clock()
        end = start + duration
        while clock() < end:
            send_all(data)
            sent += size
        conn.shutdown_write()
        while conn.recv():
            pass
        stop = clock()
    return Throughput(1, size, stop - start, sent, "sink")


def handshake_rate(address: SocketAddress, *, duration: float, warmup: float) -> ConnectRate:
    """New connections one after the other, each with a full handshake (no session
    resumption): connect, handshake, the server closes, read its EOF, close."""
    clock = time.perf_counter

    def cycles(seconds: float) -> tuple[int, float, float]:
        done = 0
        start = now = clock()
        while now < start + seconds:
            forget_sessions()  # each one a full handshake, as socat's are
            with _connect(address) as conn:
                while conn.recv():
                    pass
            done += 1
            now = clock()
        return done, start, now

    cycles(warmup)
    done, start, stop = cycles(duration)
    return ConnectRate(stop - start, done)


def pingpong(address: SocketAddress, *, count: int, warmup: int, size: int) -> Latency:
    """``count`` round trips of ``size`` bytes to an echo server, after ``warmup`` uncounted."""
    message = bytes(size)
    samples: list[int] = []
    clock = time.perf_counter_ns
    with _connect(address) as conn:
        no_delay(conn.socket)
        send_all, recv = conn.send_all, conn.recv
        for i in range(warmup + count):
            started = clock()
            send_all(message)
            got = 0
            while got < size:
                chunk = recv(size - got)
                if not chunk:
                    raise ProtocolError(
                        _("{address} closed the connection after echoing {got} of {size} bytes").format(
                            address=address, got=got, size=size
                        )
                    )
                got += len(chunk)
            if i >= warmup:
                samples.append(clock() - started)
        conn.shutdown_write()
        while recv():
            pass
    return Latency(size, count, warmup, summarize(samples), samples_ns=samples)

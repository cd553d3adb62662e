"""Opening a stream through proxy hops on the event loop (``await connect(…, via=[…])``).

The asyncio mirror of :mod:`enchufe._via`: the same handshakes (:class:`enchufe.hops.Chain`),
the same peek-then-take reads, the same errors naming the hop; one attempt is bounded by
``timeout`` (the handshakes by ``DEFAULT_HOP_TIMEOUT`` when there is none), and cancelling
closes the socket.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from .. import _calls
from .._connect import ConnectPlan
from .._via import (
    DEFAULT_HOP_TIMEOUT,
    close_all,
    connect_to_relay,
    discard,
    named,
    peek,
    timed_out,
    udp_socket,
)
from ..address import InetAddress
from ..errors import NetworkError, translate
from ..hops import Chain, Hop, check_target
from ._wait import Readiness

T = TypeVar("T")

#: Opens the non-blocking TCP connection to the first proxy.
FirstLeg = Callable[[InetAddress], Awaitable[socket.socket]]


async def open_via(
    target: InetAddress,
    hops: Sequence[Hop],
    first_leg: FirstLeg,
    *,
    timeout: float | None,
    retries: int,
    retry_delay: float,
) -> socket.socket:
    """A non-blocking socket whose bytes reach ``target`` through ``hops`` (first hop first)."""
    check_target(target, hops)
    plan = ConnectPlan(target, retries=retries, retry_delay=retry_delay)
    return await _retried(plan, lambda: _attempt(target, hops, first_leg, timeout))


async def open_udp_via(
    target: InetAddress,
    hops: Sequence[Hop],
    first_leg: FirstLeg,
    *,
    timeout: float | None,
    retries: int,
    retry_delay: float,
) -> tuple[socket.socket, socket.socket]:
    """As :func:`enchufe._via.open_udp_via`: a non-blocking UDP socket connected to the relay
    of a SOCKS5 UDP association for ``target`` (one socks5 hop), and its TCP connection."""
    check_target(target, hops)
    plan = ConnectPlan(target, retries=retries, retry_delay=retry_delay)
    return await _retried(plan, lambda: _udp_attempt(hops[0], first_leg, timeout))


async def _retried(plan: ConnectPlan, attempt: Callable[[], Awaitable[T]]) -> T:
    """``await attempt()`` as ``plan`` says (see :func:`enchufe._via._retried`)."""
    for delay in plan:
        if delay:
            await asyncio.sleep(delay)
        try:
            return await attempt()
        except NetworkError as exc:
            plan.errors.append(exc)
    raise plan.error()


async def _udp_attempt(
    hop: Hop, first_leg: FirstLeg, timeout: float | None
) -> tuple[socket.socket, socket.socket]:
    start = time.monotonic()
    try:
        control = await first_leg(hop.address)
    except NetworkError as exc:
        raise named(exc, hop) from exc.__cause__
    seconds = (start + timeout - time.monotonic()) if timeout is not None else DEFAULT_HOP_TIMEOUT
    udp: socket.socket | None = None
    try:
        udp, chain = udp_socket(control, hop)
        async with asyncio.timeout(max(seconds, 0)):
            await _handshakes(control, chain)
        connect_to_relay(udp, control, chain)
    except TimeoutError:
        close_all(control, udp)
        raise timed_out(hop) from None
    except OSError as exc:
        close_all(control, udp)
        raise named(translate(exc, "use the proxy's UDP relay"), hop) from exc
    except BaseException:
        close_all(control, udp)
        raise
    return udp, control


async def _attempt(
    target: InetAddress, hops: Sequence[Hop], first_leg: FirstLeg, timeout: float | None
) -> socket.socket:
    start = time.monotonic()
    first = hops[0]
    try:
        sock = await first_leg(first.address)  # bounded by ``timeout`` itself
    except NetworkError as exc:
        raise named(exc, first) from exc.__cause__
    seconds = (start + timeout - time.monotonic()) if timeout is not None else DEFAULT_HOP_TIMEOUT
    chain = Chain(hops, target.host, target.port)
    try:
        async with asyncio.timeout(max(seconds, 0)):
            await _handshakes(sock, chain)
    except TimeoutError:
        _calls.close(sock)
        raise timed_out(chain.machine.hop) from None
    except BaseException:
        _calls.close(sock)
        raise
    return sock


async def _handshakes(sock: socket.socket, chain: Chain) -> None:
    ready = Readiness(sock)
    while not chain.done:
        hop = chain.machine.hop
        try:
            await _send_all(sock, ready, chain.outgoing(), hop)
            if chain.done:
                return
            data = await _peek(sock, ready, hop)
            if not data:
                chain.eof()
            discard(sock, chain.feed(data))  # bytes a peek showed are in the kernel: no wait
        except OSError as exc:
            raise named(translate(exc, "complete the handshake with the proxy"), hop) from exc


async def _send_all(sock: socket.socket, ready: Readiness, data: bytes, hop: Hop) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[_calls.send(sock, view) :]
        except BlockingIOError:
            await ready.writable(lambda: f"send to the proxy {hop}")


async def _peek(sock: socket.socket, ready: Readiness, hop: Hop) -> bytes:
    while True:
        try:
            return peek(sock)
        except BlockingIOError:
            await ready.readable(lambda: f"receive from the proxy {hop}")

"""Opening a stream through proxy hops with blocking I/O (``connect(…, via=[…])``).

The handshakes are :mod:`enchufe.hops`' state machines; this module only moves their bytes.
The proxy's answers are peeked (``MSG_PEEK``) and only the bytes a handshake used are taken from
the kernel, so that whatever follows a reply (a server that speaks first) stays for the
connection.  One attempt — the connection to the first proxy and every handshake — is bounded
by ``timeout`` (or :data:`DEFAULT_HOP_TIMEOUT` for the handshakes when there is none); the
attempts are retried as ``connect``'s are.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from . import _calls, trace
from ._connect import ConnectPlan
from ._sockets import open_connection
from .address import InetAddress
from .errors import NetworkError, TimedOut, translate
from .hops import Chain, Hop, check_target
from .i18n import _

#: Seconds the handshakes of one attempt may take when no timeout is given: a proxy that never
#: answers must not hold a client forever.
DEFAULT_HOP_TIMEOUT = 60.0
#: The most bytes looked at per read: more than any proxy's answer.
PEEK_SIZE = 4096

T = TypeVar("T")

#: Opens the TCP connection to the first proxy (``connect --source`` binds it first).
FirstLeg = Callable[[InetAddress, float | None], socket.socket]


def open_via(
    target: InetAddress,
    hops: Sequence[Hop],
    *,
    timeout: float | None,
    retries: int,
    retry_delay: float,
    first_leg: FirstLeg | None = None,
) -> socket.socket:
    """A socket whose bytes reach ``target`` through ``hops`` (first hop first).

    :class:`~enchufe.hops.HopRefused` when a proxy says no; the first proxy's connection
    errors (refused, timed out…) as for ``connect``, their message naming the hop."""
    check_target(target, hops)
    plan = ConnectPlan(target, retries=retries, retry_delay=retry_delay)
    return _retried(plan, lambda: _attempt(target, hops, timeout, first_leg or _plain))


def open_udp_via(
    target: InetAddress,
    hops: Sequence[Hop],
    *,
    timeout: float | None,
    retries: int,
    retry_delay: float,
    first_leg: FirstLeg | None = None,
) -> tuple[socket.socket, socket.socket]:
    """A UDP socket connected to the relay of a SOCKS5 UDP association for ``target`` (one
    socks5 hop), and the association's TCP connection, which must stay open while the UDP
    socket is used (the proxy ends the association when it closes).  Datagrams to and from the
    relay carry the SOCKS5 UDP header: :func:`enchufe._hop_socks5.udp_wrap` and ``udp_unwrap``.
    ``first_leg`` opens the TCP connection (``connect --source``); the UDP socket is bound to
    the same local address."""
    check_target(target, hops)
    plan = ConnectPlan(target, retries=retries, retry_delay=retry_delay)
    return _retried(plan, lambda: _udp_attempt(hops[0], timeout, first_leg or _plain))


def _retried(plan: ConnectPlan, attempt: Callable[[], T]) -> T:
    """``attempt()`` as ``plan`` says: again after each NetworkError, with its delays; the
    plan's error once the attempts are spent."""
    for delay in plan:
        if delay:
            time.sleep(delay)
        try:
            return attempt()
        except NetworkError as exc:
            plan.errors.append(exc)
    raise plan.error()


def _udp_attempt(hop: Hop, timeout: float | None, first_leg: FirstLeg) -> tuple[socket.socket, socket.socket]:
    start = time.monotonic()
    control = connect_first(hop, lambda: first_leg(hop.address, timeout))
    deadline = (start + timeout) if timeout is not None else time.monotonic() + DEFAULT_HOP_TIMEOUT
    udp: socket.socket | None = None
    try:
        udp, chain = udp_socket(control, hop)
        _handshakes(control, chain, deadline)
        connect_to_relay(udp, control, chain)
    except OSError as exc:
        close_all(control, udp)
        raise named(translate(exc, "use the proxy's UDP relay"), hop) from exc
    except BaseException:
        close_all(control, udp)
        raise
    control.settimeout(None)
    return udp, control


def udp_socket(control: socket.socket, hop: Hop) -> tuple[socket.socket, Chain]:
    """The UDP socket of an association over ``control`` (bound beside it: the association
    names the address this side sends from, and a strict proxy relays only that one), and the
    handshake that asks ``hop`` for it."""
    local = control.getsockname()[0]
    udp = _calls.new_socket(control.family, socket.SOCK_DGRAM)
    try:
        _calls.bind(udp, (local, 0))
        return udp, Chain([hop], local, udp.getsockname()[1], udp=True)
    except BaseException:
        _calls.close(udp)
        raise


def connect_to_relay(udp: socket.socket, control: socket.socket, chain: Chain) -> None:
    """Connect ``udp`` to the relay the proxy named when ``chain`` was done."""
    assert chain.bound is not None
    host, port = chain.bound
    if host in ("0.0.0.0", "::"):  # "the address you reached me at" (dante, many others)
        host = control.getpeername()[0]
    _calls.connect(udp, (host, port))


def close_all(*socks: socket.socket | None) -> None:
    for sock in socks:
        if sock is not None:
            _calls.close(sock)


def _plain(address: InetAddress, timeout: float | None) -> socket.socket:
    return open_connection(address, timeout=timeout, retries=0, retry_delay=0)[0]


def _attempt(
    target: InetAddress, hops: Sequence[Hop], timeout: float | None, first_leg: FirstLeg
) -> socket.socket:
    start = time.monotonic()
    first = hops[0]
    sock = connect_first(first, lambda: first_leg(first.address, timeout))
    deadline = (start + timeout) if timeout is not None else time.monotonic() + DEFAULT_HOP_TIMEOUT
    try:
        _handshakes(sock, Chain(hops, target.host, target.port), deadline)
    except BaseException:
        _calls.close(sock)
        raise
    sock.settimeout(None)
    return sock


def connect_first(hop: Hop, opener: Callable[[], socket.socket]) -> socket.socket:
    """``opener()``: the connection to the first proxy, its errors' message naming the hop."""
    if trace.enabled():
        trace.emit(_("via {hop}: connect to the proxy at {address}").format(hop=hop, address=hop.hostport))
    try:
        return opener()
    except NetworkError as exc:
        raise named(exc, hop) from exc.__cause__


def named(exc: NetworkError, hop: Hop) -> NetworkError:
    """``exc`` with its message saying which hop it happened at."""
    exc.args = (_("via {hop}: {reason}").format(hop=hop, reason=exc.args[0] if exc.args else exc),)
    return exc


def _handshakes(sock: socket.socket, chain: Chain, deadline: float) -> None:
    while not chain.done:
        hop = chain.machine.hop
        outgoing = chain.outgoing()
        try:
            if outgoing:
                _bounded(sock, deadline, hop)
                sock.sendall(outgoing)
                if trace.enabled():
                    trace.emit(f"send(fd {sock.fileno()}, {len(outgoing)} bytes) = {len(outgoing)}")
            if chain.done:
                return
            _bounded(sock, deadline, hop)
            data = peek(sock)
            if not data:
                chain.eof()
            discard(sock, chain.feed(data))
        except TimeoutError:
            raise timed_out(hop) from None
        except OSError as exc:
            raise named(translate(exc, "complete the handshake with the proxy"), hop) from exc


def peek(sock: socket.socket) -> bytes:
    """What the kernel holds (waiting for some), left there."""
    return _calls.traced(
        lambda: sock.recv(PEEK_SIZE, socket.MSG_PEEK),
        lambda: f"recv(fd {sock.fileno()}, {PEEK_SIZE}, MSG_PEEK)",
        lambda data: _calls.byte_count(len(data)),
    )


def discard(sock: socket.socket, size: int) -> None:
    """Take ``size`` bytes that a peek showed (they are in the kernel already)."""
    while size > 0:
        taken = _calls.recv(sock, size)
        if not taken:
            return
        size -= len(taken)


def _bounded(sock: socket.socket, deadline: float, hop: Hop) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    sock.settimeout(left)


def timed_out(hop: Hop) -> TimedOut:
    """The handshake with ``hop`` was still going when the attempt's time was up."""
    return TimedOut(
        _("via {hop}: the proxy did not finish its handshake in time").format(hop=hop), action="connect"
    )

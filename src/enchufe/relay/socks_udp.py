"""A SOCKS5 UDP association (RFC 1928 §7) on the relay's loop: datagrams from one client, each
with the SOCKS UDP header, to the destinations it names, and their answers back, wrapped.

::

    client ──UDP, header + payload──▶ relay socket (bound beside the control connection)
                                        │ header read: destination judged by the rules,
                                        │ a name resolved (off the loop, then kept)
                                        ▼
                                      upstream socket (one per family) ──payload──▶ destination
    client ◀──header + answer────────── relay socket ◀── answer (only from a destination the
                                                          client sent to)

Only the client of the control connection may use the relay socket: datagrams from another
host (or from another port, once the client's is known) are dropped, as are fragments and
malformed headers.  The association ends with its TCP control connection (the session's).
Datagrams are dropped, never queued without bound, when a socket has no room.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._hop_socks5 import udp_unwrap, udp_wrap
from .._inet_text import literal_family
from .._networks import destination_ip, peer_ip
from .._resolve import Target
from .._socks_rules import DestRules
from ..address import InetAddress
from ..errors import EnchufeError
from .engine import READ

if TYPE_CHECKING:
    from .engine import Loop, OnError
    from .lookups import Lookups, Pending

__all__ = ["UdpAssociation", "hostport"]

#: The largest datagram read (a UDP payload is at most 65,507 bytes over IPv4).
MAX_DATAGRAM = 65535
#: Datagrams taken per readiness event before serving the others (fairness).
BATCH = 64
#: Destinations an association remembers (whose answers may come back); the oldest go first.
MAX_PEERS = 1024
#: Datagrams kept per name while it is being resolved; more are dropped.
MAX_WAITING = 16
#: Names being resolved at once, and names kept resolved, per association.
MAX_LOOKUPS = 16
MAX_NAMES = 256


class UdpAssociation:
    """One client's UDP relay: :attr:`bound` is what the reply tells it (see the module).

    ``control`` is the client's TCP connection (the relay socket is bound beside its local
    address), ``client_host`` the client (behind ``--accept-proxy``, the one its header named),
    ``expected_port`` the port it said it sends from (0: its first datagram tells).
    ``denied(destination, why)`` is told of each datagram the rules dropped."""

    def __init__(
        self,
        loop: Loop,
        lookups: Lookups,
        rules: DestRules,
        control: socket.socket,
        client_host: str,
        expected_port: int,
        on_error: OnError,
        counted: Callable[[int, int], None],
        denied: Callable[[str, str], None],
    ) -> None:
        self._loop = loop
        self._denied = denied
        self._lookups = lookups
        self._rules = rules
        self._on_error = on_error
        self._counted = counted
        local_ip = str(peer_ip(control.getsockname()[0]))
        client_ip = peer_ip(client_host)
        family = socket.AF_INET6 if ":" in local_ip else socket.AF_INET
        self._relay = socket.socket(family, socket.SOCK_DGRAM)
        self._relay.setblocking(False)
        self._relay.bind((local_ip, 0))
        self.bound: tuple[str, int] = (local_ip, self._relay.getsockname()[1])
        self._client_ip = client_ip
        #: the client's UDP address: from its request when it named one, else its first datagram
        port = expected_port
        self._client: tuple[str, int] | None = (str(client_ip), port) if port else None
        self._upstream: dict[int, socket.socket] = {}
        self._peers: dict[tuple[str, int], None] = {}  # insertion order: the oldest first
        self._names: dict[str, list[Target]] = {}
        #: names being resolved: the datagrams waiting for each, and its lookup
        self._waiting: dict[str, list[tuple[int, bytes]]] = {}
        self._pending: dict[str, Pending] = {}
        loop.register(self._relay.fileno(), READ, self._from_client, on_error)

    # -- client → destinations

    def _from_client(self, _events: int) -> None:
        for _ in range(BATCH):
            try:
                data, source = self._relay.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error of an earlier send: nothing to do with this one
                continue
            if not self._is_client(source):
                continue
            parsed = udp_unwrap(data)
            if parsed is None:  # malformed, or a fragment (RFC 1928 lets a server drop those)
                continue
            host, port, payload = parsed
            self._forward(host, port, payload)

    def _is_client(self, source: tuple[str, int]) -> bool:
        try:
            ip = peer_ip(source[0])
        except ValueError:
            return False
        if ip != self._client_ip:
            return False
        if self._client is None:
            self._client = (str(ip), source[1])
        return source[1] == self._client[1]

    def _forward(self, host: str, port: int, payload: bytes) -> None:
        if literal_family(host) is not None:
            why = self._rules.check_address(host, port)
            if why is None:
                self._send_to(host, port, payload)
            else:
                self._denied(hostport(host, port), why)
            return
        denied, named = self._rules.check_name(host, port)
        if denied is not None:
            self._denied(hostport(host, port), denied)
            return
        known = self._names.get(host)
        if known is not None:
            self._send_resolved(known, port, payload, named)
            return
        waiting = self._waiting.get(host)
        if waiting is not None:
            if len(waiting) < MAX_WAITING:
                waiting.append((port, payload))
            return
        if len(self._waiting) >= MAX_LOOKUPS:
            return
        self._waiting[host] = [(port, payload)]
        address = InetAddress("udp", host, port)
        pending = self._lookups.resolve(address, lambda answer: self._resolved(host, answer), self._on_error)
        if host in self._waiting:  # under way (not answered at once)
            self._pending[host] = pending

    def _resolved(self, host: str, answer: list[Target] | EnchufeError) -> None:
        self._pending.pop(host, None)
        waiting = self._waiting.pop(host, [])
        if isinstance(answer, EnchufeError):
            return
        if len(self._names) >= MAX_NAMES:
            del self._names[next(iter(self._names))]
        self._names[host] = answer
        for port, payload in waiting:
            self._send_resolved(answer, port, payload, self._rules.check_name(host, port)[1])

    def _send_resolved(self, targets: list[Target], port: int, payload: bytes, named: bool) -> None:
        """To the first address the name resolved to that the rules let through."""
        why = None
        for target in targets:
            ip = str(target.sockaddr[0])
            why = self._rules.check_address(ip, port, named)
            if why is None:
                self._send_to(ip, port, payload)
                return
        if why is not None:
            self._denied(hostport(str(targets[-1].sockaddr[0]), port), why)

    def _send_to(self, host: str, port: int, payload: bytes) -> None:
        ip = str(destination_ip(host))  # as the rules judged it: the answer comes from there
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = self._upstream.get(family)
        if sock is None:
            try:
                sock = socket.socket(family, socket.SOCK_DGRAM)
            except OSError:  # out of descriptors: this datagram is lost, the association lives
                return
            self._upstream[family] = sock
            sock.setblocking(False)
            self._loop.register(sock.fileno(), READ, self._reader(sock), self._on_error)
        try:
            sock.sendto(payload, (ip, port))
        except OSError:  # no room, or unreachable: a datagram may be lost
            return
        peer = (ip, port)
        self._peers.pop(peer, None)
        self._peers[peer] = None
        if len(self._peers) > MAX_PEERS:
            del self._peers[next(iter(self._peers))]
        self._counted(len(payload), 0)

    # -- destinations → client

    def _reader(self, sock: socket.socket) -> Callable[[int], None]:
        return lambda _events: self._from_destinations(sock)

    def _from_destinations(self, sock: socket.socket) -> None:
        for _ in range(BATCH):
            try:
                data, source = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            ip = str(peer_ip(source[0]))
            if (ip, source[1]) not in self._peers or self._client is None:
                continue  # an answer nobody asked for
            with contextlib.suppress(OSError):
                self._relay.sendto(udp_wrap(ip, source[1], data), self._client)
                self._counted(0, len(data))

    def close(self) -> None:
        for pending in self._pending.values():
            pending.cancel()
        self._pending.clear()
        self._waiting.clear()
        for sock in (self._relay, *self._upstream.values()):
            self._loop.forget(sock.fileno())
            with contextlib.suppress(OSError):
                sock.close()
        self._upstream.clear()


def hostport(host: str, port: int) -> str:
    """``host:port``, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

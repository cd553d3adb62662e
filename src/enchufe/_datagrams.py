"""The datagram endpoint's core, shared by ``enchufe.sync`` and ``enchufe.aio``: one attempt each.

:class:`DatagramCore` holds a datagram socket's addresses, resolves and checks where each
datagram goes (caching what it resolved), reports truncation and translates errors.  Its
``_…_once`` methods make one system call and let ``BlockingIOError`` through: the sync socket
blocks in the kernel and never sees it; the asyncio socket waits on the loop and tries again.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket

from . import _calls, _ranges, _resolve, _unixfiles
from ._buffer import DEFAULT_MAX_DATAGRAM
from ._calls import SockAddr
from ._endpoint import Endpoint
from ._serving import StalledPeers
from .address import Address, InetAddress, SocketAddress, UnixAddress, from_sockaddr, parse
from .errors import AddressError, DatagramTruncated, UsageError, translate
from .i18n import N_, _

#: Resolved destinations kept per socket, so that sendto() to a host name does not ask the
#: resolver for every datagram; a bound keeps a socket that writes to many peers small.
RESOLVE_CACHE_SIZE = 256
#: The largest SOCKS5 UDP header (RSV, FRAG, ATYP, a 255-byte name with its length, the port).
_MAX_UDP_HEADER = 3 + 1 + 1 + 255 + 2


class DatagramCore(Endpoint):
    """A datagram socket's state (udp or unixgram): its addresses, and where it sent lately."""

    _closed_message = N_("this datagram socket is closed")
    #: How ``repr()`` names the class.
    _label = "DatagramSocket"

    def __init__(
        self,
        sock: socket.socket,
        *,
        owned: _unixfiles.SocketFile | None = None,
        local_address: SocketAddress | None = None,
        peer_address: SocketAddress | None = None,
    ) -> None:
        super().__init__(sock, owned)
        self._buffer = bytearray(DEFAULT_MAX_DATAGRAM)
        self._resolved: dict[SocketAddress, SockAddr] = {}
        #: Unix peers that made a server wait in vain (see :func:`enchufe.sync.serve.deliver`).
        self.stalled_peers = StalledPeers()
        self.local_address = local_address or from_sockaddr(sock.family, sock.type, sock.getsockname())
        self.peer_address = peer_address
        #: Through a SOCKS5 proxy (``connect_datagram(…, via=…)``): the association's TCP
        #: connection, open while this socket lives (the proxy ends the association when it
        #: closes); ``sock`` is connected to the proxy's relay, and every datagram carries the
        #: SOCKS5 UDP header, added here and taken off here.
        self._association: socket.socket | None = None

    def _through(self, association: socket.socket) -> None:
        """Datagrams from now on go through a SOCKS5 association (see ``_association``)."""
        self._association = association

    @property
    def address(self) -> SocketAddress:
        """The address this socket is bound to, like :attr:`Listener.address` (port 0
        resolved): where peers send to reach it.  :class:`~enchufe.errors.UsageError` for a
        socket that has none (a unix client made without a reply address)."""
        if self.local_address is None:
            raise UsageError(_("this datagram socket is not bound to an address"))
        return self.local_address

    # -- sending

    def _sendto_once(self, data: bytes, address: SocketAddress | str | None, flags: int = 0) -> int:
        """One ``sendto()`` of ``data`` as one datagram to ``address``: the bytes sent."""
        self._check()
        target = self._target(address)
        if self._association is not None:
            return self._via_relay(data, target, flags)
        sockaddr = self._sockaddr_for(target)
        try:
            return _calls.send_datagram(self._sock, bytes(data), sockaddr, flags=flags)
        except BlockingIOError:
            raise
        except OSError as exc:
            what = self._sending(data, target)
            raise (_unixfiles.explain_unix_failure(target, exc, what) or translate(exc, what)) from exc

    def sendto_nowait(self, data: bytes, address: SocketAddress | str | None) -> bool:
        """Send one datagram to ``address`` if the kernel takes it now: ``True``; ``False`` if
        it would have to wait (our send buffer, or a unix receiver's queue, is full).

        For servers that must not let one peer that does not read hold up the others.
        """
        try:
            self._sendto_once(data, address, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        return True

    def _send_once(self, data: bytes) -> int:
        """One ``send()`` of ``data`` as one datagram to the connected peer."""
        self._check()
        if self.peer_address is None:
            raise UsageError(_("send() needs a connected datagram socket; use sendto(data, address)"))
        if self._association is not None:
            return self._via_relay(data, self.peer_address, 0)
        try:
            return _calls.send_datagram(self._sock, bytes(data), None)
        except BlockingIOError:
            raise
        except OSError as exc:
            raise translate(exc, self._sending(data, self.peer_address)) from exc

    def _via_relay(self, data: bytes, target: Address, flags: int) -> int:
        """``data`` to ``target`` through the association: to the relay, with the header that
        names the target (its name, for the proxy to resolve); the payload's size."""
        from ._hop_socks5 import udp_wrap

        if not isinstance(target, InetAddress) or target.is_stream:
            raise AddressError(
                _("{address}: a datagram socket through a SOCKS5 proxy sends to udp:// addresses").format(
                    address=target
                )
            )
        try:
            _calls.send_datagram(
                self._sock, udp_wrap(target.host, target.port, bytes(data)), None, flags=flags
            )
        except BlockingIOError:
            raise
        except OSError as exc:
            raise translate(exc, self._sending(data, target)) from exc
        return len(data)

    @staticmethod
    def _sending(data: bytes, target: object) -> str:
        """What sending ``data`` to ``target`` is called in errors."""
        return f"send a {len(data)}-byte datagram to {target}"

    def _receiving(self) -> str:
        """What receiving is called in errors."""
        where = f"from {self.peer_address}" if self.peer_address else f"on {self.local_address}"
        return f"receive a datagram {where}"

    @staticmethod
    def _target(address: SocketAddress | str | None) -> Address:
        if address is None:
            raise UsageError(
                _(
                    "cannot send to an unbound unix socket: it has no address to answer "
                    "(its datagrams arrive with sender None)"
                )
            )
        return parse(address) if isinstance(address, str) else address

    def _sockaddr_for(self, target: object) -> SockAddr:
        if not isinstance(target, InetAddress | UnixAddress) or target.is_stream:
            raise AddressError(
                _("{address}: a datagram socket sends to udp:// or unixgram: addresses").format(
                    address=target
                )
            )
        cached = self._resolved.get(target)
        if cached is not None:
            return cached
        family = self._sock.family
        sockaddr: SockAddr
        if isinstance(target, UnixAddress):
            if family != socket.AF_UNIX:
                raise AddressError(
                    _("{address}: this is a udp socket; it cannot send to a unix address").format(
                        address=target
                    )
                )
            sockaddr = target.sockaddr
        else:
            if family == socket.AF_UNIX:
                raise AddressError(
                    _("{address}: this is a unixgram socket; it cannot send to udp").format(address=target)
                )
            sockaddr = self._inet_sockaddr(target, family)
        if len(self._resolved) >= RESOLVE_CACHE_SIZE:
            self._resolved.clear()
        self._resolved[target] = sockaddr
        return sockaddr

    def _inet_sockaddr(self, target: InetAddress, family: int) -> SockAddr:
        targets = _resolve.resolve(target, passive=False)
        for t in targets:
            if t.family == family:
                return t.sockaddr
        if family == socket.AF_INET6 and not _v6only(self._sock):
            # A dual-stack socket reaches IPv4 peers through their IPv4-mapped address.
            host, port = targets[0].sockaddr[:2]  # type: ignore[str-unpack]
            return (str(ipaddress.IPv6Address(f"::ffff:{host}")), port, 0, 0)
        have = "IPv6" if family == socket.AF_INET6 else "IPv4"
        raise AddressError(
            _("{address}: has no {family} address, and this socket is {family}").format(
                address=target, family=have
            )
        )

    # -- receiving

    def _recvfrom_once(self, max_size: int) -> tuple[bytes, SocketAddress | None]:
        """One ``recvfrom()``: a datagram and its sender; :class:`~enchufe.errors.DatagramTruncated`
        for one larger than ``max_size``."""
        self._check()
        _ranges.integer(max_size, "max_size", 1, _ranges.MAX_DATAGRAM_SIZE)
        if self._association is not None:
            return self._from_relay(max_size)
        if len(self._buffer) != max_size:
            self._buffer = bytearray(max_size)
        try:
            size, raw = _calls.recv_datagram_into(self._sock, self._buffer)
        except BlockingIOError:
            raise
        except OSError as exc:
            raise translate(exc, self._receiving()) from exc
        sender = from_sockaddr(self._sock.family, self._sock.type, raw) if raw else None
        data = bytes(self._buffer[: min(size, max_size)])
        return self._whole(data, size, max_size, sender)

    def _from_relay(self, max_size: int) -> tuple[bytes, SocketAddress | None]:
        """The next datagram the relay passes on, without its header, and the sender the header
        names.  What is not a relay's datagram (malformed, a fragment) is dropped, as RFC 1928
        lets a client do, and the next one is read (on a non-blocking socket: BlockingIOError
        when there is none)."""
        from ._hop_socks5 import udp_unwrap

        if len(self._buffer) != max_size + _MAX_UDP_HEADER:
            self._buffer = bytearray(max_size + _MAX_UDP_HEADER)
        while True:
            try:
                size, _raw = _calls.recv_datagram_into(self._sock, self._buffer)
            except BlockingIOError:
                raise
            except OSError as exc:
                raise translate(exc, self._receiving()) from exc
            unwrapped = udp_unwrap(bytes(self._buffer[: min(size, len(self._buffer))]))
            if unwrapped is None:
                continue
            host, port, payload = unwrapped
            header = min(size, len(self._buffer)) - len(payload)
            return self._whole(payload[:max_size], size - header, max_size, InetAddress("udp", host, port))

    def _whole(
        self, data: bytes, size: int, max_size: int, sender: SocketAddress | None
    ) -> tuple[bytes, SocketAddress | None]:
        """``data`` and ``sender``, or DatagramTruncated when the datagram (``size`` bytes) was
        larger than ``max_size``."""
        if size > max_size:
            raise DatagramTruncated(
                _(
                    "a datagram of {size} bytes from {sender} was larger than the {limit}-byte "
                    "receive buffer and was cut; raise the maximum size"
                ).format(size=size, sender=sender or _("an unbound sender"), limit=max_size),
                data=data,
                size=size,
                sender=sender,
            )
        return data, sender

    def close(self) -> None:
        """Close the socket (and, through a proxy, the association's connection)."""
        association, self._association = self._association, None
        if association is not None:
            with contextlib.suppress(OSError):
                _calls.close(association)
        super().close()

    def __repr__(self) -> str:
        peer = f" → {self.peer_address}" if self.peer_address else ""
        return f"<{self._label} {self.local_address}{peer}{' closed' if self._closed else ''}>"


def _v6only(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))

"""Blocking datagram endpoints: :class:`DatagramSocket` for udp and unixgram alike."""

from __future__ import annotations

from .. import _ranges
from .._buffer import DEFAULT_MAX_DATAGRAM
from .._datagrams import DatagramCore
from .._endpoint import Closing
from ..address import SocketAddress

__all__ = ["DatagramSocket"]


class DatagramSocket(DatagramCore, Closing):
    """A datagram socket (UDP over IPv4/IPv6, or unixgram): message boundaries are kept.

    * ``sendto(data, address)`` sends one datagram; :class:`~enchufe.errors.MessageTooLarge`
      if it cannot go in one piece.
    * ``recvfrom()`` returns one datagram and its sender (an enchufe address, or ``None`` for an
      unbound unix sender).  A datagram larger than ``max_size`` raises
      :class:`~enchufe.errors.DatagramTruncated` carrying the part that fitted and the real size:
      never a silently cut datagram.
    * When connected (:func:`enchufe.connect_datagram`), ``send``/``recv`` talk to the one peer;
      an ICMP "port unreachable" comes back as :class:`~enchufe.errors.ConnectionRefused`.
    * ``close`` is idempotent and removes a socket file this socket created.
    """

    def set_timeout(self, seconds: float | None) -> None:
        """Make ``recvfrom``/``recv`` raise :class:`~enchufe.errors.TimedOut` after ``seconds``."""
        self._check()
        self._sock.settimeout(_ranges.seconds(seconds, "timeout", optional=True))

    def sendto(self, data: bytes, address: SocketAddress | str | None) -> int:
        """Send ``data`` as one datagram to ``address``; returns the bytes sent (all of them).

        ``address`` may be what :meth:`recvfrom` returned as the sender, ``None`` included:
        an unbound unix sender cannot be answered, which raises
        :class:`~enchufe.errors.UsageError` here rather than on every caller's side.
        """
        return self._sendto_once(data, address)

    def send(self, data: bytes) -> int:
        """Send one datagram to the connected peer."""
        return self._send_once(data)

    def recvfrom(self, max_size: int = DEFAULT_MAX_DATAGRAM) -> tuple[bytes, SocketAddress | None]:
        """One datagram and its sender.  Blocks until one comes (or the timeout passes)."""
        return self._recvfrom_once(max_size)

    def recv(self, max_size: int = DEFAULT_MAX_DATAGRAM) -> bytes:
        """One datagram's payload (on a connected socket, only the peer's datagrams arrive)."""
        return self.recvfrom(max_size)[0]

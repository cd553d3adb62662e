"""``--accept-proxy`` on a datagram relay: every datagram from a trusted proxy starts with a PROXY
protocol version 2 header naming its real sender (HAProxy's spec over UDP: one header per
datagram, the family UDP4, UDP6 or UNIXGRAM), as ``--send-proxy v2`` on a datagram relay sends::

    client ─▶ relay udp://:53 … --send-proxy v2 ─▶ relay udp://:5353 … --accept-proxy ─▶ target

The header is taken off and the rest passed on.  The session is still the proxy's sender's (its
replies go back to it, which sends them on: a proxy that gives each client a socket of its own,
as enchufe's relay does, keeps clients apart; one that sends several clients' datagrams from one
socket would have them all in one session), and it is named for the client the header of its
first datagram named (later headers of the same sender are checked, their client ignored): the
``new session`` and ``closed session`` lines, ``--json`` events, and the header ``--send-proxy
v2`` sends on (as an address-less UNKNOWN one when the client's family is not the listener's:
version 2 names both ends in one family).  A datagram from a peer that is not a trusted proxy,
one without a valid version 2 header, or with a stream (TCP) or version 1 header, is dropped,
counted, and said in one rate-limited line; the relay serves on.  A LOCAL header (the proxy's
own health check) leaves the session named for the proxy.

Chosen once per relay, only with ``--accept-proxy`` (:mod:`.handlers`): these relays take the
general path, one datagram at a time, never the batched or compiled ones.
"""

from __future__ import annotations

from typing import Any

from .._proxypolicy import ProxyPolicy, check_datagram_header, unnamed_proxy
from .._text import printable
from ..address import SocketAddress
from ..i18n import N_, _
from ..sessions import Session
from .datagram import DatagramRelay
from .datagram_listener import DatagramListener, Key, Upstream, describe_sender
from .proxying_datagram import ProxiedDatagramRelay, sender_address
from .via_datagram import SocksDatagramRelay

__all__ = ["AcceptingDatagramRelay", "AcceptingProxiedDatagramRelay", "AcceptingSocksDatagramRelay"]


class _Accepting(DatagramListener):
    """What every accepting relay adds to its datagram relay (see the module): mixed in before it."""

    runs_above = 1 << 30  # never runs: each datagram has a header of its own to take off

    def __init__(self, *args: Any, proxy_policy: ProxyPolicy, **options: Any) -> None:
        super().__init__(*args, **options)
        self._policy = proxy_policy
        #: the client each sender's first header named (None: a LOCAL header), while it has a session
        self._clients: dict[Key, SocketAddress | None] = {}

    def _on_listener(self, events: int) -> None:
        DatagramListener._on_listener(self, events)  # the general path: no inline one

    def _announce(self, session: Upstream) -> None:
        client = self._clients.get(session.peer)
        if client is not None:  # the header's words are a peer's: escaped, as a sender's are
            session.label = printable(str(client))
        super()._announce(session)

    def _client(self, session: Upstream) -> SocketAddress | None:
        """The client a session is for (the one ``--send-proxy`` names): the one its sender's
        header named, else the sender."""
        client = self._clients.get(session.peer)
        return sender_address(self.listener, session.peer) if client is None else client

    def _ended(self, entry: Session[Key, Upstream], why: str) -> None:
        self._clients.pop(entry.state.peer, None)
        super()._ended(entry, why)

    def _received(self, sender: Any, data: memoryview, now: float, raw: bool) -> None:
        """The header checked and taken off, the rest passed on (see the module)."""
        # Unix peers are trusted (their socket file's permissions say who may send), unless
        # unbound: then they would all share one session, named for whoever came first.
        if isinstance(sender, tuple):
            why = self._policy.untrusted_host(sender[0])
        else:
            why = None if sender else unnamed_proxy()
        header = None
        if why is None:
            header, why = check_datagram_header(data, self._policy.max_v2_length)
        if header is None:
            self._refused_datagram(describe_sender(self.listener.family, sender), why or "")
            return
        key = sender or None
        opening = key not in self._clients and self.table.get(key) is None
        if opening:
            self._clients[key] = header.source  # names the session _entry_for opens now
        try:
            super()._received(sender, data[header.consumed :], now, raw)
        finally:
            if opening and self.table.get(key) is None:  # not opened (whatever it raised)
                self._clients.pop(key, None)

    def _refused_datagram(self, sender: str, why: str) -> None:
        self.stats.dropped += 1
        self.events.notice(
            N_("datagrams dropped over their PROXY header"),
            "refused",
            _("enchufe: dropped a datagram from {peer}: {why}").format(peer=sender, why=why),
            peer=sender,
            reason="proxy",
            detail=why,
        )


class AcceptingDatagramRelay(_Accepting, DatagramRelay):
    """Datagram LISTEN → datagram TARGET, each datagram's PROXY v2 header taken off first."""


class AcceptingProxiedDatagramRelay(_Accepting, ProxiedDatagramRelay):
    """The same, with ``--send-proxy v2``: the header sent on names the client the accepted one
    named (a chain keeps the original client)."""


class AcceptingSocksDatagramRelay(_Accepting, SocksDatagramRelay):
    """Datagram LISTEN → ``udp://`` TARGET through a SOCKS5 proxy (``--via``), each datagram's
    PROXY v2 header taken off first; with ``--send-proxy v2`` the header sent on (behind the
    SOCKS5 one) names the client the accepted one named."""

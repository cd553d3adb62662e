"""Datagram LISTEN → ``udp://`` TARGET through a SOCKS5 proxy (``--via socks5://…``).

::

    enchufe relay udp://:5353 udp://dns.internal:53 --via socks5://proxy:1080

    sender A ─┐               ┌─ association A: TCP to the proxy (handshake, then kept open)
    sender B ─┼─▶ listener ───┤                 UDP socket ⇄ the proxy's UDP relay ⇄ TARGET
              …               └─ association B …

A session per sender (:mod:`.datagram_listener`), as for a target reached directly, whose
upstream is a SOCKS5 UDP association (RFC 1928, UDP ASSOCIATE): a TCP connection to the proxy
carries the handshake (with username/password authentication, RFC 1929, when the URL has them)
and must stay open while the association lives; a UDP socket bound beside it exchanges
datagrams with the relay the proxy named, each behind the SOCKS5 UDP header that names the
target (its host name is the proxy's to resolve).

The connect and the handshake run on the relay's loop (:class:`~enchufe.relay.via.Tunnel`),
never blocking it, and are bounded by ``--connect-timeout``.  The sender's datagrams that come
meanwhile wait in one buffer, up to :data:`ASSOCIATION_BACKLOG` bytes with their headers; more
are dropped and counted, as a full UDP queue would.  A proxy that cannot be reached or says no
ends that session with one rate-limited line naming the proxy and its reason, and so does one
that names its UDP relay by a host name (looking it up would block the loop: every session);
the proxy closing the TCP connection ends the association, and the session.

Each datagram is sent on its own: one that cannot go is dropped and counted (and said, when it
is too large with the headers, not when the socket has no room now), and the session goes on,
as with a target reached directly; an ICMP refusal from the proxy's relay is said once per session and counted
for each report.  Replies that are not a relay's datagram (malformed, or a fragment: RFC 1928
lets a client drop those) are dropped and counted, and one larger than ``--max-datagram`` is
counted as truncated; a sender that cannot take a reply now pauses the reading of its
association until it can (:mod:`.datagram_replies`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import socket
import time
from typing import Any

from .. import _calls, _nonblocking
from .._calls import new_socket
from .._hop_socks5 import udp_unwrap, udp_wrap
from .._inet_text import literal_family
from .._resolve import Target
from .._text import printable
from .._via import connect_to_relay, udp_socket
from ..address import InetAddress, SocketAddress
from ..errors import NetworkError, translate
from ..errors import reason as system_reason
from ..framing import HEADER
from ..hops import Chain
from ..i18n import _
from ..sessions import Session
from .datagram_io import BATCH, enlarge_buffers
from .datagram_listener import DatagramListener, Key, Upstream, describe_sender
from .engine import FAILED, READ, WRITE, Loop, Timer
from .proxying_datagram import proxy_header_v2, sender_address
from .session import pending_error
from .via import Tunnel, Via

__all__ = ["ASSOCIATION_BACKLOG", "Association", "SocksDatagramRelay"]

#: Bytes of a sender's datagrams kept while its association is being opened; more are dropped.
ASSOCIATION_BACKLOG = 256 * 1024
#: The largest SOCKS5 UDP header (a 255-byte host name): room kept for it in the reply buffer.
MAX_UDP_HEADER = 3 + 1 + 1 + 255 + 2
#: Replies counted (read and dropped) at most from an ending session's socket (as the direct
#: relay's): a socket buffer holds far fewer, so this only bounds the loop.
MAX_DRAIN = 100_000


class Association(Upstream):
    """A session of a relay through a SOCKS5 proxy: the association's TCP connection (the
    handshake, then kept open), and its UDP socket once the proxy named its relay."""

    __slots__ = (
        "connected",
        "control",
        "opened",
        "queued",
        "queued_count",
        "refused",
        "stage",
        "timer",
        "udp",
    )

    def __init__(self, session_id: int, peer: Key, label: str, control: socket.socket) -> None:
        super().__init__(session_id, peer, label)
        self.control = control
        #: the TCP connection to the proxy is up (the handshake may still be running)
        self.connected = False
        #: the association is open: ``udp`` is connected to the proxy's relay
        self.opened = False
        self.udp: socket.socket | None = None
        self.stage: Tunnel | None = None
        self.timer: Timer | None = None
        #: the sender's datagrams (with their headers) waiting for the association to open, each
        #: behind its length (one buffer: its size is the memory they take), and their count
        self.queued = bytearray()
        self.queued_count = 0
        self.refused = False

    def close(self, loop: Loop) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.stage is not None:
            self.stage.cancel()
            self.stage = None
        for sock in (self.udp, self.control):
            if sock is None:
                continue
            loop.forget(sock.fileno())
            with contextlib.suppress(OSError):
                _calls.close(sock)
        self.udp = None

    def resume(self, relay: Any) -> None:
        relay.watch(self)

    def undelivered(self) -> int:
        """Also the datagrams still waiting for the association to open, and the replies the
        proxy's relay sent that wait unread in the UDP socket (they die with it)."""
        lost = super().undelivered() + self.queued_count
        for _turn in range(MAX_DRAIN if self.udp is not None else 0):
            try:
                self.udp.recv(1, socket.MSG_DONTWAIT | socket.MSG_TRUNC)  # type: ignore[union-attr]
            except OSError:  # none left (EAGAIN), or an ICMP error: nothing more to count
                break
            lost += 1
        return lost

    def take_queued(self) -> list[bytes]:
        """The queued datagrams, in order; the queue is then empty."""
        queued, view, at = [], memoryview(self.queued), 0
        while at < len(view):
            (size,) = HEADER.unpack_from(view, at)
            queued.append(bytes(view[at + HEADER.size : at + HEADER.size + size]))
            at += HEADER.size + size
        view.release()
        self.queued, self.queued_count = bytearray(), 0
        return queued


class SocksDatagramRelay(DatagramListener):
    """Datagram LISTEN → ``udp://`` TARGET, a SOCKS5 UDP association per sender (see the module)."""

    def __init__(
        self, *args: Any, via: Via, target: InetAddress, send_proxy: bool = False, **options: Any
    ) -> None:
        super().__init__(*args, **options)
        self.via = via
        self.hop = via.hops[0]
        self.target = target
        self.target_label = str(target)
        #: every datagram to the target starts with this (the target is the same for all)
        self._header = udp_wrap(target.host, target.port, b"")
        #: --send-proxy: a session's PROXY v2 header (behind the SOCKS5 one: the target's to read)
        self._proxy_headers: dict[int, bytes] | None = {} if send_proxy else None
        #: replies come with a header of their own: room for the largest
        self._reply_buffer = memoryview(bytearray(self.max_datagram + MAX_UDP_HEADER))

    def _routed(self) -> tuple[str, dict[str, str]]:
        return self.via.routed(self.target_label)

    # -- opening an association

    def _open(self, key: Key) -> Upstream:
        proxy: Target = self.resolver.targets()[0]
        control = new_socket(proxy.family, socket.SOCK_STREAM)
        try:
            control.setblocking(False)
            with contextlib.suppress(OSError):
                control.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.via.connecting()
            status = _nonblocking.connect_nonblocking(control, proxy.sockaddr)
        except BaseException:
            with contextlib.suppress(OSError):
                _calls.close(control)
            raise
        session = Association(next(self._ids), key, describe_sender(self.listener.family, key), control)
        self._announce(session)
        # Even a connect that is over at once (done, or failed) goes on from the loop: the
        # session is in the table only once this returns, and ending it from here would end
        # nothing.
        failed = functools.partial(self._session_failed, session)
        deadline = time.monotonic() + self.connect_timeout
        if status in (0, errno.EINPROGRESS):
            self.loop.register(
                control.fileno(), WRITE, lambda _events: self._connected(session, deadline), failed
            )
            session.timer = self.loop.call_later(
                self.connect_timeout, lambda: self._connect_timed_out(session), failed
            )
        else:
            error = self._proxy_error(OSError(status, os.strerror(status)))
            session.timer = self.loop.call_later(0.0, lambda: self._failed(session, error), failed)
        return session

    def _proxy_error(self, exc: OSError) -> str:
        """Why the TCP connection to the proxy failed, naming it."""
        return f"{self.via.label()}: {system_reason(exc)}"

    def _connect_timed_out(self, session: Association) -> None:
        session.timer = None
        if not session.connected:
            waited = _("no answer within {seconds} s").format(seconds=f"{self.connect_timeout:g}")
            self._failed(session, f"{self.via.label()}: {waited}")

    def _connected(self, session: Association, deadline: float) -> None:
        """The TCP connection to the proxy is up (or failed): the handshake asks it for a UDP
        association for a socket bound beside it."""
        if not self.current(session) or session.connected:
            return
        control = session.control
        code = pending_error(control)
        if code:
            self._failed(session, self._proxy_error(OSError(code, os.strerror(code))))
            return
        session.connected = True
        if session.timer is not None:
            session.timer.cancel()
            session.timer = None
        if self.loop.watching(control.fileno()):
            self.loop.unregister(control.fileno())  # the handshake's stage watches it now
        try:
            session.udp, chain = udp_socket(control, self.hop)
        except OSError as exc:
            self._failed(session, system_reason(exc))
            return
        session.stage = Tunnel(
            self.loop,
            control,
            chain,
            deadline,
            lambda error: self._handshake_done(session, chain, error),
            functools.partial(self._session_failed, session),
        )
        session.stage.start()

    def _handshake_done(self, session: Association, chain: Chain, error: NetworkError | None) -> None:
        session.stage = None
        if not self.current(session):
            return
        if error is not None or chain.bound is None or session.udp is None:
            self._failed(session, str(error) if error is not None else _("the proxy named no UDP relay"))
            return
        host, port = chain.bound
        if literal_family(host) is None:
            # A name would be looked up here, blocking the loop (every session's) on the DNS.
            self._failed(
                session,
                _("{proxy} named its UDP relay {relay} by a name, not an address").format(
                    proxy=self.via.label(), relay=printable(f"{host}:{port}")
                ),
            )
            return
        udp = session.udp
        try:
            connect_to_relay(udp, session.control, chain)
            udp.setblocking(False)
            enlarge_buffers(udp)  # as the direct relay's upstreams: a burst is absorbed, not dropped
        except OSError as exc:
            self._failed(session, str(translate(exc, "use the proxy's UDP relay")))
            return
        session.opened = True
        failed = functools.partial(self._session_failed, session)
        self.loop.register(session.control.fileno(), READ, lambda _events: self._on_control(session), failed)
        self.loop.register(udp.fileno(), READ, lambda events: self._on_udp(session, events), failed)
        for datagram in session.take_queued():
            self._send(session, datagram)

    def _failed(self, session: Association, why: str) -> None:
        self.stats.failed += 1
        self.stats.dropped += session.queued_count  # queued, never carried
        session.queued, session.queued_count = bytearray(), 0
        message = _("cannot reach {target} for {peer}: {why}").format(
            target=self.target_label, peer=session.label, why=why
        )
        self._error(message, id=session.id, peer=session.label)
        self.end(session, "target-failed", why)

    # -- sender → target

    def _forward(self, session: Upstream, data: memoryview, raw: bool) -> None:
        assert isinstance(session, Association)
        datagram = self._header + self._proxy_header(session) + data
        if session.opened:
            self._send(session, datagram)
        elif len(session.queued) + HEADER.size + len(datagram) > ASSOCIATION_BACKLOG:
            self.stats.dropped += 1  # the association is slow to open: as a full queue would
        else:
            session.queued += HEADER.pack(len(datagram))
            session.queued += datagram
            session.queued_count += 1

    def _proxy_header(self, session: Association) -> bytes:
        """``--send-proxy``: the PROXY v2 header naming the session's sender and the address it
        sent to (made once per session), else nothing."""
        headers = self._proxy_headers
        if headers is None:
            return b""
        header = headers.get(session.id)
        if header is None:
            header = headers[session.id] = proxy_header_v2(self.listener, self._client(session))
        return header

    def _client(self, session: Upstream) -> SocketAddress | None:
        """The client a session's header names: its sender (hook: a header's client)."""
        return sender_address(self.listener, session.peer)

    def _ended(self, entry: Session[Key, Upstream], why: str) -> None:
        if self._proxy_headers is not None:
            self._proxy_headers.pop(entry.state.id, None)
        super()._ended(entry, why)

    def _send(self, session: Association, datagram: bytes) -> None:
        """One datagram to the proxy's relay.  A failure loses that datagram only, counted, as
        for a target reached directly: said when it is too large for UDP with the headers (or
        another error), not when the socket has no room now; ECONNREFUSED is an earlier
        datagram's refusal, and this one is tried again."""
        assert session.udp is not None
        for attempt in (1, 2):
            try:
                session.udp.send(datagram)
            except BlockingIOError:
                self.stats.dropped += 1  # no room in the socket now: dropped, as UDP does
                return
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED and attempt == 1:
                    self._refused(session)
                    continue
                self.stats.dropped += 1
                self._error(
                    _("cannot send to {target} for {peer}: {reason}").format(
                        target=self.target_label, peer=session.label, reason=system_reason(exc)
                    ),
                    id=session.id,
                    peer=session.label,
                )
                return
            break
        size = len(datagram) - len(self._header) - len(self._proxy_header(session))  # the sender's bytes
        session.to_target += size
        session.datagrams_to_target += 1
        self.stats.to_target += size
        self.stats.datagrams_to_target += 1

    def _refused(self, session: Association) -> None:
        """ICMP said nothing takes datagrams at the proxy's relay (port unreachable): a datagram
        lost, counted; said once per session."""
        self.stats.dropped += 1
        if not session.refused:
            session.refused = True
            self._error(
                _("the UDP relay of {proxy} refused a datagram from {peer}").format(
                    proxy=self.via.label(), peer=session.label
                ),
                id=session.id,
                peer=session.label,
            )

    # -- target → sender

    def watch(self, session: Association) -> None:
        """Read the association's replies again once the sender took the one that waited."""
        if session.opened and session.udp is not None:
            self.loop.modify(session.udp.fileno(), READ if session.pending_reply is None else 0)

    def _on_udp(self, session: Association, events: int) -> None:
        if events & FAILED:
            udp = session.udp
            assert udp is not None
            code = pending_error(udp)  # read, and so cleared
            if code == errno.ECONNREFUSED:
                self._refused(session)
            elif code:
                self.end(session, "target-error", system_reason(OSError(code, os.strerror(code))))
                return
        if session.pending_reply is None:
            self._replies(session)

    def _replies(self, session: Association) -> None:
        """What the proxy's relay sent, unwrapped and passed to the sender, a datagram each."""
        udp = session.udp
        assert udp is not None
        view = self._reply_buffer
        got = 0
        for _turn in range(BATCH):
            try:
                size = udp.recv_into(view, 0, socket.MSG_TRUNC)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED:
                    self._refused(session)  # an earlier datagram's, told on this read
                    continue
                self.end(session, "target-error", system_reason(exc))
                return
            if size > len(view):  # larger than any reply of --max-datagram behind any header
                self._truncated(self.target_label, size, "target")
                continue
            unwrapped = udp_unwrap(bytes(view[:size]))
            if unwrapped is None:  # malformed, or a fragment: RFC 1928 lets a client drop it
                self.stats.dropped += 1
                continue
            if len(unwrapped[2]) > self.max_datagram:
                self._truncated(self.target_label, len(unwrapped[2]), "target")
                continue
            got += 1
            if not self.replies.send(session, unwrapped[2]):
                self.watch(session)  # stop reading until the reply is out
                break
        if got:
            self.table.touch(session.peer, time.monotonic())

    def _on_control(self, session: Association) -> None:
        """The association's TCP connection: the proxy says nothing more on it, so anything it
        sends is dropped; its close (or a reset) ends the association."""
        try:
            data = session.control.recv(4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self.end(session, "target-reset", system_reason(exc))
            return
        if not data:
            self.end(session, "target-closed", _("the proxy closed the association's TCP connection"))

"""TLS at either end of a relayed stream: termination (a ``tls://`` LISTEN) and origination
(a ``tls://`` TARGET), driven by the relay's own engine, never blocking.

::

    TLSStreamSession (a StreamSession whose client or target, or both, speak TLS)
      ├─ client handshake (server side), bounded by handshake-timeout; then open TARGET
      ├─ connect TARGET; then its handshake (client side), bounded the same way
      ├─ up:   TLSPump(client → target)   decrypting and/or encrypting
      └─ down: TLSPump(target → client)

The choice is made once per session (the listener's handler makes a TLSStreamSession only when
an end is TLS): plain sessions and their pumps do not know this module exists.  A TLS side never
splices (the bytes must go through OpenSSL): its pump copies (:mod:`.tls_pump`).

The ends of the boundary: close_notify from a TLS peer is passed on as ``shutdown(SHUT_WR)`` of
the plain side, and the plain side's EOF as close_notify (the TCP stream stays open, so the peer
can still answer).  A TLS stream that ends without close_notify (truncation) is a reset of the
session: the other peer is reset, never told a clean EOF.  A failed handshake is one notice with
the reason (:class:`~enchufe.errors.TLSRefused`'s line); the relay serves on.
"""

from __future__ import annotations

import contextlib
import socket
from typing import TYPE_CHECKING, Any

from .. import _tls_socket, trace
from .._text import printable
from .._tlssetup import insecure_line, keep_session, session_for
from ..errors import TLSRefused
from ..errors import reason as system_reason
from ..i18n import N_, _
from .engine import READ, WRITE, Timer
from .session import CONNECTING, OPEN
from .sides import UNREGISTERED, Side
from .stream_session import StreamSession
from .tls_pump import CHUNK, TLSLink, TLSPump, make_pump, receive

if TYPE_CHECKING:
    from .._tlsstream import TLSSetup
    from ..tlsinfo import TLSInfo
    from ..tlsparams import TLSParams
    from .stream import StreamRelay

__all__ = ["CHUNK", "TLSLink", "TLSPump", "TLSStreamSession"]


class TLSStreamSession(StreamSession):
    """A session with a TLS end: the handshakes first, then :class:`TLSPump` both ways."""

    __slots__ = ("_client_link", "_handshake_timer", "_target_link", "_target_session")

    relay: StreamRelay
    #: Whether a TLS side's channel (a terminated client, a TLS target) may read and write its
    #: socket itself (see :mod:`.tls_pump`); a subclass whose pumps feed channels bytes says no.
    tls_on_socket = True

    def __init__(
        self, relay: StreamRelay, client: Side, client_sock: socket.socket | None, peer: Any, session_id: int
    ) -> None:
        super().__init__(relay, client, client_sock, peer, session_id)
        self._client_link: TLSLink | None = None
        self._target_link: TLSLink | None = None
        #: The target's key in the kept sessions (see :meth:`_keep_target_session`).
        self._target_session: tuple[object, ...] | None = None
        self._handshake_timer: Timer | None = None

    # -- termination: the client's handshake before the target is opened

    def _begin(self) -> None:
        setup = self.relay.client_tls
        if setup is None:
            super()._begin()
            return
        # --route: the certificate for the client's server name, and its ClientHello, read already.
        setup, hello = self.routed_setup(setup)
        # The "accept" event waits for the handshake: it says what was agreed, and who the client is.
        fd = self.client.rfd
        self.relay.loop.register(fd, READ, self._on_client_handshake, self.crashed)
        self._arm_handshake(setup, "client")
        if hello:
            self._client_link = TLSLink(setup.channel(f"tls #{self.id} client"), fd)
            self._client_link.channel.feed(hello)
            self._on_client_handshake(READ)
        # Else no OpenSSL object until the client has spoken: a client that never sends its
        # ClientHello (a slowloris) holds its socket, this session and a timer, not the ~40 KiB
        # of an SSL object with its buffers.

    def _on_client_handshake(self, _events: int) -> None:
        if self.state != CONNECTING:
            return
        link = self._client_link
        if link is None:
            setup = self.relay.client_tls  # the files of the moment (a reload may have come)
            assert setup is not None
            sock = self._socket_for(self.client, setup.params)
            channel = setup.channel(f"tls #{self.id} client", sock=sock)  # with sock: OpenSSL's to use
            link = self._client_link = TLSLink(channel, self.client.rfd)
        if not self._handshake_step(link, "client"):
            return
        self._handshake_finished(link)
        self.relay.loop.unregister(link.fd)
        self.client.mask = UNREGISTERED
        self._announce_accept()
        self._open_target()

    # -- origination: the target's handshake once connected

    def _connected(self, *, announce: bool = True) -> None:
        setup = self.relay.target_tls
        if setup is None or self._target_link is not None:
            super()._connected(announce=announce)
            return
        target = self.target
        assert target is not None and target.sock is not None
        if self._header and not self._first_through():  # a PROXY header goes before the handshake
            return
        if self._connect_timer is not None:  # the handshake has its own timeout
            self._connect_timer.cancel()
            self._connect_timer = None
        loop = self.relay.loop
        if target.mask != UNREGISTERED:
            loop.unregister(target.rfd)
            target.mask = UNREGISTERED
        if setup.params.insecure:
            self._warn_insecure()
        sock = self._socket_for(target)
        # The session of the last connection to this target (same context and name) is offered:
        # a resumed handshake spares the relay the target's certificate chain and signature.
        self._target_session, session = session_for(target.sock, setup)
        self._target_link = TLSLink(setup.channel(f"tls #{self.id} target", session, sock), target.rfd)
        loop.register(target.rfd, READ, self._on_target_handshake, self.crashed)
        self._arm_handshake(setup, "target")
        self._on_target_handshake(READ)

    def _warn_insecure(self) -> None:
        """``insecure`` is said at every connection, as the other commands say it (rate-limited
        as every line a client can cause is)."""
        line = insecure_line(self.target_label)
        self.relay.events.notice(
            N_("connections to an unverified TLS target"),
            "warning",
            _("enchufe: warning: #{id} {problem}").format(id=self.id, problem=line),
            id=self.id,
            target=self.target_label,
            insecure=True,
        )

    def _on_target_handshake(self, _events: int) -> None:
        if self.state != CONNECTING:
            return
        link = self._target_link
        assert link is not None
        if not self._handshake_step(link, "target"):
            return
        self._handshake_finished(link)
        self.relay.loop.unregister(link.fd)
        super()._connected()
        if self.state == OPEN and self.down is not None:
            # Records that came glued to the server's Finished (a TLS 1.2 server that speaks
            # first) were taken in by the handshake: the socket will not say they are there.
            self._step(0, 1)

    # -- the handshake, on either side

    def _socket_for(self, side: Side, server: TLSParams | None = None) -> socket.socket | None:
        """The socket OpenSSL may read and write itself for ``side`` (see :mod:`.tls_pump`), or
        ``None`` for memory BIOs: while tracing (the relay narrates each system call), for the
        fault pumps (:attr:`tls_on_socket`), on a Python without the means, and on a server
        (``server``: its settings) that may refuse a client after the handshake, when the
        session tickets OpenSSL sends at its end must be held back (allow-san, allow-cn, alpn:
        see :meth:`_handshake_step`)."""
        if not (self.tls_on_socket and _tls_socket.AVAILABLE) or trace.enabled():
            return None
        if server is not None and (server.allow_san or server.allow_cn or server.alpn):
            return None
        return side.sock

    def _arm_handshake(self, setup: TLSSetup, side: str) -> None:
        timeout = setup.params.handshake_timeout
        self._handshake_timer = self.relay.loop.call_later(
            timeout, lambda: self._handshake_timed_out(timeout, side), self.crashed
        )

    def _handshake_finished(self, link: TLSLink) -> None:
        """Count the handshake, the version agreed, and whether it resumed a session."""
        stats = self.relay.stats
        stats.tls_handshakes += 1
        agreed = link.channel.info
        if agreed is not None:
            versions = stats.tls_versions
            versions[agreed.version] = versions.get(agreed.version, 0) + 1
            if agreed.resumed:
                stats.tls_resumed += 1
        self._handshake_done()

    def _handshake_done(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    def _handshake_step(self, link: TLSLink, side: str) -> bool:
        """Advance ``link``'s handshake as far as the socket allows: True once done; False to
        wait (the interest asked accordingly), or when it failed and the session ended."""
        channel = link.channel
        try:
            while True:
                done = channel.handshake()
                link.pull()
                link.flush()
                if done:
                    return True
                if channel.on_socket:  # OpenSSL read all there was, and sent what it could
                    break
                channel.feed(receive(link.fd))
        except BlockingIOError:
            pass
        except TLSRefused as exc:
            link.pull()
            if exc.after_handshake:  # what OpenSSL queued is no alert but session tickets,
                link.unsent.clear()  # which a refused client must not get
            with contextlib.suppress(OSError):
                link.flush()  # the alert that tells the peer why
            self._handshake_failed(side, str(exc), exc.reason)
            return False
        except OSError as exc:
            self._handshake_failed(side, system_reason(exc), "reset")
            return False
        self.relay.loop.modify(link.fd, READ | (WRITE if link.unsent or channel.wants_write else 0))
        return False

    def _handshake_timed_out(self, timeout: float, side: str) -> None:
        self._handshake_timer = None
        if self.state != CONNECTING:
            return
        message = _("the TLS handshake did not finish within {seconds} s (handshake-timeout)").format(
            seconds=f"{timeout:g}"
        )
        self._handshake_failed(side, message, "timeout")

    def _handshake_failed(self, side: str, message: str, reason: str) -> None:
        """One notice with the reason; this client's session ends (the relay serves on)."""
        self._handshake_done()
        relay = self.relay
        failures = relay.stats.tls_failures
        failures[reason] = failures.get(reason, 0) + 1
        shown = self.peer_label()
        if side == "target":
            relay.stats.failed += 1
            line = _(
                "enchufe: TLS handshake with {target} failed: {message} (client {peer} #{id} closed)"
            ).format(target=relay.target_label, message=message, peer=shown, id=self.id)
        else:
            line = _(
                "enchufe: TLS handshake with the client failed: {message} (client {peer} #{id} closed)"
            ).format(message=message, peer=shown, id=self.id)
        relay.events.notice(
            N_("failed TLS handshakes"),
            "tls-failed",
            line,
            id=self.id,
            peer=shown,
            side=side,
            reason=reason,
            error=message,
        )
        # An alert was queued for a refused client: a plain close lets it arrive (a reset would
        # discard it); a stalled or vanished client is reset.  A target that failed is a target
        # that could not be reached: the client is reset (and a one-shot relay fails).
        abortive = side == "target" or reason in ("timeout", "reset")
        self._end("tls-failed", abortive=abortive, quiet=True)

    # -- what the client's (or else the target's) handshake agreed, for events and children

    def client_tls(self) -> TLSInfo | None:
        link = self._client_link
        return link.channel.info if link is not None else None

    def _agreed(self) -> TLSInfo | None:
        link = self._client_link or self._target_link
        return link.channel.info if link is not None else None

    def _event_fields(self) -> dict[str, Any]:
        tls = self._agreed()
        if tls is None:
            return {}
        fields: dict[str, Any] = {
            "tls_version": tls.version,
            "tls_cipher": tls.cipher,
            "tls_resumed": tls.resumed,
        }
        if tls.alpn:
            fields["tls_alpn"] = printable(tls.alpn)
        peer = tls.peer
        if peer is not None:  # names the peer chose: escaped
            fields["peer_subject"] = printable(peer.subject)
            fields["peer_san"] = printable(peer.san_text())
            fields["peer_pin"] = peer.pin
        return fields

    def _child_environment(self) -> dict[str, str]:
        env = super()._child_environment()
        link = self._client_link
        if link is not None and link.channel.info is not None:
            from .._tls import environment

            env.update(environment(link.channel.info))
        return env

    # -- relaying

    def _pump(self, src: Side, dst: Side) -> Any:
        client = self.client
        src_link = self._client_link if src is client else self._target_link
        dst_link = self._client_link if dst is client else self._target_link
        loop = self.relay.loop
        if dst_link is not None:
            dst_link.wake = self._wake  # the other pump's reads may wait for this one's send
        return make_pump(
            src.rfd,
            dst.wfd,
            src_link=src_link,
            dst_link=dst_link,
            finish=lambda: dst.shut_write(loop),
            dst_is_pipe=not dst.is_socket,
            buffer=self.relay.pools.tls_hop,
        )

    def _wake(self, pump: TLSPump) -> None:
        """``pump`` may read again (its reads waited for OpenSSL's answer to a key update, now
        sent): it runs at the next turn of the loop, since OpenSSL may hold records it took in
        already, which epoll would not announce."""
        self.relay.loop.call_later(0, lambda: self._run_woken(pump), self.crashed)

    def _run_woken(self, pump: object) -> None:
        if self.state == OPEN and (pump is self.up or pump is self.down):
            self._step(int(pump is self.up), int(pump is self.down))

    def _release(self, abortive: bool) -> None:
        self._keep_target_session()
        self._handshake_done()
        super()._release(abortive)

    def _keep_target_session(self) -> None:
        """Keep the target's session for the next connection to it to resume, as a client of
        the library does (:func:`enchufe._tlssetup.keep_session`): once its handshake was done,
        and if the target sent a ticket the relay read."""
        if self._target_link is not None:
            keep_session(self._target_session, self._target_link.channel.session())

"""One client relayed to a stream target: open the target, then two pumps until both are done.

::

    StreamSession (a PreludeSession, see :mod:`.prelude`, and a RelaySession, :mod:`.session`)
      ├─ the prelude: with --accept-proxy the PROXY header, with --route the ClientHello
      ├─ open TARGET: connect (non-blocking, timed), spawn exec:, or stdio; what it gets first
      │    (--send-proxy's header, a route's ClientHello replayed), then the pumps carry the rest
      ├─ up:   Pump(client → target)
      └─ down: Pump(target → client)

A session lives until both pumps are done: each direction ends on its own (EOF passed on as
``shutdown(SHUT_WR)``, or as closing a pipe, once its bytes are delivered), so a target may answer
long after the client's EOF.  A reset or error on either side ends both at once, and the other
side is reset too (``SO_LINGER`` 0), so that neither peer mistakes a broken relay for an orderly
end.

Each end is a :class:`~enchufe.relay.sides.Side`; after every step the interest of both is
computed in one place (:meth:`StreamSession._update`) and asked of the loop only when it changed.
"""

from __future__ import annotations

import os
import socket
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from .. import trace
from .._calls import raw_family
from .._spawn import CHILD_EXIT_GRACE, socket_environment
from ..address import ExecAddress, StdioAddress
from ..errors import reason as system_reason
from ..i18n import N_, _
from . import shortcuts
from .child_exit import child_exited
from .children import Child
from .engine import ERROR, FAILED, HANDED, READ, WRITE, Timer
from .prelude import PreludeSession
from .proxying import proxied_environment
from .pump import Pump
from .session import CONNECTING, OPEN, pending_error
from .shortcuts import DOWN, NO_SHORTCUTS, UP, WARM_UP
from .sides import UNREGISTERED, Side, stdio_side

if TYPE_CHECKING:
    from .stream import StreamRelay

__all__ = ["StreamSession"]


class StreamSession(PreludeSession):
    """One client relayed to the target: open the target, then two pumps until both are done
    (their small-message path in the loop's shortcuts while they are simple: :mod:`.shortcuts`)."""

    __slots__ = ("_child_timer", "_cuts", "_stop_early", "child", "client", "down", "target", "up")

    relay: StreamRelay
    crash_outcome = N_("both peers reset")
    early_payload = True  # its target gets what came with a PROXY header first (see .prelude)

    def __init__(
        self, relay: StreamRelay, client: Side, client_sock: socket.socket | None, peer: Any, session_id: int
    ) -> None:
        super().__init__(relay, client_sock, peer, session_id)
        self.client = client
        client.on_events, client.on_read = self._on_client, self._on_client_read  # Side.handle(), inline
        client.on_write, client.on_error = self._on_client_write, self.crashed
        self.target: Side | None = None
        self.child: Child | None = None
        self.up: Pump | None = None
        self.down: Pump | None = None
        #: a terminal at either end: the session may end before both pumps are done
        self._stop_early = False
        self._child_timer: Timer | None = None
        self._cuts = NO_SHORTCUTS

    # -- opening the target

    def _begin(self) -> None:
        if self.relay.events.level >= 1:  # events.wants(1), inline: once per connection
            self._announce_accept()
        self._open_target()

    def _open_target(self) -> None:
        """Open the target (connect, spawn, or stdio); the client waits, errors only watched."""
        relay = self.relay
        client = self.client
        target = relay.target if self.route is None else self.route.target
        if relay.send_proxy:
            self._prepare_first()
        if isinstance(target, ExecAddress):
            self._spawn(target)
        elif isinstance(target, StdioAddress):
            self._set_target(stdio_side())
            self._connected()
        else:
            via = relay.via
            if via is not None:
                via.connecting()
            # A plain session: _connected ends the connect phase, or _first_through arms its
            # timer when what goes first (a PROXY header, the bytes that came with one) waits.
            self._open_targets(type(self) is StreamSession and via is None)
        if self.state == CONNECTING and client.sock is not None and client.mask == UNREGISTERED:
            # Still waiting for the target: the client is registered with an empty mask, so
            # that one that resets meanwhile is noticed.  A target open at once (loopback
            # answers within connect()) spares that epoll_ctl: relaying registers the client
            # for what it wants.
            relay.loop.register(client.rfd, 0, self._on_client, self.crashed)
            client.mask = 0

    def _spawn(self, program: ExecAddress) -> None:
        relay = self.relay
        try:
            env = self._child_environment()
            child = relay.children.spawn(program, env, session_id=self.id)
        except (OSError, ValueError) as exc:  # this client only: the relay serves on
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._fail_target(
                _("cannot run {program}: {reason}").format(program=program, reason=reason.lower())
            )
            return
        self.child = child
        child.on_exit = lambda: self._child_exited(CHILD_EXIT_GRACE)
        child.on_error = self.crashed
        self._set_target(Side(rfd=child.stdout_r, wfd=child.stdin_w))
        if relay.events.wants(1):
            relay.events(
                "exec",
                _("#{id} started {program} (pid {pid})").format(id=self.id, program=program, pid=child.pid),
                level=1,
                id=self.id,
                target=relay.target_label,
                pid=child.pid,
            )
        self._connected(announce=False)

    def _child_environment(self) -> dict[str, str]:
        """The variables an ``exec:`` child gets about its client (hook: a TLS client's too)."""
        if self.proxied is not None:  # the client its proxy named
            return proxied_environment(self.proxied, self.client_sock, self.relay.local)
        return socket_environment(self.client_sock, self.peer, self.relay.local)

    def _target_opened(self, sock: socket.socket) -> None:
        self._set_target(Side(sock))

    def _set_target(self, side: Side) -> None:
        side.on_events, side.on_read = self._on_target, self._on_target_read  # Side.handle(), inline
        side.on_write, side.on_error = self._on_target_write, self.crashed
        self.target = side

    def _wait_connect(self) -> None:
        side = self.target
        assert side is not None
        side.want(self.relay.loop, WRITE, False)

    # -- --via: the target through proxy hops (see .via)

    def _reached(self) -> None:
        """Connected; through proxies (--via), to the first one: their handshakes first, within
        what is left of the connect timeout (:func:`.via.tunnel_to_target`)."""
        if self.relay.via is None:
            self._connected()
            return
        from .via import tunnel_to_target  # here: a relay without --via never loads the hops

        tunnel_to_target(self)

    def _dialled(self) -> str:
        via = self.relay.via
        return self.target_label if via is None else via.label()

    def _drop_target(self) -> None:
        if self.target_sock is not None:
            super()._drop_target()
            self.target = None

    def _connect_began(self) -> float:
        """When the connect the "connected … in N ms" line times began: the accept, for a relay
        (a PROXY header's wait and the retries included)."""
        return self.started

    def _connected(self, *, announce: bool = True) -> None:
        relay = self.relay
        if (self._header or self._replay) and not self._first_through():
            return  # the connect timer still runs: a target that takes nothing is cut
        self._connect_done()
        client, target = self.client, self.target
        assert target is not None
        self.up = self._pump(client, target)
        self.down = self._pump(target, client)
        self._stop_early = client.stop_at_peer_eof or target.stop_at_peer_eof
        self._cuts = self._may_cut(self._stop_early)
        if announce and relay.events.level >= 1:  # events.wants(1), inline
            seconds = time.monotonic() - self._connect_began()
            named, via = (self.target_label, {}) if relay.via is None else relay.via.routed(self.target_label)
            relay.events(
                "connect",
                _("#{id} connected to {target} in {ms} ms").format(
                    id=self.id, target=named, ms=f"{seconds * 1000:.1f}"
                ),
                level=1,
                id=self.id,
                target=self.target_label,
                seconds=round(seconds, 6),
                **via,
            )
        if relay.idle_timeout:
            self._arm_idle()
        if client.sock is None or target.sock is None:
            # Descriptors epoll cannot watch for us yet (a file as stdin is always ready, a
            # pipe may hold bytes already): step once now, as if everything were ready.
            self._step(1, 1)
            return
        # A client usually sends its request right after connecting: reading it now saves a turn
        # (unless it came with a PROXY header or as a routing ClientHello, and went on already).
        self._step(0 if self.to_target else 1, 0)

    def _pump(self, src: Side, dst: Side) -> Pump:
        """The pump from ``src`` to ``dst``: its EOF passed on as ``dst``'s write side shut."""
        relay = self.relay
        sock = dst.sock
        return Pump(
            src.rfd,
            dst.wfd,
            relay.pools,
            use_splice=relay.use_splice,
            finish=partial(self._pass_eof, dst),  # a partial: no Python frame of its own
            dst_is_pipe=sock is None,
            # towards TCP (see .pump); the family as an int: socket.family makes an enum
            bulk=sock is not None and raw_family(sock) != socket.AF_UNIX,
        )

    def _pass_eof(self, dst: Side) -> None:
        """A pump delivered its source's EOF: shut ``dst``'s write side, unless the other way is
        done too (sockets, tracing off): the step then closes both, and close() sends the same
        FIN (both EOFs were read: nothing unread makes it a reset), one call the fewer."""
        sock = dst.sock
        if sock is not None and trace._sink is None:  # trace.enabled(), inline: a narration shows every call
            up, down = self.up, self.down
            if up is not None and down is not None and up.done and down.done and not self._stop_early:
                return
            sock.shutdown(socket.SHUT_WR)  # Side.shut_write, inline
            return
        dst.shut_write(self.relay.loop)

    def _may_cut(self, stop_early: bool) -> int:
        """``_cuts`` for the pumps just made (hook: a subclass may keep every event its own)."""
        return shortcuts.may_cut(self, stop_early)

    def _collect(self) -> bool:
        return shortcuts.collect(self)

    # -- readiness

    def _on_client(self, events: int) -> None:
        if self.state != OPEN:
            if self.state == CONNECTING:  # only errors are asked for while connecting
                self._client_gone_while_connecting()
            return
        # This event's hand-over (HANDED) and the target's, if one is waiting: see settle.
        took = shortcuts.settle(self, UP if events & HANDED else 0) if self._cuts > 0 else 0
        if events & FAILED and self._failed(self.client_sock, "client"):
            return
        self._step(events & (READ | ERROR) | took & UP, events & (WRITE | ERROR) | took & DOWN)

    def _on_target(self, events: int) -> None:
        if self.state != OPEN:
            if self.state == CONNECTING:
                self._connect_ready()
            return
        # This event's hand-over (HANDED) and the client's, if one is waiting: see settle.
        took = shortcuts.settle(self, DOWN if events & HANDED else 0) if self._cuts > 0 else 0
        if events & FAILED and self._failed(self.target_sock, "target"):
            return
        self._step(events & (WRITE | ERROR) | took & UP, events & (READ | ERROR) | took & DOWN)

    # Descriptor sides: one handler per descriptor.
    def _on_client_read(self, events: int) -> None:
        if self.state == OPEN:
            self._step(1, 0)

    def _on_client_write(self, events: int) -> None:
        if self.state == OPEN:
            self._step(0, 1)

    def _on_target_read(self, events: int) -> None:
        if self.state == OPEN:
            self._step(0, 1)

    def _on_target_write(self, events: int) -> None:
        if self.state == OPEN:
            self._step(1, 0)

    def _failed(self, sock: socket.socket | None, side: str) -> bool:
        """EPOLLERR: end the session if the socket really has an error (a reset), which may be
        on a side neither pump is using right now."""
        assert sock is not None
        code = pending_error(sock)
        if not code:
            return False
        self.relay.stats.reset += 1
        self._end(f"{side}-reset", abortive=True, error=system_reason(OSError(code, os.strerror(code))))
        return True

    def _client_gone_while_connecting(self) -> None:
        assert self.client_sock is not None
        code = pending_error(self.client_sock)
        self.relay.stats.reset += 1
        self._end(
            "client-reset",
            abortive=True,
            error=system_reason(OSError(code, os.strerror(code)), lower=False)
            if code
            else _("client hung up"),
        )

    def _step(self, run_up: int, run_down: int) -> None:
        up = self.up
        down = self.down
        assert up is not None and down is not None
        stats = self.relay.stats
        pump = up
        moved_up = moved_down = 0
        try:
            if run_up:
                eof = up.eof
                moved_up = up.run()
                # Added even when 0: cheaper than a test, and no count is lost if the other
                # direction then raises.
                self.to_target += moved_up
                stats.to_target += moved_up
                if up.eof != eof:
                    self._on_eof(self.client, "client")
            if run_down:
                pump = down
                eof = down.eof
                moved_down = down.run()
                self.to_client += moved_down
                stats.to_client += moved_down
                if down.eof != eof:
                    self._on_eof(self.target, "target")
        except OSError as exc:
            self._reset(pump, exc)
            return
        if (moved_up or moved_down) and self.relay.idle_timeout:
            self._last_active = time.monotonic()
        if (up.done and down.done) or (self._stop_early and self._terminal_done(up, down)):
            self._end("done")
            return
        # Nothing in flight, no EOF, no read held back, both sides read only: _update would
        # change nothing (the request/response case, most steps of a small-message connection).
        # One int: any bit set means something to look at.
        sides = (self.client.mask ^ READ) | (self.target.mask ^ READ)  # type: ignore[union-attr]
        cuts = self._cuts  # the loop's shortcuts (see .shortcuts): which may change now
        if up.in_flight | down.in_flight | up.eof | down.eof | up.stalled | down.stalled | sides:
            self._update(up, down)
            if cuts >= 0:
                shortcuts.arm(self, up, down)
        elif cuts < WARM_UP + 2:  # both ways simple again: a step of the warm-up
            self._cuts = cuts + 1
        elif cuts != NO_SHORTCUTS and cuts != UP | DOWN:
            shortcuts.arm(self, up, down)

    def _terminal_done(self, up: Pump, down: Pump) -> bool:
        """A terminal on the other side of a finished direction may never send its EOF."""
        target = self.target
        return (down.done and self.client.stop_at_peer_eof) or (
            up.done and target is not None and target.stop_at_peer_eof
        )

    def _on_eof(self, side: Side | None, name: str) -> None:
        """``side`` finished sending: a descriptor it was read through is closed (a pipe whose
        writer is gone would report EPOLLHUP whatever the mask), and it is said at -vv."""
        if side is not None and side.sock is None:  # Side.close_read's test, inline: sockets stay
            side.close_read(self.relay.loop)
        events = self.relay.events
        if events.level >= 2:  # events.wants(2), inline: once per direction of every connection
            if name == "client":
                sent = self.to_target
                line = _(
                    "#{id} client finished sending after {bytes} bytes; shutting down the write side "
                    "towards the target once they are delivered"
                )
            else:
                sent = self.to_client
                line = _(
                    "#{id} target finished sending after {bytes} bytes; shutting down the write side "
                    "towards the client once they are delivered"
                )
            events(
                "eof",
                line.format(id=self.id, bytes=sent),
                level=2,
                id=self.id,
                side=name,
                bytes=sent,
            )

    def _reset(self, pump: Pump, exc: OSError) -> None:
        lost = pump.unreported  # delivered before the failure: counted all the same
        if lost:
            pump.unreported = 0
            stats = self.relay.stats
            if pump is self.up:
                self.to_target += lost
                stats.to_target += lost
            else:
                self.to_client += lost
                stats.to_client += lost
        side = (
            ("client" if pump.failed_on == "read" else "target")
            if pump is self.up
            else ("target" if pump.failed_on == "read" else "client")
        )
        self.relay.stats.reset += 1
        reason = exc.strerror or str(exc)
        self._end(f"{side}-reset", abortive=True, error=reason.lower())

    def _update(self, up: Pump, down: Pump) -> None:
        """The interest in each side after a step: asked of the loop where it changed."""
        # Pump.wants_read, inlined: this runs after every step of every connection.  A full
        # buffer or pipe means no read interest, whatever the mode (a bulk buffer is used while
        # use_splice holds): otherwise a stalled reader makes every wake-up a futile write.
        view = up.view
        up_read = not (up.eof or up.stalled) and (
            (up.pipe is None or up.in_flight < up.pipe.capacity) if view is None else up.end < len(view)
        )
        view = down.view
        down_read = not (down.eof or down.stalled) and (
            (down.pipe is None or down.in_flight < down.pipe.capacity)
            if view is None
            else down.end < len(view)
        )
        side = self.client
        mask = (READ if up_read else 0) | (WRITE if down.in_flight else 0)
        if mask != side.mask:
            side.want(self.relay.loop, mask, down.done)
        side = self.target  # type: ignore[assignment]  # set while relaying
        mask = (READ if down_read else 0) | (WRITE if up.in_flight else 0)
        if mask != side.mask:
            side.want(self.relay.loop, mask, up.done)

    # -- timers

    def _idle_expired(self, timeout: float) -> None:
        self.relay.stats.cut += 1
        self._end(
            "idle",
            abortive=True,
            error=_("no traffic for {seconds} s (--idle-timeout)").format(seconds=f"{timeout:g}"),
        )

    def _child_exited(self, delay: float, check: bool = False) -> None:
        """The exec: child has exited (see :func:`.child_exit.child_exited`)."""
        child_exited(self, delay, check)

    # -- ending

    def _close_leftovers(self) -> None:
        loop = self.relay.loop
        for side in (self.client, self.target):
            if side is not None and (side.sock is None or side.sock.fileno() >= 0):
                side.close(loop, abortive=True)

    def _release(self, abortive: bool) -> None:
        relay = self.relay
        if self._cuts > 0:  # shortcuts.disarm's test, inline: most short connections have none
            shortcuts.disarm(self)
        if self._stage is not None:
            self._stage.cancel()
            self._stage = None
        if self._child_timer is not None:
            self._child_timer.cancel()
            self._child_timer = None
        for pump in (self.up, self.down):
            if pump is not None:
                pump.discard()
        loop = relay.loop
        self.client.close(loop, abortive=abortive)
        if self.target is not None:
            self.target.close(loop, abortive=abortive)
        if self.child is not None:  # its group goes with the session (at once, if it broke)
            if abortive:
                relay.children.terminate(self.child)
            else:
                relay.children.release(self.child)

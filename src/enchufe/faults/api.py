"""Faults on purpose in your own tests: a faulty relay started in-process in front of any address.

::

    from enchufe.faults import FaultyRelay

    with FaultyRelay("tcp://127.0.0.1:6379", faults=["latency:latency=50"], seed=1) as relay:
        client = MyClient(relay.address)           # connect to the relay, not to the server
        relay.set_faults(["reset_peer:timeout=0"]) # open connections follow at once
        relay.add("bandwidth:rate=100")            # one more (its name: bandwidth_downstream)
        relay.remove("bandwidth_downstream")
        print(relay.stats.to_client)               # the relay's counters

The relay is :class:`~enchufe.relay.Relay` with a live :class:`~.toxics.FaultPlan`, run in a
thread of its own (:class:`~.relay_thread.RelayThread`, as each proxy of ``enchufe chaos``): a
stream's bytes go through each direction's toxics, a datagram through its session's.  The
asyncio form is :class:`~.api_aio.AsyncFaultyRelay` (``async with``).

Faults are given as ``--fault`` takes them (``"latency:latency=50,jitter=10,stream=upstream"``)
or as :class:`~.toxics.Toxic` objects; a bad one raises :class:`~.toxics.FaultError` (a
``ValueError`` kind of error, with one line naming what is wrong) before anything changes.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import weakref
from collections.abc import Iterable
from types import TracebackType

from ..address import Address, InetAddress, UnixAddress, parse
from ..errors import UsageError
from ..i18n import _
from ..relay import DEFAULT_CONNECT_TIMEOUT, EventSink, Relay, RelayConfig, Snapshot
from ..relay.events import Emit
from .relay_thread import STOP_TIMEOUT, RelayThread
from .toxics import FaultError, FaultPlan, Toxic, parse_fault

__all__ = ["Fault", "FaultyRelay", "listen_for", "toxics_of"]

#: A fault as ``--fault`` takes it, or a :class:`Toxic`.
Fault = str | Toxic


def toxics_of(faults: Fault | Iterable[Fault]) -> tuple[Toxic, ...]:
    """The toxics of ``faults`` (one, or several), checked; FaultError if one is wrong or two
    share a name (remove them by name: give one a ``name=``)."""
    items = [faults] if isinstance(faults, str | Toxic) else list(faults)
    toxics = tuple(item if isinstance(item, Toxic) else parse_fault(item) for item in items)
    names = [toxic.name for toxic in toxics]
    for name in names:
        if names.count(name) > 1:
            raise FaultError(
                _("two faults are named {quoted}; give one another name, e.g. name={name}_2").format(
                    quoted=repr(name), name=name
                )
            )
    return toxics


def listen_for(target: Address, folder: str) -> str:
    """Where a relay in front of ``target`` listens by default: the same kind, on loopback (a
    free port) or in ``folder`` for unix sockets."""
    if isinstance(target, InetAddress):
        loopback = "[::1]" if target.family == 6 else "127.0.0.1"
        return f"{target.scheme}://{loopback}:0"
    if isinstance(target, UnixAddress):
        return f"{target.scheme}://{folder}/relay.sock"
    raise UsageError(
        _(
            "a faulty relay needs a socket address to relay to (tcp, udp, unix, unixgram), not {target}; "
            "give listen= to relay from stdio or to a program"
        ).format(target=target)
    )


class _Held:
    """What a :class:`FaultyRelay` must give back however it ends: its relay's thread and its
    temporary folder (with the relay's socket file in it)."""

    def __init__(self, folder: str | None) -> None:
        self.folder = folder
        #: the folder's path, kept after it is removed: a relay started again makes it again
        self.path = folder
        self.running: RelayThread | None = None

    def release(self) -> None:
        """Stop the relay at once (without waiting for its thread) and remove the folder."""
        running, self.running = self.running, None
        if running is not None:
            running.relay.stop(now=True)
        folder, self.folder = self.folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


class FaultyRelay:
    """A relay from ``listen`` (by default: the same kind as ``target``, on loopback or in a
    temporary folder) to ``target``, through ``faults`` (see the module).

    * :meth:`start` (or ``with``) binds and serves; :attr:`address` is where clients connect.
      A target that cannot be reached is each client's failure, not :meth:`start`'s: the client's
      connection is closed without a byte and counted in ``stats.failed``.
    * A client's EOF reaches the target (a half-close) once the bytes before it went through
      the faults (``slow_close`` delays it, ``timeout`` holds it); the target's EOF reaches the
      client the same way.  ``reset_peer`` resets both ends, ``limit_data`` closes both.
    * :meth:`set_faults`, :meth:`add` and :meth:`remove` apply at once, to the connections (and
      datagram sessions) already open too: bytes held by a removed fault are let go at once.
      Safe from any thread.
    * :meth:`stop` (or leaving ``with``) closes the listener and cuts every open connection (the
      clients see a reset), and removes the temporary folder.  Calling it again does nothing.
      A relay never stopped is stopped, and its folder removed, when it is garbage-collected or
      when the interpreter exits (a test that failed before stop() leaves nothing in /tmp).
    * ``seed`` makes every random choice repeatable (jitter, toxicity, loss …): the same seed and
      the same traffic give the same decisions.  ``None``: a new seed each time (:attr:`seed`).
    * ``emit`` receives the relay's events (``emit(name, message, level=…, **fields)``) up to
      ``level``, from the relay's thread; none by default.
    """

    def __init__(
        self,
        target: Address | str,
        faults: Fault | Iterable[Fault] = (),
        *,
        seed: int | None = None,
        listen: Address | str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        idle_timeout: float | None = None,
        emit: Emit | None = None,
        level: int = 0,
    ) -> None:
        self.target = parse(target) if isinstance(target, str) else target
        self.seed = random.SystemRandom().randrange(2**63) if seed is None else seed
        self._plan = FaultPlan(toxics_of(faults), self.seed, live=True)
        folder = None
        if listen is None:
            listen_for(self.target, "")  # refused before a folder is made
            if isinstance(self.target, UnixAddress):
                folder = tempfile.mkdtemp(prefix="enc-faults-", dir="/tmp")
            listen = listen_for(self.target, folder or "")
        self._held = _Held(folder)
        # Not a method of self: the finalizer must not keep self alive.
        self._release = weakref.finalize(self, self._held.release)
        try:  # a refusal must not leave the folder behind
            self.listen = parse(listen) if isinstance(listen, str) else listen
            self._plan.check_relay(self.listen, self.target, frame=False)
            self.config = RelayConfig(
                listen=self.listen,
                target=self.target,
                faults=self._plan,
                connect_timeout=connect_timeout,
                idle_timeout=idle_timeout,
            )
        except BaseException:
            self._release()
            raise
        self._events = EventSink(emit, level)
        self._running: RelayThread | None = None
        self._relay: Relay | None = None  # kept after stop(), for its counters

    # -- running

    def start(self) -> FaultyRelay:
        """Bind and serve; ``self``.  Raises what binding raises (NetworkError, OSError).  Again
        after :meth:`stop`: served anew, at the same unix path (its folder made again)."""
        if self._running is None:
            if not self._release.alive:  # stopped (or a start failed): started again
                self._held.folder = self._held.path
                if self._held.path is not None:
                    os.mkdir(self._held.path, 0o700)  # FileExistsError if another took the name
                self._release = weakref.finalize(self, self._held.release)
            try:
                running = RelayThread.start(self.config, self._events, f"faulty relay to {self.target}")
            except BaseException:
                self._release()
                raise
            self._running, self._relay = running, running.relay
            self._held.running = running
        return self

    @property
    def address(self) -> Address:
        """Where clients connect (the real port); RuntimeError before :meth:`start`."""
        if self._running is None:
            raise RuntimeError("the faulty relay is not started: use start() or a with block")
        return self._running.address

    @property
    def running(self) -> bool:
        return self._running is not None and self._running.alive

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Cut everything and end the relay's thread (see the class).  Raises what made the
        relay's thread fail, if it did."""
        running, self._running = self._running, None
        self._held.running = None  # stopped here, its thread waited for
        try:
            if running is not None:
                running.stop(timeout)
                if running.error is not None:
                    raise running.error
        finally:
            self._release()

    def __enter__(self) -> FaultyRelay:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- faults at run time

    @property
    def faults(self) -> tuple[Toxic, ...]:
        """The toxics now, in order."""
        return self._plan.toxics

    def set_faults(self, faults: Fault | Iterable[Fault]) -> None:
        """Replace every fault (``[]``: none; connections then go through untouched)."""
        self._publish(toxics_of(faults))

    def add(self, fault: Fault) -> Toxic:
        """One more fault, after the others; the :class:`Toxic` (its ``name`` for :meth:`remove`).
        FaultError if one of that name is there already."""
        (toxic,) = toxics_of(fault)
        self._publish(toxics_of((*self._plan.toxics, toxic)))
        return toxic

    def remove(self, name: str) -> None:
        """Remove the fault named ``name`` (``TYPE_STREAM`` unless given ``name=``); KeyError
        if there is none."""
        toxics = self._plan.toxics
        if not any(toxic.name == name for toxic in toxics):
            known = ", ".join(toxic.name for toxic in toxics) or "none"
            raise KeyError(f"no fault named {name!r}; the faults: {known}")
        self._publish(tuple(toxic for toxic in toxics if toxic.name != name))

    def _publish(self, toxics: tuple[Toxic, ...]) -> None:
        FaultPlan(toxics, 0).check_kind(self.listen.is_stream)
        self._plan.replace(toxics)

    # -- counters

    @property
    def stats(self) -> Snapshot:
        """The relay's counters now (:class:`~enchufe.relay.Snapshot`): connections ``total``,
        ``open``, ``failed``, ``reset`` (a ``reset_peer`` counts here), bytes ``to_target`` and
        ``to_client``, ``datagrams_to_target`` and ``datagrams_to_client`` delivered (a lost
        datagram is not), ``dropped``; after :meth:`stop` too, as they were at the end."""
        if self._relay is None:
            raise RuntimeError("the faulty relay is not started: use start() or a with block")
        return self._relay.stats.snapshot()

"""A relay run in a thread of its own: each proxy of ``enchufe chaos`` and each
:class:`~enchufe.faults.FaultyRelay`.

::

    running = RelayThread.start(config, events, "chaos proxy redis")   # bound, then serving
    running.address                                                     # where clients connect
    running.stop()                                                      # connections cut, joined

The relay is bound in :meth:`RelayThread.start`, in the caller's thread (so that a port in use
or a bad address is the caller's exception, not a thread's), then served with no signal
handling (the process's main thread has it).
"""

from __future__ import annotations

import threading

from ..address import Address
from ..relay import EventSink, Relay, RelayConfig, RelayResult

__all__ = ["STOP_TIMEOUT", "RelayThread"]

#: Seconds a stopping relay gets to end its thread.
STOP_TIMEOUT = 5.0


class RelayThread:
    """A :class:`~enchufe.relay.Relay` serving in a daemon thread (see the module)."""

    def __init__(self, relay: Relay, address: Address, name: str) -> None:
        self.relay = relay
        self.address = address
        #: how :meth:`Relay.run` ended (``None`` while it runs), or what it raised
        self.result: RelayResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    @classmethod
    def start(cls, config: RelayConfig, events: EventSink | None, name: str) -> RelayThread:
        """Bind ``config.listen`` and serve it in a new thread.  Raises what
        :meth:`Relay.open` raises (UsageError for a configuration that cannot be, NetworkError or
        OSError for an address that cannot be bound or a target that cannot be resolved), or why
        the thread could not start, the listener then closed and its socket file removed."""
        relay = Relay(config, events=events)
        address = relay.open()
        try:
            running = cls(relay, address, name)
            running.thread.start()
        except BaseException:  # no thread (RuntimeError: can't start new thread …): nothing serves
            relay.close()  # the listener, and its socket file
            raise
        return running

    def _run(self) -> None:
        try:
            self.result = self.relay.run(handle_signals=False, announce=False)
        except BaseException as exc:  # kept for stop() to raise: a thread's exception is lost
            self.error = exc

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop at once: the listener closed, open connections cut (a stream client sees its
        connection closed, a datagram session ends); waits up to ``timeout`` s for the thread."""
        self.relay.stop(now=True)
        if self.thread.ident is not None:
            self.thread.join(timeout)

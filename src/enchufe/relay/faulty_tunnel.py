"""Faults on purpose in a datagram → stream relay with ``--frame`` (``enchufe relay udp://…
tcp://… --frame --fault loss:probability=0.1``): each datagram of a sender goes through its
session's upstream :class:`~enchufe.faults.DatagramSchedule` before it is framed onto the
session's stream, and each message read back from the stream through the downstream one
before it is sent to the sender as a datagram: the other end of :mod:`.faulty_framed`.

The faults are the datagram ones (``latency``, ``bandwidth``, ``loss``, ``duplicate``,
``corrupt``, ``reorder``): the stream only carries the datagrams, and a stream fault on it
(a slicer, a cut) would act on the framing, not on anything the sender sent.

The choice is made once per relay (:mod:`.handlers` makes a :class:`FaultyFramedDatagramRelay`
only with ``--fault``): a relay without faults never looks at this module.  A datagram due later
goes only if its session is still open then; one due while the stream is still connecting waits
with the others, as without faults.  A reply due while an earlier one still waits for the
sender's socket is dropped and counted (``dropped``), as in :mod:`.faulty_datagram`.
"""

from __future__ import annotations

import time

from ..errors import ProtocolError
from .datagram_listener import Upstream
from .faulty_datagram import DatagramFaults
from .tunnel import FramedDatagramRelay, Tunnel

__all__ = ["FaultyFramedDatagramRelay"]


class FaultyFramedDatagramRelay(DatagramFaults, FramedDatagramRelay):
    """Datagram LISTEN → stream TARGET, framed, through ``faults`` (see the module)."""

    def _forward_now(self, session: Upstream, data: bytes) -> None:
        FramedDatagramRelay._forward(self, session, memoryview(data), False)

    def deliver(self, session: Tunnel) -> None:
        """The messages the framer holds, each through the session's downstream schedule, until
        a reply has to wait for the sender's socket."""
        framer = session.framer
        schedule = self._schedule(session, False)
        while session.pending_reply is None:
            try:
                message = framer.next_message()
            except ProtocolError as exc:
                self._framing_broken(session, str(exc))
                return
            if message is None:
                break
            self._reply(session, schedule, time.monotonic(), message)
        self._watch(session)

    def _hold_replies(self, session: Upstream) -> None:
        assert isinstance(session, Tunnel)
        self._watch(session)

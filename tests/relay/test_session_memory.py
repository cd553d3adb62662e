"""A finished session is freed by reference counting the moment it ends: nothing of it is left
for the cycle collector, which would otherwise run every few dozen connections and walk every
session still open."""

from __future__ import annotations

import gc
import socket

from enchufe.relay import RelayConfig
from enchufe.relay.stream_session import StreamSession

from .conftest import Target, dial, echo, read_all, relay_thread, wait_until


def test_a_finished_session_leaves_no_cycle() -> None:
    with Target("tcp4://127.0.0.1:0", echo) as target:
        gc.collect()
        gc.disable()  # only what is garbage at the end is looked at, not what a collection freed
        try:
            with relay_thread(RelayConfig("tcp4://127.0.0.1:0", target.address)) as relay:
                for _ in range(3):
                    with dial(relay.address) as sock:
                        sock.sendall(b"x")
                        sock.shutdown(socket.SHUT_WR)
                        assert read_all(sock) == b"x"
                wait_until(lambda: len(relay.events.named("close")) == 3, "three close events")
                gc.set_debug(gc.DEBUG_SAVEALL)
                gc.collect()
                left = [thing for thing in gc.garbage if isinstance(thing, StreamSession)]
                assert not left, f"{len(left)} finished sessions held in reference cycles"
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()

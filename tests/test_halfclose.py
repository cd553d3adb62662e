"""The half-close copy policy without I/O (``enchufe._halfclose``): what each flow asks for as
bytes, EOFs and writes are fed to it, and when the exchange is over.  The drivers are tested
with real sockets and pipes in tests/cli (``connect``, ``listen``) and tests/test_exec.py."""

from __future__ import annotations

from enchufe._halfclose import Flow, HalfClose


def asks(flow: Flow) -> tuple[bool, bool, bool, bool]:
    return flow.wants_read, flow.wants_write, flow.wants_shutdown, flow.done


def test_a_flow_reads_only_once_what_it_read_is_written() -> None:
    flow = Flow("out")
    assert asks(flow) == (True, False, False, False)
    flow.read(b"hello")
    assert asks(flow) == (False, True, False, False)  # backpressure: one chunk held at most
    flow.wrote(2)
    assert bytes(flow.pending) == b"llo" and not flow.wants_read
    flow.wrote(3)
    assert asks(flow) == (True, False, False, False)
    assert flow.moved == 5


def test_the_eof_is_passed_on_only_after_what_was_read() -> None:
    flow = Flow("out")
    flow.read(b"tail")
    flow.read(b"")  # a driver never reads while bytes are pending; the EOF still waits for them
    assert asks(flow) == (False, True, False, False)
    flow.wrote(4)
    assert asks(flow) == (False, False, True, False)
    flow.shutdown()
    assert asks(flow) == (False, False, False, True)


def test_rewrite_and_observe_see_each_chunk_once() -> None:
    seen: list[tuple[str, bytes]] = []
    held = bytearray()

    def rewrite(data: bytes) -> bytes:
        """Lines only: a chunk without a newline yields nothing yet."""
        held.extend(data)
        line, newline, rest = bytes(held).rpartition(b"\n")
        if not newline:
            return b""
        held[:] = rest
        return line.replace(b"\n", b"\r\n") + b"\r\n"

    flow = Flow("out", rewrite=rewrite, observe=lambda name, data: seen.append((name, data)))
    flow.read(b"no newline yet")
    assert asks(flow) == (True, False, False, False)  # nothing to write: read on
    flow.read(b", now\nmore")
    assert bytes(flow.pending) == b"no newline yet, now\r\n"
    assert seen == [("out", b"no newline yet, now\r\n")]  # what is written, once


def test_an_abandoned_flow_drops_what_is_pending_and_is_done() -> None:
    flow = Flow("in")
    flow.read(b"for a reader that left")
    flow.abandon()
    assert asks(flow) == (False, False, False, True)
    assert flow.moved == 0


def test_the_exchange_is_over_when_both_directions_are() -> None:
    copy = HalfClose(Flow("out"), Flow("in"))
    copy.incoming.read(b"")
    copy.incoming.shutdown()
    assert not copy.over  # the peer is done; what we send goes on (half-close)
    copy.outgoing.read(b"")
    copy.outgoing.shutdown()
    assert copy.over


def test_a_terminal_ends_the_exchange_at_the_peers_eof() -> None:
    copy = HalfClose(Flow("out"), Flow("in"), stop_at_incoming_eof=True)
    copy.outgoing.read(b"")
    copy.outgoing.shutdown()
    assert not copy.over  # our EOF: the peer may still answer
    copy.incoming.read(b"")
    copy.incoming.shutdown()
    assert copy.over


def test_the_idle_timeout_counts_from_the_last_readiness() -> None:
    now = [100.0]
    copy = HalfClose(Flow("out"), Flow("in"), idle_timeout=5.0, clock=lambda: now[0])
    assert copy.wait_for() == 5.0
    now[0] = 103.0
    assert copy.wait_for() == 2.0
    copy.touch()
    now[0] = 107.5
    assert copy.wait_for() == 0.5 and not copy.idle
    now[0] = 108.0
    assert copy.wait_for() == 0.0
    assert copy.idle and copy.over
    assert HalfClose(Flow("out"), Flow("in")).wait_for() is None  # no idle timeout: no limit

"""The relay's contract, one test body per property, run in-process over every kind it relays.

Each property is written once and parametrized over the LISTEN x TARGET kinds it concerns: the
four stream kinds on both sides (tcp4, tcp6, a unix path, an abstract unix name), the four
datagram kinds on both sides, and the framed mixes (stream → datagram, datagram → stream).  The
pump paths are part of the matrix: towards a unix socket the relay splices, towards TCP it copies
through a bulk buffer, and with ``splice=False`` it copies through a small buffer; which path
carried the bytes is asserted from the trace narration (:func:`._harness.narrated_paths`).
Properties that depend on the kinds but not on their pairing (limits, drain, datagram sizes) run
over a rotation: each kind once on each side.

The relay is the library's :class:`~enchufe.relay.Relay` run on a thread (``relay_thread``),
stopped with ``stop()``; what it did is read from its :class:`~enchufe.relay.Recorder` events and
its :class:`~enchufe.relay.RelayResult`.  Targets are small servers on threads with plain sockets.
Every wait is bounded; no test asserts how fast anything happened.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import select
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from enchufe.framing import HEADER
from enchufe.relay import RelayConfig

from ._harness import (
    DATAGRAM,
    STREAM,
    TCP,
    Narration,
    ending,
    expected_endings,
    kind_pairs,
    narrated,
    narrated_paths,
    read_frames,
    readable,
    rotation,
    send_frames,
    wait_event,
    wait_stats,
)
from .conftest import (
    STEP,
    DatagramTarget,
    RelayThread,
    Target,
    abort,
    datagram_socket,
    dial,
    digest_of,
    echo,
    exchange,
    generated,
    ping,
    read_all,
    relay_thread,
    turned_away,
    wait_until,
)

#: the relay with its compiled hot path and without it (tests/conftest.py: both_paths)
pytestmark = pytest.mark.usefixtures("both_paths")

MiB = 1024 * 1024

MakeAddress = Callable[[str], str]

STREAM_PAIRS = kind_pairs(STREAM, STREAM)


@contextlib.contextmanager
def relayed(
    make_address: MakeAddress,
    listen_kind: str,
    target_kind: str,
    serve: Callable[[socket.socket], Any],
    **options: Any,
) -> Iterator[tuple[Target, RelayThread]]:
    """A stream target of ``target_kind`` serving each connection with ``serve``, and a relay
    from a fresh ``listen_kind`` address to it (cut and joined at the end)."""
    with (
        Target(make_address(target_kind), serve) as target,
        relay_thread(RelayConfig(make_address(listen_kind), target.address, **options)) as relay,
    ):
        yield target, relay


# ----------------------------------------------------------------------------- (a) bytes both ways


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
@pytest.mark.parametrize(("listen_kind", "target_kind"), STREAM_PAIRS)
def test_every_byte_arrives_both_ways_at_once(
    make_address: MakeAddress, listen_kind: str, target_kind: str, splice: bool
) -> None:
    """2 MiB each way at the same time; both streams hashed at both ends."""
    size = 2 * MiB
    with relayed(
        make_address, listen_kind, target_kind, lambda conn: exchange(conn, seed=2, size=size), splice=splice
    ) as (target, relay):
        with dial(relay.address) as client:
            got = exchange(client, seed=1, size=size)
        (served,) = target.wait_results(1)
        (close,) = wait_event(relay, "close")
        relay.relay.stop()
        result = relay.peer.result(STEP)
    assert served.received == got.sent == size
    assert served.received_digest == got.sent_digest == digest_of(1, size)
    assert got.received == served.sent == size
    assert got.received_digest == served.sent_digest == digest_of(2, size)
    assert close["reason"] == "done" and close["to_target"] == close["to_client"] == size
    assert result.exit_status == 0 and result.cut == 0
    assert result.stats.to_target == result.stats.to_client == size
    assert result.stats.total == 1 and result.stats.reset == result.stats.failed == 0


def _path_towards(kind: str, splice: bool) -> str:
    """Which path carries the bytes towards an end of this kind (see :mod:`enchufe.relay.pump`)."""
    return "splice" if splice and kind not in TCP else "copy"


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
@pytest.mark.parametrize(("listen_kind", "target_kind"), STREAM_PAIRS)
def test_the_pump_path_follows_the_destination_kind(
    make_address: MakeAddress, listen_kind: str, target_kind: str, splice: bool
) -> None:
    """Towards a unix socket the relay splices, towards TCP it copies (measured faster there);
    ``splice=False`` copies both ways.  The narration shows which calls delivered the bytes."""
    size = 256 * 1024

    def serve(conn: socket.socket) -> Any:
        return exchange(conn, seed=4, size=size)

    with (
        relayed(make_address, listen_kind, target_kind, serve, splice=splice) as (target, relay),
        narrated() as lines,
    ):
        with dial(relay.address) as client:
            got = exchange(client, seed=3, size=size)
        (served,) = target.wait_results(1)
        wait_event(relay, "close")
    assert got.received_digest == served.sent_digest and served.received_digest == got.sent_digest
    paths = narrated_paths(lines)
    assert paths == {
        "client": {_path_towards(listen_kind, splice)},
        "target": {_path_towards(target_kind, splice)},
    }


#: A relay bug this suite found, now fixed: a bulk buffer given back while MAX_IDLE_BULK were
#: idle was unmapped while the pump's slice of it was alive, mmap.close() raised BufferError, the
#: session's handler failed and neither finished nor cut it, and both peers hung.
def test_pumps_towards_tcp_splice_while_every_bulk_buffer_is_taken(make_address: MakeAddress) -> None:
    """The bulk buffers (towards TCP) are bounded in number: clients whose target does not read
    hold them with bytes in flight, and once none is free the next pumps towards TCP splice
    instead.  When the target reads at last, every byte of every connection arrives intact,
    every session ends in order, and nothing unexpected happens in the relay."""
    outcome = _exhaust_the_bulk_buffers(make_address)
    with warnings.catch_warnings():
        # Should sessions fail to end again, their sockets stay open until collected: here,
        # not in whichever test runs next.
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert outcome.spliced_into_tcp, "no pump towards a TCP target spliced"
    assert outcome.errors == []
    assert outcome.served == [(n, hashlib.sha256(outcome.pattern[:n]).hexdigest()) for n in outcome.sent]
    assert outcome.ends == [b""] * len(outcome.sent)


@dataclass
class _Exhausted:
    pattern: bytes
    sent: list[int]
    spliced_into_tcp: bool
    errors: list[dict[str, Any]]
    served: list[tuple[int, str]]
    ends: list[bytes]


def _exhaust_the_bulk_buffers(make_address: MakeAddress) -> _Exhausted:
    """Clients towards a target that reads nothing until released, one after another until a
    pump towards the target splices; then the target reads and the clients end."""
    pattern = b"".join(generated(9, 16 * MiB))
    release = threading.Event()

    def serve(conn: socket.socket) -> tuple[int, str]:
        assert release.wait(STEP)  # hold: what the client sends stays in flight
        digest = hashlib.sha256()
        received = 0
        while chunk := conn.recv(1 << 18):
            digest.update(chunk)
            received += len(chunk)
        return received, digest.hexdigest()

    hogs: list[socket.socket] = []
    outcome = _Exhausted(pattern, [], False, [], [], [])
    with contextlib.ExitStack() as stack:
        stack.callback(release.set)
        target, relay = stack.enter_context(relayed(make_address, "tcp4", "tcp4", serve))
        # A small window at the target: the bytes in flight wait in the relay, not there.
        target.listener.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)

        @stack.callback
        def close_clients() -> None:
            for client in hogs:
                client.close()

        narration = Narration(stack.enter_context(narrated()))
        for _ in range(64):  # more than there are bulk buffers
            client = dial(relay.address)
            hogs.append(client)
            outcome.sent.append(_until_the_relay_holds_bytes(client, pattern, narration))
            if narration.spliced & narration.targets:
                break
        outcome.spliced_into_tcp = bool(narration.spliced & narration.targets)
        release.set()
        for client in hogs:
            client.setblocking(True)
            client.settimeout(STEP)
            client.shutdown(socket.SHUT_WR)
        wait_until(
            lambda: len(relay.events.named("close")) == len(hogs) or bool(relay.events.named("error")),
            "every session's end",
        )
        outcome.errors = relay.events.named("error")
        if not outcome.errors:
            outcome.served = target.wait_results(len(hogs))
            outcome.ends = [read_all(client) for client in hogs]
    return outcome


def _until_the_relay_holds_bytes(client: socket.socket, pattern: bytes, narration: Narration) -> int:
    """Send ``pattern`` on ``client`` (not blocking) until the narration shows that the relay
    found its target full with bytes in hand, or that it spliced into a target; bytes sent."""
    # A small send buffer: the bytes in flight wait in the relay, not here.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    client.setblocking(False)
    full = len(narration.update().full)
    offset = 0
    deadline = time.monotonic() + STEP
    while not (len(narration.update().full) > full or narration.spliced & narration.targets):
        assert time.monotonic() < deadline, "the relay never held this client's bytes"
        assert offset < len(pattern), "the relay took every byte and held none"
        try:
            offset += client.send(pattern[offset : offset + (1 << 18)])
        except BlockingIOError:
            select.select([], [client], [], 0.05)
    return offset


# ----------------------------------------------------------------------------- (b) half-close


@pytest.mark.parametrize(("listen_kind", "target_kind"), STREAM_PAIRS)
def test_the_clients_eof_reaches_the_target_which_still_answers(
    make_address: MakeAddress, listen_kind: str, target_kind: str
) -> None:
    def serve(conn: socket.socket) -> bytes:
        request = read_all(conn)  # until the client's EOF, passed on by the relay
        for part in (b"answer to ", request, b" after your EOF"):
            conn.sendall(part)
        return request

    with relayed(make_address, listen_kind, target_kind, serve) as (target, relay):
        with dial(relay.address) as client:
            client.sendall(b"question")
            client.shutdown(socket.SHUT_WR)
            answer = read_all(client)
        assert target.wait_results(1) == [b"question"]
        (close,) = wait_event(relay, "close")
    assert answer == b"answer to question after your EOF"
    assert close["reason"] == "done"


@pytest.mark.parametrize(("listen_kind", "target_kind"), STREAM_PAIRS)
def test_the_targets_eof_reaches_the_client_which_still_sends(
    make_address: MakeAddress, listen_kind: str, target_kind: str
) -> None:
    def serve(conn: socket.socket) -> bytes:
        conn.sendall(b"banner")
        conn.shutdown(socket.SHUT_WR)
        return read_all(conn)

    with relayed(make_address, listen_kind, target_kind, serve) as (target, relay):
        with dial(relay.address) as client:
            assert read_all(client) == b"banner"  # the target's EOF arrived
            client.sendall(b"words after the banner's EOF")
            client.shutdown(socket.SHUT_WR)
            assert read_all(client) == b""
        assert target.wait_results(1) == [b"words after the banner's EOF"]
        (close,) = wait_event(relay, "close")
    assert close["reason"] == "done"


# ----------------------------------------------------------------------------- (c) resets


@pytest.mark.parametrize(("listen_kind", "target_kind"), STREAM_PAIRS)
def test_a_client_that_resets_resets_the_target(
    make_address: MakeAddress, listen_kind: str, target_kind: str
) -> None:
    """The client leaves bytes unread and closes with SO_LINGER 0 (a unix client just closes:
    the unread bytes make it a reset for its peer).  The target must not read a clean EOF where
    it can be told of the reset (a TCP target)."""

    def serve(conn: socket.socket) -> tuple[bytes, str, int]:
        hello = conn.recv(5)
        conn.sendall(b"t" * 1000)
        return hello, *ending(conn)

    with relayed(make_address, listen_kind, target_kind, serve) as (target, relay):
        client = dial(relay.address)
        client.sendall(b"hello")
        assert readable(client)  # the target's answer waits, unread, in the client's queue
        abort(client)
        ((hello, outcome, received),) = target.wait_results(1)
        (close,) = wait_event(relay, "close")
        stats = relay.relay.stats.snapshot()
    assert hello == b"hello" and received == 0
    assert outcome in expected_endings(target_kind)
    assert close["reason"] == "client-reset"
    assert stats.reset == 1


@pytest.mark.parametrize(("listen_kind", "target_kind"), STREAM_PAIRS)
def test_a_target_that_resets_resets_the_client(
    make_address: MakeAddress, listen_kind: str, target_kind: str
) -> None:
    def serve(conn: socket.socket) -> None:
        assert readable(conn)  # the client's bytes wait, unread
        abort(conn)

    with relayed(make_address, listen_kind, target_kind, serve) as (target, relay):
        with dial(relay.address) as client:
            client.sendall(b"c" * 1000)
            outcome, received = ending(client)
        target.wait_results(1)
        (close,) = wait_event(relay, "close")
        stats = relay.relay.stats.snapshot()
    assert received == 0
    assert outcome in expected_endings(listen_kind)
    assert close["reason"] == "target-reset"
    assert stats.reset == 1


# ----------------------------------------------------------------------------- (d) limits


@pytest.mark.parametrize(("listen_kind", "target_kind"), rotation(STREAM, STREAM))
def test_clients_past_max_conns_are_turned_away_and_the_open_one_is_served(
    make_address: MakeAddress, listen_kind: str, target_kind: str
) -> None:
    with relayed(make_address, listen_kind, target_kind, echo, max_conns=1) as (_target, relay):
        with dial(relay.address) as first:
            assert ping(first)
            assert turned_away(relay.address, timeout=STEP) is not None
            (refused,) = wait_event(relay, "refused")
            assert ping(first, b"still served")
        wait_event(relay, "close")
        with dial(relay.address) as later:  # room again once the first has ended
            assert ping(later)
        stats = relay.relay.stats.snapshot()
    assert refused["reason"] == "max-conns"
    assert stats.refused == 1 and stats.total == 2


@pytest.mark.parametrize(("listen_kind", "target_kind"), rotation(STREAM, STREAM))
def test_a_client_whose_target_refuses_is_closed_and_the_relay_serves_on(
    make_address: MakeAddress, listen_kind: str, target_kind: str
) -> None:
    with Target(make_address(target_kind), echo) as probe:
        target = probe.address  # bound, then closed: nobody listens there any more
    with relay_thread(RelayConfig(make_address(listen_kind), target)) as relay:
        assert turned_away(relay.address, timeout=STEP) is not None
        (error,) = wait_event(relay, "error")
        with Target(target, echo), dial(relay.address) as client:  # the target is back
            assert ping(client)
        stats = relay.relay.stats.snapshot()
    assert error["target"] == target
    assert stats.failed == 1 and stats.total == 2


@pytest.mark.parametrize(("listen_kind", "target_kind"), rotation(STREAM, STREAM))
def test_the_idle_timeout_ends_a_silent_session(
    make_address: MakeAddress, listen_kind: str, target_kind: str
) -> None:
    """A session with no byte either way is ended by the relay after ``idle_timeout`` (no
    traffic first: a loaded machine may take longer than the timeout to send it)."""
    with relayed(make_address, listen_kind, target_kind, ending, idle_timeout=0.3) as (target, relay):
        with dial(relay.address) as client:
            outcome, received = ending(client)
        ((target_outcome, _),) = target.wait_results(1)
        (close,) = wait_event(relay, "close")
        stats = relay.relay.stats.snapshot()
    assert (outcome, received) in {(end, 0) for end in expected_endings(listen_kind)}
    assert target_outcome in expected_endings(target_kind)
    assert close["reason"] == "idle"
    assert stats.cut == 1 and stats.reset == 0


# ----------------------------------------------------------------------------- (e) drain


@pytest.mark.parametrize(("listen_kind", "target_kind"), rotation(STREAM, STREAM))
def test_stop_lets_an_open_session_finish_and_refuses_new_clients(
    make_address: MakeAddress, listen_kind: str, target_kind: str
) -> None:
    size = MiB
    with relayed(make_address, listen_kind, target_kind, lambda conn: exchange(conn, seed=6, size=size)) as (
        target,
        relay,
    ):
        with dial(relay.address) as client:
            wait_until(lambda: target.accepted == 1, "the session to reach the target")
            relay.relay.stop()
            (stopping,) = wait_event(relay, "stopping")
            with pytest.raises((ConnectionRefusedError, FileNotFoundError)):
                dial(relay.address).close()
            got = exchange(client, seed=5, size=size)  # every byte of it after the stop
        result = relay.peer.result(STEP)
        (served,) = target.wait_results(1)
    assert stopping["open"] == 1
    assert got.received_digest == served.sent_digest == digest_of(6, size)
    assert served.received_digest == got.sent_digest == digest_of(5, size)
    assert result.exit_status == 0 and result.cut == 0
    assert result.stats.to_target == result.stats.to_client == size


@pytest.mark.parametrize(("listen_kind", "target_kind"), rotation(STREAM, STREAM))
def test_what_is_open_when_the_drain_ends_is_cut(
    make_address: MakeAddress, listen_kind: str, target_kind: str
) -> None:
    def serve(conn: socket.socket) -> tuple[str, int]:
        conn.sendall(conn.recv(100))
        return ending(conn)

    with relayed(make_address, listen_kind, target_kind, serve, drain_timeout=0.2) as (target, relay):
        with dial(relay.address) as client:
            assert ping(client)
            relay.relay.stop()
            result = relay.peer.result(STEP)
            outcome, _ = ending(client)
        ((target_outcome, _),) = target.wait_results(1)
        (cut,) = wait_event(relay, "cut")
    assert result.cut == 1 and result.exit_status == 1
    assert cut["cut"] == 1
    assert outcome in expected_endings(listen_kind)
    assert target_outcome in expected_endings(target_kind)


# ----------------------------------------------------------------------------- (f) datagrams


def _who(data: bytes, sender: Any) -> bytes:
    """A datagram target's answer: the datagram and the address it came from."""
    return data + b"|" + repr(sender).encode()


@contextlib.contextmanager
def _clients(count: int, opener: Callable[[], socket.socket]) -> Iterator[list[socket.socket]]:
    """``count`` sockets from ``opener``, all closed at the end."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(opener()) for _ in range(count)]


#: what each of two clients sends: its letter, repeated (so that a mixed-up reply shows)
LETTERS = (b"A", b"B")


def _messages(index: int, sizes: tuple[int, ...]) -> list[bytes]:
    return [LETTERS[index] * size for size in sizes]


#: datagram sizes every kind carries (the largest of each kind: test_the_largest_datagram…)
SIZES = (0, 1, 1400, 9000)


@pytest.mark.parametrize(("listen_kind", "target_kind"), kind_pairs(DATAGRAM, DATAGRAM))
def test_each_sender_gets_its_own_replies_through_its_own_upstream(
    make_address: MakeAddress, listen_kind: str, target_kind: str
) -> None:
    """Two senders, interleaved, datagrams of several sizes: each gets back exactly its own
    datagrams, whole, through one upstream socket of its own (the target sees two senders)."""
    with (
        DatagramTarget(make_address(target_kind), _who) as target,
        relay_thread(RelayConfig(make_address(listen_kind), target.address)) as relay,
        _clients(2, lambda: datagram_socket(relay.address)) as clients,
    ):
        upstreams: list[set[bytes]] = [set(), set()]
        answered = 0
        for size in SIZES:
            for index, sock in enumerate(clients):
                sock.send(LETTERS[index] * size)
            for index, sock in enumerate(clients):
                data, _, upstream = sock.recv(1 << 17).rpartition(b"|")
                assert data == LETTERS[index] * size
                upstreams[index].add(upstream)
                answered += len(data) + 1 + len(upstream)
        relay.relay.stop()
        result = relay.peer.result(STEP)
        (stopping,) = relay.events.named("stopping")
    assert all(len(seen) == 1 for seen in upstreams) and upstreams[0] != upstreams[1]
    assert len(target.senders()) == 2
    count = 2 * len(SIZES)
    assert result.exit_status == 0 and result.cut == 0 and stopping["closed"] == 2
    stats = result.stats
    assert stats.total == 2
    assert stats.datagrams_to_target == stats.datagrams_to_client == count
    assert stats.to_target == 2 * sum(SIZES) and stats.to_client == answered
    assert stats.truncated == stats.dropped == 0


#: the largest datagram of each kind the relay carries by default (its max_datagram is 64 KiB;
#: UDP's payload is smaller: the IP header takes some of the 64 KiB)
LARGEST = {"udp4": 65507, "udp6": 65527, "unixgram": 65536, "unixgram-abstract": 65536}


@pytest.mark.parametrize(("listen_kind", "target_kind"), rotation(DATAGRAM, DATAGRAM))
def test_the_largest_datagram_of_the_kinds_goes_through_whole(
    make_address: MakeAddress, listen_kind: str, target_kind: str
) -> None:
    size = min(LARGEST[listen_kind], LARGEST[target_kind])
    payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    over = listen_kind.startswith("unixgram")  # a unix datagram may be larger than the limit
    with (
        DatagramTarget(make_address(target_kind)) as target,
        relay_thread(RelayConfig(make_address(listen_kind), target.address)) as relay,
        datagram_socket(relay.address) as client,
    ):
        if over:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            client.send(b"!" * (LARGEST["unixgram"] + 1))  # over the default max_datagram: dropped
        client.send(payload)
        assert client.recv(1 << 17) == payload
        assert target.wait_received(1) == [payload]
        stats = wait_stats(relay, to_client=size)
    assert stats.truncated == (1 if over else 0) and stats.to_target == stats.to_client == size


@pytest.mark.parametrize(("listen_kind", "target_kind"), rotation(DATAGRAM, DATAGRAM))
def test_datagrams_over_max_datagram_are_dropped_whole_and_counted(
    make_address: MakeAddress, listen_kind: str, target_kind: str
) -> None:
    """Both ways: a datagram one byte over the limit is neither forwarded nor cut short; the
    session goes on."""

    def answer(data: bytes, sender: Any) -> bytes:
        return b"r" * 1001 if data == b"a big reply, please" else data

    with (
        DatagramTarget(make_address(target_kind), answer) as target,
        relay_thread(RelayConfig(make_address(listen_kind), target.address, max_datagram=1000)) as relay,
        datagram_socket(relay.address) as client,
    ):
        client.send(b"k" * 1000)
        assert client.recv(1 << 17) == b"k" * 1000
        client.send(b"k" * 1001)
        client.send(b"after")
        assert client.recv(1 << 17) == b"after"
        client.send(b"a big reply, please")
        client.send(b"after the big reply")
        assert client.recv(1 << 17) == b"after the big reply"
        assert target.wait_received(4) == [
            b"k" * 1000,
            b"after",
            b"a big reply, please",
            b"after the big reply",
        ]
        truncated = wait_event(relay, "truncated", 2)
        stats = relay.relay.stats.snapshot()
    assert stats.truncated == 2 and stats.total == 1
    assert [(event["side"], event["size"]) for event in truncated] == [("client", 1001), ("target", 1001)]


@pytest.mark.parametrize(("listen_kind", "target_kind"), rotation(DATAGRAM, DATAGRAM))
def test_an_idle_datagram_session_expires_and_its_sender_gets_a_new_one(
    make_address: MakeAddress, listen_kind: str, target_kind: str
) -> None:
    with (
        DatagramTarget(make_address(target_kind), _who) as target,
        relay_thread(RelayConfig(make_address(listen_kind), target.address, idle_timeout=0.2)) as relay,
        datagram_socket(relay.address) as client,
    ):
        client.send(b"one")
        first = client.recv(1000).rpartition(b"|")
        wait_until(lambda: relay.relay.stats.expired == 1, "the session's expiry")
        client.send(b"two")
        second = client.recv(1000).rpartition(b"|")
        stats = relay.relay.stats.snapshot()
    assert (first[0], second[0]) == (b"one", b"two")
    assert first[2] != second[2]  # a new upstream socket
    assert len(target.senders()) == 2 and stats.total == 2


# ----------------------------------------------------------------------------- framed


#: message sizes through the frames (all fit a UDP datagram)
FRAMED = (0, 1, 1400, 60000)


@pytest.mark.parametrize(("listen_kind", "target_kind"), kind_pairs(STREAM, DATAGRAM))
def test_framed_streams_to_datagrams_each_client_its_own_upstream(
    make_address: MakeAddress, listen_kind: str, target_kind: str
) -> None:
    """Two clients send length-prefixed messages, then shut down their write side: each message
    reaches the target as one datagram, and each answer comes back framed to its own client."""
    with DatagramTarget(make_address(target_kind), _who) as target:
        config = RelayConfig(make_address(listen_kind), target.address, frame=True)
        with relay_thread(config) as relay, _clients(2, lambda: dial(relay.address)) as clients:
            for index, client in enumerate(clients):
                send_frames(client, _messages(index, FRAMED))
                client.shutdown(socket.SHUT_WR)
            upstreams: list[set[bytes]] = [set(), set()]
            for index, client in enumerate(clients):
                answers = [message.rpartition(b"|") for message in read_frames(client, len(FRAMED))]
                assert [data for data, _, _ in answers] == [LETTERS[index] * size for size in FRAMED]
                upstreams[index] = {upstream for _, _, upstream in answers}
            stats = wait_stats(relay, datagrams_to_client=2 * len(FRAMED))
    assert all(len(seen) == 1 for seen in upstreams) and upstreams[0] != upstreams[1]
    assert len(target.senders()) == 2
    assert stats.datagrams_to_target == stats.datagrams_to_client == 2 * len(FRAMED)
    assert stats.to_target == 2 * sum(FRAMED) and stats.truncated == stats.dropped == 0


@pytest.mark.parametrize(("listen_kind", "target_kind"), kind_pairs(DATAGRAM, STREAM))
def test_framed_datagrams_to_streams_each_sender_its_own_stream(
    make_address: MakeAddress, listen_kind: str, target_kind: str
) -> None:
    """Two senders: each gets a stream of its own to the target, which sees each datagram as one
    length-prefixed message; what the target writes back (here: the same frames) comes back to
    that sender only, one datagram per message."""

    def serve(conn: socket.socket) -> list[bytes]:
        messages = read_frames(conn, len(FRAMED))
        send_frames(conn, messages)
        return messages

    with (
        Target(make_address(target_kind), serve) as target,
        relay_thread(RelayConfig(make_address(listen_kind), target.address, frame=True)) as relay,
        _clients(2, lambda: datagram_socket(relay.address)) as clients,
    ):
        for size in FRAMED:
            for index, client in enumerate(clients):
                client.send(LETTERS[index] * size)
        for index, client in enumerate(clients):
            assert [client.recv(1 << 17) for _ in FRAMED] == [LETTERS[index] * size for size in FRAMED]
        served = target.wait_results(2)
        relay.relay.stop()
        result = relay.peer.result(STEP)
    assert sorted(served) == [_messages(0, FRAMED), _messages(1, FRAMED)]
    assert result.exit_status == 0 and result.stats.total == 2
    assert result.stats.datagrams_to_target == result.stats.datagrams_to_client == 2 * len(FRAMED)


@pytest.mark.parametrize(("listen_kind", "target_kind"), rotation(DATAGRAM, DATAGRAM))
def test_a_new_sender_past_max_sessions_evicts_the_least_active(
    make_address: MakeAddress, listen_kind: str, target_kind: str
) -> None:
    """Two sessions at most: a third sender evicts the one that has been quiet longest; an
    evicted sender that comes back gets a new upstream."""

    def upstream(sock: socket.socket, data: bytes) -> bytes:
        sock.send(data)
        answer, _, address = sock.recv(1000).rpartition(b"|")
        assert answer == data
        return address

    with (
        DatagramTarget(make_address(target_kind), _who) as target,
        relay_thread(RelayConfig(make_address(listen_kind), target.address, max_sessions=2)) as relay,
        _clients(3, lambda: datagram_socket(relay.address)) as (zero, one, two),
    ):
        first = upstream(zero, b"hello 0")
        upstream(one, b"hello 1")
        assert upstream(zero, b"again 0") == first  # 0 is now more recently active than 1
        upstream(two, b"hello 2")  # a third sender: 1 goes
        (evicted,) = wait_event(relay, "close")
        upstream(one, b"back 1")  # a new session for 1, and 0 goes
        assert upstream(two, b"again 2") != first
        stats = relay.relay.stats.snapshot()
    assert evicted["reason"] == "evicted" and evicted["id"] == 2
    assert stats.evicted == 2 and stats.total == 4 and len(target.senders()) == 4


# ----------------------------------------------------------------------------- framed limits


@pytest.mark.parametrize(("listen_kind", "target_kind"), rotation(STREAM, DATAGRAM))
def test_a_frame_over_max_datagram_breaks_only_its_stream(
    make_address: MakeAddress, listen_kind: str, target_kind: str
) -> None:
    """A length above ``max_datagram`` is refused as soon as the header is in: the stream is
    reset (a close, for a unix client), what came before it was delivered, others go on."""
    with DatagramTarget(make_address(target_kind)) as target:
        config = RelayConfig(make_address(listen_kind), target.address, frame=True, max_datagram=100)
        with relay_thread(config) as relay:
            with dial(relay.address) as client:
                send_frames(client, [b"fine"])
                assert read_frames(client, 1) == [b"fine"]
                client.sendall(HEADER.pack(101) + b"z" * 101)
                outcome, received = ending(client)
            (close,) = wait_event(relay, "close")
            with dial(relay.address) as other:
                send_frames(other, [b"still served"])
                assert read_frames(other, 1) == [b"still served"]
        assert target.wait_received(2) == [b"fine", b"still served"]
    assert outcome in expected_endings(listen_kind) and received == 0
    assert close["reason"] == "protocol-error"


@pytest.mark.parametrize(("listen_kind", "target_kind"), rotation(STREAM, DATAGRAM))
def test_an_idle_framed_stream_ends_in_order(
    make_address: MakeAddress, listen_kind: str, target_kind: str
) -> None:
    """The framed stream end's idle timeout is an orderly close (an EOF, never a reset)."""
    with DatagramTarget(make_address(target_kind)) as target:
        config = RelayConfig(make_address(listen_kind), target.address, frame=True, idle_timeout=0.3)
        with relay_thread(config) as relay, dial(relay.address) as client:
            assert ending(client) == ("eof", 0)
            (close,) = wait_event(relay, "close")
    assert close["reason"] == "idle"

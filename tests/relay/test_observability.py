"""--json events, --stats lines and summary, --trace narration, -v lines, the fd budget line."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable

from .conftest import (
    DatagramTarget,
    StartRelay,
    Target,
    datagram_socket,
    dial,
    echo,
    ping,
    read_all,
    sockaddr_of,
)


def _one_exchange(address: str, payload: bytes) -> bytes:
    with dial(address) as client:
        client.sendall(payload)
        client.shutdown(socket.SHUT_WR)
        return read_all(client)


def test_json_events_tell_the_story_of_a_connection(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with Target(make_address("tcp4"), echo) as target:
        relay = start_relay(make_address("tcp4"), target.address, "--json")
        assert _one_exchange(relay.address, b"x" * 1000) == b"x" * 1000
        relay.wait_err(r'"event": "close"')
        relay.signal()
        assert relay.finish() == 0
    lines = [line for line in relay.err.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    names = [e["event"] for e in events]
    assert names[:2] == ["limits", "listening"]
    assert names[2:] == ["accept", "connect", "eof", "eof", "close", "stopping", "summary"]
    by_name = {e["event"]: e for e in events}
    assert by_name["listening"]["address"] == relay.address
    assert by_name["accept"]["peer"].startswith("tcp://127.0.0.1:")
    assert by_name["connect"]["target"] == target.address
    assert {e["side"] for e in events if e["event"] == "eof"} == {"client", "target"}
    close = by_name["close"]
    assert close["to_target"] == close["to_client"] == 1000
    assert close["reason"] == "done"
    assert close["id"] == by_name["accept"]["id"] == by_name["connect"]["id"]
    assert by_name["summary"]["to_target"] == 1000 and by_name["summary"]["total"] == 1


def test_stats_lines_and_a_summary_at_exit(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with Target(make_address("tcp4"), echo) as target:
        relay = start_relay(make_address("tcp4"), target.address, "--stats=0.2")
        with dial(relay.address) as client:
            assert ping(client, b"z" * 5000)
            relay.wait_err(
                r"^stats: 1 open, 1 total, 0 refused, 0 failed; to target 4\.9 KiB \(.*/s\), "
                r"to client 4\.9 KiB \(.*/s\)$"
            )
        relay.signal()
        assert relay.finish() == 0
    assert re.search(
        r"^summary: 1 connections relayed in [\d.]+ s \(0 refused, 0 target failures, 0 reset, 0 cut\); "
        r"to target 4\.9 KiB, to client 4\.9 KiB$",
        relay.err,
        re.MULTILINE,
    ), relay.err


def test_without_options_only_the_listening_line_is_printed(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with Target(make_address("tcp4"), echo) as target:
        relay = start_relay(make_address("tcp4"), target.address)
        assert _one_exchange(relay.address, b"hi") == b"hi"
        relay.signal()
        assert relay.finish() == 0
    assert relay.err.splitlines() == [f"listening on {relay.address}", "stopping: no connection open"]


def test_verbose_lines(start_relay: StartRelay, make_address: Callable[[str], str]) -> None:
    with Target(make_address("unix"), echo) as target:
        relay = start_relay(make_address("tcp4"), target.address, "-v")
        assert _one_exchange(relay.address, b"hello") == b"hello"
        relay.wait_err(r"^closed #1 tcp://127\.0\.0\.1:\d+: 5 bytes to target, 5 to client in [\d.]+ s$")
    assert re.search(
        r"^fd budget: \d+ descriptors( \(.*\))?: room for \d+ relayed connections", relay.err, re.M
    )
    assert re.search(r"^accepted tcp://127\.0\.0\.1:\d+ \(#1\)$", relay.err, re.M)
    assert re.search(rf"^#1 connected to {re.escape(target.address)} in [\d.]+ ms$", relay.err, re.M)


def test_trace_narrates_the_splice_calls(start_relay: StartRelay, make_address: Callable[[str], str]) -> None:
    """Towards the unix target the relay splices; towards the TCP client it copies through a
    bulk buffer (faster into TCP, see relay/pump.py): both are narrated."""
    with Target(make_address("unix"), echo) as target:
        relay = start_relay(make_address("tcp4"), target.address, "--trace")
        assert _one_exchange(relay.address, b"traced") == b"traced"
        relay.wait_err(r"^close\(fd \d+\)$")
    err = relay.err
    for pattern in (
        r"^accept\(fd \d+\) = fd \d+ from 127\.0\.0\.1:\d+$",
        r"^connect\(fd \d+, /\S+\.sock\) = 0$",
        r"^pipe2\(O_NONBLOCK\|O_CLOEXEC\) = \[fd \d+ \(read\), fd \d+ \(write\)\]$",
        r"^splice\(fd \d+, fd \d+, \d+, SPLICE_F_MOVE\|SPLICE_F_NONBLOCK\) = 6$",
        r"^splice\(fd \d+, fd \d+, \d+, SPLICE_F_MOVE\|SPLICE_F_NONBLOCK\) = 0 \(EOF\)$",
        r"^read\(fd \d+, \d+\) = 6$",
        r"^write\(fd \d+, 6 bytes\) = 6$",
        r"^shutdown\(fd \d+, SHUT_WR\)$",
    ):
        assert re.search(pattern, err, re.MULTILINE), f"{pattern!r} not in:\n{err}"


def test_trace_narrates_the_datagram_reads(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    """While tracing, the datagram relay reads the client's datagrams and the target's replies
    through the narrated call, not the bare one it uses otherwise."""
    with DatagramTarget(make_address("udp4")) as target:
        relay = start_relay(make_address("udp4"), target.address, "--trace")
        with datagram_socket(relay.address) as client:
            client.send(b"traced")
            assert client.recv(100) == b"traced"
            client_port = client.getsockname()[1]
        relay.wait_err(r"^sendto\(fd \d+, 6 bytes, 127\.0\.0\.1:\d+\) = 6$")
    err = relay.err
    for pattern in (
        rf"^recvfrom\(fd \d+\) = 6 bytes from 127\.0\.0\.1:{client_port}$",  # the client's datagram
        rf"^recvfrom\(fd \d+\) = 6 bytes from {re.escape(target.address.split('//')[1])}$",  # the reply
    ):
        assert re.search(pattern, err, re.MULTILINE), f"{pattern!r} not in:\n{err}"


def test_trace_narrates_a_connect_in_progress(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with Target(make_address("tcp4"), echo) as target:
        relay = start_relay(make_address("tcp4"), target.address, "--trace")
        assert _one_exchange(relay.address, b"x") == b"x"
        relay.wait_err(r"^close\(fd \d+\)$")
    assert re.search(r"^connect\(fd \d+, 127\.0\.0\.1:\d+\) = -1 EINPROGRESS", relay.err, re.M)
    # then either at once (loopback) or once epoll says the socket is writable
    assert re.search(
        r"^(connect\(fd \d+, 127\.0\.0\.1:\d+\) = (0|-1 EISCONN) \(connected\)"
        r"|getsockopt\(fd \d+, SO_ERROR\) = 0)$",
        relay.err,
        re.M,
    )


def test_a_unix_target_with_a_full_backlog_is_tried_again_until_it_accepts(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    """A non-blocking connect to a unix listener whose backlog is full answers EAGAIN and starts
    nothing; no readiness event says when there is room, so the relay tries again on a timer,
    backing off, and the client gets through once the target accepts."""
    address = make_address("unix")
    _family, path = sockaddr_of(address)
    with socket.socket(socket.AF_UNIX) as listener, socket.socket(socket.AF_UNIX) as filler:
        listener.bind(path)
        listener.listen(0)  # one queued connection fills it
        listener.settimeout(10.0)
        filler.connect(path)
        relay = start_relay(make_address("tcp4"), address, "--trace")
        with dial(relay.address) as client:
            client.sendall(b"waited")
            client.shutdown(socket.SHUT_WR)
            relay.wait_err(rf"^connect\(fd \d+, {re.escape(path)}\) = -1 EAGAIN")
            queued, _ = listener.accept()  # room again: the relay's next try gets in
            queued.close()
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10.0)
                conn.sendall(read_all(conn))
            assert read_all(client) == b"waited"
            # The line was written before the bytes moved, but stderr is read by another thread.
            relay.wait_err(rf"^connect\(fd \d+, {re.escape(path)}\) = 0$")

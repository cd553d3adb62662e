"""What the relay must say without -v: denied clients, framing errors, programs that fail to
start, dropped datagrams, a one-shot relay that broke; once each, rate-limited per kind, peer
text escaped; and summaries that count what was lost."""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import pytest

from enchufe.framing import HEADER, encode
from enchufe.relay import Recorder
from enchufe.relay.events import EventSink

from .conftest import (
    ENCHUFE,
    STEP,
    DatagramTarget,
    StartRelay,
    datagram_socket,
    dial,
    final_summary,
    turned_away,
    wait_until,
)

# ----------------------------------------------------------------------------- the rate limit


class Clock:
    """Timers run by hand: what EventSink.schedule asks for, kept until ``run``."""

    def __init__(self) -> None:
        self.due: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, fn: Callable[[], None]) -> object:
        self.due.append((delay, fn))
        return None

    def run(self) -> None:
        due, self.due = self.due, []
        for _delay, fn in due:
            fn()


def test_notices_are_shown_up_to_the_burst_then_counted_in_one_line() -> None:
    events = Recorder(level=0)
    events.burst, events.window = 3, 3600.0
    clock = Clock()
    events.schedule = clock
    for n in range(10):
        events.notice("denied clients", "refused", f"refused client {n}", n=n)
    assert [f["n"] for f in events.named("refused")] == [0, 1, 2]
    assert not events.named("suppressed")
    assert len(clock.due) == 1 and 0 < clock.due[0][0] <= 3600.0  # one report, at the window's end
    clock.run()
    (suppressed,) = events.named("suppressed")
    assert suppressed == {"kind": "denied clients", "count": 7}
    message = next(m for name, m, _f in events.events if name == "suppressed")
    assert "7 more denied clients" in message
    events.flush()  # reported already: not again
    assert len(events.named("suppressed")) == 1


def test_each_kind_has_its_own_budget_and_flush_reports_what_is_held() -> None:
    events = Recorder(level=0)
    events.burst, events.window = 1, 3600.0
    for kind in ("denied clients", "framing errors"):
        for _ in range(4):
            events.notice(kind, "x", kind)
    assert [m for _n, m, _f in events.events] == ["denied clients", "framing errors"]
    events.flush()  # no schedule: the relay ending reports the counts
    assert sorted((f["kind"], f["count"]) for f in events.named("suppressed")) == [
        ("denied clients", 3),
        ("framing errors", 3),
    ]


def test_a_new_window_reports_the_last_ones_count_first() -> None:
    events = Recorder(level=0)
    events.burst, events.window = 1, 0.0  # every notice opens a new window
    events.notice("k", "x", "first")
    events.window = 3600.0
    events.notice("k", "x", "second")  # a new window (the last one ended at once)
    events.notice("k", "x", "third")  # held back
    events.window = 0.0
    events.notice("k", "x", "fourth")  # the window is judged by when it ends: still open
    events.flush()
    assert [m.split(" (")[0] for _n, m, _f in events.events] == [
        "first",
        "second",
        "enchufe: … and 2 more k in 0 s",
    ]


def test_with_v_every_notice_is_shown() -> None:
    events = Recorder(level=1)
    events.burst = 1
    for n in range(5):
        events.notice("denied clients", "refused", f"refused {n}")
    assert len(events.named("refused")) == 5


def test_an_emitter_that_cannot_write_does_not_stop_the_relay() -> None:
    def broken(*args: Any, **fields: Any) -> None:
        raise BrokenPipeError("stderr is gone")

    events = EventSink(broken, 0)
    events("error", "anything")
    events.notice("k", "x", "anything")
    assert events.lost == 2


# ----------------------------------------------------------------------------- in a relay process


def _lines(err: str, pattern: str) -> list[str]:
    return [line for line in err.splitlines() if re.search(pattern, line)]


def test_denied_clients_are_said_without_v_and_a_flood_is_summed_up(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    relay = start_relay(make_address("tcp4"), "tcp4://127.0.0.1:9", "--deny", "127.0.0.0/8")
    clients = 12
    for _ in range(clients):
        assert turned_away(relay.address) is not None
    relay.wait_err(r"^enchufe: … and \d+ more denied clients")  # at the end of the window
    relay.signal()
    assert relay.finish() == 0, relay.err
    shown = _lines(relay.err, r"^enchufe: refused tcp://127\.0\.0\.1:\d+: matches --deny 127\.0\.0\.0/8$")
    held = sum(int(m) for m in re.findall(r"… and (\d+) more denied clients", relay.err))
    assert 1 <= len(shown) <= 5 * 3  # the burst, per window (a slow machine may span three)
    assert len(shown) + held == clients, relay.err


def test_a_denied_unix_peer_with_a_forged_line_in_its_name_is_one_escaped_line(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    """The name is the peer's to choose: it reaches the log escaped, never as a line of its own."""
    relay = start_relay(make_address("unix"), "tcp4://127.0.0.1:9", "--allow-uid", "65534")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        sock.bind(b"\0x\nenchufe: FORGED all clear\x1b[2J")
        sock.settimeout(STEP)
        with pytest.raises(OSError):  # reset, or EOF then reset
            sock.connect(relay.address.removeprefix("unix://"))
            if sock.recv(1) == b"":
                raise ConnectionResetError
    relay.wait_err(r"^enchufe: refused unix:@x\\nenchufe: FORGED all clear\\x1b\[2J: uid 0")
    assert not _lines(relay.err, r"^enchufe: FORGED")
    assert "\x1b" not in relay.err


def test_a_broken_frame_is_said_without_v(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with DatagramTarget(make_address("udp4")) as target:
        relay = start_relay(make_address("tcp4"), target.address, "--frame", "--max-datagram", "100")
        with dial(relay.address) as client:
            client.sendall(HEADER.pack(101) + b"z" * 101)
            with pytest.raises(ConnectionResetError):
                while client.recv(100):
                    pass
        relay.wait_err(r"^enchufe: closed tcp://127\.0\.0\.1:\d+ #1: it broke the framing: .*101")
        # The hint names the relay's option, not the library's max_size.
        relay.wait_err(r"\(raise --max-datagram on both relays if it is\)$")
        assert "max_size" not in relay.err


def test_a_frame_too_large_for_udp_over_ipv4_is_dropped_said_and_counted(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    """65,536 bytes pass --max-datagram (64 KiB) but not UDP over IPv4 (65,507 at most)."""
    with DatagramTarget(make_address("udp4")) as target:
        relay = start_relay(make_address("tcp4"), target.address, "--frame", "--json")
        with dial(relay.address) as client:
            client.sendall(encode(b"b" * 65536))
            client.sendall(encode(b"fits"))
            wait_until(lambda: len(target.received) == 1, "the small datagram arriving")
        dropped = [e for e in relay.json_events() if e["event"] == "dropped"]
        assert len(dropped) == 1 and dropped[0]["size"] == 65536
        assert dropped[0]["error"].startswith("message too long")
        summary = final_summary(relay)
    assert [d for d, _s in target.received] == [b"fits"]
    assert summary["dropped"] == 1


def test_a_frame_too_large_for_udp_is_said_without_v(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with DatagramTarget(make_address("udp4")) as target:
        relay = start_relay(make_address("tcp4"), target.address, "--frame")
        with dial(relay.address) as client:
            client.sendall(encode(b"b" * 65536))
            relay.wait_err(
                r"^enchufe: dropped a message of 65536 bytes from tcp://127\.0\.0\.1:\d+ #1: "
                r"message too long: larger than one datagram to udp4?://127\.0\.0\.1:\d+ can be$"
            )
        assert target.received == []


def test_a_datagram_relay_summary_counts_sessions(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with DatagramTarget(make_address("udp4")) as target:
        relay = start_relay(make_address("udp4"), target.address, "--stats=60")
        with datagram_socket(relay.address) as sock:
            sock.send(b"hello")
            assert sock.recv(100) == b"hello"
        relay.signal()
        assert relay.finish() == 0, relay.err
    assert re.search(r"^summary: 1 sessions relayed in ", relay.err, re.MULTILINE), relay.err


def test_a_stdio_relay_whose_target_resets_says_what_happened() -> None:
    """exit status 1 with a line naming the reset and what to check, not a silent 1."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def reset_after_reading() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(STEP)
            conn.recv(100)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    server = threading.Thread(target=reset_after_reading)
    server.start()
    try:
        port = listener.getsockname()[1]
        done = subprocess.run(
            [*ENCHUFE, "relay", "-", f"tcp4://127.0.0.1:{port}"],
            input=b"hello",
            capture_output=True,
            timeout=STEP,
            check=False,
        )
    finally:
        server.join(STEP)
        listener.close()
    assert done.returncode == 1
    err = done.stderr.decode()
    (line,) = err.splitlines()
    assert line.startswith(
        f"enchufe: tcp4://127.0.0.1:{port} reset the connection (connection reset by peer)"
    )
    assert "5 bytes to the target" in line and "check that" in line


def test_replies_lost_with_an_evicted_session_are_counted_as_dropped(
    start_relay: StartRelay, make_address: Callable[[str], str], sock_dir: str
) -> None:
    """A unix client that sends with sendto() and does not read: its queue (10 datagrams) fills,
    the relay holds a reply, then the rest wait in the session's socket.  A second sender evicts
    the session (--max-sessions 1): whatever the client never got is in the summary as dropped."""
    target = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    target.bind(f"{sock_dir}/target.sock")
    target.settimeout(0.2)
    echoed = 0
    stop = threading.Event()

    def echo() -> None:
        nonlocal echoed
        while not stop.is_set():
            try:
                data, sender = target.recvfrom(65536)
            except OSError:
                continue  # timeout: look at stop again
            target.sendto(data, sender)
            echoed += 1  # after the send: the reply is in the session's socket by now

    server = threading.Thread(target=echo)
    server.start()
    sent = 40
    try:
        relay = start_relay(
            make_address("unixgram"), f"unixgram://{sock_dir}/target.sock", "--json", "--max-sessions", "1"
        )
        listener = relay.address.removeprefix("unixgram://")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as quiet:
            quiet.bind(b"")  # an autobound name the relay answers to
            quiet.settimeout(STEP)
            for n in range(sent):
                quiet.sendto(b"datagram %d" % n, listener)
            wait_until(lambda: echoed == sent, "every datagram echoed by the target")
            with datagram_socket(relay.address) as other:
                other.send(b"evict")
                assert other.recv(100) == b"evict"
            relay.wait_err(r'"event": "close".*"reason": "evicted"')
            quiet.setblocking(False)
            got = 0
            for _ in range(sent):
                try:
                    quiet.recv(100)
                except BlockingIOError:
                    break
                got += 1
        summary = final_summary(relay)
    finally:
        stop.set()
        server.join(STEP)
        target.close()
    assert got < sent  # the test means something: the client's queue did fill
    assert summary["evicted"] == 1
    assert summary["dropped"] == sent - got, (summary, got)


def test_a_relay_to_stdio_whose_client_resets_says_what_happened(
    make_address: Callable[[str], str],
) -> None:
    proc = subprocess.Popen(
        [*ENCHUFE, "relay", make_address("tcp4"), "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        listening = proc.stderr.readline().decode()
        assert listening.startswith("listening on "), listening
        address = listening.split()[-1]
        with dial(address) as client:
            client.sendall(b"hi")
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        _out, err = proc.communicate(timeout=STEP)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(STEP)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert proc.returncode == 1
    (line,) = err.decode().splitlines()
    assert re.match(r"enchufe: the client tcp://127\.0\.0\.1:\d+ reset the connection \(", line), line
    assert "went away before the end" in line


def test_datagram_errors_from_many_senders_are_rate_limited(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    """Each sender's session reports its target's refusal once: a flood of senders must not
    flood the log (the datagram relay used to drop all but one a second without a count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    relay = start_relay(make_address("udp4"), f"udp4://127.0.0.1:{port}")
    senders = 12
    socks = [datagram_socket(relay.address, timeout=0.3) for _ in range(senders)]
    try:
        for sock in socks:
            sock.send(b"anyone?")  # ICMP port unreachable comes back to the session's socket
        for sock in socks:
            sock.send(b"still?")  # ... and is reported at the session's next send
        relay.wait_err(r"^enchufe: … and \d+ more datagram errors")
    finally:
        for sock in socks:
            sock.close()
    relay.signal()
    assert relay.finish() == 0, relay.err
    shown = _lines(relay.err, r"^enchufe: udp4://127\.0\.0\.1:\d+ refused a datagram from ")
    held = sum(int(m) for m in re.findall(r"… and (\d+) more datagram errors", relay.err))
    assert 1 <= len(shown) <= 5 * 3
    assert len(shown) + held == senders, relay.err

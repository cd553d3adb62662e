"""``--accept-proxy`` on a datagram relay (:mod:`enchufe.relay.accepting_datagram`): a PROXY v2
header before each datagram, taken off; the session named for the client it names.

The tests play the proxy (each datagram sent behind a header made by
:func:`enchufe.proxyproto.encode_v2`), and chain two enchufe relays, the front one with
``--send-proxy v2`` (a program of ours on both sides: the header's bytes are checked against the
spec by tests/test_proxyproto.py and against HAProxy's for streams).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from enchufe.address import UnixAddress, from_sockaddr, parse
from enchufe.errors import UsageError
from enchufe.faults import FaultPlan, parse_fault
from enchufe.proxyproto import ProxyHeader, encode_v1, encode_v2
from enchufe.proxyproto import parse as parse_header
from enchufe.relay import RelayConfig
from enchufe.relay.config import check_config

from ._harness import wait_stats
from .conftest import STEP, DatagramTarget, StartRelay, datagram_socket, relay_thread

#: The client a proxy names, and the address it says that client sent to.
CLIENT = parse("udp://203.0.113.7:40000")
FRONT = parse("udp://198.51.100.1:53")


def test_the_header_is_taken_off_and_the_session_is_named_for_the_client() -> None:
    """Each datagram behind a header: the target gets the payload alone, the replies come back
    to the proxy, and the session's lines and events name the client, not the proxy."""
    with (
        DatagramTarget("udp://127.0.0.1:0", lambda data, sender: b"re:" + data) as target,
        relay_thread(RelayConfig("udp://127.0.0.1:0", target.address, accept_proxy=True)) as relay,
        datagram_socket(relay.address) as proxy,
    ):
        for index in range(3):
            proxy.send(encode_v2(CLIENT, FRONT) + b"dgram%d" % index)
            assert proxy.recv(100) == b"re:dgram%d" % index
        assert target.wait_received(3) == [b"dgram0", b"dgram1", b"dgram2"]
        stats = wait_stats(relay, datagrams_to_target=3, datagrams_to_client=3)
    assert (stats.to_target, stats.dropped) == (3 * len(b"dgram0"), 0)
    (session,) = relay.events.named("session")
    assert session["peer"] == str(CLIENT)
    (closed,) = relay.events.named("close")
    assert closed["peer"] == str(CLIENT)


def test_send_proxy_passes_the_original_client_on() -> None:
    """--accept-proxy with --send-proxy v2: the header sent on names the client the accepted
    one named (a chain keeps the original client), and the relay's address."""
    with (
        DatagramTarget("udp://127.0.0.1:0") as target,
        relay_thread(
            RelayConfig("udp://127.0.0.1:0", target.address, accept_proxy=True, send_proxy=2)
        ) as relay,
        datagram_socket(relay.address) as proxy,
    ):
        proxy.send(encode_v2(CLIENT, FRONT) + b"payload")
        (datagram,) = target.wait_received(1)
    header = parse_header(datagram)
    assert isinstance(header, ProxyHeader)
    assert (header.source, str(header.destination)) == (CLIENT, relay.address)
    assert datagram[header.consumed :] == b"payload"


@pytest.mark.parametrize(
    ("datagram", "why"),
    [
        (b"no header at all", "no PROXY protocol header"),
        (encode_v1(parse("tcp://203.0.113.7:40000"), parse("tcp://198.51.100.1:53")) + b"x", "version 1"),
        (encode_v2(parse("tcp://203.0.113.7:40000"), parse("tcp://198.51.100.1:53")) + b"x", "for a stream"),
        (encode_v2(CLIENT, FRONT)[:20], "incomplete"),
    ],
)
def test_a_datagram_without_a_valid_v2_datagram_header_is_dropped_and_said(datagram: bytes, why: str) -> None:
    with (
        DatagramTarget("udp://127.0.0.1:0") as target,
        relay_thread(RelayConfig("udp://127.0.0.1:0", target.address, accept_proxy=True)) as relay,
        datagram_socket(relay.address) as proxy,
    ):
        proxy.send(datagram)
        proxy.send(encode_v2(CLIENT, FRONT) + b"good")  # the relay serves on
        assert target.wait_received(1) == [b"good"]
        stats = wait_stats(relay, dropped=1)
    assert stats.dropped == 1
    (said,) = [message for name, message, _fields in relay.events.events if name == "refused"]
    assert said.startswith("enchufe: dropped a datagram from udp://127.0.0.1:") and why in said, said


def test_a_datagram_from_an_untrusted_peer_is_dropped_whatever_it_says() -> None:
    config = RelayConfig(
        "udp://127.0.0.1:0", "udp://127.0.0.1:9", accept_proxy=True, trusted_proxies=("10.0.0.0/8",)
    )
    with relay_thread(config) as relay, datagram_socket(relay.address) as proxy:
        proxy.send(encode_v2(CLIENT, FRONT) + b"forged")
        stats = wait_stats(relay, dropped=1)
    assert (stats.dropped, stats.total, stats.datagrams_to_target) == (1, 0, 0)
    (said,) = [message for name, message, _fields in relay.events.events if name == "refused"]
    assert "not a trusted proxy" in said


def test_a_local_header_leaves_the_session_named_for_the_proxy() -> None:
    with (
        DatagramTarget("udp://127.0.0.1:0") as target,
        relay_thread(RelayConfig("udp://127.0.0.1:0", target.address, accept_proxy=True)) as relay,
        datagram_socket(relay.address) as proxy,
    ):
        proxy.send(encode_v2(None, None, local=True) + b"health")
        assert target.wait_received(1) == [b"health"]
        own = from_sockaddr(proxy.family, socket.SOCK_DGRAM, proxy.getsockname())
    (session,) = relay.events.named("session")
    assert session["peer"] == str(own)


def test_a_sender_s_next_session_is_named_by_its_next_header() -> None:
    """The client a header named is the session's while it lasts: once the session ended (here
    evicted by another sender, --max-sessions 1), the same sender's next header names the new
    one."""
    other = parse("udp://203.0.113.8:40000")
    with DatagramTarget("udp://127.0.0.1:0") as target:
        config = RelayConfig("udp://127.0.0.1:0", target.address, accept_proxy=True, max_sessions=1)
        with (
            relay_thread(config) as relay,
            datagram_socket(relay.address) as first,
            datagram_socket(relay.address) as second,
        ):
            first.send(encode_v2(CLIENT, FRONT) + b"1")
            target.wait_received(1)
            second.send(encode_v2(other, FRONT) + b"2")  # evicts the first sender's session
            target.wait_received(2)
            first.send(encode_v2(parse("udp://203.0.113.9:40000"), FRONT) + b"3")
            target.wait_received(3)
            wait_stats(relay, total=3)
    assert [e["peer"] for e in relay.events.named("session")] == [
        str(CLIENT),
        str(other),
        "udp://203.0.113.9:40000",
    ]


def test_the_client_a_header_names_is_escaped_in_lines(sock_dir: str) -> None:
    """A UNIXGRAM client's path is the proxy's words: a newline or an escape sequence in it is
    shown escaped, never written as it is."""
    hostile = UnixAddress("/tmp/x\n\x1b[31mFAKE LINE", datagram=True)
    listen = f"unixgram:{sock_dir}/relay"
    with (
        DatagramTarget(f"unixgram:{sock_dir}/target") as target,
        relay_thread(RelayConfig(listen, target.address, accept_proxy=True)) as relay,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as proxy,
    ):
        proxy.bind(f"{sock_dir}/proxy")
        proxy.sendto(
            encode_v2(hostile, UnixAddress(f"{sock_dir}/relay", datagram=True)) + b"x", f"{sock_dir}/relay"
        )
        assert target.wait_received(1) == [b"x"]
    (session,) = relay.events.named("session")
    assert "\n" not in session["peer"] and "\x1b" not in session["peer"]
    assert session["peer"] == "unixgram:///tmp/x\\n\\x1b[31mFAKE LINE"


def test_two_relays_chained_on_the_command_line(start_relay: StartRelay) -> None:
    """relay --send-proxy v2 in front of relay --accept-proxy: the back relay's session is the
    client's, and the client's datagrams come back whole."""
    with DatagramTarget("udp://127.0.0.1:0") as target:
        back = start_relay("udp://127.0.0.1:0", target.address, "--accept-proxy", "-v")
        front = start_relay("udp://127.0.0.1:0", back.address, "--send-proxy", "v2")
        with datagram_socket(front.address) as client:
            for size in (1, 1400, 4000):
                datagram = bytes([size % 251]) * size
                client.send(datagram)
                assert client.recv(65536) == datagram
            port = client.getsockname()[1]
        back.wait_err(rf"^new session #1 for udp://127\.0\.0\.1:{port} → ")


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"target": "tcp://127.0.0.1:9", "frame": True}, "--accept-proxy on datagrams with --frame"),
        (
            {"target": "udp://127.0.0.1:9", "faults": FaultPlan((parse_fault("loss:probability=0.5"),), 0)},
            "--accept-proxy on datagrams with --fault is not built yet",
        ),
    ],
)
def test_what_is_not_built_is_refused(options: dict[str, object], words: str) -> None:
    with pytest.raises(UsageError, match=words):
        check_config(RelayConfig("udp://127.0.0.1:0", accept_proxy=True, **options))  # type: ignore[arg-type]


def test_a_session_that_could_not_open_leaves_no_client_behind(tmp_path: Path) -> None:
    """The target is not there yet: the first datagram's session cannot open.  Its client is
    forgotten with it, so the sender's next session, once the target is up, is named for the
    client its own header names (and --send-proxy passes that one on), not the earlier one."""
    front = UnixAddress(str(tmp_path / "front.sock"), datagram=True)
    target_path = tmp_path / "target.sock"
    config = RelayConfig(
        f"unixgram:{tmp_path / 'relay.sock'}", f"unixgram:{target_path}", accept_proxy=True, send_proxy=2
    )
    with relay_thread(config) as relay, datagram_socket(relay.address) as proxy:
        first = UnixAddress("/client/first", datagram=True)
        proxy.send(encode_v2(first, front) + b"lost")
        assert wait_stats(relay, failed=1).failed == 1
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as target:
            target.bind(str(target_path))
            target.settimeout(STEP)
            second = UnixAddress("/client/second", datagram=True)
            proxy.send(encode_v2(second, front) + b"kept")
            datagram = target.recv(65536)
    header = parse_header(datagram)
    assert isinstance(header, ProxyHeader), header
    assert header.source == second and datagram[header.consumed :] == b"kept"
    (session,) = relay.events.named("session")
    assert session["peer"] == str(second)


def test_an_unbound_unix_sender_is_dropped(tmp_path: Path) -> None:
    """Unix peers are trusted, but unbound ones would all share one session, named for whoever
    came first: each datagram from one is dropped and said, and no session opens."""
    with (
        DatagramTarget("udp://127.0.0.1:0") as target,
        relay_thread(
            RelayConfig(f"unixgram:{tmp_path / 'relay.sock'}", target.address, accept_proxy=True)
        ) as relay,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unbound,
    ):
        unbound.sendto(encode_v2(CLIENT, FRONT) + b"anyone", str(tmp_path / "relay.sock"))
        assert wait_stats(relay, dropped=1).dropped == 1
        (refused,) = relay.events.named("refused")
        assert "needs a name" in refused["detail"] and refused["reason"] == "proxy", refused
        assert relay.relay.stats.snapshot().total == 0

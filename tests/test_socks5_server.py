"""The SOCKS5 server's handshake (sans I/O) and its destination rules: bytes in, answers out."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enchufe._hop_socks5 import Socks5Handshake
from enchufe._socks5_server import (
    ADDRESS_TYPE_NOT_SUPPORTED,
    COMMAND_NOT_SUPPORTED,
    MAX_MESSAGE,
    SUCCEEDED,
    Socks5Server,
    Step,
    reply,
)
from enchufe._socks_rules import DestRules, parse_user, parse_users
from enchufe.errors import UsageError
from enchufe.hops import Established, Send, parse_hop

USERS = {b"alice": b"s3cret"}


def feed_split(machine: Socks5Server, data: bytes, size: int) -> tuple[bytes, Step]:
    """Feed ``data`` in pieces of ``size``; everything sent back and the last step."""
    sent = b""
    step = Step()
    for start in range(0, len(data), size):
        step = machine.feed(data[start : start + size])
        sent += step.send
        if step.request or step.refused:
            break
    return sent, step


@pytest.mark.parametrize("size", [1, 2, 7, 1000])
def test_the_client_side_and_the_server_side_agree_however_the_bytes_are_split(size: int) -> None:
    """enchufe's own client handshake (with credentials, a name) against the server, fed in
    pieces: the server asks for the name the client sent, and its reply opens the tunnel."""
    client = Socks5Handshake(parse_hop("socks5://alice:s3cret@proxy:1080"), "example.com", 443)
    server = Socks5Server(USERS)
    outgoing = client.start().data
    request = None
    for _ in range(5):
        sent, step = feed_split(server, outgoing, size)
        if step.request is not None:
            request = step.request
            sent += reply(SUCCEEDED, "127.0.0.1", 5555)
        event = client.receive(sent)
        if isinstance(event, Established):
            break
        assert isinstance(event, Send)
        outgoing = event.data
    assert request is not None and isinstance(event, Established)
    assert (request.host, request.port, request.by_name, request.user) == ("example.com", 443, True, "alice")
    assert event.bound == ("127.0.0.1", 5555)


def test_bytes_after_the_request_are_the_targets() -> None:
    machine = Socks5Server()
    step = machine.feed(b"\x05\x01\x00" + b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50" + b"GET / HTTP/1.0\r\n")
    assert step.send == b"\x05\x00"
    assert step.request is not None and step.request.host == "127.0.0.1" and not step.request.by_name
    assert step.leftover == b"GET / HTTP/1.0\r\n"


@pytest.mark.parametrize("users", [None, USERS])
def test_a_whole_greeting_is_answered_as_a_split_one(users: dict[bytes, bytes] | None) -> None:
    """The greeting most clients send, in one piece (answered at once by an open server), gets
    what the same bytes split get, and the machine goes on the same way."""
    whole, split = Socks5Server(users), Socks5Server(users)
    first = whole.feed(b"\x05\x01\x00")
    assert split.feed(b"\x05") == Step()
    assert first == split.feed(b"\x01\x00")
    assert whole.waiting_for == split.waiting_for
    request = b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"
    assert whole.feed(request) == split.feed(request)


def test_ipv6_requests_are_understood() -> None:
    address = ipaddress.IPv6Address("::1").packed
    step = Socks5Server().feed(b"\x05\x01\x00\x05\x01\x00\x04" + address + b"\x01\xbb")
    assert step.request is not None and (step.request.host, step.request.port) == ("::1", 443)
    assert step.request.hostport == "[::1]:443"


@settings(max_examples=300)
@given(raw=st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16)))
def test_an_address_request_names_its_host_as_ipaddress_writes_it(raw: bytes) -> None:
    """IPv4-mapped and -compatible IPv6 addresses included: all hex groups, as always."""
    atyp = b"\x01" if len(raw) == 4 else b"\x04"
    step = Socks5Server().feed(b"\x05\x01\x00\x05\x01\x00" + atyp + raw + b"\x00\x50")
    assert step.request is not None and not step.request.by_name
    assert step.request.host == str(ipaddress.ip_address(raw))


@pytest.mark.parametrize(
    ("host", "encoded"),
    [
        ("192.0.2.7", b"\x01\xc0\x00\x02\x07"),
        ("::1", b"\x04" + ipaddress.IPv6Address("::1").packed),
        ("fe80::1%2", b"\x04" + ipaddress.IPv6Address("fe80::1").packed),  # the scope is not sent
        ("::ffff:192.0.2.7", b"\x04" + ipaddress.IPv6Address("::ffff:192.0.2.7").packed),
        ("example.com", b"\x03\x0bexample.com"),
    ],
)
def test_a_reply_names_the_bound_address_by_its_type(host: str, encoded: bytes) -> None:
    assert reply(SUCCEEDED, host, 1080) == b"\x05\x00\x00" + encoded + b"\x04\x38"


def test_a_wrong_password_is_refused_without_showing_it() -> None:
    sent, step = feed_split(Socks5Server(USERS), b"\x05\x01\x02\x01\x05alice\x05wrong", 3)
    assert sent == b"\x05\x02\x01\x01"  # username/password chosen, then status 1 (failure)
    assert step.refused is not None and "alice" in step.refused and "wrong" not in step.refused


def test_an_unknown_user_is_refused() -> None:
    sent, step = feed_split(Socks5Server(USERS), b"\x05\x01\x02\x01\x03bob\x06s3cret", 100)
    assert sent.endswith(b"\x01\x01") and step.refused


def test_a_client_without_credentials_is_told_no_method_is_acceptable() -> None:
    step = Socks5Server(USERS).feed(b"\x05\x01\x00")
    assert step.send == b"\x05\xff" and step.refused


def test_a_client_offering_only_credentials_to_an_open_server_is_refused() -> None:
    step = Socks5Server().feed(b"\x05\x01\x02")
    assert step.send == b"\x05\xff" and step.refused


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50", COMMAND_NOT_SUPPORTED),  # BIND
        (b"\x05\x09\x00\x01\x7f\x00\x00\x01\x00\x50", COMMAND_NOT_SUPPORTED),
        (b"\x05\x01\x00\x05\x7f\x00\x00\x01\x00\x50", ADDRESS_TYPE_NOT_SUPPORTED),
    ],
)
def test_bad_commands_and_address_types_get_their_reply_codes(request_bytes: bytes, code: int) -> None:
    step = Socks5Server().feed(b"\x05\x01\x00" + request_bytes)
    assert step.send == b"\x05\x00" + reply(code) and step.refused


@pytest.mark.parametrize(
    "garbage", [b"GET / HTTP/1.1\r\n\r\n", b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00", b"\x16\x03\x01\x02\x00"]
)
def test_garbage_is_refused_with_nothing_sent(garbage: bytes) -> None:
    step = Socks5Server().feed(garbage)
    assert step.send == b"" and step.refused and step.request is None


def test_a_name_with_control_characters_is_refused_escaped() -> None:
    step = Socks5Server().feed(b"\x05\x01\x00\x05\x01\x00\x03\x08evil\nhost\x00\x50")
    assert step.refused is not None and "\n" not in step.refused and "\\n" in step.refused
    assert step.send.endswith(reply(4))


def test_the_buffer_never_holds_more_than_a_message() -> None:
    """Every message is bounded: a client that sends the largest ones in pieces never makes the
    machine hold more than MAX_MESSAGE bytes."""
    machine = Socks5Server({b"u" * 255: b"p" * 255})
    greeting = b"\x05\xff" + bytes(range(255))
    auth = b"\x01\xff" + b"u" * 255 + b"\xff" + b"p" * 255
    request = b"\x05\x01\x00\x03\xff" + b"a" * 255 + b"\x00\x50"
    for byte in greeting + auth + request:
        machine.feed(bytes([byte]))
        assert len(machine._buffer) <= MAX_MESSAGE


# ----------------------------------------------------------------------------- rules


def test_deny_rules_judge_names_and_addresses() -> None:
    rules = DestRules.parse(deny=["10.0.0.0/8", "metadata.internal", "*.corp.example:22", "[fd00::]/8:443"])
    assert rules.check_name("Metadata.Internal.", 80)[0] is not None
    assert rules.check_name("git.corp.example", 22)[0] is not None
    assert rules.check_name("git.corp.example", 443)[0] is None
    assert rules.check_address("10.1.2.3", 80) is not None
    assert rules.check_address("::ffff:10.1.2.3", 80) is not None  # mapped: judged as IPv4
    assert rules.check_address("fd00::1", 443) is not None and rules.check_address("fd00::1", 80) is None
    assert rules.check_address("192.0.2.1", 80) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::ffff:0.0.0.0", "::", "0:0::0"])
def test_an_unspecified_address_is_judged_as_the_loopback_it_reaches(host: str) -> None:
    """Linux connects 0.0.0.0 (and ::) to this host: a rule keeping clients off loopback must
    keep them off it too, and an allow-list that does not name loopback must not let it in."""
    loopback = "::1" if host.startswith(("::", "0:")) and "ffff" not in host else "127.0.0.1"
    denied = DestRules.parse(deny=["127.0.0.0/8", "::1"]).check_address(host, 80)
    assert denied is not None and f"that is {loopback}" in denied
    assert DestRules.parse(allow=["192.0.2.0/24", "2001:db8::/32"]).check_address(host, 80) is not None
    assert DestRules.parse(deny=["10.0.0.0/8", "fd00::/8"]).check_address(host, 80) is None


@pytest.mark.parametrize("host", ["64:ff9b::10.0.0.1", "64:ff9b::a00:1", "64:FF9B:0:0:0:0:a00:1"])
def test_a_nat64_address_is_judged_as_the_ipv4_address_it_reaches_too(host: str) -> None:
    """Through a NAT64 gateway 64:ff9b::10.0.0.1 is 10.0.0.1: a denied IPv4 network stays
    denied under that name, and an IPv6 rule for the prefix still matches it."""
    denied = DestRules.parse(deny=["10.0.0.0/8"]).check_address(host, 80)
    assert denied is not None and "that is 10.0.0.1" in denied
    assert DestRules.parse(deny=["64:ff9b::/96"]).check_address(host, 80) is not None
    assert DestRules.parse(allow=["10.0.0.0/8"]).check_address(host, 80) is None
    assert DestRules.parse(deny=["192.0.2.0/24"]).check_address(host, 80) is None
    outside = "64:ff9c::10.0.0.1"  # not the NAT64 prefix
    assert DestRules.parse(deny=["10.0.0.0/8"]).check_address(outside, 80) is None


def test_allow_rules_let_a_name_or_an_address_through() -> None:
    rules = DestRules.parse(allow=["*.example.com", "192.0.2.0/24:443"], deny=["192.0.2.66"])
    denied, named = rules.check_name("www.example.com", 80)
    assert denied is None and named
    assert rules.check_address("203.0.113.9", 80, name_allowed=True) is None
    assert rules.check_address("203.0.113.9", 80) is not None  # another name to that address: no
    assert rules.check_address("192.0.2.7", 443) is None
    assert rules.check_address("192.0.2.7", 80) is not None
    assert rules.check_address("192.0.2.66", 443, name_allowed=True) is not None  # deny wins


@pytest.mark.parametrize("bad", ["a b", "10.0.0.0/8:99999", "host:", "[::1", "ex/ample", "*."])
def test_bad_rules_are_refused_with_the_accepted_forms(bad: str) -> None:
    with pytest.raises(UsageError, match="--deny-dest"):
        DestRules.parse(deny=[bad])


def test_credentials_are_parsed_and_a_bad_one_never_shows_its_password() -> None:
    assert parse_user("alice:pa:ss", "--auth") == (b"alice", b"pa:ss")
    with pytest.raises(UsageError) as caught:
        parse_user("alice:" + "x" * 300, "--auth")
    assert "xxx" not in str(caught.value)
    assert parse_users(["# users", "", "bob:pw\n"], "--auth-file f") == {b"bob": b"pw"}
    with pytest.raises(UsageError, match="no USER:PASS"):
        parse_users(["# nothing"], "--auth-file f")


@settings(max_examples=500, deadline=None)
@given(
    # Well-formed beginnings, so that every state meets garbage.
    data=st.tuples(
        st.sampled_from(
            [b"", b"\x05\x01\x00", b"\x05\x01\x02\x01\x05alice\x06s3cret", b"\x05\x01\x00\x05\x01\x00"]
        ),
        st.binary(max_size=1200),
    ).map(b"".join),
    cuts=st.lists(st.integers(min_value=1, max_value=64), max_size=40),
    auth=st.booleans(),
)
def test_any_bytes_in_any_split_get_an_answer_never_an_exception(
    data: bytes, cuts: list[int], auth: bool
) -> None:
    """Whatever a client sends, however split: steps only, never an exception, the buffer
    bounded, and once a request or refusal came, the machine says nothing more."""
    machine = Socks5Server(USERS if auth else None)
    ended = False
    start = 0
    for size in [*cuts, len(data)]:
        piece, start = data[start : start + size], start + size
        step = machine.feed(piece)
        assert len(machine._buffer) <= MAX_MESSAGE
        if ended:
            assert step.refused and not step.send and step.request is None
        ended = ended or step.request is not None or step.refused is not None
        if start >= len(data):
            break

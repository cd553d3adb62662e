"""Proxy hops: the URL parser, the SOCKS5 and HTTP CONNECT handshakes (sans I/O, fed in any
split, hypothesis included), and ``connect(via=…)`` sync and asyncio against a SOCKS5 peer of
our own where a real proxy cannot show what is checked (the name sent unresolved, a reply and
the target's first bytes in one segment, a proxy that never answers, retries).  Real proxies
(microsocks, tinyproxy, dante) are in ``tests/interop/test_interop_via.py``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import enchufe
import enchufe.aio
from enchufe import trace
from enchufe._hop_socks5 import udp_unwrap, udp_wrap
from enchufe.address import parse
from enchufe.errors import AddressError, ConnectionRefused, TimedOut
from enchufe.hops import (
    Chain,
    Established,
    Handshake,
    Hop,
    HopRefused,
    NeedMore,
    Send,
    check_target,
    handshake,
    parse_hop,
)

SOCKS = parse_hop("socks5://127.0.0.1:1080")
SOCKS_AUTH = parse_hop("socks5://alice:s3cret@127.0.0.1:1080")
HTTP = parse_hop("http://127.0.0.1:3128")
HTTP_AUTH = parse_hop("http://alice:s3cret@127.0.0.1:3128")

# ----------------------------------------------------------------------------- the URL


@pytest.mark.parametrize(
    ("text", "scheme", "host", "port", "user", "password", "shown"),
    [
        ("socks5://127.0.0.1:1080", "socks5", "127.0.0.1", 1080, None, None, "socks5://127.0.0.1:1080"),
        ("SOCKS5h://proxy.lan:1080", "socks5", "proxy.lan", 1080, None, None, "socks5://proxy.lan:1080"),
        ("http://[::1]:3128/", "http", "::1", 3128, None, None, "http://[::1]:3128"),
        ("http://a%40b:p%3A%2F@h:http", "http", "h", 80, "a@b", "p:/", "http://a@b:***@h:80"),
        ("socks5://u:p@w@h:1", "socks5", "h", 1, "u", "p@w", "socks5://u:***@h:1"),
        ("http://u@h:1", "http", "h", 1, "u", "", "http://u:***@h:1"),
    ],
)
def test_proxy_urls(
    text: str, scheme: str, host: str, port: int, user: str | None, password: str | None, shown: str
) -> None:
    hop = parse_hop(text)
    assert (hop.scheme, hop.host, hop.port, hop.username, hop.password) == (
        scheme,
        host,
        port,
        user,
        password,
    )
    assert str(hop) == shown
    if password:
        assert password not in repr(hop)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("127.0.0.1:1080", "not a proxy URL"),
        ("socks4://h:1", "unknown proxy scheme"),
        ("https://u:secret@h:1", "unknown proxy scheme"),
        ("socks5://h", "missing port"),
        ("socks5://u:secret@h", "missing port"),
        ("socks5://h:0", "port 0"),
        ("socks5://h:70000", "port"),
        ("http://:3128", "missing proxy host"),
        ("http://h:1/path", "nothing may follow"),
        ("socks5://::1:1080", "in brackets"),
        ("socks5://[::1%lo]:1080", "IPv6"),
        ("socks5://bad_host!:1080", "not a valid host"),
        ("socks5://u:@h:1", "password is 1 to 255 bytes"),
        ("socks5://:secret@h:1", "empty username"),
        ("socks5://u:%ff%fesecret@h:1", "not UTF-8"),
        ("http://a%3Ab:secret@h:1", "cannot hold ':'"),
    ],
)
def test_bad_proxy_urls_say_what_is_accepted_and_never_the_password(text: str, problem: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_hop(text)
    message = str(caught.value)
    assert problem in message
    assert "secret" not in message
    assert "e.g." in message or "write" in message or "UTF-8" in message or "cannot hold" in message


@pytest.mark.parametrize(
    ("target", "hops", "problem"),
    [
        (
            "udp://127.0.0.1:53",
            [HTTP],
            "datagrams go through one socks5:// proxy .UDP ASSOCIATE., not an HTTP",
        ),
        ("udp://127.0.0.1:53", [SOCKS, SOCKS], "not a chain"),
        ("unix:@x", [SOCKS], "reaches tcp://, tls:// and udp://"),
        ("tcp4://example.com:80", [SOCKS], "picks the family itself"),
        ("tcp://[fe80::1%lo]:80", [SOCKS], "scope"),
    ],
)
def test_targets_no_tunnel_reaches_are_refused(target: str, hops: list[Hop], problem: str) -> None:
    with pytest.raises(AddressError, match=problem):
        check_target(parse(target), hops)
    assert check_target(parse("udp://localhost:53"), [SOCKS]) == parse("udp://localhost:53")


# ----------------------------------------------------------------------------- SOCKS5


def socks_reply(code: int = 0, bound: bytes = b"\x01\x7f\x00\x00\x01\x04\x38") -> bytes:
    return bytes([5, code, 0]) + bound


@pytest.mark.parametrize("host", ["evil\r\nX-Injected: 1", "a" * 300, "a b"])
def test_a_host_no_proxy_can_be_asked_for_is_refused_before_a_byte_is_made(host: str) -> None:
    # A CRLF would add headers to the CONNECT request; SOCKS5 names are at most 255 bytes.
    for hop in (HTTP, SOCKS):
        with pytest.raises(AddressError, match="is not a host name or IP address"):
            handshake(hop, host, 80)
    # An address made without parse() is checked too, before any socket (port 1: nothing there).
    target = enchufe.address.InetAddress("tcp", host, 80)
    with pytest.raises(AddressError, match="is not a host name or IP address"):
        enchufe.connect(target, via=["http://127.0.0.1:1"], timeout=1)


def test_socks5_sends_the_name_unresolved_and_keeps_what_follows_the_reply() -> None:
    machine = handshake(SOCKS, "localhost", 9000)
    assert machine.start().data == b"\x05\x01\x00"
    event = machine.receive(b"\x05\x00")
    assert isinstance(event, Send)
    assert event.data == b"\x05\x01\x00\x03\x09localhost\x23\x28"
    assert "a name, resolved by the proxy" in event.said[-1]
    assert machine.receive(socks_reply()[:6]) == NeedMore(4)
    done = machine.receive(socks_reply()[6:] + b"banner")
    assert isinstance(done, Established)
    assert done.leftover == b"banner"
    assert done.said == ("reply: succeeded, bound 127.0.0.1:1080",)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("192.0.2.7", b"\x05\x01\x00\x01\xc0\x00\x02\x07\x00\x50"),
        ("2001:db8::1", b"\x05\x01\x00\x04" + socket.inet_pton(socket.AF_INET6, "2001:db8::1") + b"\x00\x50"),
    ],
)
def test_socks5_literals_go_as_addresses(host: str, expected: bytes) -> None:
    machine = handshake(SOCKS, host, 80)
    machine.start()
    event = machine.receive(b"\x05\x00")
    assert isinstance(event, Send) and event.data == expected


def test_socks5_username_and_password() -> None:
    machine = handshake(SOCKS_AUTH, "example.com", 443)
    assert machine.start().data == b"\x05\x02\x00\x02"
    auth = machine.receive(b"\x05\x02")
    assert isinstance(auth, Send)
    assert auth.data == b"\x01\x05alice\x06s3cret"
    assert not any("s3cret" in line for line in auth.said)
    connect = machine.receive(b"\x01\x00")
    assert isinstance(connect, Send) and connect.data.startswith(b"\x05\x01\x00\x03\x0bexample.com")
    assert isinstance(machine.receive(socks_reply(bound=b"\x03\x04name\x00\x01")), Established)


@pytest.mark.parametrize(
    ("hop", "replies", "reason"),
    [
        (
            SOCKS,
            [b"\x05\x00", socks_reply(2)],
            "via socks5://127.0.0.1:1080: connection refused by the proxy's rules (SOCKS reply 2)",
        ),
        (
            SOCKS,
            [b"\x05\x00", socks_reply(5)],
            "via socks5://127.0.0.1:1080: localhost:9: connection refused by the target (SOCKS reply 5)",
        ),
        (SOCKS, [b"\x05\x00", socks_reply(0x42)], "unknown reply code (SOCKS reply 66)"),
        (SOCKS, [b"\x05\xff"], "accepts no method offered (it may want a username and password"),
        (SOCKS_AUTH, [b"\x05\xff"], "accepts neither no authentication nor username/password"),
        (SOCKS, [b"\x05\x02"], "chose method 0x02, which was not offered"),
        (
            SOCKS_AUTH,
            [b"\x05\x02", b"\x01\x01"],
            "via socks5://alice:***@127.0.0.1:1080: username/password refused by the proxy "
            "(RFC 1929 status 1)",
        ),
        (
            SOCKS,
            [b"HTTP/1.1 400 Bad Request\r\n"],
            "not a SOCKS5 proxy: its greeting began HTTP/1.1 400 Bad Request (an HTTP server?)",
        ),
        (SOCKS, [b"\x05\x00", b"\x05\x00\x00\x07"], "unknown address type 7"),
    ],
)
def test_socks5_refusals_name_the_hop_and_the_reason(hop: Hop, replies: list[bytes], reason: str) -> None:
    machine = handshake(hop, "localhost", 9)
    machine.start()
    with pytest.raises(HopRefused) as caught:
        for reply in replies:
            machine.receive(reply)
    assert reason in str(caught.value)
    assert "s3cret" not in str(caught.value)
    assert caught.value.retryable == (caught.value.code == 5)


def test_eof_during_a_handshake_names_what_was_awaited() -> None:
    machine = handshake(SOCKS, "localhost", 9)
    machine.start()
    machine.receive(b"\x05\x00")
    with pytest.raises(HopRefused, match="closed the connection before its reply to CONNECT localhost:9"):
        machine.eof()


def test_socks5_udp_associate_says_where_the_relay_is() -> None:
    chain = Chain([SOCKS_AUTH], "127.0.0.1", 40000, udp=True)
    assert chain.outgoing() == b"\x05\x02\x00\x02"
    chain.feed(b"\x05\x02")
    assert chain.outgoing() == b"\x01\x05alice\x06s3cret"
    chain.feed(b"\x01\x00")
    assert chain.outgoing() == b"\x05\x03\x00\x01\x7f\x00\x00\x01\x9c\x40"
    chain.feed(socks_reply(bound=b"\x04" + bytes(16) + b"\x9c\x41"))
    assert chain.done and chain.bound == ("::", 40001)


def test_socks5_udp_header_both_ways() -> None:
    assert udp_wrap("localhost", 53, b"query") == b"\x00\x00\x00\x03\x09localhost\x00\x35query"
    assert udp_wrap("::1", 53, b"") == b"\x00\x00\x00\x04" + bytes(15) + b"\x01\x00\x35"
    assert udp_unwrap(b"\x00\x00\x00\x01\x7f\x00\x00\x01\x00\x35answer") == ("127.0.0.1", 53, b"answer")
    assert udp_unwrap(b"\x00\x00\x01\x01\x7f\x00\x00\x01\x00\x35fragment") is None
    assert udp_unwrap(b"\x00\x00\x00\x03\x05ab") is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_udp_datagram_unwraps_or_is_dropped(data: bytes) -> None:
    unwrapped = udp_unwrap(data)
    if unwrapped is not None:
        host, port, payload = unwrapped
        assert data.endswith(payload) and 0 <= port <= 65535 and "\n" not in host


# ----------------------------------------------------------------------------- HTTP CONNECT


def test_http_connect_with_basic_credentials_and_bytes_after_the_header() -> None:
    machine = handshake(HTTP_AUTH, "::1", 443)
    request = machine.start()
    credentials = base64.b64encode(b"alice:s3cret").decode()
    head = "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n"
    assert request.data == f"{head}Proxy-Authorization: Basic {credentials}\r\n\r\n".encode()
    assert not any("s3cret" in line or credentials in line for line in request.said)
    assert machine.receive(b"HTTP/1.1 200 Connection established\r\nVia: x\r\n\r") == NeedMore(1)
    done = machine.receive(b"\nSSH-2.0-server\r\n")
    assert isinstance(done, Established)
    assert done.leftover == b"SSH-2.0-server\r\n"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (
            b"HTTP/1.0 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n",
            "via http://127.0.0.1:3128: 407 Proxy Authentication Required (give USER:PASS@ in the proxy URL)",
        ),
        (b"HTTP/1.1 403 Forbidden\x1b[31m\r\n", "403 Forbidden\\x1b[31m"),
        (b"HTTP/1.1 502 Bad Gateway\r\n", "502 Bad Gateway"),
        (b"\x05\x00", "not an HTTP proxy: it answered '\\x05\\x00'"),
        (b"HTTP/1.1 2000 OK\r\n", "bad HTTP status line"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 4000, "no end within 16384 bytes"),
    ],
)
def test_http_refusals_show_the_status_line_escaped(answer: bytes, reason: str) -> None:
    machine = handshake(HTTP, "example.com", 443)
    machine.start()
    with pytest.raises(HopRefused) as caught:
        machine.receive(answer)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)


# ----------------------------------------------------------------------------- chains, any split


def test_a_chain_fed_one_byte_at_a_time_uses_only_its_own_bytes() -> None:
    chain = Chain([SOCKS, HTTP], "localhost", 9000)
    assert chain.outgoing() == b"\x05\x01\x00"
    answers = b"\x05\x00" + socks_reply() + b"HTTP/1.1 200 OK\r\n\r\n" + b"target speaks"
    sent = []
    used_total = 0
    for index in range(len(answers)):
        if chain.done:
            break
        used = chain.feed(answers[index : index + 1])
        used_total += used
        sent.append(chain.outgoing())
    assert chain.done
    assert answers[used_total:] == b"target speaks"
    assert b"".join(sent).startswith(b"\x05\x01\x00\x01\x7f\x00\x00\x01\x0c\x38")  # CONNECT to the HTTP hop
    assert b"".join(sent).endswith(b"CONNECT localhost:9000 HTTP/1.1\r\nHost: localhost:9000\r\n\r\n")


@pytest.mark.parametrize("code", [5, 6])
def test_in_a_chain_a_refusal_of_the_next_hop_names_that_proxy_not_the_target(code: int) -> None:
    """The first hop's reply 5 is about the second proxy it was asked to reach: the line says
    so, and the refusal carries that proxy (check's status is then "proxy refused")."""
    chain = Chain([SOCKS, HTTP_AUTH], "localhost", 9000)
    chain.feed(b"\x05\x00")
    with pytest.raises(HopRefused) as refused:
        chain.feed(socks_reply(code))
    assert refused.value.next_hop == HTTP_AUTH and refused.value.target_down
    said = str(refused.value)
    assert said.startswith("via socks5://127.0.0.1:1080: http://alice:***@127.0.0.1:3128: ")
    assert "next proxy" in said and "target" not in said and "s3cret" not in said
    last = Chain([SOCKS], "localhost", 9000)  # one hop: the same reply is the target's
    last.feed(b"\x05\x00")
    with pytest.raises(HopRefused) as refused:
        last.feed(socks_reply(code))
    assert refused.value.next_hop is None and "localhost:9000: " in str(refused.value)


def fed_in_pieces(machine: Handshake, data: bytes, cuts: list[int]) -> tuple[object, int]:
    """``data`` fed to ``machine`` cut at ``cuts``, until it is established: the last event,
    and how many bytes were fed."""
    event: object = NeedMore()
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        if isinstance(event, Established) or cut < start:
            continue
        event = machine.receive(data[start:cut])
        start = cut
    return event, start


def started(hop: Hop) -> Handshake:
    machine = handshake(hop, "localhost", 9)
    machine.start()
    return machine


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([SOCKS, SOCKS_AUTH, HTTP, HTTP_AUTH]),
    st.one_of(
        st.binary(max_size=300),
        st.builds(lambda tail: b"\x05\x00\x05" + tail, st.binary(max_size=300)),
        st.builds(lambda tail: b"\x05\x02\x01\x00\x05\x00\x00" + tail, st.binary(max_size=300)),
        st.builds(lambda tail: b"HTTP/1.1 " + tail, st.binary(max_size=300)),
    ),
    st.lists(st.integers(0, 320), max_size=5),
)
def test_anything_fed_anyhow_raises_only_hop_refused(hop: Hop, data: bytes, cuts: list[int]) -> None:
    try:
        event, _fed = fed_in_pieces(started(hop), data, cuts)
    except HopRefused as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(event, NeedMore | Send | Established)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.builds(lambda ip: b"\x01" + ip.packed, st.ip_addresses(v=4)),
        st.builds(lambda ip: b"\x04" + ip.packed, st.ip_addresses(v=6)),
        st.builds(lambda name: bytes([3, len(name)]) + name, st.binary(max_size=255)),
    ),
    st.integers(0, 65535),
    st.binary(max_size=64),
    st.lists(st.integers(0, 400), max_size=6),
)
def test_a_good_socks5_reply_in_any_split_leaves_exactly_what_follows(
    bound: bytes, port: int, tail: bytes, cuts: list[int]
) -> None:
    machine = started(SOCKS)
    assert isinstance(machine.receive(b"\x05\x00"), Send)
    data = b"\x05\x00\x00" + bound + port.to_bytes(2, "big") + tail
    event, fed = fed_in_pieces(machine, data, cuts)
    assert isinstance(event, Established)
    assert event.leftover == data[len(data) - len(tail) : fed]  # the reply's bytes, no more


@settings(max_examples=300, deadline=None)
@given(
    st.integers(200, 299),
    st.lists(st.from_regex(rb"\A[A-Za-z-]{1,20}: [ -~]{0,40}\Z"), max_size=5),
    st.sampled_from([b"\r\n", b"\n"]),
    st.binary(max_size=64),
    st.lists(st.integers(0, 400), max_size=6),
)
def test_a_good_http_answer_in_any_split_leaves_exactly_what_follows(
    status: int, headers: list[bytes], end: bytes, tail: bytes, cuts: list[int]
) -> None:
    answer = b"".join(line + end for line in [b"HTTP/1.1 %d OK" % status, *headers, b""])
    event, fed = fed_in_pieces(started(HTTP), answer + tail, cuts)
    assert isinstance(event, Established)
    assert event.leftover == tail[: fed - len(answer)]


# ----------------------------------------------------------------------------- a SOCKS5 peer of ours


@dataclass
class FakeSocks:
    """A SOCKS5 proxy that is its own target: it records each CONNECT (ATYP, host, port),
    answers ``reply``, sends ``banner`` in the same write, then echoes until EOF.  ``silent``
    accepts and never answers; ``auth`` chooses username/password and records them."""

    reply: int = 0
    banner: bytes = b""
    silent: bool = False
    auth: bool = False
    requests: list[tuple[int, str, int]] = field(default_factory=list)
    credentials: list[tuple[bytes, bytes]] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"socks5://127.0.0.1:{self.port}"
        self._open: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self.peers.append(peer[0])
            self._open.append(conn)
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            if self.silent:
                conn.recv(100)
                time.sleep(10)
                return
            greeting = conn.recv(2)
            conn.recv(greeting[1])
            conn.sendall(b"\x05\x02" if self.auth else b"\x05\x00")
            if self.auth:
                user = _exactly(conn, _exactly(conn, 2)[1])
                password = _exactly(conn, _exactly(conn, 1)[0])
                self.credentials.append((user, password))
                conn.sendall(b"\x01\x00")
            head = _exactly(conn, 4)
            if head[3] == 3:
                host = _exactly(conn, _exactly(conn, 1)[0]).decode()
            else:
                size = 4 if head[3] == 1 else 16
                raw = _exactly(conn, size)
                host = socket.inet_ntop(socket.AF_INET if size == 4 else socket.AF_INET6, raw)
            port = int.from_bytes(_exactly(conn, 2), "big")
            self.requests.append((head[3], host, port))
            conn.sendall(socks_reply(self.reply) + self.banner)
            while self.reply == 0 and (data := conn.recv(65536)):
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        # close() alone would not wake the thread blocked in accept(), which keeps listening.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for conn in self._open:
            conn.close()


def _exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise OSError("EOF")
        data += chunk
    return data


@pytest.fixture
def fake() -> Iterator[FakeSocks]:
    proxy = FakeSocks(banner=b"220 hello\r\n")
    yield proxy
    proxy.close()


def test_sync_connect_sends_the_name_and_gets_the_first_bytes_after_the_reply(fake: FakeSocks) -> None:
    with enchufe.connect("tcp://localhost:2525", via=[fake.url], timeout=5) as conn:
        assert conn.recv_exactly(11) == b"220 hello\r\n"
        conn.send_all(b"ping")
        assert conn.recv_exactly(4) == b"ping"
    assert fake.requests == [(3, "localhost", 2525)]


def test_asyncio_connect_through_the_same_peer(fake: FakeSocks) -> None:
    async def main() -> bytes:
        conn = await enchufe.aio.connect("tcp://localhost:2525", via=fake.url, timeout=5)
        try:
            banner = await conn.recv_exactly(11)
            await conn.send_all(b"pong")
            return banner + await conn.recv_exactly(4)
        finally:
            await conn.aclose()

    assert asyncio.run(main()) == b"220 hello\r\npong"
    assert fake.requests == [(3, "localhost", 2525)]


def test_trace_narrates_each_step_of_the_hop(fake: FakeSocks) -> None:
    lines: list[str] = []
    trace.enable(lines.append)
    try:
        enchufe.connect("tcp://localhost:2525", via=[fake.url], timeout=5).close()
    finally:
        trace.disable()
    said = [line.partition(": ")[2] for line in lines if line.startswith(f"via {fake.url}: ")]
    assert said[0] == f"connect to the proxy at 127.0.0.1:{fake.port}"
    assert said[1:] == [
        "greeting: SOCKS5, methods offered: no authentication",
        "method chosen: no authentication",
        "CONNECT localhost:2525 (a name, resolved by the proxy)",
        "reply: succeeded, bound 127.0.0.1:1080",
    ]


@pytest.mark.parametrize("side", ["sync", "asyncio"])
def test_a_proxy_that_never_answers_times_out_naming_the_hop(side: str) -> None:
    proxy = FakeSocks(silent=True)
    start = time.monotonic()
    try:
        with pytest.raises(
            TimedOut, match=f"via {proxy.url}: the proxy did not finish its handshake in time"
        ):
            if side == "sync":
                enchufe.connect("tcp://localhost:1", via=[proxy.url], timeout=0.3)
            else:
                asyncio.run(enchufe.aio.connect("tcp://localhost:1", via=[proxy.url], timeout=0.3))
    finally:
        proxy.close()
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("side", ["sync", "asyncio"])
def test_a_proxy_that_closes_halfway_through_its_reply_is_refused_naming_the_hop(side: str) -> None:
    """Half a method reply, then the end of the stream: the drivers say so, sync and asyncio alike."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"socks5://127.0.0.1:{listener.getsockname()[1]}"

        def half_a_reply() -> None:
            conn, _peer = listener.accept()
            with conn:
                conn.settimeout(10)
                conn.recv(3)  # the greeting
                conn.sendall(b"\x05")

        server = threading.Thread(target=half_a_reply, daemon=True)
        server.start()
        with pytest.raises(HopRefused, match=f"via {url}: the proxy closed the connection before choosing"):
            if side == "sync":
                enchufe.connect("tcp://localhost:1", via=[url], timeout=5)
            else:
                asyncio.run(enchufe.aio.connect("tcp://localhost:1", via=[url], timeout=5))
        server.join(10)


@pytest.mark.parametrize(("reply", "attempts"), [(5, 3), (2, 1)])
@pytest.mark.parametrize("side", ["sync", "asyncio"])
def test_a_target_that_refused_is_retried_a_refusal_by_rules_is_not(
    side: str, reply: int, attempts: int
) -> None:
    proxy = FakeSocks(reply=reply)
    try:
        with pytest.raises(HopRefused, match=f"SOCKS reply {reply}"):
            if side == "sync":
                enchufe.connect("tcp://localhost:1", via=[proxy.url], retries=2, retry_delay=0.01, timeout=5)
            else:
                coro = enchufe.aio.connect("tcp://localhost:1", via=[proxy.url], retries=2, retry_delay=0.01)
                asyncio.run(coro)
    finally:
        proxy.close()
    assert len(proxy.requests) == attempts


def test_a_proxy_that_is_down_is_refused_naming_the_hop() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"socks5://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(ConnectionRefused, match=f"via {url}: cannot connect to tcp://127.0.0.1:"):
        enchufe.connect("tcp://localhost:1", via=[url], timeout=5)

"""The relay and the PROXY protocol, in the test process: ``send_proxy`` (the header the target
gets first, then the client's bytes, sha256-checked), ``accept_proxy`` (the client a header names
is the peer of events, rules and ``exec:`` children), chains of relays, and the clients refused
over their header (untrusted, missing, malformed, oversized, late), each alone."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import time

import pytest

from enchufe.address import InetAddress, from_sockaddr, parse
from enchufe.errors import UsageError
from enchufe.proxyproto import V2_SIGNATURE, Decoder, NeedMore, ProxyHeader, encode_v1, encode_v2
from enchufe.relay import AccessRules, RelayConfig
from enchufe.relay.config import check_config

from ._gateway import NAME, Gateway, gateway  # noqa: F401  (the fixture)
from ._harness import wait_event, wait_stats
from .conftest import (
    IO_TIMEOUT,
    STEP,
    DatagramTarget,
    Target,
    datagram_socket,
    dial,
    echo,
    exchange,
    read_all,
    relay_thread,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

CLIENT = parse("tcp://203.0.113.7:40000")
FRONT = parse("tcp://198.51.100.1:443")
#: Big enough to need many reads and splices on the way; small enough for a loaded machine.
SIZE = 2 << 20
TCP, UDP = "tcp://127.0.0.1:0", "udp://127.0.0.1:0"


def header_then_echo(conn: socket.socket) -> ProxyHeader:
    """A target behind ``--send-proxy``: read its header (failing without one), then send back
    every byte after it, to the EOF."""
    decoder = Decoder()
    result = decoder.result
    while isinstance(result, NeedMore):
        data = conn.recv(4096)
        assert data, "the connection ended before a whole PROXY header"
        result = decoder.feed(data)
    assert isinstance(result, ProxyHeader), result
    if decoder.rest:
        conn.sendall(decoder.rest)
    echo(conn)
    return result


def bound_client(address: str, source: str) -> socket.socket:
    """A TCP client of ``address`` from the loopback address ``source`` (any of 127/8)."""
    value = parse(address)
    assert isinstance(value, InetAddress)
    sock = socket.socket()
    try:
        sock.settimeout(IO_TIMEOUT)
        sock.bind((source, 0))
        sock.connect((value.host, value.port))
    except BaseException:
        sock.close()
        raise
    return sock


@pytest.mark.parametrize("version", [1, 2])
def test_send_proxy_names_the_client_then_relays_every_byte(version: int) -> None:
    with (
        Target("tcp://127.0.0.1:0", header_then_echo) as target,
        relay_thread(RelayConfig("tcp://127.0.0.1:0", target.address, send_proxy=version)) as relay,
        bound_client(relay.address, "127.0.0.5") as client,
    ):
        port = client.getsockname()[1]
        result = exchange(client, seed=version, size=SIZE)
        (header,) = target.wait_results(1)
        stats = wait_stats(relay, to_target=SIZE, to_client=SIZE)
    assert (result.received, result.received_digest) == (SIZE, result.sent_digest)
    assert header.version == version and header.command == "proxy"
    assert header.source == InetAddress("tcp", "127.0.0.5", port)
    assert header.destination is not None and str(header.destination) == relay.address
    assert stats.to_target == SIZE  # the header is the relay's, not the client's


def test_send_proxy_from_a_unix_client_says_unknown(sock_dir: str) -> None:
    with (
        Target("tcp://127.0.0.1:0", header_then_echo) as target,
        relay_thread(RelayConfig(f"unix:{sock_dir}/r.sock", target.address, send_proxy=1)) as relay,
        dial(relay.address) as client,
    ):
        client.sendall(b"ping")
        client.shutdown(socket.SHUT_WR)
        assert read_all(client) == b"ping"
        (header,) = target.wait_results(1)
    assert (header.family, header.source) == ("UNKNOWN", None)


def test_send_proxy_v2_carries_what_the_relay_agreed_with_a_tls_client(gateway: Gateway) -> None:  # noqa: F811
    listen = f"tls://127.0.0.1:0?cert={gateway.server}&client-ca={gateway.ca}&alpn=h2"
    context = ssl.create_default_context(cafile=gateway.ca)
    context.load_cert_chain(gateway.cert("alice"), gateway.key("alice"))
    context.set_alpn_protocols(["h2"])
    with (
        Target("tcp://127.0.0.1:0", header_then_echo) as target,
        relay_thread(RelayConfig(listen, target.address, send_proxy=2)) as relay,
        dial(relay.address) as raw,
        context.wrap_socket(raw, server_hostname=NAME) as client,
    ):
        port, version = client.getsockname()[1], client.version()
        client.sendall(b"over tls")
        assert client.recv(100) == b"over tls"
        client.unwrap()
        (header,) = target.wait_results(1)
    assert header.source == InetAddress("tcp", "127.0.0.1", port)
    assert header.ssl is not None and header.ssl.verified
    assert header.ssl.version == version
    assert header.ssl.cn == "alice"
    assert (header.alpn, header.authority) == (b"h2", NAME)


@pytest.mark.parametrize("version", [1, 2])
def test_accept_proxy_makes_the_named_client_the_peer_of_events_and_children(version: int) -> None:
    program = "exec:sh -c 'echo $ENCHUFE_PEER $ENCHUFE_PEER_ADDR $ENCHUFE_PEER_PORT; cat'"
    header = encode_v1(CLIENT, FRONT) if version == 1 else encode_v2(CLIENT, FRONT)
    with (
        relay_thread(RelayConfig("tcp://127.0.0.1:0", program, accept_proxy=True)) as relay,
        dial(relay.address) as client,
    ):
        proxy_port = client.getsockname()[1]
        client.sendall(header + b"payload after the header\n")  # one segment: the payload stays
        client.shutdown(socket.SHUT_WR)
        answer = read_all(client)
        (close,) = wait_event(relay, "close")
    assert answer == b"tcp://203.0.113.7:40000 203.0.113.7 40000\npayload after the header\n"
    (accept,) = relay.events.named("accept")
    assert accept["peer"] == close["peer"] == "tcp://203.0.113.7:40000"
    assert accept["proxy"] == close["proxy"] == f"tcp://127.0.0.1:{proxy_port}"
    assert close["to_target"] == len(b"payload after the header\n")


@pytest.mark.parametrize("version", [1, 2])
def test_what_comes_with_the_header_reaches_the_target_first_after_its_own_header(version: int) -> None:
    """--accept-proxy reads the header and what came with it in one call (a plain session):
    that payload goes to the target after --send-proxy's header and before the rest, whole,
    and counts as relayed."""
    header = encode_v1(CLIENT, FRONT) if version == 1 else encode_v2(CLIENT, FRONT)
    payload = hashlib.sha256(b"seed").digest() * 512  # 16 KiB: more than the first read takes
    with (
        Target(TCP, header_then_echo) as target,
        relay_thread(RelayConfig(TCP, target.address, accept_proxy=True, send_proxy=version)) as relay,
        dial(relay.address) as client,
    ):
        client.sendall(header + payload)
        client.shutdown(socket.SHUT_WR)
        answer = read_all(client)
        (sent,) = target.wait_results(1)
        (close,) = wait_event(relay, "close")
    assert hashlib.sha256(answer).digest() == hashlib.sha256(payload).digest()
    assert sent.source == CLIENT and sent.destination == FRONT
    assert close["to_target"] == close["to_client"] == len(payload)


def test_chained_relays_keep_the_original_client() -> None:
    """relay --send-proxy v2 → relay --accept-proxy --send-proxy v2 → target: the target is told
    of the first client, not of the first relay; every byte arrives."""
    with (
        Target("tcp://127.0.0.1:0", header_then_echo) as target,
        relay_thread(
            RelayConfig("tcp://127.0.0.1:0", target.address, accept_proxy=True, send_proxy=2)
        ) as inner,
        relay_thread(RelayConfig("tcp://127.0.0.1:0", inner.address, send_proxy=2)) as outer,
        bound_client(outer.address, "127.0.0.6") as client,
    ):
        port = client.getsockname()[1]
        result = exchange(client, seed=7, size=SIZE)
        (header,) = target.wait_results(1)
        (accept,) = wait_event(inner, "accept")
    assert (result.received, result.received_digest) == (SIZE, result.sent_digest)
    assert header.source == InetAddress("tcp", "127.0.0.6", port)
    assert header.destination is not None and str(header.destination) == outer.address
    assert accept["peer"] == f"tcp://127.0.0.6:{port}"


def test_rules_judge_the_client_the_header_names() -> None:
    """--deny on the real client refuses it; --allow that leaves out the proxy's own address
    still serves the clients it allows."""
    rules = AccessRules.parse(allow=("198.51.100.0/24", "203.0.113.0/24"), deny=("203.0.113.7",))
    config = RelayConfig("tcp://127.0.0.1:0", "exec:cat", rules=rules, accept_proxy=True)
    allowed = parse("tcp://198.51.100.9:5000")
    with relay_thread(config) as relay:
        with dial(relay.address) as denied:
            denied.sendall(encode_v2(CLIENT, FRONT) + b"never relayed")
            with contextlib.suppress(ConnectionResetError):
                assert read_all(denied) == b""
        with dial(relay.address) as client:
            client.sendall(encode_v1(allowed, FRONT) + b"served")
            client.shutdown(socket.SHUT_WR)
            assert read_all(client) == b"served"
        (refused,) = wait_event(relay, "refused")
        stats = wait_stats(relay, refused=1)
    assert (refused["peer"], refused["reason"]) == ("tcp://203.0.113.7:40000", "denied")
    assert refused["detail"] == "matches --deny 203.0.113.7/32"
    assert stats.to_target == len(b"served")


def test_an_untrusted_peer_is_refused_and_a_trusted_one_served() -> None:
    config = RelayConfig("tcp://127.0.0.1:0", "exec:cat", accept_proxy=True, trusted_proxies=("127.0.0.2",))
    with relay_thread(config) as relay:
        # The stranger is reset at accept: on a loaded machine the reset may come before
        # connect() has even returned.
        with (
            contextlib.suppress(ConnectionResetError, BrokenPipeError),
            bound_client(relay.address, "127.0.0.3") as stranger,
        ):
            stranger.sendall(encode_v2(CLIENT, FRONT) + b"x")
            assert read_all(stranger) == b""
        with bound_client(relay.address, "127.0.0.2") as proxy:
            proxy.sendall(encode_v2(CLIENT, FRONT) + b"trusted")
            proxy.shutdown(socket.SHUT_WR)
            assert read_all(proxy) == b"trusted"
        (refused,) = wait_event(relay, "refused")
    assert refused["reason"] == "proxy" and refused["peer"].startswith("tcp://127.0.0.3:")
    assert "not a trusted proxy" in refused["detail"]


BAD_HEADERS = {
    "garbage": (b"GET / HTTP/1.0\r\n\r\n", "no PROXY protocol header"),
    "malformed-v1": (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "not a canonical TCP4 address"),
    "oversized-v2": (V2_SIGNATURE + b"\x21\x11" + (5000).to_bytes(2, "big"), "over this server's bound"),
    "closed-early": (b"PROXY TCP4 ", "closed before its PROXY header was complete"),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_a_bad_header_closes_that_client_only(case: str) -> None:
    sent, reason = BAD_HEADERS[case]
    with relay_thread(RelayConfig("tcp://127.0.0.1:0", "exec:cat", accept_proxy=True)) as relay:
        with dial(relay.address) as bad:
            bad.sendall(sent)
            if case == "closed-early":
                bad.shutdown(socket.SHUT_WR)
            with contextlib.suppress(ConnectionResetError):
                assert read_all(bad) == b""
        (refused,) = wait_event(relay, "refused")
        with dial(relay.address) as good:
            good.sendall(encode_v1(CLIENT, FRONT) + b"next")
            good.shutdown(socket.SHUT_WR)
            assert read_all(good) == b"next"
        stats = wait_stats(relay, refused=1, open=0)
    assert refused["reason"] == "proxy" and reason in refused["detail"]
    assert stats.to_target == 4


def test_a_slow_header_is_cut_at_the_timeout_while_others_are_served() -> None:
    config = RelayConfig("tcp://127.0.0.1:0", "exec:cat", accept_proxy=True, proxy_timeout=1.0)
    with relay_thread(config) as relay, dial(relay.address) as slow:
        started = time.monotonic()
        slow.sendall(b"PROXY TCP4 203.0.113.7")
        for _ in range(3):  # served meanwhile
            with dial(relay.address) as good:
                good.sendall(encode_v2(CLIENT, FRONT) + b"go")
                good.shutdown(socket.SHUT_WR)
                assert read_all(good) == b"go"
        with contextlib.suppress(ConnectionResetError):
            assert read_all(slow) == b""
        waited = time.monotonic() - started
        (refused,) = wait_event(relay, "refused")
    assert refused["detail"] == "no complete PROXY header within 1 s (22 bytes of one came)"
    assert 0.9 <= waited < STEP


def test_ip_rules_apply_on_a_unix_listener_behind_a_proxy(sock_dir: str) -> None:
    rules = AccessRules.parse(allow=("198.51.100.0/24",))
    config = RelayConfig(f"unix:{sock_dir}/p.sock", "exec:cat", rules=rules, accept_proxy=True)
    check_config(config)  # no refusal: the header's client is an IP one
    with relay_thread(config) as relay:
        with dial(relay.address) as client:
            client.sendall(encode_v2(parse("tcp://198.51.100.4:9"), FRONT) + b"unix")
            client.shutdown(socket.SHUT_WR)
            assert read_all(client) == b"unix"
        with dial(relay.address) as denied:
            denied.sendall(encode_v2(CLIENT, FRONT) + b"unix")
            with contextlib.suppress(ConnectionResetError):  # unix: a close with unread bytes
                assert read_all(denied) == b""
        wait_until(lambda: relay.relay.stats.refused == 1, "the denied client counted")


TO_TCP, TO_UDP = "tcp://127.0.0.1:9", "udp://127.0.0.1:9"
NOT_APPLYING = [
    ({"listen": UDP, "target": TO_TCP, "frame": True, "accept_proxy": True}, "on datagrams with --frame"),
    ({"listen": "-", "target": TO_TCP, "accept_proxy": True}, "stream LISTEN"),
    ({"listen": TCP, "target": TO_UDP, "frame": True, "accept_proxy": True}, "--frame"),
    ({"listen": UDP, "target": TO_UDP, "send_proxy": 1}, "v1 is for TCP"),
    ({"listen": UDP, "target": TO_TCP, "frame": True, "send_proxy": 2}, "--frame"),
    ({"listen": TCP, "target": TO_TCP, "send_proxy": 3}, "v1 or v2"),
    ({"listen": TCP, "target": TO_TCP, "trusted_proxies": ("10.0.0.0/8",)}, "apply with --accept-proxy"),
    ({"listen": TCP, "target": TO_TCP, "accept_proxy": True, "trusted_proxies": ("x",)}, "not an IP network"),
]


@pytest.mark.parametrize(("options", "words"), NOT_APPLYING)
def test_what_does_not_apply_is_refused(options: dict[str, object], words: str) -> None:
    with pytest.raises(UsageError, match=words):
        check_config(RelayConfig(**options))  # type: ignore[arg-type]


def test_accept_proxy_before_tls_termination_and_routing(gateway: Gateway) -> None:  # noqa: F811
    """The header comes before the ClientHello: the route reads the ClientHello after it, and
    the handshake gets every byte of it (the header's are taken alone)."""
    listen = f"tls://127.0.0.1:0?cert={gateway.server}"
    context = ssl.create_default_context(cafile=gateway.ca)
    with (
        Target("tcp://127.0.0.1:0", echo) as target,
        relay_thread(
            RelayConfig(listen, "-", routes=(f"{NAME}={target.address}",), accept_proxy=True)
        ) as relay,
        dial(relay.address) as raw,
    ):
        raw.sendall(encode_v2(CLIENT, FRONT))
        with context.wrap_socket(raw, server_hostname=NAME) as client:
            client.sendall(b"routed")
            assert client.recv(100) == b"routed"
            client.unwrap()
        (accept,) = wait_event(relay, "accept")
        (route,) = wait_event(relay, "route")
    assert accept["peer"] == "tcp://203.0.113.7:40000"
    assert route["server_name"] == NAME


def header_then_digest(conn: socket.socket) -> ProxyHeader:
    """A target behind ``--send-proxy``: its header, then ``SHA256`` of every byte after it."""
    decoder = Decoder()
    while isinstance(decoder.result, NeedMore):
        data = conn.recv(4096)
        assert data, "the connection ended before a whole PROXY header"
        decoder.feed(data)
    assert isinstance(decoder.result, ProxyHeader), decoder.result
    rest = hashlib.sha256(decoder.rest)
    while data := conn.recv(65536):
        rest.update(data)
    conn.sendall(rest.hexdigest().encode())
    return decoder.result


def test_send_proxy_before_a_passthrough_route_names_the_server() -> None:
    """--route on tcp://: the header first (v2 with the ClientHello's server name as authority),
    then the ClientHello read, replayed untouched."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=NAME)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    with (
        Target(TCP, header_then_digest) as target,
        relay_thread(RelayConfig(TCP, "-", routes=(f"{NAME}={target.address}",), send_proxy=2)) as relay,
        dial(relay.address) as client,
    ):
        client.sendall(hello)
        client.shutdown(socket.SHUT_WR)
        assert read_all(client).decode() == hashlib.sha256(hello).hexdigest()
        (header,) = target.wait_results(1)
    assert header.authority == NAME and header.ssl is None


@pytest.mark.parametrize("version", [1, 2])
def test_a_header_in_pieces_is_read_as_they_come(version: int) -> None:
    header = encode_v1(CLIENT, FRONT) if version == 1 else encode_v2(CLIENT, FRONT, authority=NAME)
    with (
        relay_thread(RelayConfig(TCP, "exec:sh -c 'echo $ENCHUFE_PEER; cat'", accept_proxy=True)) as relay,
        dial(relay.address) as client,
    ):
        for start in range(0, len(header), 7):
            client.sendall(header[start : start + 7])
            time.sleep(0.02)
        client.sendall(b"after")
        client.shutdown(socket.SHUT_WR)
        assert read_all(client) == b"tcp://203.0.113.7:40000\nafter"


@pytest.mark.parametrize("kind", ["udp", "unixgram"])
def test_send_proxy_v2_puts_a_header_before_each_datagram(kind: str, sock_dir: str) -> None:
    """Datagram → datagram: every datagram to the target starts with a v2 header (UDP4 or
    UNIXGRAM, the sender, the relay's address), its payload intact after it; replies come back
    untouched."""
    listen, to = (
        (UDP, "udp://127.0.0.1:0") if kind == "udp" else (f"unixgram:{sock_dir}/r", f"unixgram:{sock_dir}/t")
    )
    with (
        DatagramTarget(to, lambda data, sender: b"re:" + data[-5:]) as target,
        relay_thread(RelayConfig(listen, target.address, send_proxy=2)) as relay,
        datagram_socket(relay.address) as client,
    ):
        sender = from_sockaddr(client.family, socket.SOCK_DGRAM, client.getsockname())
        for index in range(3):
            client.send(b"dgram%d" % index)
            assert client.recv(100) == b"re:gram%d" % index
        received = target.wait_received(3)
        stats = wait_stats(relay, datagrams_to_target=3)
    for index, datagram in enumerate(received):
        header = Decoder().feed(datagram)
        assert isinstance(header, ProxyHeader) and header.family == ("UDP4" if kind == "udp" else "UNIXGRAM")
        assert header.source == sender
        assert str(header.destination) == relay.address
        assert datagram[header.consumed :] == b"dgram%d" % index
    assert stats.to_target == 3 * len(b"dgram0")


@pytest.mark.parametrize("version", [1, 2])
def test_an_ipv6_client_named_over_ipv4_is_passed_on(version: int) -> None:
    """A v2 header naming an IPv6 client of an IPv4 front: the relay passes the client on (v1:
    TCP6 with the front IPv4-mapped, as HAProxy writes it)."""
    client6 = parse("tcp://[2001:db8::7]:40001")
    with (
        Target(TCP, header_then_echo) as target,
        relay_thread(RelayConfig(TCP, target.address, accept_proxy=True, send_proxy=version)) as relay,
        dial(relay.address) as client,
    ):
        client.sendall(encode_v2(client6, FRONT) + b"six")
        client.shutdown(socket.SHUT_WR)
        assert read_all(client) == b"six"
        (header,) = target.wait_results(1)
        (accept,) = wait_event(relay, "accept")
    assert header.family == "TCP6" and header.source == client6
    assert header.destination == FRONT
    assert accept["peer"] == "tcp://[2001:db8::7]:40001"

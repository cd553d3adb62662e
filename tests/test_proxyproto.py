"""The PROXY protocol codec (enchufe.proxyproto): HAProxy's spec examples, every split point,
refusals with their reasons, hypothesis feeding it anything (it never raises, never counts
more than its bound as header, and reads back whatever its encoders write), and the headers
HAProxy itself sends with ``send-proxy`` and ``send-proxy-v2``."""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enchufe import parse, proxyproto
from enchufe._proxytypes import Invalid
from enchufe.address import InetAddress, UnixAddress
from enchufe.proxyproto import (
    MAX_V2_LENGTH,
    V1_MAX,
    V2_SIGNATURE,
    Decoder,
    NeedMore,
    ProxyHeader,
    ProxyProtocolError,
    ProxySSL,
    Refused,
    crc32c,
    encode_v1,
    encode_v2,
)

from .haproxy import HAProxy

SPEC_V1 = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
PAYLOAD = b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"


def decode(data: bytes, **options: int) -> NeedMore | ProxyHeader | Refused:
    return Decoder(**options).feed(data)


def header_of(data: bytes) -> ProxyHeader:
    result = decode(data)
    assert isinstance(result, ProxyHeader), result
    return result


def test_the_spec_v1_example_with_its_payload_kept() -> None:
    decoder = Decoder()
    result = decoder.feed(SPEC_V1 + PAYLOAD)
    assert isinstance(result, ProxyHeader)
    assert (result.version, result.command, result.family) == (1, "proxy", "TCP4")
    assert result.source == InetAddress("tcp", "192.168.0.1", 56324)
    assert result.destination == InetAddress("tcp", "192.168.0.11", 443)
    assert result.consumed == len(SPEC_V1)
    assert decoder.rest == PAYLOAD


def test_v1_tcp6_and_the_longest_lines() -> None:
    six = header_of(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n")
    assert six.source == InetAddress("tcp", "2001:db8::1", 1)
    assert six.destination == InetAddress("tcp", "::1", 65535)
    full = ":".join(["ffff"] * 8)
    longest = f"PROXY UNKNOWN {full} {full} 65535 65535\r\n".encode()
    assert len(longest) == V1_MAX
    unknown = header_of(longest)
    assert (unknown.family, unknown.source, unknown.is_local) == ("UNKNOWN", None, True)
    assert header_of(b"PROXY UNKNOWN\r\n").consumed == 15


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"PROXY TCP4 192.168.0.01 192.168.0.11 56324 443\r\n", "not a canonical TCP4"),
        (b"PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n", "not a port"),
        (b"PROXY TCP4 192.168.0.1 192.168.0.11 65536 443\r\n", "not a port"),
        (b"PROXY TCP4 ::1 ::1 1 2\r\n", "not a canonical TCP4"),
        # what the peer sent, escaped once (a backslash shown as \\, not \\\\)
        (b"PROXY TCP4 1.2.3.\\4 ::1 1 2\r\n", "'1.2.3.\\\\4' is not a canonical TCP4"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 \\1 2\r\n", "'\\\\1' is not a port"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "not a canonical TCP6"),
        (b"PROXY TCP4 192.168.0.1  192.168.0.11 56324 443\r\n", "expected 'PROXY TCP4|TCP6"),
        (b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n", "expected"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", "byte 0x0a"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX", "byte 0x0d"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 \xd9\xa3 2\r\n", "byte 0xd9"),
        (b"PROXY " + b"A" * 120, "no CRLF in the first 107 bytes"),
        (b"GET / HTTP/1.1\r\n", "no PROXY protocol header"),
        (b"\x16\x03\x01\x02\x00", "no PROXY protocol header"),
    ],
)
def test_v1_refusals_say_why(line: bytes, reason: str) -> None:
    result = decode(line)
    assert isinstance(result, Refused), result
    assert reason in result.reason
    assert "\n" not in result.reason and "\r" not in result.reason


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", command, family, len(body)) + body


def test_v2_tcp4_tcp6_udp_unix_and_local() -> None:
    four = v2(0x21, 0x11, bytes([10, 0, 0, 1, 10, 0, 0, 2]) + struct.pack("!HH", 1234, 80))
    h = header_of(four + b"rest")
    assert (h.version, h.family, h.consumed) == (2, "TCP4", 28)
    assert (h.source, h.destination) == (
        InetAddress("tcp", "10.0.0.1", 1234),
        InetAddress("tcp", "10.0.0.2", 80),
    )
    six = v2(0x21, 0x22, ipaddress.IPv6Address("2001:db8::7").packed + bytes(16) + struct.pack("!HH", 5, 6))
    assert header_of(six).source == InetAddress("udp", "2001:db8::7", 5)
    unix = v2(0x21, 0x31, b"/run/a.sock".ljust(108, b"\0") + b"\0abstract".ljust(108, b"\0"))
    u = header_of(unix)
    assert u.source == UnixAddress("/run/a.sock") and u.destination == UnixAddress("abstract", abstract=True)
    local = header_of(v2(0x20, 0x00, b""))
    assert (local.command, local.source, local.is_local, local.consumed) == ("local", None, True, 16)
    # LOCAL must be accepted whatever addresses it carries; they are ignored
    assert header_of(four[:12] + b"\x20" + four[13:]).source is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (v2(0x11, 0x11, bytes(12)), "version 1"),
        (v2(0x22, 0x11, bytes(12)), "command 2"),
        (v2(0x21, 0x41, bytes(12)), "family/protocol byte 0x41"),
        (v2(0x21, 0x13, bytes(12)), "family/protocol byte 0x13"),
        (v2(0x21, 0x11, bytes(11)), "cannot hold TCP4 addresses"),
        (v2(0x21, 0x11, bytes(12) + b"\x01\x00\x09ab"), "runs past the end"),
        (v2(0x21, 0x11, bytes(12) + b"\x01"), "stray byte"),
        (v2(0x21, 0x11, bytes(12) + b"\x02\x00\x01\xff"), "authority TLV is not UTF-8"),
        (v2(0x21, 0x11, bytes(12) + b"\x05\x00\x81" + bytes(129)), "unique id of 129 bytes"),
        (v2(0x21, 0x11, bytes(12) + b"\x20\x00\x02ab"), "SSL TLV of 2 bytes"),
        (V2_SIGNATURE + b"\x21\x11\xff\xff", "over this server's bound"),
        (b"\r\n\r\n\x00\r\nQUIT\r", "no PROXY protocol header"),
    ],
)
def test_v2_refusals_say_why(data: bytes, reason: str) -> None:
    result = decode(data)
    assert isinstance(result, Refused), result
    assert reason in result.reason


def test_v2_oversized_is_refused_from_its_first_16_bytes() -> None:
    result = decode(V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, MAX_V2_LENGTH + 1))
    assert isinstance(result, Refused)
    assert isinstance(decode(V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 12)), NeedMore)
    assert isinstance(decode(V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 100), max_v2_length=99), Refused)


def test_tlvs_alpn_authority_unique_id_ssl_and_crc32c() -> None:
    ssl = ProxySSL(client=0x07, verify=0, version="TLSv1.3", cn="alice", cipher="TLS_AES_128_GCM_SHA256")
    data = encode_v2(
        parse("tcp://192.0.2.7:4000"),
        parse("tcp://192.0.2.1:443"),
        alpn=b"h2",
        authority="svc.example",
        unique_id=b"\x01" * 128,
        ssl=ssl,
        tlvs=[(0xE0, b"custom")],
        checksum=True,
    )
    h = header_of(data)
    assert (h.alpn, h.authority, h.unique_id) == (b"h2", "svc.example", b"\x01" * 128)
    assert h.ssl == ssl and h.ssl.verified and h.ssl.cn == "alice"
    assert (0xE0, b"custom") in h.tlvs
    # A checksum that does not match is refused; any flipped bit in the header is caught.
    for at in (0, 13, 20, len(data) - 1):
        broken = bytearray(data)
        broken[at] ^= 0x01
        assert isinstance(decode(bytes(broken)), Refused), at
    assert crc32c(b"123456789") == 0xE3069283


def test_every_split_point_gives_the_same_header_and_rest() -> None:
    for header in (
        SPEC_V1,
        encode_v2(parse("tcp://[2001:db8::1]:1"), parse("tcp://[::1]:2"), authority="a", checksum=True),
    ):
        whole = header + PAYLOAD
        for cut in range(len(whole) + 1):
            decoder = Decoder()
            first = decoder.feed(whole[:cut])
            if cut < len(header):
                assert isinstance(first, NeedMore), cut
                second = decoder.feed(whole[cut:])
            else:
                second = first
            assert isinstance(second, ProxyHeader), cut
            assert second.consumed == len(header)
            assert decoder.rest == whole[len(header) : max(cut, len(whole) if cut < len(header) else cut)]


def test_byte_by_byte_and_feeding_a_finished_decoder() -> None:
    decoder = Decoder()
    results = [decoder.feed(bytes([b])) for b in SPEC_V1]
    assert all(isinstance(r, NeedMore) for r in results[:-1]) and isinstance(results[-1], ProxyHeader)
    with pytest.raises(ProxyProtocolError, match="done"):
        decoder.feed(b"more")
    refused = Decoder()
    refused.feed(b"HELLO")
    with pytest.raises(ProxyProtocolError):
        refused.feed(b"more")


def test_encoders() -> None:
    four, other = parse("tcp://10.1.2.3:5555"), parse("tcp://10.9.9.9:80")
    assert encode_v1(four, other) == b"PROXY TCP4 10.1.2.3 10.9.9.9 5555 80\r\n"
    # an IPv4 client of an IPv6 destination: written IPv4-mapped, read back as IPv4
    mixed = header_of(encode_v1(four, parse("tcp://[::1]:80")))
    assert (mixed.family, mixed.source) == ("TCP6", four)
    assert encode_v1(parse("unix:/tmp/x"), four) == b"PROXY UNKNOWN\r\n"
    assert encode_v1(None, None) == b"PROXY UNKNOWN\r\n"
    assert header_of(encode_v2(four, other, local=True)).command == "local"
    assert header_of(encode_v2(parse("udp://10.0.0.1:53"), parse("udp://10.0.0.2:53"))).family == "UDP4"
    assert header_of(encode_v2(None, None)).family == "UNKNOWN"
    with pytest.raises(ProxyProtocolError, match="unique id"):
        encode_v2(four, other, unique_id=bytes(129))
    with pytest.raises(ProxyProtocolError, match="bound"):
        encode_v2(four, other, tlvs=[(0xE1, bytes(MAX_V2_LENGTH))])


# -- hypothesis

#: Octet and port texts, canonical or not (leading zeros, too big, empty, not digits).
_OCTETS = st.one_of(
    st.integers(0, 255).map(str), st.sampled_from(["00", "01", "007", "256", "999", "", "a", "-1"])
)
_PORTS = st.one_of(
    st.integers(0, 65535).map(str), st.sampled_from(["00", "080", "65536", "99999", "123456", "", "x1"])
)


def _part_by_part(data: bytes) -> object:
    """What the v1 parser makes of ``data`` on its general way, as parse() reports it."""
    try:
        return proxyproto._parse_v1(data)
    except Invalid as exc:
        return Refused(str(exc))


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(_OCTETS, min_size=4, max_size=4),
    st.lists(_OCTETS, min_size=4, max_size=4),
    _PORTS,
    _PORTS,
    st.sampled_from(["TCP4", "TCP6", "tcp4"]),
    st.binary(max_size=8),
)
def test_a_v1_tcp4_line_in_one_match_is_what_the_general_way_makes_of_it(
    source: list[str], destination: list[str], sport: str, dport: str, family: str, rest: bytes
) -> None:
    """parse() reads the common v1 line (IPv4) in one regular-expression match; every line,
    canonical or not, comes out as the part-by-part parser makes it: the same header, or the
    same refusal."""
    line = f"PROXY {family} {'.'.join(source)} {'.'.join(destination)} {sport} {dport}\r\n"
    data = line.encode() + rest
    assert decode(data) == _part_by_part(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(lambda tail: V2_SIGNATURE + tail, st.binary(max_size=300)),
        st.builds(lambda tail: b"PROXY " + tail, st.binary(max_size=120)),
        st.builds(
            lambda cmd, fam, body, extra: v2(cmd, fam, body) + extra,
            st.integers(0, 255),
            st.integers(0, 255),
            st.binary(max_size=260),
            st.binary(max_size=8),
        ),
    ),
    st.lists(st.integers(0, 400), max_size=4),
)
def test_anything_fed_anyhow_never_raises_nor_reads_past_the_bound(data: bytes, cuts: list[int]) -> None:
    decoder = Decoder(max_v2_length=256)
    result: object = NeedMore()
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        if not isinstance(result, NeedMore) or cut < start:
            continue
        result = decoder.feed(data[start:cut])
        start = cut
    assert isinstance(result, NeedMore | ProxyHeader | Refused)
    if isinstance(result, ProxyHeader):
        assert result.consumed <= decoder.bound
        assert result.consumed <= len(data)
        assert decoder.rest == data[result.consumed : start]
        assert decode(data[: result.consumed], max_v2_length=256) == result
    elif isinstance(result, NeedMore):
        assert len(data) < decoder.bound  # a header not complete yet is still within the bound
    else:
        assert "\n" not in result.reason


ips = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).filter(
    lambda ip: not (ip.version == 6 and ip.ipv4_mapped is not None)
)
ports = st.integers(0, 65535)
IP = ipaddress.IPv4Address | ipaddress.IPv6Address
texts = st.text(max_size=40)


@settings(max_examples=500, deadline=None)
@given(
    ips,
    ports,
    ips,
    ports,
    st.sampled_from(["tcp", "udp"]),
    st.booleans(),
    st.one_of(st.none(), st.binary(max_size=20)),
    st.one_of(st.none(), texts),
    st.one_of(st.none(), st.binary(max_size=128)),
    st.one_of(
        st.none(),
        st.builds(
            ProxySSL,
            st.integers(0, 255),
            st.integers(0, 2**32 - 1),
            st.one_of(st.none(), texts),
            st.one_of(st.none(), texts),
        ),
    ),
    st.lists(st.tuples(st.integers(0xE0, 0xEF), st.binary(max_size=30)), max_size=3),
    st.booleans(),
)
def test_encode_then_decode_gives_back_what_was_encoded(
    src_ip: IP,
    sport: int,
    dst_ip: IP,
    dport: int,
    transport: str,
    v1: bool,
    alpn: bytes | None,
    authority: str | None,
    unique_id: bytes | None,
    ssl: ProxySSL | None,
    extra: list[tuple[int, bytes]],
    checksum: bool,
) -> None:
    src = InetAddress(transport, str(src_ip), sport)
    dst = InetAddress(transport, str(dst_ip), dport)
    if v1:
        src, dst = InetAddress("tcp", src.host, sport), InetAddress("tcp", dst.host, dport)
        h = header_of(encode_v1(src, dst) + b"x")
        assert h.version == 1 and h.consumed <= V1_MAX
    else:
        data = encode_v2(
            src,
            dst,
            alpn=alpn,
            authority=authority,
            unique_id=unique_id,
            ssl=ssl,
            tlvs=extra,
            checksum=checksum,
        )
        h = header_of(data)
        assert (h.alpn, h.authority, h.unique_id, h.ssl, h.consumed) == (
            alpn,
            authority,
            unique_id,
            ssl,
            len(data),
        )
        assert all(tlv in h.tlvs for tlv in extra)
    assert (h.source, h.destination) == (src, dst)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=107).filter(lambda b: b"\0" not in b), st.booleans())
def test_unix_addresses_round_trip(name: bytes, abstract: bool) -> None:
    if abstract:
        name = name[:107]
        src = UnixAddress(name.decode("utf-8", "surrogateescape"), abstract=True)
    else:
        src = UnixAddress(name.decode("utf-8", "surrogateescape"))
    h = header_of(encode_v2(src, UnixAddress("/run/server.sock")))
    assert h.source == src and h.family == "UNIX"


# -- HAProxy


def first_bytes(listener: socket.socket, out: list[bytes]) -> None:
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(10)
        data = b""
        while not data.endswith(b"hello"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        out.append(data)


@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2"])
def test_haproxy_headers_name_the_real_client(send_proxy: str) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with HAProxy(f"127.0.0.1:{port}", send_proxy) as proxy:
            received: list[bytes] = []
            server = threading.Thread(target=first_bytes, args=(listener, received))
            server.start()
            with proxy.client("127.0.0.5") as client:
                client.sendall(b"hello")
                server.join(15)
                client_port = client.getsockname()[1]
    assert received, "HAProxy sent nothing"
    decoder = Decoder()
    h = decoder.feed(received[0])
    assert isinstance(h, ProxyHeader), h
    assert h.version == (1 if send_proxy == "send-proxy" else 2)
    assert h.source == InetAddress("tcp", "127.0.0.5", client_port)
    assert h.destination == InetAddress("tcp", "127.0.0.1", proxy.port)
    assert decoder.rest == b"hello"


def _as_users_see_it(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """What ipaddress says an address is (the IPv4 one an IPv4-mapped address carries)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


_IPV6 = st.one_of(
    st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1)),
    # the corners where C's inet_ntop and ipaddress write differently: ::/96, ::ffff:0:0/96
    st.builds(ipaddress.IPv6Address, st.integers(0, 2**32 - 1)),
    st.builds(lambda low: ipaddress.IPv6Address(0xFFFF_0000_0000 | low), st.integers(0, 2**32 - 1)),
)


@settings(max_examples=500, deadline=None)
@given(_IPV6, st.sampled_from(["compressed", "exploded", "upper"]))
def test_v1_and_v2_ipv6_addresses_read_as_ipaddress_writes_them(ip: ipaddress.IPv6Address, form: str) -> None:
    text = {"compressed": ip.compressed, "exploded": ip.exploded, "upper": ip.compressed.upper()}[form]
    line = decode(f"PROXY TCP6 {text} ::1 1 2\r\n".encode())
    assert isinstance(line, ProxyHeader) and line.source == InetAddress("tcp", _as_users_see_it(ip), 1)
    block = ip.packed + bytes(16) + struct.pack("!HH", 1, 2)
    header = decode(v2(0x21, 0x21, block))
    assert isinstance(header, ProxyHeader) and header.source == InetAddress("tcp", _as_users_see_it(ip), 1)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(["0", "00", "01", "1", "255", "256", "1000", "", "a", " 1"]), min_size=1, max_size=5
    )
)
def test_v1_ipv4_addresses_are_taken_exactly_when_ipaddress_takes_them(octets: list[str]) -> None:
    text = ".".join(octets)
    try:
        expected: str | None = str(ipaddress.IPv4Address(text))
    except ValueError:
        expected = None
    result = decode(f"PROXY TCP4 {text} 1.2.3.4 1 2\r\n".encode())
    if expected is None or " " in text:
        assert isinstance(result, Refused)
    else:
        assert isinstance(result, ProxyHeader) and result.source == InetAddress("tcp", expected, 1)

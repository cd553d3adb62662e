"""The address parser: every accepted form, every refused one, and the str() round trip."""

from __future__ import annotations

import re
import socket
import string
from collections.abc import Callable
from urllib.parse import quote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import enchufe
from enchufe import (
    AddressError,
    ExecAddress,
    InetAddress,
    Kind,
    StdioAddress,
    UnixAddress,
    parse,
)
from enchufe.address import check_tls_use, tls_server_name
from enchufe.tlsparams import TLSParams, parse_query

from .test_tlsparams import tls_params

TLS = TLSParams()
PIN = "sha256:" + "ab" * 32

# --- accepted forms ------------------------------------------------------------------------------

# (text, parsed value, canonical str)
GOOD: list[tuple[str, enchufe.Address, str]] = [
    ("tcp://127.0.0.1:9000", InetAddress("tcp", "127.0.0.1", 9000), "tcp://127.0.0.1:9000"),
    ("tcp://localhost:80", InetAddress("tcp", "localhost", 80), "tcp://localhost:80"),
    ("tcp://example.com.:443", InetAddress("tcp", "example.com.", 443), "tcp://example.com.:443"),
    ("tcp://[::1]:9000", InetAddress("tcp", "::1", 9000), "tcp://[::1]:9000"),
    ("tcp://:9000", InetAddress("tcp", "", 9000), "tcp://:9000"),
    ("tcp://[::]:0", InetAddress("tcp", "::", 0), "tcp://[::]:0"),
    ("tcp://0.0.0.0:65535", InetAddress("tcp", "0.0.0.0", 65535), "tcp://0.0.0.0:65535"),
    ("TCP://127.0.0.1:9000", InetAddress("tcp", "127.0.0.1", 9000), "tcp://127.0.0.1:9000"),
    ("tcp://127.0.0.1:00080", InetAddress("tcp", "127.0.0.1", 80), "tcp://127.0.0.1:80"),
    ("tcp4://127.0.0.1:0", InetAddress("tcp", "127.0.0.1", 0, 4), "tcp4://127.0.0.1:0"),
    ("tcp4://:8080", InetAddress("tcp", "", 8080, 4), "tcp4://:8080"),
    ("tcp4://example.com:443", InetAddress("tcp", "example.com", 443, 4), "tcp4://example.com:443"),
    ("tcp6://[::1]:9000", InetAddress("tcp", "::1", 9000, 6), "tcp6://[::1]:9000"),
    ("tcp6://[fe80::1%lo]:80", InetAddress("tcp", "fe80::1%lo", 80, 6), "tcp6://[fe80::1%lo]:80"),
    ("tcp6://:9000", InetAddress("tcp", "", 9000, 6), "tcp6://:9000"),
    ("tcp6://ip6-localhost:22", InetAddress("tcp", "ip6-localhost", 22, 6), "tcp6://ip6-localhost:22"),
    ("udp://127.0.0.1:53", InetAddress("udp", "127.0.0.1", 53), "udp://127.0.0.1:53"),
    ("udp://[::1]:53", InetAddress("udp", "::1", 53), "udp://[::1]:53"),
    ("udp://:5353", InetAddress("udp", "", 5353), "udp://:5353"),
    ("udp4://127.0.0.1:0", InetAddress("udp", "127.0.0.1", 0, 4), "udp4://127.0.0.1:0"),
    ("udp6://[::1]:0", InetAddress("udp", "::1", 0, 6), "udp6://[::1]:0"),
    ("unix:///tmp/app.sock", UnixAddress("/tmp/app.sock"), "unix:///tmp/app.sock"),
    ("unix:/tmp/app.sock", UnixAddress("/tmp/app.sock"), "unix:///tmp/app.sock"),
    ("unix:rel/app.sock", UnixAddress("rel/app.sock"), "unix:rel/app.sock"),
    ("unix:app.sock", UnixAddress("app.sock"), "unix:app.sock"),
    ("unix:@name", UnixAddress("name", abstract=True), "unix:@name"),
    (
        "unix:@with space/and:colon",
        UnixAddress("with space/and:colon", abstract=True),
        "unix:@with space/and:colon",
    ),
    ("unixgram:///tmp/g.sock", UnixAddress("/tmp/g.sock", datagram=True), "unixgram:///tmp/g.sock"),
    ("unixgram:rel/g.sock", UnixAddress("rel/g.sock", datagram=True), "unixgram:rel/g.sock"),
    ("unixgram:@g", UnixAddress("g", abstract=True, datagram=True), "unixgram:@g"),
    # The limits: 107 bytes of path or name fit in sun_path.
    ("unix:///" + "a" * 106, UnixAddress("/" + "a" * 106), "unix:///" + "a" * 106),
    ("unix:@" + "a" * 107, UnixAddress("a" * 107, abstract=True), "unix:@" + "a" * 107),
    ("-", StdioAddress(), "-"),
    ("stdio:", StdioAddress(), "-"),
    ("exec:tr a-z A-Z", ExecAddress(("tr", "a-z", "A-Z")), "exec:tr a-z A-Z"),
    ("exec:sh -c 'echo hi'", ExecAddress(("sh", "-c", "echo hi")), "exec:sh -c 'echo hi'"),
    ("exec:cat", ExecAddress(("cat",)), "exec:cat"),
    # Service names, per transport, kept as the number they stand for.
    ("tcp://example.com:http", InetAddress("tcp", "example.com", 80), "tcp://example.com:80"),
    ("tcp://127.0.0.1:HTTPS", InetAddress("tcp", "127.0.0.1", 443), "tcp://127.0.0.1:443"),
    ("tcp6://[::1]:ssh", InetAddress("tcp", "::1", 22, 6), "tcp6://[::1]:22"),
    ("udp://127.0.0.1:domain", InetAddress("udp", "127.0.0.1", 53), "udp://127.0.0.1:53"),
    ("udp4://:ntp", InetAddress("udp", "", 123, 4), "udp4://:123"),
    # Names that merely contain digits or hex-looking labels are names.
    ("tcp://a.0x1:80", InetAddress("tcp", "a.0x1", 80), "tcp://a.0x1:80"),
    ("tcp://1password.com:443", InetAddress("tcp", "1password.com", 443), "tcp://1password.com:443"),
    # TLS: the socket of the plain form, the settings in .tls, the canonical query after "?".
    ("tls://example.com:https", InetAddress("tcp", "example.com", 443, None, TLS), "tls://example.com:443"),
    ("tls://127.0.0.1:443?", InetAddress("tcp", "127.0.0.1", 443, None, TLS), "tls://127.0.0.1:443"),
    (
        "tls://127.0.0.1:8443?alpn=h2,http/1.1&ca=/etc/ca%26x.pem",
        InetAddress("tcp", "127.0.0.1", 8443, None, TLSParams(ca="/etc/ca&x.pem", alpn=("h2", "http/1.1"))),
        "tls://127.0.0.1:8443?ca=/etc/ca%26x.pem&alpn=h2,http/1.1",
    ),
    (
        "TLS4://:443?cert=auto",
        InetAddress("tcp", "", 443, 4, TLSParams(cert_auto=True)),
        "tls4://:443?cert=auto",
    ),
    (
        "tls6://[::1]:443?sni=example.com",
        InetAddress("tcp", "::1", 443, 6, TLSParams(sni="example.com")),
        "tls6://[::1]:443?sni=example.com",
    ),
    ("tls://[fe80::1%lo]:443", InetAddress("tcp", "fe80::1%lo", 443, None, TLS), "tls://[fe80::1%lo]:443"),
    (
        "tls+unix:///run/app.sock?sni=app.example",
        UnixAddress("/run/app.sock", tls=TLSParams(sni="app.example")),
        "tls+unix:///run/app.sock?sni=app.example",
    ),
    ("tls+unix:/run/app.sock", UnixAddress("/run/app.sock", tls=TLS), "tls+unix:///run/app.sock"),
    ("tls+unix:rel/app.sock", UnixAddress("rel/app.sock", tls=TLS), "tls+unix:rel/app.sock"),
    (
        "tls+unix:@name?insecure",
        UnixAddress("name", True, tls=TLSParams(insecure=True)),
        "tls+unix:@name?insecure",
    ),
    # tls+unix: names are percent-decoded, so that "?" and "%" can be part of them.
    ("tls+unix:rel/a%3Fb.sock", UnixAddress("rel/a?b.sock", tls=TLS), "tls+unix:rel/a%3Fb.sock"),
    ("tls+unix:/a%25b%41", UnixAddress("/a%bA", tls=TLS), "tls+unix:///a%25bA"),
    ("tls+unix:%40rel", UnixAddress("@rel", tls=TLS), "tls+unix:%40rel"),
    ("tls+unix:@a%e2%82%ac", UnixAddress("a€", True, tls=TLS), "tls+unix:@a€"),
    ("tls+unix:@a%FFb", UnixAddress("a\udcffb", True, tls=TLS), "tls+unix:@a%FFb"),  # not UTF-8
    ("tls+unix:@" + "a" * 105 + "%61%61", UnixAddress("a" * 107, True, tls=TLS), "tls+unix:@" + "a" * 107),
    # A "?" in a plain unix name that is no TLS query is part of the name, as it always was.
    ("unix:///tmp/a?b", UnixAddress("/tmp/a?b"), "unix:///tmp/a?b"),
    ("unixgram:@a?b=1", UnixAddress("a?b=1", abstract=True, datagram=True), "unixgram:@a?b=1"),
    ("unix:@a%3F", UnixAddress("a%3F", abstract=True), "unix:@a%3F"),
]


@pytest.mark.parametrize(("text", "value", "canonical"), GOOD, ids=[g[0][:40] for g in GOOD])
def test_good_forms_parse_to_their_value(text: str, value: enchufe.Address, canonical: str) -> None:
    parsed = parse(text)
    assert parsed == value
    assert str(parsed) == canonical
    assert parse(canonical) == value


@pytest.mark.parametrize(
    ("text", "kind", "family", "stream"),
    [
        ("tcp://127.0.0.1:1", Kind.TCP4, 4, True),
        ("tcp://[::1]:1", Kind.TCP6, 6, True),
        ("tcp://localhost:1", None, None, True),  # a name: the family is known at open time
        ("tcp4://localhost:1", Kind.TCP4, 4, True),
        ("tcp6://:1", Kind.TCP6, 6, True),
        ("udp://127.0.0.1:1", Kind.UDP4, 4, False),
        ("udp6://[::1]:1", Kind.UDP6, 6, False),
        ("unix:@x", Kind.UNIX, None, True),
        ("unixgram:@x", Kind.UNIXGRAM, None, False),
        ("tls://127.0.0.1:1", Kind.TCP4, 4, True),
        ("tls://localhost:1", None, None, True),
        ("tls6://:1?cert=auto", Kind.TCP6, 6, True),
        ("tls+unix:@x", Kind.UNIX, None, True),
    ],
)
def test_kind_family_and_shape(text: str, kind: Kind | None, family: int | None, stream: bool) -> None:
    address = parse(text)
    assert isinstance(address, InetAddress | UnixAddress)
    assert address.kind == kind
    assert address.family == family
    assert address.is_stream is stream
    if kind is not None:
        assert kind.is_stream is stream


@pytest.mark.parametrize(
    ("text", "scheme", "is_tls"),
    [
        ("tcp://127.0.0.1:1", "tcp", False),
        ("tls://127.0.0.1:1", "tls", True),
        ("tls4://127.0.0.1:1", "tls4", True),
        ("tls6://[::1]:1", "tls6", True),
        ("udp6://[::1]:1", "udp6", False),
        ("unix:@x", "unix", False),
        ("unixgram:@x", "unixgram", False),
        ("tls+unix:@x?sni=a.example", "tls+unix", True),
        ("-", None, False),
        ("exec:cat", None, False),
    ],
)
def test_scheme_and_is_tls(text: str, scheme: str | None, is_tls: bool) -> None:
    address = parse(text)
    assert address.is_tls is is_tls
    assert getattr(address, "scheme", None) == scheme


def test_the_tls_field_defaults_to_none_and_keeps_old_constructor_calls() -> None:
    assert InetAddress("tcp", "127.0.0.1", 1, 4).tls is None
    assert UnixAddress("x", True, False).tls is None
    assert parse("tls://127.0.0.1:1") != parse("tcp://127.0.0.1:1")
    assert hash(parse("tls://a:1?alpn=h2")) == hash(parse("tls://a:1?alpn=h2"))


def test_unix_sockaddr_and_path() -> None:
    path = parse("unix:///tmp/x.sock")
    assert isinstance(path, UnixAddress)
    assert path.sockaddr == "/tmp/x.sock"
    assert path.path == "/tmp/x.sock"
    abstract = parse("unixgram:@x")
    assert isinstance(abstract, UnixAddress)
    assert abstract.sockaddr == b"\0x"
    assert abstract.path is None
    assert abstract.kind.type == socket.SOCK_DGRAM


def test_wildcard_flag() -> None:
    wildcard = parse("tcp://:1")
    named = parse("tcp://127.0.0.1:1")
    assert isinstance(wildcard, InetAddress)
    assert isinstance(named, InetAddress)
    assert wildcard.is_wildcard
    assert not named.is_wildcard


# --- refused forms -------------------------------------------------------------------------------

_SCHEMES = r"tcp|tcp4|tcp6|udp|udp4|udp6|unix|unixgram|tls|tls4|tls6|tls\+unix|stdio|exec"
_FORM = re.compile(rf"(?<![\w/])(?:(?:{_SCHEMES}):\S*|-(?=\s|$))")


def accepted_forms(message: str) -> list[str]:
    """The example addresses a message shows that do parse (quoted input is left out)."""
    without_input = re.sub(r"^(['\"]).*?\1: ", "", message)
    found = []
    for token in _FORM.findall(without_input):
        token = token.rstrip(",;.)")
        try:
            parse(token)
        except AddressError:
            continue
        found.append(token)
    return found


# (text, a phrase the message must contain)
BAD: list[tuple[str, str]] = [
    ("", "missing scheme"),
    ("127.0.0.1:9000", "unknown scheme"),
    ("ftp://example.com:21", "unknown scheme 'ftp'"),
    ("http://127.0.0.1:80", "unknown scheme"),
    ("://127.0.0.1:80", "missing scheme"),
    ("tcp:127.0.0.1:80", "start with tcp://"),
    ("tcp://127.0.0.1", "missing port"),
    ("tcp://127.0.0.1:", "missing port"),
    ("udp6://[::1]", "missing port after ']'"),
    ("tcp://127.0.0.1:65536", "out of range"),
    ("tcp://127.0.0.1:99999999", "out of range"),
    ("tcp://127.0.0.1:nosuchservice", "unknown tcp service"),
    ("udp://127.0.0.1:http", "a tcp service, not udp"),
    ("tcp://127.0.0.1:ht_tp", "not a number from 0 to 65535 or a service name"),
    ("tcp://1.2.3:80", "some tools would read it as 1.2.0.3"),
    ("tcp://2130706433:80", "some tools would read it as 127.0.0.1"),
    ("udp://0x7f.1:53", "some tools would read it as 127.0.0.1"),
    ("tcp4://010.0.0.1:80", "some tools would read it as 8.0.0.1"),
    ("tcp://127.000.000.001:80", "not a dotted-quad IPv4 address"),
    ("tcp://1.2.3.4.5:80", "neither a host name nor a dotted-quad"),
    ("tcp://1.2.3.4.:80", "neither a host name nor a dotted-quad"),
    ("tcp://08:80", "neither a host name nor a dotted-quad"),
    ("127.0.0.1:80", "write tcp://127.0.0.1:80"),
    ("[::1]:80", "write tcp://[::1]:80"),
    ("localhost:8080", "write tcp://localhost:8080"),
    ("http://example.com:80", "write tcp://example.com:80"),
    ("tcp://127.0.0.1:-1", "not a number"),
    ("tcp://127.0.0.1: 80", "not a number"),
    ("tcp://127.0.0.1:٨٠", "not a number"),  # Arabic-Indic digits are digits, not a port
    ("tcp://::1:9000", "must be in brackets"),
    ("udp://fe80::1:53", "must be in brackets"),
    ("tcp://[::1:9000", "missing ']'"),
    ("tcp://[127.0.0.1]:80", "not an IPv6 address"),
    ("tcp://[]:80", "not an IPv6 address"),
    ("tcp://bad host:80", "not a valid host name"),
    ("tcp://-bad:80", "not a valid host name"),
    ("tcp4://[::1]:80", "tcp4 needs an IPv4 host"),
    ("udp4://[::1]:53", "udp4 needs an IPv4 host"),
    ("tcp6://127.0.0.1:80", "tcp6 needs an IPv6 host"),
    ("udp6://127.0.0.1:53", "udp6 needs an IPv6 host"),
    ("tcp://127.0.0.1:80/", "nothing may follow the port"),
    ("tcp://127.0.0.1:80/path", "nothing may follow the port"),
    ("tcp://127.0.0.1:80?x=1", "nothing may follow the port"),
    ("unix:///" + "a" * 107, "socket path is 108 bytes"),
    ("unix:" + "a" * 108, "socket path is 108 bytes"),
    ("unixgram:///tmp/a" + "é" * 51, "socket path is 108 bytes"),  # bytes, not characters
    ("unix:@" + "a" * 108, "abstract name is 108 bytes"),
    ("unixgram:@" + "ñ" * 54, "abstract name is 108 bytes"),
    ("tcp://127.0.0.1:80\0", "NUL bytes"),
    ("unix:///tmp/a\0b.sock", "NUL bytes"),
    ("unix:@a\0b", "NUL bytes"),
    ("unix:", "missing socket path"),
    ("unixgram:", "missing socket path"),
    ("unix:@", "empty abstract name"),
    ("unix://relative.sock", "absolute path"),
    ("unix://", "absolute path"),
    ("unixgram://rel/x.sock", "absolute path"),
    ("exec:", "missing program"),
    ("exec:   ", "missing program"),
    ("exec:'unterminated", "cannot split"),
    ("stdio:x", "stdio takes nothing"),
    # TLS goes with a TLS scheme, and only over streams.
    ("tcp://127.0.0.1:80?ca=ca.pem", "TLS parameters need a TLS scheme: write tls://127.0.0.1:80?ca=ca.pem"),
    ("tcp6://[::1]:80?insecure", "TLS parameters need a TLS scheme: write tls6://[::1]:80?insecure"),
    ("unix:///tmp/a.sock?sni=a.example", "need a TLS scheme: write tls+unix:///tmp/a.sock?sni=a.example"),
    ("unix:@a?ca=", "TLS parameters need a TLS scheme: write tls+unix:///run/app.sock"),
    ("udp://127.0.0.1:53?ca=ca.pem", "no TLS over datagrams (DTLS is not supported)"),
    ("udp6://[::1]:53?x=1", "no TLS over datagrams"),
    ("unixgram:@g?insecure", "no TLS over datagrams"),
    ("unixgram:///tmp/g?sni=a&alpn=x", "no TLS over datagrams"),
    ("tls+unixgram:@g", "no TLS over datagrams"),
    ("dtls://127.0.0.1:443", "no TLS over datagrams"),
    ("DTLS+unix:@x", "no TLS over datagrams"),
    ("https://example.com:443", "unknown scheme 'https'; for a TLS address write tls://example.com:443"),
    ("tls://127.0.0.1", "missing port"),
    ("tls://127.0.0.1:ntp", "a udp service, not tcp"),
    ("tls://::1:443", "must be in brackets"),
    ("tls4://[::1]:443", "tls4 needs an IPv4 host"),
    ("tls6://127.0.0.1:443", "tls6 needs an IPv6 host"),
    ("tls://127.0.0.1:443/x?sni=a", "nothing may follow the port"),
    ("tls://1.2.3:443", "some tools would read it as 1.2.0.3"),
    ("tls+unix:", "missing socket path"),
    ("tls+unix:?sni=a", "missing socket path"),
    ("tls+unix:@?insecure", "empty abstract name"),
    ("tls+unix://rel.sock", "absolute path"),
    ("tls+unix:@a%zz", "must start an escape like %3F"),
    ("tls+unix:@a%", "must start an escape"),
    ("tls+unix:/a%00b", "NUL byte"),
    ("tls+unix:@" + "a" * 106 + "%41%41", "abstract name is 108 bytes"),  # counted decoded
]


@pytest.mark.parametrize(("text", "phrase"), BAD, ids=[repr(b[0][:30]) for b in BAD])
def test_bad_forms_are_refused_with_one_line_naming_the_problem(text: str, phrase: str) -> None:
    with pytest.raises(AddressError) as info:
        parse(text)
    message = str(info.value)
    assert phrase in message
    assert message.splitlines() == [message], "the message must be one line"
    assert accepted_forms(message), f"no accepted form shown in {message!r}"


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("tls://127.0.0.1:443?bogus=1", "unknown TLS parameter 'bogus'; accepted TLS parameters: ca, sni"),
        ("tls+unix:@x?ca", "TLS parameter ca needs a value: ca=FILE"),
        ("tls://h:443?ca=a&ca=b", "given twice"),
        ("tls6://[::1]:443?insecure&pin=" + PIN, "insecure turns verification off"),
        ("tls://h:443?sni=10.0.0.1", "cannot be an IP address"),
    ],
)
def test_tls_parameter_refusals_name_the_address_and_the_parameter(text: str, phrase: str) -> None:
    with pytest.raises(AddressError) as info:
        parse(text)
    message = str(info.value)
    assert message.startswith(repr(text) + ": ")
    assert phrase in message
    assert message.splitlines() == [message]


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("tls://example.com:443", "example.com"),
        ("tls://example.com.:443", "example.com"),  # SNI has no trailing dot (RFC 6066)
        ("tls://127.0.0.1:443", "127.0.0.1"),
        ("tls6://[fe80::1%lo]:443", "fe80::1"),  # no certificate names a scope
        ("tls://127.0.0.1:443?sni=api.example.com", "api.example.com"),
        ("tls+unix:@x?sni=app.example", "app.example"),
        ("tls+unix:///run/app.sock", None),
        ("tls://:443?cert=auto", None),
        ("tcp://example.com:443", None),
        ("unix:@x", None),
        ("exec:cat", None),
    ],
)
def test_tls_server_name(text: str, name: str | None) -> None:
    assert tls_server_name(parse(text)) == name


@pytest.mark.parametrize(
    ("text", "side"),
    [
        ("tls://example.com:443", "client"),
        ("tls://:443", "client"),  # no host: refused where every client is ("needs a host")
        ("tls+unix:@x?sni=app.example", "client"),
        ("tls+unix:@x?pin=" + PIN, "client"),
        ("tls+unix:@x?insecure", "client"),
        ("tls+unix:@x?cert=auto", "server"),
        ("tls://:443?cert=/c.pem&client-ca=/ca.pem", "server"),
        ("tcp://127.0.0.1:1", "client"),
        ("unixgram:@x", "server"),
        ("-", "client"),
    ],
)
def test_check_tls_use_passes(text: str, side: str) -> None:
    check_tls_use(parse(text), side)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("address", "side", "phrase"),
    [
        (parse("tls+unix:///run/app.sock"), "client", "tls+unix:… has no host name to verify: add sni=NAME"),
        (parse("tls+unix:@x?ca=/ca.pem"), "client", "has no host name to verify"),
        (parse("tls://h:443?cert=auto"), "client", "cert=auto is for listening"),
        (parse("tls+unix:@x?sni=a.example"), "server", "sni is for connecting"),
        (parse("tls://:443"), "server", "a TLS listener needs a certificate"),
        (InetAddress("udp", "127.0.0.1", 1, None, TLS), "client", "no TLS over datagrams"),
        (UnixAddress("x", True, True, parse_query("cert=auto")), "server", "no TLS over datagrams"),
    ],
)
def test_check_tls_use_refuses(address: enchufe.Address, side: str, phrase: str) -> None:
    with pytest.raises(AddressError, match=re.escape(phrase)) as info:
        check_tls_use(address, side)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.splitlines() == [message]


def test_address_error_is_a_usage_error_and_a_value_error() -> None:
    with pytest.raises(enchufe.UsageError):
        parse("nope")
    with pytest.raises(ValueError, match="unknown scheme"):
        parse("nope:x")


def test_non_string_is_refused() -> None:
    with pytest.raises(AddressError, match="must be a string"):
        parse(b"tcp://127.0.0.1:1")  # type: ignore[arg-type]


LINE_BREAKS = ["\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x1b"]


@pytest.mark.parametrize("brk", LINE_BREAKS, ids=[f"U+{ord(b):04X}" for b in LINE_BREAKS])
@pytest.mark.parametrize(
    "template",
    [
        "tcp://a{}b:80",
        "tcp://host:8{}0",
        "tcp://[::1{}]:80",
        "tcp://::1{}:80",
        "tcp://[::1]{}",
        "tcp6://[fe80::1%a{}b]:80x",
        "no{}scheme:x",
        "1.2{}.3:80",
        "unix://rel{}path",
        "unix:///" + "a" * 100 + "{}" + "b" * 10,
        "unixgram:@" + "a" * 100 + "{}" + "b" * 10,
        "exec:'a{}b",
        "stdio:{}",
        "tls://a{}b:443?sni=x",
        "tls://h:443?sni=a{}b",
        "tls://h:443?b{}ogus=1",
        "tls+unix:@a%zz{}",
        "tcp://h:1?ca=a{}b",
    ],
)
def test_refusals_escape_every_line_break(template: str, brk: str) -> None:
    """A line or paragraph separator (U+2028, U+0085 …) in the input never splits the message:
    str.splitlines() and log readers break lines at all of them."""
    with pytest.raises(AddressError) as info:
        parse(template.format(brk))
    message = str(info.value)
    assert message.splitlines() == [message]
    assert message.isprintable(), ascii(message)


def test_refusal_shows_non_utf8_bytes_as_the_byte() -> None:
    bad = b"tcp://a\xffb:80".decode("utf-8", "surrogateescape")
    with pytest.raises(AddressError, match=r"a\\xffb"):
        parse(bad)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_service_names_agree_with_the_system(transport: str) -> None:
    """The built-in table says what this host's /etc/services says, for every name in it."""
    import os

    if not os.path.exists("/etc/services"):
        pytest.skip("no /etc/services on this host")
    for name, port in enchufe.address.SERVICES[transport].items():
        assert socket.getservbyname(name, transport) == port, name


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4), st.sampled_from(["d", "o", "x"]))
def test_ipv4_shorthand_is_refused_and_named_as_getaddrinfo_reads_it(numbers: list[int], base: str) -> None:
    """Whatever numeric shorthand getaddrinfo turns into an IPv4 address is refused, and the
    message shows that address — the one a C tool would have connected to."""
    spell: dict[str, Callable[[int], str]] = {"d": str, "o": lambda n: f"0{n:o}", "x": hex}
    parts = [spell[base](n) for n in numbers]
    host = ".".join(parts)
    try:
        expected = socket.getaddrinfo(host, 1, socket.AF_INET, 0, 0, socket.AI_NUMERICHOST)[0][4][0]
    except socket.gaierror:
        expected = None
    if expected is not None and host == expected:
        assert parse(f"tcp://{host}:1") == InetAddress("tcp", host, 1)
        return
    with pytest.raises(AddressError) as info:
        parse(f"tcp://{host}:1")
    if expected is not None:
        assert f"tcp://{expected}:1" in str(info.value)


# --- round trip ----------------------------------------------------------------------------------


def _numeric_looking(host: str) -> bool:
    """Every label a number to inet_aton (decimal, octal or 0x-hex): refused unless a dotted quad."""
    return all(re.fullmatch(r"0[xX][0-9a-fA-F]*|[0-9]+", label) for label in host.rstrip(".").split("."))


_ident = st.text(alphabet=string.ascii_letters + string.digits + "_", min_size=1, max_size=12)
_label = st.builds(
    lambda a, b: a + b,
    st.sampled_from(string.ascii_letters + string.digits + "_"),
    st.text(alphabet=string.ascii_letters + string.digits + "_-", max_size=10),
)
_hostname = st.builds(
    lambda labels, dot: ".".join(labels) + dot,
    st.lists(_label, min_size=1, max_size=4),
    st.sampled_from(["", "."]),
).filter(lambda h: not _numeric_looking(h))  # IPv4 shorthand (1.2.3, 0x7f.1) is refused
_port = st.integers(min_value=0, max_value=65535)
_v4 = st.ip_addresses(v=4).map(str)
_v6 = st.ip_addresses(v=6).map(str)
_scope = st.one_of(st.just(""), _ident.map(lambda s: "%" + s))


@st.composite
def inet_texts(draw: st.DrawFn) -> str:
    transport = draw(st.sampled_from(["tcp", "udp", "tls"]))
    family = draw(st.sampled_from(["", "4", "6"]))
    hosts = [st.just(""), _hostname]
    if family in ("", "4"):
        hosts.append(_v4)
    if family in ("", "6"):
        hosts.append(st.builds(lambda a, s: f"[{a}{s}]", _v6, _scope))
    host = draw(st.one_of(*hosts))
    port = draw(_port)
    zeros = draw(st.sampled_from(["", "0", "00"]))
    query = "?" + str(draw(tls_params())) if transport == "tls" else ""
    return f"{draw(st.sampled_from([transport, transport.upper()]))}{family}://{host}:{zeros}{port}{query}"


_name_text = st.text(
    alphabet=st.characters(exclude_characters="\0", exclude_categories=["Cs"]),
    min_size=1,
    max_size=25,
)


@st.composite
def unix_texts(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["unix", "unixgram"]))
    name = draw(_name_text)
    form = draw(st.sampled_from(["abstract", "absolute", "short-absolute", "relative"]))
    if form == "abstract":
        return f"{scheme}:@{name}"
    if form == "absolute":
        return f"{scheme}:///{name}"
    if form == "short-absolute":  # unix:/x (a second slash would make it unix://…)
        return f"{scheme}:/{name.lstrip('/') or 'x'}"
    # A relative path must not look like one of the other forms.
    rel = name.lstrip("/@") or "x"
    return f"{scheme}:{rel}"


@st.composite
def tls_unix_texts(draw: st.DrawFn) -> str:
    """``tls+unix:`` with a name percent-encoded in any way (every byte may be escaped)."""
    name = draw(_name_text)
    form = draw(st.sampled_from(["@", "///", "/", ""]))
    if form in ("///", "/"):
        name = name.lstrip("/")
    encoded = quote(name, safe=draw(st.sampled_from(["", "/", "/@ :&=", " !$'()*+,;=:@/"])))
    if not form and encoded.startswith(("/", "@")):  # a relative path must not read as another form
        encoded = "%40" + encoded[1:] if encoded.startswith("@") else "x" + encoded
    query = str(draw(tls_params()))
    scheme = draw(st.sampled_from(["tls+unix", "TLS+UNIX"]))
    return f"{scheme}:{form}{encoded or 'x'}" + (f"?{query}" if query else "")


address_texts = st.one_of(
    inet_texts(),
    unix_texts(),
    tls_unix_texts(),
    st.sampled_from(["-", "stdio:"]),
    st.lists(_ident, min_size=1, max_size=4).map(lambda argv: "exec:" + " ".join(argv)),
)


@settings(max_examples=400, deadline=None)
@given(address_texts)
def test_str_round_trips_for_grammar_addresses(text: str) -> None:
    address = parse(text)
    canonical = str(address)
    assert parse(canonical) == address
    assert str(parse(canonical)) == canonical


@settings(max_examples=200, deadline=None)
@given(st.lists(_name_text, min_size=1, max_size=4))
def test_exec_argv_round_trips(argv: list[str]) -> None:
    import shlex

    address = parse("exec:" + shlex.join(argv))
    assert address == ExecAddress(tuple(argv))
    assert parse(str(address)) == address


_any_text = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda scheme, rest: scheme + rest,
        st.sampled_from(
            [
                "tcp://",
                "udp6://",
                "tcp4://[",
                "unix:",
                "unix://",
                "unixgram:@",
                "exec:",
                "tls://h:1?",
                "tls+unix:",
                "tls6://[::1]:1?",
            ]
        ),
        st.text(max_size=60),
    ),
)


@settings(max_examples=600, deadline=None)
@given(_any_text)
@example("tcp://a\n:b:80")
@example("tcp://[a\nb]x")
@example("unix://rel\nline")
@example("tcp4://[fe80::1%a\nb]:80")
def test_any_text_parses_or_is_refused_in_one_line(text: str) -> None:
    try:
        address = parse(text)
    except AddressError as exc:
        message = str(exc)
        assert message.splitlines() == [message]
        return
    assert parse(str(address)) == address


# --- refused when used: a client needs a host and a port -----------------------------------------


@pytest.mark.parametrize(
    ("call", "phrase"),
    [
        (lambda: enchufe.connect("tcp://:9000"), "needs a host"),
        (lambda: enchufe.connect("tcp6://:9000"), "needs a host"),
        (lambda: enchufe.connect_datagram("udp://:9000"), "needs a host"),
        (lambda: enchufe.connect("tcp://127.0.0.1:0"), "port 0"),
        (lambda: enchufe.connect_datagram("udp4://127.0.0.1:0"), "port 0"),
        (lambda: enchufe.connect("udp://127.0.0.1:9"), "needs a stream address"),
        (lambda: enchufe.connect_datagram("tcp://127.0.0.1:9"), "needs a datagram address"),
        (lambda: enchufe.listen("unixgram:@x"), "needs a stream address"),
        (lambda: enchufe.bind_datagram("unix:@x"), "needs a datagram address"),
        (lambda: enchufe.listen("-"), "needs a socket address"),
        (lambda: enchufe.connect("exec:cat"), "needs a socket address"),
        (lambda: enchufe.connect("tcp://127.0.0.1:9", retries=-1), "retries"),
    ],
    ids=[
        "connect-empty-host",
        "connect6-empty-host",
        "connect_datagram-empty-host",
        "connect-port-0",
        "connect_datagram-port-0",
        "connect-udp",
        "connect_datagram-tcp",
        "listen-unixgram",
        "bind_datagram-unix",
        "listen-stdio",
        "connect-exec",
        "negative-retries",
    ],
)
def test_refused_before_any_socket_exists(
    call: Callable[[], object], phrase: str, trace_lines: list[str]
) -> None:
    with pytest.raises(AddressError, match=phrase) as info:
        call()
    message = str(info.value)
    assert message.splitlines() == [message]
    assert not [line for line in trace_lines if line.startswith("socket(")], trace_lines


@pytest.mark.parametrize(
    ("target", "phrase"),
    [
        ("udp://:9000", "needs a host"),
        ("udp://127.0.0.1:0", "port 0"),
        ("tcp://127.0.0.1:9", "sends to udp:// or unixgram:"),
        ("unixgram:@x", "cannot send to a unix address"),
    ],
)
def test_sendto_refuses_unusable_targets_without_sending(
    target: str, phrase: str, trace_lines: list[str]
) -> None:
    with enchufe.bind_datagram("udp4://127.0.0.1:0") as sock, pytest.raises(AddressError, match=phrase):
        sock.sendto(b"x", target)
    assert not [line for line in trace_lines if line.startswith("sendto(")], trace_lines


def test_public_names_exist() -> None:
    for name in enchufe.__all__:
        assert hasattr(enchufe, name), name

"""The address parser: every accepted form, every refused one, and the str() round trip."""

from __future__ import annotations

import re
import socket
import string
from collections.abc import Callable

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

_SCHEMES = "tcp|tcp4|tcp6|udp|udp4|udp6|unix|unixgram|stdio|exec"
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
]


@pytest.mark.parametrize(("text", "phrase"), BAD, ids=[repr(b[0][:30]) for b in BAD])
def test_bad_forms_are_refused_with_one_line_naming_the_problem(text: str, phrase: str) -> None:
    with pytest.raises(AddressError) as info:
        parse(text)
    message = str(info.value)
    assert phrase in message
    assert message.splitlines() == [message], "the message must be one line"
    assert accepted_forms(message), f"no accepted form shown in {message!r}"


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
    transport = draw(st.sampled_from(["tcp", "udp"]))
    family = draw(st.sampled_from(["", "4", "6"]))
    hosts = [st.just(""), _hostname]
    if family in ("", "4"):
        hosts.append(_v4)
    if family in ("", "6"):
        hosts.append(st.builds(lambda a, s: f"[{a}{s}]", _v6, _scope))
    host = draw(st.one_of(*hosts))
    port = draw(_port)
    zeros = draw(st.sampled_from(["", "0", "00"]))
    return f"{draw(st.sampled_from([transport, transport.upper()]))}{family}://{host}:{zeros}{port}"


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


address_texts = st.one_of(
    inet_texts(),
    unix_texts(),
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
        st.sampled_from(["tcp://", "udp6://", "tcp4://[", "unix:", "unix://", "unixgram:@", "exec:"]),
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

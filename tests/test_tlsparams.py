"""The TLS query parser: every parameter, every refusal, and str() round trips."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enchufe.errors import AddressError
from enchufe.tlsparams import DEFAULT_HANDSHAKE_TIMEOUT, TLSParams, format_pin, parse_query

PIN = "sha256:" + "ab" * 32


def test_empty_query_is_verified_tls_with_defaults() -> None:
    params = parse_query("")
    assert params == TLSParams()
    assert params.verifies
    assert params.handshake_timeout == DEFAULT_HANDSHAKE_TIMEOUT
    assert str(params) == ""


def test_every_parameter() -> None:
    params = parse_query(
        "ca=/etc/ca.pem&sni=api.example.com&alpn=h2,http/1.1&handshake-timeout=2.5&cert=c.pem&key=k.pem"
    )
    assert params.ca == "/etc/ca.pem"
    assert params.sni == "api.example.com"
    assert params.alpn == ("h2", "http/1.1")
    assert params.handshake_timeout == 2.5
    assert (params.cert, params.key) == ("c.pem", "k.pem")
    server = parse_query("cert=auto&client-ca=ca.pem&allow-san=dns:a.example,IP:::1&allow-cn=alice,bob")
    assert server.cert_auto and server.cert is None
    assert server.allow_san == (("DNS", "a.example"), ("IP", "::1"))
    assert server.allow_cn == ("alice", "bob")
    assert server.client_ca == "ca.pem"


def test_pins_accept_colons_and_upper_case_and_keep_order() -> None:
    colons = ":".join(["AB"] * 32)
    params = parse_query(f"pin=sha256:{colons},sha256:{'cd' * 32}")
    assert params.pins == (bytes.fromhex("ab" * 32), bytes.fromhex("cd" * 32))
    assert str(params) == f"pin={PIN},sha256:{'cd' * 32}"
    assert format_pin(params.pins[0]) == PIN


def test_insecure_is_a_bare_flag() -> None:
    assert parse_query("insecure").insecure
    assert not parse_query("insecure").verifies
    assert parse_query("insecure=yes").insecure and parse_query("insecure=1").insecure
    for value in ("no", "0", "false", "maybe"):
        with pytest.raises(AddressError, match=f"insecure={value}: insecure is a flag, on when written"):
            parse_query(f"insecure={value}")


def test_percent_encoding_of_odd_file_names_round_trips() -> None:
    params = parse_query("ca=/srv/odd%26name%3Dx%20y.pem")
    assert params.ca == "/srv/odd&name=x y.pem"
    assert parse_query(str(params)) == params
    assert "%26" in str(params) and "%3D" in str(params)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("bogus=1", "unknown TLS parameter 'bogus'; accepted TLS parameters: ca, sni, pin"),
        ("ca=a&ca=b", "given twice"),
        ("&ca=a", "empty TLS parameter"),
        ("ca=", "ca needs a value: ca=FILE"),
        ("ca", "ca needs a value"),
        ("pin=md5:00", "is not a pin; write pin=sha256:HEX"),
        ("pin=sha256:abc", "64 hex digits"),
        ("sni=10.0.0.1", "cannot be an IP address"),
        ("sni=bad_name!", "is not a host name"),
        ("allow-san=DNS:x&allow-cn=y", "add client-ca=FILE"),
        ("client-ca=c&allow-san=FOO:x", "TYPE one of DNS, URI, IP, EMAIL"),
        ("client-ca=c&allow-san=IP:not-ip", "not an IP address"),
        ("insecure&pin=" + PIN, "insecure turns verification off, so pin="),
        ("insecure&ca=x", "so ca="),
        ("cert=auto&key=k", "cert=auto makes its own key"),
        ("key=k", "key= goes with cert=FILE"),
        ("handshake-timeout=0", "more than 0 and at most"),
        ("handshake-timeout=nan", "more than 0 and at most"),
        ("handshake-timeout=1e9", "more than 0 and at most"),
        ("alpn=h2,,x", "an empty item"),
        ("ca=%zz", "must start an escape"),
        ("ca=%ff", "do not decode as UTF-8"),
        ("ca=a%00b", "NUL byte"),
    ],
)
def test_refusals_name_the_parameter_and_what_is_accepted(query: str, expected: str) -> None:
    with pytest.raises(AddressError, match=re.escape(expected)):
        parse_query(query)


def test_a_hostile_parameter_name_is_escaped_in_the_message() -> None:
    with pytest.raises(AddressError) as info:
        parse_query("ev\x1b[2Jil=1")
    assert "\x1b" not in str(info.value)


@pytest.mark.parametrize(
    ("query", "side", "expected"),
    [
        ("client-ca=c.pem", "client", "client-ca is for listening"),
        ("cert=auto", "client", "cert=auto is for listening"),
        ("pin=" + PIN, "server", "pin is for connecting"),
        ("sni=a.example&insecure", "server", "sni, insecure is for connecting"),
        ("alpn=h2", "server", "a TLS listener needs a certificate"),
    ],
)
def test_parameters_of_the_other_side_are_refused_when_used(query: str, side: str, expected: str) -> None:
    params = parse_query(query)
    with pytest.raises(AddressError, match=expected):
        params.check_side(side)  # type: ignore[arg-type]


def test_parameters_of_the_right_side_pass() -> None:
    parse_query("ca=a&sni=x.example&alpn=h2&cert=c&key=k").check_side("client")
    parse_query("cert=auto&client-ca=c&allow-cn=alice&alpn=h2").check_side("server")


_files = st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=20)
#: List items with what a list or a query uses as separators: a comma, '&', '=', '%'.
_list_items = st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=12)
_names = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True)


@st.composite
def tls_params(draw: st.DrawFn) -> TLSParams:
    """Any consistent TLS settings (also drawn by the address round trip)."""
    insecure = draw(st.booleans())
    client_ca = draw(st.none() | _files)
    return TLSParams(
        ca=None if insecure else draw(st.none() | _files),
        sni=draw(st.none() | _names),
        pins=() if insecure else tuple(draw(st.lists(st.binary(min_size=32, max_size=32), max_size=2))),
        insecure=insecure,
        cert=draw(st.none() | _files.filter(lambda f: f != "auto")),
        client_ca=client_ca,
        allow_cn=() if client_ca is None else tuple(draw(st.lists(_names | _list_items, max_size=2))),
        alpn=tuple(draw(st.lists(st.from_regex(r"[a-z0-9/.,%&=+ ]{1,8}", fullmatch=True), max_size=3))),
        handshake_timeout=draw(st.sampled_from([0.5, 10.0, 30.0, 1.25])),
    )


@given(tls_params())
def test_str_round_trips(params: TLSParams) -> None:
    assert parse_query(str(params)) == params


def test_a_comma_in_a_list_item_is_written_as_its_escape() -> None:
    """An ALPN protocol or a CN may hold a comma: written %2C, it is part of its item, not a
    separator, both ways."""
    params = parse_query("cert=c&client-ca=ca&allow-cn=Doe%2C%20John,bob&alpn=h%2C2,http%2F1.1")
    assert params.allow_cn == ("Doe, John", "bob")
    assert params.alpn == ("h,2", "http/1.1")
    assert str(params) == "cert=c&client-ca=ca&allow-cn=Doe%2C%20John,bob&alpn=h%2C2,http/1.1"
    with pytest.raises(AddressError, match="an empty item"):
        parse_query("alpn=h2,,http/1.1")

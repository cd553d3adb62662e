"""Routes by TLS server name as a table (:mod:`enchufe.relay.routes`): parsing, matching (exact
names before wildcards, one label per wildcard, any case), and the refusals of a bad
``--route`` (one line, exit status 2)."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enchufe.address import parse
from enchufe.errors import UsageError
from enchufe.relay.config import RelayConfig, check_config
from enchufe.relay.routes import DEFAULT, RouteTable, check_routes, parse_route
from enchufe.relay.stats import Stats, interval_report, summary_report

from .conftest import ENCHUFE, STEP

PLAIN = parse("tcp://127.0.0.1:0")
NONE = parse("-")


def table(*routes: str, default: str = "-", listen: str = "tcp://127.0.0.1:0") -> RouteTable:
    return check_routes(parse(listen), parse(default), routes)


def target_of(routes: RouteTable, name: str | None) -> str | None:
    route = routes.match(name)
    return None if route is None else str(route.target)


def test_exact_names_win_over_wildcards() -> None:
    routes = table("*.example.com=tcp://127.0.0.1:2", "api.example.com=tcp://127.0.0.1:1")
    assert target_of(routes, "api.example.com") == "tcp://127.0.0.1:1"
    assert target_of(routes, "www.example.com") == "tcp://127.0.0.1:2"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("x.example.com", "tcp://127.0.0.1:2"),
        ("X.Example.COM", "tcp://127.0.0.1:2"),  # any case
        ("x.example.com.", "tcp://127.0.0.1:2"),  # a trailing dot is the same name
        ("example.com", None),  # a wildcard needs its label
        ("a.b.example.com", None),  # and matches one label only
        ("xexample.com", None),
        ("API.example.com", "tcp://127.0.0.1:1"),
        (None, None),  # no SNI: the default
        ("", None),
    ],
)
def test_matching(name: str | None, expected: str | None) -> None:
    routes = table("*.example.com=tcp://127.0.0.1:2", "Api.Example.com=tcp://127.0.0.1:1")
    assert target_of(routes, name) == expected


def test_the_default_takes_the_rest() -> None:
    routes = table("a.test=unix:///run/a.sock", default="tcp://127.0.0.1:9")
    route = routes.match("b.test")
    assert route is not None and route.name == DEFAULT and str(route.target) == "tcp://127.0.0.1:9"
    assert target_of(routes, None) == "tcp://127.0.0.1:9"
    assert str(routes.match("a.test").target) == "unix:///run/a.sock"  # type: ignore[union-attr]


def _to(routes: RouteTable, name: str, alpn: tuple[str, ...]) -> str | None:
    route = routes.match(name, alpn)
    return None if route is None else str(route.target)


def test_alpn_routes_take_the_clients_that_offer_their_protocol() -> None:
    routes = table(
        "a.test=tcp://127.0.0.1:1",
        "a.test=tcp://127.0.0.1:2?alpn=acme-tls/1",
        "a.test=tcp://127.0.0.1:3?alpn=h2,h3",
        "*.test=tcp://127.0.0.1:4?alpn=x",
    )
    assert target_of(routes, "a.test") == "tcp://127.0.0.1:1"
    assert _to(routes, "a.test", ("acme-tls/1",)) == "tcp://127.0.0.1:2"
    assert _to(routes, "a.test", ("http/1.1", "h3")) == "tcp://127.0.0.1:3"
    assert _to(routes, "a.test", ("http/1.1",)) == "tcp://127.0.0.1:1"
    assert _to(routes, "b.test", ("x",)) == "tcp://127.0.0.1:4"
    assert _to(routes, "b.test", ("y",)) is None
    route = routes.match("a.test", ("h2",))
    assert route is not None and route.label == "a.test alpn=h2,h3"


def test_a_name_with_only_alpn_routes_falls_through() -> None:
    routes = table("a.test=tcp://127.0.0.1:2?alpn=acme-tls/1", "*.test=tcp://127.0.0.1:4")
    assert target_of(routes, "a.test") == "tcp://127.0.0.1:4"
    assert _to(routes, "a.test", ("acme-tls/1",)) == "tcp://127.0.0.1:2"


def test_cert_and_key_belong_to_the_route() -> None:
    route = parse_route("a.test=tcp://127.0.0.1:1?cert=/etc/a.pem&key=/etc/a%2Bkey.pem", terminating=True)
    assert (route.cert, route.key, str(route.target)) == ("/etc/a.pem", "/etc/a+key.pem", "tcp://127.0.0.1:1")


@pytest.mark.parametrize(
    ("routes", "default", "listen", "words"),
    [
        (("a.test",), "-", "tcp://127.0.0.1:0", "expected NAME=TARGET"),
        (("=tcp://127.0.0.1:1",), "-", "tcp://127.0.0.1:0", "expected NAME=TARGET"),
        (("a b=tcp://127.0.0.1:1",), "-", "tcp://127.0.0.1:0", "not a server name"),
        (("a.*.test=tcp://127.0.0.1:1",), "-", "tcp://127.0.0.1:0", "not a server name"),
        (("*=tcp://127.0.0.1:1",), "-", "tcp://127.0.0.1:0", "not a server name"),
        (("a..test=tcp://127.0.0.1:1",), "-", "tcp://127.0.0.1:0", "not a server name"),
        (("a.test=nowhere",), "-", "tcp://127.0.0.1:0", "missing scheme"),
        (("a.test=udp://127.0.0.1:1",), "-", "tcp://127.0.0.1:0", "stream socket address"),
        (("a.test=exec:cat",), "-", "tcp://127.0.0.1:0", "stream socket address"),
        (("a.test=tls://127.0.0.1:1",), "-", "tcp://127.0.0.1:0", "do not originate"),
        (("a.test=tcp://:1",), "-", "tcp://127.0.0.1:0", "needs a host and a port"),
        (("a.test=tcp://127.0.0.1:1", "A.TEST=tcp://127.0.0.1:2"), "-", "tcp://127.0.0.1:0", "twice"),
        (
            ("a.test=tcp://127.0.0.1:1?alpn=h2,x", "a.test=tcp://127.0.0.1:2?alpn=x,h2"),
            "-",
            "tcp://:0",
            "twice",
        ),
        (("a.test=tcp://127.0.0.1:1?alpn=h2,,x",), "-", "tcp://127.0.0.1:0", "ALPN protocol names"),
        (("a.test=tcp://127.0.0.1:1?sni=x",), "-", "tcp://127.0.0.1:0", "sni"),
        (("a.test=tcp://127.0.0.1:1?cert=/a.pem",), "-", "tcp://127.0.0.1:0", "passes the TLS bytes"),
        (("a.test=tcp://127.0.0.1:1",), "exec:cat", "tcp://127.0.0.1:0", "the positional TARGET"),
        (("a.test=tcp://127.0.0.1:1",), "-", "udp://127.0.0.1:0", "LISTEN must be"),
    ],
)
def test_refusals(routes: tuple[str, ...], default: str, listen: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        check_config(RelayConfig(listen, default, routes=routes))


def test_key_without_cert_refused() -> None:
    with pytest.raises(UsageError, match="key= needs cert="):
        table("a.test=tcp://127.0.0.1:1?key=/k.pem", listen="tls://127.0.0.1:0?cert=auto")


def test_stdio_listen_refused() -> None:
    with pytest.raises(UsageError, match="LISTEN must be"):
        check_config(RelayConfig("-", "tcp://127.0.0.1:1", routes=("a.test=tcp://127.0.0.1:2",)))


_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)


@given(st.lists(_LABEL, min_size=1, max_size=4), _LABEL, st.booleans())
def test_wildcards_match_exactly_one_label(labels: list[str], first: str, upper: bool) -> None:
    suffix = ".".join(labels)
    routes = table(f"*.{suffix}=tcp://127.0.0.1:2")
    name = f"{first}.{suffix}"
    assert target_of(routes, name.upper() if upper else name) == "tcp://127.0.0.1:2"
    assert target_of(routes, suffix) is None
    assert target_of(routes, f"{first}.{first}.{suffix}") is None


def test_routes_are_counted_in_stats_lines_and_json() -> None:
    stats = Stats()
    before = stats.snapshot()
    stats.routes.update({"a.test": 3, "(unmatched)": 1})
    line, fields = interval_report(before, stats.snapshot())
    assert line.endswith("; routes (unmatched) 1, a.test 3")
    assert fields["routes"] == {"a.test": 3, "(unmatched)": 1}
    line, fields = summary_report(stats.snapshot())
    assert "; routes (unmatched) 1, a.test 3" in line and fields["routes"]["a.test"] == 3
    assert "routes" not in Stats().snapshot().fields()


@pytest.mark.parametrize(
    ("route", "words"),
    [
        ("a b=tcp://127.0.0.1:1", "is not a server name"),
        # the user's text escaped once: a backslash as \\, a newline as \n
        ("a\\b\nc=tcp://127.0.0.1:1", "--route 'a\\\\b\\nc=tcp://127.0.0.1:1': 'a\\\\b\\nc' is not"),
        ("a.test", "expected NAME=TARGET"),
        ("a.test=tcp://127.0.0.1:1?cert=/x.pem", "holds no certificate"),
    ],
)
def test_cli_bad_route_is_one_line_exit_2(route: str, words: str) -> None:
    done = subprocess.run(
        [*ENCHUFE, "relay", "tcp://127.0.0.1:0", "-", "--route", route],
        capture_output=True,
        text=True,
        timeout=STEP,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "--route" in lines[0], done.stderr

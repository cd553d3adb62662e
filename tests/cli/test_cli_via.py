"""``--via URL`` on connect, send and check: bad URLs and targets no tunnel reaches (exit 2), a
proxy that is down or says no (exit 1, one line naming the hop), ``--trace`` narrating each
hop without its password, ``--source`` binding the connection to the first proxy.  The proxy is
the SOCKS5 peer of ``tests/test_hops.py``; real proxies are in tests/interop/test_interop_via.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.test_hops import FakeSocks

from .conftest import assert_one_error_line, free_port, run, run_here


@pytest.fixture
def proxy() -> Iterator[FakeSocks]:
    fake = FakeSocks()
    yield fake
    fake.close()


@pytest.mark.parametrize("command", ["connect", "send", "check"])
def test_help_says_what_via_takes(command: str) -> None:
    done = run_here(command, "--help")
    assert done.returncode == 0
    text = done.stdout.decode()
    assert (
        "--via URL" in text
        and "socks5://[USER:PASS@]HOST:PORT" in text
        and "http://[USER:PASS@]HOST:PORT" in text
    )


@pytest.mark.parametrize(
    ("via", "needles"),
    [
        ("socks5://alice:secret@127.0.0.1", ("--via socks5://alice:***@127.0.0.1: missing port", "e.g.")),
        ("socks4://127.0.0.1:1080", ("--via", "unknown proxy scheme", "socks5://[USER:PASS@]HOST:PORT")),
        ("127.0.0.1:1080", ("--via", "not a proxy URL", "http://[USER:PASS@]HOST:PORT")),
    ],
)
@pytest.mark.parametrize("command", ["connect", "send", "check"])
def test_a_bad_proxy_url_is_one_line_exit_2_without_the_password(
    command: str, via: str, needles: tuple[str, ...]
) -> None:
    done = run_here(command, "--via", via, "tcp://127.0.0.1:9")
    assert done.returncode == 2
    line = assert_one_error_line(done.stderr, *needles)
    assert "secret" not in line


@pytest.mark.parametrize(
    ("command", "target", "needle"),
    [
        ("check", "udp://127.0.0.1:53", "check --via takes stream targets"),
        ("connect", "unix:@app", "reaches tcp://, tls:// and udp:// targets"),
        ("check", "unix:@app", "reaches tcp://, tls:// and udp:// targets"),
        ("connect", "tcp4://example.com:80", "picks the family itself"),
    ],
)
def test_targets_no_tunnel_reaches_exit_2(command: str, target: str, needle: str) -> None:
    done = run_here(command, "--via", "socks5://u:secret@127.0.0.1:1080", target)
    assert done.returncode == 2
    line = assert_one_error_line(done.stderr, needle, "via socks5://u:***@127.0.0.1:1080")
    assert "secret" not in line


@pytest.mark.parametrize(
    ("via", "needle"),
    [
        (["http://u:secret@127.0.0.1:3128"], "not an HTTP proxy (via http://u:***@127.0.0.1:3128)"),
        (["socks5://127.0.0.1:1", "socks5://127.0.0.1:2"], "not a chain"),
    ],
)
def test_connect_sends_datagrams_through_one_socks5_proxy_only(via: list[str], needle: str) -> None:
    done = run_here("connect", *(arg for url in via for arg in ("--via", url)), "udp://127.0.0.1:53")
    assert done.returncode == 2
    assert "secret" not in assert_one_error_line(
        done.stderr, "datagrams go through one socks5:// proxy", needle
    )


def test_a_proxy_that_is_down_is_the_usual_refused_line_naming_the_hop() -> None:
    port = free_port()
    done = run("connect", "--via", f"socks5://u:secret@127.0.0.1:{port}", "tcp://localhost:9")
    assert done.returncode == 1
    assert done.stderr.decode() == (
        f"enchufe: via socks5://u:***@127.0.0.1:{port}: cannot connect to tcp://127.0.0.1:{port}: "
        "connection refused; is a server listening there? --retry N waits for a server to start.\n"
    )


def test_a_refusal_by_the_proxy_s_rules_is_one_line_exit_1() -> None:
    fake = FakeSocks(reply=2)
    try:
        done = run("send", "--via", fake.url, "tcp://localhost:9", "data")
    finally:
        fake.close()
    assert done.returncode == 1
    assert (
        done.stderr.decode()
        == f"enchufe: via {fake.url}: connection refused by the proxy's rules (SOCKS reply 2)\n"
    )


def test_connect_through_the_proxy_with_trace_never_shows_the_password() -> None:
    fake = FakeSocks(auth=True, banner=b"hello from the target\n")
    url = f"socks5://alice:s3cret@127.0.0.1:{fake.port}"
    try:
        done = run("--trace", "-v", "connect", "--via", url, "tcp://localhost:2525", input=b"")
    finally:
        fake.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"hello from the target\n"
    assert fake.credentials == [(b"alice", b"s3cret")]
    assert fake.requests == [(3, "localhost", 2525)]
    err = done.stderr.decode()
    assert "s3cret" not in err
    shown = f"via socks5://alice:***@127.0.0.1:{fake.port}"
    for step in (
        f"connect to the proxy at 127.0.0.1:{fake.port}",
        "greeting: SOCKS5, methods offered: no authentication, username/password",
        "method chosen: username/password",
        "username/password: user alice, password ***",
        "username/password accepted",
        "CONNECT localhost:2525 (a name, resolved by the proxy)",
        "reply: succeeded, bound 127.0.0.1:1080",
    ):
        assert f"{shown}: {step}\n" in err, step
    assert (
        f"connected to tcp://localhost:2525 via socks5://alice:***@127.0.0.1:{fake.port} from tcp://127.0.0.1:"
        in err
    )


def test_source_binds_the_connection_to_the_first_proxy(proxy: FakeSocks) -> None:
    done = run(
        "connect", "--via", proxy.url, "--source", "tcp://127.0.0.2:0", "tcp://localhost:7", input=b"x"
    )
    assert done.returncode == 0, done.stderr
    assert proxy.peers == ["127.0.0.2"]
    wrong = run_here("connect", "--via", proxy.url, "--source", "unix:@me", "tcp://localhost:7")
    assert wrong.returncode == 2
    assert_one_error_line(wrong.stderr, "--source unix:@me", f"tcp://127.0.0.1:{proxy.port}")


def test_source_binds_a_udp_association_and_its_datagrams() -> None:
    fake = FakeSocks(reply=7)  # "command not supported": the request is recorded, then refused
    try:
        done = run("connect", "--via", fake.url, "--source", "tcp://127.0.0.2:0", "udp://127.0.0.1:53")
    finally:
        fake.close()
    assert done.returncode == 1, done.stderr
    assert fake.peers == ["127.0.0.2"]  # the association's TCP connection
    assert fake.requests[0][:2] == (1, "127.0.0.2")  # the address its datagrams come from


def test_check_through_the_proxy(proxy: FakeSocks) -> None:
    done = run("check", "--via", proxy.url, "tcp://localhost:22", "tcp://[::1]:443")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["tcp://localhost:22 open", "tcp://[::1]:443 open"]
    assert sorted(proxy.requests) == sorted([(3, "localhost", 22), (4, "::1", 443)])


def test_check_through_a_proxy_that_is_down_blames_the_proxy_not_the_target() -> None:
    port = free_port()
    done = run("check", "--via", f"socks5://127.0.0.1:{port}", "tcp://localhost:22")
    assert done.returncode == 1
    assert done.stdout.decode() == (
        f"tcp://localhost:22 proxy unreachable (via socks5://127.0.0.1:{port}: cannot connect to "
        f"tcp://127.0.0.1:{port}: connection refused; is a server listening there?)\n"
    )


def test_check_through_a_chain_blames_the_next_proxy_when_the_first_cannot_reach_it() -> None:
    """A reply 5 from the first of two proxies is about the second one: the status is "proxy
    refused", and the line names that proxy, never the target."""
    fake = FakeSocks(reply=5)
    try:
        done = run("check", "-v", "--via", fake.url, "--via", "http://127.0.0.1:9", "tcp://localhost:22")
    finally:
        fake.close()
    assert done.returncode == 1
    reason = "http://127.0.0.1:9: connection refused by the next proxy (SOCKS reply 5)"
    assert done.stdout.decode() == f"tcp://localhost:22 proxy refused (via {fake.url}: {reason})\n"


def test_check_says_refused_when_the_target_refused_through_the_proxy() -> None:
    fake = FakeSocks(reply=5)
    try:
        done = run("check", "-v", "--via", fake.url, "tcp://localhost:22")
    finally:
        fake.close()
    assert done.returncode == 1
    reason = "localhost:22: connection refused by the target (SOCKS reply 5)"
    assert done.stdout.decode() == f"tcp://localhost:22 refused (via {fake.url}: {reason})\n"

"""enchufe._http_connect_server: HTTP CONNECT's server side, sans I/O."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enchufe import _socks5_server as socks5
from enchufe._http_connect_server import ESTABLISHED, MAX_HEAD, HttpConnectServer, http_reply, speaks_http

USERS = {b"alice": b"s3cret"}


def basic(user: str, password: str) -> str:
    return "Proxy-Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request(target: str, *headers: str) -> bytes:
    return "\r\n".join([f"CONNECT {target} HTTP/1.1", f"Host: {target}", *headers, "", ""]).encode()


@pytest.mark.parametrize(
    ("target", "host", "port", "by_name"),
    [
        ("example.com:443", "example.com", 443, True),
        ("192.0.2.7:8080", "192.0.2.7", 8080, False),
        ("[2001:db8::1]:22", "2001:db8::1", 22, False),
    ],
)
def test_a_connect_request_fed_byte_by_byte_gives_its_target_and_leftover(
    target: str, host: str, port: int, by_name: bool
) -> None:
    machine = HttpConnectServer()
    data = request(target) + b"early bytes"
    steps = [machine.feed(data[i : i + 1]) for i in range(len(request(target)))]
    assert all(step.request is None and not step.send for step in steps[:-1])
    done = steps[-1]
    assert done.request is not None and done.refused is None
    assert (done.request.host, done.request.port, done.request.by_name) == (host, port, by_name)
    assert done.request.command_name == "CONNECT" and done.request.user is None
    rest = HttpConnectServer().feed(data)
    assert rest.leftover == b"early bytes"


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", b"405", "only tunnels"),
        (request("example.com"), b"400", "not HOST:PORT"),
        (request("example.com:0"), b"400", "not HOST:PORT"),
        (request("exa mple.com:80"), b"400", "not an HTTP/1 request"),
        (request("exa_mple!com:80"), b"400", "not HOST:PORT"),
        (b"CONNECT example.com:80 SPDY/3\r\n\r\n", b"400", "not an HTTP/1 request"),
        # A zone names an interface of the client's host (once an inet_pton crash in the relay).
        (request("[fe80::1%lo]:80"), b"400", "not HOST:PORT"),
        (request("[::1%\x1b[31m]:80"), b"400", "not HOST:PORT"),
        (request("::1:80"), b"400", "not HOST:PORT"),  # IPv6 only in brackets
        (request("[127.0.0.1]:80"), b"400", "not HOST:PORT"),
        (request("[example.com]:80"), b"400", "not HOST:PORT"),
        (request("example.com:\uff18\uff10"), b"400", "not HOST:PORT"),  # fullwidth digits
    ],
)
def test_what_is_not_a_connect_request_is_answered_and_refused(
    data: bytes, status: bytes, words: str
) -> None:
    step = HttpConnectServer().feed(data)
    assert step.request is None and step.refused is not None and words in step.refused
    assert step.send.startswith(b"HTTP/1.1 " + status + b" ") and step.send.endswith(b"\r\n\r\n")
    assert b"Connection: close" in step.send


def test_a_head_larger_than_the_limit_is_431_and_never_held_beyond_it() -> None:
    machine = HttpConnectServer()
    step = machine.feed(b"CONNECT example.com:443 HTTP/1.1\r\nX: " + b"a" * MAX_HEAD)
    assert step.send.startswith(b"HTTP/1.1 431 ") and step.refused is not None
    assert len(machine._buffer) == 0


def test_credentials_are_asked_for_checked_and_never_shown() -> None:
    missing = HttpConnectServer(USERS).feed(request("example.com:443"))
    assert missing.send.startswith(b"HTTP/1.1 407 ") and b"Proxy-Authenticate: Basic" in missing.send
    wrong = HttpConnectServer(USERS).feed(request("example.com:443", basic("alice", "nope")))
    assert wrong.refused is not None and "nope" not in wrong.refused
    assert wrong.send.startswith(b"HTTP/1.1 407")
    right = HttpConnectServer(USERS).feed(request("example.com:443", basic("alice", "s3cret")))
    assert right.request is not None and right.request.user == "alice"


def test_replies_say_the_socks_codes_in_http() -> None:
    assert ESTABLISHED == b"HTTP/1.1 200 Connection established\r\n\r\n"
    assert http_reply(socks5.CONNECTION_NOT_ALLOWED).startswith(b"HTTP/1.1 403 ")
    assert http_reply(socks5.CONNECTION_REFUSED).startswith(b"HTTP/1.1 502 ")
    assert http_reply(socks5.TTL_EXPIRED).startswith(b"HTTP/1.1 504 ")
    assert speaks_http(b"CONNECT") and not speaks_http(b"\x05\x01\x00") and not speaks_http(b"")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=600), max_size=30), st.booleans())
def test_any_bytes_give_a_step_and_stay_bounded(chunks: list[bytes], with_users: bool) -> None:
    machine = HttpConnectServer(USERS if with_users else None)
    for chunk in chunks:
        step = machine.feed(chunk)
        assert len(machine._buffer) <= MAX_HEAD + 600
        if step.request is not None or step.refused is not None:
            break


def test_bytes_that_are_not_utf8_are_shown_as_the_bytes_they_are() -> None:
    step = HttpConnectServer().feed(b"CONNECT \xff\xfe:80 HTTP/1.1\r\n\r\n")
    assert step.refused is not None and "\\xff\\xfe:80" in step.refused and "\xff" not in step.refused

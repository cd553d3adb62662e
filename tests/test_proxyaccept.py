"""enchufe._proxyaccept on real sockets: the relay's one-call read of a header and the payload
that came with it (take_first), and the trusted peers a policy remembers."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import pytest

from enchufe._proxyaccept import HeaderRead, step, take_first
from enchufe._proxypolicy import TRUSTED_SEEN, ProxyPolicy
from enchufe.address import parse
from enchufe.proxyproto import NeedMore, ProxyHeader, Refused, encode_v1, encode_v2

CLIENT = parse("tcp://203.0.113.7:40000")
FRONT = parse("tcp://198.51.100.1:443")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected TCP pair on loopback: (the relay's end, non-blocking; the proxy's end)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        proxy = socket.create_connection(listener.getsockname())
        relay, _ = listener.accept()
    relay.setblocking(False)
    with relay, proxy:
        yield relay, proxy


def wait_readable(sock: socket.socket) -> None:
    assert select.select([sock], [], [], 5.0)[0], "nothing came within 5 s"


@pytest.mark.parametrize("version", [1, 2])
def test_the_header_and_the_payload_after_it_come_in_one_call(
    pair: tuple[socket.socket, socket.socket], version: int
) -> None:
    relay, proxy = pair
    header = encode_v1(CLIENT, FRONT) if version == 1 else encode_v2(CLIENT, FRONT)
    proxy.sendall(header + b"payload")
    wait_readable(relay)
    result, rest = take_first(relay, ProxyPolicy())
    assert isinstance(result, ProxyHeader) and result.source == CLIENT and result.destination == FRONT
    assert result.consumed == len(header)
    assert rest == b"payload"


def test_no_more_than_a_header_may_have_is_read(pair: tuple[socket.socket, socket.socket]) -> None:
    """What is past the bound stays in the kernel, for the pumps."""
    relay, proxy = pair
    policy = ProxyPolicy()
    header = encode_v2(CLIENT, FRONT)
    payload = bytes(range(256)) * 40  # 10 KiB
    proxy.sendall(header + payload)
    wait_readable(relay)
    while len(relay.recv(1 << 16, socket.MSG_PEEK)) < len(header) + len(payload):  # all queued
        wait_readable(relay)
    result, rest = take_first(relay, policy)
    assert isinstance(result, ProxyHeader)
    assert rest == payload[: policy.bound - len(header)]
    assert relay.recv(1 << 16) == payload[len(rest) :]


def test_part_of_a_header_is_all_taken_and_the_read_goes_on(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    relay, proxy = pair
    policy = ProxyPolicy()
    header = encode_v1(CLIENT, FRONT)
    assert take_first(relay, policy) == (NeedMore(), b"")  # nothing yet
    proxy.sendall(header[:10])
    wait_readable(relay)
    result, taken = take_first(relay, policy)
    assert isinstance(result, NeedMore) and taken == header[:10]
    read = HeaderRead(policy)
    read.took(taken)
    proxy.sendall(header[10:] + b"after")
    wait_readable(relay)
    step(relay, read)
    assert isinstance(read.result, ProxyHeader) and read.result.source == CLIENT
    assert relay.recv(100) == b"after"  # the peeking read takes the header's bytes only


def test_no_header_or_no_bytes_is_refused(pair: tuple[socket.socket, socket.socket]) -> None:
    relay, proxy = pair
    proxy.sendall(b"GET / HTTP/1.0\r\n\r\n")
    wait_readable(relay)
    result, rest = take_first(relay, ProxyPolicy())
    assert isinstance(result, Refused) and "no PROXY protocol header" in result.reason and rest == b""
    proxy.shutdown(socket.SHUT_WR)
    wait_readable(relay)
    assert take_first(relay, ProxyPolicy()) == (Refused("closed without sending a PROXY header"), b"")


def test_a_failed_connection_is_refused(pair: tuple[socket.socket, socket.socket]) -> None:
    relay, proxy = pair
    proxy.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    proxy.close()  # a reset
    wait_readable(relay)
    result, rest = take_first(relay, ProxyPolicy())
    assert isinstance(result, Refused) and rest == b""
    assert result.reason.startswith("the connection failed during its PROXY header: ")


def test_a_policy_remembers_trusted_peers_only_and_few_of_them() -> None:
    policy = ProxyPolicy.make(["10.0.0.0/8"])
    assert policy.untrusted_host("192.0.2.1") is not None
    assert policy.untrusted_host("10.1.2.3") is None
    assert policy.trusted_seen == {"10.1.2.3"}
    for n in range(TRUSTED_SEEN + 10):
        assert policy.untrusted_host(f"10.0.{n // 256}.{n % 256}") is None
    assert len(policy.trusted_seen) == TRUSTED_SEEN and "192.0.2.1" not in policy.trusted_seen
    assert policy == ProxyPolicy.make(["10.0.0.0/8"])  # what it remembers is not what it is

"""accept_proxy on the library's datagram servers (threads, asyncio, uvloop): each datagram
starts with a PROXY v2 header (as ``relay --send-proxy v2`` sends it), taken off; the handler's
``sender`` is the client it names, ``proxy_address`` the proxy, and replies go to the proxy.
Datagrams from untrusted peers or without a valid header are dropped, counted and logged; the
server goes on.  The tests play the proxy: a socket of their own sends each datagram behind a
header made by :func:`enchufe.proxyproto.encode_v2`."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from enchufe import parse
from enchufe._serving import DatagramBase
from enchufe.address import InetAddress, UnixAddress, from_sockaddr
from enchufe.proxyproto import encode_v1, encode_v2
from enchufe.servers import ChatRoom
from tests.conftest import abstract_name
from tests.servers.conftest import IO_TIMEOUT, LogRecords, Running, wait_until

pytestmark = pytest.mark.timeout(60)

#: The client a proxy names, and the address it says that client sent to.
CLIENT = parse("udp://203.0.113.7:40000")
OTHER = parse("udp://[2001:db8::9]:5353")
FRONT = parse("udp://198.51.100.1:53")


def echo_noting(flavour: str, seen: list[DatagramBase[Any]]) -> Callable[..., Any]:
    """A datagram echo that keeps every datagram it was handed."""
    if flavour == "sync":

        def sync_echo(datagram: Any) -> None:
            seen.append(datagram)
            datagram.reply(datagram.data)

        return sync_echo

    async def async_echo(datagram: Any) -> None:
        seen.append(datagram)
        await datagram.reply(datagram.data)

    return async_echo


@contextlib.contextmanager
def proxy_socket(address: str, source: str = "127.0.0.1") -> Iterator[socket.socket]:
    """A datagram socket of the test's, bound (replies must reach it) and connected to the
    server at ``address``: the proxy."""
    target = parse(address)
    if isinstance(target, InetAddress):
        six = ":" in target.host
        sock = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("::1" if six else source, 0))
    else:
        assert isinstance(target, UnixAddress)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind("\0" + abstract_name())
    with sock:
        sock.settimeout(IO_TIMEOUT)
        sock.connect((target.host, target.port) if isinstance(target, InetAddress) else target.sockaddr)
        yield sock


def local(sock: socket.socket) -> Any:
    return from_sockaddr(sock.family, socket.SOCK_DGRAM, sock.getsockname())


def digest(datagrams: list[bytes]) -> str:
    return hashlib.sha256(b"".join(len(d).to_bytes(4, "big") + d for d in datagrams)).hexdigest()


def test_the_header_is_taken_off_and_replies_go_to_the_proxy(
    flavour: str, datagram_address: str, serve: Callable[..., Running]
) -> None:
    seen: list[DatagramBase[Any]] = []
    server = serve(flavour, datagram_address, echo_noting(flavour, seen), accept_proxy=True)
    payloads = [os.urandom(size) for size in (0, 1, 100, 1400, 4000)]
    with proxy_socket(server.address) as proxy:
        for payload in payloads:
            proxy.send(encode_v2(CLIENT, FRONT) + payload)
        replies = [proxy.recv(65536) for _ in payloads]
        proxy_address = local(proxy)
    assert digest(replies) == digest(payloads)  # the payloads alone, every byte, in order
    assert [d.data for d in seen] == payloads
    assert {(d.sender, d.proxy_address, d.reply_address) for d in seen} == {
        (CLIENT, proxy_address, proxy_address)
    }
    first = seen[0]
    assert first.new_peer and not any(d.new_peer for d in seen[1:])
    assert first.session is not None and first.session.peer == proxy_address
    assert (first.session.client, first.session.name) == (CLIENT, CLIENT)
    assert first.proxy_header is not None and first.proxy_header.destination == FRONT
    assert (server.stats.datagrams, server.stats.refused) == (len(payloads), 0)


def test_a_local_header_leaves_the_proxy_as_the_sender(
    flavour: str, make_address: Callable[[str], str], serve: Callable[..., Running]
) -> None:
    """A LOCAL header (the proxy's own health check) names nobody: the proxy is the sender."""
    seen: list[DatagramBase[Any]] = []
    server = serve(flavour, make_address("udp4"), echo_noting(flavour, seen), accept_proxy=True)
    with proxy_socket(server.address) as proxy:
        proxy.send(encode_v2(None, None, local=True) + b"ping")
        assert proxy.recv(100) == b"ping"
        proxy_address = local(proxy)
    (datagram,) = seen
    assert (datagram.sender, datagram.proxy_address) == (proxy_address, proxy_address)
    assert datagram.session is not None and datagram.session.client is None
    assert datagram.session.name == proxy_address


@pytest.mark.parametrize(
    ("datagram", "why"),
    [
        (b"no header at all", "no PROXY protocol header: the datagram starts with"),
        (b"", "an empty datagram, without a PROXY protocol header"),
        (encode_v1(parse("tcp://203.0.113.7:40000"), parse("tcp://198.51.100.1:53")) + b"x", "version 1"),
        (encode_v2(parse("tcp://203.0.113.7:40000"), parse("tcp://198.51.100.1:53")) + b"x", "for a stream"),
        (encode_v2(CLIENT, FRONT)[:20], "incomplete"),
        (b"\r\n\r\n\x00\r\nQUIT\n\x21\x12\xff\xff", "header of 65551 bytes, over this server's bound"),
    ],
)
def test_a_datagram_without_a_valid_header_is_dropped_and_logged(
    flavour: str,
    make_address: Callable[[str], str],
    serve: Callable[..., Running],
    serve_log: LogRecords,
    datagram: bytes,
    why: str,
) -> None:
    seen: list[DatagramBase[Any]] = []
    server = serve(flavour, make_address("udp4"), echo_noting(flavour, seen), accept_proxy=True)
    with proxy_socket(server.address) as proxy:
        proxy.send(datagram)
        line = serve_log.wait_for("dropped a datagram from udp://127.0.0.1:")
        assert why in line, line
        proxy.send(encode_v2(CLIENT, FRONT) + b"after")  # the server goes on
        assert proxy.recv(100) == b"after"
    assert [d.data for d in seen] == [b"after"]
    assert (server.stats.refused, server.stats.datagrams) == (1, 1)


def test_only_trusted_proxies_may_name_a_client(
    flavour: str, make_address: Callable[[str], str], serve: Callable[..., Running], serve_log: LogRecords
) -> None:
    """A peer outside trusted_proxies is dropped, header or not: it cannot spoof a client, nor
    get an answer."""
    seen: list[DatagramBase[Any]] = []
    server = serve(
        flavour,
        make_address("udp4"),
        echo_noting(flavour, seen),
        accept_proxy=True,
        trusted_proxies=["127.0.0.2"],
    )
    with proxy_socket(server.address, source="127.0.0.9") as spoofer:
        spoofer.send(encode_v2(CLIENT, FRONT) + b"spoofed")
        assert "not a trusted proxy" in serve_log.wait_for("dropped a datagram from udp://127.0.0.9:")
        spoofer.settimeout(0.3)
        with pytest.raises(TimeoutError):
            spoofer.recv(100)
    with proxy_socket(server.address, source="127.0.0.2") as proxy:
        proxy.send(encode_v2(CLIENT, FRONT) + b"trusted")
        assert proxy.recv(100) == b"trusted"
    assert [(d.sender, d.data) for d in seen] == [(CLIENT, b"trusted")]
    assert server.stats.refused == 1


def test_chat_names_each_client_and_answers_through_its_proxy(
    make_address: Callable[[str], str], serve: Callable[..., Running]
) -> None:
    """Two clients behind one proxy, each on a socket of its own (as the relay gives them): the
    room names them for their clients, and a message goes to the other's socket only."""
    server = serve("asyncio", make_address("udp4"), ChatRoom().datagram, accept_proxy=True)
    with proxy_socket(server.address) as for_a, proxy_socket(server.address) as for_b:
        for_a.send(encode_v2(CLIENT, FRONT) + b"a joins\n")
        wait_until(lambda: server.stats.datagrams == 1, what="a joining")
        for_b.send(encode_v2(OTHER, FRONT) + b"b joins\n")
        assert for_a.recv(100) == b"[2001:db8::9]:5353: b joins\n"
        for_a.send(encode_v2(CLIENT, FRONT) + b"hello\n")
        assert for_b.recv(100) == b"203.0.113.7:40000: hello\n"
        for_a.settimeout(0.3)
        with pytest.raises(TimeoutError):  # never back to its sender
            for_a.recv(100)


def test_an_unbound_unix_proxy_is_dropped_not_answered_where_its_header_says(
    flavour: str, make_address: Callable[[str], str], serve: Callable[..., Running], serve_log: LogRecords
) -> None:
    """A unix peer is trusted, but an unbound one has no address a reply could go to: answering
    would send the server's reply to whatever socket its header names (reflection)."""
    seen: list[DatagramBase[Any]] = []
    server = serve(flavour, make_address("unixgram"), echo_noting(flavour, seen), accept_proxy=True)
    target = parse(server.address)
    assert isinstance(target, UnixAddress)
    victim_name = abstract_name()
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as victim,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unbound,
    ):
        victim.bind("\0" + victim_name)
        victim.settimeout(0.3)
        unbound.sendto(
            encode_v2(UnixAddress(victim_name, abstract=True), None) + b"reflect me", target.sockaddr
        )
        assert "a proxy's socket needs a name" in serve_log.wait_for(
            "dropped a datagram from an unnamed unix peer"
        )
        with pytest.raises(TimeoutError):
            victim.recv(100)
    assert seen == [] and server.stats.refused == 1

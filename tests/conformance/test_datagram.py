"""The datagram contract, checked the same way for every API flavour and every datagram kind.

Each test runs for ``sync``, ``asyncio`` and ``uvloop`` (the ``api`` fixture) over udp4, udp6,
unixgram and unixgram-abstract.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from enchufe import (
    ClosedError,
    ConnectionRefused,
    DatagramTruncated,
    MessageTooLarge,
    TimedOut,
    UnixAddress,
    UsageError,
)
from tests.conformance.conftest import IO_TIMEOUT
from tests.conftest import DATAGRAM_KINDS, Peer, abstract_name, connectable, kind_params

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=kind_params(DATAGRAM_KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.contextmanager
def bound_and_connected(api: Any, address: str) -> Iterator[tuple[Any, Any]]:
    """(server, client): a bound socket and a socket connected to it."""
    with (
        api.bind_datagram(address) as server,
        api.connect_datagram(connectable(server.local_address)) as client,
    ):
        server.set_timeout(IO_TIMEOUT)
        client.set_timeout(IO_TIMEOUT)
        yield server, client


@pytest.fixture
def sockets(api: Any, kind: str, make_address: Callable[[str], str]) -> Iterator[tuple[Any, Any]]:
    with bound_and_connected(api, make_address(kind)) as pair:
        yield pair


def test_boundaries_and_order_are_kept(sockets: tuple[Any, Any]) -> None:
    server, client = sockets
    datagrams = [b"", b"a", b"bc", os.urandom(1000), os.urandom(60_000), b"\n\n", b"end"]
    # Sent from another thread: a unix receiver's queue is short (net.unix.max_dgram_qlen),
    # and a sender with a timeout waits for the receiver to read.
    sender = Peer(lambda: [client.send(datagram) for datagram in datagrams])
    received = [server.recvfrom() for _ in datagrams]
    assert sender.result() == [len(datagram) for datagram in datagrams]
    assert [data for data, _sender in received] == datagrams
    assert {sender for _data, sender in received} == {client.local_address}


def test_reply_reaches_the_sender(sockets: tuple[Any, Any], kind: str) -> None:
    """The sender address recvfrom reports is one sendto can answer: for unixgram clients
    that means connect_datagram gave the client a reply address of its own."""
    server, client = sockets
    assert client.local_address is not None
    if kind.startswith("unixgram"):
        assert isinstance(client.local_address, UnixAddress)
    client.send(b"question")
    data, sender = server.recvfrom()
    assert data == b"question"
    assert sender == client.local_address
    assert server.sendto(b"answer", sender) == 6
    assert client.recv() == b"answer"
    assert client.peer_address is not None


def test_truncated_datagram_is_reported(sockets: tuple[Any, Any]) -> None:
    server, client = sockets
    payload = os.urandom(100)
    client.send(payload)
    client.send(b"next")
    with pytest.raises(DatagramTruncated) as caught:
        server.recvfrom(10)
    assert caught.value.data == payload[:10]
    assert caught.value.size == 100
    assert caught.value.sender == client.local_address
    assert server.recvfrom(10) == (b"next", client.local_address)  # the next one is intact


def test_too_large_to_send(sockets: tuple[Any, Any], kind: str) -> None:
    server, client = sockets
    # Over the UDP maximum (65,507 / 65,527 bytes), or over a unix socket's send buffer.
    size = 70_000 if kind.startswith("udp") else 4 * 1024 * 1024
    with pytest.raises(MessageTooLarge):
        client.send(b"x" * size)
    with pytest.raises(MessageTooLarge):
        client.sendto(b"x" * size, server.local_address)
    client.send(b"fits")
    assert server.recv() == b"fits"


def test_timeout(sockets: tuple[Any, Any]) -> None:
    """A timeout says what timed out, in the same words on every side."""
    server, client = sockets
    server.set_timeout(0.1)
    with pytest.raises(TimedOut) as caught:
        server.recvfrom()
    assert str(caught.value) == f"cannot receive a datagram on {server.local_address}: timed out"
    assert (caught.value.errno, caught.value.action) == (errno.ETIMEDOUT, "receive")
    server.set_timeout(IO_TIMEOUT)
    client.send(b"late")
    assert server.recv() == b"late"


def test_close_is_idempotent_then_closed_error(sockets: tuple[Any, Any]) -> None:
    server, client = sockets
    address = server.local_address
    server.close()
    server.close()
    assert server.closed
    calls: list[Callable[[], Any]] = [
        lambda: server.recvfrom(),
        lambda: server.recv(),
        lambda: server.sendto(b"x", address),
        lambda: server.set_timeout(1),
    ]
    for call in calls:
        with pytest.raises(ClosedError):
            call()
    client.close()
    with pytest.raises(ClosedError):
        client.send(b"x")


def test_unix_socket_file_is_removed_on_close(api: Any, make_address: Callable[[str], str]) -> None:
    address = make_address("unixgram")
    path = address.removeprefix("unixgram://")
    sock = api.bind_datagram(address)
    assert os.path.exists(path)
    sock.close()
    assert not os.path.exists(path)


def test_send_needs_a_connected_socket(api: Any, kind: str, make_address: Callable[[str], str]) -> None:
    with api.bind_datagram(make_address(kind)) as sock, pytest.raises(UsageError):
        sock.send(b"to whom?")


@pytest.mark.parametrize("kind", kind_params(("unixgram", "unixgram-abstract")))
def test_unbound_unix_sender(api: Any, kind: str, make_address: Callable[[str], str]) -> None:
    """Only unix datagram senders can be unnamed: recvfrom reports them as None."""
    with api.bind_datagram(make_address(kind)) as server:
        server.set_timeout(IO_TIMEOUT)
        address = server.local_address
        target = b"\0" + address.name.encode() if address.abstract else address.name
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as raw:
            raw.sendto(b"anonymous", target)
        assert server.recvfrom() == (b"anonymous", None)


def test_refused(api: Any, kind: str, make_address: Callable[[str], str]) -> None:
    if kind.startswith("udp"):
        # A connected UDP socket learns of a closed port from the ICMP error of a datagram.
        with api.bind_datagram(make_address(kind)) as gone:
            address = connectable(gone.local_address)
        with api.connect_datagram(address) as client:
            client.set_timeout(IO_TIMEOUT)
            client.send(b"anyone?")
            with pytest.raises(ConnectionRefused):
                client.recv()
        return
    address = make_address(kind) if kind == "unixgram" else f"unixgram:@{abstract_name()}"
    with pytest.raises(ConnectionRefused) as caught:
        api.connect_datagram(address, retries=2, retry_delay=0.01)
    assert len(caught.value.attempts) == 3


def test_many_peers_one_socket(api: Any, kind: str, make_address: Callable[[str], str]) -> None:
    """One bound socket tells its senders apart and answers each."""
    with api.bind_datagram(make_address(kind)) as server:
        server.set_timeout(IO_TIMEOUT)
        target = connectable(server.local_address)
        clients = [api.connect_datagram(target) for _ in range(5)]
        try:
            for i, client in enumerate(clients):
                client.set_timeout(IO_TIMEOUT)
                client.send(b"%d" % i)
            senders = {}
            for _ in clients:
                data, sender = server.recvfrom()
                senders[sender] = data
                server.sendto(b"re:" + data, sender)
            assert len(senders) == len(clients)
            for i, client in enumerate(clients):
                assert client.recv() == b"re:%d" % i
        finally:
            for client in clients:
                client.close()


@pytest.mark.parametrize("unix_kind", ["unixgram", "unixgram-abstract"])
def test_sending_to_a_unix_peer_that_does_not_read_times_out_in_the_same_words(
    api: Any, unix_kind: str, make_address: Callable[[str], str]
) -> None:
    """A unix receiver's full queue makes a sender wait (the sync socket in the kernel, the
    asyncio one backing off); past the timeout both say what timed out, the same way."""
    with (
        api.bind_datagram(make_address(unix_kind)) as silent,
        api.bind_datagram(make_address(unix_kind)) as sender,
    ):
        sender.set_timeout(0.2)
        with pytest.raises(TimedOut) as caught:
            for _ in range(100_000):  # far more than its queue holds (net.unix.max_dgram_qlen)
                sender.sendto(b"x", silent.local_address)
        assert str(caught.value) == f"cannot send a 1-byte datagram to {silent.local_address}: timed out"
        assert (caught.value.errno, caught.value.action) == (errno.ETIMEDOUT, "send")

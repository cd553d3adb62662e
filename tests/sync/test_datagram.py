"""Datagram endpoints (udp4, udp6, unixgram path, unixgram abstract) over real loopback sockets."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator

import pytest

import enchufe
import enchufe.aio as aio
from enchufe import (
    AddressError,
    ClosedError,
    ConnectionRefused,
    DatagramSocket,
    DatagramTruncated,
    InetAddress,
    MessageTooLarge,
    TimedOut,
    UnixAddress,
    UsageError,
    _unixfiles,
)
from enchufe.address import SocketAddress
from tests.conftest import DATAGRAM_KINDS, connectable, kind_params, needs_ipv6

#: Seconds a receive may wait before the test calls the datagram lost.
IO_TIMEOUT = 5.0

UDP_KINDS = ("udp4", "udp6")
UNIXGRAM_KINDS = ("unixgram", "unixgram-abstract")


@contextlib.contextmanager
def server_and_client(address: str) -> Iterator[tuple[DatagramSocket, DatagramSocket]]:
    """A socket bound to ``address`` and a client connected to it, both with a timeout."""
    with (
        enchufe.bind_datagram(address) as server,
        enchufe.connect_datagram(connectable(server.local_address)) as client,
    ):
        server.set_timeout(IO_TIMEOUT)
        client.set_timeout(IO_TIMEOUT)
        yield server, client


def test_both_directions_through_a_connected_client(datagram_address: str) -> None:
    with server_and_client(datagram_address) as (server, client):
        assert client.send(b"ping") == 4
        data, sender = server.recvfrom()
        assert data == b"ping"
        assert sender is not None
        assert sender == client.local_address
        assert server.sendto(b"pong", sender) == 4
        assert client.recv() == b"pong"


def same_endpoint(a: enchufe.Address | None, b: enchufe.Address | None) -> bool:
    """Whether two addresses name the same socket (a sender carries no forced family)."""
    if isinstance(a, InetAddress) and isinstance(b, InetAddress):
        return (a.transport, a.host, a.port) == (b.transport, b.host, b.port)
    return a is not None and a == b


@pytest.mark.parametrize("kind", kind_params(DATAGRAM_KINDS))
def test_both_directions_between_bound_sockets(kind: str, make_address: Callable[[str], str]) -> None:
    with enchufe.bind_datagram(make_address(kind)) as a, enchufe.bind_datagram(make_address(kind)) as b:
        a.set_timeout(IO_TIMEOUT)
        b.set_timeout(IO_TIMEOUT)
        a.sendto(b"from a", connectable(b.local_address))
        data, sender = b.recvfrom()
        assert data == b"from a"
        assert same_endpoint(sender, a.local_address)
        b.sendto(b"from b", connectable(a.local_address))
        data, sender = a.recvfrom()
        assert data == b"from b"
        assert same_endpoint(sender, b.local_address)


@pytest.mark.parametrize("kind", kind_params(UDP_KINDS))
def test_bound_udp_reports_the_real_port(kind: str, make_address: Callable[[str], str]) -> None:
    with enchufe.bind_datagram(make_address(kind)) as sock:
        assert isinstance(sock.local_address, InetAddress)
        assert sock.local_address.port == sock.socket.getsockname()[1] != 0
        assert sock.local_address.family == int(kind[-1])


def test_boundaries_are_preserved(datagram_address: str) -> None:
    sizes = [1, 0, 1000, 30000]  # an empty datagram is a datagram, not an end of file
    with server_and_client(datagram_address) as (server, client):
        payloads = [bytes([i + 1]) * size for i, size in enumerate(sizes)]
        for payload in payloads:
            client.send(payload)
        received = [server.recvfrom()[0] for _ in payloads]
    assert received == payloads


def test_truncation_is_reported(datagram_address: str) -> None:
    with server_and_client(datagram_address) as (server, client):
        payload = bytes(range(100))
        client.send(payload)
        client.send(b"next")
        with pytest.raises(DatagramTruncated) as info:
            server.recvfrom(max_size=10)
        error = info.value
        assert error.size == 100
        assert error.data == payload[:10]
        assert error.sender == client.local_address
        assert "100 bytes" in str(error)
        assert "10-byte" in str(error)
        # The cut datagram is consumed; the next one arrives whole.
        assert server.recvfrom() == (b"next", client.local_address)


@pytest.mark.parametrize("kind", kind_params(UNIXGRAM_KINDS))
def test_unixgram_datagram_over_64_kib_is_reported_truncated(
    kind: str, make_address: Callable[[str], str]
) -> None:
    big = os.urandom(100_000)
    with server_and_client(make_address(kind)) as (server, client):
        client.send(big)
        with pytest.raises(DatagramTruncated) as info:
            server.recvfrom()  # the default buffer is 64 KiB
        assert info.value.size == len(big)
        assert info.value.data == big[:65536]
        client.send(big)
        assert server.recvfrom(max_size=len(big))[0] == big  # a big enough buffer gets it whole


@pytest.mark.parametrize("kind", kind_params(UDP_KINDS))
def test_oversized_udp_datagram_is_message_too_large(kind: str, make_address: Callable[[str], str]) -> None:
    with server_and_client(make_address(kind)) as (server, client):
        assert client.local_address is not None
        with pytest.raises(MessageTooLarge) as connected:
            client.send(b"x" * 70000)
        with pytest.raises(MessageTooLarge) as unconnected:
            server.sendto(b"x" * 70000, client.local_address)
    for error in (connected.value, unconnected.value):
        assert error.errno == errno.EMSGSIZE
        message = str(error)
        assert "70000-byte datagram" in message
        assert "send less per datagram" in message
        assert message.splitlines() == [message]


@pytest.mark.parametrize("kind", kind_params(UNIXGRAM_KINDS))
def test_unixgram_client_gets_a_reply_address(kind: str, make_address: Callable[[str], str]) -> None:
    with server_and_client(make_address(kind)) as (server, client):
        assert isinstance(client.local_address, UnixAddress)
        assert client.local_address.datagram
        assert client.local_address.abstract  # Linux autobind: no file left behind
        client.send(b"question")
        data, sender = server.recvfrom()
        assert (data, sender) == (b"question", client.local_address)
        assert sender is not None
        server.sendto(b"answer", sender)
        assert client.recv() == b"answer"


def test_reply_socket_file_of_the_path_fallback_is_removed_on_close() -> None:
    """Where autobind is unavailable the reply address is a path in a private folder.

    Linux always autobinds, so the fallback's socket file is made here the way
    ``autobind_unix`` makes it, and handed to a DatagramSocket, which must remove it on close.
    """
    folder = tempfile.mkdtemp(prefix="enchufe-", dir="/tmp")
    try:
        path = os.path.join(folder, "reply.sock")
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        raw.bind(path)
        st = os.stat(path)
        sock = DatagramSocket(raw, owned=_unixfiles._TempSocketFile(path, st.st_dev, st.st_ino))
        assert sock.local_address == UnixAddress(path, datagram=True)
        assert os.path.exists(path)
        sock.close()
        assert not os.path.exists(path)
        assert not os.path.exists(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("kind", kind_params(UNIXGRAM_KINDS))
def test_sender_of_an_unbound_unix_socket_is_none(kind: str, make_address: Callable[[str], str]) -> None:
    with enchufe.bind_datagram(make_address(kind)) as server:
        server.set_timeout(IO_TIMEOUT)
        assert isinstance(server.local_address, UnixAddress)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unbound:
            unbound.sendto(b"anonymous", server.local_address.sockaddr)
            unbound.sendto(b"anonymous and too long", server.local_address.sockaddr)
        assert server.recvfrom() == (b"anonymous", None)
        with pytest.raises(DatagramTruncated, match="unbound sender") as info:
            server.recvfrom(max_size=5)
        assert info.value.sender is None


@pytest.mark.parametrize("kind", kind_params(UDP_KINDS))
def test_connected_udp_to_a_closed_port_is_refused(kind: str, make_address: Callable[[str], str]) -> None:
    with enchufe.bind_datagram(make_address(kind)) as gone:
        target = connectable(gone.local_address)
    with enchufe.connect_datagram(target) as client:
        client.set_timeout(IO_TIMEOUT)
        client.send(b"anyone?")
        with pytest.raises(ConnectionRefused) as info:
            client.recv()
        assert info.value.errno == errno.ECONNREFUSED
        assert str(info.value).startswith(f"cannot receive a datagram from {target}")


@pytest.mark.parametrize("kind", kind_params(UNIXGRAM_KINDS))
def test_connect_datagram_to_nobody_is_refused(kind: str, make_address: Callable[[str], str]) -> None:
    with pytest.raises(ConnectionRefused, match="cannot connect to unixgram:"):
        enchufe.connect_datagram(make_address(kind))


@needs_ipv6
def test_dual_stack_socket_talks_to_ipv4_peers() -> None:
    with enchufe.bind_datagram("udp://:0") as server, enchufe.bind_datagram("udp4://127.0.0.1:0") as v4:
        server.set_timeout(IO_TIMEOUT)
        v4.set_timeout(IO_TIMEOUT)
        assert server.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        assert isinstance(server.local_address, InetAddress)
        port = server.local_address.port
        v4.sendto(b"hello", f"udp://127.0.0.1:{port}")
        data, sender = server.recvfrom()
        assert data == b"hello"
        # Reported as the IPv4 peer it is, never ::ffff:127.0.0.1; replies still reach it.
        assert isinstance(sender, InetAddress)
        assert str(sender) == f"udp://127.0.0.1:{connectable_port(v4)}"
        server.sendto(b"reply to the sender", sender)
        assert v4.recvfrom()[0] == b"reply to the sender"
        server.sendto(b"reply to plain", connectable(v4.local_address))  # IPv4 target, mapped
        assert v4.recvfrom()[0] == b"reply to plain"


def connectable_port(sock: enchufe.DatagramSocket) -> int:
    assert isinstance(sock.local_address, InetAddress)
    return sock.local_address.port


@needs_ipv6
def test_aio_dual_stack_socket_reports_and_answers_ipv4_peers() -> None:
    async def main() -> None:
        async with (
            await aio.bind_datagram("udp://:0") as server,
            await aio.bind_datagram("udp4://127.0.0.1:0") as v4,
        ):
            server.set_timeout(IO_TIMEOUT)
            v4.set_timeout(IO_TIMEOUT)
            assert isinstance(server.local_address, InetAddress)
            await v4.sendto(b"hello", f"udp://127.0.0.1:{server.local_address.port}")
            _data, sender = await server.recvfrom()
            assert isinstance(sender, InetAddress) and isinstance(v4.local_address, InetAddress)
            assert str(sender) == f"udp://127.0.0.1:{v4.local_address.port}"
            await server.sendto(b"reply", sender)
            assert (await v4.recvfrom())[0] == b"reply"

    aio.run(main())


@needs_ipv6
def test_ipv6_only_socket_refuses_an_ipv4_target() -> None:
    with (
        enchufe.bind_datagram("udp6://[::1]:0") as sock,
        pytest.raises(AddressError, match="has no IPv6 address"),
    ):
        sock.sendto(b"x", "udp://127.0.0.1:9")


def test_timeout_on_recvfrom(datagram_address: str) -> None:
    with enchufe.bind_datagram(datagram_address) as sock:
        sock.set_timeout(0.05)
        with pytest.raises(TimedOut, match="timed out"):
            sock.recvfrom()


def test_misuse_and_closed_socket(datagram_address: str) -> None:
    sock = enchufe.bind_datagram(datagram_address)
    with pytest.raises(UsageError, match="connected"):
        sock.send(b"x")  # not connected
    with pytest.raises(UsageError):
        sock.recvfrom(max_size=0)
    sock.close()
    sock.close()  # idempotent
    assert sock.closed
    for call in (
        sock.recvfrom,
        sock.recv,
        lambda: sock.sendto(b"x", datagram_address),
        lambda: sock.set_timeout(1),
    ):
        with pytest.raises(ClosedError):
            call()


@pytest.mark.parametrize("kind", kind_params(DATAGRAM_KINDS))
def test_a_bound_socket_has_an_address_and_answers_any_sender(
    kind: str, make_address: Callable[[str], str]
) -> None:
    """``.address`` like a Listener's (never None for a bound socket), and ``sendto`` takes
    the sender ``recvfrom`` returned as it is (the README's snippet type-checks)."""
    with enchufe.bind_datagram(make_address(kind)) as mailbox:
        address: SocketAddress = mailbox.address
        assert address == mailbox.local_address
        with enchufe.connect_datagram(connectable(address)) as letter:
            letter.set_timeout(IO_TIMEOUT)
            mailbox.set_timeout(IO_TIMEOUT)
            letter.send(b"ping")
            _data, sender = mailbox.recvfrom()
            mailbox.sendto(b"pong", sender)
            assert letter.recv() == b"pong"


def test_sendto_an_unbound_unix_sender_says_it_cannot_be_answered(make_address: Callable[[str], str]) -> None:
    with enchufe.bind_datagram(make_address("unixgram")) as mailbox:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unbound:
            unbound.sendto(b"who am i", str(mailbox.address).removeprefix("unixgram://"))
        mailbox.set_timeout(IO_TIMEOUT)
        _data, sender = mailbox.recvfrom()
        assert sender is None
        with pytest.raises(UsageError, match="unbound unix socket"):
            mailbox.sendto(b"reply", sender)


@pytest.mark.parametrize("kind", ["unixgram", "unixgram-stale-file", "unixgram-abstract"])
def test_a_reply_to_a_unix_peer_that_has_gone_says_so(kind: str, make_address: Callable[[str], str]) -> None:
    """A server answering a unix peer that closed its socket (or removed its file) is told that
    the peer has gone: not "start the server first", nor that a port answered 'unreachable'."""
    with enchufe.bind_datagram(make_address(kind.replace("-stale-file", ""))) as server:
        address = make_address(kind.replace("-stale-file", ""))
        if kind == "unixgram-stale-file":  # closed, its file left behind: ECONNREFUSED
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as raw:
                raw.bind(address.removeprefix("unixgram://"))
        else:  # enchufe removes its socket file on close (ENOENT); an abstract name just goes
            enchufe.bind_datagram(address).close()
        with pytest.raises(enchufe.ConnectionRefused) as info:
            server.sendto(b"reply", address)
    message = str(info.value)
    assert "port" not in message
    if kind == "unixgram":
        assert message.endswith("(start the server first, or the peer has gone)")
    else:
        assert message.endswith("any more (its socket is closed)")

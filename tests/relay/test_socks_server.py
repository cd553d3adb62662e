"""The SOCKS5 server on the relay (``RelayConfig(socks=…)``): handshakes over real sockets,
replies with their codes, destination rules on names and resolved addresses, the handshake's
time limit, and the relay's data path after it."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

import enchufe
from enchufe._hop_socks5 import udp_unwrap, udp_wrap
from enchufe._socks5_server import reply
from enchufe._socks_rules import DestRules, SocksPolicy
from enchufe.relay import RelayConfig

from .conftest import (
    STEP,
    RelayThread,
    Target,
    closed_by_peer,
    dial,
    digest_of,
    echo,
    exchange,
    read_all,
    relay_thread,
    wait_until,
)

USERS = {b"alice": b"s3cret"}


def socks(
    policy: SocksPolicy | None = None, **options: object
) -> contextlib.AbstractContextManager[RelayThread]:
    config = RelayConfig("tcp4://127.0.0.1:0", "-", socks=policy or SocksPolicy(), **options)  # type: ignore[arg-type]
    return relay_thread(config)


def request_bytes(host: str, port: int) -> bytes:
    """A CONNECT request as a client makes it: an IP literal as an address (IPv4 or IPv6)."""
    try:
        address = b"\x01" + socket.inet_pton(socket.AF_INET, host)
    except OSError:
        try:
            address = b"\x04" + socket.inet_pton(socket.AF_INET6, host)
        except OSError:
            address = b"\x03" + bytes([len(host)]) + host.encode()
    return b"\x05\x01\x00" + address + struct.pack(">H", port)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def open_tunnel(
    proxy: str, host: str, port: int, user: bytes | None = None, password: bytes = b""
) -> tuple[socket.socket, int]:
    """A client that speaks SOCKS5 by hand: the socket and the reply code (or -1: the server
    closed before replying)."""
    sock = dial(proxy, timeout=STEP)
    try:
        method = b"\x02" if user is not None else b"\x00"
        sock.sendall(b"\x05\x01" + method)
        if recv_exactly(sock, 2) != b"\x05" + method:
            return sock, -1
        if user is not None:
            sock.sendall(b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password)
            if recv_exactly(sock, 2) != b"\x01\x00":
                return sock, -1
        sock.sendall(request_bytes(host, port))
        head = recv_exactly(sock, 4)
        if len(head) < 4:
            return sock, -1
        recv_exactly(sock, {1: 4, 4: 16}[head[3]] + 2)
        return sock, head[1]
    except BaseException:
        sock.close()
        raise


@pytest.fixture
def echo_target() -> Iterator[Target]:
    with Target("tcp4://127.0.0.1:0", echo) as target:
        yield target


def port_of(target: Target) -> int:
    return int(target.address.rpartition(":")[2])


def test_connect_carries_both_ways_with_a_half_close(echo_target: Target) -> None:
    """A CONNECT by name: the relay's pumps carry a MiB each way, sha256-checked, and the
    client's EOF reaches the target (the echo ends only then)."""
    with socks() as relay:
        sock, code = open_tunnel(relay.address, "localhost", port_of(echo_target))
        with sock:
            assert code == 0
            done = exchange(sock, seed=7, size=1 << 20)
        assert done.received_digest == digest_of(7, 1 << 20) == done.sent_digest
        requests = relay.events.named("request")
        assert requests and requests[0]["destination"] == f"localhost:{port_of(echo_target)}"


def test_credentials_accepted_and_refused(echo_target: Target) -> None:
    with socks(SocksPolicy(users=USERS)) as relay:
        sock, code = open_tunnel(relay.address, "127.0.0.1", port_of(echo_target), b"alice", b"s3cret")
        with sock:
            assert code == 0
            sock.sendall(b"ping")
            assert recv_exactly(sock, 4) == b"ping"
        with dial(relay.address) as sock:
            sock.sendall(b"\x05\x01\x02\x01\x05alice\x05wrong")
            assert recv_exactly(sock, 4) == b"\x05\x02\x01\x01"  # status 1: refused
            assert closed_by_peer(sock, STEP)
        with dial(relay.address) as sock:  # no credentials offered
            sock.sendall(b"\x05\x01\x00")
            assert recv_exactly(sock, 2) == b"\x05\xff"
        assert "wrong" not in repr(relay.events.events)
        users = [e.get("user") for e in relay.events.named("request")]
        assert users == ["alice"]


@pytest.mark.parametrize(
    ("rules", "host"),
    [
        (DestRules.parse(deny=["127.0.0.0/8"]), "127.0.0.1"),
        # the name is not denied, but every address it resolves to is
        (DestRules.parse(deny=["127.0.0.0/8", "::1"]), "localhost"),
        (DestRules.parse(deny=["LocalHost"]), "localhost"),
        (DestRules.parse(allow=["192.0.2.0/24"]), "localhost"),
        # the unspecified addresses reach this host's loopback: judged as that
        (DestRules.parse(deny=["127.0.0.0/8"]), "0.0.0.0"),
        (DestRules.parse(deny=["::1"]), "::"),
        (DestRules.parse(allow=["192.0.2.0/24"]), "0.0.0.0"),
    ],
    ids=["cidr", "name-resolving-to-denied-ip", "name", "not-allowed", "any-v4", "any-v6", "any-not-allowed"],
)
def test_destination_rules_answer_reply_2(echo_target: Target, rules: DestRules, host: str) -> None:
    with socks(SocksPolicy(rules=rules)) as relay:
        sock, code = open_tunnel(relay.address, host, port_of(echo_target))
        with sock:
            assert code == 2
            assert closed_by_peer(sock, STEP)
        refused = relay.events.named("refused")
        assert refused and refused[0]["reply"] == 2
    assert echo_target.accepted == 0


def test_the_unspecified_address_reaches_this_host_when_no_rule_denies_it(echo_target: Target) -> None:
    """What the rule tests above deny is real: 0.0.0.0 connects to the loopback target."""
    with socks(SocksPolicy(rules=DestRules.parse(deny=["10.0.0.0/8"]))) as relay:
        sock, code = open_tunnel(relay.address, "0.0.0.0", port_of(echo_target))
        with sock:
            assert code == 0
            sock.sendall(b"here")
            assert recv_exactly(sock, 4) == b"here"
    assert echo_target.accepted == 1


def test_an_allowed_name_passes_and_its_port_counts(echo_target: Target) -> None:
    port = port_of(echo_target)
    rules = DestRules.parse(allow=[f"localhost:{port}"], deny=["::1"])
    with socks(SocksPolicy(rules=rules)) as relay:
        sock, code = open_tunnel(relay.address, "localhost", port)
        with sock:
            assert code == 0
        sock, code = open_tunnel(relay.address, "localhost", port + 1 if port < 65535 else port - 1)
        with sock:
            assert code == 2


def test_a_refused_target_answers_reply_5_and_the_server_goes_on(echo_target: Target) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    with socks() as relay:
        sock, code = open_tunnel(relay.address, "127.0.0.1", closed_port)
        with sock:
            assert code == 5
        sock, code = open_tunnel(relay.address, "127.0.0.1", port_of(echo_target))
        with sock:
            assert code == 0


def test_a_target_that_never_answers_is_reply_6() -> None:
    """A listener whose queue is full drops the SYNs: --connect-timeout, then reply 6."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        queued = [socket.socket() for _ in range(2)]
        try:
            for sock in queued:
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))
            with socks(connect_timeout=0.3) as relay:
                sock, code = open_tunnel(relay.address, "127.0.0.1", port)
                with sock:
                    assert code == 6
        finally:
            for sock in queued:
                sock.close()


def test_an_unknown_name_is_reply_4(echo_target: Target) -> None:
    with socks() as relay:
        sock, code = open_tunnel(relay.address, "no-such-host.invalid", 80)
        with sock:
            assert code == 4


def raw_connect(proxy: str, address: bytes, port: int) -> tuple[socket.socket, bytes]:
    """A CONNECT for ``address`` (its ATYP byte first): the socket and the whole reply."""
    sock = dial(proxy, timeout=STEP)
    sock.sendall(b"\x05\x01\x00")
    assert recv_exactly(sock, 2) == b"\x05\x00"
    sock.sendall(b"\x05\x01\x00" + address + struct.pack(">H", port))
    head = recv_exactly(sock, 4)
    if len(head) < 4:
        return sock, head
    return sock, head + recv_exactly(sock, {1: 4, 4: 16}[head[3]] + 2)


def test_an_ipv4_mapped_address_reaches_the_ipv4_target_and_rules_judge_it(echo_target: Target) -> None:
    """A request for ::ffff:127.0.0.1 goes out over IPv6 to the IPv4 target; the reply names
    the bound address as the IPv4 one it is; and --deny-dest 127.0.0.0/8 denies it."""
    mapped = b"\x04" + ipaddress.IPv6Address("::ffff:127.0.0.1").packed
    with socks() as relay:
        sock, answer = raw_connect(relay.address, mapped, port_of(echo_target))
        with sock:
            assert answer[:4] == b"\x05\x00\x00\x01" and answer[4:8] == socket.inet_aton("127.0.0.1")
            sock.sendall(b"ping")
            sock.shutdown(socket.SHUT_WR)
            assert read_all(sock) == b"ping"
        requests = relay.events.named("request")
        assert requests and requests[0]["destination"] == f"[::ffff:7f00:1]:{port_of(echo_target)}"
    with socks(SocksPolicy(rules=DestRules.parse(deny=["127.0.0.0/8"]))) as relay:
        sock, answer = raw_connect(relay.address, mapped, port_of(echo_target))
        with sock:
            assert answer[1] == 2
            assert closed_by_peer(sock, STEP)
    assert echo_target.accepted == 1


def test_an_address_with_port_0_is_reply_4(echo_target: Target) -> None:
    with socks() as relay:
        sock, answer = raw_connect(relay.address, b"\x01" + socket.inet_aton("127.0.0.1"), 0)
        with sock:
            assert answer[1] == 4
            assert closed_by_peer(sock, STEP)
        refused = relay.events.named("refused")
        assert refused and "port 0" in refused[0]["detail"]


def test_unsupported_commands_and_address_types() -> None:
    with socks() as relay:
        with dial(relay.address) as sock:
            sock.sendall(b"\x05\x01\x00\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50")  # BIND
            assert recv_exactly(sock, 12) == b"\x05\x00" + reply(7)
        with dial(relay.address) as sock:
            sock.sendall(b"\x05\x01\x00\x05\x01\x00\x07\x7f\x00\x00\x01\x00\x50")
            assert recv_exactly(sock, 12) == b"\x05\x00" + reply(8)


def test_a_trickling_client_is_cut_at_the_timeout_while_others_are_served(echo_target: Target) -> None:
    with socks(SocksPolicy(handshake_timeout=0.5)) as relay:
        with dial(relay.address) as slow:
            slow.sendall(b"\x05")  # a greeting, one byte of it
            started = time.monotonic()
            sock, code = open_tunnel(relay.address, "127.0.0.1", port_of(echo_target))
            with sock:
                assert code == 0
                sock.sendall(b"served")
                assert recv_exactly(sock, 6) == b"served"
            assert closed_by_peer(slow, STEP)
            assert time.monotonic() - started >= 0.3
        refused = relay.events.named("refused")
        assert any("--handshake-timeout" in e["detail"] for e in refused)


def test_each_waiting_client_is_cut_at_its_own_time_and_a_served_one_never(echo_target: Target) -> None:
    """One timer bounds every handshake: the client that came later is cut at its own time, not
    with the first; one that finished its handshake after waiting keeps its tunnel."""
    timeout = 0.6
    with socks(SocksPolicy(handshake_timeout=timeout)) as relay:
        served, code = open_tunnel(relay.address, "127.0.0.1", port_of(echo_target))
        with served, dial(relay.address) as first:
            assert code == 0
            first_started = time.monotonic()
            time.sleep(timeout / 2)
            with dial(relay.address) as second:
                second.sendall(b"\x05\x01\x00")
                assert recv_exactly(second, 2) == b"\x05\x00"
                second_started = time.monotonic()
                assert closed_by_peer(first, STEP)
                first_waited = time.monotonic() - first_started
                assert closed_by_peer(second, STEP)
                second_waited = time.monotonic() - second_started
            served.sendall(b"still here")
            assert recv_exactly(served, 10) == b"still here"
        details = sorted(e["detail"] for e in relay.events.named("refused"))
    assert first_waited >= timeout - 0.05 and second_waited >= timeout - 0.05
    assert details == [
        "waited 0.6 s for its greeting (--handshake-timeout)",
        "waited 0.6 s for its request (--handshake-timeout)",
    ]


def test_a_client_that_leaves_mid_handshake_is_one_line_naming_what_it_left_before(
    echo_target: Target,
) -> None:
    with socks() as relay:
        with dial(relay.address) as half:
            half.sendall(b"\x05")
            half.shutdown(socket.SHUT_WR)
            assert closed_by_peer(half, STEP)
        with dial(relay.address) as greeted:
            greeted.sendall(b"\x05\x01\x00")
            assert recv_exactly(greeted, 2) == b"\x05\x00"
            greeted.shutdown(socket.SHUT_WR)
            assert closed_by_peer(greeted, STEP)
        with dial(relay.address) as reset:
            reset.sendall(b"\x05\x01\x00")
            assert recv_exactly(reset, 2) == b"\x05\x00"
            reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        wait_until(lambda: len(relay.events.named("refused")) == 3, "three refusals")
        sock, code = open_tunnel(relay.address, "127.0.0.1", port_of(echo_target))
        with sock:
            assert code == 0
        details = [e["detail"] for e in relay.events.named("refused")]
    assert details[:2] == ["it closed before its greeting", "it closed before its request"]
    assert details[2].startswith("its connection failed: ")


def test_garbage_is_refused_and_the_server_serves_on(echo_target: Target) -> None:
    with socks() as relay:
        # Neither SOCKS5 (byte 5 first) nor HTTP (a capital letter first): closed, nothing said.
        for garbage in (b"\x16\x03\x01\x00\x05hello", b"\x80" + os.urandom(63), b"get / http/1.1\r\n\r\n"):
            with dial(relay.address) as sock:
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                    sock.sendall(garbage)
                assert closed_by_peer(sock, STEP)
        with dial(relay.address) as sock:  # HTTP, but not a CONNECT: told so, then closed
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_all(sock).startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
        sock, code = open_tunnel(relay.address, "127.0.0.1", port_of(echo_target))
        with sock:
            assert code == 0


def test_only_a_client_s_first_bytes_choose_http(echo_target: Target) -> None:
    """A SOCKS5 greeting that arrives in two reads, the second beginning with a capital letter's
    byte (65 methods offered): still SOCKS5."""
    with socks() as relay, dial(relay.address) as sock:
        sock.sendall(b"\x05")
        time.sleep(0.2)  # the server reads the first byte alone
        sock.sendall(bytes([0x41]) + bytes(range(0x41)))
        assert recv_exactly(sock, 2) == b"\x05\x00"
        sock.sendall(request_bytes("127.0.0.1", port_of(echo_target)))
        assert recv_exactly(sock, 10)[:2] == b"\x05\x00"


def http_tunnel(proxy: str, target: str, *headers: str) -> tuple[socket.socket, bytes]:
    """A client that speaks HTTP CONNECT by hand: the socket and the response's head."""
    sock = dial(proxy, timeout=STEP)
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}", *headers, "", ""]
    sock.sendall("\r\n".join(lines).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        byte = sock.recv(1)
        if not byte:
            break
        head += byte
    return sock, head


def test_an_http_connect_client_is_served_too(echo_target: Target) -> None:
    """The same listener takes curl --proxy's and ncat --proxy-type http's CONNECT: 200, then
    the tunnel both ways with a half-close; every byte checked."""
    with socks() as relay:
        sock, head = http_tunnel(relay.address, f"127.0.0.1:{port_of(echo_target)}")
        with sock:
            assert head == b"HTTP/1.1 200 Connection established\r\n\r\n"
            result = exchange(sock, 7, 300_000)
        assert result.received == 300_000 and result.received_digest == result.sent_digest
        wait_until(lambda: bool(relay.events.named("close")), "the close")
    (request,) = relay.events.named("request")
    assert request["command"] == "CONNECT"


def test_http_connect_refusals_are_http_responses(echo_target: Target) -> None:
    port = port_of(echo_target)
    policy = SocksPolicy(users=USERS, rules=DestRules.parse(deny=["10.0.0.0/8"]))
    alice = "Proxy-Authorization: Basic " + base64.b64encode(b"alice:s3cret").decode()
    with socks(policy) as relay:
        sock, head = http_tunnel(relay.address, f"127.0.0.1:{port}")
        with sock:
            assert head.startswith(b"HTTP/1.1 407 ") and closed_by_peer(sock, STEP)
        sock, head = http_tunnel(relay.address, "10.1.2.3:80", alice)
        with sock:
            assert head.startswith(b"HTTP/1.1 403 ") and closed_by_peer(sock, STEP)
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            free = unused.getsockname()[1]
        sock, head = http_tunnel(relay.address, f"127.0.0.1:{free}", alice)
        with sock:
            assert head.startswith(b"HTTP/1.1 502 ") and closed_by_peer(sock, STEP)
        # -v says the status the client got (and SOCKS's words for why), not a SOCKS reply
        (said,) = [message for name, message, _fields in relay.events.events if name == "reply"]
        assert said.endswith(" HTTP 502: connection refused by the target"), said
        assert relay.events.named("reply")[0]["status"] == 502
        sock, head = http_tunnel(relay.address, f"127.0.0.1:{port}", alice)
        with sock:
            assert head.startswith(b"HTTP/1.1 200 ")
            sock.sendall(b"authenticated")
            assert recv_exactly(sock, 13) == b"authenticated"
    assert [r["user"] for r in relay.events.named("request")][-1] == "alice"


def test_bytes_sent_with_the_request_reach_the_target(echo_target: Target) -> None:
    """A client that does not wait for the reply: what followed its request goes first."""
    with socks() as relay, dial(relay.address) as sock:
        sock.sendall(b"\x05\x01\x00" + request_bytes("127.0.0.1", port_of(echo_target)) + b"early")
        assert recv_exactly(sock, 2 + 10)[:4] == b"\x05\x00\x05\x00"
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock) == b"early"


def test_a_name_with_a_newline_never_forges_a_log_line() -> None:
    with socks() as relay, dial(relay.address) as sock:
        sock.sendall(b"\x05\x01\x00\x05\x01\x00\x03\x0dx\nrefused all\x00\x50")
        assert recv_exactly(sock, 12)[3] == 4
        assert closed_by_peer(sock, STEP)
        messages = [message for _name, message, _fields in relay.events.events]
        assert all("\n" not in message for message in messages)
        assert any("x\\nrefused all" in message for message in messages)


# ----------------------------------------------------------------------------- UDP ASSOCIATE


class UdpEcho:
    """A UDP server that sends every datagram back, and keeps them (each one, whole)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.seen: list[bytes] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.seen.append(data)
            self.sock.sendto(data, source)

    def close(self) -> None:
        self._stop = True
        self._thread.join(STEP)
        self.sock.close()


@pytest.fixture
def udp_echo() -> Iterator[UdpEcho]:
    server = UdpEcho()
    yield server
    server.close()


@contextlib.contextmanager
def association(proxy: str) -> Iterator[tuple[socket.socket, socket.socket, tuple[str, int]]]:
    """The control connection, the client's UDP socket and where the relay takes datagrams."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(STEP)
    control = dial(proxy, timeout=STEP)
    try:
        control.sendall(
            b"\x05\x01\x00\x05\x03\x00\x01\x7f\x00\x00\x01" + struct.pack(">H", udp.getsockname()[1])
        )
        answer = recv_exactly(control, 12)
        assert answer[:4] == b"\x05\x00\x05\x00" and answer[5:6] == b"\x01", answer
        bound = (socket.inet_ntoa(answer[6:10]), struct.unpack(">H", answer[10:12])[0])
        yield control, udp, bound
    finally:
        control.close()
        udp.close()


def quiet(sock: socket.socket, seconds: float = 0.3) -> bool:
    """Nothing comes to ``sock`` for ``seconds``."""
    sock.settimeout(seconds)
    try:
        sock.recv(65535)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(STEP)
    return False


def test_udp_associate_relays_datagram_by_datagram(udp_echo: UdpEcho) -> None:
    sizes = [1, 1400, 4000, 65000, 7]
    with socks() as relay, association(relay.address) as (_control, udp, bound):
        for index, size in enumerate(sizes):
            payload = bytes([index]) * size
            host = "localhost" if index % 2 else "127.0.0.1"  # by name, and by address
            udp.sendto(udp_wrap(host, udp_echo.port, payload), bound)
            answer = udp_unwrap(udp.recv(65535))
            assert answer == ("127.0.0.1", udp_echo.port, payload)
        assert [len(d) for d in udp_echo.seen] == sizes
    wait_until(lambda: bool(relay.events.named("close")), "the association's end")
    (close,) = relay.events.named("close")
    assert close["to_target"] == close["to_client"] == sum(sizes)


def test_udp_from_anyone_else_and_to_denied_destinations_is_dropped(udp_echo: UdpEcho) -> None:
    rules = DestRules.parse(
        deny=["localhost", f"127.0.0.1:{udp_echo.port + 1 if udp_echo.port < 65535 else 1}"]
    )
    with socks(SocksPolicy(rules=rules)) as relay, association(relay.address) as (_control, udp, bound):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.bind(("127.0.0.1", 0))
            stranger.sendto(udp_wrap("127.0.0.1", udp_echo.port, b"not yours"), bound)
            assert quiet(stranger)
        udp.sendto(udp_wrap("localhost", udp_echo.port, b"denied name"), bound)
        udp.sendto(
            b"\x00\x00\x01\x01\x7f\x00\x00\x01" + struct.pack(">H", udp_echo.port) + b"fragment", bound
        )
        assert quiet(udp)
        udp.sendto(udp_wrap("127.0.0.1", udp_echo.port, b"fine"), bound)
        assert udp_unwrap(udp.recv(65535)) == ("127.0.0.1", udp_echo.port, b"fine")
        # the datagram the rules dropped is said (the stranger's and the fragment are not theirs)
        dropped = relay.events.named("refused")
        lines = [line for name, line, _fields in relay.events.events if name == "refused"]
    assert udp_echo.seen == [b"fine"]
    assert [(d["reason"], d["destination"]) for d in dropped] == [("socks-udp", f"localhost:{udp_echo.port}")]
    assert "dropped a datagram" in lines[0] and "--deny-dest localhost" in lines[0]


def test_udp_to_the_unspecified_address_is_judged_and_answered_as_loopback(udp_echo: UdpEcho) -> None:
    """A datagram to 0.0.0.0 goes where the kernel takes it, 127.0.0.1: a rule denying loopback
    drops it; without one its answer comes back, from the address it really went to."""
    denied = SocksPolicy(rules=DestRules.parse(deny=["127.0.0.0/8"]))
    with socks(denied) as relay, association(relay.address) as (_control, udp, bound):
        udp.sendto(udp_wrap("0.0.0.0", udp_echo.port, b"denied"), bound)
        assert quiet(udp)
        (dropped,) = relay.events.named("refused")
    assert udp_echo.seen == []
    assert "0.0.0.0, that is 127.0.0.1" in dropped["detail"]
    with socks() as relay, association(relay.address) as (_control, udp, bound):
        udp.sendto(udp_wrap("0.0.0.0", udp_echo.port, b"this host"), bound)
        assert udp_unwrap(udp.recv(65535)) == ("127.0.0.1", udp_echo.port, b"this host")
    assert udp_echo.seen == [b"this host"]


def test_the_library_s_datagram_socket_through_the_server_and_its_close(udp_echo: UdpEcho) -> None:
    """enchufe.connect_datagram(…, via=…) against this server: datagrams both ways, a payload
    that looks like a header is carried as it is, and closing the socket ends the association."""
    with socks() as relay:
        proxy = f"socks5://{str(relay.address).removeprefix('tcp://')}"
        with enchufe.connect_datagram(f"udp://127.0.0.1:{udp_echo.port}", via=proxy, timeout=STEP) as dgram:
            dgram.set_timeout(STEP)
            for payload in (b"one", b"\x00\x00\x00\x01 looks like a header", bytes(3000)):
                dgram.send(payload)
                assert dgram.recvfrom() == (payload, enchufe.InetAddress("udp", "127.0.0.1", udp_echo.port))
        wait_until(lambda: bool(relay.events.named("close")), "the association's end")
    assert udp_echo.seen == [b"one", b"\x00\x00\x00\x01 looks like a header", bytes(3000)]


def test_the_association_ends_with_its_control_connection(udp_echo: UdpEcho) -> None:
    with socks() as relay:
        with association(relay.address) as (_control, udp, bound):
            udp.sendto(udp_wrap("127.0.0.1", udp_echo.port, b"1"), bound)
            assert udp.recv(65535).endswith(b"1")
        wait_until(lambda: relay.relay.open_connections == 0, "the association's end")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as late:
            late.sendto(udp_wrap("127.0.0.1", udp_echo.port, b"2"), bound)
            assert quiet(late)
        assert udp_echo.seen == [b"1"]


def test_behind_a_proxy_the_client_its_header_names_is_the_peer(echo_target: Target) -> None:
    """--accept-proxy: the PROXY header first, then the SOCKS handshake; events name the client
    the header named, and --allow/--deny judge it."""
    header = b"PROXY TCP4 203.0.113.7 127.0.0.1 4000 1080\r\n"
    with socks(accept_proxy=True) as relay, dial(relay.address) as sock:
        sock.sendall(header + b"\x05\x01\x00" + request_bytes("127.0.0.1", port_of(echo_target)))
        assert recv_exactly(sock, 12)[:4] == b"\x05\x00\x05\x00"
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"ping"
        (request,) = relay.events.named("request")
        assert request["peer"] == "tcp://203.0.113.7:4000"


@pytest.mark.parametrize("split", [False, True])
def test_behind_a_proxy_the_handshake_may_come_with_the_header_or_after_it(
    echo_target: Target, split: bool
) -> None:
    """What came with the header is the handshake's start (read with it in one call), and what
    follows is read as it comes; bytes after the request reach the target."""
    header = b"PROXY TCP4 203.0.113.7 127.0.0.1 4000 1080\r\n"
    with socks(accept_proxy=True) as relay, dial(relay.address) as sock:
        sock.sendall(header + b"\x05\x01" if split else header + b"\x05\x01\x00")
        if split:
            time.sleep(0.05)
            sock.sendall(b"\x00")
        assert recv_exactly(sock, 2) == b"\x05\x00"
        sock.sendall(request_bytes("127.0.0.1", port_of(echo_target)) + b"early")
        assert recv_exactly(sock, 10)[:2] == b"\x05\x00"
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock) == b"early"
        (request,) = relay.events.named("request")
    assert request["peer"] == "tcp://203.0.113.7:4000"


@pytest.mark.parametrize("header", [b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00", b"PROXY UNKNOWN\r\n"])
def test_behind_a_proxy_a_header_without_an_address_leaves_udp_to_the_connection_s_peer(
    udp_echo: UdpEcho, header: bytes
) -> None:
    """A LOCAL (v2) or UNKNOWN (v1) header names no client: UDP ASSOCIATE takes the datagrams
    of the connection's own peer, as without a header (it was refused: 'needs a TCP client')."""
    with socks(accept_proxy=True) as relay:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(STEP)
        with udp, dial(relay.address, timeout=STEP) as control:
            control.sendall(
                header
                + b"\x05\x01\x00\x05\x03\x00\x01\x7f\x00\x00\x01"
                + struct.pack(">H", udp.getsockname()[1])
            )
            answer = recv_exactly(control, 12)
            assert answer[:4] == b"\x05\x00\x05\x00", answer
            bound = (socket.inet_ntoa(answer[6:10]), struct.unpack(">H", answer[10:12])[0])
            udp.sendto(udp_wrap("127.0.0.1", udp_echo.port, b"through"), bound)
            assert udp_unwrap(udp.recv(65535)) == ("127.0.0.1", udp_echo.port, b"through")


def test_the_connect_time_is_the_target_s_not_the_client_s_handshake(echo_target: Target) -> None:
    """ "connected to … in N ms" times the connect the request asked for: a client that waits
    before its request does not make the target look slow."""
    with socks() as relay, dial(relay.address) as sock:
        sock.sendall(b"\x05\x01\x00")
        assert recv_exactly(sock, 2) == b"\x05\x00"
        time.sleep(0.6)
        sock.sendall(request_bytes("127.0.0.1", port_of(echo_target)))
        assert recv_exactly(sock, 10)[:2] == b"\x05\x00"
        wait_until(lambda: bool(relay.events.named("connect")), "the connect event")
        (connect,) = relay.events.named("connect")
    assert connect["seconds"] < 0.5, connect


def test_udp_associate_on_a_unix_listener_is_reply_7(sock_dir: str) -> None:
    """A unix client has no address its datagrams could be told by: refused, not a crash."""
    config = RelayConfig(f"unix://{sock_dir}/socks.sock", "-", socks=SocksPolicy())
    with relay_thread(config) as relay, dial(relay.address) as sock:
        sock.sendall(b"\x05\x01\x00\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00")
        assert recv_exactly(sock, 12) == b"\x05\x00" + reply(7)
        assert closed_by_peer(sock, STEP)
        assert not relay.events.named("error")


def test_a_resolver_that_does_not_answer_is_reply_4_at_the_connect_timeout(
    echo_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names are resolved off the loop: while one lookup hangs (a DNS server that never
    answers, here a lookup held back), others are served, and the waiting client is told 4."""
    from enchufe.relay import lookups

    release = threading.Event()
    real = lookups._answer

    def held(address: object) -> object:
        if getattr(address, "host", "") == "slow.example":
            release.wait(STEP)
        return real(address)  # type: ignore[arg-type]

    monkeypatch.setattr(lookups, "_answer", held)
    try:
        with socks(connect_timeout=0.5) as relay:
            with dial(relay.address) as slow:
                slow.sendall(b"\x05\x01\x00" + request_bytes("slow.example", 80))
                sock, code = open_tunnel(relay.address, "localhost", port_of(echo_target))
                with sock:
                    assert code == 0
                started = time.monotonic()
                assert recv_exactly(slow, 12)[2:4] == b"\x05\x04"
                assert time.monotonic() - started < STEP
            wait_until(
                lambda: any(
                    "no answer from the resolver" in e["detail"] for e in relay.events.named("refused")
                ),
                "the refusal's line",
            )
    finally:
        release.set()


def test_lookups_of_clients_that_are_gone_do_not_hold_the_threads(
    echo_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of names a DNS server sits on: each client is told 4 at the connect timeout,
    and its lookup, still queued behind the busy threads, is dropped rather than run later
    while new clients wait behind it."""
    from enchufe.relay import lookups

    release = threading.Event()
    started: list[str] = []
    real = lookups._answer

    def held(address: object) -> object:
        host = getattr(address, "host", "")
        started.append(host)
        if host != "localhost":
            release.wait(STEP)
        return real(address)  # type: ignore[arg-type]

    monkeypatch.setattr(lookups, "_answer", held)
    monkeypatch.setattr(lookups, "MAX_THREADS", 1)
    try:
        with socks(connect_timeout=0.3) as relay:
            with dial(relay.address) as busy, dial(relay.address) as queued:
                busy.sendall(b"\x05\x01\x00" + request_bytes("slow.example", 80))
                wait_until(lambda: started == ["slow.example"], "the first lookup under way")
                queued.sendall(b"\x05\x01\x00" + request_bytes("queued.example", 80))
                assert recv_exactly(busy, 12)[2:4] == b"\x05\x04"
                assert recv_exactly(queued, 12)[2:4] == b"\x05\x04"
            release.set()
            sock, code = open_tunnel(relay.address, "localhost", port_of(echo_target))
            with sock:
                assert code == 0
            assert "queued.example" not in started
    finally:
        release.set()

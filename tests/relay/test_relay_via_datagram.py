"""``enchufe relay udp://… udp://… --via socks5://…``: each sender's datagrams through its own
SOCKS5 UDP association (:mod:`enchufe.relay.via_datagram`).

Through proxies we did not write (dante; microsocks, which does no UDP, for its refusal; ``CI``
set: missing is a failure), through enchufe's own SOCKS server with credentials, and through a
small proxy written here where a behaviour must be forced: one that plays the proxy's UDP relay
itself (what the relay sends it is checked; what it answers is chosen, malformed replies
included), one that closes the association, one that never answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from enchufe import proxyproto
from enchufe.address import parse as proxyproto_address
from enchufe.relay.via_datagram import ASSOCIATION_BACKLOG
from tests.interop.conftest import Proc, Where, danted_config, listening_address, spawn, wait_bound
from tests.interop.conftest import enchufe as enchufe_argv
from tests.interop.test_interop_via import _free_port, _tool

from .conftest import STEP, RelayProc, StartRelay, datagram_socket, final_summary

pytestmark = pytest.mark.interop

#: Linux's SO_RCVBUFFORCE (not in Python's socket module): a receive buffer past rmem_max, for root.
SO_RCVBUFFORCE = 33

#: Datagrams of each sender, of sizes a SOCKS5 UDP header must not disturb (4000: larger than
#: one Ethernet frame, one datagram still).
SIZES = (1, 200, 1400, 4000, 0x3FF)


def _datagrams(seed: int) -> list[bytes]:
    return [bytes([seed]) + os.urandom(size - 1) if size > 1 else bytes([seed]) for size in SIZES]


def _sha(datagrams: list[bytes]) -> str:
    return hashlib.sha256(b"".join(struct.pack("!I", len(d)) + d for d in datagrams)).hexdigest()


@pytest.fixture
def udp_echo() -> Iterator[int]:
    """An enchufe echo server on udp://127.0.0.1: its port."""
    with spawn(enchufe_argv("echo", "udp://127.0.0.1:0"), "enchufe echo udp") as server:
        yield int(listening_address(server).rsplit(":", 1)[1])


@pytest.fixture
def dante(tmp_path: Path, udp_echo: int) -> Iterator[str]:
    """danted allowing UDP associations to the echo server only: its URL."""
    path = _tool("danted", "/usr/sbin/danted")
    port = _free_port()
    config = tmp_path / "danted.conf"
    config.write_text(danted_config(port, udp_echo, "udpassociate"))
    proc = Proc([path, "-f", str(config), "-N", "1"], "danted")
    try:
        wait_bound(Where("tcp4", port=port), proc)
        yield f"socks5://127.0.0.1:{port}"
    finally:
        proc.kill()


@pytest.fixture
def enchufe_socks() -> Iterator[str]:
    """enchufe's own SOCKS server, with a username and password: its URL with them."""
    argv = enchufe_argv("socks", "tcp://127.0.0.1:0", "--auth", "alice:s3cret")
    with spawn(argv, "enchufe socks") as server:
        port = int(listening_address(server).rsplit(":", 1)[1])
        yield f"socks5://alice:s3cret@127.0.0.1:{port}"


def _stopped_after_one_failure(relay: RelayProc) -> None:
    """Stop the relay: exit 0, and its summary counts one target failure and one dropped
    datagram (the one that waited for the association)."""
    relay.signal()
    assert relay.finish() == 0
    assert "1 target failures" in relay.err and "1 dropped" in relay.err, relay.err


def _exchange(relay_address: str, seed: int) -> tuple[str, str]:
    """One sender: its datagrams one by one, each echoed back whole before the next goes; the
    digests of what went and what came back."""
    sent = _datagrams(seed)
    got = []
    with datagram_socket(relay_address, timeout=STEP) as sock:
        for datagram in sent:
            sock.send(datagram)
            got.append(sock.recv(65536))
    return _sha(sent), _sha(got)


@pytest.mark.parametrize("proxy", ["dante", "enchufe_socks"])
def test_senders_datagrams_go_whole_through_their_own_associations(
    proxy: str, request: pytest.FixtureRequest, udp_echo: int, start_relay: StartRelay
) -> None:
    """Four senders at once, through dante (by name: the proxy resolves ``localhost``) and
    through enchufe socks with credentials: every datagram comes back whole (sha256 over the
    sizes and bytes of each sender's), and the first of each, sent before its association was
    open, is not lost."""
    url = request.getfixturevalue(proxy)
    relay = start_relay(
        "udp://127.0.0.1:0", f"udp://localhost:{udp_echo}", "--via", url, "--json", "--stats=60"
    )
    results: dict[int, tuple[str, str]] = {}

    def sender(seed: int) -> None:
        results[seed] = _exchange(relay.address, seed)

    threads = [threading.Thread(target=sender, args=(seed,)) for seed in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(STEP * 2)
    assert sorted(results) == [1, 2, 3, 4], relay.err
    for seed, (sent, got) in results.items():
        assert got == sent, f"sender {seed}"
    summary = final_summary(relay)
    count = 4 * len(SIZES)
    assert (summary["datagrams_to_target"], summary["datagrams_to_client"]) == (count, count), summary
    assert summary["to_target"] == summary["to_client"] == 4 * sum(SIZES)
    assert summary["total"] == 4 and summary["dropped"] == 0 and summary["failed"] == 0, summary
    assert ":s3cret@" not in relay.err


def test_microsocks_which_does_no_udp_is_named_with_its_reason(
    udp_echo: int, start_relay: StartRelay
) -> None:
    path = _tool("microsocks", "/usr/bin/microsocks")
    port = _free_port()
    with spawn([path, "-i", "127.0.0.1", "-p", str(port)], "microsocks") as proxy:
        wait_bound(Where("tcp4", port=port), proxy)
        relay = start_relay(
            "udp://127.0.0.1:0",
            f"udp://127.0.0.1:{udp_echo}",
            "--via",
            f"socks5://127.0.0.1:{port}",
            "--stats=60",
        )
        with datagram_socket(relay.address) as sock:
            sock.send(b"anyone?")
        relay.wait_err(
            rf"^enchufe: cannot reach udp://127\.0\.0\.1:{udp_echo} for udp://127\.0\.0\.1:\d+: "
            rf"via socks5://127\.0\.0\.1:{port}: command not supported by the proxy \(SOCKS reply 7\)$"
        )
        _stopped_after_one_failure(relay)


# ----------------------------------------------------------------------------- a proxy of our own


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the relay closed during the handshake"
        data += chunk
    return data


def _relayed(payload: bytes, host: str = "127.0.0.1", port: int = 53) -> bytes:
    """``payload`` as a SOCKS5 UDP relay hands it over: no fragment, from ``host``:``port``."""
    return b"\x00\x00\x00\x01" + socket.inet_aton(host) + struct.pack("!H", port) + payload


class _OwnProxy:
    """A SOCKS5 proxy for one association that plays its UDP relay itself: the greeting and the
    UDP ASSOCIATE request are checked and answered (naming :attr:`udp` as the relay); then the
    test sees what the relay sends there and answers what it likes.  ``answer=False``: a proxy
    that takes the connection and never says a word; ``gate``: one that answers the request
    only once it is set; ``relay_name``: one that names its relay by that host name."""

    def __init__(
        self, *, answer: bool = True, gate: threading.Event | None = None, relay_name: bytes = b""
    ) -> None:
        self.gate = gate
        self.relay_name = relay_name
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(STEP)
        self.relay_port: int = self.udp.getsockname()[1]
        self.control: socket.socket | None = None
        self.request = b""
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(answer,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"socks5://127.0.0.1:{self.port}"

    def _serve(self, answer: bool) -> None:
        with contextlib.suppress(OSError):
            self.control, _peer = self.listener.accept()
            self.control.settimeout(STEP)
            if not answer:
                self.ready.set()
                return
            assert _recv_exactly(self.control, 3) == b"\x05\x01\x00"  # no authentication offered
            self.control.sendall(b"\x05\x00")
            self.request = _recv_exactly(self.control, 10)  # UDP ASSOCIATE from an IPv4 address
            if self.gate is not None:
                self.gate.wait(STEP)
            if self.relay_name:
                bound = b"\x03" + bytes([len(self.relay_name)]) + self.relay_name
            else:
                bound = b"\x01" + socket.inet_aton("127.0.0.1")
            self.control.sendall(b"\x05\x00\x00" + bound + struct.pack("!H", self.relay_port))
            self.ready.set()

    def close(self) -> None:
        for sock in (self.control, self.listener, self.udp):
            if sock is not None:
                sock.close()
        self._thread.join(STEP)


@pytest.fixture
def own_proxy() -> Iterator[_OwnProxy]:
    proxy = _OwnProxy()
    try:
        yield proxy
    finally:
        proxy.close()


def test_the_socks_header_names_the_target_and_bad_replies_are_dropped(
    own_proxy: _OwnProxy, start_relay: StartRelay
) -> None:
    """What reaches the proxy's relay is the SOCKS5 UDP header (no fragment, the target by its
    name) before the datagram; of three replies, a fragment and a malformed one are dropped and
    counted, the good one reaches the sender without its header.  The proxy closing the TCP
    connection then ends the association, and the session."""
    relay = start_relay(
        "udp://127.0.0.1:0", "udp://target.example:5353", "--via", own_proxy.url, "--json", "-v", "--stats=60"
    )
    with datagram_socket(relay.address) as client:
        client.send(b"question")
        datagram, relay_udp = own_proxy.udp.recvfrom(65536)
        name = b"target.example"
        assert (
            datagram
            == b"\x00\x00\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", 5353) + b"question"
        )
        assert own_proxy.request[:4] == b"\x05\x03\x00\x01"  # UDP ASSOCIATE, from an IPv4 address
        assert struct.unpack("!H", own_proxy.request[8:10])[0] == relay_udp[1]  # the port it sends from
        source = b"\x01" + socket.inet_aton("192.0.2.7") + struct.pack("!H", 5353)
        own_proxy.udp.sendto(b"\x00\x00\x01" + source + b"a fragment", relay_udp)
        own_proxy.udp.sendto(b"\x00\x00", relay_udp)
        own_proxy.udp.sendto(_relayed(b"answer", "192.0.2.7", 5353), relay_udp)
        client.settimeout(STEP)
        assert client.recv(65536) == b"answer"
        assert own_proxy.control is not None
        own_proxy.control.close()
        own_proxy.control = None
        closed = relay.wait_err(r'"event": "close".*')
        assert "the proxy closed the association" in closed.group(0), closed.group(0)
    summary = final_summary(relay)
    assert (summary["datagrams_to_target"], summary["datagrams_to_client"], summary["dropped"]) == (1, 1, 2)


def test_a_proxy_that_never_answers_is_cut_at_connect_timeout(start_relay: StartRelay) -> None:
    mute = _OwnProxy(answer=False)
    try:
        relay = start_relay(
            "udp://127.0.0.1:0",
            "udp://127.0.0.1:53",
            "--via",
            mute.url,
            "--connect-timeout",
            "0.5",
            "--stats=60",
        )
        with datagram_socket(relay.address) as client:
            client.send(b"waits, then is lost")
            relay.wait_err(r"the proxy did not finish its handshake in time \(--connect-timeout\)")
        _stopped_after_one_failure(relay)
    finally:
        mute.close()


def test_a_proxy_that_is_down_is_named(start_relay: StartRelay) -> None:
    down = _free_port()
    relay = start_relay(
        "udp://127.0.0.1:0", "udp://127.0.0.1:53", "--via", f"socks5://u:pw@127.0.0.1:{down}", "--stats=60"
    )
    with datagram_socket(relay.address) as client:
        client.send(b"x")
        relay.wait_err(
            rf"^enchufe: cannot reach udp://127\.0\.0\.1:53 for udp://127\.0\.0\.1:\d+: the proxy "
            rf"socks5://u:\*\*\*@127\.0\.0\.1:{down}: connection refused"
        )
    _stopped_after_one_failure(relay)
    assert ":pw@" not in relay.err


def test_a_closed_udp_relay_at_the_proxy_is_said_once_and_counted(
    own_proxy: _OwnProxy, start_relay: StartRelay
) -> None:
    """The proxy named a UDP port where nothing listens (the proxy's relay died): ICMP port
    unreachable comes back for the datagrams sent there; one line says so, each is counted."""
    relay = start_relay("udp://127.0.0.1:0", "udp://127.0.0.1:53", "--via", own_proxy.url, "--stats=0.1")
    own_proxy.udp.close()  # the relay the handshake will name: nothing takes datagrams there
    with datagram_socket(relay.address) as client:
        client.send(b"first")
        assert own_proxy.ready.wait(STEP)
        line = relay.wait_err(
            r"^enchufe: the UDP relay of .* refused a datagram from udp://127\.0\.0\.1:\d+$"
        )
        assert f"the proxy {own_proxy.url}" in line.group(0)
        for _turn in range(3):
            client.send(b"more")
        relay.wait_err(r"datagrams 4 to target")
    relay.signal()
    assert relay.finish() == 0
    assert relay.err.count("refused a datagram") == 1, relay.err
    # Each datagram is sent (a send that meets an earlier one's refusal is tried again), and each
    # refusal the kernel reports is counted; two that come before either is read are one report.
    (summary,) = [line for line in relay.err.splitlines() if line.startswith("summary: ")]
    sent = int(re.search(r"datagrams (\d+) to target", summary).group(1))  # type: ignore[union-attr]
    dropped = int(re.search(r"(\d+) dropped", summary).group(1))  # type: ignore[union-attr]
    assert sent == 4 and 1 <= dropped <= 4, relay.err


def test_send_proxy_puts_the_sender_s_proxy_header_behind_the_socks_header(
    own_proxy: _OwnProxy, start_relay: StartRelay
) -> None:
    """--send-proxy v2 through the association: the target, behind the proxy, reads the sender
    and the address it sent to in a PROXY v2 header that comes after the SOCKS5 one (the
    proxy takes that one off); the counts are the sender's bytes only."""
    relay = start_relay(
        "udp://127.0.0.1:0", "udp://127.0.0.1:5353", "--via", own_proxy.url, "--send-proxy", "v2", "--json"
    )
    with datagram_socket(relay.address) as client:
        client.send(b"who am I")
        datagram, _relay_udp = own_proxy.udp.recvfrom(65536)
        socks = _relayed(b"", "127.0.0.1", 5353)
        assert datagram.startswith(socks)
        header = proxyproto.parse(datagram[len(socks) :])
        assert isinstance(header, proxyproto.ProxyHeader), header
        assert str(header.source) == f"udp://127.0.0.1:{client.getsockname()[1]}"
        assert str(header.destination) == relay.address
        assert datagram[len(socks) + header.consumed :] == b"who am I"
    summary = final_summary(relay)
    assert (summary["to_target"], summary["datagrams_to_target"]) == (len(b"who am I"), 1)


def test_datagrams_that_come_while_the_association_opens_wait_up_to_the_backlog(
    start_relay: StartRelay,
) -> None:
    """The proxy answers only after 300 datagrams of 1,000 bytes came: those that fit in
    ASSOCIATION_BACKLOG (each with its length and SOCKS5 header) reach the proxy's relay, in
    order; the rest are dropped and counted."""
    gate = threading.Event()
    proxy = _OwnProxy(gate=gate)
    with contextlib.suppress(OSError):  # root: room for the whole burst at the "relay"
        proxy.udp.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    try:
        relay = start_relay("udp://127.0.0.1:0", "udp://127.0.0.1:53", "--via", proxy.url, "--json")
        with datagram_socket(relay.address) as client:
            for index in range(300):
                client.send(struct.pack("!I", index) + bytes(996))
            relay.wait_err(r'"event": "session"')
            time.sleep(0.5)  # the relay reads all 300 while the proxy holds its answer
            gate.set()
            header = 10  # 00 00 00, ATYP 1, four address bytes, the port
            fit = ASSOCIATION_BACKLOG // (4 + header + 1000)
            got = [proxy.udp.recv(65536)[header : header + 4] for _ in range(fit)]
            assert got == [struct.pack("!I", index) for index in range(fit)]
        summary = final_summary(relay)
        assert (summary["datagrams_to_target"], summary["dropped"]) == (fit, 300 - fit), summary
    finally:
        proxy.close()


def test_the_relay_takes_its_pauses_from_a_sender_that_reads_slowly(
    tmp_path: Path, start_relay: StartRelay
) -> None:
    """A unix sender that does not read: replies wait (the relay stops reading the association
    meanwhile), then every one of them comes, in order, once it reads."""
    proxy = _OwnProxy()
    try:
        listen = f"unixgram://{tmp_path}/relay.sock"
        relay = start_relay(listen, "udp://127.0.0.1:53", "--via", proxy.url, "--json")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
            # Not connected: the kernel then holds at most 10 datagrams for it (a unix socket's
            # queue), and says EAGAIN to the relay's next one.
            client.bind(str(tmp_path / "client.sock"))
            client.sendto(b"go", str(tmp_path / "relay.sock"))
            _datagram, relay_udp = proxy.udp.recvfrom(65536)
            for index in range(100):  # far more than a unix socket's queue (10 by default)
                proxy.udp.sendto(_relayed(struct.pack("!I", index) + bytes(996)), relay_udp)
            time.sleep(0.5)
            client.settimeout(STEP)
            got = [client.recv(65536)[:4] for _ in range(100)]
        assert got == [struct.pack("!I", index) for index in range(100)]
        summary = final_summary(relay)
        assert (summary["datagrams_to_client"], summary["dropped"]) == (100, 0), summary
    finally:
        proxy.close()


def test_a_proxy_that_does_not_take_the_connection_is_cut_at_connect_timeout(start_relay: StartRelay) -> None:
    """The proxy's accept queue is full (the SYN is dropped): --connect-timeout ends the
    session, naming the proxy."""
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):  # backlog 0 takes one; the rest of these wait for their SYN-ACK
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            time.sleep(0.2)
            relay = start_relay(
                "udp://127.0.0.1:0",
                "udp://127.0.0.1:53",
                "--via",
                f"socks5://127.0.0.1:{port}",
                "--connect-timeout",
                "0.5",
                "--stats=60",
            )
            with datagram_socket(relay.address) as client:
                client.send(b"x")
                relay.wait_err(rf"the proxy socks5://127\.0\.0\.1:{port}: no answer within 0\.5 s$")
            _stopped_after_one_failure(relay)
        finally:
            for filler in fillers:
                filler.close()


def test_a_relay_named_by_a_host_name_is_refused_without_a_lookup(start_relay: StartRelay) -> None:
    """The proxy names its UDP relay "localhost": looking it up would block every session on the
    DNS, so the session ends with a line that says why."""
    proxy = _OwnProxy(relay_name=b"localhost")
    try:
        relay = start_relay("udp://127.0.0.1:0", "udp://127.0.0.1:53", "--via", proxy.url)
        with datagram_socket(relay.address) as client:
            client.send(b"x")
            relay.wait_err(r"named its UDP relay localhost:\d+ by a name, not an address$")
    finally:
        proxy.close()


def test_a_datagram_too_large_with_the_headers_is_dropped_and_the_session_goes_on(
    own_proxy: _OwnProxy, start_relay: StartRelay
) -> None:
    """65,507 bytes (UDP's most) cannot go with a SOCKS5 header: that one is dropped, said and
    counted; the next datagram of the sender goes.  A reply larger than --max-datagram is
    dropped and counted as truncated."""
    relay = start_relay(
        "udp://127.0.0.1:0", "udp://127.0.0.1:53", "--via", own_proxy.url, "--json", "--max-datagram", "65507"
    )
    with datagram_socket(relay.address) as client:
        client.send(bytes(65507))
        relay.wait_err(r"cannot send to udp://127\.0\.0\.1:53 for udp://127\.0\.0\.1:\d+: message too long")
        client.send(b"small")
        assert own_proxy.udp.recv(65536).endswith(b"small")
    summary = final_summary(relay)
    assert (summary["datagrams_to_target"], summary["dropped"], summary["total"]) == (1, 1, 1), summary


def test_a_reply_larger_than_max_datagram_is_dropped_as_truncated(
    own_proxy: _OwnProxy, start_relay: StartRelay
) -> None:
    relay = start_relay(
        "udp://127.0.0.1:0", "udp://127.0.0.1:53", "--via", own_proxy.url, "--json", "--max-datagram", "1000"
    )
    with datagram_socket(relay.address) as client:
        client.send(b"q")
        _datagram, relay_udp = own_proxy.udp.recvfrom(65536)
        own_proxy.udp.sendto(_relayed(bytes(1001)), relay_udp)
        own_proxy.udp.sendto(_relayed(b"fits"), relay_udp)
        client.settimeout(STEP)
        assert client.recv(65536) == b"fits"
    summary = final_summary(relay)
    assert (summary["truncated"], summary["datagrams_to_client"]) == (1, 1), summary


def test_accept_proxy_through_the_association_takes_each_header_off(
    enchufe_socks: str, udp_echo: int, start_relay: StartRelay
) -> None:
    """--accept-proxy with --via: each datagram's PROXY header is taken off before the SOCKS5
    one goes on, the echo (through enchufe socks) answers the payload alone to the proxy's
    socket, and the session is named for the client the header named."""
    relay = start_relay(
        "udp://127.0.0.1:0",
        f"udp://127.0.0.1:{udp_echo}",
        "--via",
        enchufe_socks,
        "--accept-proxy",
        "--json",
        "-v",
    )
    client = proxyproto_address("udp://203.0.113.7:40000")
    sent = _datagrams(7)
    got = []
    with datagram_socket(relay.address, timeout=STEP) as proxy:
        for datagram in sent:
            proxy.send(proxyproto.encode_v2(client, proxyproto_address("udp://198.51.100.1:53")) + datagram)
            got.append(proxy.recv(65536))
        proxy.send(b"no header")  # dropped, said, and the session goes on
        relay.wait_err(r'"reason": "proxy"')
        proxy.send(proxyproto.encode_v2(client, None) + b"still")
        assert proxy.recv(100) == b"still"
    assert _sha(got) == _sha(sent)
    sessions = [json.loads(line) for line in relay.err.splitlines() if '"event": "session"' in line]
    assert [s["peer"] for s in sessions] == [str(client)]
    summary = final_summary(relay)
    assert summary["dropped"] == 1 and summary["total"] == 1, summary


def test_accept_proxy_and_send_proxy_through_the_association_keep_the_original_client(
    own_proxy: _OwnProxy, start_relay: StartRelay
) -> None:
    """With --send-proxy v2 too, the header behind the SOCKS5 one names the client the accepted
    header named (a chain keeps the original client), not the proxy that sent it."""
    relay = start_relay(
        "udp://127.0.0.1:0",
        "udp://127.0.0.1:5353",
        "--via",
        own_proxy.url,
        "--accept-proxy",
        "--send-proxy",
        "v2",
    )
    client = proxyproto_address("udp://203.0.113.7:40000")
    with datagram_socket(relay.address) as proxy:
        proxy.send(proxyproto.encode_v2(client, proxyproto_address("udp://198.51.100.1:53")) + b"who am I")
        datagram, _relay_udp = own_proxy.udp.recvfrom(65536)
    socks = _relayed(b"", "127.0.0.1", 5353)
    assert datagram.startswith(socks)
    header = proxyproto.parse(datagram[len(socks) :])
    assert isinstance(header, proxyproto.ProxyHeader), header
    assert (header.source, str(header.destination)) == (client, relay.address)
    assert datagram[len(socks) + header.consumed :] == b"who am I"


def test_the_session_line_names_the_route(enchufe_socks: str, udp_echo: int, start_relay: StartRelay) -> None:
    """-v's "new session" line and its --json event name the proxy, as connect --via says it
    (the password masked)."""
    target = f"udp://127.0.0.1:{udp_echo}"
    relay = start_relay("udp://127.0.0.1:0", target, "--via", enchufe_socks, "-v")
    with datagram_socket(relay.address, timeout=STEP) as client:
        client.send(b"ping")
        assert client.recv(100) == b"ping"
    masked = enchufe_socks.replace(":s3cret@", ":***@")
    relay.wait_err(
        rf"^new session #1 for udp://127\.0\.0\.1:\d+ → {re.escape(target)} via {re.escape(masked)}$"
    )
    assert ":s3cret@" not in relay.err

"""--accept-proxy on ``echo``, ``chat`` and ``listen`` (with and without --exec), behind a real
HAProxy (send-proxy, send-proxy-v2) and raw clients: the client HAProxy names is the peer in
``-v``/--json lines, chat names and exec's ENCHUFE_PEER_*; an untrusted peer, a bad header and a
slow one are closed with one line each, and the server goes on.  On datagram addresses, behind
an enchufe relay with --send-proxy v2 (HAProxy does not relay UDP): each datagram's header is
taken off, the client is the peer, and replies go back through the relay."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time

import pytest

from enchufe import UnixAddress, parse
from enchufe.address import from_sockaddr
from enchufe.proxyproto import encode_v1, encode_v2
from tests.cli.conftest import STEP, Spawn, assert_one_error_line, run, wait_until
from tests.haproxy import HAProxy

pytestmark = pytest.mark.timeout(90)

CLIENT = parse("tcp://203.0.113.7:40000")
FRONT = parse("tcp://198.51.100.1:443")


def tcp_port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.settimeout(STEP)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def json_events(err: str, name: str) -> list[dict[str, object]]:
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [r for r in records if r.get("event") == name]


@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2"])
def test_echo_behind_haproxy_sees_the_real_client(spawn: Spawn, send_proxy: str) -> None:
    server = spawn("echo", "tcp://127.0.0.1:0", "--accept-proxy", "--json", "-v", stdin=False)
    port = tcp_port(server.listening())
    with HAProxy(f"127.0.0.1:{port}", send_proxy) as proxy, proxy.client("127.0.0.5") as client:
        client_port = client.getsockname()[1]
        client.sendall(b"through haproxy\n")
        client.shutdown(socket.SHUT_WR)
        assert read_all(client) == b"through haproxy\n"
        server.wait_err('"event": "close"')
    accept = json_events(server.err, "accept")[0]
    assert accept["peer"] == f"tcp://127.0.0.5:{client_port}"
    assert str(accept["proxy"]).startswith("tcp://127.0.0.1:")
    close = json_events(server.err, "close")[0]
    assert close["peer"] == f"tcp://127.0.0.5:{client_port}"


def test_listen_exec_behind_haproxy_gives_the_child_the_real_client(spawn: Spawn) -> None:
    server = spawn(
        "listen",
        "-k",
        "tcp://127.0.0.1:0",
        "--accept-proxy",
        "--exec",
        "sh -c 'echo $ENCHUFE_PEER $ENCHUFE_PEER_ADDR $ENCHUFE_PEER_PORT; cat'",
        stdin=False,
    )
    port = tcp_port(server.listening())
    with HAProxy(f"127.0.0.1:{port}", "send-proxy-v2") as proxy, proxy.client("127.0.0.6") as client:
        client_port = client.getsockname()[1]
        client.sendall(b"payload intact\n")
        client.shutdown(socket.SHUT_WR)
        lines = read_all(client).decode().splitlines()
    assert lines == [f"tcp://127.0.0.6:{client_port} 127.0.0.6 {client_port}", "payload intact"]
    assert server.running()


def test_untrusted_peers_bad_and_slow_headers_close_one_connection_each(spawn: Spawn) -> None:
    server = spawn(
        "echo",
        "tcp://127.0.0.1:0",
        "--accept-proxy",
        "--trusted-proxy",
        "127.0.0.2",
        "--trusted-proxy",
        "127.0.0.3/32",
        "--proxy-timeout",
        "0.5",
        stdin=False,
    )
    port = tcp_port(server.listening())
    header = encode_v1(CLIENT, FRONT)
    with connect(port, "127.0.0.9") as untrusted:
        untrusted.sendall(header + b"spoof")
        assert read_all(untrusted) == b""
    server.wait_err(r"^enchufe: refused tcp://127\.0\.0\.9:\d+: not a trusted proxy")
    with connect(port, "127.0.0.2") as bad:
        bad.sendall(b"PROXY TCP4 1.2.3.4\n\x1b[2Jevil\r\n")
        assert read_all(bad) == b""
    line = server.wait_err(r"^enchufe: refused tcp://127\.0\.0\.2:\d+: PROXY v1 line: byte 0x0a.*$").group(0)
    assert "\x1b" not in line
    with connect(port, "127.0.0.3") as slow:
        slow.sendall(b"PROXY TCP4 ")
        started = time.monotonic()
        assert read_all(slow) == b""
        assert time.monotonic() - started < STEP
    server.wait_err(r"refused tcp://127\.0\.0\.3:\d+: no complete PROXY header within 0\.5 s")
    with connect(port, "127.0.0.2") as good:
        good.sendall(encode_v2(CLIENT, FRONT) + b"still serving")
        good.shutdown(socket.SHUT_WR)
        assert read_all(good) == b"still serving"
    assert server.running()


def test_chat_names_the_real_client(spawn: Spawn) -> None:
    server = spawn("chat", "tcp://127.0.0.1:0", "--accept-proxy", stdin=False)
    port = tcp_port(server.listening())
    with connect(port) as listener, connect(port) as talker:
        listener.sendall(encode_v1(parse("tcp://192.0.2.1:1111"), FRONT))
        talker.sendall(encode_v1(CLIENT, FRONT) + b"hello room\n")
        received = b""
        while b"\n" not in received:
            chunk = listener.recv(1000)
            assert chunk
            received += chunk
    assert received == b"203.0.113.7:40000: hello room\n"


def test_chat_names_a_unix_client_by_its_socket_name(spawn: Spawn) -> None:
    server = spawn("chat", "tcp://127.0.0.1:0", "--accept-proxy", stdin=False)
    port = tcp_port(server.listening())
    front = UnixAddress("/run/front.sock")
    with connect(port) as listener, connect(port) as talker:
        listener.sendall(encode_v2(UnixAddress("listener", abstract=True), front))
        talker.sendall(encode_v2(UnixAddress("/run/app\n.sock"), front) + b"hi\n")
        received = b""
        while b"\n" not in received:
            chunk = listener.recv(1000)
            assert chunk
            received += chunk
    assert received == b"/run/app\\n.sock: hi\n"


def test_one_shot_listen_waits_for_a_client_with_a_good_header(spawn: Spawn) -> None:
    server = spawn("listen", "tcp://127.0.0.1:0", "--accept-proxy", "-v")
    port = tcp_port(server.listening())
    with connect(port) as bad:
        bad.sendall(b"SSH-2.0-OpenSSH\r\n")
        assert read_all(bad) == b""
    server.wait_err(r"refused tcp://127\.0\.0\.1:\d+: no PROXY protocol header")
    with connect(port) as good:
        good.sendall(encode_v2(CLIENT, FRONT) + b"to stdout")
        good.shutdown(socket.SHUT_WR)
        server.wait_out_equal(b"to stdout")
        server.close_stdin()
        assert read_all(good) == b""
    assert server.finish() == 0
    assert "accepted tcp://203.0.113.7:40000 via tcp://127.0.0.1:" in server.err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ("echo", "tcp://127.0.0.1:0", "--trusted-proxy", "10.0.0.0/8"),
            "--trusted-proxy applies with --accept-proxy",
        ),
        (
            ("chat", "tcp://127.0.0.1:0", "--proxy-timeout", "3"),
            "--proxy-timeout applies with --accept-proxy",
        ),
        (
            ("echo", "udp://127.0.0.1:0", "--accept-proxy", "--proxy-timeout", "3"),
            "--proxy-timeout is how long a stream client has to send its PROXY header",
        ),
        (("listen", "unixgram:@x", "--accept-proxy", "--proxy-timeout", "3"), "each datagram brings its own"),
        (
            ("relay", "udp://127.0.0.1:0", "udp://127.0.0.1:9", "--accept-proxy", "--proxy-timeout", "3"),
            "each datagram",
        ),
        (
            ("listen", "tcp://127.0.0.1:0", "--accept-proxy", "--trusted-proxy", "10.0.0.0/33"),
            "not an IP network",
        ),
        (("echo", "tcp://127.0.0.1:0", "--accept-proxy", "--proxy-timeout", "0"), "--proxy-timeout"),
        (("echo", "tcp://127.0.0.1:0", "--accept-proxy", "--proxy-timeout", "nan"), "--proxy-timeout"),
    ],
)
def test_bad_proxy_options_exit_2(args: tuple[str, ...], needle: str) -> None:
    result = run(*args)
    assert result.returncode == 2, result.stderr
    assert_one_error_line(result.stderr, needle)


def datagram_client(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(STEP)
    sock.bind(("127.0.0.1", 0))
    sock.connect(("127.0.0.1", port))
    return sock


def test_datagram_echo_behind_a_relay_sees_each_real_client(spawn: Spawn) -> None:
    """Three clients through ``relay --send-proxy v2``: every datagram echoed whole (sha256 of
    all of them each way), and the echo's --json events name the clients, via the relay."""
    server = spawn("echo", "udp://127.0.0.1:0", "--accept-proxy", "--json", "-v", stdin=False)
    echo = server.listening()
    relay = spawn("relay", "udp://127.0.0.1:0", echo, "--send-proxy", "v2", stdin=False)
    port = tcp_port(relay.listening())
    clients = [datagram_client(port) for _ in range(3)]
    sent, received = hashlib.sha256(), hashlib.sha256()
    try:
        for round_ in range(20):
            for client in clients:
                payload = os.urandom(1 + (round_ * 397) % 4000)
                client.send(payload)
                sent.update(payload)
                received.update(client.recv(65536))
        names = {f"udp://127.0.0.1:{c.getsockname()[1]}" for c in clients}
    finally:
        for client in clients:
            client.close()
    assert received.hexdigest() == sent.hexdigest()
    server.wait_err('"event": "accept"', count=3)
    accepts = json_events(server.err, "accept")
    assert {a["peer"] for a in accepts} == names
    assert all(str(a["proxy"]).startswith("udp://127.0.0.1:") and a["proxy"] not in names for a in accepts)


def test_datagram_listen_prints_the_payload_and_answers_through_the_proxy(spawn: Spawn) -> None:
    """listen --accept-proxy on UDP: the payload alone on stdout, the client in --json's
    "from" and the relay in "via"; stdin goes back through the relay to the client; a datagram
    without a header is dropped with one line and never becomes the one answered."""
    server = spawn("listen", "udp://127.0.0.1:0", "--accept-proxy", "--json")
    port = tcp_port(server.listening())
    relay = spawn("relay", "udp://127.0.0.1:0", f"udp://127.0.0.1:{port}", "--send-proxy", "v2", stdin=False)
    with datagram_client(port) as stranger, datagram_client(tcp_port(relay.listening())) as client:
        client.send(b"first")
        server.wait_out(1)
        stranger.send(b"no header")
        server.wait_err(
            r'"message": "dropped a datagram from udp://127\.0\.0\.1:\d+: no PROXY protocol header'
        )
        server.feed(b"answer", close=False)
        assert client.recv(100) == b"answer"  # through the relay, which the stranger is not
        stranger.settimeout(0.3)
        with pytest.raises(TimeoutError):
            stranger.recv(100)
        client.send(b"second")
        wait_until(lambda: server.out.count(b"\n") >= 2, "the second datagram printed")
        records = [json.loads(line) for line in server.out.decode().splitlines()]
        client_name = f"udp://127.0.0.1:{client.getsockname()[1]}"
    assert [(r["from"], r["text"]) for r in records] == [(client_name, "first"), (client_name, "second")]
    assert all(r["via"].startswith("udp://127.0.0.1:") and r["via"] != client_name for r in records)


def test_datagram_peers_behind_a_proxy_are_forgotten_by_their_client(spawn: Spawn) -> None:
    """-v's last line of a datagram peer behind a proxy names the client and the proxy."""
    server = spawn("echo", "udp://127.0.0.1:0", "--accept-proxy", "--idle-timeout", "0.3", "-v", stdin=False)
    port = tcp_port(server.listening())
    with datagram_client(port) as proxy:
        proxy.send(encode_v2(parse("udp://203.0.113.7:40000"), parse("udp://198.51.100.1:53")) + b"hi")
        assert proxy.recv(100) == b"hi"
        proxy_name = f"udp://127.0.0.1:{proxy.getsockname()[1]}"
        line = server.wait_err(r"^forgot (\S+) via (\S+) after 1 datagrams$")
    assert line.groups() == ("udp://203.0.113.7:40000", proxy_name)


def test_datagram_listen_json_escapes_the_names_a_header_brings(spawn: Spawn) -> None:
    """A header's unix name is the proxy's client's own bytes: escaped in --json's "from" (a
    newline or escape there must not reach a terminal through jq -r), even when not UTF-8."""
    server = spawn("listen", "udp://127.0.0.1:0", "--accept-proxy", "--json", "--count", "2", stdin=False)
    port = tcp_port(server.listening())
    names = [b"/tmp/x\n\x1b[31mFAKE", b"/tmp/\xff"]
    with datagram_client(port) as proxy:
        for name in names:
            source = from_sockaddr(socket.AF_UNIX, socket.SOCK_DGRAM, name)
            proxy.send(encode_v2(source, UnixAddress("/run/front.sock")) + b"payload")
        assert server.finish() == 0, server.err
    froms = [json.loads(line)["from"] for line in server.out.decode().splitlines()]
    assert len(froms) == 2
    assert all("\n" not in text and "\x1b" not in text and "\udcff" not in text for text in froms), froms


def test_recv_prints_each_payload_and_names_the_client(spawn: Spawn) -> None:
    """recv --accept-proxy on unixgram behind a relay: payloads alone on stdout, in order."""
    server = spawn(
        "recv", f"unixgram:@{os.urandom(6).hex()}", "--accept-proxy", "--count", "3", "-v", stdin=False
    )
    address = server.listening()
    relay = spawn("relay", "udp://127.0.0.1:0", address, "--send-proxy", "v2", stdin=False)
    with datagram_client(tcp_port(relay.listening())) as client:
        for word in (b"one|", b"two|", b"three"):
            client.send(word)
        assert server.finish() == 0
        client_name = f"udp://127.0.0.1:{client.getsockname()[1]}"
    assert server.out == b"one|two|three"
    said = re.findall(r"^received (\d+) bytes from (\S+) via (\S+)$", server.err, re.MULTILINE)
    assert [(size, peer) for size, peer, _via in said] == [
        ("4", client_name),
        ("4", client_name),
        ("5", client_name),
    ]


def test_recv_takes_headers_only_from_trusted_proxies_and_counts_the_lines_held_back(spawn: Spawn) -> None:
    """recv --trusted-proxy: loopback is not trusted then; a flood of its datagrams is dropped
    with a few lines (JSON log events under --json), and the count of the rest at the end."""
    server = spawn(
        "recv", "udp://127.0.0.1:0", "--accept-proxy", "--trusted-proxy", "10.0.0.0/8", "--json", stdin=False
    )
    port = tcp_port(server.listening())
    with datagram_client(port) as proxy:
        for _ in range(40):
            proxy.send(encode_v2(parse("udp://203.0.113.7:40000"), parse("udp://198.51.100.1:53")) + b"x")
        server.wait_err(r'"message": "dropped a datagram from udp://127\.0\.0\.1:\d+: not a trusted proxy')
        time.sleep(0.3)  # all of them in
    assert server.terminate() == 0
    assert server.out == b""
    messages = [str(e["message"]) for e in json_events(server.err, "log")]
    shown = sum("not a trusted proxy" in m for m in messages)
    held = [
        re.fullmatch(r"… and (\d+) more datagrams dropped over their PROXY header .*", m) for m in messages
    ]
    counts = [int(m.group(1)) for m in held if m]
    assert shown >= 1 and len(counts) == 1 and shown + counts[0] == 40, messages


def test_recv_json_escapes_the_proxy_s_own_name(spawn: Spawn) -> None:
    """The proxy's unix name is its own bytes: escaped in "via" too, even when not UTF-8."""
    name = f"@{os.urandom(6).hex()}"
    server = spawn("recv", f"unixgram:{name}", "--accept-proxy", "--json", "--count", "1", stdin=False)
    server.listening()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as proxy:
        proxy.bind(b"\0\xff\n\x1b[31mFAKE")
        proxy.sendto(
            encode_v2(parse("udp://203.0.113.7:40000"), parse("udp://198.51.100.1:53")) + b"x",
            "\0" + name[1:],
        )
        assert server.finish() == 0, server.err
    (record,) = [json.loads(line) for line in server.out.decode().splitlines()]
    assert record["from"] == "udp://203.0.113.7:40000"
    assert not any(c in record["via"] for c in "\n\x1b\udcff"), record

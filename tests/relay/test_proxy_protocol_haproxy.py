"""``enchufe relay`` and the PROXY protocol against programs we did not write, as commands: a
real HAProxy sending headers (``send-proxy``, ``send-proxy-v2``) to ``relay --accept-proxy``,
and taking ours (``bind … accept-proxy``, telling the ``src`` it read); ``relay --send-proxy``
in front of ``enchufe echo --accept-proxy``, alone and through a second relay (a chain keeps the
original client, and every byte: sha256)."""

from __future__ import annotations

import socket

import pytest

from tests.cli.conftest import Spawn, assert_one_error_line, run_here, spawn  # noqa: F401
from tests.cli.test_cli_accept_proxy import json_events
from tests.haproxy import HAProxy

from ._gateway import NAME, Gateway, gateway  # noqa: F401  (the fixture)
from .conftest import STEP, StartRelay, exchange, read_all

pytestmark = pytest.mark.timeout(90)

SIZE = 2 << 20

#: HAProxy taking a PROXY header on its frontend (``accept-proxy``) and answering every HTTP
#: request with the client address it read from it.
TELLING = """\
global
    maxconn 100

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend clients
    bind 127.0.0.1:{port} accept-proxy
    http-request return status 200 content-type text/plain lf-string "src %[src] %[src_port]\\n"
"""


class TellingHAProxy(HAProxy):
    """HAProxy behind a relay: says which client the relay's header named."""

    def __init__(self) -> None:
        super().__init__(backend="", send_proxy="")
        self.config = TELLING.format(port=self.port)


def client_of(address: str, source: str) -> socket.socket:
    """A TCP client of the ``tcp://HOST:PORT`` ``address`` from the loopback ``source``."""
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    sock = socket.socket()
    sock.settimeout(STEP)
    sock.bind((source, 0))
    sock.connect((host, int(port)))
    return sock


def echoed(address: str, source: str, payload: bytes) -> int:
    """Send ``payload`` through ``address`` to an echo from ``source``, and check it comes back;
    the client's port."""
    with client_of(address, source) as client:
        client.sendall(payload)
        client.shutdown(socket.SHUT_WR)
        assert read_all(client) == payload
        port: int = client.getsockname()[1]
        return port


@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2"])
def test_relay_behind_haproxy_sees_the_real_client(start_relay: StartRelay, send_proxy: str) -> None:
    relay = start_relay(
        "tcp://127.0.0.1:0", "exec:sh -c 'echo $ENCHUFE_PEER; cat'", "--accept-proxy", "--json"
    )
    port = relay.address.rsplit(":", 1)[1]
    with HAProxy(f"127.0.0.1:{port}", send_proxy) as proxy, proxy.client("127.0.0.5") as client:
        client_port = client.getsockname()[1]
        client.sendall(b"through haproxy\n")
        client.shutdown(socket.SHUT_WR)
        assert read_all(client) == f"tcp://127.0.0.5:{client_port}\nthrough haproxy\n".encode()
        relay.wait_err('"event": "close"')
    (accept,) = json_events(relay.err, "accept")
    assert accept["peer"] == f"tcp://127.0.0.5:{client_port}"
    assert str(accept["proxy"]).startswith("tcp://127.0.0.1:")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_haproxy_reads_the_relays_header(start_relay: StartRelay, version: str) -> None:
    with TellingHAProxy() as proxy:
        relay = start_relay("tcp://127.0.0.1:0", f"tcp://127.0.0.1:{proxy.port}", "--send-proxy", version)
        with client_of(relay.address, "127.0.0.7") as client:
            client.sendall(b"GET / HTTP/1.0\r\nHost: enchufe.test\r\n\r\n")
            answer = read_all(client)
            client_port = client.getsockname()[1]
    assert answer.startswith(b"HTTP/1.1 200 OK"), answer
    assert answer.endswith(f"\r\n\r\nsrc 127.0.0.7 {client_port}\n".encode()), answer


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_echo_accept_proxy_behind_the_relay(start_relay: StartRelay, spawn: Spawn, version: str) -> None:  # noqa: F811
    echo = spawn("echo", "tcp://127.0.0.1:0", "--accept-proxy", "--json", "-v", stdin=False)
    relay = start_relay("tcp://127.0.0.1:0", echo.listening(), "--send-proxy", version)
    client_port = echoed(relay.address, "127.0.0.8", b"hello\n")
    echo.wait_err('"event": "close"')
    (accept,) = json_events(echo.err, "accept")
    assert accept["peer"] == f"tcp://127.0.0.8:{client_port}"


def test_chained_relays_keep_the_original_client_and_every_byte(
    start_relay: StartRelay,
    spawn: Spawn,  # noqa: F811
) -> None:
    echo = spawn("echo", "tcp://127.0.0.1:0", "--accept-proxy", "--json", "-v", stdin=False)
    inner = start_relay(
        "tcp://127.0.0.1:0", echo.listening(), "--accept-proxy", "--send-proxy", "v2", "--json", "-v"
    )
    outer = start_relay("tcp://127.0.0.1:0", inner.address, "--send-proxy", "v2")
    with client_of(outer.address, "127.0.0.9") as client:
        client_port = client.getsockname()[1]
        result = exchange(client, seed=13, size=SIZE)
    assert (result.received, result.received_digest) == (SIZE, result.sent_digest)
    echo.wait_err('"event": "close"')
    inner.wait_err('"event": "close"')
    real = f"tcp://127.0.0.9:{client_port}"
    assert json_events(echo.err, "accept")[0]["peer"] == real
    assert json_events(inner.err, "accept")[0]["peer"] == real
    assert json_events(inner.err, "close")[0]["to_target"] == SIZE


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("udp://127.0.0.1:0", "udp://127.0.0.1:9", "--send-proxy", "v1"), "v1 is for TCP"),
        (
            ("udp://127.0.0.1:0", "tcp://127.0.0.1:9", "--frame", "--accept-proxy"),
            "on datagrams with --frame",
        ),
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--trusted-proxy", "10.0.0.0/8"), "--accept-proxy"),
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--proxy-timeout", "3"), "--accept-proxy"),
        (("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--accept-proxy", "--trusted-proxy", "x"), "10.0.0.0/8"),
    ],
)
def test_the_command_refuses_what_does_not_apply(args: tuple[str, ...], words: str) -> None:
    ran = run_here("relay", *args)
    assert ran.returncode == 2
    assert_one_error_line(ran.stderr, words)


def test_send_proxy_takes_v1_or_v2() -> None:
    ran = run_here("relay", "tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--send-proxy", "v3")
    assert ran.returncode == 2
    assert b"'v1', 'v2'" in ran.stderr


def test_the_header_goes_before_the_handshake_with_a_tls_target(
    start_relay: StartRelay,
    spawn: Spawn,  # noqa: F811
    gateway: Gateway,  # noqa: F811
) -> None:
    listen = f"tls://127.0.0.1:0?cert={gateway.server}"
    echo = spawn("echo", listen, "--accept-proxy", "--json", "-v", stdin=False)
    port = echo.listening().split("?")[0].rsplit(":", 1)[1]
    target = f"tls://127.0.0.1:{port}?ca={gateway.ca}&sni={NAME}"
    relay = start_relay("tcp://127.0.0.1:0", target, "--send-proxy", "v2")
    client_port = echoed(relay.address, "127.0.0.10", b"encrypted on the way\n")
    echo.wait_err('"event": "close"')
    assert json_events(echo.err, "accept")[0]["peer"] == f"tcp://127.0.0.10:{client_port}"

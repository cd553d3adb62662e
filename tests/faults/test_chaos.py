"""``enchufe chaos``: Toxiproxy's HTTP API (routes, status codes, JSON shapes, errors) over real
sockets, the server in the test process; proxies relay real connections and datagrams."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enchufe.faults.chaos_run import ChaosServer
from tests.relay.conftest import DatagramTarget, Target, datagram_socket, dial, echo, read_all

PROXY_KEYS = {"name", "listen", "upstream", "enabled", "toxics"}
TOXIC_KEYS = {"name", "type", "stream", "toxicity", "attributes"}


@pytest.fixture
def chaos() -> Iterator[ChaosServer]:
    server = ChaosServer("127.0.0.1", 0, seed=1)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def echo_target() -> Iterator[Target]:
    with Target("tcp://127.0.0.1:0", echo) as target:
        yield target


def call(
    server: ChaosServer, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One request on a fresh connection: the status and the JSON answer (None when empty)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        data = (
            body
            if isinstance(body, bytes) or body is None
            else body
            if isinstance(body, str)
            else json.dumps(body)
        )
        if isinstance(data, str):
            data = data.encode()
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    return response.status, json.loads(raw) if raw else None


def hostport(target: Target) -> str:
    return target.address.removeprefix("tcp://")


def make_proxy(server: ChaosServer, target: Target, name: str = "db") -> dict[str, Any]:
    status, proxy = call(server, "POST", "/proxies", {"name": name, "upstream": hostport(target)})
    assert status == 201, proxy
    return proxy  # type: ignore[no-any-return]


def round_trip(address: str) -> float:
    with dial(address) as sock:
        started = time.monotonic()
        sock.sendall(b"ping")
        assert sock.recv(10) == b"ping"
        return time.monotonic() - started


def test_version(chaos: ChaosServer) -> None:
    status, body = call(chaos, "GET", "/version")
    assert status == 200 and set(body) == {"version"} and body["version"].startswith("enchufe ")


def test_a_proxy_has_toxiproxys_shape_and_relays(chaos: ChaosServer, echo_target: Target) -> None:
    proxy = make_proxy(chaos, echo_target)
    assert set(proxy) == PROXY_KEYS
    assert proxy["name"] == "db" and proxy["enabled"] is True and proxy["toxics"] == []
    assert proxy["upstream"] == hostport(echo_target)
    host, _, port = proxy["listen"].rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0  # the real port, as Toxiproxy answers
    assert call(chaos, "GET", "/proxies") == (200, {"db": proxy})
    assert call(chaos, "GET", "/proxies/db") == (200, proxy)
    assert round_trip(f"tcp://{proxy['listen']}") >= 0
    assert call(chaos, "POST", "/proxies", {"name": "db", "upstream": "127.0.0.1:9"})[0] == 409


def test_toxics_come_and_go(chaos: ChaosServer, echo_target: Target) -> None:
    listen = "tcp://" + make_proxy(chaos, echo_target)["listen"]
    status, toxic = call(
        chaos, "POST", "/proxies/db/toxics", {"type": "latency", "attributes": {"latency": 120}}
    )
    assert status == 200 and set(toxic) == TOXIC_KEYS
    assert toxic == {
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"latency": 120, "jitter": 0},
    }
    assert round_trip(listen) >= 0.120 - 0.002
    assert call(chaos, "POST", "/proxies/db/toxics", {"type": "latency"})[0] == 409
    assert call(chaos, "GET", "/proxies/db/toxics") == (200, [toxic])
    assert call(chaos, "GET", "/proxies/db/toxics/latency_downstream") == (200, toxic)
    status, updated = call(
        chaos, "POST", "/proxies/db/toxics/latency_downstream", {"attributes": {"jitter": 7}}
    )
    assert status == 200 and updated["attributes"] == {"latency": 120, "jitter": 7}
    status, updated = call(chaos, "PATCH", "/proxies/db/toxics/latency_downstream", {"toxicity": 0.5})
    assert status == 200 and updated["toxicity"] == 0.5 and updated["attributes"]["jitter"] == 7
    assert call(chaos, "DELETE", "/proxies/db/toxics/latency_downstream") == (204, None)
    assert call(chaos, "DELETE", "/proxies/db/toxics/latency_downstream") == (
        404,
        {"error": "toxic not found", "status": 404},
    )
    assert call(chaos, "GET", "/proxies/db/toxics") == (200, [])


def test_limit_data_and_reset_peer_through_the_api(chaos: ChaosServer) -> None:
    def talk(conn: socket.socket) -> None:
        conn.sendall(bytes(5000))
        read_all(conn)

    with Target("tcp://127.0.0.1:0", talk) as target:
        listen = "tcp://" + make_proxy(chaos, target)["listen"]
        limit = {"type": "limit_data", "attributes": {"bytes": 321}}
        assert call(chaos, "POST", "/proxies/db/toxics", limit)[0] == 200
        with dial(listen) as sock:
            assert len(read_all(sock)) == 321
        assert call(chaos, "DELETE", "/proxies/db/toxics/limit_data_downstream")[0] == 204
        reset = {"type": "reset_peer", "attributes": {"timeout": 10}}
        assert call(chaos, "POST", "/proxies/db/toxics", reset)[0] == 200
        with dial(listen) as sock, pytest.raises(ConnectionResetError):
            read_all(sock)


def test_a_disabled_proxy_refuses_and_comes_back_on_its_port(chaos: ChaosServer, echo_target: Target) -> None:
    proxy = make_proxy(chaos, echo_target)
    listen = "tcp://" + proxy["listen"]
    status, body = call(chaos, "POST", "/proxies/db", {"enabled": False})
    assert status == 200 and body == {**proxy, "enabled": False}
    with pytest.raises(ConnectionRefusedError):
        dial(listen).close()
    assert call(chaos, "POST", "/reset") == (204, None)
    assert call(chaos, "GET", "/proxies/db") == (200, proxy)
    assert round_trip(listen) >= 0
    assert call(chaos, "DELETE", "/proxies/db") == (204, None)
    assert call(chaos, "GET", "/proxies/db") == (404, {"error": "proxy not found", "status": 404})
    with pytest.raises(ConnectionRefusedError):
        dial(listen).close()


def test_reset_removes_every_toxic(chaos: ChaosServer, echo_target: Target) -> None:
    make_proxy(chaos, echo_target)
    call(chaos, "POST", "/proxies/db/toxics", {"type": "timeout", "attributes": {"timeout": 0}})
    assert call(chaos, "POST", "/reset")[0] == 204
    assert call(chaos, "GET", "/proxies/db/toxics") == (200, [])


def test_populate_creates_and_replaces(chaos: ChaosServer, echo_target: Target) -> None:
    upstream = hostport(echo_target)
    status, body = call(
        chaos, "POST", "/populate", [{"name": "a", "upstream": upstream}, {"name": "b", "upstream": upstream}]
    )
    assert status == 201 and [p["name"] for p in body["proxies"]] == ["a", "b"]
    assert all(set(p) == PROXY_KEYS for p in body["proxies"])
    again = call(
        chaos,
        "POST",
        "/populate",
        [{"name": "a", "upstream": upstream, "listen": body["proxies"][0]["listen"]}],
    )
    assert again == (201, {"proxies": [body["proxies"][0]]})  # the same: kept as it is
    assert set(call(chaos, "GET", "/proxies")[1]) == {"a", "b"}


def test_a_datagram_proxy_takes_datagram_toxics(chaos: ChaosServer, make_address: Any) -> None:
    with DatagramTarget(make_address("udp4")) as target:
        status, proxy = call(
            chaos,
            "POST",
            "/proxies",
            {"name": "dns", "listen": "udp://127.0.0.1:0", "upstream": target.address},
        )
        assert status == 201 and proxy["listen"].startswith("udp://127.0.0.1:")
        assert (
            call(chaos, "POST", "/proxies/dns/toxics", {"type": "loss", "attributes": {"probability": 1}})[0]
            == 200
        )
        with datagram_socket(proxy["listen"], timeout=0.3) as client:
            client.send(b"lost")
            with pytest.raises(TimeoutError):
                client.recv(10)
        assert call(chaos, "DELETE", "/proxies/dns/toxics/loss_downstream")[0] == 204
        with datagram_socket(proxy["listen"], timeout=5) as client:  # a new session: no toxic
            client.send(b"back")
            assert client.recv(10) == b"back"
        status, body = call(chaos, "POST", "/proxies/dns/toxics", {"type": "slicer"})
        assert status == 400 and "slicer acts on streams only" in body["error"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("POST", "/proxies", "{not json", 400, "bad request body"),
        ("POST", "/proxies", "", 400, "bad request body: EOF"),
        ("POST", "/proxies", [], 400, "bad request body"),
        ("POST", "/proxies", {"upstream": "127.0.0.1:9"}, 400, "missing required field: name"),
        ("POST", "/proxies", {"name": "x"}, 400, "missing required field: upstream"),
        ("POST", "/proxies", {"name": "x", "upstream": "bogus://"}, 400, "upstream"),
        ("POST", "/proxies", {"name": "x", "upstream": "127.0.0.1:9", "enabled": "yes"}, 400, "enabled"),
        ("POST", "/proxies/db/toxics", {"type": "nope"}, 400, "invalid toxic type"),
        ("POST", "/proxies/db/toxics", {"type": "latency", "stream": "sideways"}, 400, "stream must be"),
        (
            "POST",
            "/proxies/db/toxics",
            {"type": "latency", "attributes": {"latency": -1}},
            400,
            "latency must be",
        ),
        (
            "POST",
            "/proxies/db/toxics",
            {"type": "latency", "attributes": {"colour": 1}},
            400,
            "unknown attribute",
        ),
        ("POST", "/proxies/db/toxics", {"type": "latency", "toxicity": 2}, 400, "toxicity must be"),
        ("POST", "/proxies/db/toxics", {"type": "loss"}, 400, "loss acts on datagrams only"),
        ("POST", "/proxies/nobody/toxics", {"type": "latency"}, 404, "proxy not found"),
        ("GET", "/proxies/db/toxics/nobody", None, 404, "toxic not found"),
        ("GET", "/nothing/here", None, 404, "not found"),
        ("DELETE", "/version", None, 405, "method not allowed"),
        ("POST", "/populate", {"name": "x"}, 400, "JSON array"),
        ("POST", "/populate", [{"name": "x"}], 400, "missing required field: upstream at proxy 1"),
    ],
)
def test_errors_have_toxiproxys_shape(
    chaos: ChaosServer, echo_target: Target, method: str, path: str, body: Any, status: int, words: str
) -> None:
    make_proxy(chaos, echo_target)
    got, answer = call(chaos, method, path, body)
    assert got == status and set(answer) == {"error", "status"} and answer["status"] == status
    assert words in answer["error"]


def test_a_browser_is_refused(chaos: ChaosServer) -> None:
    status, body = call(chaos, "GET", "/proxies", headers={"User-Agent": "Mozilla/5.0"})
    assert (status, body) == (403, {"error": "User agent not allowed", "status": 403})


def test_a_huge_body_is_refused_unread(chaos: ChaosServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", chaos.port, timeout=10)
    try:
        conn.putrequest("POST", "/proxies")
        conn.putheader("Content-Length", str(2 * 1024 * 1024))
        conn.endheaders()  # no body sent: the length alone is refused
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 413 and "at most" in body["error"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=12,
)
toxic_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["latency", "slicer", "limit_data", "x"]) | json_values,
        "attributes": json_values
        | st.dictionaries(st.sampled_from(["latency", "jitter", "average_size", "bytes"]), json_values),
        "stream": json_values,
        "toxicity": json_values,
        "name": json_values,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=toxic_like | json_values)
def test_nothing_a_client_sends_breaks_the_server(chaos: ChaosServer, body: Any) -> None:
    if "db" not in chaos.chaos.proxies:
        assert call(chaos, "POST", "/proxies", {"name": "db", "upstream": "127.0.0.1:9"})[0] == 201
    status, answer = call(chaos, "POST", "/proxies/db/toxics", body)
    assert status in (200, 400, 409), answer
    if status == 200:
        assert call(chaos, "DELETE", f"/proxies/db/toxics/{quote(answer['name'], safe='')}")[0] == 204
    assert call(chaos, "GET", "/version")[0] == 200


# -- changes apply to live connections, as in Toxiproxy


def echoed(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(100)
        if not chunk:
            break
        got += chunk
    return got


def test_a_toxic_added_reaches_an_open_connection(chaos: ChaosServer, echo_target: Target) -> None:
    listen = "tcp://" + make_proxy(chaos, echo_target)["listen"]
    with dial(listen, timeout=5.0) as sock:
        assert echoed(sock, b"before") == b"before"
        call(chaos, "POST", "/proxies/db/toxics", {"type": "latency", "attributes": {"latency": 150}})
        started = time.monotonic()
        assert echoed(sock, b"after") == b"after"
        assert time.monotonic() - started >= 0.150 - 0.002
        call(chaos, "POST", "/proxies/db/toxics", {"type": "limit_data", "attributes": {"bytes": 3}})
        assert echoed(sock, b"cut short") == b"cut"
        assert read_all(sock) == b""


def test_a_timeout_added_closes_an_idle_connection(chaos: ChaosServer, echo_target: Target) -> None:
    listen = "tcp://" + make_proxy(chaos, echo_target)["listen"]
    with dial(listen) as sock:
        assert echoed(sock, b"hello") == b"hello"
        started = time.monotonic()
        call(chaos, "POST", "/proxies/db/toxics", {"type": "timeout", "attributes": {"timeout": 200}})
        sock.settimeout(5.0)  # well before the target's own timeout would end it
        assert read_all(sock) == b""  # nothing moved: the relay looked by itself
        assert time.monotonic() - started >= 0.200 - 0.002


def test_a_datagram_session_follows_its_proxys_toxics(chaos: ChaosServer, make_address: Any) -> None:
    with DatagramTarget(make_address("udp4")) as target:
        body = {"name": "dns", "listen": "udp://127.0.0.1:0", "upstream": target.address}
        proxy = call(chaos, "POST", "/proxies", body)[1]
        with datagram_socket(proxy["listen"], timeout=5) as client:
            client.send(b"one")
            assert client.recv(10) == b"one"
            call(chaos, "POST", "/proxies/dns/toxics", {"type": "loss", "attributes": {"probability": 1}})
            client.send(b"two")
            client.settimeout(0.3)
            with pytest.raises(TimeoutError):
                client.recv(10)
            call(chaos, "DELETE", "/proxies/dns/toxics/loss_downstream")
            client.settimeout(5)
            client.send(b"three")
            assert client.recv(10) == b"three"
        assert len(target.senders()) == 1  # one session all along

"""The pytest fixtures of enchufe's plugin for faults (``faulty_relay``, ``chaos_server``), and
the README's examples: a client's retry logic tested against ``reset_peer``, and a UDP client's
resends against ``loss``."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

import enchufe
from enchufe.address import Address
from enchufe.testing import EchoServer, FaultyRelayStarter

pytest_plugins = ("pytester",)


# -- the README's examples ------------------------------------------------------------------


def get(address: Address, retries: int = 3) -> bytes:
    """A client with retry logic: a request line, its answer line; a reset (or a connection
    closed before the answer) is tried again, ``retries`` times."""
    for attempt in range(retries + 1):
        try:
            with enchufe.connect(address, timeout=5) as conn:
                conn.send_all(b"GET /\n")
                return conn.recv_until(b"\n")
        except (enchufe.ConnectionReset, enchufe.IncompleteRead):
            if attempt == retries:
                raise
    raise AssertionError("unreachable")


def test_get_retries_after_a_reset(echo_server: EchoServer, faulty_relay: FaultyRelayStarter) -> None:
    # Half the connections are reset at once; seed 17 resets the first two (the same every run).
    relay = faulty_relay(echo_server("tcp4"), "reset_peer:timeout=0,toxicity=0.5", seed=17)
    assert get(relay.address, retries=5) == b"GET /\n"
    assert relay.stats.reset == 2


def test_get_gives_up_after_its_retries(echo_server: EchoServer, faulty_relay: FaultyRelayStarter) -> None:
    relay = faulty_relay(echo_server("tcp4"), "reset_peer:timeout=0")
    with pytest.raises(enchufe.ConnectionReset):
        get(relay.address, retries=2)
    assert relay.stats.total == 3
    relay.set_faults([])  # the server is back
    assert get(relay.address) == b"GET /\n"


def ask(address: Address, question: bytes, tries: int = 10, wait: float = 0.2) -> bytes:
    """A UDP client: send the question, and again after ``wait`` s without an answer."""
    with enchufe.connect_datagram(address) as sock:
        sock.set_timeout(wait)
        for _ in range(tries):
            sock.send(question)
            try:
                return sock.recv()
            except enchufe.TimedOut:
                continue
    raise enchufe.TimedOut(f"no answer after {tries} tries")


def test_ask_resends_what_was_lost(echo_server: EchoServer, faulty_relay: FaultyRelayStarter) -> None:
    # Half the datagrams to the server are lost; seed 3 loses the first two questions.
    relay = faulty_relay(echo_server("udp4"), "loss:probability=0.5,stream=upstream", seed=3)
    assert ask(relay.address, b"ping", wait=0.5) == b"ping"
    assert relay.stats.datagrams_to_target == 1  # what was lost never reached the server


# -- the fixtures themselves ----------------------------------------------------------------


def test_faulty_relay_stops_its_relays_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import enchufe

        seen = []

        def test_one(echo_server, faulty_relay):
            relay = faulty_relay(echo_server("unix"), "latency:latency=1", "slicer", seed=4)
            assert relay.seed == 4 and [t.type for t in relay.faults] == ["latency", "slicer"]
            with enchufe.connect(relay.address, timeout=5) as conn:
                conn.send_all(b"hi")
                assert conn.recv_exactly(2) == b"hi"
            seen.append(relay)

        def test_after():
            assert not seen[0].running
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def call(url: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data, method=method), timeout=10) as answer:
        return json.loads(answer.read() or b"null")


def test_chaos_server_serves_toxiproxys_api(echo_server: EchoServer, chaos_server: str) -> None:
    assert call(f"{chaos_server}/version")["version"].startswith("enchufe")
    upstream = echo_server("tcp4")
    proxy = {"name": "echo", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{upstream.port}"}  # type: ignore[union-attr]
    listen = call(f"{chaos_server}/proxies", "POST", proxy)["listen"]
    call(f"{chaos_server}/proxies/echo/toxics", "POST", {"type": "limit_data", "attributes": {"bytes": 3}})
    with enchufe.connect(f"tcp://{listen}", timeout=5) as conn:
        conn.send_all(b"hello")
        assert conn.recv(10) == b"hel"


def test_chaos_server_is_stopped_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import urllib.request, urllib.error, pytest

        urls = []

        def test_one(chaos_server):
            assert chaos_server.startswith("http://127.0.0.1:")
            urllib.request.urlopen(chaos_server + "/version", timeout=5).close()
            urls.append(chaos_server)

        def test_after():
            with pytest.raises(urllib.error.URLError):
                urllib.request.urlopen(urls[0] + "/version", timeout=5)
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)

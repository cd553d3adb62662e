"""``enchufe chaos`` driven by a Toxiproxy client we did not write (toxiproxy-python, from PyPI),
and as a command (``--control``, ``--config``, signals, bad input)."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from enchufe.faults.chaos_run import ChaosServer
from tests.relay.conftest import ENCHUFE, IO_TIMEOUT, Target, dial, echo, read_all

toxiproxy = pytest.importorskip("toxiproxy")


@pytest.fixture
def client() -> Iterator[Any]:
    """toxiproxy-python's server object, pointed at an in-process chaos server."""
    server = ChaosServer("127.0.0.1", 0)
    server.start()
    client = toxiproxy.Toxiproxy()
    client.update_api_consumer("127.0.0.1", server.port)
    try:
        yield client
    finally:
        server.close()


def test_toxiproxy_python_drives_proxies_and_toxics(client: Any) -> None:
    assert client.running()
    assert json.loads(client.version())["version"].startswith("enchufe")
    with Target("tcp://127.0.0.1:0", echo) as target:
        upstream = target.address.removeprefix("tcp://")
        proxy = client.create(upstream=upstream, name="echo")
        assert (proxy.name, proxy.upstream, proxy.enabled) == ("echo", upstream, True)
        listen = f"tcp://{proxy.listen}"
        proxy.add_toxic(type="latency", attributes={"latency": 100})
        proxy.add_toxic(type="limit_data", name="cap", stream="upstream", attributes={"bytes": 1000})
        toxics = proxy.toxics()
        assert sorted(toxics) == ["cap", "latency_downstream"]
        assert toxics["latency_downstream"].attributes == {"latency": 100, "jitter": 0}
        assert toxics["cap"].stream == "upstream" and toxics["cap"].toxicity == 1.0
        with dial(listen) as sock:
            started = time.monotonic()
            sock.sendall(b"ping")
            assert sock.recv(10) == b"ping"
            assert time.monotonic() - started >= 0.100 - 0.002
        with pytest.raises(toxiproxy.api.ProxyExists):
            proxy.add_toxic(type="latency")
        assert proxy.destroy_toxic("latency_downstream")
        assert proxy.get_toxic("latency_downstream") is None
        with proxy.down():
            assert client.get_proxy("echo").enabled is False
            with pytest.raises(ConnectionRefusedError):
                dial(listen).close()
        assert client.get_proxy("echo").enabled is True
        with dial(listen) as sock:
            sock.sendall(b"back")
            assert sock.recv(10) == b"back"
        assert client.reset()
        assert proxy.toxics() == {}
        with pytest.raises(toxiproxy.api.ProxyExists):
            client.create(upstream=upstream, name="echo")
        with pytest.raises(toxiproxy.api.InvalidToxic):
            proxy.add_toxic(type="nope")
        with pytest.raises(toxiproxy.api.NotFound):
            toxiproxy.api.APIConsumer.get("/proxies/nobody")
        populated = client.populate([{"name": "two", "upstream": upstream, "listen": "127.0.0.1:0"}])
        assert [p.name for p in populated] == ["two"]
        assert sorted(client.proxies()) == ["echo", "two"]
        client.destroy_all()
        assert client.proxies() == {}


LISTENING = re.compile(r"listening on tcp://127\.0\.0\.1:(\d+)")


def test_the_command_serves_its_config_and_stops_on_sigterm(tmp_path: Path) -> None:
    def talk(conn: Any) -> None:
        conn.sendall(b"hello")
        read_all(conn)

    with Target("tcp://127.0.0.1:0", talk) as target:
        config = tmp_path / "proxies.json"
        config.write_text(json.dumps([{"name": "t", "listen": "127.0.0.1:0", "upstream": target.address}]))
        proc = subprocess.Popen(
            [*ENCHUFE, "chaos", "--control", "127.0.0.1:0", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            lines = [proc.stderr.readline() for _ in range(2)]
            proxy_line, listening = lines
            assert proxy_line.startswith("proxy t: listening on tcp://127.0.0.1:")
            match = LISTENING.search(listening)
            assert match, lines
            import http.client

            api = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=IO_TIMEOUT)
            api.request("GET", "/proxies/t")
            proxy = json.loads(api.getresponse().read())
            api.close()
            assert proxy["upstream"] == target.address and proxy["enabled"] is True
            with dial(f"tcp://{proxy['listen']}") as sock:
                assert sock.recv(10) == b"hello"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(IO_TIMEOUT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stderr is not None
            proc.stderr.close()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--control", "unix:/tmp/x"), "--control unix:/tmp/x: the API is HTTP over TCP"),
        (("--control", "nonsense:"), "--control"),
        (("--config", "/nonexistent/proxies.json"), "--config /nonexistent/proxies.json: no such file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], words: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [*ENCHUFE, "chaos", "--control", "127.0.0.1:0", *args],
        capture_output=True,
        text=True,
        timeout=IO_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_a_bad_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "proxies.json"
    config.write_text('[{"name": "x"}]')
    done = subprocess.run(
        [*ENCHUFE, "chaos", "--control", "127.0.0.1:0", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=IO_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "missing required field: upstream at proxy 1" in done.stderr


def test_a_control_port_in_use_is_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*ENCHUFE, "chaos", "--control", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=IO_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    assert done.returncode == 1
    wanted = f"enchufe: cannot serve the API on 127.0.0.1:{port}: address already in use; "
    assert done.stderr == wanted + "pick another --control address\n"

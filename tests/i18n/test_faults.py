"""Faults on purpose in Spanish: ``--fault``'s mistakes and ``enchufe chaos``'s lines follow
``--lang``; the chaos API's JSON stays Toxiproxy's English, word for word, under ``--lang es``."""

from __future__ import annotations

import http.client
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from enchufe import i18n
from enchufe.address import parse
from enchufe.errors import AddressError
from tests.cli.conftest import STEP, Proc, assert_one_error_line, run, run_here

RELAY = ("relay", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1")


@pytest.fixture(autouse=True)
def _english_afterwards() -> Iterator[None]:
    """run_here() sets the language of this process: the next test starts in English."""
    yield
    i18n.set_language("en")


def test_an_unknown_fault_type_is_one_spanish_line_and_exit_2() -> None:
    done = run("--lang", "es", *RELAY, "--fault", "nonsense")
    assert done.returncode == 2
    assert_one_error_line(done.stderr, "tipo de fallo desconocido 'nonsense'; se aceptan: latency, bandwidth")


@pytest.mark.parametrize(
    ("fault", "spanish", "english"),
    [
        (
            "latency:latency=-1",
            "latency: latency debe ser un número entero de 0 a 1000000000 (ms), no '-1'",
            "latency: latency must be a whole number from 0 to 1000000000 (ms), not '-1'",
        ),
        ("timeout:timeout=x", "(ms; 0 = nunca), no 'x'", "(ms; 0 = never), not 'x'"),
        ("bandwidth:rate=-5", "(KB/s; 0 = sin límite)", "(KB/s; 0 = no limit)"),
        ("reset_peer:timeout=-1", "(ms; 0 = de inmediato)", "(ms; 0 = at once)"),
        (
            "latency:toxicity=2",
            "toxicity debe ser un número de 0 a 1, no '2'",
            "toxicity must be a number from 0 to 1",
        ),
        ("latency:jitter", "'jitter' no tiene la forma ATRIBUTO=VALOR", "'jitter' is not ATTR=VALUE"),
        (
            "latency:latency=1,latency=2",
            "latency: latency aparece dos veces",
            "latency: latency is given twice",
        ),
        (
            "latency:speed=1",
            "atributo desconocido 'speed'; se aceptan: latency, jitter",
            "unknown attribute 'speed'",
        ),
        (
            "latency:stream=sideways",
            "stream debe ser upstream o downstream",
            "stream must be upstream or downstream",
        ),
        (
            "slicer:average_size=10,size_variation=20",
            "size_variation debe ser como mucho average_size (10), no 20",
            "size_variation must be at most average_size (10), not 20",
        ),
        (
            "loss:probability=0.5",
            "--fault loss actúa solo sobre datagramas, pero este relé transporta flujos; "
            "para flujos: bandwidth",
            "--fault loss acts on datagrams only, but this relay carries streams; for streams: bandwidth",
        ),
    ],
)
def test_a_bad_fault_is_refused_in_the_language_asked(fault: str, spanish: str, english: str) -> None:
    for lang, words in (("es", spanish), ("en", english)):
        ran = run_here("--lang", lang, *RELAY, "--fault", fault)
        assert ran.returncode == 2
        assert_one_error_line(ran.stderr, words)


def test_a_stream_fault_on_a_framed_relay_is_refused_in_spanish() -> None:
    framed = ("relay", "udp://127.0.0.1:0", "tcp://127.0.0.1:1", "--frame", "--fault", "slicer")
    ran = run_here("--lang", "es", *framed)
    assert ran.returncode == 2
    assert_one_error_line(
        ran.stderr,
        "--fault slicer actúa solo sobre flujos, pero con --frame los fallos actúan sobre los "
        "datagramas, no sobre el flujo que los transporta; para datagramas: bandwidth",
    )


def test_chaos_bad_input_is_spanish(tmp_path: Path) -> None:
    ran = run_here("--lang", "es", "chaos", "--control", "unix:/tmp/x")
    assert ran.returncode == 2
    assert_one_error_line(ran.stderr, "--control unix:/tmp/x: la API es HTTP sobre TCP; indica HOST:PUERTO")
    config = tmp_path / "proxies.json"
    config.write_text('[{"name": "x"}]')
    done = run("--lang", "es", "chaos", "--control", "127.0.0.1:0", "--config", str(config))
    assert done.returncode == 2
    assert_one_error_line(
        done.stderr, f"--config {config}: falta el campo obligatorio: upstream en el proxy 1"
    )


def _english_address_error(text: str) -> str:
    i18n.set_language("en")
    with pytest.raises(AddressError) as refused:
        parse(text)
    return str(refused.value)


def _call(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    api = http.client.HTTPConnection("127.0.0.1", port, timeout=STEP)
    try:
        api.request(method, path, body=None if body is None else json.dumps(body))
        reply = api.getresponse()
        data = reply.read()
        return reply.status, json.loads(data) if data else None
    finally:
        api.close()


def test_chaos_lines_are_spanish_and_its_api_answers_toxiproxys_english() -> None:
    with socket.socket() as target:
        target.bind(("127.0.0.1", 0))
        target.listen()
        upstream = f"127.0.0.1:{target.getsockname()[1]}"
        proc = Proc(("--lang", "es", "chaos", "-v", "--control", "127.0.0.1:0"), stdin=False)
        try:
            port = int(proc.wait_err(r"^escuchando en tcp://127\.0\.0\.1:(\d+)$").group(1))
            status, proxy = _call(port, "POST", "/proxies", {"name": "db", "upstream": upstream})
            assert status == 201, proxy
            proc.wait_err(
                rf"^proxy db: escuchando en tcp://{re.escape(proxy['listen'])}, hacia tcp://{upstream}$"
            )

            # Every error is Toxiproxy's English, whatever --lang says: its clients read them.
            assert _call(port, "POST", "/proxies/db/toxics", {"type": "nonsense"}) == (
                400,
                {
                    "error": "invalid toxic type: unknown fault type 'nonsense'; accepted: latency, "
                    "bandwidth, slicer, limit_data, timeout, reset_peer, slow_close, loss, duplicate, "
                    "corrupt, reorder",
                    "status": 400,
                },
            )
            status, body = _call(
                port, "POST", "/proxies/db/toxics", {"type": "latency", "attributes": {"latency": -1}}
            )
            assert (status, body["error"]) == (
                400,
                "latency: latency must be a whole number from 0 to 1000000000 (ms), not -1",
            )
            assert _call(port, "POST", "/proxies", {"name": "x"}) == (
                400,
                {"error": "missing required field: upstream", "status": 400},
            )
            assert _call(port, "POST", "/proxies", {"name": "x", "upstream": "tcp://"}) == (
                400,
                {"error": f"upstream: {_english_address_error('tcp://')}", "status": 400},
            )
            assert _call(port, "GET", "/proxies/nope") == (404, {"error": "proxy not found", "status": 404})
            assert _call(port, "POST", "/proxies", {"name": "db", "upstream": upstream}) == (
                409,
                {"error": "proxy already exists", "status": 409},
            )
            assert _call(port, "DELETE", "/proxies/db") == (204, None)
            proc.wait_err(r"^proxy db: detenido$")
            assert proc.terminate() == 0
        finally:
            proc.kill()
    assert "Traceback" not in proc.err

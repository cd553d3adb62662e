"""``enchufe bench`` in Spanish: its option errors, its tables (titles, columns, notes), a failed
measure's line; the ``--json`` document stays the same in every language."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from enchufe import i18n
from enchufe.bench.compare import compare
from enchufe.bench.report import tables
from enchufe.bench.results import BenchRun, Machine, Settings, TargetResult, Throughput
from tests.cli.conftest import assert_one_error_line, free_port, run, run_here

#: Very short runs: these check words, not speed.
QUICK = ("--duration", "0.05", "--count", "30")


@pytest.fixture(autouse=True)
def _english_afterwards() -> Iterator[None]:
    """run_here() and the pure tests set this process's language: the next test starts in English."""
    yield
    i18n.set_language("en")


def test_a_bad_option_is_one_spanish_line_and_exit_2() -> None:
    done = run("--lang", "es", "bench", "--mode", "nada")
    assert done.returncode == 2
    assert_one_error_line(
        done.stderr, "--mode desconocido: 'nada'; se acepta uno de throughput, latency, connect, datagram"
    )


@pytest.mark.parametrize(
    ("args", "spanish"),
    [
        (("--kind", "tcp9"), "--kind desconocido: 'tcp9'; se acepta uno de tcp4"),
        (("--sink",), "--sink describe los servidores dados como DIRECCIÓN"),
        (("--kind", "unix", "tcp://127.0.0.1:7"), "--kind elige los tipos de la prueba en loopback"),
        (("tls://127.0.0.1:7",), "bench mide TLS solo en loopback, con sus propios servidores"),
        (("tcp://:7",), "bench necesita un host al que llegar, p. ej. tcp://127.0.0.1:7"),
        (("exec:cat",), "'exec:cat': bench mide servidores de sockets: direcciones tcp://, udp://"),
        (("tcp://127.0.0.1:0",), "el puerto 0 significa 'cualquier puerto libre' al escuchar"),
        (("--kind", "unixgram", "--size", "4"), "--size 4 es demasiado pequeño para unixgram"),
        (("--kind", "udp4", "--size", "70000"), "--size 70000 no cabe en un datagrama UDP hacia udp4"),
        (
            ("--mode", "datagram", "--kind", "tcp4"),
            "--mode datagram mide sockets de datagramas; tcp4 es de flujo",
        ),
        (
            ("--mode", "connect", "--kind", "udp4"),
            "--mode connect mide sockets de flujo; udp4 es un socket de",
        ),
        (("--plot", "figure.svg"), "--plot escribe un PNG: indica un nombre de archivo acabado en .png"),
        (("--plot", "/nonexistent/folder/b.png"), "la carpeta /nonexistent/folder no existe"),
        (("--compare", "/nonexistent/run.json"), "--compare: no se puede leer /nonexistent/run.json"),
    ],
)
def test_bad_options_are_refused_in_spanish(args: tuple[str, ...], spanish: str) -> None:
    ran = run_here("--lang", "es", "bench", *args)
    assert ran.returncode == 2
    assert_one_error_line(ran.stderr, spanish)


def test_a_file_that_is_not_a_run_is_refused_in_spanish(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"schema": "something else"}')
    ran = run_here("--lang", "es", "bench", "--compare", str(other))
    assert ran.returncode == 2
    assert_one_error_line(ran.stderr, f"--compare: {other} no es la salida de enchufe bench --json (esquema")


def test_a_real_run_shows_spanish_tables() -> None:
    done = run("--lang", "es", "bench", "--kind", "unix", "--mode", "latency", *QUICK)
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    for words in (
        "enchufe bench, loopback",
        "tipo",
        "RTT p50 µs",
        "máx.",
        "servidor: los de bench, en un proceso aparte (pid ",
        "cliente: este proceso (pid ",
        "latencia: 30 idas y vueltas de ping-pong de 64 B tras 10 sin contar",
        "máquina: ",
    ):
        assert words in out, (words, out)
    assert "round trips" not in out and "machine:" not in out


def test_a_real_datagram_run_shows_the_spanish_datagram_table() -> None:
    done = run("--lang", "es", "bench", "--kind", "unixgram", "--mode", "datagram", "--size", "64", *QUICK)
    assert done.returncode == 0, done.stderr
    for words in (
        "datagramas: enviados tan rápido como el socket los acepta",
        "carga útil",
        "enviados/s",
        "recibidos/s",
        "perdidos",
        "recibidos: números de secuencia distintos que contó el receptor de bench",
    ):
        assert words in done.stdout.decode(), (words, done.stdout.decode())


def test_the_json_document_is_english_under_lang_es() -> None:
    done = run("--lang", "es", "bench", "--kind", "unix", "--mode", "latency", "--json", *QUICK)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["arrangement"]["server"].startswith("bench's own, in a separate process (pid ")
    assert doc["arrangement"]["client"].startswith("this process (pid ")


def test_a_measure_that_fails_says_so_in_spanish() -> None:
    port = free_port()
    done = run("--lang", "es", "bench", f"tcp://127.0.0.1:{port}", *QUICK)
    assert done.returncode == 1
    line = f"nadie atiende en tcp://127.0.0.1:{port} (conexión rechazada); arranca antes un servidor ahí"
    err = done.stderr.decode()
    assert line in err, err
    assert "Traceback" not in err


def _a_run() -> BenchRun:
    machine = Machine(2, 2, "Linux", "6.1", "x86_64", "3.11.7", "CPython", "blocking", None)
    settings = Settings(1.0, 0.2, 100, 10, None, 4, ("throughput",))
    arrangement = {
        "server": "bench's own, in a separate process (pid 7): blocking sockets, one thread per connection; "
        "throughput into a sink",
        "client": "this process (pid 8), one thread per connection",
    }
    run = BenchRun(machine, settings, arrangement)
    tcp = TargetResult("tcp4", "tcp://127.0.0.1:1", "tcp4", True, "bench")
    tcp.throughput = [Throughput(1, 131072, 1.0, 10**9, "sink")]
    tcp.errors = ["throughput, 4 connections: no se puede enviar"]
    tcp6 = TargetResult(
        "tcp6", "", "tcp6", True, "bench", skipped="this host cannot bind the IPv6 loopback ::1"
    )
    run.targets = [tcp, tcp6]
    return run


def test_bench_words_are_shown_in_spanish_and_kept_english_for_json() -> None:
    run = _a_run()
    i18n.set_language("es")
    assert run.shown_errors == ["tcp4: caudal, 4 conexiones: no se puede enviar"]
    assert run.errors == ["tcp4: throughput, 4 connections: no se puede enviar"]
    (main,) = tables(run)
    rows = {row[0]: row for row in main.rows}
    assert rows["tcp4"][2] == "falló" and rows["tcp6"][1] == "omitido"
    skipped = "tcp6 omitido: en esta máquina no se puede asociar un socket (bind()) al loopback IPv6 ::1"
    assert skipped in main.notes
    assert (
        "máquina: 2 núcleos, Linux 6.1, CPython 3.11.7; otros trabajos en la máquina hacen variar estas "
        "cifras" in main.notes
    )
    assert run.to_dict()["targets"][1]["skipped"] == "this host cannot bind the IPv6 loopback ::1"


def test_a_comparison_is_shown_in_spanish_and_kept_english_for_json() -> None:
    before = _a_run().to_dict()
    after = _a_run()
    after.targets[0].throughput = [Throughput(1, 131072, 1.0, 2 * 10**9, "sink")]
    i18n.set_language("es")
    (change,) = compare(before, after.to_dict())
    assert (change.label, change.shown()) == ("tcp4 caudal, 1 conexión", "+100.0 %")
    assert change.to_dict()["figure"] == "tcp4 throughput, 1 connection"

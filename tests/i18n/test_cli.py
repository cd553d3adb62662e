"""The commands in Spanish: click's mistakes, option values, usage errors, event lines, check's
statuses, hints and interruptions follow ``--lang`` (before or after the command name) or
``LANG``; ``--lang en`` forces English; ``--json`` stays English, word for word."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from enchufe import i18n
from tests.cli.conftest import (
    ENCHUFE,
    STEP,
    Proc,
    Spawn,
    assert_one_error_line,
    free_port,
    run,
    run_here,
    spawn,  # noqa: F401  (the fixture)
)

ES = ("--lang", "es")
COMMANDS = "listen, connect, send, recv, echo, chat, relay, socks, chaos, tour, diagram, bench, check"


@pytest.fixture(autouse=True)
def _english_afterwards() -> Iterator[None]:
    """run_here() sets the language of this process: the next test starts in English."""
    yield
    i18n.set_language("en")


def _environ(lang: str | None) -> dict[str, str]:
    """This environment with no language in it but ``LANG=lang`` (none: English by default)."""
    env = {k: v for k, v in os.environ.items() if k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")}
    if lang is not None:
        env["LANG"] = lang
    return env


def run_with_lang(lang: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ENCHUFE, *args], env=_environ(lang), capture_output=True, text=True, timeout=STEP, check=False
    )


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("listen", "--bogus"), ("no existe la opción --bogus", "(consulta 'enchufe listen --help')")),
        (
            ("listen", "--backlog"),
            ("la opción --backlog necesita un valor (consulta 'enchufe listen --help')",),
        ),
        (
            ("listen", "--keep-open=1", "x"),
            ("la opción --keep-open no admite valor (consulta 'enchufe listen --help')",),
        ),
        (
            ("lisen",),
            ("no existe el comando 'lisen' (¿quisiste decir listen", f"los comandos son: {COMMANDS}"),
        ),
        (("--trace",), (f"falta el comando; los comandos son: {COMMANDS} (consulta 'enchufe --help')",)),
        (("diagram", "/nonexistent/a.jsonl"), ("'/nonexistent/a.jsonl' no existe",)),
    ],
)
def test_a_mistake_click_finds_is_one_spanish_line_and_exit_2(
    args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    ran = run_here(*ES, *args)
    assert ran.returncode == 2
    assert_one_error_line(ran.stderr, *needles)


def test_a_bad_choice_is_said_in_the_language_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "es_ES.UTF-8")
    ran = run_here("--lang", "fr", "listen", "tcp://127.0.0.1:0")
    assert ran.returncode == 2
    assert_one_error_line(ran.stderr, "valor no válido para --lang: 'fr' no es ninguno de estos: 'en', 'es'")


def test_enchufe_alone_prints_the_help_not_an_error_line() -> None:
    ran = run_here()
    assert ran.returncode == 2
    text = ran.stderr.decode()
    assert text.startswith("Usage: enchufe [OPTIONS] COMMAND"), text[:200]
    assert "\n  listen " in text and "\\n" not in text


def test_an_option_value_out_of_range_says_the_range_in_spanish() -> None:
    done = run(*ES, "listen", "--backlog", "0", "tcp://127.0.0.1:0")
    assert done.returncode == 2
    assert_one_error_line(
        done.stderr,
        "enchufe: valor no válido para --backlog: '0' está fuera del rango; se acepta: 1 ≤ N ≤ 65535",
    )


@pytest.mark.parametrize(
    ("args", "spanish"),
    [
        (
            ("connect", "--idle-timeout", "nan", "tcp://127.0.0.1:9"),
            "'nan' no es un número finito; se acepta: 0 < S ≤ 1000000; 0 = nunca",
        ),
        (
            ("connect", "--timeout", "x", "tcp://127.0.0.1:9"),
            "'x' no es un número; se acepta: 0 < S ≤ 1000000",
        ),
        (("connect", "--timeout", "1e999", "tcp://127.0.0.1:9"), "'1e999' es demasiado grande; se acepta"),
        (("recv", "--count", "1.5", "udp://127.0.0.1:0"), "'1.5' no es un número entero; se acepta: 1 ≤ N ≤"),
        (
            ("listen", "--mode", "999", "unix:/tmp/x.sock"),
            "'999' no es un modo de archivo octal como 600 o 660",
        ),
        (
            ("--trace-file", "/nonexistent/x.jsonl", "check", "tcp://127.0.0.1:9"),
            "no se puede escribir en /nonexistent/x.jsonl: no existe el archivo o el directorio (indica",
        ),
    ],
)
def test_option_values_are_refused_in_spanish(args: tuple[str, ...], spanish: str) -> None:
    ran = run_here(*ES, *args)
    assert ran.returncode == 2
    assert_one_error_line(ran.stderr, spanish)


@pytest.mark.parametrize(
    ("args", "spanish"),
    [
        (
            ("listen", "-k", "udp://127.0.0.1:0"),
            "-k/--keep-open atiende clientes de flujo uno tras otro; udp://127.0.0.1:0 es un socket de "
            "datagramas",
        ),
        (
            ("listen", "--hex", "tcp://127.0.0.1:0"),
            "--hex vuelca datagramas; tcp://127.0.0.1:0 es un socket de flujo",
        ),
        (
            ("recv", "tcp://127.0.0.1:0"),
            "recv necesita una dirección de datagramas (udp://…, unixgram:…); para un socket de flujo usa "
            "`enchufe listen tcp://127.0.0.1:0`",
        ),
        (
            ("connect", "127.0.0.1", "80"),
            "connect recibe una sola dirección, no HOST PUERTO como nc (127.0.0.1 80): escribe tcp://127.0.0.1:80",
        ),
        (
            ("check", "tcp://:22"),
            "tcp://:22: check necesita un host y un puerto a los que llegar, p. ej. tcp://127.0.0.1:22",
        ),
        (
            ("send", "--timeout", "2", "udp://127.0.0.1:9", "x"),
            "enviar un datagrama a udp://127.0.0.1:9 no espera nada (añade --wait-reply)",
        ),
        (
            ("echo", "--mode", "600", "unix:@enchufe-i18n"),
            "--mode fija los permisos de un archivo de socket unix; unix:@enchufe-i18n es un nombre "
            "abstracto",
        ),
        (
            ("chat", "--queue-limit", "5", "udp://127.0.0.1:0"),
            "--queue-limit acota lo que espera a un cliente de flujo",
        ),
        (
            ("echo", "--trusted-proxy", "10.0.0.0/8", "tcp://127.0.0.1:0"),
            "--trusted-proxy solo se aplica junto con --accept-proxy",
        ),
        (
            ("connect", "--source", "udp://127.0.0.1:0", "tcp://127.0.0.1:9"),
            "--source udp://127.0.0.1:0: para conectar a tcp://127.0.0.1:9 hace falta un origen tcp://",
        ),
    ],
)
def test_usage_errors_are_one_spanish_line_and_exit_2(args: tuple[str, ...], spanish: str) -> None:
    ran = run_here(*ES, *args)
    assert ran.returncode == 2
    assert_one_error_line(ran.stderr, spanish)


def test_check_speaks_the_language_of_lang_and_lang_en_forces_english() -> None:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    spanish = run_with_lang("es_ES.UTF-8", "check", address)
    assert (spanish.returncode, spanish.stdout) == (1, f"{address} conexión rechazada\n")
    forced = run_with_lang("es_ES.UTF-8", "--lang", "en", "check", address)
    assert (forced.returncode, forced.stdout) == (1, f"{address} refused\n")
    plain = run_with_lang(None, "check", address)
    assert (plain.returncode, plain.stdout) == (1, f"{address} refused\n")


def test_json_output_stays_english_under_spanish() -> None:
    port = free_port()
    done = run_with_lang("es_ES.UTF-8", "check", "--json", f"tcp://127.0.0.1:{port}")
    assert done.returncode == 1
    record = json.loads(done.stdout)
    assert (record["address"], record["status"], record["ok"]) == (
        f"tcp://127.0.0.1:{port}",
        "refused",
        False,
    )


def test_lang_after_the_command_name_and_datagram_lines_in_spanish(spawn: Spawn) -> None:  # noqa: F811
    proc = spawn("recv", "udp://127.0.0.1:0", "-v", "--lang", "es", stdin=False)
    address = proc.wait_err(r"^escuchando en udp://127\.0\.0\.1:(\d+)$").group(1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(b"hola!", ("127.0.0.1", int(address)))
        proc.wait_err(r"^recibidos 5 bytes de udp://127\.0\.0\.1:\d+$")
    proc.wait_out_equal(b"hola!")  # the data itself, untouched
    assert proc.terminate() == 0


def test_json_events_under_spanish_keep_their_english_names(spawn: Spawn) -> None:  # noqa: F811
    proc = spawn("--lang", "es", "recv", "--json", "udp://127.0.0.1:0", stdin=False)
    line = proc.wait_err(r'^\{"event": "listening".*\}$').group(0)
    assert json.loads(line)["address"].startswith("udp://127.0.0.1:")
    assert proc.terminate() == 0
    assert "escucha" not in proc.err


def test_connect_narrates_and_is_interrupted_in_spanish(spawn: Spawn) -> None:  # noqa: F811
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        proc = spawn(*ES, "connect", "-v", f"tcp://127.0.0.1:{port}")
        conn, _peer = server.accept()
        with conn:
            proc.wait_err(rf"^conectado a tcp://127\.0\.0\.1:{port} desde tcp://127\.0\.0\.1:\d+$")
            proc.popen.send_signal(signal.SIGINT)
            assert proc.finish() == 1
    expected = (
        rf"^enchufe: interrumpido por SIGINT: conexión con tcp://127\.0\.0\.1:{port} cortada tras "
        r"recibir 0 bytes y enviar 0$"
    )
    assert re.search(expected, proc.err, re.MULTILINE), proc.err


def test_a_refused_send_gets_its_hint_in_spanish() -> None:
    done = run(*ES, "send", f"tcp://127.0.0.1:{free_port()}", "x")
    assert done.returncode == 1
    line = assert_one_error_line(done.stderr)
    assert line.endswith("? --retry N vuelve a intentarlo, p. ej. mientras arranca el servidor."), line


def _connect_when_up(port: int) -> socket.socket:
    deadline = time.monotonic() + STEP
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=STEP)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_server_says_its_drain_and_its_cut_in_spanish(spawn: Spawn) -> None:  # noqa: F811
    port = free_port()
    proc: Proc = spawn(*ES, "echo", "-v", f"tcp://127.0.0.1:{port}", stdin=False)
    with _connect_when_up(port) as client:
        client.sendall(b"x")
        assert client.recv(1) == b"x"
        proc.wait_err(r"^aceptada la conexión de tcp://127\.0\.0\.1:\d+$")
        proc.popen.send_signal(signal.SIGINT)
        proc.wait_err(
            r"^parando: no se aceptan clientes nuevos; se espera hasta 10 s a que termine 1 conexión abierta "
            r"\(envía la señal otra vez para cortarla ya\)$"
        )
        proc.popen.send_signal(signal.SIGINT)
        assert proc.finish() == 1
    assert "parando ya: se cortan las conexiones abiertas (1)" in proc.err
    assert "detenido; conexiones cortadas antes de terminar: 1" in proc.err

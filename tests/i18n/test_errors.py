"""The core library's errors in Spanish: what was being done, the system's reason and the hint,
and every address mistake, on real sockets and real commands; English stays word for word, and
the library speaks English unless the command (or a program) chose a language."""

from __future__ import annotations

import ast
import errno
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import enchufe
from enchufe import errors, i18n, sync
from enchufe.errors import (
    AddressError,
    AddressInUse,
    ClosedError,
    ConnectionRefused,
    IncompleteRead,
    NotASocket,
    UsageError,
)
from tests.cli.conftest import STEP, Spawn, assert_one_error_line, run, run_here, spawn  # noqa: F401
from tests.i18n.test_cli import _environ, run_with_lang


@pytest.fixture(autouse=True)
def _english_afterwards() -> Iterator[None]:
    """run_here() and set_language() set the language of this process: the next test starts in
    English."""
    yield
    i18n.set_language("en")


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback TCP port bound by a socket that never listens: a connection there is refused
    for as long as the test runs (no other process can take the port meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_a_refused_connection_is_one_spanish_line_and_exit_1(refusing_port: int) -> None:
    done = run("--lang", "es", "connect", f"tcp://127.0.0.1:{refusing_port}")
    assert done.returncode == 1
    assert_one_error_line(
        done.stderr,
        f"no se puede conectar con tcp://127.0.0.1:{refusing_port}: conexión rechazada; "
        "¿hay un servidor escuchando ahí?",
    )


def test_spanish_comes_from_lang_and_english_is_forced_by_lang_en(refusing_port: int) -> None:
    address = f"tcp://127.0.0.1:{refusing_port}"
    spanish = run_with_lang("es_ES.UTF-8", "connect", address)
    assert spanish.returncode == 1
    assert_one_error_line(spanish.stderr, f"no se puede conectar con {address}: conexión rechazada")
    english = run_with_lang("es_ES.UTF-8", "--lang", "en", "connect", address)
    assert english.returncode == 1
    assert_one_error_line(
        english.stderr, f"cannot connect to {address}: connection refused; is a server listening there?"
    )


def test_a_missing_unix_socket_file_is_said_in_spanish(tmp_path: Path) -> None:
    address = f"unix://{tmp_path}/nadie.sock"
    done = run("--lang", "es", "connect", address)
    assert done.returncode == 1
    assert_one_error_line(
        done.stderr,
        f"no se puede conectar con {address}: no existe el archivo de socket {tmp_path}/nadie.sock "
        "(arranca primero el servidor). --retry N espera a que arranque un servidor.",
    )


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (
            errno.ECONNRESET,
            "the peer closed with our data unread, or its program stopped; its log may say why",
        ),
        (errno.ECONNABORTED, "this machine gave up on the connection; try again"),
        (errno.EPERM, "a firewall rule or this user's privileges forbid it"),
        (errno.ENETUNREACH, "check the address, and this machine's routes and network link"),
        (errno.EHOSTUNREACH, "the host may be down, or a firewall rejects it; check the address"),
    ],
)
def test_a_hint_says_what_the_reason_does_not(code: int, hint: str) -> None:
    """ "connection reset by peer; the peer aborted the connection" said one thing twice: the hint
    after the system's reason says why, or what to try."""
    error = errors.translate(OSError(code, os.strerror(code)), "connect to tcp://127.0.0.1:9")
    assert str(error) == f"cannot connect to tcp://127.0.0.1:9: {os.strerror(code).lower()}; {hint}"


@pytest.mark.parametrize(
    ("address", "spanish"),
    [
        ("tcp://x", "'tcp://x': falta el puerto; escríbelo así: tcp://127.0.0.1:9000"),
        (
            "tcp://127.0.0.1:70000",
            "el puerto 70000 está fuera de rango (de 0 a 65535), p. ej. tcp://127.0.0.1:9000",
        ),
        ("tcp://::1:80", "una dirección IPv6 debe ir entre corchetes, p. ej. tcp://[::1]:80"),
        ("tcp://127.1:80", "no es una dirección IPv4 de cuatro números separados por puntos"),
        ("tcp://127.0.0.1:domian", "el puerto 'domian' no es un servicio de tcp conocido"),
        ("tcp://127.0.0.1:bootps", "el puerto 'bootps' es un servicio de udp, no de tcp"),
        ("gopher://x:70", "esquema desconocido 'gopher'; para una dirección TCP, escribe tcp://x:70"),
        ("nada", "falta el esquema; escríbelo como ESQUEMA:…"),
        ("unix:", "falta la ruta del socket; escribe unix:///tmp/app.sock, unix:rel/app.sock o unix:@name"),
        ("unix://tmp/a.sock", "tras unix:// va una ruta absoluta (tres barras: unix:///tmp/app.sock)"),
        ("unix:@" + "n" * 200, "el nombre abstracto ocupa 200 bytes, más de los 107 que caben"),
        ("exec:", "falta el programa; escribe exec:PROGRAMA ARGUMENTOS…"),
    ],
)
def test_a_bad_address_is_one_spanish_line_and_exit_2(address: str, spanish: str) -> None:
    done = run_here("--lang", "es", "connect", address)
    assert done.returncode == 2
    assert_one_error_line(done.stderr, spanish)


def test_a_bad_address_in_english_is_unchanged() -> None:
    done = run_here("--lang", "en", "connect", "tcp://x")
    assert done.returncode == 2
    assert_one_error_line(done.stderr, "'tcp://x': missing port; write it as tcp://127.0.0.1:9000")


def test_the_library_speaks_english_whatever_the_environment_says(refusing_port: int) -> None:
    """A program that imports enchufe gets English (its programmers' language) until it calls
    i18n.set_language, even under LANG=es_ES.UTF-8."""
    program = (
        "import sys\n"
        "from enchufe import sync\n"
        "from enchufe.errors import EnchufeError\n"
        "try:\n"
        f"    sync.connect('tcp://127.0.0.1:{refusing_port}')\n"
        "except EnchufeError as exc:\n"
        "    print(exc)\n"
        "try:\n"
        "    sync.connect('tcp://x')\n"
        "except EnchufeError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        timeout=STEP,
        env=_environ("es_ES.UTF-8"),
        check=True,
    )
    assert done.stdout.decode().splitlines() == [
        f"cannot connect to tcp://127.0.0.1:{refusing_port}: connection refused; "
        "is a server listening there?",
        "'tcp://x': missing port; write it as tcp://127.0.0.1:9000",
    ]


def test_a_program_that_chooses_spanish_gets_spanish_errors(refusing_port: int, tmp_path: Path) -> None:
    i18n.set_language("es")
    with pytest.raises(ConnectionRefused) as refused:
        sync.connect(f"tcp://127.0.0.1:{refusing_port}")
    assert str(refused.value).startswith(
        f"no se puede conectar con tcp://127.0.0.1:{refusing_port}: conexión rechazada"
    )
    assert refused.value.action == "connect"  # the action is still the English word a program tests
    path = tmp_path / "ocupado.sock"
    with sync.listen(f"unix://{path}"), pytest.raises(AddressInUse) as in_use:
        sync.listen(f"unix://{path}")
    assert str(in_use.value) == (
        f"no se puede escuchar en unix://{path}: dirección en uso: hay un servidor activo asociado a ella; "
        "detenlo o elige otra ruta"
    )
    plain = tmp_path / "texto"
    plain.write_text("no soy un socket")
    with pytest.raises(NotASocket, match="existe y no es un socket; enchufe nunca lo borra"):
        sync.listen(f"unix://{plain}")


def test_a_short_read_a_closed_connection_and_a_bad_number_are_said_in_spanish() -> None:
    i18n.set_language("es")
    with sync.listen("tcp://127.0.0.1:0") as listener, sync.connect(str(listener.address)) as conn:
        with listener.accept() as server_side:
            server_side.send_all(b"abc")
        with pytest.raises(IncompleteRead) as short:
            conn.recv_exactly(10)
        assert str(short.value) == f"{listener.address} cerró la conexión cuando habían llegado 3 de 10 bytes"
        conn.close()
        with pytest.raises(ClosedError) as closed:
            conn.send_all(b"hola")
        assert str(closed.value) == "esta conexión está cerrada"
    with pytest.raises(UsageError) as retries:
        sync.connect("tcp://127.0.0.1:9", retries=-1)
    assert str(retries.value) == "retries debe ser 0 o más, no -1"
    with pytest.raises(UsageError) as backlog:
        sync.listen("tcp://127.0.0.1:0", backlog=-1)
    assert str(backlog.value).startswith("backlog debe ser un número entero de 0 a ")


def test_a_timeout_and_a_reset_are_said_in_spanish() -> None:
    i18n.set_language("es")
    timed_out = errors.translate(TimeoutError(), "receive from tcp://127.0.0.1:9")
    assert str(timed_out) == "no se puede recibir desde tcp://127.0.0.1:9: se agotó el tiempo de espera"
    reset = errors.translate(
        ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET)), f"send to {i18n._('the peer')}"
    )
    assert str(reset) == (
        "no se puede enviar hacia el otro extremo: conexión reiniciada (reset) por el otro extremo; "
        "el otro extremo cerró sin leer lo que le enviamos, o su programa se detuvo; su registro puede "
        "decir por qué"
    )
    assert reset.action == "send"


def _what_phrases() -> list[tuple[str, str]]:
    """Every phrase the package gives translate() (or a function that passes it on) as a literal
    or an f-string, with each field shown as ``X``: (where, phrase)."""
    takers = {
        "translate": 1,
        "create_socket": 2,
        "explain_unix_failure": 2,
        "error_for": 1,
        "finish_stream": 2,
    }
    package = Path(enchufe.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            position = takers.get(name)
            if position is None or len(node.args) <= position:
                continue
            arg = node.args[position]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                phrase = arg.value
            elif isinstance(arg, ast.JoinedStr):
                phrase = "".join(str(v.value) if isinstance(v, ast.Constant) else "X" for v in arg.values)
            else:
                continue
            found.append((f"{path.relative_to(package)}:{node.lineno}", phrase))
    return found


def test_every_phrase_for_what_was_being_done_has_its_translation() -> None:
    """A new "cannot …" phrase given to translate() must be added to errors._DOING, or Spanish
    messages would say it in English."""
    phrases = _what_phrases()
    assert len(phrases) > 20
    i18n.set_language("es")
    untranslated = [f"{where}: {phrase!r}" for where, phrase in phrases if errors.doing(phrase) == phrase]
    assert not untranslated, "add these to errors._DOING:\n" + "\n".join(untranslated)


def test_a_reason_the_catalog_does_not_know_stays_as_the_system_said_it() -> None:
    i18n.set_language("es")
    error = errors.translate(OSError(errno.ENOTRECOVERABLE, "State not recoverable"), "connect to unix:@x")
    assert str(error) == "no se puede conectar con unix:@x: state not recoverable"
    with pytest.raises(AddressError):  # and bad input is still bad input in Spanish
        sync.connect("unix:")


def test_a_server_turning_a_client_away_says_so_in_spanish(spawn: Spawn) -> None:  # noqa: F811
    proc = spawn("--lang", "es", "echo", "tcp://127.0.0.1:0", "--max-conns", "1", stdin=False)
    port = int(proc.wait_err(r"^escuchando en tcp://127\.0\.0\.1:(\d+)$").group(1))
    with socket.create_connection(("127.0.0.1", port), timeout=STEP) as holder:
        holder.sendall(b"hola")
        assert holder.recv(4) == b"hola"  # served: it holds the only place
        with socket.create_connection(("127.0.0.1", port), timeout=STEP) as extra:
            assert extra.recv(1) == b""  # turned away: closed at once
        proc.wait_err(
            r"^enchufe: rechazada la conexión de tcp://127\.0\.0\.1:\d+: "
            r"el servidor ha llegado a su límite de 1 conexión abierta$"
        )
    assert proc.terminate() == 0

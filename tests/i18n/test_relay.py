"""The relay in Spanish: its refusals of a configuration (one line, exit 2), its event lines
(listening, each client accepted, connected, closed, a target that refuses, stopping, the
summary) follow ``--lang`` or ``LANG``; ``--lang en`` forces English."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest

from enchufe import i18n
from tests.cli.conftest import ENCHUFE, STEP, Proc, assert_one_error_line, run_here
from tests.relay.conftest import Target, echo

_LANGUAGE_VARIABLES = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")

#: The Spanish "listening on ADDRESS" line, and the English one.
ESCUCHANDO = r"^escuchando en (\S+)$"
LISTENING = r"^listening on (\S+)$"


@pytest.fixture(autouse=True)
def _english_afterwards() -> Iterator[None]:
    """run_here() sets the language of this process: the next test starts in English."""
    yield
    i18n.set_language("en")


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback TCP port bound by a socket that never listens: connections there are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "spanish"),
    [
        (
            ("tcp://127.0.0.1:0", "udp://127.0.0.1:9"),
            "no se puede retransmitir entre tcp://127.0.0.1:0 (un flujo) y udp://127.0.0.1:9 (datagramas) "
            "sin delimitar los mensajes",
        ),
        (
            ("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--mode", "600"),
            "--mode fija los permisos del archivo de socket de un LISTEN unix, pero tcp://127.0.0.1:0 no es "
            "un archivo; quita --mode",
        ),
        (
            ("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--route", "nombre"),
            "--route 'nombre': se esperaba NAME=TARGET, p. ej. --route",
        ),
        (
            (
                "tcp://127.0.0.1:0",
                "-",
                "--route",
                "a.test=tcp://127.0.0.1:1",
                "--route",
                "a.test=tcp://127.0.0.1:2",
            ),
            "--route a.test aparece dos veces; indica cada NAME (y alpn=) una sola vez",
        ),
        (
            ("tcp://127.0.0.1:0", "-", "--frame"),
            "--frame lleva datagramas sobre un flujo, pero tcp://127.0.0.1:0 y - son los dos de flujo",
        ),
        (
            ("unix:@enchufe-i18n-relay", "tcp://127.0.0.1:9", "--workers", "2"),
            "--workers 2: unix:@enchufe-i18n-relay es un socket unix, que varios procesos no pueden "
            "compartir con SO_REUSEPORT",
        ),
        (
            ("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--seed", "1"),
            "--seed hace repetibles las elecciones aleatorias de los fallos: añade también --fault",
        ),
        (
            ("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", "--allow-uid", "0"),
            "--allow-uid/--allow-gid necesitan una dirección LISTEN unix (SO_PEERCRED); "
            "para IP usa --allow/--deny",
        ),
    ],
)
def test_a_relay_configuration_refused_is_one_spanish_line_and_exit_2(
    args: tuple[str, ...], spanish: str
) -> None:
    ran = run_here("--lang", "es", "relay", *args)
    assert ran.returncode == 2, ran.stderr
    assert_one_error_line(ran.stderr, spanish)


def test_lang_en_forces_english_and_lang_es_from_the_environment_gives_spanish() -> None:
    ran = run_here("--lang", "en", "relay", "tcp://127.0.0.1:0", "udp://127.0.0.1:9")
    assert ran.returncode == 2
    assert_one_error_line(
        ran.stderr,
        "cannot relay between tcp://127.0.0.1:0 (a stream) and udp://127.0.0.1:9 (datagrams) without framing",
    )
    env = {k: v for k, v in os.environ.items() if k not in _LANGUAGE_VARIABLES}
    env["LANG"] = "es_ES.UTF-8"
    done = subprocess.run(
        [*ENCHUFE, "relay", "tcp://127.0.0.1:0", "udp://127.0.0.1:9"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=STEP,
        env=env,
        check=False,
    )
    assert done.returncode == 2
    assert_one_error_line(done.stderr, "no se puede retransmitir entre tcp://127.0.0.1:0 (un flujo)")


def _relay(lang: str, target: str, *options: str) -> tuple[Proc, str]:
    proc = Proc(("--lang", lang, "relay", "tcp://127.0.0.1:0", target, *options), stdin=False)
    pattern = ESCUCHANDO if lang == "es" else LISTENING
    return proc, proc.wait_err(pattern).group(1)


def _connect(address: str) -> socket.socket:
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=STEP)


@pytest.mark.parametrize(
    ("lang", "line"),
    [
        (
            "es",
            r"^enchufe: .*tcp://127\.0\.0\.1:{port}.* "
            r"\(cerrada la conexión del cliente tcp://127\.0\.0\.1:\d+ #1\)$",
        ),
        (
            "en",
            r"^enchufe: cannot connect to tcp://127\.0\.0\.1:{port}: .* "
            r"\(client tcp://127\.0\.0\.1:\d+ #1 closed\)$",
        ),
    ],
)
def test_a_target_that_refuses_is_said_in_the_language_asked(
    refusing_port: int, lang: str, line: str
) -> None:
    proc, address = _relay(lang, f"tcp://127.0.0.1:{refusing_port}")
    try:
        # The relay resets a client it cannot serve: on a loaded machine connect() may see it.
        with contextlib.suppress(ConnectionResetError), _connect(address) as client:
            client.recv(1)
        proc.wait_err(line.format(port=refusing_port))
        assert proc.terminate() == 0
    finally:
        proc.kill()
    if lang == "es":
        assert "cannot connect" not in proc.err and "closed)" not in proc.err


def test_a_session_in_spanish_from_accept_to_the_summary() -> None:
    """-v: accepted, connected, closed with its counts; then stopping and the summary."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as target:
        target.bind(("127.0.0.1", 0))
        target.listen(1)
        target.settimeout(STEP)
        port = target.getsockname()[1]
        proc, address = _relay("es", f"tcp://127.0.0.1:{port}", "-v")
        try:
            with _connect(address) as client:
                served, _peer = target.accept()
                with served:
                    served.settimeout(STEP)
                    client.sendall(b"hola")
                    assert served.recv(16) == b"hola"
                    served.sendall(b"adios!")
                    client.settimeout(STEP)
                    assert client.recv(16) == b"adios!"
                    client.shutdown(socket.SHUT_WR)
                    assert served.recv(16) == b""
            proc.wait_err(r"^aceptada la conexión de tcp://127\.0\.0\.1:\d+ \(#1\)$")
            proc.wait_err(rf"^#1 conectado con tcp://127\.0\.0\.1:{port} en [\d.]+ ms$")
            proc.wait_err(
                r"^cerrada la conexión #1 con tcp://127\.0\.0\.1:\d+: "
                r"4 bytes al destino, 6 al cliente en [\d.]+ s$"
            )
            proc.popen.send_signal(signal.SIGTERM)
            proc.wait_err(r"^parando: no hay ninguna conexión abierta$")
            assert proc.finish() == 0
            proc.wait_err(r"^resumen: conexiones retransmitidas 1 en [\d.]+ s \(rechazadas 0, ")
        finally:
            proc.kill()
    assert "accepted" not in proc.err and "summary" not in proc.err


def test_a_session_ended_by_a_fault_is_said_in_spanish() -> None:
    """A stdio relay's one session reset by --fault on purpose: one Spanish line, exit 1."""
    with Target("tcp://127.0.0.1:0", echo) as target:
        done = subprocess.run(
            [*ENCHUFE, "--lang", "es", "relay", "-", target.address, "--fault", "reset_peer:timeout=10"],
            input=b"hola\n",
            capture_output=True,
            timeout=STEP,
            check=False,
        )
    assert done.returncode == 1, done.stderr
    assert_one_error_line(
        done.stderr,
        "reiniciada (reset) por --fault en el sentido hacia el cliente (reset_peer_downstream) tras ",
        "como se pidió",
    )


def test_a_client_denied_by_the_access_rules_is_said_in_spanish(refusing_port: int) -> None:
    proc, address = _relay("es", f"tcp://127.0.0.1:{refusing_port}", "--deny", "127.0.0.1")
    try:
        with contextlib.suppress(ConnectionResetError), _connect(address) as client:
            client.recv(1)
        proc.wait_err(
            r"^enchufe: rechazada la conexión de tcp://127\.0\.0\.1:\d+: coincide con --deny 127\.0\.0\.1/32$"
        )
        assert proc.terminate() == 0
    finally:
        proc.kill()


@pytest.mark.parametrize(
    ("options", "second_signal", "line"),
    [
        (
            ("--drain-timeout", "0.2"),
            False,
            r"^enchufe: cortada 1 conexión que seguía abierta tras los 0\.2 s de espera \(--drain-timeout\)$",
        ),
        (
            (),
            True,
            r"^enchufe: cortada 1 conexión: se pidió parar otra vez antes de que terminara la espera$",
        ),
    ],
)
def test_the_connections_cut_at_the_end_of_the_drain_are_said_in_whole_spanish_sentences(
    options: tuple[str, ...], second_signal: bool, line: str
) -> None:
    """The reason agrees with the count ("cortada 1 conexión que seguía abierta"): each line is
    translated whole, never a reason glued after "cortada N conexión"."""
    with Target("tcp://127.0.0.1:0", echo) as target:
        proc, address = _relay("es", target.address, *options)
        try:
            with _connect(address) as client:
                client.sendall(b"x")
                assert client.recv(1) == b"x"
                proc.popen.send_signal(signal.SIGTERM)
                proc.wait_err(r"^parando")
                if second_signal:
                    proc.popen.send_signal(signal.SIGTERM)
                assert proc.finish() == 1
                proc.wait_err(line)
        finally:
            proc.kill()

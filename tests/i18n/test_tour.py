"""The tour in Spanish and in English: every kind's story, narration and summary in the language
asked for (``--lang es|en`` before or after the command, or ``LANG``), the system calls,
constants and addresses as they are; and ``tour --diagram``'s labels in that language.

Each language's tour runs once, for real (``python -m enchufe``, loopback sockets), and the
tests read its sections."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import ENCHUFE, STEP

KINDS = ("tcp4", "tcp6", "udp4", "udp6", "unix", "unixgram", "tls")


def _sections(stdout: str) -> dict[str, str]:
    """The tour's output by leg (``== tcp4: …`` up to the next ``==``), and ``summary``: the
    table after the last leg."""
    parts = stdout.split("\n== ")
    sections = {"intro": parts[0]}
    for part in parts[1:]:
        label = part.split(":", 1)[0]
        body, _, rest = part.partition("\n\n")
        sections[label] = body
        if label == KINDS[-1]:
            sections["summary"] = rest
    return sections


def _tour(*args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    import subprocess

    environ = {k: v for k, v in os.environ.items() if k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")}
    environ.update(env or {})
    done = subprocess.run(
        [*ENCHUFE, *args], capture_output=True, timeout=STEP * 2, check=False, env=environ, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return _sections(done.stdout)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tour-i18n")


@pytest.fixture(scope="module")
def spanish(folder: Path) -> Iterator[dict[str, str]]:
    """``enchufe --lang es tour --diagram tour.md`` (the global option before the command)."""
    yield _tour("--lang", "es", "tour", "--diagram", str(folder / "tour-es.md"))


@pytest.fixture(scope="module")
def english() -> dict[str, str]:
    """``enchufe tour --lang en`` with LANG saying Spanish: the option wins."""
    return _tour("tour", "--lang", "en", env={"LANG": "es_ES.UTF-8"})


#: Per kind, lines (regular expressions, one line each) only the Spanish tour has.
SPANISH = {
    "tcp4": [
        r"^tcp4: AF_INET, SOCK_STREAM: una llamada telefónica por IPv4: esperar junto al teléfono, marcar, "
        r"descolgar, hablar y colgar$",
        r"^servidor · el servidor instala el teléfono \(socket\(\)\), obtiene un número conocido .*"
        r"es el socket pasivo, la apertura pasiva$",
        r"^cliente  · el cliente instala su propio teléfono \(socket\(\)\) y marca el número "
        r"\(connect\(\)\): es el socket activo, la apertura activa; el teléfono suena .*",
        r"^servidor · el teléfono sonó y el servidor descolgó \(accept\(\)\).* cuelga \(close\(\)\)$",
        r"^servidor bind\(fd \d+, 127\.0\.0\.1:0\) → asociado a 127\.0\.0\.1:\d+$",
        r"^servidor accept\(fd \d+\) = fd \d+ desde 127\.0\.0\.1:\d+$",
        r"^servidor recv\(fd \d+, \d+\) = 0 \(EOF: fin de los datos\)$",
        r"^cliente  send\(fd \d+, 33 bytes\) = 33$",
        r'^cliente  · .*shutdown\(SHUT_WR\) quiere decir "ya terminé de hablar, sigo escuchando"$',
    ],
    "tcp6": [
        r"^tcp6: AF_INET6, SOCK_STREAM: la misma llamada, por IPv6$",
        r"^servidor setsockopt\(fd \d+, IPV6_V6ONLY, 1\)$",
        r"^servidor accept\(fd \d+\) = fd \d+ desde \[::1\]:\d+$",
        r"^cliente  recv\(fd \d+, \d+\) = 0 \(EOF: fin de los datos\)$",
    ],
    "udp4": [
        r"^udp4: AF_INET, SOCK_DGRAM: cartas por IPv4: cada datagrama lleva la dirección del remitente$",
        r"^servidor · el servidor crea un socket de datagramas .*pone un buzón; no hay listen\(\).*$",
        r"^servidor · recvfrom\(\) le dice al servidor quién escribió, porque la carta lleva la dirección "
        r"del remitente.*$",
        r"^cliente  · el connect\(\) del cliente solo fija un destino por defecto.*ninguna carta$",
        r"^cliente  sendto\(fd \d+, 33 bytes, el otro extremo conectado\) = 33$",
        r"^servidor recvfrom\(fd \d+\) = 33 bytes desde 127\.0\.0\.1:\d+$",
        r"^servidor sendto\(fd \d+, 33 bytes, 127\.0\.0\.1:\d+\) = 33$",
    ],
    "udp6": [
        r"^udp6: AF_INET6, SOCK_DGRAM: cartas por IPv6$",
        r"^servidor recvfrom\(fd \d+\) = 33 bytes desde \[::1\]:\d+$",
    ],
    "unix": [
        r"^unix: AF_UNIX, SOCK_STREAM: una llamada entre procesos de esta máquina, a través de un archivo "
        r"de socket$",
        r"^servidor accept\(fd \d+\) = fd \d+ desde \(sin nombre\)$",
        r"^servidor bind\(fd \d+, /\S+/stream\.sock\)$",
    ],
    "unixgram": [
        r"^unixgram: AF_UNIX, SOCK_DGRAM: cartas entre procesos de esta máquina; el cliente también pone "
        r"un buzón, para recibir la respuesta$",
        r"^cliente  bind\(fd \d+, \(sin nombre\)\) → asociado a @\w+$",
        r"^servidor recvfrom\(fd \d+\) = 33 bytes desde @\w+$",
    ],
    "tls": [
        r"^tls: AF_INET, SOCK_STREAM, TLS: la llamada por IPv4, sellada: una negociación \(handshake\) "
        r"demuestra quién contesta, y después cada byte va cifrado$",
        r"^servidor · el cliente confiará en ese certificado por su pin, el SHA-256 de su clave pública: "
        r"sha256:[0-9a-f]{64}$",
        r"^cliente  tls fd \d+: negociación como cliente: ClientHello TLS 1\.2-1\.3, sin SNI \(127\.0\.0\.1 "
        r"es una dirección IP.*\), ALPN ofrecido: ninguno$",
        r"^servidor tls fd \d+: negociación como servidor: TLS 1\.2-1\.3, ALPN aceptado: ninguno, sin "
        r"certificado de cliente$",
        r"^cliente  tls fd \d+: verificación: la clave del servidor coincide con el pin \(no se comprobó "
        r"ninguna CA\)$",
        r"^cliente  · acordaron TLSv1\.[23] con \S+: a partir de aquí cada registro va cifrado y sellado$",
        r"^servidor tls fd \d+: acordado: TLSv1\.[23], \S+, ALPN ninguno, sesión nueva$",
    ],
}

#: The same places in the English tour.
ENGLISH = {
    "tcp4": [
        r"^tcp4: AF_INET, SOCK_STREAM: a telephone call over IPv4: listen, connect, accept, talk, hang up$",
        r"^server  · the server creates a socket, binds it to an address and listens \(passive\)$",
        r"^server  bind\(fd \d+, 127\.0\.0\.1:0\) → bound to 127\.0\.0\.1:\d+$",
        r"^server  accept\(fd \d+\) = fd \d+ from 127\.0\.0\.1:\d+$",
        r"^server  recv\(fd \d+, \d+\) = 0 \(EOF\)$",
    ],
    "tcp6": [r"^tcp6: AF_INET6, SOCK_STREAM: the same call over IPv6$"],
    "udp4": [
        r"^udp4: AF_INET, SOCK_DGRAM: letters over IPv4: each datagram carries its sender's address$",
        r"^client  sendto\(fd \d+, 33 bytes, connected peer\) = 33$",
        r"^server  recvfrom\(fd \d+\) = 33 bytes from 127\.0\.0\.1:\d+$",
    ],
    "udp6": [r"^udp6: AF_INET6, SOCK_DGRAM: letters over IPv6$"],
    "unix": [r"^server  accept\(fd \d+\) = fd \d+ from \(unnamed\)$"],
    "unixgram": [r"^client  bind\(fd \d+, \(unnamed\)\) → bound to @\w+$"],
    "tls": [
        r"^client  tls fd \d+: handshake as client: ClientHello TLS 1\.2-1\.3, no SNI "
        r"\(127\.0\.0\.1 is an IP address: none is sent for one\), ALPN offered none$",
        r"^client  tls fd \d+: verification: the server's key matches the pin \(no CA checked\)$",
    ],
}

#: Lines every kind has in both languages: the system calls, by name, with their constants.
CALLS = {
    "tcp4": [
        r"socket\(AF_INET, SOCK_STREAM\) = fd \d+",
        r"listen\(fd \d+, backlog=\d+\)",
        r"shutdown\(fd \d+, SHUT_WR\)",
    ],
    "tcp6": [r"socket\(AF_INET6, SOCK_STREAM\) = fd \d+", r"connect\(fd \d+, \[::1\]:\d+\) = 0"],
    "udp4": [r"socket\(AF_INET, SOCK_DGRAM\) = fd \d+", r"connect\(fd \d+, 127\.0\.0\.1:\d+\) = 0"],
    "udp6": [r"socket\(AF_INET6, SOCK_DGRAM\) = fd \d+", r"close\(fd \d+\)"],
    "unix": [r"socket\(AF_UNIX, SOCK_STREAM\) = fd \d+", r"unlink\(/\S+/stream\.sock\)  # .*"],
    "unixgram": [r"socket\(AF_UNIX, SOCK_DGRAM\) = fd \d+", r"sendto\(fd \d+, 33 bytes, @\w+\) = 33"],
    "tls": [r"send\(fd \d+, \d+ bytes\) = \d+", r"recv\(fd \d+, \d+\) = \d+"],
}


def _assert_lines(section: str, patterns: list[str]) -> None:
    for pattern in patterns:
        assert re.search(pattern, section, re.MULTILINE), f"no line matches {pattern!r} in:\n{section}"


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_the_tour_in_spanish_and_in_english(
    spanish: dict[str, str], english: dict[str, str], kind: str
) -> None:
    """The Spanish tour says each kind's story and words in Spanish, the calls as they are; the
    English one (``--lang en`` over a Spanish ``LANG``) says them in English."""
    section = spanish[kind]
    _assert_lines(section, SPANISH[kind])
    _assert_lines(section, [rf"^(servidor|cliente ) {call}$" for call in CALLS[kind]])
    # None of the English the tour and the narration's words had.
    for words in (
        "the server",
        "the client",
        " bound to ",
        " from ",
        "= 0 (EOF)\n",
        "connected peer",
        "(unnamed)",
    ):
        assert words not in section, words
    section = english[kind]
    _assert_lines(section, ENGLISH[kind])
    _assert_lines(section, [rf"^(server |client ) {call}$" for call in CALLS[kind]])
    assert "servidor" not in section and "cliente" not in section


def test_the_header_and_summary_in_spanish_and_in_english(
    spanish: dict[str, str], english: dict[str, str]
) -> None:
    assert spanish["intro"].splitlines() == [
        "recorrido de enchufe: un servidor y un cliente para cada tipo de socket, y después TLS, "
        "solo en esta máquina.",
        "Cada línea con paréntesis es una llamada al sistema, que se muestra en cuanto retorna.",
    ]
    table = spanish["summary"].splitlines()
    assert table[0].split() == [
        "tipo",
        "dirección",
        "del",
        "servidor",
        "cliente→servidor",
        "servidor→cliente",
        "ida",
        "y",
        "vuelta",
        "resultado",
    ]
    rows = {
        line.split()[0]: line for line in table[2:] if line.strip() and not line.startswith("Funcionaron")
    }
    assert set(rows) == set(KINDS)
    assert all(re.search(r"33 B +33 B +[\d.]+ ms +correcto$", row) for row in rows.values()), rows
    assert table[-1] == "Funcionaron 7 de 7 tipos."
    table = english["summary"].splitlines()
    assert table[0].split()[:3] == ["kind", "server", "address"]
    assert table[-1] == "7 of 7 kinds worked."


def test_lang_from_the_environment_speaks_spanish() -> None:
    """``LANG=es_ES.UTF-8 enchufe tour``: no option needed."""
    sections = _tour("tour", env={"LANG": "es_ES.UTF-8"})
    assert sections["intro"].startswith("recorrido de enchufe:")
    _assert_lines(sections["udp4"], SPANISH["udp4"])
    assert sections["summary"].splitlines()[-1] == "Funcionaron 7 de 7 tipos."


def test_the_tour_diagram_speaks_the_tour_language(spanish: dict[str, str], folder: Path) -> None:
    """``tour --lang es --diagram tour.md``: headings, lifelines, marks and calls' words in Spanish."""
    text = (folder / "tour-es.md").read_text(encoding="utf-8")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[0] == (
        "## tcp4: AF_INET, SOCK_STREAM: una llamada telefónica por IPv4: esperar junto al teléfono, "
        "marcar, descolgar, hablar y colgar"
    )
    assert len(headings) == len(KINDS)
    assert text.count("participant P0 as servidor") == len(KINDS)
    assert text.count("participant P1 as cliente") == len(KINDS)
    for words in (
        "apertura activa",
        "apertura pasiva",
        "fin de los datos",
        "(EOF: fin de los datos)",
        "asociado a",
    ):
        assert words in text, words
    assert "Note over P0: accept(fd" in text and "desde 127.0.0.1:" in text
    assert "bound to" not in text and "active open" not in text and "end of data" not in text

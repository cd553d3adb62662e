"""TLS in Spanish: every refusal of a handshake (names, dates, trust, pins, a peer that is not TLS,
a handshake that does not finish), the warnings, the lines of a TLS server and every mistake in a
TLS address, on real sockets and real commands; ``--lang en`` keeps English word for word."""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
from collections.abc import Iterator

import pytest
import trustme

from enchufe import i18n
from tests.cli import conftest as cli
from tests.cli.conftest import ENCHUFE, STEP, Proc, Spawn, assert_one_error_line, run, run_here

spawn = cli.spawn

#: A listener's line, in each language: its address (the real port) and a cert=auto pin.
LISTENING = {
    "en": r"^listening on tls://127\.0\.0\.1:(\d+)\S*?(?: pin (sha256:[0-9a-f]{64}))?$",
    "es": r"^escuchando en tls://127\.0\.0\.1:(\d+)\S*?(?: pin (sha256:[0-9a-f]{64}))?$",
}
_LANGUAGE_VARIABLES = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")


@pytest.fixture(autouse=True)
def _english_afterwards() -> Iterator[None]:
    """run_here() chooses the language of this process: the next test starts in English."""
    yield
    i18n.set_language("en")


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``ca`` and its ``server`` (localhost, 127.0.0.1, ::1), a ``client`` (CN alice) and an
    ``expired`` client certificate (ended 2020-01-01)."""
    folder = tmp_path_factory.mktemp("i18n-tls")
    ca = trustme.CA()
    certificates = {
        "server": ca.issue_cert("localhost", "127.0.0.1", "::1", common_name="localhost"),
        "client": ca.issue_cert("alice.example", common_name="alice"),
        "expired": ca.issue_cert(
            "old.example",
            common_name="old",
            not_before=datetime.datetime(2019, 1, 1, tzinfo=datetime.UTC),
            not_after=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
        ),
    }
    paths = {"ca": str(folder / "ca.pem")}
    ca.cert_pem.write_to_path(paths["ca"])
    for name, certificate in certificates.items():
        paths[name] = str(folder / f"{name}.pem")
        certificate.private_key_and_cert_chain_pem.write_to_path(paths[name])
    return paths


def _listen(spawn: Spawn, lang: str, query: str, *options: str) -> tuple[Proc, int, str | None]:
    """A TLS listener on loopback speaking ``lang``: the process, its port and its pin."""
    server = spawn("--lang", lang, "listen", *options, f"tls://127.0.0.1:0?{query}", stdin=False)
    found = server.wait_err(LISTENING[lang])
    return server, int(found.group(1)), found.group(2)


def _environment(**language: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LANGUAGE_VARIABLES}
    env.update(language)
    return env


def _connect(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*ENCHUFE, *args], capture_output=True, stdin=subprocess.DEVNULL, timeout=STEP, env=env, check=False
    )


def _refusal(done: subprocess.CompletedProcess[bytes]) -> str:
    """The one line of a run that failed at run time (exit 1)."""
    assert done.returncode == 1, done.stderr
    return assert_one_error_line(done.stderr)


def test_a_certificate_for_another_name_is_refused_in_spanish_with_its_names(
    spawn: Spawn, pem: dict[str, str]
) -> None:
    _server, port, _pin = _listen(spawn, "en", f"cert={pem['server']}", "-k")
    address = f"tls://127.0.0.1:{port}?ca={pem['ca']}&sni=other.example"
    line = _refusal(run("--lang", "es", "connect", address))
    assert line == (
        "enchufe: el certificado del servidor no es válido para other.example: "
        "es para localhost, 127.0.0.1, ::1"
    ), line


def test_spanish_comes_from_lang_and_lang_en_keeps_the_english_refusal(
    spawn: Spawn, pem: dict[str, str]
) -> None:
    _server, port, _pin = _listen(spawn, "en", f"cert={pem['server']}", "-k")
    address = f"tls://127.0.0.1:{port}?ca={pem['ca']}&sni=other.example"
    spanish = _refusal(_connect("connect", address, env=_environment(LANG="es_ES.UTF-8")))
    assert "el certificado del servidor no es válido para other.example" in spanish, spanish
    line = _refusal(_connect("--lang", "en", "connect", address, env=_environment(LANG="es_ES.UTF-8")))
    assert line == (
        "enchufe: the server's certificate is not valid for other.example: "
        "it is for localhost, 127.0.0.1, ::1"
    ), line


def test_a_self_signed_server_is_refused_in_spanish_with_what_to_add(spawn: Spawn) -> None:
    _server, port, _pin = _listen(spawn, "en", "cert=auto", "-k")
    line = _refusal(run("--lang", "es", "connect", f"tls://127.0.0.1:{port}"))
    assert line == (
        "enchufe: el certificado del servidor es autofirmado: añade ca=FILE con la CA que lo emitió, "
        "o pin=sha256:… para confiar solo en esta clave"
    ), line


def test_a_key_that_is_not_the_pinned_one_is_refused_in_spanish(spawn: Spawn) -> None:
    _server, port, pin = _listen(spawn, "en", "cert=auto", "-k")
    wrong = "sha256:" + "ab" * 32
    line = _refusal(run("--lang", "es", "connect", f"tls://127.0.0.1:{port}?pin={wrong}"))
    assert (
        line == f"enchufe: la clave del servidor no coincide con el pin: tiene {pin}, se esperaba {wrong}"
    ), line


def test_an_expired_client_certificate_is_refused_in_spanish_on_both_sides(
    spawn: Spawn, pem: dict[str, str]
) -> None:
    """The client says the server refused its certificate as expired; the server, on its Spanish
    listening line's process, says when the certificate ended."""
    server, port, _pin = _listen(spawn, "es", f"cert={pem['server']}&client-ca={pem['ca']}")
    line = _refusal(
        run("--lang", "es", "connect", f"tls://127.0.0.1:{port}?ca={pem['ca']}&cert={pem['expired']}")
    )
    assert line == "enchufe: el servidor dice que el certificado de este cliente ha caducado", line
    assert server.finish() == 1
    said = server.wait_err(r"^enchufe: .*$").group(0)
    assert said == "enchufe: el certificado del cliente caducó el 2020-01-01 00:00:00 UTC", said


def test_a_plain_client_on_a_tls_listener_is_named_in_spanish(spawn: Spawn) -> None:
    server, port, _pin = _listen(spawn, "es", "cert=auto")
    run("connect", f"tcp://127.0.0.1:{port}", input=b"GET / HTTP/1.0\r\n\r\n")
    assert server.finish() == 1
    server.wait_err(
        r"^enchufe: el cliente envió una petición HTTP sin cifrar, no TLS; en su lugar envió 'GET "
    )


def test_a_handshake_that_does_not_finish_is_said_in_spanish() -> None:
    """A listener that never answers (the kernel completes the TCP handshake, nobody reads)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        pin = "sha256:" + "ab" * 32
        done = run("--lang", "es", "connect", f"tls://127.0.0.1:{port}?pin={pin}&handshake-timeout=0.3")
    assert done.returncode == 1, done.stderr
    assert_one_error_line(
        done.stderr,
        f"la negociación (handshake) TLS con tcp://127.0.0.1:{port} no terminó en 0.3 s (handshake-timeout)",
    )


def test_insecure_is_warned_about_in_spanish(spawn: Spawn) -> None:
    server, port, _pin = _listen(spawn, "en", "cert=auto")
    done = run("--lang", "es", "connect", f"tls://127.0.0.1:{port}?insecure")
    assert done.returncode == 0, done.stderr
    assert_one_error_line(
        done.stderr,
        f"enchufe: aviso: tls://127.0.0.1:{port}?insecure: insecure: el servidor no se verifica; "
        "cualquiera en el camino puede leer y cambiar los datos (usa ca= o pin= en su lugar)",
    )
    assert server.finish() == 0, server.err


def test_the_listening_line_and_v_say_the_pin_and_the_handshake_in_spanish(
    spawn: Spawn, pem: dict[str, str]
) -> None:
    server = spawn(
        "--lang", "es", "listen", "-v", f"tls://127.0.0.1:0?cert={pem['server']}&client-ca={pem['ca']}"
    )
    port = int(server.wait_err(LISTENING["es"]).group(1))
    server.feed(b"")
    done = run("connect", f"tls://127.0.0.1:{port}?ca={pem['ca']}&cert={pem['client']}")
    assert done.returncode == 0, done.stderr
    assert server.finish() == 0, server.err
    server.wait_err(r"^TLS con \S+: TLSv1\.3 TLS_\w+, certificado de cliente .*CN=alice.*$")
    auto = spawn("--lang", "es", "listen", "tls://127.0.0.1:0?cert=auto", stdin=False)
    assert auto.wait_err(LISTENING["es"]).group(2) is not None, auto.err


@pytest.mark.parametrize(
    ("command", "address", "spanish", "english"),
    [
        (
            "connect",
            "tls://127.0.0.1:1?colour=blue",
            "parámetro TLS desconocido 'colour'; parámetros TLS admitidos: ca, sni, pin",
            "unknown TLS parameter 'colour'; accepted TLS parameters: ca, sni, pin",
        ),
        (
            "connect",
            "tls://127.0.0.1:1?client-ca=ca.pem",
            "el parámetro TLS client-ca es solo para escuchar (servidor); al conectar: ca, sni",
            "TLS parameter client-ca is for listening (server) only; when connecting: ca, sni",
        ),
        (
            "listen",
            "tls://127.0.0.1:0",
            "un socket de escucha TLS necesita un certificado: añade cert=FILE",
            "a TLS listener needs a certificate: add cert=FILE",
        ),
        (
            "connect",
            "tls://127.0.0.1:1?ca=/nonexistent/ca.pem",
            "ca=/nonexistent/ca.pem: no existe ese archivo",
            "ca=/nonexistent/ca.pem: no such file",
        ),
        (
            "connect",
            "tls://127.0.0.1:1?pin=sha256:12",
            "pin='sha256:12' no es un pin; escribe pin=sha256:HEX con los 64 dígitos hexadecimales",
            "pin='sha256:12' is not a pin; write pin=sha256:HEX with the 64 hex digits",
        ),
        (
            "connect",
            "tls://127.0.0.1:1?insecure&ca=ca.pem",
            "insecure desactiva la verificación, así que ca= no se tendría en cuenta: usa solo uno de los "
            "dos",
            "insecure turns verification off, so ca= would be ignored: give one or the other",
        ),
        (
            "connect",
            "tls://127.0.0.1:1?sni=192.0.2.7",
            "sni=192.0.2.7: el nombre del servidor no puede ser una dirección IP (TLS solo envía nombres)",
            "sni=192.0.2.7: a server name cannot be an IP address (TLS sends names only)",
        ),
        (
            "connect",
            "tls://127.0.0.1:1?handshake-timeout=0",
            "handshake-timeout=0: segundos, mayor que 0 y como mucho",
            "handshake-timeout=0: seconds, more than 0 and at most",
        ),
        (
            "listen",
            "udp://127.0.0.1:0?cert=auto",
            "no hay TLS sobre datagramas (no se admite DTLS); para TLS usa tls://HOST:PORT",
            "no TLS over datagrams (DTLS is not supported); for TLS use tls://HOST:PORT",
        ),
        (
            "connect",
            "tcp://127.0.0.1:1?ca=ca.pem",
            "los parámetros TLS necesitan un esquema TLS: escribe tls://127.0.0.1:1?ca=ca.pem",
            "TLS parameters need a TLS scheme: write tls://127.0.0.1:1?ca=ca.pem",
        ),
    ],
)
def test_a_bad_tls_address_is_one_spanish_line_and_exit_2(
    command: str, address: str, spanish: str, english: str
) -> None:
    done = run_here("--lang", "es", command, address)
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, spanish)
    done = run_here("--lang", "en", command, address)
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, english)


def test_a_client_hello_reader_and_the_library_speak_english_unless_asked() -> None:
    """What a program that imports enchufe reads is English; Spanish once it asks for it."""
    from enchufe.clienthello import HelloReader, Refused

    refused = HelloReader().feed(b"SSH-2.0-OpenSSH_9.6\r\n")
    assert isinstance(refused, Refused)
    assert (
        refused.detail == "not a TLS handshake: the first record is plain text, not a handshake record (0x16)"
    )
    i18n.set_language("es")
    refused = HelloReader().feed(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")
    assert isinstance(refused, Refused)
    assert refused.detail == "ClientHello: legacy_version va más allá del final de los datos", refused.detail


def test_the_server_says_in_spanish_that_the_client_does_not_trust_its_ca(
    spawn: Spawn, pem: dict[str, str], tmp_path: os.PathLike[str]
) -> None:
    """The client's alert about the server's certificate, in the server's words: one whole
    Spanish sentence (no "the client" and "this server's" glued into an English frame)."""
    other = os.path.join(tmp_path, "other-ca.pem")
    trustme.CA().cert_pem.write_to_path(other)
    server, port, _pin = _listen(spawn, "es", f"cert={pem['server']}")
    _refusal(run("--lang", "es", "connect", f"tls://127.0.0.1:{port}?ca={other}"))
    assert server.finish() == 1
    said = server.wait_err(r"^enchufe: .*$").group(0)
    assert said == "enchufe: el cliente no confía en la CA del certificado de este servidor", said


def test_every_tls_refusal_is_a_whole_sentence_with_its_spanish() -> None:
    """Each refusal OpenSSL's reason codes map to is written out for the side that says it: no
    placeholder for "the client"/"the server" or "this server's", which Spanish would reorder."""
    from enchufe._tls_refusals import _CLOSED, _REASONS

    i18n.set_language("es")
    for code, (_reason, *lines) in _REASONS.items():
        for line in (*lines, *_CLOSED):
            assert "{" not in line, (code, line)
            assert i18n._(line) != line, f"{line!r} has no Spanish"

"""The proxy layers in Spanish: a bad ``--via`` URL or a target no tunnel reaches (exit 2), a proxy
that says no or is no proxy (exit 1, naming the hop), the ``--trace`` narration of a SOCKS5
handshake, ``enchufe socks``'s mistakes, warning and refusals, and ``--accept-proxy``'s refused
connections, on real sockets and real commands; ``--lang en`` keeps English word for word."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from enchufe import i18n, parse
from enchufe.proxyproto import ProxyProtocolError, Refused, encode_v2
from tests.cli import conftest as cli
from tests.cli.conftest import Proc, Spawn, assert_one_error_line, run, run_here
from tests.cli.test_cli_accept_proxy import read_all
from tests.test_hops import FakeSocks

spawn = cli.spawn

#: A server's listening line in Spanish: its TCP port.
LISTENING_ES = r"^escuchando en tcp://127\.0\.0\.1:(\d+)$"


@pytest.fixture(autouse=True)
def _english_afterwards() -> Iterator[None]:
    """run_here() and set_language() choose the language of this process: the next test starts
    in English."""
    yield
    i18n.set_language("en")


@pytest.fixture
def banner_server() -> Iterator[int]:
    """A TCP server that is no proxy: it greets every client with an SSH banner, then waits for
    its EOF.  Its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _peer = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
                try:
                    while conn.recv(4096):
                        pass
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(10)


def _spanish_server(spawn: Spawn, *args: str) -> tuple[Proc, int]:
    server = spawn("--lang", "es", *args, stdin=False)
    return server, int(server.wait_err(LISTENING_ES).group(1))


# -- --via: bad input (exit 2)


@pytest.mark.parametrize(
    ("args", "spanish", "english"),
    [
        (
            ("connect", "--via", "ftp://127.0.0.1:21", "tcp://127.0.0.1:9"),
            "enchufe: --via ftp://127.0.0.1:21: esquema de proxy desconocido 'ftp'; se aceptan: "
            "socks5://[USER:PASS@]HOST:PORT o http://[USER:PASS@]HOST:PORT, p. ej. socks5://127.0.0.1:1080",
            "enchufe: --via ftp://127.0.0.1:21: unknown proxy scheme 'ftp'; accepted: "
            "socks5://[USER:PASS@]HOST:PORT or http://[USER:PASS@]HOST:PORT, e.g. socks5://127.0.0.1:1080",
        ),
        (
            ("connect", "--via", "socks5://u:secret@127.0.0.1", "tcp://127.0.0.1:9"),
            "enchufe: --via socks5://u:***@127.0.0.1: falta el puerto; escríbelo como "
            "socks5://[USER:PASS@]HOST:PORT o http://[USER:PASS@]HOST:PORT, p. ej. socks5://127.0.0.1:1080",
            "enchufe: --via socks5://u:***@127.0.0.1: missing port; write it as "
            "socks5://[USER:PASS@]HOST:PORT or http://[USER:PASS@]HOST:PORT, e.g. socks5://127.0.0.1:1080",
        ),
        (
            ("connect", "--via", "http://a:b@127.0.0.1:3128/x", "tcp://127.0.0.1:9"),
            "enchufe: --via http://a:***@127.0.0.1:3128/x: no puede haber nada después del puerto; "
            "escríbelo como http://127.0.0.1:3128",
            "enchufe: --via http://a:***@127.0.0.1:3128/x: nothing may follow the port; "
            "write it as http://127.0.0.1:3128",
        ),
        (
            ("connect", "--via", "socks5://127.0.0.1:1080", "unix:///tmp/app.sock"),
            "enchufe: unix:///tmp/app.sock: un proxy (a través de socks5://127.0.0.1:1080) llega a "
            "destinos tcp://, tls:// y udp://, no a este",
            "enchufe: unix:///tmp/app.sock: a proxy (via socks5://127.0.0.1:1080) reaches tcp://, "
            "tls:// and udp:// targets, not this one",
        ),
        (
            ("connect", "--via", "http://127.0.0.1:3128", "udp://127.0.0.1:53"),
            "enchufe: udp://127.0.0.1:53: los datagramas pasan por un único proxy socks5:// "
            "(UDP ASSOCIATE), no por un proxy HTTP (a través de http://127.0.0.1:3128)",
            "enchufe: udp://127.0.0.1:53: datagrams go through one socks5:// proxy (UDP ASSOCIATE), "
            "not an HTTP proxy (via http://127.0.0.1:3128)",
        ),
        (
            ("check", "--via", "socks5://127.0.0.1:1080", "udp://127.0.0.1:53"),
            "enchufe: udp://127.0.0.1:53: check --via admite destinos de flujo (tcp://, tls://): a "
            "través de un proxy, el rechazo de un puerto UDP llega al proxy y no a este equipo, así "
            "que la comprobación no podría fallar (a través de socks5://127.0.0.1:1080); enchufe send "
            "--wait-reply pide una respuesta en su lugar",
            "enchufe: udp://127.0.0.1:53: check --via takes stream targets (tcp://, tls://): through a "
            "proxy a UDP port's refusal reaches the proxy, not this host, so the check could not fail "
            "(via socks5://127.0.0.1:1080); enchufe send --wait-reply asks for an answer instead",
        ),
    ],
)
def test_a_bad_via_is_one_spanish_line_and_exit_2(args: tuple[str, ...], spanish: str, english: str) -> None:
    done = run_here("--lang", "es", *args)
    assert done.returncode == 2, done.stderr
    assert assert_one_error_line(done.stderr) == spanish
    done = run_here("--lang", "en", *args)
    assert done.returncode == 2, done.stderr
    assert assert_one_error_line(done.stderr) == english


# -- --via: a proxy that says no (exit 1)


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (2, "conexión rechazada por las reglas del proxy (respuesta SOCKS 2)"),
        (5, "localhost:9: conexión rechazada por el destino (respuesta SOCKS 5)"),
    ],
)
def test_a_socks5_refusal_is_said_in_spanish_naming_the_hop(reply: int, said: str) -> None:
    fake = FakeSocks(reply=reply)
    try:
        done = run("--lang", "es", "send", "--via", fake.url, "tcp://localhost:9", "data")
    finally:
        fake.close()
    assert done.returncode == 1, done.stderr
    assert done.stderr.decode() == f"enchufe: a través de {fake.url}: {said}\n"


@pytest.mark.parametrize(
    ("scheme", "said"),
    [
        ("socks5", "no es un proxy SOCKS5: su saludo empezaba por 'SSH-2.0"),
        ("http", "no es un proxy HTTP: respondió 'SSH-2.0-OpenSSH_9.6"),
    ],
)
def test_a_server_that_is_no_proxy_is_named_in_spanish(banner_server: int, scheme: str, said: str) -> None:
    url = f"{scheme}://127.0.0.1:{banner_server}"
    done = run("--lang", "es", "connect", "--via", url, "tcp://localhost:9")
    assert done.returncode == 1, done.stderr
    assert_one_error_line(done.stderr, f"enchufe: a través de {url}: {said}")


def test_the_trace_narrates_the_socks5_handshake_in_spanish() -> None:
    fake = FakeSocks(auth=True)
    url = f"socks5://alice:s3cret@127.0.0.1:{fake.port}"
    try:
        done = run("--lang", "es", "--trace", "connect", "--via", url, "tcp://localhost:2525", input=b"")
    finally:
        fake.close()
    assert done.returncode == 0, done.stderr
    hop = f"a través de socks5://alice:***@127.0.0.1:{fake.port}"
    lines = done.stderr.decode().splitlines()
    for expected in (
        f"{hop}: conectar con el proxy en 127.0.0.1:{fake.port}",
        f"{hop}: saludo: SOCKS5, métodos ofrecidos: sin autenticación, usuario/contraseña",
        f"{hop}: método elegido: usuario/contraseña",
        f"{hop}: usuario/contraseña: usuario alice, contraseña ***",
        f"{hop}: usuario y contraseña aceptados",
        f"{hop}: CONNECT localhost:2525 (un nombre, que resuelve el proxy)",
        f"{hop}: respuesta: éxito, asociado a 127.0.0.1:1080",
    ):
        assert expected in lines, f"{expected!r} not in:\n{done.stderr.decode()}"
    assert "s3cret" not in done.stderr.decode()


# -- enchufe socks


@pytest.mark.parametrize(
    ("args", "spanish"),
    [
        (
            ("--allow-dest", "a b"),
            "enchufe: --allow-dest 'a b': no es una regla de destino; escribe CIDR, IP, HOST o *.DOMINIO, "
            "cada uno con un :PUERTO opcional (p. ej. 10.0.0.0/8, [::1]:22, example.com:443)",
        ),
        (
            ("--deny-dest", "example.com:0"),
            "enchufe: --deny-dest 'example.com:0': el puerto tiene que estar entre 1 y 65535, no '0'",
        ),
        (
            ("--auth", "alice"),
            "enchufe: --auth: escribe USER:PASS, cada uno de 1 a 255 bytes (RFC 1929), no 'alice'",
        ),
    ],
)
def test_bad_socks_options_are_one_spanish_line_and_exit_2(args: tuple[str, ...], spanish: str) -> None:
    done = run_here("--lang", "es", "socks", "tcp://127.0.0.1:0", *args)
    assert done.returncode == 2, done.stderr
    assert assert_one_error_line(done.stderr) == spanish


def test_an_auth_file_without_users_and_one_that_cannot_be_read_in_spanish(tmp_path: object) -> None:
    empty = f"{tmp_path}/vacio.txt"
    with open(empty, "w") as f:
        f.write("# nadie\n\n")
    done = run_here("--lang", "es", "socks", "tcp://127.0.0.1:0", "--auth-file", empty)
    assert done.returncode == 2, done.stderr
    assert_one_error_line(
        done.stderr, f"--auth-file {empty}: no tiene ninguna línea USER:PASS; escribe un usuario por línea"
    )
    missing = f"{tmp_path}/no-existe.txt"
    done = run_here("--lang", "es", "socks", "tcp://127.0.0.1:0", "--auth-file", missing)
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, f"no se puede leer --auth-file {missing}: ")


def test_socks_warns_of_an_open_proxy_and_refuses_a_client_without_credentials_in_spanish(
    spawn: Spawn,
) -> None:
    """The client names the hop and what to give; the server says why it refused the client."""
    opened = spawn("--lang", "es", "socks", "tcp://:0", stdin=False)
    opened.wait_err(
        r"^enchufe: aviso: sin --auth: cualquiera que pueda llegar a alguna de las interfaces de esta "
        r"máquina puede usar este proxy \(un proxy abierto\); usa --auth USER:PASS o --auth-file, o "
        r"escucha en 127\.0\.0\.1$"
    )
    server, port = _spanish_server(spawn, "socks", "tcp://127.0.0.1:0", "--auth", "alice:s3cret")
    done = run("--lang", "es", "connect", "--via", f"socks5://127.0.0.1:{port}", "tcp://localhost:9")
    assert done.returncode == 1, done.stderr
    assert_one_error_line(
        done.stderr,
        f"enchufe: a través de socks5://127.0.0.1:{port}: el proxy no acepta ninguno de los métodos "
        "ofrecidos (quizá quiera usuario y contraseña: pon USER:PASS@ en la URL del proxy)",
    )
    server.wait_err(r"^enchufe: .*: el cliente no ofrece usuario/contraseña$")


# -- --accept-proxy


def test_accept_proxy_refusals_are_said_in_spanish(spawn: Spawn) -> None:
    """A peer that is not a trusted proxy, and a trusted one that sends no header."""
    server, port = _spanish_server(
        spawn, "echo", "tcp://127.0.0.1:0", "--accept-proxy", "--trusted-proxy", "127.0.0.2/32"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as untrusted:
        untrusted.sendall(b"hola")
        assert read_all(untrusted) == b""
    server.wait_err(
        r"^enchufe: rechazada la conexión de tcp://127\.0\.0\.1:\d+: no es un proxy de confianza "
        r"\(consulta --trusted-proxy\); solo se acepta una cabecera PROXY de uno de ellos$"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0)) as bare:
        bare.sendall(b"hola")
        assert read_all(bare) == b""
    server.wait_err(
        r"^enchufe: rechazada la conexión de tcp://127\.0\.0\.2:\d+: no hay cabecera del protocolo PROXY: "
        r"la conexión empieza por 'hola'$"
    )


def test_the_proxy_protocol_library_speaks_english_unless_asked() -> None:
    """A program that imports enchufe reads English; Spanish once it chose it."""
    from enchufe.proxyproto import parse as parse_header

    assert parse_header(b"PROXY TCP4 1.2.3.4\r\n") == Refused(
        "PROXY v1 line: 'PROXY TCP4 1.2.3.4': "
        "expected 'PROXY TCP4|TCP6 SRC DST SPORT DPORT' or 'PROXY UNKNOWN'"
    )
    i18n.set_language("es")
    assert parse_header(b"PROXY TCP4 1.2.3.4\r\n") == Refused(
        "línea PROXY v1: 'PROXY TCP4 1.2.3.4': "
        "se esperaba 'PROXY TCP4|TCP6 SRC DST SPORT DPORT' o 'PROXY UNKNOWN'"
    )
    with pytest.raises(
        ProxyProtocolError, match=r"^un identificador único tiene como mucho 128 bytes, no 200$"
    ):
        encode_v2(parse("tcp://192.0.2.1:1"), parse("tcp://192.0.2.2:2"), unique_id=b"x" * 200)

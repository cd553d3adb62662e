"""TLS from the command line: connect and listen (cert=auto's pin flow, half-close, truncation,
every refusal as one line), send/echo/chat/check over TLS, listen --exec's TLS environment,
SIGUSR1's reload, bad TLS input, and the help.  Real handshakes: trustme CAs, enchufe on both
sides or openssl s_server as the peer we did not write."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from .conftest import STEP, Proc, Spawn, assert_one_error_line, free_port, run

LISTENING_TLS = r"^listening on (\S+?)(?: pin (sha256:[0-9a-f]{64}))?$"


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PEM files: ``ca`` and its ``server`` (localhost, 127.0.0.1, ::1; key inside), ``client``
    (CN alice), ``expired`` (a server certificate of the CA that ended in 2020), ``future`` (one
    that starts in 2999), ``other_ca``,
    ``server_cert``/``server_key`` apart (for openssl), ``client_key_mismatch`` (client's cert
    with the server's key), ``not_pem``."""
    folder = tmp_path_factory.mktemp("cli-tls")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "::1", common_name="localhost")
    client = ca.issue_cert("alice.example", common_name="alice")
    expired = ca.issue_cert(
        "127.0.0.1",
        common_name="old",
        not_before=datetime.datetime(2019, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
    )
    future = ca.issue_cert(
        "127.0.0.1",
        common_name="new",
        not_before=datetime.datetime(2999, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2999, 12, 31, tzinfo=datetime.UTC),
    )
    paths = {
        name: str(folder / f"{name}.pem")
        for name in (
            "ca",
            "other_ca",
            "server",
            "client",
            "expired",
            "future",
            "server_cert",
            "server_key",
            "mismatch_cert",
            "not_pem",
        )
    }
    ca.cert_pem.write_to_path(paths["ca"])
    other.cert_pem.write_to_path(paths["other_ca"])
    server.private_key_and_cert_chain_pem.write_to_path(paths["server"])
    client.private_key_and_cert_chain_pem.write_to_path(paths["client"])
    expired.private_key_and_cert_chain_pem.write_to_path(paths["expired"])
    future.private_key_and_cert_chain_pem.write_to_path(paths["future"])
    server.cert_chain_pems[0].write_to_path(paths["server_cert"])
    server.private_key_pem.write_to_path(paths["server_key"])
    client.cert_chain_pems[0].write_to_path(paths["mismatch_cert"])
    with open(paths["not_pem"], "wb") as f:
        f.write(b"this is not a certificate\n")
    return paths


def tls_listening(proc: Proc) -> tuple[str, str | None]:
    """(address, pin or None) from a TLS listener's listening line."""
    match = proc.wait_err(LISTENING_TLS)
    return match.group(1), match.group(2)


def port_of(address: str) -> int:
    found = re.search(r":(\d+)(?:\?|$)", address)
    assert found is not None, address
    return int(found.group(1))


def one_line(stderr: bytes, *needles: str) -> str:
    """The single ``enchufe: …`` line of a failed run (other lines, e.g. -v, are not expected)."""
    return assert_one_error_line(stderr, *needles)


# -- connect and listen


def test_cert_auto_prints_a_pin_that_connect_takes_with_no_files(spawn: Spawn) -> None:
    server = spawn("listen", "tls://127.0.0.1:0?cert=auto")
    address, pin = tls_listening(server)
    assert pin is not None and address.startswith("tls://127.0.0.1:"), server.err
    server.feed(b"from the server\n")
    done = run("connect", f"tls://127.0.0.1:{port_of(address)}?pin={pin}", input=b"from the client\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"from the server\n"
    assert server.finish() == 0, server.err
    assert server.out == b"from the client\n"


def test_cert_auto_pin_is_a_json_field(spawn: Spawn) -> None:
    import json

    server = spawn("listen", "--json", "tls://127.0.0.1:0?cert=auto", stdin=False)
    match = server.wait_err(r'^(\{"event": "listening".*\})$')
    record = json.loads(match.group(1))
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", record["pin"]), record
    assert record["address"].startswith("tls://127.0.0.1:")


def test_without_a_pin_or_ca_a_self_signed_listener_is_refused(spawn: Spawn) -> None:
    server = spawn("listen", "tls://127.0.0.1:0?cert=auto", stdin=False)
    address, _ = tls_listening(server)
    done = run("connect", f"tls://127.0.0.1:{port_of(address)}")
    assert done.returncode == 1
    one_line(done.stderr, "self-signed", "ca=", "pin=")


@pytest.mark.parametrize("kind", ["tls4", "tls+unix"])
def test_connect_and_listen_with_a_ca_both_ways(
    kind: str, spawn: Spawn, pem: dict[str, str], sock_dir: str
) -> None:
    where = "tls4://127.0.0.1:0" if kind == "tls4" else f"tls+unix://{sock_dir}/t.sock"
    server = spawn("listen", f"{where}?cert={pem['server']}")
    address, pin = tls_listening(server)
    assert pin is None
    data = os.urandom(512 * 1024)
    server.feed(data[::-1])
    sni = "&sni=localhost" if "unix" in kind else ""
    done = run("connect", f"{address.split('?')[0]}?ca={pem['ca']}{sni}", input=data)
    assert done.returncode == 0, done.stderr
    assert done.stdout == data[::-1]
    assert server.finish() == 0, server.err
    assert server.out == data


@pytest.mark.parametrize("scheme", ["tcp", "tls"])
def test_regular_files_on_both_stdins_cross_whole_at_once(
    scheme: str, spawn: Spawn, pem: dict[str, str], tmp_path: Path
) -> None:
    """A regular file on stdin is read and sent with no wait between reads (it never blocks)
    until the kernel takes only part: 12 MiB each way at once, so sends are cut short by full
    buffers again and again (a TLS send then carries its records to the next try) while each
    side also reads what the other sends."""
    size = 12 * 1024 * 1024
    files = {side: tmp_path / f"{side}.bin" for side in ("to_server", "to_client")}
    for path in files.values():
        path.write_bytes(os.urandom(size))
    listen, query = (
        ("tcp://127.0.0.1:0", "")
        if scheme == "tcp"
        else (f"tls://127.0.0.1:0?cert={pem['server']}", f"?ca={pem['ca']}")
    )
    server = spawn("listen", listen, stdin=str(files["to_client"]))
    address = server.listening().split("?")[0]
    client = spawn("connect", address + query, stdin=str(files["to_server"]))
    assert client.finish() == 0, client.err
    assert server.finish() == 0, server.err
    for out, path in ((server.out, files["to_server"]), (client.out, files["to_client"])):
        assert len(out) == size and hashlib.sha256(out).digest() == hashlib.sha256(path.read_bytes()).digest()
    assert "Traceback" not in server.err + client.err


@needs_openssl
@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_openssl_s_server_answers_after_stdin_eof(
    pem: dict[str, str], tmp_path: os.PathLike[str], version: str
) -> None:
    """stdin's EOF sends close_notify and connect keeps reading: openssl s_server -WWW reads the
    request up to it, then sends the whole file."""
    folder = os.fspath(tmp_path)
    body = os.urandom(1024 * 1024)
    with open(os.path.join(folder, "file.bin"), "wb") as f:
        f.write(body)
    port = free_port()
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", pem["server"], "-quiet",
         "-naccept", "1", "-WWW", version],
        cwd=folder, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        done = run(
            "connect", "--retry", "100", "--retry-delay", "0.1", f"tls://127.0.0.1:{port}?ca={pem['ca']}",
            input=b"GET /file.bin HTTP/1.0\r\n\r\n",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.endswith(body), done.stdout[:200]
    finally:
        server.kill()
        server.wait(STEP)


def test_a_listener_that_answers_after_eof_is_heard(spawn: Spawn) -> None:
    """listen --exec 'wc -c' answers only once the client's close_notify came."""
    server = spawn("listen", "tls://127.0.0.1:0?cert=auto", "--exec", "wc -c", stdin=False)
    address, pin = tls_listening(server)
    done = run("connect", f"tls://127.0.0.1:{port_of(address)}?pin={pin}", input=b"x" * 1000)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == b"1000"


@contextlib.contextmanager
def truncating_server(pem: dict[str, str], answer: bytes) -> Iterator[int]:
    """A TLS server that sends ``answer`` and closes TCP without close_notify."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem["server"])
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(STEP)

    def serve() -> None:
        with contextlib.suppress(OSError):
            raw, _ = listener.accept()
            tls = context.wrap_socket(raw, server_side=True)
            tls.settimeout(STEP)
            tls.sendall(answer)
            while tls.recv(65536):  # up to the client's close_notify: nothing left unread
                pass
            # Python's close() sends no close_notify: the TCP connection just ends.
            tls.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        thread.join(STEP)
        listener.close()


def test_a_peer_that_closes_without_close_notify_is_truncated(pem: dict[str, str]) -> None:
    with truncating_server(pem, b"partial answer") as port:
        done = run("connect", f"tls://127.0.0.1:{port}?ca={pem['ca']}", input=b"")
    assert done.returncode == 1
    assert done.stdout == b"partial answer"
    one_line(done.stderr, "truncated")


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + STEP
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


# -- refusals, one line each, exit 1


@pytest.mark.parametrize(
    ("server_query", "client_query", "needles"),
    [
        pytest.param("cert={other}", "ca={ca}", ("not trusted", "ca=", "pin="), id="untrusted"),
        pytest.param(
            "cert={server}",
            "ca={ca}&sni=other.example",
            ("not valid for other.example", "it is for localhost, 127.0.0.1, ::1"),
            id="name",
        ),
        pytest.param(
            "cert={client}",
            "ca={ca}",
            (
                "not valid for the IP address 127.0.0.1: it is for alice.example; "
                "to verify it by a name, add sni=alice.example",
            ),
            id="ip-name",
        ),
        pytest.param(
            "cert={expired}",
            "ca={ca}",
            ("expired on 2020-01-01 00:00:00 UTC",),
            id="expired",
        ),
        pytest.param(
            "cert={future}",
            "ca={ca}",
            ("not valid until 2999-01-01 00:00:00 UTC",),
            id="not-yet-valid",
        ),
        pytest.param("cert={server}&client-ca={ca}", "ca={ca}", ("client certificate",), id="no-client-cert"),
        pytest.param(
            "cert={server}&client-ca={other_ca}",
            "ca={ca}&cert={client}",
            ("certificate", "not trust"),
            id="client-cert-refused",
        ),
        pytest.param(
            "cert={server}&alpn=h2",
            "ca={ca}&alpn=imap",
            ("the server accepts none of the ALPN protocols offered",),  # its alert (RFC 7301)
            id="alpn",
        ),
        pytest.param("cert=auto", "pin=sha256:" + "ab" * 32, ("pin", "sha256:" + "ab" * 32), id="pin"),
    ],
)
def test_every_refusal_is_one_line_and_exit_1(
    server_query: str, client_query: str, needles: tuple[str, ...], spawn: Spawn, pem: dict[str, str],
    tmp_path: os.PathLike[str],
) -> None:  # fmt: skip
    files = dict(pem)
    if "{other}" in server_query:
        other = trustme.CA()
        cert = other.issue_cert("127.0.0.1", "localhost")
        files["other"] = os.path.join(os.fspath(tmp_path), "other.pem")
        cert.private_key_and_cert_chain_pem.write_to_path(files["other"])
    server = spawn("listen", "-k", "tls://127.0.0.1:0?" + server_query.format(**files), stdin=False)
    address, _ = tls_listening(server)
    done = run("connect", f"tls://127.0.0.1:{port_of(address)}?" + client_query.format(**files))
    assert done.returncode == 1, done.stderr
    one_line(done.stderr, *needles)


def test_a_refused_client_certificate_is_worded_for_each_side(spawn: Spawn, pem: dict[str, str]) -> None:
    """The server names the client's certificate and client-ca (not "the server's chain" and
    ca=, as the client's own line would); the client names the server as the one refusing."""
    server = spawn(
        "listen", f"tls://127.0.0.1:0?cert={pem['server']}&client-ca={pem['other_ca']}", stdin=False
    )
    address, _ = tls_listening(server)
    done = run("connect", f"tls://127.0.0.1:{port_of(address)}?ca={pem['ca']}&cert={pem['client']}")
    assert done.returncode == 1, done.stderr
    client_line = one_line(done.stderr, "the server", "client's certificate")
    assert "peer" not in client_line, client_line
    assert server.finish() == 1
    line = server.wait_err(r"^enchufe: .*$").group(0)
    assert "client's certificate" in line and "client-ca" in line, line
    assert "server's" not in line and "ca=FILE" not in line, line


def test_an_expired_client_certificate_is_refused_with_its_date(spawn: Spawn, pem: dict[str, str]) -> None:
    """The server's line says when the client's certificate ended; the client's, that the
    server refused it as expired."""
    server = spawn("listen", f"tls://127.0.0.1:0?cert={pem['server']}&client-ca={pem['ca']}", stdin=False)
    address, _ = tls_listening(server)
    done = run("connect", f"tls://127.0.0.1:{port_of(address)}?ca={pem['ca']}&cert={pem['expired']}")
    assert done.returncode == 1, done.stderr
    one_line(done.stderr, "the server says this client's certificate expired")
    assert server.finish() == 1
    line = server.wait_err(r"^enchufe: .*$").group(0)
    assert line == "enchufe: the client's certificate expired on 2020-01-01 00:00:00 UTC", line


def test_a_plain_server_on_a_tls_address_is_named_by_what_it_sent(spawn: Spawn) -> None:
    server = spawn("listen", "tcp://127.0.0.1:0")
    address = server.listening()
    server.feed(b"SSH-2.0-OpenSSH_9.6\r\n", close=False)
    done = run("connect", f"tls://127.0.0.1:{port_of(address)}?insecure")
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.decode().splitlines() if "warning" not in line]
    assert len(lines) == 1 and "not speak TLS" in lines[0] and "SSH-2.0" in lines[0], done.stderr


def test_a_plain_client_on_a_tls_listener_is_refused_and_named(spawn: Spawn) -> None:
    server = spawn("listen", "-v", "tls://127.0.0.1:0?cert=auto", stdin=False)
    address, _ = tls_listening(server)
    run("connect", f"tcp://127.0.0.1:{port_of(address)}", input=b"GET / HTTP/1.0\r\n\r\n")
    assert server.finish() == 1
    server.wait_err(r"^enchufe: .*not TLS.*GET")


def test_insecure_warns_at_every_connection(spawn: Spawn) -> None:
    server = spawn("listen", "tls://127.0.0.1:0?cert=auto")
    address, _ = tls_listening(server)
    server.feed(b"hi")
    done = run("connect", f"tls://127.0.0.1:{port_of(address)}?insecure")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"hi"
    one_line(done.stderr, "warning", "insecure")


def test_listen_v_says_version_cipher_and_the_client_certificate(spawn: Spawn, pem: dict[str, str]) -> None:
    server = spawn("listen", "-v", f"tls://127.0.0.1:0?cert={pem['server']}&client-ca={pem['ca']}")
    address, _ = tls_listening(server)
    server.feed(b"")
    done = run("connect", f"tls://127.0.0.1:{port_of(address)}?ca={pem['ca']}&cert={pem['client']}")
    assert done.returncode == 0, done.stderr
    assert server.finish() == 0, server.err
    line = server.wait_err(r"^TLS with \S+: TLSv1\.3 TLS_\w+, client certificate .*CN=alice.*$").group(0)
    assert "\n" not in line


def test_connect_v_names_the_connection_tls_and_says_what_was_agreed(
    spawn: Spawn, pem: dict[str, str]
) -> None:
    server = spawn("listen", f"tls://127.0.0.1:0?cert={pem['server']}")
    address, _ = tls_listening(server)
    server.feed(b"")
    port = port_of(address)
    done = run("connect", "-v", f"tls://127.0.0.1:{port}?ca={pem['ca']}")
    assert done.returncode == 0, done.stderr
    said = done.stderr.decode()
    assert f"connected to tls://127.0.0.1:{port} from tcp://127.0.0.1:" in said, said
    assert re.search(
        rf"^TLS with tls://127\.0\.0\.1:{port}: TLSv1\.3 TLS_\w+, server certificate ", said, re.M
    )
    assert f"closed tls://127.0.0.1:{port} after" in said


# -- bad TLS input: exit 2, one line, before any socket


@pytest.mark.parametrize(
    ("command", "address", "needles"),
    [
        ("connect", "tls://127.0.0.1:1?colour=blue", ("colour", "accepted")),
        ("connect", "tls://127.0.0.1:1?client-ca={ca}", ("client-ca",)),
        ("connect", "tls://127.0.0.1:1?ca=/nonexistent/ca.pem", ("/nonexistent/ca.pem",)),
        ("connect", "tls://127.0.0.1:1?ca={not_pem}", ("not_pem",)),
        ("connect", "tls://127.0.0.1:1?ca={ca}&cert={mismatch_cert}&key={server_key}", ("key",)),
        ("listen", "tls://127.0.0.1:0?cert=auto&pin=sha256:" + "ab" * 32, ("pin",)),
        ("listen", "tls://127.0.0.1:0", ("cert",)),
        ("listen", "tls://127.0.0.1:0?cert={not_pem}", ("not_pem",)),
        ("listen", "tls://127.0.0.1:0?cert={mismatch_cert}&key={server_key}", ("key",)),
        ("echo", "tls://127.0.0.1:0?cert=auto&sni=x", ("sni",)),
        ("chat", "tls://127.0.0.1:0?insecure&cert=auto", ("insecure",)),
        ("check", "tls://127.0.0.1:1?cert=auto", ("cert=auto",)),
        ("send", "tls://127.0.0.1:1?allow-cn=x", ("allow-cn",)),
        ("listen", "udp://127.0.0.1:0?cert=auto", ("tls",)),
    ],
)
def test_bad_tls_input_is_one_line_and_exit_2(
    command: str, address: str, needles: tuple[str, ...], pem: dict[str, str]
) -> None:
    done = run(command, address.format(**pem))
    assert done.returncode == 2, done.stderr
    one_line(done.stderr, *needles)


# -- the other commands


def test_send_wait_reply_over_tls(spawn: Spawn) -> None:
    server = spawn("echo", "tls://127.0.0.1:0?cert=auto")
    address, pin = tls_listening(server)
    done = run("send", "--wait-reply", f"tls://127.0.0.1:{port_of(address)}?pin={pin}", "ping")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"ping"


def test_send_to_a_self_signed_server_is_refused(spawn: Spawn) -> None:
    server = spawn("echo", "tls://127.0.0.1:0?cert=auto")
    address, _ = tls_listening(server)
    done = run("send", "--wait-reply", f"tls://127.0.0.1:{port_of(address)}", "ping")
    assert done.returncode == 1
    one_line(done.stderr, "self-signed")


def test_chat_over_tls(spawn: Spawn, pem: dict[str, str]) -> None:
    server = spawn("chat", "-v", f"tls://127.0.0.1:0?cert={pem['server']}")
    address, _ = tls_listening(server)
    target = f"tls://127.0.0.1:{port_of(address)}?ca={pem['ca']}"
    alice = spawn("connect", target)
    bob = spawn("connect", target)
    server.wait_err(r"joined \(2 in the room\)")  # not a fixed sleep: a loaded machine is slower
    alice.feed(b"hello bob\n", close=False)
    assert b"hello bob" in bob.wait_out(10)
    alice.close_stdin()
    bob.close_stdin()
    assert alice.finish() == 0 and bob.finish() == 0, (alice.err, bob.err)


def test_check_passes_only_when_the_handshake_and_verification_pass(
    spawn: Spawn, pem: dict[str, str]
) -> None:
    server = spawn("echo", f"tls://127.0.0.1:0?cert={pem['server']}")
    address, _ = tls_listening(server)
    port = port_of(address)
    good = run("check", f"tls://127.0.0.1:{port}?ca={pem['ca']}")
    assert good.returncode == 0, good.stderr
    bad = run("check", f"tls://127.0.0.1:{port}?ca={pem['other_ca']}")
    assert bad.returncode == 1, bad.stderr
    assert "ca=" in bad.stdout.decode() + bad.stderr.decode()
    plain = spawn("echo", "tcp://127.0.0.1:0")
    plain_port = port_of(plain.listening())
    not_tls = run("check", f"tls://127.0.0.1:{plain_port}?ca={pem['ca']}")
    assert not_tls.returncode == 1
    assert "TLS" in not_tls.stdout.decode() + not_tls.stderr.decode()


def test_listen_exec_gives_the_child_the_tls_environment(spawn: Spawn, pem: dict[str, str]) -> None:
    server = spawn(
        "listen",
        f"tls://127.0.0.1:0?cert={pem['server']}&client-ca={pem['ca']}",
        "--exec",
        "env",
        stdin=False,
    )
    address, _ = tls_listening(server)
    done = run("connect", f"tls://127.0.0.1:{port_of(address)}?ca={pem['ca']}&cert={pem['client']}")
    assert done.returncode == 0, done.stderr
    env = dict(line.split("=", 1) for line in done.stdout.decode().splitlines() if "=" in line)
    assert env["ENCHUFE_TLS_VERSION"] == "TLSv1.3"
    assert env["ENCHUFE_TLS_CIPHER"].startswith("TLS_")
    assert env["ENCHUFE_TLS_ALPN"] == ""
    assert env["ENCHUFE_TLS_PEER_CN"] == "alice"
    assert "DNS:alice.example" in env["ENCHUFE_TLS_PEER_SAN"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", env["ENCHUFE_TLS_PEER_PIN"])


def test_one_shot_listen_exec_ends_with_a_refused_handshake_as_listen_does(
    spawn: Spawn, pem: dict[str, str]
) -> None:
    """Without -v and without -k: the refusal is said in one line and the command ends with
    exit status 1, as plain listen does (it used to wait on, silent, for another client)."""
    query = f"cert={pem['server']}&client-ca={pem['ca']}"
    server = spawn("listen", f"tls://127.0.0.1:0?{query}", "--exec", "env", stdin=False)
    address, _ = tls_listening(server)
    done = run("connect", f"tls://127.0.0.1:{port_of(address)}?ca={pem['ca']}")  # no client cert
    assert done.returncode == 1, done.stderr
    assert server.finish() == 1
    line = server.wait_err(r"^enchufe: .*$").group(0)
    assert "client" in line and "certificate" in line, server.err


def test_listen_k_exec_says_each_refused_handshake_and_serves_on(spawn: Spawn, pem: dict[str, str]) -> None:
    query = f"cert={pem['server']}&client-ca={pem['ca']}"
    server = spawn("listen", "-k", f"tls://127.0.0.1:0?{query}", "--exec", "echo served", stdin=False)
    address, _ = tls_listening(server)
    port = port_of(address)
    assert run("connect", f"tls://127.0.0.1:{port}?ca={pem['ca']}").returncode == 1
    server.wait_err(r"^enchufe: .*certificate.*$")
    served = run("connect", f"tls://127.0.0.1:{port}?ca={pem['ca']}&cert={pem['client']}")
    assert served.returncode == 0 and served.stdout == b"served\n", served.stderr


def test_sigusr1_reloads_the_certificate_for_the_next_clients(
    spawn: Spawn, pem: dict[str, str], tmp_path: os.PathLike[str]
) -> None:
    folder = os.fspath(tmp_path)
    cert = os.path.join(folder, "live.pem")
    shutil.copy(pem["server"], cert)
    server = spawn("echo", f"tls://127.0.0.1:0?cert={cert}")
    address, _ = tls_listening(server)
    port = port_of(address)
    assert run("check", f"tls://127.0.0.1:{port}?ca={pem['ca']}").returncode == 0
    other = trustme.CA()
    other.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(cert)
    other.cert_pem.write_to_path(os.path.join(folder, "other-ca.pem"))
    server.popen.send_signal(signal.SIGUSR1)
    server.wait_err(r"^SIGUSR1: TLS .* reloaded")
    assert run("check", f"tls://127.0.0.1:{port}?ca={folder}/other-ca.pem").returncode == 0
    # A bad file: said, and the last good certificate stays.
    with open(cert, "w") as f:
        f.write("garbage\n")
    server.popen.send_signal(signal.SIGUSR1)
    server.wait_err(r"^SIGUSR1: TLS files not reloaded, the old ones stay: .*live\.pem")
    assert run("check", f"tls://127.0.0.1:{port}?ca={folder}/other-ca.pem").returncode == 0


def test_sigusr1_on_listen_k(spawn: Spawn, pem: dict[str, str]) -> None:
    server = spawn("listen", "-k", f"tls://127.0.0.1:0?cert={pem['server']}", stdin=False)
    tls_listening(server)
    server.popen.send_signal(signal.SIGUSR1)
    server.wait_err(r"^SIGUSR1: TLS .* reloaded")
    assert server.running()


# -- help


def test_connect_and_listen_help_list_every_tls_parameter() -> None:
    from enchufe.tlsparams import PARAMETERS

    for command in ("connect", "listen"):
        shown = run(command, "--help").stdout.decode()
        for name in (*PARAMETERS, "cert=auto", "tls+unix:", "pin sha256:"):
            assert name in shown, (command, name)


def test_the_man_page_has_the_tls_table() -> None:
    from enchufe.tlsparams import PARAMETERS

    page = run("--man").stdout.decode().replace("\\-", "-")
    for name in (*PARAMETERS, "tls+unix", "cert=auto"):
        assert name in page, name


def test_echo_v_says_each_clients_tls_and_json_has_the_fields(spawn: Spawn, pem: dict[str, str]) -> None:
    import json

    server = spawn("echo", "-v", "--json", f"tls://127.0.0.1:0?cert={pem['server']}&client-ca={pem['ca']}")
    match = server.wait_err(r'^(\{"event": "listening".*\})$')
    port = port_of(json.loads(match.group(1))["address"])
    done = run("connect", f"tls://127.0.0.1:{port}?ca={pem['ca']}&cert={pem['client']}", input=b"hi")
    assert done.returncode == 0 and done.stdout == b"hi", done.stderr
    record = json.loads(server.wait_err(r'^(\{"event": "tls".*\})$').group(1))
    assert record["version"] == "TLSv1.3" and record["cipher"].startswith("TLS_"), record
    assert "CN=alice" in record["subject"], record


def test_a_server_that_never_answers_the_handshake_times_out(spawn: Spawn) -> None:
    server = spawn("listen", "tcp://127.0.0.1:0")  # reads the ClientHello, says nothing
    port = port_of(server.listening())
    done = run("connect", f"tls://127.0.0.1:{port}?insecure&handshake-timeout=0.5")
    assert done.returncode == 1
    lines = [line for line in done.stderr.decode().splitlines() if "warning" not in line]
    assert len(lines) == 1 and "handshake-timeout" in lines[0], done.stderr


def test_recv_on_a_tls_address_points_to_listen_quoted_for_a_shell() -> None:
    done = run("recv", "tls://127.0.0.1:0?cert=auto")
    assert done.returncode == 2
    one_line(done.stderr, "enchufe listen 'tls://127.0.0.1:0?cert=auto'")

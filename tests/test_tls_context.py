"""TLS contexts, pins and refusals, with real handshakes over loopback TCP.

Certificates come from trustme CAs; every refusal of the SPEC is asserted by its reason key and
its line.  The pin is checked against what the openssl command computes.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import shutil
import socket
import ssl
import subprocess
import sys
import termios
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from enchufe import _tls, _tls_refusals, tlsinfo
from enchufe.errors import AddressError
from enchufe.tlsinfo import describe_certificate, spki_digest
from enchufe.tlsparams import TLSParams, format_pin, parse_query

STEP = 10.0


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PEM files: the CA, a server certificate for localhost/127.0.0.1, a client certificate."""
    folder = tmp_path_factory.mktemp("pem")
    server = ca.issue_cert("localhost", "127.0.0.1", common_name="localhost")
    client = ca.issue_cert("client.example", "alice@example.com", common_name="alice")
    paths = {
        "ca": folder / "ca.pem",
        "server": folder / "server.pem",
        "client": folder / "client.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(paths["server"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["client"]))
    return {name: str(path) for name, path in paths.items()}


class Handshake:
    """One server handshake on a thread, against whatever client the test runs."""

    def __init__(
        self, context: ssl.SSLContext, check: Callable[[ssl.SSLSocket], object] | None = None
    ) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.context = context
        self.check = check
        self.error: Exception | None = None
        self.explained: _tls.TLSRefused | None = None
        self.result: object = None
        self.first: bytes = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(STEP)
        try:
            self.first = conn.recv(64, socket.MSG_PEEK)
            with self.context.wrap_socket(conn, server_side=True) as tls:
                self.result = self.check(tls) if self.check else None
                tls.sendall(b"hello")
        except Exception as exc:
            self.error = exc
            # Explained here too: a refusal made inside the handshake is known to this thread only.
            if isinstance(exc, ssl.SSLError):
                self.explained = _tls_refusals.explain(exc, server_side=True)
        finally:
            conn.close()

    def join(self) -> None:
        self.thread.join(STEP)
        self.listener.close()


def client(params: TLSParams, port: int, name: str | None = "localhost") -> ssl.SSLSocket:
    context = _tls.client_context(params)
    raw = socket.create_connection(("127.0.0.1", port), timeout=STEP)
    try:
        tls = context.wrap_socket(raw, server_hostname=name)
    except BaseException:
        raw.close()
        raise
    try:
        _tls.check_server_certificate(tls, params)
    except BaseException:
        tls.close()
        raise
    return tls


@pytest.fixture
def server(files: dict[str, str]) -> Iterator[Callable[..., Handshake]]:
    made: list[Handshake] = []

    def make(query: str = "", check: Callable[[ssl.SSLSocket], object] | None = None) -> Handshake:
        params = parse_query(query or f"cert={files['server']}")
        context, _ = _tls.server_context(params)
        made.append(Handshake(context, check))
        return made[-1]

    yield make
    for handshake in made:
        handshake.join()


def test_a_verified_handshake_reports_what_it_agreed_on(
    files: dict[str, str], server: Callable[..., Handshake]
) -> None:
    peer = server(f"cert={files['server']}&alpn=h2,http/1.1")
    with client(parse_query(f"ca={files['ca']}&alpn=http/1.1"), peer.port) as tls:
        assert tls.recv(5) == b"hello"
        info = _tls.info(tls)
    assert info.version in ("TLSv1.3", "TLSv1.2")
    assert info.alpn == "http/1.1"
    assert info.server_name == "localhost"
    assert info.peer is not None
    assert ("DNS", "localhost") in info.peer.sans and ("IP", "127.0.0.1") in info.peer.sans
    assert info.peer.common_name == "localhost"
    assert not info.resumed


def test_the_system_store_does_not_trust_a_private_ca(server: Callable[..., Handshake]) -> None:
    peer = server()
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        client(TLSParams(), peer.port)
    refused = _tls_refusals.explain(info.value, server_name="localhost")
    assert refused.reason == "untrusted"
    assert "ca=FILE" in str(refused) and "pin=" in str(refused)


def test_a_name_mismatch_names_the_name(files: dict[str, str], server: Callable[..., Handshake]) -> None:
    peer = server()
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        client(parse_query(f"ca={files['ca']}"), peer.port, name="other.example")
    refused = _tls_refusals.explain(info.value, server_name="other.example")
    assert refused.reason == "name-mismatch"
    assert "not valid for other.example" in str(refused)


def test_expired_and_self_signed_are_told_apart(
    ca: trustme.CA, tmp_path: Path, server: Callable[..., Handshake]
) -> None:
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    old = ca.issue_cert("localhost", not_before=past, not_after=past + datetime.timedelta(days=1))
    old.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "old.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    peer = server(f"cert={tmp_path / 'old.pem'}")
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        client(parse_query(f"ca={tmp_path / 'ca.pem'}"), peer.port)
    assert _tls_refusals.explain(info.value).reason == "expired"

    auto = server("cert=auto")
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        client(parse_query(f"ca={tmp_path / 'ca.pem'}"), auto.port)
    assert _tls_refusals.explain(info.value).reason == "self-signed"


def test_cert_auto_is_trusted_by_its_printed_pin_alone(files: dict[str, str]) -> None:
    context, pin = _tls.server_context(parse_query("cert=auto"), "127.0.0.1")
    assert pin is not None and pin.startswith("sha256:") and len(pin) == 7 + 64
    peer = Handshake(context)
    try:
        with client(parse_query(f"pin={pin}"), peer.port) as tls:
            assert tls.recv(5) == b"hello"
            info = _tls.info(tls)
            assert info.peer is not None and info.peer.pin == pin and info.peer.self_signed
    finally:
        peer.join()


def test_a_wrong_pin_is_refused_with_both_pins(server: Callable[..., Handshake]) -> None:
    peer = server("cert=auto")
    wrong = "sha256:" + "00" * 32
    with pytest.raises(_tls.TLSRefused) as info:
        client(parse_query(f"pin={wrong}"), peer.port)
    assert info.value.reason == "pin-mismatch"
    assert f"expected {wrong}" in str(info.value) and "it has sha256:" in str(info.value)


@pytest.mark.interop
def test_the_pin_is_what_openssl_computes(files: dict[str, str]) -> None:
    if shutil.which("openssl") is None:
        if os.environ.get("CI"):
            pytest.fail("openssl is not installed (CI is set, and CI installs it)")
        pytest.skip("openssl is not installed")
    pem = Path(files["server"]).read_text()
    leaf = pem[pem.index("-----BEGIN CERTIFICATE-----") :]
    leaf = leaf[: leaf.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")] + "\n"
    pubkey = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout"], input=leaf.encode(), capture_output=True, check=True
    )
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=pubkey.stdout, capture_output=True, check=True
    )
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hex"], input=der.stdout, capture_output=True, check=True
    )
    expected = digest.stdout.decode().split()[-1]
    assert describe_certificate(ssl.PEM_cert_to_DER_cert(leaf)).pin == f"sha256:{expected}"
    assert spki_digest(ssl.PEM_cert_to_DER_cert(leaf)).hex() == expected


def test_a_certificate_seen_again_is_not_read_again(ca: trustme.CA) -> None:
    """The description of a certificate (140 µs of parsing) is kept by its DER: the same bytes
    again, even in another object, give the same description; other bytes their own; bytes that
    do not parse are refused every time, nothing kept for them."""
    first = ssl.PEM_cert_to_DER_cert(ca.issue_cert("again.example").cert_chain_pems[0].bytes().decode())
    other = ssl.PEM_cert_to_DER_cert(ca.issue_cert("other.example").cert_chain_pems[0].bytes().decode())
    described = describe_certificate(first)
    assert describe_certificate(bytes(bytearray(first))) is described
    assert spki_digest(bytes(bytearray(first))) == spki_digest(first)
    assert describe_certificate(other).sans == (("DNS", "other.example"),)
    assert described.sans == (("DNS", "again.example"),)
    assert tlsinfo._describe.cache_info().maxsize == tlsinfo.CERTIFICATES_KEPT
    for _attempt in range(2):
        with pytest.raises(ValueError):
            describe_certificate(first[:-10])


def test_mutual_tls_accepts_an_allowed_client_and_names_a_refused_one(
    files: dict[str, str], server: Callable[..., Handshake]
) -> None:
    allowed = parse_query(f"cert={files['server']}&client-ca={files['ca']}&allow-san=DNS:client.example")
    context, _ = _tls.server_context(allowed)
    peer = Handshake(context, check=lambda tls: _tls.check_client_certificate(tls, allowed))
    with client(parse_query(f"ca={files['ca']}&cert={files['client']}"), peer.port) as tls:
        assert tls.recv(5) == b"hello"
    peer.join()
    assert peer.error is None
    assert peer.result is not None and peer.result.common_name == "alice"  # type: ignore[attr-defined]

    refusing = parse_query(f"cert={files['server']}&client-ca={files['ca']}&allow-cn=bob")
    context, _ = _tls.server_context(refusing)
    peer = Handshake(context, check=lambda tls: _tls.check_client_certificate(tls, refusing))
    with (
        client(parse_query(f"ca={files['ca']}&cert={files['client']}"), peer.port) as tls,
        pytest.raises(ssl.SSLError, match="BAD_CERTIFICATE"),  # told inside the handshake
    ):
        tls.recv(5)
    peer.join()
    refused = peer.explained
    assert refused is not None and refused.reason == "not-allowed", peer.error
    assert "'CN=alice," in str(refused) and "DNS:client.example" in str(refused) and "CN=bob" in str(refused)


def test_a_client_without_a_certificate_is_refused(
    files: dict[str, str], server: Callable[..., Handshake]
) -> None:
    peer = server(f"cert={files['server']}&client-ca={files['ca']}")
    with (
        pytest.raises((ssl.SSLError, ConnectionError)),
        client(parse_query(f"ca={files['ca']}"), peer.port) as tls,
    ):
        tls.recv(5)  # TLS 1.3: the server's refusal arrives after the client's handshake ends
    peer.join()
    assert _tls_refusals.explain(peer.error or Exception()).reason == "client-certificate-missing"


def test_a_peer_that_does_not_speak_tls_is_shown_by_what_it_sent(server: Callable[..., Handshake]) -> None:
    peer = server()
    with socket.create_connection(("127.0.0.1", peer.port), timeout=STEP) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            raw.recv(100)  # the server's alert, or a reset
    peer.join()
    refused = _tls_refusals.explain(peer.error or Exception(), first_bytes=peer.first)
    assert refused.reason == "not-tls"
    assert "'GET / HTTP/1.1\\r\\nHost: x" in str(refused)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ca=/nonexistent/ca.pem", "ca=/nonexistent/ca.pem: no such file"),
        ("ca=/", "a directory, not a PEM file"),
        ("ca={notpem}", "not PEM it can use"),
        ("cert={ca}", "no private key in it; add key=FILE"),
    ],
)
def test_bad_files_are_refused_naming_the_parameter(
    query: str, expected: str, files: dict[str, str], tmp_path: Path
) -> None:
    notpem = tmp_path / "not.pem"
    notpem.write_text("hello\n")
    params = parse_query(query.format(notpem=notpem, ca=files["ca"]))
    with pytest.raises(AddressError, match=expected.format(notpem=notpem)):
        _tls.client_context(params)


def test_a_key_that_does_not_match_its_certificate(ca: trustme.CA, tmp_path: Path) -> None:
    one, two = ca.issue_cert("a.example"), ca.issue_cert("b.example")
    one.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    two.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    params = parse_query(f"cert={tmp_path / 'cert.pem'}&key={tmp_path / 'key.pem'}")
    with pytest.raises(AddressError, match="key does not match the certificate"):
        _tls.server_context(params)


@pytest.fixture
def key_files(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    """A certificate and its key apart, the same key encrypted (openssl's own), and junk."""
    issued = ca.issue_cert("a.example")
    paths = {name: str(tmp_path / f"{name}.pem") for name in ("cert", "key", "encrypted", "junk", "both")}
    issued.cert_chain_pems[0].write_to_path(paths["cert"])
    issued.private_key_pem.write_to_path(paths["key"])
    issued.private_key_and_cert_chain_pem.write_to_path(paths["both"])
    Path(paths["junk"]).write_text("hello\n")
    encrypt = ["openssl", "pkey", "-in", paths["key"], "-aes256", "-passout", "pass:secret"]
    subprocess.run([*encrypt, "-out", paths["encrypted"]], check=True)
    return paths


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("cert={cert}&key={missing}", "key={missing}: no such file"),
        ("cert={missing}&key={key}", "cert={missing}: no such file"),
        ("cert={cert}&key={junk}", "key={junk}: not PEM it can use"),
        ("cert={junk}&key={key}", "cert={junk}: not PEM it can use"),
        ("cert={cert}", "cert={cert}: no private key in it; add key=FILE"),
        ("cert={cert}&key={encrypted}", "key={encrypted}: the private key is encrypted with a passphrase"),
    ],
    ids=["missing-key", "missing-cert", "junk-key", "junk-cert", "no-key", "encrypted"],
)
def test_a_certificate_and_key_failure_names_the_file_it_is_about(
    query: str, expected: str, key_files: dict[str, str], tmp_path: Path
) -> None:
    names = {**key_files, "missing": str(tmp_path / "missing.pem")}
    params = parse_query(query.format(**names))
    for make in (_tls.server_context, _tls.client_context):
        with pytest.raises(AddressError) as refused:
            make(params)
        assert str(refused.value).startswith(expected.format(**names)), refused.value
        assert "_ssl.c" not in str(refused.value)


def test_an_encrypted_key_is_refused_without_a_prompt_even_on_a_terminal(key_files: dict[str, str]) -> None:
    """OpenSSL's own prompt would wait at a terminal (a server's SIGUSR1 reload included): the
    CLI gives one line and exit 2 at once, whatever stdin is."""
    address = f"tls://127.0.0.1:0?cert={key_files['cert']}&key={key_files['encrypted']}"
    primary, secondary = os.openpty()

    def on_the_terminal() -> None:  # the child's controlling terminal: where OpenSSL would prompt
        os.setsid()
        fcntl.ioctl(secondary, termios.TIOCSCTTY, 0)

    try:
        done = subprocess.run(
            [sys.executable, "-m", "enchufe", "listen", address],
            stdin=secondary,
            capture_output=True,
            timeout=15,
            preexec_fn=on_the_terminal,
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert done.returncode == 2
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "encrypted with a passphrase" in lines[0] and "Traceback" not in lines[0]
    assert _tls.server_context(parse_query(f"cert={key_files['both']}"))[0] is not None


def test_tls_1_2_is_the_minimum(files: dict[str, str]) -> None:
    context = _tls.client_context(parse_query(f"ca={files['ca']}"))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    server_context, _ = _tls.server_context(parse_query(f"cert={files['server']}"))
    assert server_context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_format_pin() -> None:
    assert format_pin(bytes(32)) == "sha256:" + "00" * 32


def test_insecure_accepts_any_certificate(server: Callable[..., Handshake]) -> None:
    peer = server("cert=auto")
    with client(parse_query("insecure"), peer.port, name="anything.example") as tls:
        assert tls.recv(5) == b"hello"


def test_a_server_that_names_alpn_protocols_alerts_a_client_that_offers_none(
    files: dict[str, str],
) -> None:
    """A client that offers no ALPN at all gets the no_application_protocol alert at its
    ClientHello (it used to finish the handshake and meet a closed connection): its line says
    to add alpn=, the server's names what it accepts."""
    params = parse_query(f"cert={files['server']}&alpn=h2")
    context, _ = _tls.server_context(params)
    peer = Handshake(context, check=lambda tls: _tls.check_client_certificate(tls, params))
    with pytest.raises(ssl.SSLError) as alert:
        client(parse_query(f"ca={files['ca']}"), peer.port)
    peer.join()
    said = _tls_refusals.explain(alert.value, alpn=())
    assert said.reason == "alpn" and "add alpn=" in str(said)
    assert peer.explained is not None and peer.explained.reason == "alpn"
    assert str(peer.explained) == "the client offers no ALPN protocol; this server accepts h2"


def test_a_server_that_names_alpn_protocols_alerts_a_client_that_offers_others(
    files: dict[str, str],
) -> None:
    """RFC 7301: a client offering ALPN protocols the server has none of gets the
    no_application_protocol alert in the handshake (a clear refusal on its side, no session),
    not a finished handshake and a closed connection; one offering a common protocol gets the
    server's first choice among those it offers."""
    params = parse_query(f"cert={files['server']}&alpn=h2,foo")
    context, _ = _tls.server_context(params)
    refused = Handshake(context)
    with pytest.raises(ssl.SSLError) as alert:
        client(parse_query(f"ca={files['ca']}&alpn=http/1.1"), refused.port)
    refused.join()
    assert "no application protocol" in str(alert.value), alert.value
    assert _tls_refusals.explain(alert.value).reason == "alpn"
    chosen = Handshake(context)
    with client(parse_query(f"ca={files['ca']}&alpn=http/1.1,foo,h2"), chosen.port) as tls:
        assert tls.selected_alpn_protocol() == "h2"
    chosen.join()


def test_a_refused_client_s_subject_is_escaped_once() -> None:
    """Its control characters escaped as every peer text is, not escaped again by repr()."""
    now = datetime.datetime.now(datetime.UTC)
    peer = tlsinfo.PeerCertificate(
        subject="CN=ev\x1b[31mil\nx",
        common_name="ev\x1b[31mil\nx",
        sans=(("DNS", "ev\x1b.example"),),
        issuer="CN=ca",
        not_before=now,
        not_after=now,
        pin="sha256:" + "00" * 32,
        self_signed=False,
    )
    refused = _tls._refusal(peer, parse_query("client-ca=/dev/null&allow-cn=alice"))
    assert refused is not None
    assert "'CN=ev\\x1b[31mil\\nx'" in str(refused) and "\\\\" not in str(refused)

"""TLS 1.3 suites: AES-128-GCM asked for first, the set never widened, ChaCha20 for clients that
want it; real handshakes on socket pairs and against openssl's own client and server."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trustme

from enchufe import _tls, _tls_suites, _tls_verify
from enchufe.tlsparams import TLSParams
from tests.conftest import Peer

STEP = 10.0
AES128, AES256, CHACHA = "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("suites")
    ca = trustme.CA()
    paths = {"ca": str(folder / "ca.pem"), "server": str(folder / "server.pem")}
    ca.cert_pem.write_to_path(paths["ca"])
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(paths["server"])
    return paths


def tls13(context: ssl.SSLContext) -> list[str]:
    return [c["name"] for c in context.get_ciphers() if c.get("protocol") == "TLSv1.3"]


def handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> tuple[str, str]:
    """The suite each side agreed on, after a real handshake over a socket pair."""
    a, b = socket.socketpair()
    a.settimeout(STEP)
    b.settimeout(STEP)
    with a, b:
        served = Peer(lambda: server.wrap_socket(b, server_side=True))
        with client.wrap_socket(a, server_hostname="localhost") as tls_client:
            tls_server = served.result(STEP)
            try:
                ours, theirs = tls_client.cipher(), tls_server.cipher()
                assert ours is not None and theirs is not None
                return ours[0], theirs[0]
            finally:
                tls_server.close()


def test_enchufe_contexts_list_aes128_first_and_keep_the_same_set() -> None:
    default = tls13(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    client = _tls.client_context(TLSParams(insecure=True))
    server, _pin = _tls.server_context(TLSParams(cert_auto=True), "localhost")
    for context in (client, server):
        assert tls13(context)[0] == AES128
        assert sorted(tls13(context)) == sorted(default)
    assert server.options & (1 << 21), "SSL_OP_PRIORITIZE_CHACHA on the server"
    assert not client.options & (1 << 21)


def test_enchufe_to_enchufe_agrees_on_aes128(pem: dict[str, str]) -> None:
    client = _tls.client_context(TLSParams(ca=pem["ca"]))
    server, _pin = _tls.server_context(TLSParams(cert=pem["server"]))
    assert handshake(client, server) == (AES128, AES128)


def test_a_client_with_openssl_default_order_gets_aes128_from_an_enchufe_server(pem: dict[str, str]) -> None:
    """Python's plain context lists AES-256 first; the server's preference decides."""
    client = ssl.create_default_context(cafile=pem["ca"])
    assert tls13(client)[0] != AES128
    server, _pin = _tls.server_context(TLSParams(cert=pem["server"]))
    assert handshake(client, server)[0] == AES128


def test_a_client_that_offers_only_aes256_gets_aes256(pem: dict[str, str]) -> None:
    client = ssl.create_default_context(cafile=pem["ca"])
    server, _pin = _tls.server_context(TLSParams(cert=pem["server"]))
    assert _tls_suites.prefer_aes128(server)  # already first: nothing more to do, still True
    only = _restricted(client, AES256)
    if not only:
        pytest.skip("OpenSSL cannot be reached from this Python: the client's suites cannot be set")
    assert handshake(client, server)[0] == AES256


def _restricted(context: ssl.SSLContext, suites: str) -> bool:
    found = _tls_verify.libraries()
    if found is None:
        return False
    pointer = _tls_verify.context_pointer(context, found[0])
    return pointer is not None and bool(found[0].SSL_CTX_set_ciphersuites(pointer, suites.encode()))


@needs_openssl
def test_a_client_without_aes_hardware_that_asks_for_chacha20_first_gets_it(pem: dict[str, str]) -> None:
    """``openssl s_client -ciphersuites CHACHA:AES128`` stands for such a client: the server's
    SSL_OP_PRIORITIZE_CHACHA lets its first choice win over the server's AES-128."""
    server, _pin = _tls.server_context(TLSParams(cert=pem["server"]))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(STEP)
        port = listener.getsockname()[1]
        client = subprocess.Popen(
            [
                *("openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-CAfile", pem["ca"]),
                *("-ciphersuites", f"{CHACHA}:{AES128}", "-brief"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            raw, _ = listener.accept()
            raw.settimeout(STEP)
            with server.wrap_socket(raw, server_side=True) as tls:
                cipher = tls.cipher()
                assert cipher is not None and cipher[0] == CHACHA
        finally:
            out, _ = client.communicate(timeout=STEP)
    assert CHACHA.encode() in out, out


@needs_openssl
def test_an_enchufe_client_asks_openssl_s_server_for_aes128(pem: dict[str, str]) -> None:
    """``openssl s_server`` follows the client's order (it has no server preference): the
    client's own order is what picks AES-128 there."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            "openssl",
            "s_server",
            "-accept",
            f"127.0.0.1:{port}",
            "-cert",
            pem["server"],
            "-naccept",
            "1",
            "-brief",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        client = _tls.client_context(TLSParams(ca=pem["ca"]))
        deadline = time.monotonic() + STEP
        while True:
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=STEP)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and server.poll() is None, (
                    "openssl s_server did not listen"
                )
                time.sleep(0.05)
        with client.wrap_socket(raw, server_hostname="localhost") as tls:
            cipher = tls.cipher()
            assert cipher is not None and cipher[0] == AES128
    finally:
        server.kill()
        server.communicate(timeout=STEP)


def test_a_policy_without_aes128_is_kept(tmp_path: Path) -> None:
    """A system policy (OpenSSL's configuration file) that allows AES-256 only: enchufe's
    contexts do not add AES-128 back, and still work."""
    conf = tmp_path / "openssl.cnf"
    conf.write_text(
        textwrap.dedent(f"""\
        openssl_conf = init
        [init]
        ssl_conf = ssl
        [ssl]
        system_default = tls
        [tls]
        Ciphersuites = {AES256}
        """)
    )
    code = textwrap.dedent("""\
        import ssl
        from enchufe import _tls, _tls_suites, _tls_verify
        from enchufe.tlsparams import TLSParams
        client = _tls.client_context(TLSParams(insecure=True))
        server, _ = _tls.server_context(TLSParams(cert_auto=True), "localhost")
        for context in (client, server):
            names = [c["name"] for c in context.get_ciphers() if c.get("protocol") == "TLSv1.3"]
            print(",".join(names), _tls_suites.prefer_aes128(context))
    """)
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "OPENSSL_CONF": str(conf)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{AES256} False", f"{AES256} False"]

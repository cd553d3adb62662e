"""Who is trusted, on every API flavour: verification on by default, pins, mutual TLS, and the
peers that do not speak TLS at all (each refusal asserted by its reason and its words)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import warnings
from typing import Any

import pytest

import enchufe
import enchufe.aio
from enchufe import AddressError, NetworkError, _tls_verify
from enchufe._tls import environment
from enchufe._tlsstream import client_context
from enchufe.errors import InsecureTLSWarning, TLSRefused
from enchufe.tlsparams import parse_query
from tests.conformance.conftest import IO_TIMEOUT, SyncApi
from tests.conftest import Peer
from tests.tls.conftest import addresses, client_of, tls_connected

pytestmark = pytest.mark.timeout(60)


def refused_client(api: Any, listen_address: str, query: str) -> tuple[TLSRefused, Exception | None]:
    """Connect a client that the handshake refuses: (the client's error, the server's, if any)."""
    with api.listen(listen_address) as listener:
        target = client_of(listener.address, query)

        def serve() -> Exception | None:
            with listener.accept() as server:
                try:
                    server.handshake()
                except NetworkError as exc:
                    return exc
                # TLS 1.3: the server may finish before the client refuses it; it then sees EOF.
                server.set_timeout(IO_TIMEOUT)
                try:
                    server.recv()
                except NetworkError as exc:
                    return exc
                return None

        peer = Peer(serve)
        with pytest.raises(TLSRefused) as info:
            api.connect(target, timeout=IO_TIMEOUT)
        return info.value, peer.result()


def test_verification_is_on_by_default_a_self_signed_server_is_refused(api: Any) -> None:
    error, _ = refused_client(api, "tls://127.0.0.1:0?cert=auto", "")
    assert error.reason == "self-signed"
    assert "ca=" in str(error) and "pin=" in str(error)


def test_a_server_of_an_unknown_ca_is_refused(api: Any, sock_dir: str, pem: dict[str, str]) -> None:
    listen_address, _ = addresses("tls4", sock_dir, pem)
    error, _ = refused_client(api, listen_address, "")  # the system store knows no trustme CA
    assert error.reason == "untrusted"
    error, _ = refused_client(api, listen_address, f"ca={pem['other_ca']}")
    assert error.reason == "untrusted"


def test_the_server_hears_that_the_client_refused_its_certificate(
    api: Any, sock_dir: str, pem: dict[str, str]
) -> None:
    """The client's alert, in the server's words: its own certificate, not the client's."""
    listen_address, _ = addresses("tls4", sock_dir, pem)
    _, server_error = refused_client(api, listen_address, f"ca={pem['other_ca']}")
    assert isinstance(server_error, TLSRefused), server_error
    line = str(server_error)
    assert server_error.reason == "untrusted", line
    assert line == "the client does not trust the CA of this server's certificate", line


def test_a_name_the_certificate_does_not_have_is_refused(
    api: Any, sock_dir: str, pem: dict[str, str]
) -> None:
    listen_address, _ = addresses("tls+unix-abstract", sock_dir, pem)
    error, _ = refused_client(api, listen_address, f"ca={pem['ca']}&sni=other.example")
    assert error.reason == "name-mismatch" and "other.example" in str(error)


def test_cert_auto_and_its_pin_need_no_files(api: Any, sock_dir: str) -> None:
    with api.listen("tls://127.0.0.1:0?cert=auto") as listener:
        pin = listener.tls_pin
        assert pin is not None and pin.startswith("sha256:") and len(pin) == 7 + 64
        client = Peer(lambda: api.connect(client_of(listener.address, f"pin={pin}"), timeout=IO_TIMEOUT))
        with listener.accept() as server:
            server.handshake()
            conn = client.result()
        with conn:
            conn.set_timeout(IO_TIMEOUT)
            assert conn.tls is not None and conn.tls.peer is not None and conn.tls.peer.pin == pin


def test_a_wrong_pin_is_refused(api: Any) -> None:
    error, _ = refused_client(api, "tls://127.0.0.1:0?cert=auto", "pin=sha256:" + "ab" * 32)
    assert error.reason == "pin-mismatch" and "sha256:" + "ab" * 32 in str(error)


@pytest.mark.parametrize("kind", ["tls4", "tls+unix"])
def test_mutual_tls_accepts_a_client_certificate_of_the_ca(
    api: Any, kind: str, sock_dir: str, pem: dict[str, str]
) -> None:
    listen_address, query = addresses(kind, sock_dir, pem, f"client-ca={pem['ca']}&allow-cn=alice")
    with tls_connected(api, listen_address, f"{query}&cert={pem['client']}") as (_, client, server):
        assert server.tls.peer is not None and server.tls.peer.common_name == "alice"
        client.send_all(b"hi")
        assert server.recv_exactly(2) == b"hi"


def test_mutual_tls_refuses_a_client_without_a_certificate(
    api: Any, sock_dir: str, pem: dict[str, str]
) -> None:
    listen_address, query = addresses("tls4", sock_dir, pem, f"client-ca={pem['ca']}")
    with api.listen(listen_address) as listener:
        target = client_of(listener.address, query)
        client = Peer(lambda: api.connect(target, timeout=IO_TIMEOUT))
        with listener.accept() as server, pytest.raises(TLSRefused) as info:
            server.handshake()
        assert info.value.reason == "client-certificate-missing"
        # TLS 1.3: the client's handshake ends before the server checks; it learns at its first read.
        try:
            conn = client.result()
        except TLSRefused as exc:
            assert exc.reason in ("client-certificate-missing", "closed")
        else:
            with conn, pytest.raises(TLSRefused) as late:
                conn.set_timeout(IO_TIMEOUT)
                conn.recv()
            assert late.value.reason == "client-certificate-missing"


@pytest.mark.parametrize("callback", [True, False], ids=["told-by-an-alert", "where-openssl-cannot-be-asked"])
def test_mutual_tls_refuses_a_client_not_allowed(
    api: Any, sock_dir: str, pem: dict[str, str], monkeypatch: pytest.MonkeyPatch, callback: bool
) -> None:
    """Through OpenSSL's verification callback the refusal is made inside the handshake, and
    the client is told by an alert (bad_certificate).  Without it (another Python, a static
    OpenSSL), the check after the handshake still refuses, only without an alert."""
    if not callback:
        monkeypatch.setattr(_tls_verify, "_libraries", [None])
    listen_address, query = addresses("tls4", sock_dir, pem, f"client-ca={pem['ca']}&allow-cn=bob")
    with api.listen(listen_address) as listener:
        target = client_of(listener.address, f"{query}&cert={pem['client']}")
        client = Peer(lambda: api.connect(target, timeout=IO_TIMEOUT))
        with listener.accept() as server:
            with pytest.raises(TLSRefused) as info:
                server.handshake()
            assert info.value.reason == "not-allowed" and "CN=bob" in str(info.value)
            assert info.value.after_handshake is not callback
            # A later use raises the same refusal.
            with pytest.raises(TLSRefused):
                server.recv()
        # What the client learns: in the handshake, or at its first read (TLS 1.3).
        try:
            conn = client.result()
        except NetworkError as exc:
            told = exc
        else:
            with conn, pytest.raises(NetworkError) as late:
                conn.set_timeout(IO_TIMEOUT)
                conn.recv()
            told = late.value
    if callback:
        assert isinstance(told, TLSRefused) and told.reason == "client-certificate-refused", told
        assert "refused this client's certificate" in str(told)
    else:
        assert not isinstance(told, TLSRefused), told  # the server closed without a word


def test_mutual_tls_refuses_a_client_of_another_ca_in_the_servers_words(
    api: Any, sock_dir: str, pem: dict[str, str]
) -> None:
    """OpenSSL's verdict on a client's chain is worded for the server: it names the client's
    certificate and client-ca, not "the server's chain" and ca=."""
    listen_address, query = addresses("tls4", sock_dir, pem, f"client-ca={pem['other_ca']}")
    with api.listen(listen_address) as listener:
        target = client_of(listener.address, f"{query}&cert={pem['client']}")
        client = Peer(lambda: api.connect(target, timeout=IO_TIMEOUT))
        with listener.accept() as server, pytest.raises(TLSRefused) as info:
            server.handshake()
        with contextlib.suppress(Exception):
            client.result().close()
    line = str(info.value)
    assert info.value.reason == "client-certificate-refused", line
    assert "client's certificate" in line and "client-ca" in line, line
    assert "server's" not in line and "ca=FILE" not in line, line


def test_a_plain_client_on_a_tls_listener_is_named_by_what_it_sent(api: Any, pem: dict[str, str]) -> None:
    with api.listen(f"tls://127.0.0.1:0?cert={pem['server']}") as listener:
        port = listener.address.port
        with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as plain:
            plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
            with listener.accept() as server, pytest.raises(TLSRefused) as info:
                server.handshake()
    assert info.value.reason == "not-tls"
    assert "GET / HTTP/1.0" in str(info.value)


@pytest.mark.parametrize("banner", [b"SSH-2.0-OpenSSH_9.2\r\n", b"220 smtp.example ESMTP\r\n"])
def test_a_tls_client_on_a_plain_server_says_what_it_sent(
    api: Any, pem: dict[str, str], banner: bytes
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as plain:
        port = plain.getsockname()[1]

        def serve() -> None:
            conn, _ = plain.accept()
            with conn:
                conn.sendall(banner)
                conn.settimeout(IO_TIMEOUT)
                while conn.recv(65536):
                    pass

        peer = Peer(serve)
        with pytest.raises(TLSRefused) as info:
            api.connect(f"tls://127.0.0.1:{port}?ca={pem['ca']}", timeout=IO_TIMEOUT)
        peer.result()
    assert info.value.reason == "not-tls"
    assert banner.decode().strip() in str(info.value)


def test_a_server_that_never_answers_the_handshake_times_out(api: Any, pem: dict[str, str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        with pytest.raises(NetworkError, match=r"handshake.*did not finish within 0\.3 s") as info:
            api.connect(f"tls://127.0.0.1:{port}?ca={pem['ca']}&handshake-timeout=0.3", timeout=IO_TIMEOUT)
        assert info.value.action == "handshake"


def test_client_contexts_are_made_once_and_remade_when_a_file_changes(
    pem: dict[str, str], sock_dir: str
) -> None:
    """Loading a store costs more than a handshake: a client context is reused while its files
    stay the same, and a rotated ``ca=`` file is read again (a server of the old CA is refused)."""
    ca = os.path.join(sock_dir, "rotating-ca.pem")
    shutil.copy(pem["ca"], ca)
    params = parse_query(f"ca={ca}")
    first = client_context(params)
    assert client_context(params) is first
    assert client_context(parse_query("")) is client_context(parse_query(""))
    listen_address, _ = addresses("tls4", sock_dir, pem)
    shutil.copy(pem["other_ca"], ca + ".new")
    os.replace(ca + ".new", ca)  # rotated: a new file in its place
    assert client_context(params) is not first
    error, _ = refused_client(SyncApi(), listen_address, f"ca={ca}")
    assert error.reason == "untrusted"


def test_reload_tls_serves_new_clients_with_the_new_certificate(
    api: Any, sock_dir: str, pem: dict[str, str], tmp_path: Any
) -> None:
    """The certificate file is replaced by one of another CA and reloaded: a client of the old CA
    is now refused, one of the new CA accepted; a broken file is refused and changes nothing."""
    import trustme

    new_ca = trustme.CA()
    new_ca_file = str(tmp_path / "new-ca.pem")
    new_ca.cert_pem.write_to_path(new_ca_file)
    cert = os.path.join(sock_dir, "rotated.pem")
    shutil.copy(pem["server"], cert)
    with api.listen(f"tls://127.0.0.1:0?cert={cert}") as listener:

        def handshake_with(query: str) -> None:
            target = client_of(listener.address, query)
            client = Peer(lambda: api.connect(target, timeout=IO_TIMEOUT))
            with listener.accept() as server, contextlib.suppress(NetworkError):
                server.handshake()
            client.result().close()

        handshake_with(f"ca={pem['ca']}")
        new_ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(cert)
        handshake_with(f"ca={pem['ca']}")  # not reloaded yet: the old certificate still serves
        listener.reload_tls()
        with pytest.raises(TLSRefused) as info:
            handshake_with(f"ca={pem['ca']}")
        assert info.value.reason == "untrusted"
        handshake_with(f"ca={new_ca_file}")
        with open(cert, "w") as broken:
            broken.write("not PEM\n")
        with pytest.raises(AddressError, match="cert="):
            listener.reload_tls()
        handshake_with(f"ca={new_ca_file}")


def test_the_exec_environment_of_a_mutual_tls_connection(sock_dir: str, pem: dict[str, str]) -> None:
    """What an ``exec:`` child of a TLS listener is told: version, cipher, ALPN, and the client
    certificate's CN, SANs and pin."""
    listen_address, query = addresses("tls4", sock_dir, pem, f"client-ca={pem['ca']}&alpn=x-test")
    client_query = f"{query}&cert={pem['client']}&alpn=x-test"
    with tls_connected(SyncApi(), listen_address, client_query) as (_, client, server):
        env = environment(server.tls)
        plain = environment(client.tls)
    assert env["ENCHUFE_TLS_VERSION"] == "TLSv1.3" and env["ENCHUFE_TLS_CIPHER"].startswith("TLS_")
    assert env["ENCHUFE_TLS_ALPN"] == "x-test"
    assert env["ENCHUFE_TLS_PEER_CN"] == "alice"
    assert env["ENCHUFE_TLS_PEER_SAN"] == "DNS:alice.example"
    assert env["ENCHUFE_TLS_PEER_PIN"].startswith("sha256:") and len(env["ENCHUFE_TLS_PEER_PIN"]) == 71
    assert "ENCHUFE_TLS_PEER_CN" in plain  # the client sees the server's certificate the same way


def test_an_insecure_client_warns_at_every_connection_sync_and_asyncio() -> None:
    """``insecure`` verifies nothing: the library says so (InsecureTLSWarning, a warning a
    program can silence or make an error) at every connection, from either API; a verified
    connection says nothing."""
    with enchufe.listen("tls://127.0.0.1:0?cert=auto") as listener:

        def serve_one() -> None:
            with listener.accept() as conn:
                conn.set_timeout(IO_TIMEOUT)
                conn.send_all(conn.recv_exactly(2))

        insecure = client_of(listener.address, "insecure")
        pinned = client_of(listener.address, f"pin={listener.tls_pin}")

        def sync_connect(target: str) -> None:
            server = Peer(serve_one)
            with enchufe.connect(target, timeout=IO_TIMEOUT) as conn:
                conn.send_all(b"ok")
                assert conn.recv_exactly(2) == b"ok"
            server.result()

        def aio_connect(target: str) -> None:
            async def one() -> None:
                stream = await enchufe.aio.connect(target, timeout=IO_TIMEOUT)
                async with stream:
                    await stream.send_all(b"ok")
                    assert await stream.recv_exactly(2) == b"ok"

            server = Peer(serve_one)
            asyncio.run(one())
            server.result()

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for connect in (sync_connect, aio_connect, sync_connect):
                connect(insecure)
            connect(pinned)
    said = [w for w in caught if issubclass(w.category, InsecureTLSWarning)]
    assert len(said) == 3, [str(w.message) for w in caught]
    assert "is not verified" in str(said[0].message)

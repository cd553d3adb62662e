"""``--trace`` narration of TLS: what the handshake offers, the peer's certificate, how it was
verified, what was agreed, and close_notify sent, received or missing."""

from __future__ import annotations

import contextlib
import socket

import pytest

import enchufe
from enchufe.errors import TLSRefused, TLSTruncated
from tests.conformance.conftest import IO_TIMEOUT
from tests.conftest import Peer

pytestmark = pytest.mark.timeout(60)


def tls_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if "tls fd" in line]


def test_a_handshake_and_a_half_close_are_narrated(trace_lines: list[str], pem: dict[str, str]) -> None:
    with enchufe.listen(f"tls://127.0.0.1:0?cert={pem['server']}&alpn=h2") as listener:
        port = listener.address.port  # type: ignore[union-attr]
        client = Peer(
            lambda: enchufe.connect(f"tls://localhost:{port}?ca={pem['ca']}&alpn=h2", timeout=IO_TIMEOUT)
        )
        with listener.accept() as server:
            server.set_timeout(IO_TIMEOUT)
            server.handshake()
            with client.result() as conn:
                conn.set_timeout(IO_TIMEOUT)
                conn.shutdown_write()
                assert server.recv() == b""
                server.shutdown_write()
                assert conn.recv() == b""
    text = "\n".join(tls_lines(trace_lines))
    assert "handshake as client: ClientHello TLS 1.2-1.3, SNI localhost, ALPN offered h2" in text
    assert "handshake as server: TLS 1.2-1.3, ALPN accepted h2, no client certificate" in text
    assert "peer certificate: subject " in text and "SANs DNS:localhost,IP:127.0.0.1" in text
    assert "pin sha256:" in text and "valid 2000-01-01" in text
    assert f"verification: chain verified against ca={pem['ca']}, name localhost" in text
    assert "agreed: TLSv1.3, " in text and "ALPN h2, new session" in text
    assert text.count("close_notify sent") == 2 and text.count("close_notify received") == 2


def test_a_refusal_and_a_truncation_are_narrated(trace_lines: list[str], pem: dict[str, str]) -> None:
    with enchufe.listen("tls://127.0.0.1:0?cert=auto") as listener:
        port = listener.address.port  # type: ignore[union-attr]

        def refused() -> None:
            with listener.accept() as conn, contextlib.suppress(enchufe.NetworkError):
                conn.handshake()

        server = Peer(refused)
        with pytest.raises(TLSRefused):
            enchufe.connect(f"tls://127.0.0.1:{port}", timeout=IO_TIMEOUT)
        server.result()
        client = Peer(
            lambda: enchufe.connect(f"tls://127.0.0.1:{port}?pin={listener.tls_pin}", timeout=IO_TIMEOUT)
        )
        with listener.accept() as accepted:
            accepted.handshake()
            with client.result() as conn:
                accepted.socket.shutdown(socket.SHUT_WR)
                with pytest.raises(TLSTruncated):
                    conn.recv()
    text = "\n".join(tls_lines(trace_lines))
    assert "handshake refused (self-signed): the server's certificate is self-signed" in text
    assert "verification: the server's key matches the pin (no CA checked)" in text
    assert "the connection ended without close_notify: truncated" in text


@pytest.mark.parametrize(("host", "narrated", "sent"), [
    ("127.0.0.1", "no SNI (127.0.0.1 is an IP address: none is sent for one)", None),
    ("localhost", "SNI localhost", "localhost"),
])  # fmt: skip
def test_the_narrated_sni_is_what_the_client_hello_carries(
    host: str, narrated: str, sent: str | None, trace_lines: list[str]
) -> None:
    """An IP literal is verified against the certificate but never sent as SNI (RFC 6066): the
    narration says what the ClientHello, read by a plain listener, really has."""
    from enchufe.clienthello import ClientHello, HelloReader

    with socket.create_server(("127.0.0.1", 0)) as plain:
        port = plain.getsockname()[1]
        client = Peer(lambda: enchufe.connect(f"tls://{host}:{port}?insecure", timeout=IO_TIMEOUT))
        conn, _ = plain.accept()
        with conn:
            conn.settimeout(IO_TIMEOUT)
            reader = HelloReader()
            event = reader.feed(conn.recv(65536))
            for _ in range(10):
                if isinstance(event, ClientHello):
                    break
                event = reader.feed(conn.recv(65536))
        with contextlib.suppress(enchufe.NetworkError):
            client.result()
    assert isinstance(event, ClientHello)
    assert event.server_name == sent
    text = "\n".join(tls_lines(trace_lines))
    assert f"ClientHello TLS 1.2-1.3, {narrated}, ALPN offered none" in text

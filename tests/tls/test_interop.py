"""enchufe's TLS against programs we did not write: ``openssl s_server``/``s_client`` and socat's
``OPENSSL-LISTEN:``/``OPENSSL:``, both ways on loopback, a few MiB each way checked by SHA-256,
with close_notify as EOF and answers that come after it (half-close).

Skipped when a tool is missing, failed instead when ``CI`` is set (CI installs both)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

import enchufe
from tests.conftest import Peer
from tests.interop.conftest import WAIT, _missing, new_where, spawn, wait_bound
from tests.tls.conftest import read_to_eof

pytestmark = pytest.mark.timeout(90)

SIZE = 16 << 20  # what issue 10 asks of every interop transfer


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        _missing(f"{name} is not installed")
    assert path is not None
    return path


def socat_with_openssl() -> str:
    path = tool("socat")
    version = subprocess.run([path, "-V"], capture_output=True, timeout=WAIT, check=False).stdout
    if b"WITH_OPENSSL 1" not in version:
        _missing("this socat is built without OpenSSL")
    return path


def sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def port_of(address: object) -> int:
    assert isinstance(address, enchufe.InetAddress)
    return address.port


def test_enchufe_client_uploads_to_openssl_s_server(sock_dir: str, pem: dict[str, str]) -> None:
    """16 MiB to s_server (which writes them to its stdout), then close_notify: s_server closes
    with its own close_notify (a clean EOF here), and its stdout holds every byte."""
    where = new_where("tcp4", sock_dir)
    argv = [tool("openssl"), "s_server", "-accept", f"127.0.0.1:{where.port}", "-cert", pem["server"]]
    payload = os.urandom(SIZE)
    with spawn([*argv, "-quiet", "-naccept", "1"], "s_server") as server:  # stdin stays open
        wait_bound(where, server)
        with enchufe.connect(f"tls://127.0.0.1:{where.port}?ca={pem['ca']}", timeout=WAIT) as conn:
            conn.set_timeout(WAIT)
            assert conn.tls is not None and conn.tls.version == "TLSv1.3"
            conn.send_all(payload)
            conn.shutdown_write()
            assert conn.recv() == b""
        server.wait_stdout(SIZE)
        assert server.finish() == 0
        assert sha(server.out) == sha(payload)


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_openssl_s_server_answers_after_enchufe_closes_its_write_side(
    sock_dir: str, pem: dict[str, str], version: str
) -> None:
    """s_server -WWW: the request, then close_notify; the 16 MiB file still comes, then EOF
    (TLS 1.3, and TLS 1.2, the oldest enchufe speaks)."""
    folder = os.path.join(sock_dir, "www")
    os.mkdir(folder)
    body = os.urandom(SIZE)
    with open(os.path.join(folder, "file.bin"), "wb") as file:
        file.write(body)
    where = new_where("tcp4", sock_dir)
    openssl = tool("openssl")
    command = (
        f"cd {folder} && exec {openssl} s_server -accept 127.0.0.1:{where.port} "
        f"-cert {pem['server']} -quiet -naccept 1 -WWW {version}"
    )
    with spawn(["sh", "-c", command], "s_server") as server:
        wait_bound(where, server)
        with enchufe.connect(f"tls://127.0.0.1:{where.port}?ca={pem['ca']}", timeout=WAIT) as conn:
            conn.set_timeout(WAIT)
            assert conn.tls is not None and conn.tls.version == "TLSv1." + version[-1]
            conn.send_all(b"GET /file.bin HTTP/1.0\r\n\r\n")
            conn.shutdown_write()
            head, _, got = read_to_eof(conn).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200")
        assert sha(got) == sha(body) and len(got) == len(body)


def test_openssl_s_client_against_an_enchufe_listener(sock_dir: str, pem: dict[str, str]) -> None:
    """s_client sends 16 MiB (its stdin); the server reads them, answers with their SHA-256 and
    16 MiB more, then close_notify, and s_client ends at that close_notify."""
    upload, download = os.urandom(SIZE), os.urandom(SIZE)
    with enchufe.listen(f"tls://127.0.0.1:0?cert={pem['server']}") as listener:
        port = port_of(listener.address)
        argv = [tool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", pem["ca"]]
        argv += ["-servername", "localhost", "-verify_return_error", "-quiet"]

        def serve() -> tuple[str, bytes]:
            with listener.accept() as conn:
                conn.set_timeout(WAIT)
                got = conn.recv_exactly(SIZE)
                conn.send_all(sha(got).encode() + b"\n" + download)
                conn.shutdown_write()
                assert conn.tls is not None
                return conn.tls.version, conn.recv()

        peer = Peer(serve)
        with spawn(argv, "s_client") as client:
            client.feed(upload)
            client.wait_stdout(65 + SIZE, timeout=WAIT * 3)
            assert client.finish() == 0
            version, after = peer.result(WAIT)
            assert bytes(client.out[:65]) == sha(upload).encode() + b"\n"
            assert sha(client.out[65:]) == sha(download)
    assert version == "TLSv1.3"
    assert after == b""  # s_client's close_notify as it leaves: a clean EOF, not truncation


def test_socat_client_half_closes_and_hears_the_answer(sock_dir: str, pem: dict[str, str]) -> None:
    """socat OPENSSL: sends 16 MiB then close_notify at its stdin's EOF; the enchufe server reads
    to that EOF and only then answers (the digest), which socat still prints."""
    payload = os.urandom(SIZE)
    with enchufe.listen(f"tls://127.0.0.1:0?cert={pem['server']}") as listener:
        port = port_of(listener.address)

        def serve() -> None:
            with listener.accept() as conn:
                conn.set_timeout(WAIT)
                digest = sha(read_to_eof(conn))
                conn.send_all(digest.encode() + b"\n")
                conn.shutdown_write()

        peer = Peer(serve)
        target = f"OPENSSL:127.0.0.1:{port},cafile={pem['ca']},commonname=localhost"
        with spawn([socat_with_openssl(), "-t", "5", "-", target], "socat") as client:
            client.feed(payload)
            client.wait_stdout(65, timeout=WAIT * 3)
            assert client.finish() == 0
        peer.result(WAIT)
    assert bytes(client.out) == sha(payload).encode() + b"\n"


def test_enchufe_client_half_closes_to_socat_openssl_listen(sock_dir: str, pem: dict[str, str]) -> None:
    """socat OPENSSL-LISTEN: in front of sha256sum: 16 MiB, close_notify, and the digest still
    comes back (socat passes the EOF on to the child and waits for its answer)."""
    where = new_where("tcp4", sock_dir)
    listen = f"OPENSSL-LISTEN:{where.port},bind=127.0.0.1,reuseaddr,cert={pem['server']},verify=0"
    payload = os.urandom(SIZE)
    with spawn([socat_with_openssl(), "-t", "5", listen, "SYSTEM:sha256sum"], "socat") as server:
        wait_bound(where, server)
        with enchufe.connect(f"tls://127.0.0.1:{where.port}?ca={pem['ca']}", timeout=WAIT) as conn:
            conn.set_timeout(WAIT)
            conn.send_all(payload)
            conn.shutdown_write()
            answer = read_to_eof(conn)
        server.finish()
    assert answer.split()[0].decode() == sha(payload)


def test_a_killed_openssl_peer_is_an_error_never_an_eof(sock_dir: str, pem: dict[str, str]) -> None:
    """s_client killed mid-stream (no close_notify): the server's read fails (TLSTruncated at a
    FIN, or a reset when the kernel answered with RST: both are ConnectionReset), never ``b""``."""
    with enchufe.listen(f"tls://127.0.0.1:0?cert={pem['server']}") as listener:
        port = port_of(listener.address)
        argv = [tool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", pem["ca"]]
        with spawn([*argv, "-servername", "localhost", "-quiet"], "s_client") as client:
            client.write(b"some bytes\n")
            with listener.accept() as conn:
                conn.set_timeout(WAIT)
                assert conn.recv_exactly(11) == b"some bytes\n"
                client.popen.kill()
                with pytest.raises(enchufe.ConnectionReset):
                    conn.recv()


def test_an_openssl_server_that_accepts_no_offered_alpn_protocol_is_said_so(
    sock_dir: str, pem: dict[str, str]
) -> None:
    """s_server -alpn h2 answers a client offering only foo with the no_application_protocol
    alert; this Python names no reason for it (``exc.reason`` is None), and the line is still
    the one for ALPN, not OpenSSL's text."""
    where = new_where("tcp4", sock_dir)
    argv = [tool("openssl"), "s_server", "-accept", f"127.0.0.1:{where.port}", "-cert", pem["server"]]
    with spawn([*argv, "-alpn", "h2", "-quiet", "-naccept", "1"], "s_server") as server:
        wait_bound(where, server)
        with pytest.raises(enchufe.errors.TLSRefused) as refused:
            enchufe.connect(f"tls://127.0.0.1:{where.port}?ca={pem['ca']}&alpn=foo", timeout=WAIT)
        server.finish()
    assert refused.value.reason == "alpn", refused.value
    assert str(refused.value) == "the server accepts none of the ALPN protocols offered"

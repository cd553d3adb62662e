"""The relay as a TLS gateway, against programs we did not write: ``openssl s_client`` (session
resumption, mutual TLS), ``curl`` (HTTPS to ``python3 -m http.server`` behind a terminating
relay) and ``stunnel4`` (a TLS server behind an originating relay, a TLS client in front of a
terminating one); and whether kernel TLS is on offer (``--stats``).

The relay runs as ``enchufe relay`` (a process, as users run it); each program is skipped when
missing, or fails the test when ``CI`` is set (CI installs them).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import enchufe
from enchufe.relay.tlsfiles import ULP_FILE, ktls_status
from tests.interop.conftest import Proc, Where, spawn, wait_bound

from ._gateway import NAME, Gateway, digest_back, free_port, gateway, tool
from .conftest import STEP, RelayProc, StartRelay, Target, dial, echo, final_summary

__all__ = ["gateway"]  # the fixture, for pytest


def _port(relay: RelayProc) -> int:
    address = enchufe.parse(relay.address)
    assert isinstance(address, enchufe.InetAddress), address
    return address.port


def _s_client(relay: RelayProc, gateway: Gateway, *options: str, stdin: bytes = b"") -> str:
    """``openssl s_client`` against the relay, trusting the CA: its stdout and stderr."""
    connect = ("-connect", f"127.0.0.1:{_port(relay)}", "-servername", NAME)
    result = subprocess.run(
        [tool("openssl"), "s_client", *connect, "-CAfile", gateway.ca, "-verify_return_error", *options],
        input=stdin,
        capture_output=True,
        timeout=STEP,
        check=False,
    )
    return (result.stdout + result.stderr).decode(errors="replace")


def _terminating(gateway: Gateway) -> str:
    return f"tls://127.0.0.1:0?cert={gateway.server}"


def _greet(conn: socket.socket) -> None:
    """Say ``hello`` and EOF at once, then read to the client's EOF (s_client waits with -ign_eof)."""
    conn.sendall(b"hello\n")
    _greet_done(conn)


def _echo_line(conn: socket.socket) -> None:
    """Send back the first line, EOF, then read to the client's EOF."""
    line = b""
    while not line.endswith(b"\n") and (data := conn.recv(1)):
        line += data
    conn.sendall(line)
    _greet_done(conn)


def _greet_done(conn: socket.socket) -> None:
    conn.shutdown(socket.SHUT_WR)
    while conn.recv(65536):
        pass


# ----------------------------------------------------------------------------- resumption


def test_openssl_resumes_its_session_and_the_relay_counts_it(
    gateway: Gateway, start_relay: StartRelay
) -> None:
    session = str(gateway.folder / "session.pem")
    with Target("tcp://127.0.0.1:0", _greet) as target:
        relay = start_relay(
            "--json", "--stats=60", f"tls://127.0.0.1:0?cert={gateway.server}", target.address
        )
        relay.listening()
        first = _s_client(relay, gateway, "-sess_out", session, "-ign_eof")
        assert "New, TLSv1.3" in first and "hello" in first, first
        again = _s_client(relay, gateway, "-sess_in", session, "-ign_eof")
        assert "Reused, TLSv1.3" in again and "hello" in again, again
        older = _s_client(relay, gateway, "-tls1_2", "-ign_eof")
        assert "New, TLSv1.2" in older, older
        summary = final_summary(relay)
    assert summary["tls_handshakes"] == 3 and summary["tls_resumed"] == 1, summary
    assert summary["tls_versions"] == {"TLSv1.3": 2, "TLSv1.2": 1}, summary
    closes = [event for event in relay.json_events() if event["event"] == "close"]
    assert [event["tls_resumed"] for event in closes] == [False, True, False], closes


def test_the_stats_line_says_resumed_and_versions(gateway: Gateway, start_relay: StartRelay) -> None:
    session = str(gateway.folder / "session-line.pem")
    with Target("tcp://127.0.0.1:0", _greet) as target:
        relay = start_relay("--stats=60", f"tls://127.0.0.1:0?cert={gateway.server}", target.address)
        relay.listening()
        assert "New, TLSv1.3" in _s_client(relay, gateway, "-sess_out", session, "-ign_eof")
        assert "Reused, TLSv1.3" in _s_client(relay, gateway, "-sess_in", session, "-ign_eof")
        relay.signal()
        assert relay.finish() == 0, relay.err
    assert re.search(r"TLS 2 handshakes, 0 failed, 1 resumed; agreed 2 TLSv1\.3; ktls: ", relay.err), (
        relay.err
    )


def test_a_reload_ends_the_resumption_of_older_sessions(gateway: Gateway, start_relay: StartRelay) -> None:
    """A ticket is sealed with keys of the contexts a reload replaces: an old one is refused
    (a full handshake instead), so that a changed ``client-ca`` is never bypassed."""
    session = str(gateway.folder / "session-reload.pem")
    with Target("tcp://127.0.0.1:0", _greet) as target:
        relay = start_relay(f"tls://127.0.0.1:0?cert={gateway.server}", target.address)
        relay.listening()
        assert "New, TLSv1.3" in _s_client(relay, gateway, "-sess_out", session, "-ign_eof")
        relay.signal(signal.SIGUSR1)
        relay.wait_err(r"^SIGUSR1: TLS files reloaded")
        again = _s_client(relay, gateway, "-sess_in", session, "-ign_eof")
        assert "New, TLSv1.3" in again and "hello" in again, again


# ----------------------------------------------------------------------------- mutual TLS


def _mtls_relay(gateway: Gateway, start_relay: StartRelay, target: Target) -> RelayProc:
    listen = f"tls://127.0.0.1:0?cert={gateway.server}&client-ca={gateway.ca}&allow-san=DNS:alice.example"
    relay = start_relay("--json", "-v", listen, target.address)
    relay.listening()
    return relay


def test_openssl_with_an_allowed_certificate_is_relayed_and_resumes(
    gateway: Gateway, start_relay: StartRelay
) -> None:
    session = str(gateway.folder / "alice-session.pem")
    identity = ("-cert", gateway.cert("alice"), "-key", gateway.key("alice"))
    with Target("tcp://127.0.0.1:0", _echo_line) as target:
        relay = _mtls_relay(gateway, start_relay, target)
        first = _s_client(relay, gateway, *identity, "-sess_out", session, "-quiet", stdin=b"ping\n")
        assert first.count("ping") == 1, first  # the echo (-quiet: nothing else of ours)
        again = _s_client(relay, gateway, "-sess_in", session, "-ign_eof", stdin=b"pong\n")
        assert "Reused, TLSv1.3" in again and "pong" in again, again
        relay.wait_err(r'"event": "close".*"id": 2')
        accepts = [event for event in relay.json_events() if event["event"] == "accept"]
    assert [event["tls_resumed"] for event in accepts] == [False, True], accepts
    for event in accepts:  # the resumed session keeps the verified identity
        assert event["peer_subject"].startswith("CN=alice,") and "DNS:alice.example" in event["peer_san"]


@pytest.mark.parametrize(
    ("who", "reason", "alert"),
    [
        (None, "client-certificate-missing", "alert certificate required"),
        ("mallory", "client-certificate-refused", "alert unknown ca"),
        ("bob", "not-allowed", "alert bad certificate"),
    ],
    ids=["no-certificate", "another-ca", "not-allowed"],
)
def test_openssl_refused_is_told_and_the_relay_says_why_and_who(
    gateway: Gateway, start_relay: StartRelay, who: str | None, reason: str, alert: str
) -> None:
    """Every refusal is made inside the handshake and told by an alert: OpenSSL's of a missing
    or untrusted certificate, and the relay's own of one ``allow-san`` does not allow (through
    OpenSSL's verification callback), which gets no data nor a session ticket either."""
    session = str(gateway.folder / f"refused-{who}.pem")
    identity = ("-cert", gateway.cert(who), "-key", gateway.key(who)) if who else ()
    with Target("tcp://127.0.0.1:0", echo) as target:
        relay = _mtls_relay(gateway, start_relay, target)
        seen = _s_client(relay, gateway, *identity, "-sess_out", session, "-ign_eof", stdin=b"ping\n")
        assert alert in seen, seen
        assert "ping" not in seen.split("---")[-1], seen  # no echo came back
        relay.wait_err(r'"event": "tls-failed"')
        (notice,) = [event for event in relay.json_events() if event["event"] == "tls-failed"]
        assert notice["reason"] == reason and notice["side"] == "client", notice
        if who == "bob":
            assert "DNS:bob.example" in notice["error"] and "CN=bob" in notice["error"], notice
            assert "New Session Ticket" not in seen, seen
        assert target.accepted == 0


# ----------------------------------------------------------------------------- curl


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[int, bytes]]:
    """``python3 -m http.server`` on 127.0.0.1 serving a folder with ``file.bin`` (1 MiB): its
    port and the file's content."""
    folder = tmp_path / "www"
    folder.mkdir()
    content = os.urandom(1 << 20)
    (folder / "file.bin").write_bytes(content)
    port = free_port()
    argv = [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "-d", str(folder), str(port)]
    with spawn(argv, "http.server") as server:
        wait_bound(Where("tcp4", port=port), server)
        yield port, content


def test_curl_fetches_a_file_through_termination(
    gateway: Gateway, start_relay: StartRelay, http_server: tuple[int, bytes], tmp_path: Path
) -> None:
    port, content = http_server
    relay = start_relay(f"tls://127.0.0.1:0?cert={gateway.server}", f"tcp://127.0.0.1:{port}")
    relay.listening()
    out = tmp_path / "fetched.bin"
    url = f"https://{NAME}:{_port(relay)}/file.bin"
    resolve = f"{NAME}:{_port(relay)}:127.0.0.1"
    result = subprocess.run(
        [tool("curl"), "-sS", "--fail", "--cacert", gateway.ca, "--resolve", resolve, "-o", str(out), url],
        capture_output=True,
        text=True,
        timeout=STEP,
        check=False,
    )
    assert result.returncode == 0, result.stderr + relay.err
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(content).hexdigest()


# ----------------------------------------------------------------------------- stunnel


def _stunnel(folder: Path, name: str, lines: list[str]) -> Proc:
    """stunnel4 in the foreground with one service; returned once its port is bound.  At
    ``debug = 6`` it logs each close, and a reset as ``Connection reset by peer``."""
    config = folder / f"{name}.conf"
    config.write_text("\n".join(["foreground = yes", "pid =", "debug = 6", f"[{name}]", *lines, ""]))
    accept = next(line for line in lines if line.startswith("accept"))
    port = int(accept.rsplit(":", 1)[1])
    proc = Proc([tool("stunnel4", "stunnel"), str(config)], "stunnel")
    try:
        wait_bound(Where("tcp4", port=port), proc)
    except BaseException:
        proc.kill()
        raise
    return proc


def _upload(address: str, payload: bytes) -> bytes:
    """Send ``payload`` then EOF, read the answer to its EOF."""
    with dial(address) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while data := sock.recv(65536):
            answer += data
    return answer


PAYLOAD = 4 << 20


def test_stunnel_server_behind_origination(gateway: Gateway, start_relay: StartRelay, tmp_path: Path) -> None:
    """client → relay → TLS → stunnel → target: every byte, the client's EOF passed on as
    close_notify (the target's EOF), the answer back after it; stunnel sends session tickets,
    which the relay's client side reads, so its close is never a reset."""
    payload = os.urandom(PAYLOAD)
    with Target("tcp://127.0.0.1:0", digest_back) as target:
        port = free_port()
        lines = [f"accept = 127.0.0.1:{port}", f"connect = {target.address.split('//', 1)[1]}"]
        stunnel = _stunnel(tmp_path, "server", [*lines, f"cert = {gateway.server}"])
        try:
            relay = start_relay("tcp://127.0.0.1:0", f"tls://127.0.0.1:{port}?ca={gateway.ca}&sni={NAME}")
            for _ in range(2):
                answer = _upload(relay.listening(), payload)
                assert answer == f"{PAYLOAD} {hashlib.sha256(payload).hexdigest()}\n".encode(), answer
            target.wait_results(2)
            stunnel.wait_until(lambda: stunnel.err.count(b"Connection closed") == 2, "stunnel's two closes")
        finally:
            stunnel.kill()
        log = stunnel.err.decode(errors="replace")
        assert "reset by peer" not in log, log  # what stunnel says of a reset (at debug 6)


def test_stunnel_client_in_front_of_termination(
    gateway: Gateway, start_relay: StartRelay, tmp_path: Path
) -> None:
    """client → stunnel → TLS → relay → target, the relay requiring stunnel's certificate."""
    payload = os.urandom(PAYLOAD)
    with Target("tcp://127.0.0.1:0", digest_back) as target:
        listen = f"tls://127.0.0.1:0?cert={gateway.server}&client-ca={gateway.ca}&allow-cn=alice"
        relay = start_relay("--json", "-v", listen, target.address)
        relay.listening()
        port = free_port()
        lines = [
            "client = yes",
            f"accept = 127.0.0.1:{port}",
            f"connect = 127.0.0.1:{_port(relay)}",
            f"CAfile = {gateway.ca}",
            "verifyChain = yes",
            f"checkHost = {NAME}",
            f"sni = {NAME}",
            f"cert = {gateway.cert('alice')}",
            f"key = {gateway.key('alice')}",
        ]
        stunnel = _stunnel(tmp_path, "client", lines)
        try:
            answer = _upload(f"tcp://127.0.0.1:{port}", payload)
        finally:
            stunnel.kill()
        assert answer == f"{PAYLOAD} {hashlib.sha256(payload).hexdigest()}\n".encode(), (
            answer + relay.err.encode()
        )
        relay.wait_err(r'"event": "close"')
        (close,) = [event for event in relay.json_events() if event["event"] == "close"]
        assert close["reason"] == "done" and close["peer_subject"].startswith("CN=alice,"), close


# ----------------------------------------------------------------------------- kernel TLS


def _kernel_ulps() -> list[str]:
    try:
        with open(ULP_FILE) as file:
            return file.read().split()
    except OSError:
        return []


def test_stats_say_whether_kernel_tls_is_available(gateway: Gateway, start_relay: StartRelay) -> None:
    with Target("tcp://127.0.0.1:0", echo) as target:
        relay = start_relay(
            "--json", "--stats=60", f"tls://127.0.0.1:0?cert={gateway.server}", target.address
        )
        relay.listening()
        summary = final_summary(relay)
    if "tls" not in _kernel_ulps():
        assert summary["ktls"].startswith("unavailable (kernel has no tls ULP: "), summary
    elif not hasattr(ssl, "OP_ENABLE_KTLS"):
        assert "no OP_ENABLE_KTLS" in summary["ktls"], summary
    else:
        assert summary["ktls"].startswith("available"), summary


def test_a_plain_relay_says_nothing_of_kernel_tls(start_relay: StartRelay) -> None:
    with Target("tcp://127.0.0.1:0", echo) as target:
        relay = start_relay("--json", "--stats=60", "tcp://127.0.0.1:0", target.address)
        relay.listening()
        assert "ktls" not in final_summary(relay)


@pytest.mark.parametrize(
    ("ulps", "expected"),
    [
        ("mptcp\n", "unavailable (kernel has no tls ULP: {file} lists mptcp)"),
        ("", "unavailable (kernel has no tls ULP: {file} lists nothing)"),
        (None, "unavailable (cannot read {file}: No such file or directory)"),
    ],
    ids=["mptcp", "empty", "missing"],
)
def test_ktls_status_names_what_is_missing(tmp_path: Path, ulps: str | None, expected: str) -> None:
    file = tmp_path / "tcp_available_ulp"
    if ulps is not None:
        file.write_text(ulps)
    assert ktls_status(str(file)) == expected.format(file=file)


def test_ktls_status_with_the_kernels_tls_ulp(tmp_path: Path) -> None:
    file = tmp_path / "tcp_available_ulp"
    file.write_text("mptcp tls\n")
    status = ktls_status(str(file))
    if hasattr(ssl, "OP_ENABLE_KTLS"):
        assert status.startswith("available"), status
    else:
        assert status == "unavailable (the kernel has it; this Python's ssl has no OP_ENABLE_KTLS)"


def test_ktls_on_this_machine() -> None:
    """Where both the kernel and Python offer kTLS, the relay says so; elsewhere, why not."""
    ulps = _kernel_ulps()
    if "tls" not in ulps:
        pytest.skip(f"kernel has no tls ULP ({ULP_FILE} lists {' '.join(ulps) or 'nothing'})")
    if not hasattr(ssl, "OP_ENABLE_KTLS"):
        pytest.skip(f"Python {sys.version.split()[0]}'s ssl has no OP_ENABLE_KTLS")
    assert ktls_status().startswith("available")

"""TLS with the relay's other kinds of end: an ``exec:`` program or stdio behind a terminating
relay, and stdio (``-``) as the client of an originating one."""

from __future__ import annotations

import re
import subprocess

import enchufe
from tests.tls import conftest as tls_conftest
from tests.tls.conftest import client_of

from .conftest import ENCHUFE, STEP, StartRelay
from .test_tls_relay import TLSTarget, _tls_echo

#: PEM files of one trustme CA (tests/tls/conftest.py)
pem = tls_conftest.pem


def _ask(address: str, request: bytes) -> bytes:
    """Send ``request`` and close_notify over TLS; everything answered until the peer's end."""
    with enchufe.connect(address) as conn:
        conn.send_all(request)
        conn.shutdown_write()
        answer = b""
        while data := conn.recv():
            answer += data
    return answer


def test_termination_in_front_of_an_exec_program(pem: dict[str, str], start_relay: StartRelay) -> None:
    relay = start_relay(f"tls://127.0.0.1:0?cert={pem['server']}", "exec:tr a-z A-Z")
    answer = _ask(client_of(relay.listening(), f"ca={pem['ca']}"), b"hello exec\n")
    assert answer == b"HELLO EXEC\n"


def test_termination_to_stdio(pem: dict[str, str]) -> None:
    args = [*ENCHUFE, "relay", f"tls://127.0.0.1:0?cert={pem['server']}", "-"]
    with subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        try:
            assert proc.stderr is not None and proc.stdin is not None
            line = proc.stderr.readline().decode()
            while line and not line.startswith("listening on "):
                line = proc.stderr.readline().decode()
            match = re.match(r"listening on (\S+)", line)
            assert match, line
            proc.stdin.write(b"to the client\n")
            proc.stdin.close()
            answer = _ask(client_of(match.group(1), f"ca={pem['ca']}"), b"to stdout\n")
            assert proc.wait(STEP) == 0
            assert proc.stdout is not None
            out = proc.stdout.read()
        finally:
            proc.kill()
    assert answer == b"to the client\n"
    assert out == b"to stdout\n"


def _stdio_relay(target: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*ENCHUFE, "relay", "-", target], input=data, capture_output=True, timeout=STEP, check=False
    )


def test_stdio_to_an_originated_tls_target(pem: dict[str, str]) -> None:
    target = TLSTarget(f"tls://127.0.0.1:0?cert={pem['server']}", _tls_echo)
    try:
        done = _stdio_relay(f"{target.address}?ca={pem['ca']}", b"from stdin\n")
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"from stdin\n"
        refused = _stdio_relay(f"{target.address}?ca={pem['other_ca']}", b"x")
    finally:
        target.close()
    assert refused.returncode == 1
    assert refused.stdout == b""
    text = refused.stderr.decode()
    assert "TLS handshake with" in text and "Traceback" not in text, text


def test_a_program_that_stops_reading_still_has_its_answer_heard(
    pem: dict[str, str], start_relay: StartRelay
) -> None:
    # The program answers and exits without reading its stdin: what the client still sends is
    # dropped (as on the plain path), not turned into a reset that loses the answer.
    relay = start_relay(f"tls://127.0.0.1:0?cert={pem['server']}", "exec:echo bye")
    answer = _ask(client_of(relay.listening(), f"ca={pem['ca']}"), b"x" * (4 << 20))
    assert answer == b"bye\n"

"""What the relay does not do with TLS yet is refused (exit status 2, one line), never relayed as
plaintext: a ``tls://`` end relayed as plain TCP would hand the peer raw TLS records.  TLS is
terminated and originated with stream ends (sockets, stdio, exec:); not over --frame yet, and
--workers need a certificate file (cert=auto would give each worker its own pin)."""

from __future__ import annotations

import subprocess

import pytest

from enchufe.errors import UsageError
from enchufe.relay import Relay, RelayConfig

from .conftest import ENCHUFE, STEP


@pytest.mark.parametrize(
    ("args", "role"),
    [
        (("--frame", "tls://127.0.0.1:0?cert=auto", "udp://127.0.0.1:9"), "LISTEN"),
        (("--frame", "udp://127.0.0.1:0", "tls://127.0.0.1:9?insecure"), "TARGET"),
    ],
)
def test_tls_not_built_yet_is_refused_in_one_line(args: tuple[str, ...], role: str) -> None:
    done = subprocess.run(
        [*ENCHUFE, "relay", *args], capture_output=True, text=True, timeout=STEP, check=False
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert role in lines[0] and "TLS" in lines[0], lines[0]
    with pytest.raises(UsageError, match=role):
        Relay(RelayConfig(args[1], args[2], frame=True))


def test_workers_with_cert_auto_are_refused_in_one_line() -> None:
    done = subprocess.run(
        [*ENCHUFE, "relay", "--workers", "2", "tls://127.0.0.1:0?cert=auto", "tcp://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=STEP,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--workers" in lines[0] and "cert=auto" in lines[0], done.stderr

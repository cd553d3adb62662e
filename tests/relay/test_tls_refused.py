"""What the relay does not do with TLS yet is refused (exit status 2, one line), never relayed as
plaintext: a ``tls://`` end relayed as plain TCP would hand the peer raw TLS records.  TLS is
terminated and originated between two stream socket addresses; stdio and exec: are not yet."""

from __future__ import annotations

import subprocess

import pytest

from enchufe.errors import UsageError
from enchufe.relay import Relay, RelayConfig

from .conftest import ENCHUFE, STEP


@pytest.mark.parametrize(
    ("listen", "target", "role"),
    [
        ("tls://127.0.0.1:0?cert=auto", "exec:cat", "LISTEN"),
        ("tls://127.0.0.1:0?cert=auto", "-", "LISTEN"),
        ("-", "tls://127.0.0.1:9?insecure", "TARGET"),
    ],
)
def test_tls_not_built_yet_is_refused_in_one_line(listen: str, target: str, role: str) -> None:
    done = subprocess.run(
        [*ENCHUFE, "relay", listen, target], capture_output=True, text=True, timeout=STEP, check=False
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert role in lines[0] and "TLS" in lines[0], lines[0]
    with pytest.raises(UsageError, match=role):
        Relay(RelayConfig(listen, target))


def test_workers_with_a_tls_end_are_refused_in_one_line() -> None:
    done = subprocess.run(
        [*ENCHUFE, "relay", "--workers", "2", "tls://127.0.0.1:0?cert=auto", "tcp://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=STEP,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--workers" in lines[0] and "TLS" in lines[0], done.stderr

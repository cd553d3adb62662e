"""Live reload of a TLS relay's files: SIGUSR1 and ``--reload-interval``.

New handshakes get the new certificate (a new client sees its pin) while a connection made
before keeps flowing; a bad new file keeps the old ones and one line says why; with
``--workers`` the parent passes SIGUSR1 on to every worker.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import trustme

import enchufe
from enchufe.tlsinfo import spki_digest
from enchufe.tlsparams import format_pin
from tests.tls.conftest import client_of

from .conftest import ENCHUFE, STEP, StartRelay, Target, echo


class Certificates:
    """One CA, a server certificate file the relay reads, and fresh certificates to put there."""

    def __init__(self, folder: Path) -> None:
        self.ca = trustme.CA()
        self.ca_path = str(folder / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_path)
        self.path = str(folder / "server.pem")
        self.folder = folder

    def install(self, content: bytes | None = None) -> str:
        """A new certificate (or ``content``) replaces the file, as a rotation does (rename);
        the pin of the new certificate."""
        pin = ""
        if content is None:
            cert = self.ca.issue_cert("localhost", "127.0.0.1", common_name="localhost")
            content = cert.private_key_and_cert_chain_pem.bytes()
            der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
            pin = format_pin(spki_digest(der))
        temporary = str(self.folder / "server.pem.new")
        with open(temporary, "wb") as file:
            file.write(content)
        os.replace(temporary, self.path)
        return pin


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return Certificates(tmp_path)


def _pin_seen(address: str) -> str:
    """The pin of the certificate a new client is shown (its line echoed first)."""
    with enchufe.connect(address) as conn:
        conn.send_all(b"hello")
        assert conn.recv() == b"hello"
        tls = conn.tls
        assert tls is not None and tls.peer is not None
        return tls.peer.pin


def test_sigusr1_serves_a_new_certificate_and_a_bad_file_keeps_it(
    certs: Certificates, start_relay: StartRelay
) -> None:
    first = certs.install()
    with Target("tcp://127.0.0.1:0", echo) as target:
        relay = start_relay(f"tls://127.0.0.1:0?cert={certs.path}", target.address)
        address = client_of(relay.listening(), f"ca={certs.ca_path}")
        with enchufe.connect(address) as old:
            old.send_all(b"before")
            assert old.recv() == b"before"
            assert old.tls is not None and old.tls.peer is not None and old.tls.peer.pin == first
            second = certs.install()
            relay.signal(signal.SIGUSR1)
            relay.wait_err(r"^SIGUSR1: TLS files reloaded for the next handshakes: cert=\S+server\.pem$")
            assert _pin_seen(address) == second
            old.send_all(b"after")  # established before the reload: untouched
            assert old.recv() == b"after"

            certs.install(b"-----BEGIN CERTIFICATE-----\nnot a certificate\n")
            relay.signal(signal.SIGUSR1)
            line = relay.wait_err(r"^enchufe: SIGUSR1: TLS files not reloaded, the old ones stay: .*$")
            assert "server.pem" in line.group(0), line.group(0)
            assert _pin_seen(address) == second
            old.send_all(b"still")
            assert old.recv() == b"still"
        assert relay.err.count("not reloaded") == 1, relay.err
        assert relay.popen.poll() is None


def test_reload_interval_reads_a_replaced_certificate(certs: Certificates, start_relay: StartRelay) -> None:
    first = certs.install()
    with Target("tcp://127.0.0.1:0", echo) as target:
        relay = start_relay(
            "--reload-interval", "0.1", f"tls://127.0.0.1:0?cert={certs.path}", target.address
        )
        address = client_of(relay.listening(), f"ca={certs.ca_path}")
        assert _pin_seen(address) == first
        time.sleep(0.3)
        assert "TLS files" not in relay.err  # unchanged files: nothing read, nothing said
        second = certs.install()
        relay.wait_err(r"^reload-interval: TLS files reloaded for the next handshakes: cert=")
        assert _pin_seen(address) == second


def test_workers_each_reload_on_sigusr1(certs: Certificates, start_relay: StartRelay) -> None:
    certs.install()
    with Target("tcp://127.0.0.1:0", echo) as target:
        relay = start_relay("--workers", "2", f"tls://127.0.0.1:0?cert={certs.path}", target.address)
        address = client_of(relay.listening(), f"ca={certs.ca_path}")
        second = certs.install()
        relay.signal(signal.SIGUSR1)
        deadline = time.monotonic() + STEP
        while relay.err.count("TLS files reloaded") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert relay.err.count("TLS files reloaded") == 2, relay.err
        assert {_pin_seen(address) for _ in range(8)} == {second}
        assert relay.popen.poll() is None


@pytest.mark.parametrize("value", ["0", "nan", "-1"])
def test_reload_interval_out_of_range_is_one_line(value: str) -> None:
    result = subprocess.run(
        [*ENCHUFE, "relay", "--reload-interval", value, "tls://127.0.0.1:0?cert=auto", "tcp://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=STEP,
    )
    assert result.returncode == 2, result
    assert result.stderr.startswith("enchufe: invalid value for --reload-interval: "), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "0.1 ≤ S" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr

"""``enchufe relay 'tls://…?cert=auto' TARGET`` as a process, with ``openssl s_client`` as its
client: the pin on the listening line, bytes both ways, the session's clean end."""

from __future__ import annotations

import re
import select
import shutil
import subprocess

import pytest

import enchufe
from tests.tls import conftest as tls_conftest
from tests.tls.conftest import client_of

from .conftest import STEP, StartRelay, Target, echo

#: PEM files of one trustme CA (tests/tls/conftest.py)
pem = tls_conftest.pem

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def test_openssl_s_client_through_a_terminating_relay(start_relay: StartRelay) -> None:
    with Target("tcp://127.0.0.1:0", echo) as target:
        relay = start_relay("--json", "-v", "tls://127.0.0.1:0?cert=auto", target.address)
        (listening,) = [event for event in relay.json_events() if event["event"] == "listening"]
        assert listening["pin"].startswith("sha256:"), listening
        port = relay.listening().split("?", 1)[0].rsplit(":", 1)[1]
        client = subprocess.Popen(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-quiet", "-no_ign_eof"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert client.stdin is not None and client.stdout is not None
            client.stdin.write(b"hello through TLS\n")
            client.stdin.flush()
            ready, _, _ = select.select([client.stdout], [], [], STEP)
            assert ready, "no answer through the relay"
            assert client.stdout.readline() == b"hello through TLS\n"
            client.stdin.close()
            assert client.wait(STEP) == 0
        finally:
            client.kill()
            client.wait(STEP)
            if client.stdout is not None:
                client.stdout.close()
        relay.wait_err(r'"event": "close".*"reason": "done".*"to_client": 18')


def test_the_listening_line_shows_the_pin_of_cert_auto(start_relay: StartRelay) -> None:
    with Target("tcp://127.0.0.1:0", echo) as target:
        relay = start_relay("tls://127.0.0.1:0?cert=auto", target.address)
        assert relay.listening().startswith("tls://127.0.0.1:"), relay.err
        assert re.search(r"^listening on tls://\S+ pin sha256:[0-9a-f]{64}$", relay.err, re.MULTILINE), (
            relay.err
        )


def test_workers_terminate_tls_with_a_certificate_file(pem: dict[str, str], start_relay: StartRelay) -> None:
    with Target("tcp://127.0.0.1:0", echo) as target:
        relay = start_relay("--workers", "2", f"tls://127.0.0.1:0?cert={pem['server']}", target.address)
        address = client_of(relay.listening(), f"ca={pem['ca']}")
        assert address.startswith("tls://127.0.0.1:"), relay.err
        for index in range(6):
            with enchufe.connect(address) as conn:
                conn.send_all(b"client %d" % index)
                assert conn.recv() == b"client %d" % index

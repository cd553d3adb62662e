"""A TLS client refused by ``listen --exec`` is said once, naming the client, with or without
``-v`` (with ``-v`` the library's own line used to be followed by a second copy)."""

from __future__ import annotations

import pytest

from tests.cli.conftest import Spawn, run

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("verbose", [(), ("-v",)], ids=["quiet", "verbose"])
def test_a_refused_tls_client_is_said_once(spawn: Spawn, verbose: tuple[str, ...]) -> None:
    server = spawn("listen", "-k", *verbose, "tls://127.0.0.1:0?cert=auto", "--exec", "cat", stdin=False)
    line = server.wait_err(r"^listening on (tls://\S+)\?cert=auto pin (sha256:[0-9a-f]{64})$")
    address, pin = line.group(1), line.group(2)
    client = run("connect", f"{address}?sni=example.test", input=b"hi\n")
    assert client.returncode == 1
    server.wait_err(r"^enchufe: TLS handshake with tcp://127\.0\.0\.1:\d+ failed: .*does not trust")
    # A second client, accepted and served, proves the first one's lines are all out.
    served = run("connect", f"{address}?pin={pin}", input=b"ping\n")
    assert served.stdout == b"ping\n", served.stderr
    assert server.err.count("does not trust") == 1, server.err
    assert server.terminate() == 0

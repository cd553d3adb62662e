"""SIGUSR1 asks a TLS server to reload its files (SPEC, Signals); a plain server has nothing to
reload, and says so instead of dying of the signal's default action: ``listen`` (one client or
``-k``, with and without --exec), ``echo``, ``chat``, and the library's ``serve()``."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from tests.cli.conftest import STEP, Spawn

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    "args",
    [
        ("echo", "tcp://127.0.0.1:0"),
        ("chat", "tcp://127.0.0.1:0"),
        ("echo", "udp://127.0.0.1:0"),
        ("listen", "-k", "tcp://127.0.0.1:0"),
        ("listen", "tcp://127.0.0.1:0"),
        ("listen", "-k", "tcp://127.0.0.1:0", "--exec", "cat"),
    ],
    ids=["echo", "chat", "echo-udp", "listen-k", "listen", "listen-exec"],
)
def test_a_plain_server_survives_sigusr1(spawn: Spawn, args: tuple[str, ...]) -> None:
    server = spawn(*args, "-v", stdin=False) if "listen" in args else spawn(*args, stdin=False)
    address = server.listening()
    server.popen.send_signal(signal.SIGUSR1)
    server.wait_err(r"^SIGUSR1: nothing to reload \(not a TLS listener\)$")
    assert server.running()
    if address.startswith("tcp://") and "chat" not in args:
        host, port = address[len("tcp://") :].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=STEP) as client:
            client.sendall(b"still here")
            client.shutdown(socket.SHUT_WR)
            if "listen" not in args or "--exec" in args:
                assert client.recv(100) == b"still here"
        if args == ("listen", "tcp://127.0.0.1:0"):
            # A one-client listen ends by itself once that client is done; a SIGTERM sent
            # while it is still finishing would (rightly) count as a cut connection.
            assert server.finish() == 0
            return
        if "listen" in args:
            server.wait_err(r"closed tcp://")  # the connection is over before SIGTERM comes
    assert server.terminate() == 0


def test_the_library_serve_survives_sigusr1() -> None:
    script = textwrap.dedent(
        """
        import logging, os, signal, sys, threading
        from enchufe.sync.serve import serve

        logging.basicConfig(level=logging.INFO, format="%(message)s")

        def ready(address):
            os.kill(os.getpid(), signal.SIGUSR1)
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()

        stats = serve("tcp://127.0.0.1:0", lambda conn: None, ready=ready)
        print("returned", stats.accepted)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=STEP)
    assert result.returncode == 0, result.stderr
    assert "SIGUSR1: nothing to reload (not a TLS server)" in result.stderr
    assert result.stdout == "returned 0\n"

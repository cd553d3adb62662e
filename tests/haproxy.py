"""HAProxy (Debian's /usr/sbin/haproxy) in front of a server under test, in the foreground.

``with HAProxy(backend="127.0.0.1:PORT", send_proxy="send-proxy-v2") as proxy:`` writes a TCP
configuration in a temporary folder, runs ``haproxy -f CFG -db`` and waits until its frontend
accepts; ``proxy.address`` is where clients connect.  Tests skip where HAProxy is not installed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)

#: Seconds HAProxy may take to start accepting.
START_TIMEOUT = 10.0

CONFIG = """\
global
    maxconn 100

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend clients
    bind 127.0.0.1:{port}
    default_backend servers

backend servers
    server enchufe {backend} {send_proxy}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listening(port: int) -> bool:
    """Something listens on 127.0.0.1:``port`` (a line of /proc/net/tcp in state 0A)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        return any(f.split()[1] == wanted and f.split()[3] == "0A" for f in list(table)[1:])


class HAProxy:
    """One HAProxy process relaying TCP to ``backend`` with ``send_proxy`` on its server line."""

    def __init__(self, backend: str, send_proxy: str) -> None:
        if HAPROXY is None:
            pytest.skip("HAProxy is not installed (Debian: apt-get install haproxy)")
        self.port = free_port()
        self.config = CONFIG.format(port=self.port, backend=backend, send_proxy=send_proxy)
        self._dir = tempfile.TemporaryDirectory(prefix="haproxy-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def __enter__(self) -> HAProxy:
        cfg = Path(self._dir.name) / "haproxy.cfg"
        cfg.write_text(self.config)
        assert HAPROXY is not None
        self.proc = subprocess.Popen(
            [HAPROXY, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + START_TIMEOUT
        # Watched in /proc, not by connecting: a probe would reach the server under test.
        while not _listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                self.__exit__()
                raise AssertionError(f"HAProxy did not start: {err}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stderr is not None:
                self.proc.stderr.close()
        self._dir.cleanup()

    def client(self, source_ip: str = "127.0.0.5") -> socket.socket:
        """A client connected through HAProxy from ``source_ip`` (any 127/8 address works on
        Linux), so that the real client's address differs from HAProxy's own."""
        sock = socket.socket()
        sock.settimeout(10)
        sock.bind((source_ip, 0))
        sock.connect(self.address)
        return sock

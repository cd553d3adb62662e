"""The TLS gateway tests' kit: certificates from one trustme CA, the programs on the other side
(openssl, curl, stunnel4) and targets that answer with a digest.

* :func:`tool`: the path of a program; missing, it skips the test with the reason, or fails it
  when ``CI`` is set (CI installs openssl, curl and stunnel4), as ``tests/interop`` does.
* :class:`Gateway`: PEM files: ``ca``; ``server`` (``gateway.test``, ``localhost``,
  ``127.0.0.1``, with its key); ``alice`` (allowed: ``DNS:alice.example``) and ``bob`` (the same
  CA, not allowed), each as ``NAME.crt`` and ``NAME.key`` for ``openssl -cert/-key``;
  ``mallory`` (another CA).
* :func:`digest_back`: a target that reads to the EOF, then answers ``BYTES SHA256`` and closes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
from pathlib import Path

import pytest
import trustme

#: The server certificate's name, which clients reach through ``--resolve`` or ``sni=``.
NAME = "gateway.test"


def tool(*names: str) -> str:
    """The first of ``names`` on PATH (``stunnel4``, ``stunnel``); skipped or failed if none."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    reason = f"{names[0]} is not installed"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, and CI installs it)")
    pytest.skip(reason)


class Gateway:
    """The PEM files of one CA's server and client certificates, in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        ca, other = trustme.CA(), trustme.CA()
        self.ca = self._write("ca.pem", ca.cert_pem.bytes())
        server = ca.issue_cert(NAME, "localhost", "127.0.0.1", common_name=NAME)
        self.server = self._write("server.pem", server.private_key_and_cert_chain_pem.bytes())
        for who, issuer in (("alice", ca), ("bob", ca), ("mallory", other)):
            cert = issuer.issue_cert(f"{who}.example", common_name=who)
            self._write(f"{who}.crt", cert.cert_chain_pems[0].bytes())
            self._write(f"{who}.key", cert.private_key_pem.bytes())

    def _write(self, name: str, content: bytes) -> str:
        path = self.folder / name
        path.write_bytes(content)
        return str(path)

    def cert(self, who: str) -> str:
        return str(self.folder / f"{who}.crt")

    def key(self, who: str) -> str:
        return str(self.folder / f"{who}.key")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    return Gateway(tmp_path_factory.mktemp("gateway"))


def digest_back(conn: socket.socket) -> tuple[int, str]:
    """Read to the EOF, answer ``BYTES SHA256\\n`` and close: what arrived, and its digest."""
    hashed = hashlib.sha256()
    count = 0
    while data := conn.recv(256 * 1024):
        hashed.update(data)
        count += len(data)
    conn.sendall(f"{count} {hashed.hexdigest()}\n".encode())
    conn.shutdown(socket.SHUT_WR)
    return count, hashed.hexdigest()


def free_port() -> int:
    """A loopback port free a moment ago, for programs that cannot report the one they got."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port

"""Fixtures for TLS over every stream kind, with every API flavour.

* ``pem``: PEM files from one trustme CA: ``ca``, ``server`` (localhost, 127.0.0.1, ::1, with
  its key), ``client`` (a client certificate, CN alice), ``other_ca`` (a CA nobody trusts).
* ``tls_kind``: ``tls4``, ``tls6``, ``tls+unix``, ``tls+unix-abstract``.
* :func:`addresses`: (listen, connect) address strings of one kind, the client trusting the CA.
* ``api``: ``sync``, ``asyncio``, ``uvloop`` (from the conformance suite): the same blocking calls.
* :func:`tls_connected`: both ends of one TLS connection, the handshake done on both.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme

from tests.conformance import conftest as conformance
from tests.conformance.conftest import IO_TIMEOUT
from tests.conftest import Peer, abstract_name, needs_ipv6
from tests.servers import conftest as servers

# The fixtures of the conformance suite (``api``) and of the server tests, for tests/tls.
api = conformance.api
serve = servers.serve
serve_log = servers.serve_log

TLS_KINDS = ("tls4", "tls6", "tls+unix", "tls+unix-abstract")


def tls_kind_params() -> list[Any]:
    return [pytest.param(k, id=k, marks=[needs_ipv6] if k == "tls6" else []) for k in TLS_KINDS]


@pytest.fixture(scope="session")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("tls-pem")
    ca = trustme.CA()
    other = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "::1", common_name="localhost")
    client = ca.issue_cert("alice.example", common_name="alice")
    paths = {name: str(folder / f"{name}.pem") for name in ("ca", "server", "client", "other_ca")}
    ca.cert_pem.write_to_path(paths["ca"])
    other.cert_pem.write_to_path(paths["other_ca"])
    server.private_key_and_cert_chain_pem.write_to_path(paths["server"])
    client.private_key_and_cert_chain_pem.write_to_path(paths["client"])
    return paths


@pytest.fixture(params=tls_kind_params())
def tls_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def base(kind: str, sock_dir: str) -> str:
    """Where to listen, without any TLS setting: ``tls4://127.0.0.1:0``, ``tls+unix:@name`` …"""
    if kind == "tls4":
        return "tls4://127.0.0.1:0"
    if kind == "tls6":
        return "tls6://[::1]:0"
    if kind == "tls+unix":
        return f"tls+unix://{os.path.join(sock_dir, f'tls-{abstract_name()[-6:]}.sock')}"
    return f"tls+unix:@{abstract_name()}"


def client_of(listener_address: Any, query: str) -> str:
    """The client's address for a listener: its host and port (or name), with ``query``."""
    text = str(listener_address).split("?", 1)[0]
    return f"{text}?{query}" if query else text


def addresses(kind: str, sock_dir: str, pem: dict[str, str], server_query: str = "") -> tuple[str, str]:
    """(listen address, client query): the server with its certificate, the client trusting the CA
    (a unix client names the server: sni=localhost)."""
    server = f"{base(kind, sock_dir)}?cert={pem['server']}" + (f"&{server_query}" if server_query else "")
    client = f"ca={pem['ca']}" + ("&sni=localhost" if "unix" in kind else "")
    return server, client


@contextlib.contextmanager
def tls_connected(
    api: Any, listen_address: str, client_query: str, *, handshake: bool = True
) -> Iterator[tuple[Any, Any, Any]]:
    """(listener, client, server), the client connected (its handshake done) and the server's
    handshake done too (unless ``handshake=False``)."""
    with api.listen(listen_address) as listener:
        target = client_of(listener.address, client_query)
        client = Peer(lambda: api.connect(target, timeout=IO_TIMEOUT))
        with listener.accept() as server:
            server.set_timeout(IO_TIMEOUT)
            if handshake:
                server.handshake()
            with client.result() as conn:
                conn.set_timeout(IO_TIMEOUT)
                yield listener, conn, server


def both(first: Callable[[], Any], second: Callable[[], Any]) -> tuple[Any, Any]:
    """Run two blocking steps at once; both results (the first exception raised, if any)."""
    other = Peer(second)
    result = first()
    return result, other.result(IO_TIMEOUT * 3)


def read_to_eof(conn: Any, limit: int = 100_000) -> bytes:
    """Everything ``conn`` receives until EOF (a bounded number of reads)."""
    chunks: list[bytes] = []
    for _ in range(limit):
        chunk = conn.recv()
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
    raise AssertionError(f"no EOF after {limit} reads")

"""Name resolution under a forced family: ``tcp4://localhost`` is looked up in IPv4 (it used to
be taken for a literal and never looked up), and a name without an address of the forced family
says which family was asked."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

import enchufe
from enchufe import _resolve
from enchufe.address import InetAddress, parse
from enchufe.errors import NameResolutionError

STEP = 10.0


def _inet(text: str) -> InetAddress:
    address = parse(text)
    assert isinstance(address, InetAddress)
    return address


def _has_ipv4_localhost() -> bool:
    try:
        return bool(socket.getaddrinfo("localhost", 9, socket.AF_INET))
    except socket.gaierror:
        return False


def _has_ipv6_localhost() -> bool:
    try:
        return bool(socket.getaddrinfo("localhost", 9, socket.AF_INET6))
    except socket.gaierror:
        return False


needs_v4_localhost = pytest.mark.skipif(
    not _has_ipv4_localhost(), reason="localhost has no IPv4 address here"
)


@needs_v4_localhost
@pytest.mark.parametrize("scheme", ["tcp4", "udp4", "tls4"])
def test_a_name_under_a_forced_ipv4_family_is_looked_up(scheme: str) -> None:
    targets = _resolve.resolve(_inet(f"{scheme}://localhost:9"), passive=False)
    assert targets and all(t.family == socket.AF_INET for t in targets)
    assert ("127.0.0.1", 9) in [t.sockaddr for t in targets]


@needs_v4_localhost
def test_connect_tcp4_by_name_reaches_the_server() -> None:
    with enchufe.listen("tcp4://127.0.0.1:0") as listener:
        port = listener.address.port  # type: ignore[union-attr]
        with enchufe.connect(f"tcp4://localhost:{port}", timeout=STEP) as client, listener.accept() as server:
            client.send_all(b"by name")
            client.shutdown_write()
            assert server.recv_exactly(7) == b"by name"


@pytest.mark.skipif(_has_ipv6_localhost(), reason="localhost has an IPv6 address here")
def test_a_name_without_an_address_of_the_forced_family_says_which_was_asked() -> None:
    with pytest.raises(
        NameResolutionError, match=r"as IPv6 in tcp6://localhost:9: .*use tcp:// for either family"
    ):
        _resolve.resolve(_inet("tcp6://localhost:9"), passive=False)


def test_the_cli_exits_1_naming_the_family() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "enchufe", "connect", "tcp4://no-such-host.invalid:9"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("enchufe: cannot resolve 'no-such-host.invalid' as IPv4 in tcp4://")
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1


@needs_v4_localhost
def test_a_literal_is_still_never_looked_up(trace_lines: list[str]) -> None:
    """Under a forced family too: a literal is only parsed (its result would be the same either
    way, so the trace tells: a lookup is narrated as getaddrinfo, a literal is not)."""
    targets = _resolve.resolve(_inet("tcp4://127.0.0.1:9"), passive=False)
    assert [t.sockaddr for t in targets] == [("127.0.0.1", 9)]
    assert not any("getaddrinfo" in line for line in trace_lines)
    _resolve.resolve(_inet("tcp4://localhost:9"), passive=False)
    assert any(line.startswith("getaddrinfo(localhost, 9)") for line in trace_lines), trace_lines

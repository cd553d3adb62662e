"""--max-conns, --allow/--deny (with IPv4-mapped peers), --allow-uid/--allow-gid (relay as a process)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import abstract_name, needs_ipv6

from .conftest import STEP, RelayProc, StartRelay, Target, dial, echo, ping, turned_away, wait_until


def _refused(relay: RelayProc, count: int) -> list[dict[str, Any]]:
    """The relay's ``refused`` events once ``count`` are there (its stderr is read as it comes:
    a refusal the client saw may not be read yet), and no more than ``count``."""

    def events() -> list[dict[str, Any]]:
        return [e for e in relay.json_events() if e["event"] == "refused"]

    wait_until(lambda: len(events()) >= count, f"{count} refused events")
    found = events()
    assert len(found) == count, found
    return found


def test_max_conns_turns_extra_clients_away_at_once_and_reuses_a_freed_slot(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with Target(make_address("tcp4"), echo) as target:
        relay = start_relay(make_address("tcp4"), target.address, "--max-conns", "2", "--json")
        first, second = dial(relay.address), dial(relay.address)
        try:
            assert ping(first) and ping(second)  # both relayed: the limit is reached
            waited = turned_away(relay.address)
            assert waited is not None  # closed within turned_away's 5 s
            relay.wait_err(r'"event": "refused".*"reason": "max-conns"')
            first.close()

            def slot_reused() -> bool:
                try:
                    again = dial(relay.address)
                except ConnectionResetError:  # still full: reset before connect() returned
                    return False
                with again:
                    return ping(again)

            wait_until(slot_reused, "a client served in the freed slot", timeout=5)
            assert ping(second)
        finally:
            first.close()
            second.close()


def _served(address: str, family: int | None = None, host: str | None = None) -> bool:
    """Connect (optionally as ``family`` to ``host``) and see whether the echo comes back."""
    if host is not None:
        port = int(address.rsplit(":", 1)[1])
        sock = socket.socket(family or socket.AF_INET6, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.connect((host, port))
        except OSError:
            sock.close()
            return False
    else:
        try:
            sock = dial(address)
        except ConnectionResetError:  # reset before connect() returned: turned away
            return False
    with sock:
        return ping(sock)


@needs_ipv6
def test_deny_matches_ipv4_mapped_peers_of_a_dual_stack_listener(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    """--deny 127.0.0.1 refuses 127.0.0.1 whether it arrives as IPv4 or as ::ffff:127.0.0.1."""
    with Target(make_address("tcp4"), echo) as target:
        relay = start_relay("tcp://:0", target.address, "--deny", "127.0.0.1/32", "--json")
        port = relay.address.rsplit(":", 1)[1]
        assert not _served(f"tcp4://127.0.0.1:{port}")
        assert not _served(relay.address, socket.AF_INET6, "::ffff:127.0.0.1")
        assert _served(f"tcp6://[::1]:{port}")
        refused = _refused(relay, 2)
        assert all(e["reason"] == "denied" for e in refused)
        assert refused[1]["peer"].startswith("tcp://127.0.0.1:")  # reported as users think of it


def test_an_ipv4_mapped_rule_judges_the_peers_of_an_ipv4_listener(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    """--deny ::ffff:127.0.0.1 is 127.0.0.1 written the IPv6 way: an IPv4 listener refuses it."""
    with Target(make_address("tcp4"), echo) as target:
        relay = start_relay(make_address("tcp4"), target.address, "--deny", "::ffff:127.0.0.1")
        assert not _served(relay.address)
        relay = start_relay(make_address("tcp4"), target.address, "--allow", "::ffff:127.0.0.0/104")
        assert _served(relay.address)


@needs_ipv6
def test_allow_admits_ipv4_mapped_peers_and_nothing_else(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with Target(make_address("tcp4"), echo) as target:
        relay = start_relay("tcp://:0", target.address, "--allow", "127.0.0.0/8")
        port = relay.address.rsplit(":", 1)[1]
        assert _served(f"tcp4://127.0.0.1:{port}")
        assert _served(relay.address, socket.AF_INET6, "::ffff:127.0.0.1")
        assert not _served(f"tcp6://[::1]:{port}")


def test_a_denied_peer_is_closed_before_any_byte_is_read(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with Target(make_address("tcp4"), echo) as target:
        relay = start_relay(make_address("tcp4"), target.address, "--deny", "127.0.0.0/8", "--json")
        assert turned_away(relay.address, payload=b"secret") is not None
        relay.wait_err(r'"event": "refused"')
        assert target.accepted == 0
        assert not [e for e in relay.json_events() if e["event"] == "accept"]


NOBODY = 65534

_CLIENT = textwrap.dedent(
    """
    import socket, sys
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(b"\\0" + sys.argv[1].encode())
    try:
        sock.sendall(b"ping")
        print("served" if sock.recv(4) == b"ping" else "closed")
    except OSError:
        print("closed")
    """
)


def _world_executable(path: str) -> bool:
    """Can any user run ``path`` (every folder on the way searchable, the file executable)?"""
    real = os.path.realpath(path)
    folder = os.path.dirname(real)
    while True:
        if not os.stat(folder).st_mode & 0o001:
            return False
        if folder == "/":
            break
        folder = os.path.dirname(folder)
    return bool(os.stat(real).st_mode & 0o001)


def _python_for_nobody() -> str | None:
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and _world_executable(candidate):
            return candidate
    return None


def _as_nobody(name: str) -> str:
    """Connect to the abstract name as uid/gid 65534 in a child process: "served" or "closed"."""
    python = _python_for_nobody()
    if python is None:
        pytest.skip("no Python interpreter that uid 65534 may run (sys.executable is in a private folder)")
    done = subprocess.run(
        [python, "-I", "-c", _CLIENT, name],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        timeout=STEP,
        check=False,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="running a client as another uid needs root")
def test_allow_uid_lets_only_that_user_through(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    with Target(make_address("tcp4"), echo) as target:
        name = abstract_name()
        relay = start_relay(f"unix:@{name}", target.address, "--allow-uid", "0", "--json")
        assert _as_nobody(name) == "closed"
        assert _served(relay.address)  # the test itself runs as root
        refused = _refused(relay, 1)
        assert "uid 65534" in refused[0]["detail"]

        other = abstract_name()
        start_relay(f"unix:@{other}", target.address, "--allow-uid", str(NOBODY), "--allow-gid", "12345")
        assert _as_nobody(other) == "served"

        by_group = abstract_name()
        start_relay(f"unix:@{by_group}", target.address, "--allow-uid", "0", "--allow-gid", str(NOBODY))
        assert _as_nobody(by_group) == "served"

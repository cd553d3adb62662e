"""What a peer controls cannot hurt the relay: names with NUL bytes and newlines reach a child's
environment and the log escaped; a child that cannot start ends only its own session, with
every descriptor closed."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import sys
from collections.abc import Callable

import pytest

from enchufe import ExecAddress
from enchufe.relay.children import Children
from enchufe.relay.engine import Loop
from enchufe.relay.events import Recorder

from .conftest import STEP, StartRelay, dial, ping, turned_away, wait_until

PY = shlex.quote(sys.executable)

#: A child that first says who its peer is (one line), then echoes.
WHO_THEN_CAT = 'exec:sh -c \'printf "%s\\n" "$ENCHUFE_PEER_ADDR"; exec cat\''

#: An abstract name a hostile local client may bind: a NUL (no environment can hold it), a
#: newline and what looks like a line of the relay's own log.
EVIL = b"evil\0name\nenchufe: FORGED closed everything"
EVIL_SHOWN = "@evil\\x00name\\nenchufe: FORGED closed everything"


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def first_line(sock: socket.socket) -> bytes:
    line = b""
    for _ in range(4096):
        byte = sock.recv(1)
        if not byte or byte == b"\n":
            return line
        line += byte
    raise AssertionError(f"no end of line after {line!r}")


def bound_client(name: bytes, address: str) -> socket.socket:
    """A unix stream client bound to the abstract ``name`` before it connects."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(STEP)
        sock.bind(b"\0" + name)
        sock.connect(address.removeprefix("unix://"))
    except BaseException:
        sock.close()
        raise
    return sock


def test_a_peer_name_with_nul_and_newline_reaches_the_child_escaped_and_the_relay_serves_on(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    relay = start_relay(make_address("unix"), WHO_THEN_CAT, "-v")
    with dial(relay.address) as first:
        assert first_line(first) == b""  # an unnamed client
        assert ping(first)
        before = fd_count(relay.pid)
        with bound_client(EVIL, relay.address) as evil:
            assert first_line(evil).decode() == EVIL_SHOWN
            assert ping(evil)
        assert ping(first)  # the first session went on meanwhile
        with dial(relay.address) as later:
            assert first_line(later) == b""
            assert ping(later)
        # The sessions of the evil and the later client are gone, children reaped: only the
        # first session's descriptors are left.
        wait_until(lambda: fd_count(relay.pid) == before, "the relay's descriptors going back")
        assert ping(first)
    relay.wait_err(r"closed #3 ")
    assert relay.popen.poll() is None
    lines = relay.err.splitlines()
    assert not any(line.startswith("enchufe: FORGED") for line in lines), relay.err
    assert any(EVIL_SHOWN in line for line in lines), relay.err
    assert "Traceback" not in relay.err


def test_a_child_that_cannot_start_ends_its_session_only_and_is_logged(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    """No -v: the failure is still said, once per client; the client is turned away, the
    relay's descriptors are back where they were, and a healthy session is unharmed."""
    relay = start_relay(make_address("unix"), "exec:no-such-program-here")
    before = fd_count(relay.pid)
    for _ in range(3):
        assert turned_away(relay.address) is not None
    relay.wait_err(r"^enchufe: cannot run exec:no-such-program-here: no such file.*$")
    wait_until(lambda: fd_count(relay.pid) == before, "the relay's descriptors going back")
    assert relay.popen.poll() is None
    relay.signal()
    assert relay.finish() == 0


def test_spawn_closes_what_it_made_when_the_os_refuses_the_environment() -> None:
    """posix_spawnp refuses a NUL in the environment with ValueError: the four pipe ends made
    for the child are closed again before the error goes up."""
    loop = Loop()
    children = Children(loop, Recorder())
    try:
        before = fd_count(os.getpid())
        for _ in range(3):
            with pytest.raises(ValueError):
                children.spawn(ExecAddress(("cat",)), {"BAD": "a\0b"}, session_id=1)
        with pytest.raises(OSError):
            children.spawn(ExecAddress(("no-such-program-here",)), {}, session_id=2)
        assert fd_count(os.getpid()) == before
        assert not children.running
    finally:
        children.close()
        loop.close()


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is not installed")
def test_running_out_of_descriptors_for_children_ends_only_the_sessions_that_wanted_one(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    """Each exec: session needs a socket, two pipe ends and a pidfd: with 40 descriptors the
    relay soon cannot start a child (or accept).  Those clients are turned away, said so, and
    the relay serves the sessions it has, then new ones once descriptors are free again."""
    relay = start_relay(
        make_address("tcp4"), "exec:cat", "--max-conns", "1000", prefix=("prlimit", "--nofile=40:40")
    )
    clients: list[socket.socket] = []
    turned = 0
    try:
        for _ in range(20):
            try:
                sock = dial(relay.address)
            except ConnectionResetError:
                turned += 1
                continue
            clients.append(sock)
            if not ping(sock):
                turned += 1
        served = [sock for sock in clients if ping(sock)]
        assert len(served) >= 3 and turned >= 3, (len(served), turned)
    finally:
        for sock in clients:
            sock.close()
    relay.wait_err(r"^enchufe: (cannot run exec:cat: too many open files|cannot accept: )")
    assert relay.popen.poll() is None, relay.err
    assert "Traceback" not in relay.err

    def serves_again() -> bool:
        try:
            sock = dial(relay.address)
        except ConnectionResetError:
            return False
        with sock:
            return ping(sock)

    wait_until(serves_again, "the relay serving again")

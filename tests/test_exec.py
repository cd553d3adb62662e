"""``exec:`` endpoints: a real program behind a real listener, one child per connection.

The server is ``enchufe.aio.serve.Server`` with :func:`enchufe.exec.run_exec` as handler,
running on asyncio or uvloop in a background thread; the clients are plain sync connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import shlex
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import enchufe
import enchufe.aio as aio
from enchufe import Credentials, EnchufeError, ExecAddress, InetAddress, UnixAddress, parse
from enchufe.exec import child_environment, run_exec
from tests.conftest import HAS_IPV6, Peer, connectable
from tests.servers.conftest import IO_TIMEOUT, Running, start, wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_flavour(request: pytest.FixtureRequest) -> str:
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return str(request.param)


class ExecServer:
    """A listener whose every connection runs ``program``; the children's exit statuses."""

    def __init__(self, running: Running, statuses: list[Any]) -> None:
        self.running = running
        self.statuses = statuses

    @property
    def address(self) -> str:
        return self.running.address

    def connect(self) -> enchufe.Connection:
        conn = enchufe.connect(self.address, timeout=IO_TIMEOUT)
        conn.set_timeout(IO_TIMEOUT)
        return conn

    def status(self, index: int = 0) -> Any:
        """The exit status of the ``index``-th child, once its connection is over."""
        wait_until(lambda: len(self.statuses) > index, what="the connection ending")
        return self.statuses[index]


@pytest.fixture
def exec_server(loop_flavour: str, make_address: Callable[[str], str]) -> Iterator[Callable[..., ExecServer]]:
    servers: list[Running] = []

    def starter(program: ExecAddress | str, kind: str = "tcp4") -> ExecServer:
        target = parse(program) if isinstance(program, str) else program
        assert isinstance(target, ExecAddress)
        statuses: list[Any] = []

        async def handler(conn: aio.Connection) -> None:
            try:
                statuses.append(await run_exec(conn, target))
            except BaseException as exc:
                statuses.append(exc)
                raise

        running = start(loop_flavour, make_address(kind), handler)
        servers.append(running)
        return ExecServer(running, statuses)

    try:
        yield starter
    finally:
        for running in servers:
            running.stop()


def read_to_eof(conn: enchufe.Connection) -> bytes:
    chunks: list[bytes] = []
    for _ in range(10_000):
        chunk = conn.recv()
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
    raise AssertionError("no EOF")


def gone(pid: int) -> bool:
    """The process is gone and reaped (no /proc entry, not even a zombie)."""
    return not os.path.exists(f"/proc/{pid}")


def stopped(pid: int) -> bool:
    """The process is gone or a zombie: for a child's child, reparented as it exits to a PID 1
    that may never reap it (in a container)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# --- data through a child -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp4", "unix"])
def test_tr_through_with_half_close(exec_server: Callable[..., ExecServer], kind: str) -> None:
    server = exec_server("exec:tr a-z A-Z", kind)
    with server.connect() as conn:
        conn.send_all(b"hello, world\n")
        conn.send_all(b"second line without newline")
        conn.shutdown_write()  # the child's stdin ends, tr finishes, its stdout ends: our EOF
        assert read_to_eof(conn) == b"HELLO, WORLD\nSECOND LINE WITHOUT NEWLINE"
    assert server.status() == 0


def test_large_stream_through_cat(exec_server: Callable[..., ExecServer]) -> None:
    server = exec_server("exec:cat")
    payload = os.urandom(4 * 1024 * 1024)
    with server.connect() as conn:

        def send() -> None:
            conn.send_all(payload)
            conn.shutdown_write()

        sender = Peer(send)
        assert read_to_eof(conn) == payload
        sender.result()
    assert server.status() == 0


def test_explicit_argv_and_child_eof_first(exec_server: Callable[..., ExecServer]) -> None:
    """``sh -c SCRIPT`` given as argv, not a shell string: the script reads one line and
    exits; its stdout EOF reaches us while our side is still open."""
    server = exec_server(ExecAddress(("sh", "-c", 'read x; echo "got: $x"')))
    with server.connect() as conn:
        conn.send_all(b"$(id) `whoami` ; exit 3\n")
        assert read_to_eof(conn) == b"got: $(id) `whoami` ; exit 3\n"
        # Our write side is still open: more bytes go nowhere, without an error.
        conn.send_all(b"after the child left\n")
        conn.shutdown_write()
    assert server.status() == 0


def test_peer_data_is_never_interpreted(exec_server: Callable[..., ExecServer], sock_dir: str) -> None:
    victim = os.path.join(sock_dir, "victim")
    marker = os.path.join(sock_dir, "pwned")
    open(victim, "w").close()
    server = exec_server("exec:cat")
    payload = f"$(touch {marker}); rm -rf {victim}; `touch {marker}` | sh\n".encode()
    with server.connect() as conn:
        conn.send_all(payload)
        conn.shutdown_write()
        assert read_to_eof(conn) == payload
    assert server.status() == 0
    assert not os.path.exists(marker)
    assert os.path.exists(victim)


def test_argv_is_split_like_a_shell_without_running_one(exec_server: Callable[..., ExecServer]) -> None:
    server = exec_server("exec:printf '%s|' 'two words' $HOME ';' '*'")
    with server.connect() as conn:
        conn.shutdown_write()
        assert read_to_eof(conn) == b"two words|$HOME|;|*|"
    assert server.status() == 0


# --- environment ----------------------------------------------------------------------------------


def environment_of(conn: enchufe.Connection) -> dict[str, str]:
    conn.shutdown_write()
    lines = read_to_eof(conn).decode().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


@pytest.mark.parametrize("kind", ["tcp4", "tcp6"])
def test_environment_tcp(exec_server: Callable[..., ExecServer], kind: str) -> None:
    if kind == "tcp6" and not HAS_IPV6:
        pytest.skip("no IPv6")
    server = exec_server("exec:env", kind)
    with server.connect() as conn:
        env = environment_of(conn)
        local, peer = conn.local_address, conn.peer_address
    assert isinstance(local, InetAddress) and isinstance(peer, InetAddress)
    assert env["ENCHUFE_PEER_ADDR"] == local.host
    assert env["ENCHUFE_PEER_PORT"] == str(local.port)
    assert env["ENCHUFE_LOCAL_ADDR"] == peer.host
    assert env["ENCHUFE_LOCAL_PORT"] == str(peer.port)
    assert parse(env["ENCHUFE_PEER"]) == parse(str(local))
    assert env["ENCHUFE_KIND"] == kind
    assert "ENCHUFE_PEER_UID" not in env
    assert env.get("PATH") == os.environ.get("PATH")  # the rest of our environment is passed on


@pytest.mark.parametrize("kind", ["unix", "unix-abstract"])
def test_environment_unix(exec_server: Callable[..., ExecServer], kind: str) -> None:
    server = exec_server("exec:env", kind)
    with server.connect() as conn:
        env = environment_of(conn)
        listening = conn.peer_address
    assert isinstance(listening, UnixAddress)
    assert env["ENCHUFE_PEER_UID"] == str(os.getuid())
    assert env["ENCHUFE_PEER_GID"] == str(os.getgid())
    assert env["ENCHUFE_PEER_PID"] == str(os.getpid())
    expected = f"@{listening.name}" if listening.abstract else listening.name
    assert env["ENCHUFE_LOCAL_ADDR"] == expected
    assert env["ENCHUFE_PEER_ADDR"] == ""  # our client socket has no name
    assert env["ENCHUFE_KIND"] == "unix"


def test_a_peer_name_with_nul_and_newline_reaches_the_child_escaped(
    exec_server: Callable[..., ExecServer],
) -> None:
    """A local client binds an abstract name holding a NUL (no environment can hold one) and a
    newline: the child is started all the same, and sees the name escaped."""
    server = exec_server("exec:env", "unix")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(IO_TIMEOUT)
        sock.bind(b"\0evil\0name\nFORGED=1")
        sock.connect(server.address.removeprefix("unix://"))
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    env = dict(line.split("=", 1) for line in b"".join(chunks).decode().splitlines() if "=" in line)
    assert env["ENCHUFE_PEER_ADDR"] == "@evil\\x00name\\nFORGED=1"
    assert env["ENCHUFE_PEER"] == "unix:@evil\\x00name\\nFORGED=1"
    assert "FORGED" not in env
    assert server.status() == 0


def test_child_environment_is_pure() -> None:
    peer = InetAddress("tcp", "::1", 5000)
    local = InetAddress("tcp", "::1", 9000)
    env = child_environment(peer, local, base={"KEEP": "1"})
    assert env == {
        "KEEP": "1",
        "ENCHUFE_PEER": "tcp://[::1]:5000",
        "ENCHUFE_PEER_ADDR": "::1",
        "ENCHUFE_PEER_PORT": "5000",
        "ENCHUFE_LOCAL": "tcp://[::1]:9000",
        "ENCHUFE_LOCAL_ADDR": "::1",
        "ENCHUFE_LOCAL_PORT": "9000",
        "ENCHUFE_KIND": "tcp6",
    }
    unix = child_environment(None, UnixAddress("srv", abstract=True), Credentials(1, 2, 3), base={})
    evil = child_environment(UnixAddress("a\0b\n\udcff", abstract=True), None, base={})
    assert evil["ENCHUFE_PEER_ADDR"] == "@a\\x00b\\n\\xff"
    assert unix["ENCHUFE_PEER"] == unix["ENCHUFE_PEER_ADDR"] == ""
    assert unix["ENCHUFE_LOCAL_ADDR"] == "@srv"
    assert (unix["ENCHUFE_PEER_PID"], unix["ENCHUFE_PEER_UID"], unix["ENCHUFE_PEER_GID"]) == ("1", "2", "3")
    assert unix["ENCHUFE_KIND"] == "unix"
    assert "ENCHUFE_PEER_PORT" not in unix


# --- children are reaped --------------------------------------------------------------------------

PID_THEN_CAT = ExecAddress(("sh", "-c", "echo $$; exec cat"))


def test_children_are_reaped(exec_server: Callable[..., ExecServer]) -> None:
    server = exec_server(PID_THEN_CAT)
    pids = []
    for i in range(5):
        with server.connect() as conn:
            pid = int(conn.recv_until(b"\n"))
            conn.send_all(b"bye %d" % i)
            conn.shutdown_write()
            assert read_to_eof(conn) == b"bye %d" % i
            pids.append(pid)
    for i, pid in enumerate(pids):
        assert server.status(i) == 0
        wait_until(functools.partial(gone, pid), timeout=5, what=f"child {pid} being reaped")
        with pytest.raises(ChildProcessError) as caught:
            os.waitpid(pid, os.WNOHANG)
        assert caught.value.errno == errno.ECHILD


def test_peer_reset_stops_and_reaps_the_child(exec_server: Callable[..., ExecServer]) -> None:
    server = exec_server(ExecAddress(("sh", "-c", "echo $$; exec sleep 30")))
    conn = server.connect()
    pid = int(conn.recv_until(b"\n"))
    assert not gone(pid)
    # Reset: SO_LINGER {on, 0} then close sends RST instead of FIN.
    conn.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    assert server.status() == -15  # SIGTERM: stopped, not left running (status() fails after IO_TIMEOUT)
    wait_until(lambda: gone(pid), timeout=5, what="the child being reaped")


def test_server_shutdown_stops_children(loop_flavour: str, make_address: Callable[[str], str]) -> None:
    statuses: list[Any] = []
    program = ExecAddress(("sh", "-c", "echo $$; exec sleep 30"))

    async def handler(conn: aio.Connection) -> None:
        try:
            statuses.append(await run_exec(conn, program))
        except asyncio.CancelledError:
            statuses.append("cancelled")
            raise

    running = start(loop_flavour, make_address("unix"), handler)
    try:
        with enchufe.connect(running.address, timeout=IO_TIMEOUT) as conn:
            conn.set_timeout(IO_TIMEOUT)
            pid = int(conn.recv_until(b"\n"))
            running.shutdown(drain_timeout=0)
            stats = running.wait()
            assert stats.cut == 1
            assert statuses == ["cancelled"]
            wait_until(lambda: gone(pid), timeout=5, what="the child being stopped and reaped")
    finally:
        running.stop()


# --- errors ---------------------------------------------------------------------------------------


def test_missing_program_is_a_clear_error(loop_flavour: str, make_address: Callable[[str], str]) -> None:
    async def main() -> None:
        async with (
            await aio.listen(make_address("unix")) as listener,
            await aio.connect(connectable(listener.address)) as client,
            await listener.accept() as conn,
        ):
            program = ExecAddress(("enchufe-no-such-program", "--flag"))
            with pytest.raises(EnchufeError):
                await run_exec(conn, program)  # (the loop sets up child watching once)
            await asyncio.sleep(0.05)
            fds = len(os.listdir("/proc/self/fd"))
            with pytest.raises(EnchufeError) as caught:
                await run_exec(conn, program)
            await asyncio.sleep(0.05)  # uvloop closes the pipes on its next iteration
            assert len(os.listdir("/proc/self/fd")) == fds  # no pipe left open
            message = str(caught.value)
            assert "enchufe-no-such-program" in message
            assert "no such file" in message.lower()
            assert client.peer_address is not None

    factory = asyncio.new_event_loop if loop_flavour == "asyncio" else aio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


def test_missing_program_behind_a_server_is_logged(exec_server: Callable[..., ExecServer]) -> None:
    server = exec_server(ExecAddress(("enchufe-no-such-program",)))
    with server.connect() as conn:
        assert read_to_eof(conn) == b""  # the server closes the connection
    assert isinstance(server.status(), EnchufeError)
    wait_until(lambda: server.running.stats.failed == 1, what="the failure counted")
    server.running.shutdown(0)
    assert server.running.wait().failed == 1


def test_exec_address_round_trip() -> None:
    address = parse("exec:sh -c 'read x; echo \"$x\"'")
    assert isinstance(address, ExecAddress)
    assert address.argv == ("sh", "-c", 'read x; echo "$x"')
    assert parse(str(address)) == address
    assert shlex.split(str(address).removeprefix("exec:")) == list(address.argv)


def test_a_child_that_exits_leaving_a_process_holding_its_output(
    exec_server: Callable[..., ExecServer],
) -> None:
    """The child starts something in the background (inheriting its stdout) and exits: the
    peer gets all the child wrote, even reading slowly, then EOF soon after the child's exit,
    not when the background process ends (no EOF would come before)."""
    script = "sleep 60 2>/dev/null & echo $!; head -c 3000000 /dev/zero; echo; echo done"
    server = exec_server(ExecAddress(("sh", "-c", script)))
    with server.connect() as conn:
        background = int(conn.recv_until(b"\n"))
        try:
            time.sleep(1.0)  # a slow reader: the child's output waits for it meanwhile
            rest = read_to_eof(conn)  # each read fails after IO_TIMEOUT, well before the 60 s
            assert rest == b"\0" * 3_000_000 + b"\ndone\n"
            assert server.status() == 0
            wait_until(lambda: stopped(background), timeout=5, what="the background process stopped")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(background, 9)


#: A child whose background process stays in its group: it says the background pid, then cats.
BACKGROUND_THEN_CAT = ExecAddress(("sh", "-c", "sleep 300 2>/dev/null & echo $!; exec cat"))


@pytest.mark.parametrize("how", ["close", "reset"])
def test_what_a_child_started_goes_with_its_connection(
    exec_server: Callable[..., ExecServer], how: str
) -> None:
    """The child's own background process is in the child's process group: once the peer has
    gone (an orderly close: the child exits, the background process still holds its output; or
    a reset: the child is stopped), the group is stopped too, not left running."""
    server = exec_server(BACKGROUND_THEN_CAT)
    conn = server.connect()
    background = int(conn.recv_until(b"\n"))
    try:
        assert not stopped(background)
        if how == "reset":
            conn.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        assert server.status() in (0, -15)  # a reset may be read as an EOF first: cat ends
        wait_until(lambda: stopped(background), timeout=5, what="the background process stopped")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(background, 9)


def test_server_shutdown_stops_what_children_started(
    loop_flavour: str, make_address: Callable[[str], str]
) -> None:
    statuses: list[Any] = []

    async def handler(conn: aio.Connection) -> None:
        try:
            statuses.append(await run_exec(conn, BACKGROUND_THEN_CAT))
        except asyncio.CancelledError:
            statuses.append("cancelled")
            raise

    running = start(loop_flavour, make_address("unix"), handler)
    try:
        with enchufe.connect(running.address, timeout=IO_TIMEOUT) as conn:
            conn.set_timeout(IO_TIMEOUT)
            background = int(conn.recv_until(b"\n"))
            try:
                running.shutdown(drain_timeout=0)
                assert running.wait().cut == 1
                assert statuses == ["cancelled"]
                # SIGKILL, if it came to that, takes effect a moment after the handler sent it
                wait_until(lambda: stopped(background), timeout=2, what="the background process gone")
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(background, 9)
    finally:
        running.stop()


# --- one exec engine: the relay's start, our own reaping ------------------------------------------


def open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def run_on(loop_flavour: str, main: Callable[[], Any]) -> None:
    factory = asyncio.new_event_loop if loop_flavour == "asyncio" else aio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


def test_cancelled_run_exec_stops_and_reaps_the_child_and_leaks_nothing(
    loop_flavour: str, make_address: Callable[[str], str]
) -> None:
    """A cancelled run_exec (a server cutting its connections) stops the child, reaps it and
    closes the pipes and the pidfd before the cancellation goes on: nothing to wait for after."""

    async def main() -> None:
        async with (
            await aio.listen(make_address("unix")) as listener,
            await aio.connect(connectable(listener.address)) as client,
            await listener.accept() as conn,
        ):
            client.set_timeout(IO_TIMEOUT)
            before = open_descriptors()
            task = asyncio.ensure_future(run_exec(conn, ExecAddress(("sh", "-c", "echo $$; exec sleep 30"))))
            pid = int(await client.recv_until(b"\n"))
            await client.send_all(b"on its way to the child\n")
            assert not gone(pid)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert gone(pid)  # stopped and reaped: no zombie, nothing left to wait for
            assert open_descriptors() == before  # pipes and pidfd closed, at once

    run_on(loop_flavour, main)


def test_run_exec_narrates_the_start_and_the_reaping(
    loop_flavour: str, make_address: Callable[[str], str], trace_lines: list[str]
) -> None:
    """listen --exec starts children as the relay does (posix_spawnp, a session of their own),
    and says so under --trace, with the exit status it collected."""

    async def main() -> None:
        async with (
            await aio.listen(make_address("unix")) as listener,
            await aio.connect(connectable(listener.address)) as client,
            await listener.accept() as conn,
        ):
            await client.send_all(b"through\n")
            await client.shutdown_write()
            status = await run_exec(conn, ExecAddress(("cat",)))
            assert status == 0
            assert await client.recv_until(b"\n") == b"through\n"

    run_on(loop_flavour, main)
    spawned = [line for line in trace_lines if line.startswith("posix_spawnp(cat, ['cat'], setsid) = pid ")]
    assert len(spawned) == 1, trace_lines
    pid = spawned[0].split("= pid ")[1].split(";")[0]
    assert f"waitpid({pid}) = exit status 0" in trace_lines


def test_a_child_that_stops_reading_does_not_stop_its_output(exec_server: Callable[..., ExecServer]) -> None:
    """The child closes its stdin and goes on: what the peer sends then is dropped (EPIPE
    towards the child ends only that direction), the child's output still comes through to
    EOF, and its status is its own."""
    script = "exec 0<&-; echo closed; sleep 1; echo still here; exit 7"
    server = exec_server(ExecAddress(("sh", "-c", script)))
    with server.connect() as conn:
        assert conn.recv_until(b"\n") == b"closed\n"
        conn.send_all(b"x" * 1000)  # one read for the server, which then has nowhere to put it
        assert read_to_eof(conn) == b"still here\n"
    assert server.status() == 7


def test_without_pidfds_the_childs_exit_is_polled(
    loop_flavour: str, make_address: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a system without pidfd_open the exit is looked for now and then: same status, same end."""
    monkeypatch.setattr("enchufe.exec.open_pidfd", lambda pid: -1)

    async def main() -> None:
        async with (
            await aio.listen(make_address("unix")) as listener,
            await aio.connect(connectable(listener.address)) as client,
            await listener.accept() as conn,
        ):
            await client.shutdown_write()
            assert await run_exec(conn, ExecAddress(("sh", "-c", "echo bye; exit 3"))) == 3
            assert await client.recv_until(b"\n") == b"bye\n"

    run_on(loop_flavour, main)


def cpu_seconds() -> float:
    """utime + stime of this process (the server thread included), from /proc."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_session_waiting_for_the_peer_after_the_child_exited_costs_no_cpu(
    exec_server: Callable[..., ExecServer],
) -> None:
    """The child has exited and its output is through; the peer keeps its side open a while:
    the session waits for it without spinning."""
    server = exec_server(ExecAddress(("sh", "-c", "echo bye")))
    with server.connect() as conn:
        assert read_to_eof(conn) == b"bye\n"
        before = cpu_seconds()
        time.sleep(1.5)  # the server waits for our EOF meanwhile
        spent = cpu_seconds() - before
        conn.shutdown_write()
    assert server.status() == 0
    assert spent < 0.3, f"{spent:.2f} s of CPU while waiting"

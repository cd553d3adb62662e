"""``-`` (stdio) and ``exec:PROGRAM`` endpoints: half-close both ways, exit statuses, children
reaped (never a zombie), stopped when their connection breaks."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Peer

from .conftest import (
    ENCHUFE,
    STEP,
    StartRelay,
    Target,
    abort,
    dial,
    echo,
    read_all,
    turned_away,
    wait_until,
)

#: Longer than socat's 0.5 s half-close timeout, as the issue asks (> 1 s).
LATE = 1.2

PY = shlex.quote(sys.executable)


@contextlib.contextmanager
def stdio_relay(*args: str, stdin: int | None = subprocess.PIPE) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [*ENCHUFE, "relay", *args], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(STEP)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


# ----------------------------------------------------------------------------- LISTEN is stdio


def test_stdin_to_a_target_and_its_late_answer_to_stdout(make_address: Callable[[str], str]) -> None:
    """stdin's EOF becomes the target's EOF; the target answers 1.2 s later and is heard."""

    def serve(conn: socket.socket) -> bytes:
        request = read_all(conn)
        time.sleep(LATE)
        conn.sendall(b"answer to " + request)
        return request

    with Target(make_address("tcp4"), serve) as target, stdio_relay("-", target.address) as proc:
        started = time.monotonic()
        out, err = proc.communicate(b"question", timeout=STEP)
        assert proc.returncode == 0, err
        assert out == b"answer to question"
        assert time.monotonic() - started >= LATE
        assert target.wait_results(1) == [b"question"]


def test_a_file_as_stdin_and_a_file_as_stdout(
    make_address: Callable[[str], str], tmp_path: os.PathLike[str]
) -> None:
    """Regular files cannot be watched by epoll: they are always ready, and the relay still
    moves every byte (and splices from and into them)."""
    data = os.urandom(3_000_000)
    source = os.path.join(tmp_path, "in.bin")
    sink = os.path.join(tmp_path, "out.bin")
    with open(source, "wb") as f:
        f.write(data)
    with Target(make_address("unix"), echo) as target, open(source, "rb") as fin, open(sink, "wb") as fout:
        done = subprocess.run(
            [*ENCHUFE, "relay", "-", target.address],
            stdin=fin,
            stdout=fout,
            stderr=subprocess.PIPE,
            timeout=STEP,
        )
    assert done.returncode == 0, done.stderr
    with open(sink, "rb") as f:
        assert f.read() == data


def test_a_reset_or_an_unreachable_target_is_exit_status_1(make_address: Callable[[str], str]) -> None:
    def reset(conn: socket.socket) -> None:
        conn.recv(10)
        abort(conn)

    with Target(make_address("tcp4"), reset) as target, stdio_relay("-", target.address) as proc:
        _out, err = proc.communicate(b"hello", timeout=STEP)
        assert proc.returncode == 1, err
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with stdio_relay("-", f"tcp4://127.0.0.1:{port}") as proc:
        _out, err = proc.communicate(b"", timeout=STEP)
        assert proc.returncode == 1
        assert b"connection refused" in err.lower()


# ----------------------------------------------------------------------------- TARGET is stdio


def test_one_client_is_relayed_to_stdio_and_the_next_is_refused(make_address: Callable[[str], str]) -> None:
    with stdio_relay(make_address("tcp4"), "-") as proc:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        assert line.startswith("listening on ")
        address = line.split()[-1]
        with dial(address) as client:
            assert proc.stdin is not None
            proc.stdin.write(b"from stdio")
            proc.stdin.close()  # stdin's EOF reaches the client
            assert read_all(client) == b"from stdio"
            with pytest.raises(ConnectionRefusedError):
                dial(address).close()  # the listener closed once the first client was in
            client.sendall(b"from the client")
            client.shutdown(socket.SHUT_WR)
            assert proc.stdout is not None
            assert proc.stdout.read() == b"from the client"
        assert proc.wait(STEP) == 0


# ----------------------------------------------------------------------------- exec


def _children(pid: int) -> list[int]:
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(p) for p in f.read().split()]
    return children


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_each_client_gets_its_own_child(start_relay: StartRelay, make_address: Callable[[str], str]) -> None:
    relay = start_relay(make_address("tcp4"), "exec:tr a-z A-Z", "--json")

    def one(n: int) -> bytes:
        with dial(relay.address) as client:
            client.sendall(b"client %d " % n * 1000)
            client.shutdown(socket.SHUT_WR)
            return read_all(client)

    peers = [Peer(one, n) for n in range(8)]
    assert [p.result(STEP) for p in peers] == [b"CLIENT %d " % n * 1000 for n in range(8)]
    wait_until(lambda: len([e for e in relay.json_events() if e["event"] == "exit"]) == 8, "8 exits")
    pids = {e["pid"] for e in relay.json_events() if e["event"] == "exec"}
    assert len(pids) == 8
    assert not _children(relay.pid)  # every child reaped
    assert all(e["status"] == 0 for e in relay.json_events() if e["event"] == "exit")


def test_exec_half_closes_both_ways(start_relay: StartRelay, make_address: Callable[[str], str]) -> None:
    """The child writes a banner and closes its stdout; the client reads that EOF, and 1.2 s
    later still sends; the child reads it until the client's EOF and reports it on stderr."""
    program = (
        "import os, sys; os.write(1, b'banner'); os.close(1); "
        "data = sys.stdin.buffer.read(); sys.stderr.write('child got %r' % data)"
    )
    relay = start_relay(make_address("unix"), f"exec:{PY} -c {shlex.quote(program)}", "--json")
    with dial(relay.address) as client:
        assert read_all(client) == b"banner"
        time.sleep(LATE)
        client.sendall(b"late words")
        client.shutdown(socket.SHUT_WR)
        relay.wait_err(r"child got b'late words'")
        relay.wait_err(r'"event": "close".*"reason": "done"')
    relay.wait_err(r'"event": "exit".*"status": 0')


def test_a_child_that_stops_reading_does_not_reset_the_client(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    """head -c 5 reads five bytes and exits: the rest of what the client sends is discarded, the
    client hears those five bytes and an orderly EOF."""
    relay = start_relay(make_address("tcp4"), "exec:head -c 5", "--json")
    with dial(relay.address) as client:

        def send() -> None:
            client.sendall(b"x" * 2_000_000)
            client.shutdown(socket.SHUT_WR)

        sender = Peer(send)
        assert read_all(client) == b"xxxxx"
        sender.result(STEP)
    relay.wait_err(r'"event": "close".*"reason": "done"')


def test_the_child_sees_who_it_talks_to(start_relay: StartRelay, make_address: Callable[[str], str]) -> None:
    program = "import os; print(*(os.environ[f'ENCHUFE_{n}'] for n in ('PEER', 'LOCAL', 'KIND')))"
    relay = start_relay(make_address("tcp4"), f"exec:{PY} -c {shlex.quote(program)}")
    with dial(relay.address) as client:
        client.shutdown(socket.SHUT_WR)
        peer, local, kind = read_all(client).decode().split()
        assert peer == f"tcp://127.0.0.1:{client.getsockname()[1]}"
        assert local == relay.address.replace("tcp4", "tcp")
        assert kind == "tcp4"


@pytest.mark.parametrize("ignores_sigterm", [False, True], ids=["sigterm", "sigkill"])
def test_a_broken_connection_stops_and_reaps_the_child(
    start_relay: StartRelay, make_address: Callable[[str], str], ignores_sigterm: bool
) -> None:
    """A client that resets: the child gets SIGTERM, and SIGKILL one second later if it ignores
    it; it is reaped either way, never left a zombie."""
    program = "import os, signal, time\n"
    if ignores_sigterm:
        program += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    program += "os.write(1, b'%d' % os.getpid())\ntime.sleep(60)\n"  # one write: no EPIPE later
    relay = start_relay(make_address("tcp4"), f"exec:{PY} -c {shlex.quote(program)}", "--json")
    client = dial(relay.address)
    pid = int(client.recv(100))
    abort(client)
    started = time.monotonic()
    wait_until(lambda: not _alive(pid), "the child stopping", timeout=5)
    if ignores_sigterm:  # SIGKILL only after the grace; the status below tells which signal ended it
        assert time.monotonic() - started >= 0.9
    status = -signal.SIGKILL if ignores_sigterm else -signal.SIGTERM
    relay.wait_err(rf'"event": "exit".*"pid": {pid}, "status": {status}')
    assert pid not in _children(relay.pid)


def test_a_program_that_does_not_exist_closes_the_client_and_the_relay_goes_on(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    relay = start_relay(make_address("tcp4"), "exec:no-such-program-here --flag", "--json")
    assert turned_away(relay.address) is not None
    relay.wait_err(r'"event": "error".*cannot run exec:no-such-program-here --flag: no such file')
    relay.signal()
    assert relay.finish() == 0


def test_sigterm_drains_then_stops_the_children_left(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    program = "import os, time; os.write(1, b'%d' % os.getpid()); time.sleep(60)"
    relay = start_relay(
        make_address("tcp4"), f"exec:{PY} -c {shlex.quote(program)}", "--drain-timeout", "0.3"
    )
    with dial(relay.address) as client:
        pid = int(client.recv(100))
        relay.signal()
        assert relay.finish() == 1  # the connection was cut at the end of the drain
        assert not _alive(pid)


def test_a_terminal_as_stdin_ends_with_the_targets_eof(make_address: Callable[[str], str]) -> None:
    """A terminal may never send EOF: once the target has closed and its bytes are out, the
    relay ends (as ``enchufe connect`` does), instead of waiting for a Ctrl-D."""
    import pty

    def banner(conn: socket.socket) -> None:
        conn.sendall(b"bye")

    master, slave = pty.openpty()
    try:
        with Target(make_address("tcp4"), banner) as target:
            done = subprocess.run(
                [*ENCHUFE, "relay", "-", target.address],
                stdin=slave,
                capture_output=True,
                timeout=STEP,
                check=False,
            )
    finally:
        os.close(master)
        os.close(slave)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"bye"


def test_a_child_that_exits_leaving_a_process_holding_its_output_ends_the_session(
    start_relay: StartRelay, make_address: Callable[[str], str]
) -> None:
    """The child starts something in the background (which inherits its stdout) and exits: no
    EOF will come while that lives, yet the client hears the child's output and a close soon
    after the child's exit (as with socat), not when the background process ends; the relay
    stops at once on SIGTERM, with nothing to drain."""
    program = "sleep 60 2>/dev/null & echo $!; echo done"
    relay = start_relay(make_address("tcp4"), f"exec:sh -c {shlex.quote(program)}", "-v")
    with dial(relay.address) as client:  # it never shuts its write side down
        out = read_all(client)  # fails after dial's IO_TIMEOUT, well before the 60 s
    background = int(out.split()[0])
    try:
        assert out.endswith(b"\ndone\n")
        relay.wait_err(r"exited, but a process it started holds its output open: closing")
        wait_until(lambda: not _alive(background), "the background process stopped with its session", 5)
        relay.signal()
        assert relay.finish() == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(background, signal.SIGKILL)


#: A child whose background process stays in its group: it says the background pid, then cats.
BACKGROUND_THEN_CAT = "exec:sh -c 'sleep 300 2>/dev/null & echo $!; exec cat'"


def _read_line(client: socket.socket) -> bytes:
    line = b""
    for _ in range(100):
        if line.endswith(b"\n"):
            return line
        chunk = client.recv(100)
        assert chunk, "the child said nothing"
        line += chunk
    raise AssertionError("no line")


@pytest.mark.parametrize("how", ["close", "reset"])
def test_what_a_child_started_goes_with_its_connection(
    start_relay: StartRelay, make_address: Callable[[str], str], how: str
) -> None:
    """The child's own background process is in the child's process group: once the client
    has gone (an orderly close: the child exits, the background process still holds its
    output; or a reset: the child is stopped), the group is stopped too, not left running."""
    relay = start_relay(make_address("tcp4"), BACKGROUND_THEN_CAT, "-v")
    client = dial(relay.address)
    background = int(_read_line(client))
    try:
        assert _alive(background)
        if how == "reset":
            abort(client)
        else:
            client.close()
        wait_until(lambda: not _alive(background), "the background process stopped", timeout=5)
        relay.signal()
        assert relay.finish() == 0, relay.err
    finally:
        client.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(background, signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_what_a_child_started_goes_when_the_relay_stops(
    start_relay: StartRelay, make_address: Callable[[str], str], signum: int
) -> None:
    """The relay stops while the session is open (cut at the end of the drain): the child and
    the background process it started are both gone once the relay has exited."""
    relay = start_relay(make_address("unix"), BACKGROUND_THEN_CAT, "--drain-timeout", "0.2")
    with dial(relay.address) as client:
        background = int(_read_line(client))
        try:
            assert _alive(background)
            relay.signal(signum)
            assert relay.finish() == 1, relay.err
            # (SIGKILL, if it came to that, takes effect a moment after the relay sent it)
            wait_until(lambda: not _alive(background), "the background process gone", timeout=2)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(background, signal.SIGKILL)

"""A stop signal ends a blocking wait wherever it lands (enchufe._wakeup).

Python runs signal handlers in the main thread, between bytecodes.  When the kernel hands the
signal to another thread (any thread of a threaded program may take it), or when it lands just
before the main thread blocks in poll(), the main thread's wait is not interrupted: only the
signal wake-up pipe says that a signal came.  The children here block the stop signal in their
main thread, so that another thread takes it every time: the race, made deterministic.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from enchufe import NetworkError, _wakeup, sync

STEP = 15.0

# Runs the CLI with SIGTERM blocked in its main thread and taken by another thread.
_WRAPPER = textwrap.dedent(
    """
    import signal, sys, threading, time
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    def other():
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        time.sleep(60)
    threading.Thread(target=other, daemon=True).start()
    from enchufe.cli import main
    sys.argv = ["enchufe"] + sys.argv[1:]
    main()
    """
)


def _start(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(_WRAPPER)
    return subprocess.Popen(
        [sys.executable, str(wrapper), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _asleep(pid: int) -> None:
    """Wait until the main thread sleeps in a system call (its wait), so that the signal comes
    after Python's last look at its flags: the moment the race needs."""
    for _ in range(1500):  # 15 s at most
        fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        wchan = Path(f"/proc/{pid}/task/{pid}/wchan").read_text()
        if fields[0] == "S" and wchan not in ("", "0"):
            return
        time.sleep(0.01)
    pytest.fail("the command's main thread never went to sleep in a wait")


def _stop(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    _asleep(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        status = proc.wait(STEP)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"still running {STEP:g} s after SIGTERM: the wait missed the signal")
    assert proc.stderr is not None and proc.stdin is not None
    return status, proc.stderr.read().decode()


def _wait_for_line(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    assert line, "the command ended before its first line"
    return line


@pytest.mark.parametrize("command", ["listen", "recv"])
def test_a_datagram_pump_stops_on_a_signal_another_thread_took(command: str, tmp_path: Path) -> None:
    path = tmp_path / "d.sock"
    with _start(tmp_path, command, f"unixgram://{path}") as proc:
        assert "listening on" in _wait_for_line(proc)
        status, err = _stop(proc)
    assert status == 0, err
    assert not path.exists()


def test_a_stream_pump_stops_on_a_signal_another_thread_took(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen()
        listener.settimeout(STEP)
        with _start(tmp_path, "connect", f"unix://{path}") as proc, listener.accept()[0] as conn:
            conn.sendall(b"hello\n")
            assert proc.stdout is not None
            assert proc.stdout.read(6) == b"hello\n"  # the pump is running: now it waits
            status, err = _stop(proc)
    assert status == 1
    assert "interrupted by SIGTERM" in err


def test_listen_waiting_for_its_client_stops_on_a_signal_another_thread_took(tmp_path: Path) -> None:
    """listen blocks in accept(): it now waits in poll() on the listener and the wake-up pipe."""
    with _start(tmp_path, "listen", "tcp://127.0.0.1:0") as proc:
        assert "listening on" in _wait_for_line(proc)
        status, err = _stop(proc)
    assert status == 0, err  # as when SIGTERM comes with no race: nobody was served
    assert "Traceback" not in err, err


def test_echo_stops_on_a_signal_another_thread_took(tmp_path: Path) -> None:
    """echo runs an asyncio server, whose loop watches the wake-up descriptor already (a guard:
    this passed before the sync waits learnt it)."""
    with _start(tmp_path, "echo", "tcp://127.0.0.1:0") as proc:
        assert "listening on" in _wait_for_line(proc)
        status, err = _stop(proc)
    assert status == 0, err


# Runs sync.serve.serve() in the main thread, SIGTERM blocked there and taken by another thread.
_SERVE = textwrap.dedent(
    """
    import signal, sys, threading, time
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    def other():
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        time.sleep(60)
    threading.Thread(target=other, daemon=True).start()
    from enchufe.sync.serve import serve
    def ready(address):
        print(f"ready {address}", file=sys.stderr, flush=True)
    stats = serve(sys.argv[1], lambda _: None, ready=ready)
    print(f"stopped accepted={stats.accepted}", file=sys.stderr, flush=True)
    """
)


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_sync_serve_in_the_main_thread_stops_on_a_signal_another_thread_took(
    kind: str, tmp_path: Path
) -> None:
    """The accept loop waited in accept(), the datagram loop in poll() without the wake-up pipe:
    a signal another thread took, or one landing just before the wait, was missed."""
    script = tmp_path / "serve.py"
    script.write_text(_SERVE)
    with subprocess.Popen(
        [sys.executable, str(script), f"{kind}://127.0.0.1:0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert _wait_for_line(proc).startswith("ready ")
        status, err = _stop(proc)
    assert status == 0 and "stopped accepted=0" in err, err


@pytest.mark.timeout(20)
def test_a_listener_with_a_timeout_keeps_it_in_the_main_thread() -> None:
    """The wait on the wake-up pipe is for blocking accepts only: a timeout its owner set on the
    listener's socket still ends accept()."""
    with sync.listen("tcp://127.0.0.1:0") as listener:
        listener.socket.settimeout(0.2)
        with pytest.raises(NetworkError):
            listener.accept()


def test_the_pipe_is_only_for_the_main_thread() -> None:
    found: list[int | None] = []
    thread = threading.Thread(target=lambda: found.append(_wakeup.signal_fd()))
    thread.start()
    thread.join(STEP)
    assert found == [None]


def test_another_wakeup_fd_is_left_in_place() -> None:
    """An asyncio loop in this thread owns the wake-up descriptor: it is not taken from it."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous = signal.set_wakeup_fd(write_end)
    try:
        assert _wakeup.signal_fd() is None
        assert signal.set_wakeup_fd(write_end) == write_end
    finally:
        signal.set_wakeup_fd(previous)
        os.close(read_end)
        os.close(write_end)


def test_a_signal_makes_the_pipe_readable_and_drain_empties_it() -> None:
    fd = _wakeup.signal_fd()
    assert fd is not None
    _wakeup.drain()  # a signal an earlier test of this process sent (e.g. serve()'s SIGINT)
    old = signal.signal(signal.SIGUSR1, lambda *_: None)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert os.read(fd, 1) == bytes([signal.SIGUSR1])
        os.kill(os.getpid(), signal.SIGUSR1)
        _wakeup.drain()
        with pytest.raises(BlockingIOError):
            os.read(fd, 1)
    finally:
        signal.signal(signal.SIGUSR1, old)
        signal.set_wakeup_fd(-1)

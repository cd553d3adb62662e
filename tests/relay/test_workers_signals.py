"""The ``--workers`` parent forwards every stop signal, wherever and whenever it lands.

The parent sleeps while its workers serve.  A stop signal that lands just after Python's last
look at its flags (right after ``listening on``, or after a worker exits), or that the kernel
hands to another thread, runs only the C-level handler: a wait that only Python's handler could
end goes on forever, and the workers are never told to stop.  The relays here run in a wrapper
whose main thread blocks the stop signal while another thread takes it: that race, made
deterministic.  The workers must still get each signal once (the first drains, a second cuts).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import connectable
from tests.test_wakeup import _WRAPPER  # the CLI, SIGTERM taken by a thread other than main

from .conftest import LISTENING, STEP, Target, dial, echo, ping

#: Polling steps of 10 ms: 1500 of them is the STEP bound.
_TICKS = int(STEP / 0.01)


class Parent:
    """The wrapped ``enchufe relay --workers 2``, its stderr in a file."""

    def __init__(self, folder: Path, *args: str) -> None:
        wrapper = folder / "wrapper.py"
        wrapper.write_text(_WRAPPER)
        self.log = folder / "stderr"
        with self.log.open("wb") as err:
            self.popen = subprocess.Popen(
                [sys.executable, str(wrapper), "relay", "--workers", "2", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.pid = self.popen.pid
        self.workers: list[int] = []

    @property
    def err(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_err(self, text: str) -> str:
        for _ in range(_TICKS):
            err = self.err
            if text in err or self.popen.poll() is not None:
                break
            time.sleep(0.01)
        assert text in err, f"no {text!r} on stderr within {STEP:g} s:\n{err}"
        return err

    def listening(self) -> str:
        """The address clients dial, once both workers run and the parent sleeps in its wait."""
        match = LISTENING.search(self.wait_err("listening on"))
        assert match is not None
        self.workers = self._children()
        self.asleep()
        return connectable(match.group(1))

    def _children(self) -> list[int]:
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        for _ in range(_TICKS):
            pids = [int(pid) for pid in path.read_text().split()]
            if len(pids) == 2:
                return pids
            time.sleep(0.01)
        pytest.fail(f"the parent never had its 2 workers: {path.read_text()!r}")

    def asleep(self) -> None:
        """Wait until the parent's main thread sleeps in a system call (its wait for the
        workers), so that the signal comes after Python's last look at its flags."""
        task = Path(f"/proc/{self.pid}/task/{self.pid}")
        for _ in range(_TICKS):
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "S" and (task / "wchan").read_text() not in ("", "0"):
                return
            time.sleep(0.01)
        pytest.fail("the parent's main thread never went to sleep in a wait")

    def finish(self) -> int:
        """The exit status, within STEP of the last signal (a hang fails the test)."""
        try:
            return self.popen.wait(STEP)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the parent still runs {STEP:g} s after the signal; stderr:\n{self.err}")

    def kill(self) -> None:
        """Kill the parent and its workers (a worker that missed the signal would stay)."""
        for pid in [self.pid, *self.workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(STEP)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Parent]]:
    started: list[Parent] = []

    def run(*args: str) -> Parent:
        parent = Parent(tmp_path, *args)
        started.append(parent)
        return parent

    try:
        yield run
    finally:
        for parent in started:
            parent.kill()


def _gone(pid: int) -> bool:
    """``pid`` has exited and been reaped (by the parent, the one that may reap it)."""
    for _ in range(_TICKS):
        if not os.path.exists(f"/proc/{pid}"):
            return True
        time.sleep(0.01)
    return False


def test_a_stop_signal_another_thread_takes_stops_every_worker(start: Callable[..., Parent]) -> None:
    parent = start("tcp4://127.0.0.1:0", "tcp4://127.0.0.1:9")
    parent.listening()
    parent.popen.send_signal(signal.SIGTERM)
    assert parent.finish() == 0, parent.err
    err = parent.err
    assert err.count("stopping: no connection open") == 2, err
    assert "Traceback" not in err, err
    assert all(_gone(pid) for pid in parent.workers)


def test_the_first_signal_drains_and_a_second_cuts(
    start: Callable[..., Parent], make_address: Callable[[str], str]
) -> None:
    with Target(make_address("tcp4"), echo) as target:
        parent = start("tcp4://127.0.0.1:0", target.address, "--drain-timeout", "60")
        with dial(parent.listening()) as client:
            assert ping(client)
            parent.asleep()
            parent.popen.send_signal(signal.SIGTERM)
            parent.wait_err("waiting up to 60 s for 1 open")
            # One worker drained its empty listener and left; the one with the session waits.
            parent.wait_err("stopping: no connection open")
            assert parent.popen.poll() is None, parent.err
            assert ping(client), "the first signal cut the open session"
            parent.asleep()
            parent.popen.send_signal(signal.SIGTERM)
            assert parent.finish() == 1, parent.err
            client.settimeout(STEP)
            with contextlib.suppress(ConnectionResetError):
                assert client.recv(1) == b""
    err = parent.err
    assert "stopped again before the drain ended" in err, err
    assert "Traceback" not in err, err


def test_a_worker_that_dies_is_reaped_and_the_others_still_get_the_signal(
    start: Callable[..., Parent],
) -> None:
    parent = start("tcp4://127.0.0.1:0", "tcp4://127.0.0.1:9")
    address = parent.listening()
    dead, alive = parent.workers
    os.kill(dead, signal.SIGKILL)
    assert _gone(dead), "the parent did not reap the worker that died"
    # The port is still served, by the other worker: accepted, then closed or reset at once
    # because its target (the discard port) refuses.  A reset may already end connect() when
    # the relay is quicker than this niced test; a port nobody serves would be refused instead.
    with contextlib.suppress(ConnectionResetError), dial(address) as client:
        client.settimeout(STEP)
        assert client.recv(1) == b""
    parent.asleep()
    parent.popen.send_signal(signal.SIGTERM)
    assert parent.finish() == 1, parent.err  # a worker failed (it was killed)
    assert parent.err.count("stopping: no connection open") == 1, parent.err
    assert _gone(alive)

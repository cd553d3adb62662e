"""Helpers for the reliability suite: enchufe's own commands and library through faults.

* ``start_relay`` (from the relay tests): ``enchufe relay …`` as a process, e.g. with
  ``--fault`` and ``--seed``;
* ``start_command("echo", ADDRESS, …)``: any other serving command (``echo``, ``listen``) as a
  process, once it said ``listening on``; killed and reaped afterwards;
* :func:`run`: a client command to its end, with stdin given and a bound on its time.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.relay.conftest import ENCHUFE, STEP, RelayProc, start_relay

__all__ = ["CommandProc", "StartCommand", "run", "start_relay"]


class CommandProc(RelayProc):
    """``enchufe COMMAND ARGS…`` with stderr collected as it comes (as :class:`RelayProc`);
    stdout is kept when ``stdout`` is true."""

    def __init__(self, args: tuple[str, ...], stdout: bool = False) -> None:
        self.args = args
        self.popen = subprocess.Popen(
            [*ENCHUFE, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._err = bytearray()
        self._cond = threading.Condition()
        self._open = True
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.address = ""


StartCommand = Callable[..., CommandProc]


@pytest.fixture
def start_command() -> Iterator[StartCommand]:
    """``start_command("echo", "tcp://127.0.0.1:0", stdout=False)`` → a listening CommandProc."""
    procs: list[CommandProc] = []

    def start(*args: str, stdout: bool = False) -> CommandProc:
        proc = CommandProc(args, stdout)
        procs.append(proc)
        proc.listening()
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            proc.kill()
            if proc.popen.stdout is not None:
                proc.popen.stdout.close()


def run(*args: str, stdin: bytes = b"", timeout: float = STEP) -> subprocess.CompletedProcess[bytes]:
    """``enchufe ARGS…`` to its end (at most ``timeout`` s), stdin given, output kept."""
    return subprocess.run([*ENCHUFE, *args], input=stdin, capture_output=True, timeout=timeout, check=False)

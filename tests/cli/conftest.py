"""Helpers for driving ``python -m enchufe`` as a subprocess, with pipes, on loopback only.

* :class:`Proc`: a running ``enchufe`` with its stdout and stderr collected by reader threads
  (so a chatty child never blocks on a full pipe) and stdin written by a writer thread (so a
  test never blocks on a child that stopped reading).  Every wait is bounded.
* ``spawn(*args)``: start one; every process a test started is killed and reaped afterwards.
* :func:`run`: run one to completion with a timeout (``subprocess.run``).
* :func:`run_here`: the same command run in this process (``enchufe.cli.main``), for bad input
  refused before anything is opened: the same code without a Python start per case.
* :func:`assert_one_error_line`: the contract's error output: one line, no traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

import pytest

#: The command under test.  ``-m enchufe`` runs the installed package, as a user would.
ENCHUFE = (sys.executable, "-m", "enchufe")

#: No single step of a test (a process starting, data arriving, a process ending) may take
#: longer than this; on a loaded 2-core machine a Python start takes well under a second.
STEP = 15.0

LISTENING = re.compile(r"^listening on (\S+)$", re.MULTILINE)
LISTENING_JSON = re.compile(r'^(\{"event": "listening".*\})$', re.MULTILINE)


class Proc:
    """One ``enchufe`` process with piped stdio.

    ``out`` and ``err`` grow as the child writes; :meth:`wait_out` / :meth:`wait_err` block (with
    a bound) until a condition on them holds.  :meth:`feed` writes stdin in a thread.
    """

    def __init__(self, args: tuple[str, ...], *, stdin: bool | str = True) -> None:
        """``stdin``: a pipe (``True``), /dev/null (``False``) or the regular file at that path."""
        self.args = args
        with contextlib.ExitStack() as files:
            source: int | IO[bytes] = subprocess.PIPE if stdin is True else subprocess.DEVNULL
            if isinstance(stdin, str):
                source = files.enter_context(open(stdin, "rb"))
            self.popen = subprocess.Popen(
                [*ENCHUFE, *args], stdin=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        self._out = bytearray()
        self._err = bytearray()
        self._cond = threading.Condition()
        self._open_streams = 2
        self._writer: threading.Thread | None = None
        self._write_error: BaseException | None = None
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, self._out), daemon=True),
            threading.Thread(target=self._read, args=(self.popen.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    # -- output

    def _read(self, stream: IO[bytes], into: bytearray) -> None:
        fd = stream.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self._cond:
                if not chunk:
                    self._open_streams -= 1
                    self._cond.notify_all()
                    return
                into += chunk
                self._cond.notify_all()

    @property
    def out(self) -> bytes:
        with self._cond:
            return bytes(self._out)

    @property
    def err(self) -> str:
        with self._cond:
            return self._err.decode("utf-8", "replace")

    def _wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not check():
                left = deadline - time.monotonic()
                if left <= 0 or (self._open_streams == 0 and not check()):
                    raise AssertionError(
                        f"enchufe {' '.join(self.args)}: {what} did not happen within {timeout:g} s "
                        f"(exit status {self.popen.poll()})\nstdout: {bytes(self._out[:400])!r}\n"
                        f"stderr:\n{self._err.decode('utf-8', 'replace')}"
                    )
                self._cond.wait(min(left, 0.2))

    def wait_out(self, size: int, timeout: float = STEP) -> bytes:
        """Wait until stdout holds at least ``size`` bytes; return all of it."""
        self._wait(lambda: len(self._out) >= size, timeout, f"{size} bytes on stdout")
        return self.out

    def wait_out_equal(self, expected: bytes, timeout: float = STEP) -> None:
        """Wait for stdout to hold ``len(expected)`` bytes and check they are ``expected``."""
        got = self.wait_out(len(expected), timeout)
        assert got == expected, f"stdout {got[:200]!r}… differs from {expected[:200]!r}…"

    def wait_err(self, pattern: str, timeout: float = STEP, *, count: int = 1) -> re.Match[str]:
        """Wait for ``pattern`` (a regex, multiline) to match stderr ``count`` times; return the
        last of those matches."""
        regex = re.compile(pattern, re.MULTILINE)
        found: list[re.Match[str]] = []

        def check() -> bool:
            found[:] = list(regex.finditer(self._err.decode("utf-8", "replace")))[:count]
            return len(found) == count

        self._wait(check, timeout, f"stderr matching {pattern!r} {count} time(s)")
        return found[-1]

    def listening(self, timeout: float = STEP) -> str:
        """The address from the ``listening on ADDRESS`` line (the real port when 0 was asked),
        or from its ``--json`` form ``{"event": "listening", "address": ADDRESS}``."""
        match = self.wait_err(f"{LISTENING.pattern}|{LISTENING_JSON.pattern}", timeout)
        if match.group(1) is not None:
            return match.group(1)
        record = json.loads(match.group(2))
        assert record["event"] == "listening", record
        address: str = record["address"]
        return address

    # -- input

    def feed(self, data: bytes, *, close: bool = True) -> None:
        """Write ``data`` to stdin from a thread, then close stdin if ``close``.

        Returns at once; :meth:`fed` waits for the writer.  One writer at a time.
        """
        self.fed()
        stdin = self.popen.stdin
        assert stdin is not None, "started without a stdin pipe"

        def write() -> None:
            try:
                if data:
                    stdin.write(data)
                    stdin.flush()
            except BaseException as exc:  # e.g. BrokenPipeError when the child died
                self._write_error = exc
            if close:
                with contextlib.suppress(OSError):
                    stdin.close()

        self._writer = threading.Thread(target=write, daemon=True)
        self._writer.start()

    def fed(self, timeout: float = STEP) -> None:
        """Wait for the last :meth:`feed` to finish; re-raise what it failed with."""
        if self._writer is None:
            return
        self._writer.join(timeout)
        assert not self._writer.is_alive(), f"the child did not read its stdin within {timeout:g} s"
        self._writer = None
        if self._write_error is not None:
            error, self._write_error = self._write_error, None
            raise error

    def close_stdin(self) -> None:
        self.feed(b"", close=True)
        self.fed()

    # -- ending

    def running(self) -> bool:
        return self.popen.poll() is None

    def finish(self, timeout: float = STEP) -> int:
        """Wait for the process to exit and its output to be read; return its exit status."""
        try:
            status = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"enchufe {' '.join(self.args)} still running after {timeout:g} s\nstderr:\n{self.err}"
            ) from None
        for reader in self._readers:
            reader.join(STEP)
        self.fed()
        return status

    def terminate(self, timeout: float = STEP) -> int:
        """SIGTERM, then :meth:`finish`."""
        self.popen.send_signal(signal.SIGTERM)
        return self.finish(timeout)

    def kill(self) -> None:
        """Make sure the process is gone and every pipe closed (used at teardown)."""
        if self.popen.poll() is None:
            self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(STEP)
        for reader in self._readers:
            reader.join(STEP)
        if self._writer is not None:
            self._writer.join(STEP)
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


Spawn = Callable[..., Proc]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """``spawn("listen", "tcp://127.0.0.1:0")`` → a running :class:`Proc`; all killed afterwards."""
    procs: list[Proc] = []

    def start(*args: str, stdin: bool | str = True) -> Proc:
        proc = Proc(args, stdin=stdin)
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            proc.kill()


def run(*args: str, input: bytes = b"", timeout: float = STEP) -> subprocess.CompletedProcess[bytes]:
    """Run ``enchufe ARGS`` to completion (killed if it takes longer than ``timeout``)."""
    return subprocess.run([*ENCHUFE, *args], input=input, capture_output=True, timeout=timeout, check=False)


@dataclass
class Ran:
    """What :func:`run_here` saw: the exit status and the bytes written to stdout and stderr."""

    returncode: int
    stdout: bytes
    stderr: bytes


#: The signals a command may take over (stop_on_sigterm, --stats, reloads): given back afterwards.
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)


def run_here(*args: str) -> Ran:
    """``enchufe ARGS`` run in this process by the command's own entry point, with its exit status
    (``SystemExit``) and its stdout and stderr captured.

    For the many bad-input cases (a value, an option that does not apply) that are refused before
    any socket is opened: the same code as :func:`run` runs, without the half second a Python
    start takes on the loaded 2-core CI machine for each case.  ``test_cli_numbers.py`` checks
    that a case gives the same status and output both ways.  A command that is not refused runs
    here for real: nothing bounds it but the test's timeout, so use :func:`run` for anything
    expected to run.  The global options' settings and tracing are reset after each call.
    """
    from enchufe import trace
    from enchufe.cli import main
    from enchufe.cli._common import Settings, settings

    handlers = {signum: signal.getsignal(signum) for signum in _SIGNALS}
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    status: int | str | None = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                status = exc.code
    finally:
        vars(settings).update(vars(Settings()))
        trace.disable()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert isinstance(status, int), f"exit with {status!r}"
    stdout, stderr = out.buffer, err.buffer
    assert isinstance(stdout, io.BytesIO) and isinstance(stderr, io.BytesIO)
    return Ran(status, stdout.getvalue(), stderr.getvalue())


def error_lines(stderr: bytes | str) -> list[str]:
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    return [line for line in text.splitlines() if line.strip()]


def assert_one_error_line(stderr: bytes | str, *needles: str) -> str:
    """stderr is exactly one line, ``enchufe: …``, without a traceback, containing ``needles``."""
    lines = error_lines(stderr)
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n" + "\n".join(lines)
    line = lines[0]
    assert "Traceback" not in line
    assert line.startswith("enchufe: "), line
    for needle in needles:
        assert needle.lower() in line.lower(), f"{needle!r} not in {line!r}"
    return line


def free_port(family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nobody listens on right now (bound, then released)."""
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(family, kind) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


def wait_until(check: Callable[[], bool], what: str, timeout: float = STEP) -> None:
    """Poll ``check`` every 20 ms until it holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.02)

"""Running ``enchufe echo`` / ``enchufe chat`` as real processes, and watching them."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

#: Seconds a server process may take to start, or to exit once told to.
PROCESS_TIMEOUT = 15.0


class ServerProcess:
    """``python -m enchufe ARGS…`` with its stderr collected line by line in a thread."""

    def __init__(self, *args: str, nofile: int | None = None) -> None:
        preexec: Callable[[], None] | None = None
        if nofile is not None:

            def preexec() -> None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "enchufe", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=preexec,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = PROCESS_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if predicate(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"{self.args}: no such line on stderr; got {self.lines}")
                self._changed.wait(min(left, 0.5))

    def listening_address(self) -> str:
        """The address of the ``listening on ADDRESS`` line (or of the JSON event)."""
        line = self.wait_for_line(lambda text: "listening" in text)
        if line.startswith("{"):
            record: dict[str, Any] = json.loads(line)
            return str(record["address"])
        return line.split("listening on ", 1)[1].strip()

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (/proc/PID/stat)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / os.sysconf("SC_CLK_TCK")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = PROCESS_TIMEOUT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(PROCESS_TIMEOUT)
        self._reader.join(PROCESS_TIMEOUT)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

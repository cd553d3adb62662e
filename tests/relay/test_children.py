"""The relay's exec: children on the event loop: a failure while stopping one still stops it."""

from __future__ import annotations

import os
import select
import time

import pytest

from enchufe import ExecAddress
from enchufe._spawn import TERMINATE_GRACE, reap
from enchufe.relay.children import Children
from enchufe.relay.engine import Loop
from enchufe.relay.events import Recorder

from .conftest import STEP

#: A child that ignores SIGTERM (as does the sleep it becomes): only the SIGKILL stops it.
DEAF = ExecAddress(("sh", "-c", "trap '' TERM; echo ready; exec sleep 30"))


def _read_line(fd: int) -> bytes:
    got = b""
    deadline = time.monotonic() + STEP
    while not got.endswith(b"\n") and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            chunk = os.read(fd, 64)
            if not chunk:
                break
            got += chunk
    return got


def test_a_sigkill_timer_that_fails_still_kills_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SIGKILL that follows an ignored SIGTERM: if reaping fails in its timer (an error
    nobody expected), the group is killed anyway, not left running with its connection gone."""
    lines: list[str] = []
    loop = Loop(report=lambda line, exc: lines.append(line))
    children = Children(loop, Recorder())
    child = children.spawn(DEAF, dict(os.environ), session_id=1)
    try:
        assert _read_line(child.stdout_r) == b"ready\n"
        children.terminate(child)  # SIGTERM, ignored; the SIGKILL is due in TERMINATE_GRACE
        assert child.timer is not None
        failures: list[int] = []

        def reap_fails_once(pid: int) -> int | None:
            if not failures:
                failures.append(pid)
                raise RuntimeError("injected reap fault")
            return reap(pid)

        monkeypatch.setattr("enchufe.relay.children.reap", reap_fails_once)
        deadline = time.monotonic() + TERMINATE_GRACE + STEP
        loop.call_every(0.1, lambda: None)  # ``until`` is asked at least this often
        loop.run(until=lambda: child.exited or time.monotonic() > deadline)
        assert failures == [child.pid]
        assert child.exited, lines
        assert child.status == -9
        (line,) = lines
        assert line.startswith("enchufe: unexpected error in a timer: RuntimeError: injected reap fault; ")
        assert f"killed what is left of #1 {DEAF} (process group {child.pid})" in line
    finally:
        children.close(grace=0.1)
        for fd in (child.stdin_w, child.stdout_r):
            os.close(fd)
        loop.close()

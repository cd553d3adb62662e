"""RelayThread: a relay bound in the caller's thread, then served in one of its own."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from enchufe.faults.relay_thread import RelayThread
from enchufe.relay import RelayConfig


def test_a_thread_that_cannot_start_leaves_no_listener_nor_socket_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay is bound before its thread starts: if the thread cannot start (the process is
    out of threads), the listener is closed and its socket file removed before the error."""
    path = tmp_path / "relay.sock"
    config = RelayConfig(listen=f"unix://{path}", target="tcp://127.0.0.1:9")
    RelayThread.start(config, None, "warm-up").stop()  # imports done, so the fds below are ours
    fds = len(os.listdir("/proc/self/fd"))

    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        RelayThread.start(config, None, "no thread")
    assert not path.exists()
    assert len(os.listdir("/proc/self/fd")) == fds

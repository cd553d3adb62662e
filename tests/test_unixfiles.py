"""Unix socket files and stop signals: a Ctrl-C or SIGTERM that lands right after bind leaves no
socket file behind (the CLI makes both a KeyboardInterrupt)."""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from enchufe import _calls, _unixfiles
from enchufe.address import UnixAddress, parse


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@pytest.fixture
def sigterm_interrupts() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _interrupt)
    yield
    signal.signal(signal.SIGTERM, previous)


def _unix(path: Path) -> UnixAddress:
    address = parse(f"unix://{path}")
    assert isinstance(address, UnixAddress)
    return address


def test_sigterm_right_after_bind_removes_the_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sigterm_interrupts: None
) -> None:
    """The real bind, then SIGTERM to this thread at once, before the SocketFile exists: the
    interrupt is raised, and the file made by bind is gone.  (To the main thread, not the
    process: a pytest-xdist worker has other threads, and a signal sent to the process may be
    taken by one of them, which the next test covers.)"""
    path = tmp_path / "new.sock"
    real_bind = _calls.bind
    made: list[bool] = []

    def bind_then_sigterm(sock: socket.socket, sockaddr: object) -> None:
        real_bind(sock, sockaddr)  # type: ignore[arg-type]
        made.append(path.exists())
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)

    monkeypatch.setattr(_unixfiles, "bind", bind_then_sigterm)
    with socket.socket(socket.AF_UNIX) as sock, pytest.raises(KeyboardInterrupt):
        _unixfiles.bind_unix(sock, _unix(path), 0o600)
    assert made == [True]
    assert not path.exists()
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_an_interrupt_taken_by_another_thread_right_after_bind_removes_the_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process with other threads may get the signal on one of them, where the main thread's
    mask does not hold it: Python then raises KeyboardInterrupt in the main thread at once,
    right after bind (raised here directly, as the handler would)."""
    path = tmp_path / "new.sock"
    real_bind = _calls.bind

    def bind_then_interrupt(sock: socket.socket, sockaddr: object) -> None:
        real_bind(sock, sockaddr)  # type: ignore[arg-type]
        assert path.exists()
        raise KeyboardInterrupt

    monkeypatch.setattr(_unixfiles, "bind", bind_then_interrupt)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with socket.socket(socket.AF_UNIX) as sock, pytest.raises(KeyboardInterrupt):
        _unixfiles.bind_unix(sock, _unix(path), None)
    assert not path.exists()
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before


def test_without_a_signal_the_file_is_ours_and_the_mask_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "kept.sock"
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with socket.socket(socket.AF_UNIX) as sock:
        owned = _unixfiles.bind_unix(sock, _unix(path), 0o600)
        assert owned is not None and path.exists()
        assert (path.stat().st_mode & 0o777) == 0o600
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    owned.release()
    assert not path.exists()


def test_a_failed_bind_restores_the_mask(tmp_path: Path) -> None:
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with socket.socket(socket.AF_UNIX) as sock, pytest.raises(OSError):
        _unixfiles.bind_unix(sock, _unix(tmp_path / "no-such-folder" / "x.sock"), None)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before

"""``--workers N``: N relay processes sharing one TCP port through SO_REUSEPORT.

The parent binds N listening sockets to the same address (the kernel spreads new connections
over them), forks one worker per socket, and then only forwards the stop signals (SIGINT,
SIGTERM, SIGHUP) and SIGUSR1 (reload the TLS files) and collects exit statuses.  Workers run in
their own process group, so a Ctrl-C at the terminal reaches them once, through the parent, and
they ask the kernel to send them SIGTERM if the parent dies.

UDP listeners share a port the same way: the kernel hashes each sender's address to one worker,
so a sender's datagrams (and its session) stay in one process.  Unix listeners cannot share an
address this way, and stdio is one stream; the relay refuses ``--workers`` for them.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from dataclasses import replace
from types import FrameType
from typing import NoReturn

from .._sockets import open_datagram, open_listener
from .._tlsstream import with_tls
from ..address import InetAddress, SocketAddress
from ..errors import UsageError
from ..i18n import _
from .events import EventSink
from .server import RELOAD_SIGNAL, STOP_SIGNALS, Relay, RelayConfig, check_endpoints

__all__ = ["run_workers"]

_PR_SET_PDEATHSIG = 1
#: What the parent passes on to every worker: the stop signals, and SIGUSR1 (reload TLS files).
_FORWARDED = (*STOP_SIGNALS, RELOAD_SIGNAL)


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _stopper(relay: Relay) -> Callable[[int, FrameType | None], None]:
    """A signal handler that starts ``relay``'s stop (before its run installs its own)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        relay.stop()

    return handler


def run_workers(
    config: RelayConfig,
    workers: int,
    *,
    events: EventSink,
    worker_events: Callable[[int], EventSink],
) -> int:
    """Run ``workers`` relay processes on one TCP port; the exit status to use (0 or 1)."""
    listen = _check(config, workers)
    # Check the rest of the configuration once, in the parent, before binding anything.
    backlog = Relay(config, events=EventSink()).backlog
    config = replace(config, reuse_port=True)
    listeners = _bind(listen, workers, backlog)
    real = with_tls(listeners[0][1], listen.tls)  # the workers' listeners speak TLS, if LISTEN does
    sys.stderr.flush()
    # A stop signal arriving while workers start (a worker without its handlers yet, or the
    # parent before it forwards) would kill a process on the spot: hold them until each process
    # has its handlers, then let them in.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    pids = _fork(listeners, config, worker_events, held)
    for sock, _real in listeners:
        sock.close()
    events("listening", _("listening on {address}").format(address=real), address=str(real), workers=workers)
    return _wait(pids, held)


def _check(config: RelayConfig, workers: int) -> SocketAddress:
    """LISTEN, if ``workers`` processes can share it (UsageError if not)."""
    listen, _target = check_endpoints(config.listen, config.target, frame=config.frame)
    if workers < 1:
        raise UsageError(_("--workers must be at least 1, not {value}").format(value=workers))
    if isinstance(listen, InetAddress) and listen.tls is not None and listen.tls.cert_auto and workers > 1:
        raise UsageError(
            _(
                "--workers {workers}: with cert=auto each worker would make its own certificate, and "
                "clients would see a different pin on each connection; give cert=FILE (and key=FILE), "
                "or use --workers 1 (the default)"
            ).format(workers=workers)
        )
    if not isinstance(listen, InetAddress):
        if listen.is_stream:
            line = _(
                "--workers {workers}: {listen} is a unix socket, which processes cannot share with "
                "SO_REUSEPORT; use --workers 1 (the default) or a tcp or udp LISTEN address"
            )
        else:
            line = _(
                "--workers {workers}: {listen} is not a socket with SO_REUSEPORT; use --workers 1 "
                "(the default) or a tcp or udp LISTEN address"
            )
        raise UsageError(line.format(workers=workers, listen=listen))
    return listen


def _bind(listen: SocketAddress, workers: int, backlog: int) -> list[tuple[socket.socket, SocketAddress]]:
    """One listening socket per worker on the same port (all closed again if one cannot be)."""
    listeners: list[tuple[socket.socket, SocketAddress]] = []
    try:
        address: SocketAddress = listen
        for _worker_index in range(workers):
            if listen.is_stream:
                sock, real, _owned = open_listener(address, backlog=backlog, mode=None, reuse_port=True)
            else:
                sock, real, _owned = open_datagram(address, mode=None, reuse_port=True)
            listeners.append((sock, real))
            address = real  # port 0 resolved: the others join the same port
    except BaseException:
        for sock, _real in listeners:
            sock.close()
        raise
    return listeners


def _fork(
    listeners: list[tuple[socket.socket, SocketAddress]],
    config: RelayConfig,
    worker_events: Callable[[int], EventSink],
    held: set[int | signal.Signals],
) -> list[int]:
    """Fork a worker per listener; the pids.  If a fork fails, the workers started are stopped,
    the listeners closed and the signal mask restored before the error is raised."""
    pids: list[int] = []
    for index, pair in enumerate(listeners, start=1):
        try:
            pid = os.fork()
        except BaseException:
            for started in pids:  # no fork left (EAGAIN, ENOMEM): stop the ones running
                with contextlib.suppress(ProcessLookupError):
                    os.kill(started, signal.SIGTERM)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(started, 0)
            for sock, _real in listeners:
                sock.close()
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            raise
        if pid == 0:
            _worker(index, pair, listeners, config, worker_events(index), held)
        pids.append(pid)
    return pids


def _worker(
    index: int,
    pair: tuple[socket.socket, SocketAddress],
    listeners: list[tuple[socket.socket, SocketAddress]],
    config: RelayConfig,
    events: EventSink,
    held: set[int | signal.Signals],
) -> NoReturn:
    """The worker process: its own process group, its listener only, a relay; never returns."""
    status = 1
    try:
        os.setpgid(0, 0)
        _die_with_parent()
        for other, _real in listeners:
            if other is not pair[0]:
                other.close()
        relay = Relay(config, events=events, listener=pair)
        for signum in STOP_SIGNALS:
            signal.signal(signum, _stopper(relay))
        signal.signal(RELOAD_SIGNAL, lambda signum, frame: relay.reload())
        # Whatever the parent's thread had blocked: the worker has one thread, and its stop
        # signals (forwarded by the parent, or the parent-death SIGTERM) must reach it.
        signal.pthread_sigmask(signal.SIG_SETMASK, held - set(_FORWARDED))
        status = relay.run(announce=False).exit_status
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(status)


def _wait(pids: list[int], held: set[int | signal.Signals]) -> int:
    """Forward stop signals to the workers until all have exited; 1 if any failed, else 0.

    The wait is a ``poll`` of the signal wake-up pipe, never a bare ``waitpid``: Python runs a
    signal handler in the main thread between bytecodes, so a stop signal that lands after its
    last look but before the wait blocks (right after ``listening on``, or after a worker
    exits), or that another thread takes, would leave a waiting parent asleep for ever and its
    workers running.  The C-level handler writes each signal's number to the pipe whenever and
    wherever it arrives; SIGCHLD does too, for the exits.  The Python handlers do nothing: the
    numbers read from the pipe are what is forwarded, once per signal (a second one cuts)."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous = {s: signal.signal(s, _ignore) for s in (*_FORWARDED, signal.SIGCHLD)}
    wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    # The exits must reach this thread even if SIGCHLD came blocked from whoever started us.
    signal.pthread_sigmask(signal.SIG_SETMASK, held - {signal.SIGCHLD})
    running = list(pids)
    status = 0
    try:
        poller = select.poll()
        poller.register(read_end, select.POLLIN)
        while True:
            status |= _reap(running)
            if not running:
                return status
            poller.poll()
            for signum in _arrived(read_end):
                if signum in _FORWARDED:
                    _forward(running, signum)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        signal.set_wakeup_fd(wakeup)
        for signum, old in previous.items():
            signal.signal(signum, old)
        os.close(read_end)
        os.close(write_end)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """The Python handler while the parent waits: the wake-up pipe carries the signal."""


def _arrived(read_end: int) -> bytes:
    """The numbers of the signals that came since the last call (the pipe's bytes)."""
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(read_end, 512):
            data += chunk
    return data


def _forward(running: list[int], signum: int) -> None:
    """Send ``signum`` to the workers not yet reaped (a reaped pid may be someone else's now)."""
    for pid in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _reap(running: list[int]) -> int:
    """Collect the workers that have exited, removing them from ``running``; 1 if one failed."""
    failed = 0
    for pid in list(running):
        try:
            done, code = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped by the system already (SIGCHLD was ignored): unknown
            done, code = pid, 1 << 8
        if done:
            running.remove(pid)
            failed |= os.waitstatus_to_exitcode(code) != 0
    return failed

"""enchufe._speedups.Poller: select.epoll's behaviour, and the shortcuts (the relay's compiled
small-message path), on real socket pairs and TCP connections.

The relay's own tests run with and without it (tests/conftest.py: ``both_paths``); these check
the poller by itself: what it serves, what it hands over and how, and that it behaves as
select.epoll where it is one.
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import signal
import socket
import struct
import sysconfig
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from enchufe import _speedups
except ImportError:  # no compiler at install: the pure-Python path only (tested everywhere)
    _speedups = None  # type: ignore[assignment]

needs_speedups = pytest.mark.skipif(_speedups is None, reason="enchufe._speedups is not built here")

IN = select.EPOLLIN


def test_the_compiled_path_is_built_wherever_a_compiler_and_headers_are() -> None:
    """The extension is optional at install; where it could be built it must have been, or
    the compiled path (the one most users run) would go untested without anyone noticing."""
    include = sysconfig.get_paths()["include"]
    if shutil.which(sysconfig.get_config_var("CC").split()[0] or "cc") is None:
        pytest.skip("no C compiler here: the pure-Python path is the one installed")
    if not (Path(include) / "Python.h").exists():
        pytest.skip(f"no Python headers in {include}: the pure-Python path is the one installed")
    assert _speedups is not None, "a compiler and headers are here, yet enchufe._speedups is missing"


@pytest.fixture
def poller() -> Iterator[_speedups.Poller]:
    if _speedups is None:
        pytest.skip("enchufe._speedups is not built here")
    p = _speedups.Poller()
    yield p
    p.close()


@pytest.fixture
def pairs() -> Iterator[tuple[socket.socket, socket.socket, socket.socket, socket.socket]]:
    """(client, src, dst, server): bytes written on client arrive at src; what is sent on
    dst arrives at server.  src and dst are non-blocking, as the relay's are."""
    client, src = socket.socketpair()
    dst, server = socket.socketpair()
    for sock in (src, dst):
        sock.setblocking(False)
    for sock in (client, server):
        sock.settimeout(5.0)
    yield client, src, dst, server
    for sock in (client, src, dst, server):
        sock.close()


def armed(poller: _speedups.Poller, src: socket.socket, dst: socket.socket, size: int = 65536) -> int:
    """``src`` registered for reading, with a shortcut to ``dst``: its descriptor."""
    poller.register(src.fileno(), IN)
    poller.shortcut(src.fileno(), dst.fileno(), size)
    return src.fileno()


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        a = socket.create_connection(listener.getsockname(), timeout=5.0)
        b, _ = listener.accept()
    b.setblocking(False)
    return a, b


# ----------------------------------------------------------------------------- as select.epoll


@needs_speedups
def test_it_refuses_what_select_epoll_refuses(poller: _speedups.Poller) -> None:
    a, b = socket.socketpair()
    with a, b:
        poller.register(a.fileno(), IN)
        with pytest.raises(FileExistsError):
            poller.register(a, IN)  # a socket object is taken too, as by select.epoll
        with pytest.raises(FileNotFoundError):
            poller.modify(b.fileno(), IN)
        with pytest.raises(FileNotFoundError):
            poller.unregister(b.fileno())
        with pytest.raises(ValueError, match="maxevents"):
            poller.poll(0, 0)
        with open(os.devnull, "rb") as null, pytest.raises(PermissionError):
            poller.register(null.fileno(), IN)  # epoll refuses regular files and /dev/null
    poller.close()
    assert poller.closed
    with pytest.raises(ValueError, match="closed"):
        poller.poll(0)


@needs_speedups
def test_without_shortcuts_it_reports_what_select_epoll_reports(poller: _speedups.Poller) -> None:
    a, b = socket.socketpair()
    with a, b:
        reference = select.epoll()
        try:
            for p in (poller, reference):
                p.register(b.fileno(), IN | select.EPOLLOUT)
            assert poller.poll(0) == reference.poll(0) == [(b.fileno(), select.EPOLLOUT)]
            a.send(b"x")
            assert poller.poll(0) == reference.poll(0) == [(b.fileno(), IN | select.EPOLLOUT)]
            for p in (poller, reference):
                p.modify(b.fileno(), IN)
            a.close()
            assert poller.poll(0) == reference.poll(0)  # EPOLLIN | EPOLLHUP: the peer is gone
            assert poller.poll(0.01) == poller.poll(None, 8) != []
        finally:
            reference.close()


@needs_speedups
def test_a_signal_handler_that_raises_interrupts_a_wait(poller: _speedups.Poller) -> None:
    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Interrupted):
            poller.poll(10.0)  # would wait 10 s: the signal ends it
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------------------- shortcuts


@needs_speedups
def test_a_shortcut_serves_a_message_without_returning_to_python(poller: _speedups.Poller, pairs) -> None:
    client, src, dst, server = pairs
    armed(poller, src, dst)
    for size in (1, 100, 4000):
        client.sendall(b"m" * size)
        assert poller.poll(0.2) == []  # served: nothing for Python, even after the wait
        assert server.recv(65536) == b"m" * size
    moved, last = poller.moved(src.fileno())
    assert moved == 4101 and last > 0
    assert poller.moved(src.fileno())[0] == 0  # counted from zero again
    client.sendall(b"z")
    assert poller.poll(0.2) == []
    assert poller.unshortcut(src.fileno()) == 1
    client.sendall(b"y")
    assert poller.poll(0.2) == [(src.fileno(), IN)]  # no shortcut now: Python's event again


@needs_speedups
def test_eof_is_handed_over_with_what_was_moved_before(poller: _speedups.Poller, pairs) -> None:
    client, src, dst, server = pairs
    armed(poller, src, dst)
    client.sendall(b"hello")
    assert poller.poll(0.2) == []
    client.shutdown(socket.SHUT_WR)
    assert poller.poll(0.2) == [(src.fileno(), IN | _speedups.HANDED)]
    assert poller.take(src.fileno()) == (b"", 0, 0, 0, 5)
    with pytest.raises(LookupError):
        poller.take(src.fileno())  # taken once
    assert poller.poll(0.05) == [(src.fileno(), IN)]  # the shortcut is gone with the hand-over
    assert server.recv(100) == b"hello"


@needs_speedups
def test_a_read_that_fills_the_buffer_is_handed_over_unsent(poller: _speedups.Poller, pairs) -> None:
    client, src, dst, _server = pairs
    armed(poller, src, dst, 16)
    client.sendall(b"0123456789abcdefXYZ")
    assert poller.poll(0.2) == [(src.fileno(), IN | _speedups.HANDED)]
    assert poller.take(src.fileno()) == (b"0123456789abcdef", 0, 0, 0, 0)  # bulk: Python's way
    assert src.recv(100) == b"XYZ"


@needs_speedups
def test_handed_says_whether_a_hand_over_waits_to_be_taken(poller: _speedups.Poller, pairs) -> None:
    """The relay collects a connection's hand-overs before either of its pumps reads (a later
    event of the batch may bring them): ``handed`` is how it knows one is waiting."""
    client, src, dst, server = pairs
    armed(poller, src, dst, 16)
    assert not poller.handed(src.fileno()) and not poller.handed(10**6)  # none; past the table
    client.sendall(b"ping")
    assert poller.poll(0.2) == [] and server.recv(100) == b"ping"  # served: nothing waits
    assert not poller.handed(src.fileno())
    client.sendall(b"0123456789abcdefXYZ")
    assert poller.poll(0.2) == [(src.fileno(), IN | _speedups.HANDED)]
    assert poller.handed(src.fileno())
    assert poller.take(src.fileno())[0] == b"0123456789abcdef"
    assert not poller.handed(src.fileno())
    with pytest.raises(ValueError):
        poller.handed(-1)


@needs_speedups
def test_a_send_that_takes_part_hands_over_the_rest(poller: _speedups.Poller, pairs) -> None:
    client, src, dst, _server = pairs
    dst.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    filled = 0
    while True:  # fill dst's queue (bounded by the kernel's buffers)
        try:
            filled += dst.send(b"f" * 4096)
        except BlockingIOError:
            break
    armed(poller, src, dst)
    client.sendall(b"q" * 1000)
    ((fd, events),) = poller.poll(0.2)
    assert (fd, events) == (src.fileno(), IN | _speedups.HANDED)
    data, sent, read_errno, send_errno, moved = poller.take(src.fileno())
    assert data == b"q" * 1000 and sent < 1000 and (read_errno, send_errno, moved) == (0, 0, 0)
    assert filled > 0


@needs_speedups
def test_a_failed_send_is_handed_over_with_its_errno(poller: _speedups.Poller, pairs) -> None:
    client, src, dst, server = pairs
    server.close()  # dst's peer is gone: sending fails (EPIPE), and no SIGPIPE kills us
    armed(poller, src, dst)
    client.sendall(b"lost")
    assert poller.poll(0.2) == [(src.fileno(), IN | _speedups.HANDED)]
    data, sent, read_errno, send_errno, _moved = poller.take(src.fileno())
    assert (data, sent, read_errno) == (b"lost", 0, 0)
    assert send_errno in (errno.EPIPE, errno.ECONNRESET)


@needs_speedups
def test_a_reset_is_handed_over_as_a_failed_read(poller: _speedups.Poller) -> None:
    peer, src = tcp_pair()
    dst, server = socket.socketpair()
    with peer, src, dst, server:
        dst.setblocking(False)
        armed(poller, src, dst)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()  # RST
        events = poller.poll(1.0)
        assert events and events[0][0] == src.fileno()
        if events[0][1] == IN | _speedups.HANDED:  # epoll may add EPOLLHUP|EPOLLERR: Python's then
            data, sent, read_errno, _send_errno, _moved = poller.take(src.fileno())
            assert (data, sent, read_errno) == (b"", 0, errno.ECONNRESET)
        else:
            assert events[0][1] & select.EPOLLERR


@needs_speedups
def test_a_descriptor_registered_anew_has_no_shortcut(poller: _speedups.Poller, pairs) -> None:
    """Its number may belong to another connection now: the old shortcut must not serve it."""
    client, src, dst, _server = pairs
    armed(poller, src, dst)
    poller.unregister(src.fileno())
    poller.register(src.fileno(), IN)
    client.sendall(b"new owner")
    assert poller.poll(0.2) == [(src.fileno(), IN)]
    assert poller.moved(src.fileno()) == (0, 0.0)


@needs_speedups
def test_only_plain_readability_is_served(poller: _speedups.Poller, pairs) -> None:
    """An event with more than EPOLLIN in it (writable too, a hang-up) is Python's."""
    client, src, dst, _server = pairs
    poller.register(src.fileno(), IN | select.EPOLLOUT)
    poller.shortcut(src.fileno(), dst.fileno(), 65536)
    client.sendall(b"x")
    assert poller.poll(0.2) == [(src.fileno(), IN | select.EPOLLOUT)]
    assert src.recv(10) == b"x"


@needs_speedups
def test_bad_shortcuts_are_refused(poller: _speedups.Poller) -> None:
    with pytest.raises(ValueError):
        poller.shortcut(-1, 3, 100)
    with pytest.raises(ValueError):
        poller.shortcut(3, 4, 0)
    with pytest.raises(ValueError):
        poller.shortcut(3, 4, 1 << 30)
    with pytest.raises(ValueError):
        poller.moved(-5)
    assert poller.unshortcut(1000) == 0  # never had one


# ----------------------------------------------------------------------------- datagram shortcuts


def _datagram_pair(kind: str, folder: Path) -> tuple[socket.socket, socket.socket]:
    """(listener, client): a bound non-blocking listener and a client connected to it, with an
    address of its own (the relay's listener and one of its senders)."""
    if kind in ("udp4", "udp6"):
        family, host = (socket.AF_INET, "127.0.0.1") if kind == "udp4" else (socket.AF_INET6, "::1")
        listener = socket.socket(family, socket.SOCK_DGRAM)
        listener.bind((host, 0))
        client = socket.socket(family, socket.SOCK_DGRAM)
        client.bind((host, 0))
    else:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if kind == "unixgram":
            listener.bind(str(folder / "l.sock"))
            client.bind(str(folder / "c.sock"))
        else:  # abstract names
            listener.bind(f"\0enchufe-test-l-{os.getpid()}")
            client.bind(f"\0enchufe-test-c-{os.getpid()}")
    listener.setblocking(False)
    client.settimeout(5.0)
    client.connect(listener.getsockname())
    return listener, client


@needs_speedups
@pytest.mark.parametrize("kind", ["udp4", "udp6", "unixgram", "abstract"])
def test_a_sender_is_named_as_recvfrom_names_it_and_its_route_serves_it(
    poller: _speedups.Poller, kind: str, tmp_path: Path
) -> None:
    listener, client = _datagram_pair(kind, tmp_path)
    upstream, target = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with listener, client, upstream, target:
        target.settimeout(5.0)
        lfd = listener.fileno()
        poller.register(lfd, IN)
        poller.datagrams_in(lfd, 2048, 100)
        client.send(b"who am i")
        assert poller.poll(1.0) == [(lfd, IN | _speedups.HANDED)]  # no route: Python's
        data, size, sender, read_errno, send_errno, left = poller.take_datagram(lfd)
        assert (data, size, read_errno, send_errno, left) == (b"who am i", 8, 0, 0, 99)
        client.send(b"again")
        assert listener.recvfrom(100) == (b"again", sender)  # the very key Python's table uses
        poller.route(lfd, sender, upstream.fileno())
        poller.datagrams_in(lfd, 2048, 100)
        for n in range(3):
            client.send(b"routed %d" % n)
            assert poller.poll(0.2) == []  # served
            assert target.recv(100) == b"routed %d" % n
        ((fd, up, up_count, down, down_count, last),) = poller.dirty()
        assert (fd, up, up_count, down, down_count) == (upstream.fileno(), 24, 3, 0, 0) and last > 0
        assert poller.dirty() == []  # counted from zero again
        poller.unroute(lfd, sender)
        client.send(b"unrouted")
        assert poller.poll(1.0) == [(lfd, IN | _speedups.HANDED)]


@needs_speedups
def test_replies_go_to_the_sender_the_last_request_came_from_and_budgets_end(
    poller: _speedups.Poller, tmp_path: Path
) -> None:
    listener, client = _datagram_pair("udp4", tmp_path)
    upstream, target = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with listener, client, upstream, target:
        lfd, ufd = listener.fileno(), upstream.fileno()
        target.settimeout(5.0)
        for fd in (lfd, ufd):
            poller.register(fd, IN)
        poller.replies(ufd, lfd, 2048, 10)
        target.send(b"early")  # no request served yet: no address to answer
        assert poller.poll(1.0) == [(ufd, IN | _speedups.HANDED)]
        assert poller.take_datagram(ufd)[:2] == (b"early", 5)
        poller.datagrams_in(lfd, 2048, 10)
        client.send(b"hello")  # a new sender, handed over (its route is made below)
        assert poller.poll(1.0) == [(lfd, IN | _speedups.HANDED)]
        sender = poller.take_datagram(lfd)[2]
        poller.route(lfd, sender, ufd)
        poller.datagrams_in(lfd, 2048, 2)
        client.send(b"request")
        assert poller.poll(0.2) == [] and target.recv(100) == b"request"
        poller.replies(ufd, lfd, 2048, 2)
        target.send(b"reply")
        assert poller.poll(0.2) == [] and client.recv(100) == b"reply"
        target.send(b"too large" * 300)  # over the size: handed over, cut to nothing, sized
        assert poller.poll(1.0) == [(ufd, IN | _speedups.HANDED)]
        assert poller.take_datagram(ufd)[:2] == (b"", 2700)
        poller.replies(ufd, lfd, 2048, 0)  # a budget spent: the event is Python's, unread
        target.send(b"x")
        assert poller.poll(0.2) == [(ufd, IN)]
        assert poller.disarm(ufd) == 0
        assert upstream.recv(10) == b"x"


def test_enchufe_pure_python_turns_the_compiled_path_off() -> None:
    """The documented switch (README, man page ENVIRONMENT): a relay process started with it
    runs the pure-Python path."""
    import subprocess
    import sys

    probe = "from enchufe.relay.engine import COMPILED, Loop; print(COMPILED, Loop().shortcuts)"
    env = {**os.environ, "ENCHUFE_PURE_PYTHON": "1"}
    off = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=30)
    assert off.stdout.split() == ["False", "False"], off.stderr
    env.pop("ENCHUFE_PURE_PYTHON")
    on = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=30)
    expected = "True" if _speedups is not None else "False"
    assert on.stdout.split() == [expected, expected], on.stderr


@needs_speedups
def test_spin_is_bounded_and_a_served_turn_with_it_still_returns_what_python_must_see(
    poller: _speedups.Poller, pairs
) -> None:
    """After a turn its shortcuts served, the poller looks again without sleeping for ``spin``
    seconds: an event for Python that comes meanwhile is returned, and the timeout holds."""
    client, src, dst, server = pairs
    with pytest.raises(ValueError):
        poller.spin = 1.0
    with pytest.raises(ValueError):
        poller.spin = -0.001
    poller.spin = 0.005
    other_a, other_b = socket.socketpair()
    with other_a, other_b:
        armed(poller, src, dst)
        poller.register(other_b.fileno(), IN)
        client.sendall(b"served")

        def later() -> None:
            time.sleep(0.002)
            other_a.send(b"python's")

        thread = threading.Thread(target=later)
        thread.start()
        events = poller.poll(1.0)
        thread.join()
        assert server.recv(100) == b"served"
        if events == []:  # the second event came after the spin: it is there at the next wait
            events = poller.poll(1.0)
        assert events == [(other_b.fileno(), IN)]
        assert other_b.recv(100) == b"python's"
        client.sendall(b"again")
        assert poller.poll(0.05) == []  # served, then nothing: the timeout ends the spin too
        assert server.recv(100) == b"again"


@needs_speedups
def test_after_a_turn_python_served_the_next_wait_looks_before_it_sleeps(poller: _speedups.Poller) -> None:
    """A turn that returned events to Python counts as activity as much as a served one: the
    next wait looks for ``spin`` seconds before it sleeps (the answer to what Python just passed
    on often comes within it).  A wait after a quiet turn sleeps at once: an idle loop costs no
    CPU.  Seen as the CPU time the waits take."""
    poller.spin = 0.01
    a, b = socket.socketpair()
    with a, b:
        poller.register(b.fileno(), IN)

        def cpu_of_a_quiet_wait() -> float:
            started = time.thread_time()
            assert poller.poll(0.03) == []
            return time.thread_time() - started

        assert cpu_of_a_quiet_wait() < 0.002  # after the registration: no turn with events yet
        a.send(b"x")
        assert poller.poll(1.0) == [(b.fileno(), IN)]
        b.recv(1)
        assert cpu_of_a_quiet_wait() > 0.001  # looked for up to 10 ms (less if descheduled)
        assert cpu_of_a_quiet_wait() < 0.002  # the last turn was quiet: slept at once


@needs_speedups
def test_the_look_shrinks_to_none_when_events_come_late_and_grows_when_they_come_soon(
    poller: _speedups.Poller,
) -> None:
    """``spin`` is the longest look; the look itself (``spin_now``) adapts, as KVM's halt
    polling does: a sleep after a turn that a look of ``spin`` would have covered doubles it, a
    longer one halves it, to none.  A loop whose next event comes late stops looking."""
    poller.spin = 0.01
    assert poller.spin_now == 0.01
    a, b = socket.socketpair()
    with a, b:
        poller.register(b.fileno(), IN)

        def event_after(delay: float) -> None:
            """A wait whose event comes ``delay`` seconds after it began (after the last one's
            turn: every wait here follows a turn with events)."""
            timer = threading.Timer(delay, a.send, (b"y",))
            timer.start()
            try:
                assert poller.poll(2.0) == [(b.fileno(), IN)]
            finally:
                timer.join()
            b.recv(1)

        event_after(0.05)  # the first wait of all follows no turn: it sleeps at once
        assert poller.spin_now == 0.01
        for expected in (0.005, 0.0025, 0.00125, 0.000625, 0.0):  # 50 ms each: longer than spin
            event_after(0.05)
            assert poller.spin_now == pytest.approx(expected)
        event_after(0.001)  # within what a look of spin would have covered: an eighth of spin
        assert poller.spin_now == pytest.approx(0.01 / 8)
        event_after(0.004)  # looked 1.25 ms, then slept: 4 ms in all, still within spin
        assert poller.spin_now == pytest.approx(0.01 / 4)
        poller.spin = 0.0
        event_after(0.001)  # no look at all: nothing adapts
        assert poller.spin_now == 0.0


@pytest.mark.parametrize(
    ("value", "expected"), [("0", "0.0"), ("30", "3e-05"), ("abc", "0.0001"), ("99999", "0.0001")]
)
def test_enchufe_spin_us_sets_the_spin_within_its_range(value: str, expected: str) -> None:
    """ENCHUFE_SPIN_US (README, man page): 0 to 10000 microseconds; anything else is the
    default (100 µs)."""
    import subprocess
    import sys

    if _speedups is None:
        pytest.skip("enchufe._speedups is not built here")
    probe = "from enchufe.relay.engine import Loop; print(Loop()._epoll.spin)"
    env = {**os.environ, "ENCHUFE_SPIN_US": value}
    env.pop("ENCHUFE_PURE_PYTHON", None)
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == expected, done.stderr

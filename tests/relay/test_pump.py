"""One direction of a relayed stream, on socket pairs: splice and copy, EOF, backpressure, resets."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
from collections.abc import Iterator

import pytest

from enchufe import trace
from enchufe.relay import pools as pools_module
from enchufe.relay import pump as pump_module
from enchufe.relay.pump import Pools, Pump


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    return a, b


@pytest.fixture(params=["unix", "tcp"])
def pairs(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[socket.socket, socket.socket, socket.socket, socket.socket]]:
    """writer → src (pumped) → dst → reader: two connected pairs of the same kind."""
    make = socket.socketpair if request.param == "unix" else _tcp_pair
    writer, src = make()
    dst, reader = make()
    for sock in (src, dst):
        sock.setblocking(False)
    for sock in (writer, reader):
        sock.settimeout(10)
    try:
        yield writer, src, dst, reader
    finally:
        for sock in (writer, src, dst, reader):
            sock.close()


@pytest.fixture(params=[False, True], ids=["quiet", "traced"])
def narration(request: pytest.FixtureRequest) -> Iterator[list[str] | None]:
    """Each pump path runs twice: with tracing off (the pump makes the system calls itself) and
    on (through the narrated calls); the lines emitted then, or None while quiet."""
    if not request.param:
        yield None
        return
    lines: list[str] = []
    trace.enable(lines.append)
    try:
        yield lines
    finally:
        trace.disable()


def _run_until_idle(pump: Pump) -> int:
    moved = 0
    for _ in range(10_000):
        n = pump.run()
        moved += n
        if not n:
            return moved
    raise AssertionError("the pump never went idle")


@pytest.mark.parametrize("use_splice", [True, False], ids=["splice", "copy"])
def test_bytes_then_eof_pass_through(
    pairs: tuple[socket.socket, ...], use_splice: bool, narration: list[str] | None
) -> None:
    writer, src, dst, reader = pairs
    pools = Pools()
    pump = Pump(src, dst, pools, use_splice=use_splice)
    payload = os.urandom(1_000_000)
    view = memoryview(payload)
    writer.setblocking(False)
    reader.setblocking(False)
    got = bytearray()
    for _ in range(100_000):
        if view:
            with contextlib.suppress(BlockingIOError):
                view = view[writer.send(view) :]
            if not view:
                writer.shutdown(socket.SHUT_WR)
        pump.run()
        try:
            while chunk := reader.recv(1 << 20):
                got += chunk
        except BlockingIOError:
            continue
        break  # EOF: the pump shut down dst's write side
    assert bytes(got) == payload
    assert pump.done and pump.eof and pump.in_flight == 0
    assert pump.pipe is None  # given back as soon as it was empty
    assert pools.idle_pipes == (1 if use_splice else 0)
    pools.close()
    assert pools.pipes_open == 0
    if narration is not None:
        _assert_narrated(narration, src.fileno(), dst.fileno(), use_splice)


def _assert_narrated(lines: list[str], src: int, dst: int, use_splice: bool) -> None:
    """Both halves of the transfer were narrated, in the calls of the path taken."""
    if use_splice:
        into, out_of = f"splice(fd {src}, fd ", f", fd {dst}, "
        assert any(line.startswith(into) for line in lines), lines[:5]
        assert any(line.startswith("splice(") and out_of in line for line in lines), lines[:5]
    else:
        assert any(line.startswith(f"read(fd {src}, ") for line in lines), lines[:5]
        assert any(line.startswith(f"write(fd {dst}, ") for line in lines), lines[:5]
        assert not any(line.startswith("splice(") for line in lines)


@pytest.mark.parametrize("mode", ["splice", "copy", "bulk"])
def test_a_stalled_reader_stops_the_reads(pairs: tuple[socket.socket, ...], mode: str) -> None:
    """Once the buffer in use is full, the pump asks for no read at all (a read interest left armed
    would wake the relay for nothing as long as the reader stalls), whatever the buffer: a pipe,
    a copy buffer, or a bulk buffer (used while splicing is on, towards TCP)."""
    writer, src, dst, reader = pairs
    use_splice = mode != "copy"
    pools = Pools(bulk_size=256 * 1024)
    pump = Pump(src, dst, pools, use_splice=use_splice, bulk=mode == "bulk")
    writer.setblocking(False)
    pushed = 0
    chunk = b"x" * 65536
    # Push until everything is full: writer's buffer, src, the pump, dst, reader's buffer.
    for _ in range(2000):
        try:
            pushed += writer.send(chunk)
        except BlockingIOError:
            if not pump.run():
                break
    else:
        raise AssertionError("nothing pushed back")
    for _ in range(3):  # a pipe may run out of slots before bytes: the next read says EAGAIN
        pump.run()
    assert not pump.wants_read  # full: no more reading from src
    assert pump.wants_write
    if mode == "bulk":
        assert pump.view is not None and pools.bulk_in_use == 1
        bound = pools.bulk_size
    else:
        bound = pump.pipe.capacity if use_splice and pump.pipe else pools.copy_size
    assert 0 < pump.in_flight <= bound
    # The reader resumes: everything arrives.
    writer.setblocking(True)
    writer.shutdown(socket.SHUT_WR)
    received = 0
    reader.setblocking(False)
    while not pump.done or received < pushed:
        pump.run()
        try:
            while data := reader.recv(1 << 20):
                received += len(data)
        except BlockingIOError:
            pass
    assert received == pushed
    pools.close()


def test_a_reset_is_raised_with_its_side() -> None:
    writer, src = _tcp_pair()
    dst, reader = socket.socketpair()
    try:
        src.setblocking(False)
        dst.setblocking(False)
        pump = Pump(src, dst, Pools())
        writer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        with pytest.raises(ConnectionResetError):
            for _ in range(100):
                pump.run()
        assert pump.failed_on == "read"
        pump.discard()
    finally:
        for sock in (writer, src, dst, reader):
            sock.close()


def test_no_pipe_left_falls_back_to_copying(
    pairs: tuple[socket.socket, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, src, dst, reader = pairs

    def no_pipe(size: int) -> tuple[int, int, int]:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(pools_module, "make_pipe", no_pipe)
    pump = Pump(src, dst, Pools())
    writer.sendall(b"hello")
    _run_until_idle(pump)
    assert not pump.use_splice
    assert reader.recv(5) == b"hello"


def test_a_kind_splice_cannot_serve_falls_back_to_copying(
    pairs: tuple[socket.socket, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, src, dst, reader = pairs

    def unsupported(src_fd: int, dst_fd: int, count: int, flags: int = 0) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(pump_module, "traced_splice", unsupported)
    monkeypatch.setattr(pump_module, "_os_splice", unsupported)
    pools = Pools()
    pump = Pump(src, dst, pools)
    writer.sendall(b"hello")
    _run_until_idle(pump)
    assert not pump.use_splice
    assert reader.recv(5) == b"hello"
    assert pools.idle_pipes == 1  # the unused pipe went back to the pool
    pools.close()


@pytest.mark.parametrize("use_splice", [True, False], ids=["splice", "copy"])
def test_pipes_as_source_and_destination(use_splice: bool, narration: list[str] | None) -> None:
    """Bare descriptors (a child's stdout and stdin): EOF is passed on by the finish callback."""
    src_r, src_w = os.pipe2(os.O_NONBLOCK)
    dst_r, dst_w = os.pipe2(os.O_NONBLOCK)
    finished: list[bool] = []
    pools = Pools()
    try:
        pump = Pump(src_r, dst_w, pools, use_splice=use_splice, finish=lambda: finished.append(True))
        os.write(src_w, b"through pipes")
        os.close(src_w)
        src_w = -1
        _run_until_idle(pump)
        assert pump.done and finished == [True]
        assert os.read(dst_r, 100) == b"through pipes"
        if narration is not None:
            _assert_narrated(narration, src_r, dst_w, use_splice)
    finally:
        for fd in (src_r, src_w, dst_r, dst_w):
            if fd >= 0:
                os.close(fd)
        pools.close()


@pytest.mark.parametrize("use_splice", [True, False], ids=["splice", "copy"])
def test_a_pipe_whose_reader_left_is_drained_into_nothing(
    pairs: tuple[socket.socket, ...], use_splice: bool
) -> None:
    """EPIPE on a pipe destination (a child that stopped reading) is not a reset: what the source
    still sends is read and discarded until its EOF."""
    writer, src, _dst, _reader = pairs
    dst_r, dst_w = os.pipe2(os.O_NONBLOCK)
    os.close(dst_r)
    pools = Pools()
    try:
        pump = Pump(src, dst_w, pools, use_splice=use_splice, finish=lambda: None, dst_is_pipe=True)
        writer.sendall(b"x" * 100_000)
        writer.shutdown(socket.SHUT_WR)
        for _ in range(1000):
            pump.run()
            if pump.done:
                break
        assert pump.done and pump.discarding
        assert pump.discarded == 100_000
    finally:
        os.close(dst_w)
        pools.close()


def test_a_small_message_towards_tcp_takes_no_buffer_of_its_own() -> None:
    """Request/response traffic through a pump that copies (towards TCP): one read into the
    pools' shared hop buffer and one write; no bulk buffer is mapped, no copy buffer taken."""
    writer, src = _tcp_pair()
    dst, reader = _tcp_pair()
    pools = Pools()
    try:
        for sock in (src, dst):
            sock.setblocking(False)
        reader.settimeout(10)
        pump = Pump(src, dst, pools, bulk=True)
        for message in (b"ping", b"x" * 1000, b"pong"):
            writer.sendall(message)
            _wait_readable(src)
            assert pump.run() == len(message)
            assert reader.recv(2000) == message
            assert pump.view is None and pump.pipe is None and not pump.in_flight
        assert (pools.bulk_in_use, pools.idle_bulk, pools.idle_buffers) == (0, 0, 0)
    finally:
        pools.close()
        for sock in (writer, src, dst, reader):
            sock.close()


def test_small_messages_into_a_stalled_reader_then_a_bulk_transfer_all_arrive_in_order() -> None:
    """The small-message path hands what it could not write (a full destination) to the
    pump's own buffer, and a read that fills the hop buffer to the general path: nothing is
    lost or reordered."""
    writer, src = _tcp_pair()
    dst, reader = _tcp_pair()
    pools = Pools(copy_size=4096)
    try:
        for sock in (src, dst):
            sock.setblocking(False)
        dst.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.settimeout(10)
        pump = Pump(src, dst, pools, bulk=True)
        messages = [b"%05d:" % n + b"m" * (n % 97) for n in range(1000)]
        expected = b"".join(messages) + b"B" * 200_000 + b"end"
        received = bytearray()
        handed_over = False
        for message in [*messages, b"B" * 200_000, b"end"]:
            writer.sendall(message)
            for _ in range(10_000):  # until the pump has taken it (the reader drains slowly)
                _wait_readable_or(src, pump)
                pump.run()
                handed_over = handed_over or pump.in_flight > 0
                with contextlib.suppress(BlockingIOError):
                    received += reader.recv(2048, socket.MSG_DONTWAIT)
                if not pump.in_flight and not _readable(src):
                    break
        while len(received) < len(expected):
            pump.run()
            with contextlib.suppress(BlockingIOError):
                received += reader.recv(65536, socket.MSG_DONTWAIT)
            _wait_readable_or(reader, None)
        assert handed_over  # the destination was full at some point: bytes were handed over
        assert bytes(received) == expected
    finally:
        pools.close()
        for sock in (writer, src, dst, reader):
            sock.close()


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def _wait_readable(sock: socket.socket) -> None:
    assert select.select([sock], [], [], 10)[0], "nothing to read after 10 s"


def _wait_readable_or(sock: socket.socket, pump: Pump | None) -> None:
    """Wait a little for ``sock`` to be readable (or for room, while ``pump`` holds bytes)."""
    if pump is not None and pump.in_flight:
        select.select([], [pump.dst_fd], [], 0.01)
    else:
        select.select([sock], [], [], 0.01)

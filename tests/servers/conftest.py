"""Running servers in the test process, and the clients that check them.

* :func:`start` runs a sync (:class:`enchufe.sync.serve.Server`, threads) or async
  (:class:`enchufe.aio.serve.Server`, on asyncio or uvloop) server with any handler in a
  background thread; ``serve`` is the fixture that stops every server a test started.
* The ``*_client`` coroutines are many-clients-at-once checkers: each sends random bytes or
  datagrams and checks every byte that comes back against a sha256.
* ``serve_log`` collects the library's log records, whatever the logging configuration.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import enchufe.aio as aio
from enchufe import TimedOut
from enchufe._serving import ServeStats
from enchufe.aio.serve import Server as AsyncServer
from enchufe.sync.serve import Server as SyncServer
from tests.conftest import connectable

#: Longest any single wait of these tests may last before it counts as a hang.
IO_TIMEOUT = 20.0

SERVER_FLAVOURS = ("sync", "asyncio", "uvloop")


def loop_factory(flavour: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if flavour == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


@pytest.fixture(params=SERVER_FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> str:
    """Each server flavour in turn: threads, asyncio, uvloop (skipped where it is missing)."""
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return str(request.param)


@dataclass
class Running:
    """A server serving in a background thread."""

    flavour: str
    server: Any
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop | None = None
    outcome: list[Any] = field(default_factory=list)

    @property
    def address(self) -> str:
        return connectable(self.server.bound_address)

    @property
    def stats(self) -> ServeStats:
        stats: ServeStats = self.server.stats
        return stats

    def shutdown(self, drain_timeout: float = 10.0) -> None:
        """Ask the server to stop (from the test thread), as a signal handler would."""
        if self.loop is not None:
            if not self.loop.is_closed():
                self.loop.call_soon_threadsafe(self.server.shutdown, drain_timeout)
        else:
            self.server.shutdown(drain_timeout)

    def wait(self, timeout: float = IO_TIMEOUT) -> ServeStats:
        """Wait for ``serve_forever`` to return; its statistics."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the {self.flavour} server did not stop in {timeout} s"
        if isinstance(self.outcome[0], BaseException):
            raise self.outcome[0]
        stats: ServeStats = self.outcome[0]
        return stats

    def stop(self) -> None:
        if self.thread.is_alive():
            self.shutdown(0)
            self.thread.join(IO_TIMEOUT)


def start(flavour: str, address: str, handler: Callable[..., Any], **options: Any) -> Running:
    """Start a ``flavour`` server on ``address`` with ``handler``; returns once it is bound."""
    if flavour == "sync":
        sync_server = SyncServer(address, handler, **options)
        sync_server.start()
        outcome: list[Any] = []

        def serve_sync() -> None:
            try:
                outcome.append(sync_server.serve_forever())
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=serve_sync, name="sync-server", daemon=True)
        thread.start()
        return Running(flavour, sync_server, thread, None, outcome)

    server = AsyncServer(address, handler, **options)
    loop = loop_factory(flavour)()
    started = threading.Event()
    running = Running(flavour, server, threading.Thread(), loop)

    def serve_async() -> None:
        async def main() -> ServeStats:
            try:
                await server.start()
            finally:
                started.set()
            return await server.serve_forever()

        try:
            running.outcome.append(loop.run_until_complete(main()))
        except BaseException as exc:
            running.outcome.append(exc)
        finally:
            loop.close()

    running.thread = threading.Thread(target=serve_async, name=f"{flavour}-server", daemon=True)
    running.thread.start()
    assert started.wait(IO_TIMEOUT)
    if running.outcome:
        raise running.outcome[0]
    return running


@pytest.fixture
def serve() -> Iterator[Callable[..., Running]]:
    """``serve(flavour, address, handler, **options)``: a running server, stopped afterwards."""
    servers: list[Running] = []

    def starter(flavour: str, address: str, handler: Callable[..., Any], **options: Any) -> Running:
        running = start(flavour, address, handler, **options)
        servers.append(running)
        return running

    try:
        yield starter
    finally:
        for running in servers:
            running.stop()


class LogRecords(logging.Handler):
    """The ``enchufe`` log records emitted while a test runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._lock2 = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock2:
            self.records.append(record)

    def messages(self, level: int = logging.DEBUG) -> list[str]:
        with self._lock2:
            return [r.getMessage() for r in self.records if r.levelno >= level]

    def wait_for(self, text: str, timeout: float = IO_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages():
                if text in message:
                    return message
            time.sleep(0.02)
        raise AssertionError(f"no log line with {text!r}; got {self.messages()}")


@pytest.fixture
def serve_log() -> Iterator[LogRecords]:
    logger = logging.getLogger("enchufe")
    handler = LogRecords()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def wait_until(condition: Callable[[], bool], timeout: float = IO_TIMEOUT, what: str = "condition") -> None:
    """Bounded wait for ``condition()`` to hold (the server lives in another thread)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.01)


# --- clients --------------------------------------------------------------------------------------


async def stream_echo_client(address: str, seed: int, max_size: int = 256 * 1024) -> int:
    """Send a random payload in random pieces while reading the echo; check every byte.

    Returns the number of bytes checked.
    """
    rng = random.Random(seed)
    payload = rng.randbytes(rng.randrange(1, max_size))
    async with await aio.connect(address, timeout=IO_TIMEOUT, retries=3, retry_delay=0.05) as conn:
        conn.set_timeout(IO_TIMEOUT)

        async def send() -> None:
            view = memoryview(payload)
            while view:
                n = rng.randrange(1, 65536)
                await conn.send_all(view[:n])
                view = view[n:]
            await conn.shutdown_write()

        sender = asyncio.create_task(send())
        digest, size = hashlib.sha256(), 0
        while data := await conn.recv():
            digest.update(data)
            size += len(data)
        await sender
    assert size == len(payload), f"client {seed}: {size} of {len(payload)} bytes came back"
    assert digest.digest() == hashlib.sha256(payload).digest(), f"client {seed}: corrupted echo"
    return size


async def datagram_echo_client(address: str, seed: int, count: int = 20, max_size: int = 1200) -> int:
    """Send ``count`` random datagrams one at a time; each must come back whole.

    UDP may drop a datagram under load (that is UDP): one not answered within a second is sent
    again; what comes back is still checked byte for byte.  Returns the retransmissions.
    """
    rng = random.Random(seed)
    resent = 0
    async with await aio.connect_datagram(address) as sock:
        for seq in range(count):
            payload = b"%d:%d:" % (seed, seq) + rng.randbytes(rng.randrange(0, max_size))
            for _attempt in range(10):
                await sock.send(payload)
                sock.set_timeout(1.0)
                try:
                    while True:
                        reply = await sock.recv()
                        if reply == payload:
                            break
                        # A late answer to an earlier retransmission: it must be an old one.
                        assert reply.split(b":")[0] == b"%d" % seed, "another client's datagram"
                        assert int(reply.split(b":")[1]) < seq, f"client {seed}: a corrupted datagram"
                    break
                except TimedOut:
                    resent += 1
            else:
                raise AssertionError(f"client {seed}: datagram {seq} never came back")
    return resent


def run_clients(client: Callable[..., Any], address: str, count: int = 50, **options: Any) -> list[Any]:
    """Run ``count`` clients at once on one event loop; their results."""

    async def main() -> list[Any]:
        async with asyncio.timeout(60):
            return list(await asyncio.gather(*(client(address, seed, **options) for seed in range(count))))

    return aio.run(main())


def random_lines(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    return [b"c%d-%d-%s\n" % (seed, i, os.urandom(rng.randrange(1, 40)).hex().encode()) for i in range(count)]

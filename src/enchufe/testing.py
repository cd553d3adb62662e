"""pytest fixtures: real echo, sink and chat servers on any of the six kinds, for your tests.

Installed as a pytest plugin (entry point ``pytest11``), so with enchufe installed::

    def test_my_client(echo_server: EchoServer) -> None:    # from enchufe.testing
        address = echo_server("unixgram")          # a running echo server, its address
        with enchufe.connect_datagram(address) as sock:
            sock.send(b"ping")
            assert sock.recv() == b"ping"

    def test_upload(sink_server):
        sink = sink_server("tcp6")
        ...                                        # sink.digests: sha256 of each connection

Each server runs on its own event loop in a background thread, on loopback (127.0.0.1,
[::1]) or in a short temporary folder for unix sockets, and is stopped when the test ends.
Kinds: ``tcp4 tcp6 udp4 udp6 unix unixgram``, plus ``unix-abstract`` and ``unixgram-abstract``.

Faults on purpose (:mod:`enchufe.faults`), in front of those servers or of your own::

    def test_my_client_retries(echo_server, faulty_relay):
        relay = faulty_relay(echo_server("tcp4"), "reset_peer:timeout=0")
        ...                                        # your client, to relay.address
        relay.set_faults([])                       # the next attempt goes through

    def test_with_toxiproxy_clients(chaos_server):
        requests.post(f"{chaos_server}/proxies", json={...})   # Toxiproxy's HTTP API
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from .address import SocketAddress
from .aio.serve import Datagram, Server
from .aio.stream import Connection
from .servers import ChatRoom, echo_datagram, echo_stream

if TYPE_CHECKING:
    from .faults import FaultyRelay

__all__ = [
    "KINDS",
    "EchoServer",
    "FaultyRelayStarter",
    "RunningServer",
    "ServerStarter",
    "Sink",
    "address_for",
    "start_server",
]

KINDS = ("tcp4", "tcp6", "udp4", "udp6", "unix", "unixgram", "unix-abstract", "unixgram-abstract")

#: How long starting or stopping a fixture server may take before the test fails.
STARTUP_TIMEOUT = 10.0


def address_for(kind: str, folder: str) -> str:
    """A listening address of ``kind`` on loopback (port 0) or in ``folder``."""
    unique = f"enchufe-test-{os.getpid()}-{next(_counter)}"
    addresses = {
        "tcp4": "tcp://127.0.0.1:0",
        "tcp6": "tcp://[::1]:0",
        "udp4": "udp://127.0.0.1:0",
        "udp6": "udp://[::1]:0",
        "unix": f"unix://{folder}/{unique}.sock",
        "unixgram": f"unixgram://{folder}/{unique}.sock",
        "unix-abstract": f"unix:@{unique}",
        "unixgram-abstract": f"unixgram:@{unique}",
    }
    if kind not in addresses:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    return addresses[kind]


_counter = itertools.count(1)


@dataclass
class Sink:
    """Reads everything and keeps only its sha256 (per connection, or per datagram)."""

    digests: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def stream(self, conn: Connection) -> None:
        digest, size = hashlib.sha256(), 0
        while data := await conn.recv():
            digest.update(data)
            size += len(data)
        self._record(digest.hexdigest(), size)

    def datagram(self, datagram: Datagram) -> None:
        self._record(hashlib.sha256(datagram.data).hexdigest(), len(datagram.data))

    def _record(self, digest: str, size: int) -> None:
        with self._lock:
            self.digests.append(digest)
            self.sizes.append(size)


@dataclass
class RunningServer:
    """A server running in a background thread; ``address`` is where clients connect."""

    address: SocketAddress
    server: Server
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    handler_object: Any = None

    @property
    def stats(self) -> Any:
        return self.server.stats

    @property
    def digests(self) -> list[str]:
        """For a sink: the sha256 of each connection's bytes (or each datagram)."""
        assert isinstance(self.handler_object, Sink)
        return self.handler_object.digests

    def stop(self, drain_timeout: float = 0.0) -> None:
        if not self.thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.server.shutdown, drain_timeout)
        self.thread.join(STARTUP_TIMEOUT + drain_timeout)


#: The ``echo_server`` fixture's type, for annotating tests: ``echo_server(kind="tcp4",
#: **options)`` starts an echo server and returns its address.
EchoServer = Callable[..., SocketAddress]

#: The ``sink_server`` and ``chat_server`` fixtures' type: ``sink_server(kind="tcp4",
#: **options)`` returns the :class:`RunningServer`.
ServerStarter = Callable[..., RunningServer]


def start_server(
    kind: str,
    role: str,
    folder: str,
    **options: Any,
) -> RunningServer:
    """Start an ``echo``, ``sink`` or ``chat`` server of ``kind`` in a background thread."""
    address = address_for(kind, folder)
    stream = not kind.startswith(("udp", "unixgram"))
    handler: Callable[..., Awaitable[None] | None]
    handler_object: Any = None
    if role == "echo":
        handler = echo_stream if stream else echo_datagram
    elif role == "sink":
        handler_object = Sink()
        handler = handler_object.stream if stream else handler_object.datagram
    elif role == "chat":
        handler_object = ChatRoom()
        handler = handler_object.stream if stream else handler_object.datagram
    else:
        raise ValueError(f"unknown server role {role!r}; one of echo, sink, chat")
    server = Server(address, handler, **options)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> None:
            try:
                await server.start()
            except BaseException as exc:
                failure.append(exc)
                raise
            finally:
                started.set()
            await server.serve_forever()

        try:
            loop.run_until_complete(main())
        except BaseException:
            pass
        finally:
            loop.close()

    thread = threading.Thread(target=run, name=f"enchufe-{role}-{kind}", daemon=True)
    thread.start()
    if not started.wait(STARTUP_TIMEOUT):
        raise RuntimeError(f"the {role} server on {address} did not start")
    if failure:
        raise failure[0]
    return RunningServer(server.bound_address, server, loop, thread, handler_object)


@pytest.fixture
def enchufe_folder() -> Iterator[str]:
    """A short temporary folder for unix socket files (sun_path holds only 107 bytes)."""
    folder = tempfile.mkdtemp(prefix="enc-", dir="/tmp")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _factory(role: str, folder: str) -> Iterator[Callable[..., Any]]:
    running: list[RunningServer] = []

    def start(kind: str = "tcp4", **options: Any) -> Any:
        server = start_server(kind, role, folder, **options)
        running.append(server)
        return server if role != "echo" else server.address

    try:
        yield start
    finally:
        for server in running:
            server.stop()


@pytest.fixture
def echo_server(enchufe_folder: str) -> Iterator[EchoServer]:
    """``echo_server(kind="tcp4", **options)`` starts an echo server and returns its address."""
    yield from _factory("echo", enchufe_folder)


@pytest.fixture
def sink_server(enchufe_folder: str) -> Iterator[ServerStarter]:
    """``sink_server(kind)`` starts a sink; the result has ``.address`` and ``.digests``."""
    yield from _factory("sink", enchufe_folder)


@pytest.fixture
def chat_server(enchufe_folder: str) -> Iterator[ServerStarter]:
    """``chat_server(kind)`` starts a chat room; the result has ``.address``."""
    yield from _factory("chat", enchufe_folder)


#: The ``faulty_relay`` fixture's type: ``faulty_relay(target, *faults, seed=0, **options)``
#: returns the started :class:`~enchufe.faults.FaultyRelay`.
FaultyRelayStarter = Callable[..., "FaultyRelay"]


@pytest.fixture
def faulty_relay() -> Iterator[FaultyRelayStarter]:
    """``faulty_relay(target, *faults, seed=0, **options)``: a started
    :class:`~enchufe.faults.FaultyRelay` in front of ``target`` (an address, or its text), with
    ``faults`` as ``--fault`` takes them (``"latency:latency=50"``); clients connect to its
    ``.address``.  ``seed`` is 0 unless given: a test's random choices are the same every run.
    ``options`` are :class:`~enchufe.faults.FaultyRelay`'s (``listen``, ``connect_timeout``,
    ``idle_timeout``).  Every relay started is stopped when the test ends (connections cut)."""
    from .faults.api import FaultyRelay

    running: list[FaultyRelay] = []

    def start(target: Any, *faults: Any, seed: int = 0, **options: Any) -> FaultyRelay:
        relay = FaultyRelay(target, faults, seed=seed, **options).start()
        running.append(relay)
        return relay

    try:
        yield start
    finally:
        for relay in running:
            relay.stop()


@pytest.fixture
def chaos_server() -> Iterator[str]:
    """``enchufe chaos`` in-process on a free loopback port: its base URL
    (``http://127.0.0.1:PORT``), for Toxiproxy's clients and plain HTTP requests.  Its proxies
    are stopped, and the API closed, when the test ends."""
    from .faults.chaos_run import ChaosServer

    server = ChaosServer("127.0.0.1", 0)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.close()

"""What only the asyncio API can promise: cancellation, backpressure, waking waiters on close.

Every test runs on the default asyncio loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import random
import socket
import struct
import termios
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import enchufe.aio as aio
from enchufe import ClosedError, TimedOut
from tests.conformance.conftest import _uvloop_factory
from tests.conftest import connectable, kind_params

pytestmark = pytest.mark.timeout(60)

IO_TIMEOUT = 10.0


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[Any]], Any]:
    """``run(coroutine)`` on a fresh loop of the flavour under test."""
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
        factory = _uvloop_factory
    else:
        factory = asyncio.new_event_loop

    def runner(main: Awaitable[Any]) -> Any:
        async def bounded() -> Any:
            async with asyncio.timeout(30):
                return await main

        with asyncio.Runner(loop_factory=factory) as r:
            return r.run(bounded())

    return runner


@contextlib.asynccontextmanager
async def connected(address: str) -> AsyncIterator[tuple[aio.Connection, aio.Connection]]:
    async with (
        await aio.listen(address) as listener,
        await aio.connect(connectable(listener.address), timeout=IO_TIMEOUT) as client,
        await listener.accept() as server,
    ):
        client.set_timeout(IO_TIMEOUT)
        server.set_timeout(IO_TIMEOUT)
        yield client, server


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def unsent_bytes(sock: socket.socket) -> int:
    """Bytes the kernel holds in this socket's send queue (SIOCOUTQ)."""
    raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    return int(struct.unpack("i", raw)[0])


# --- cancellation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", kind_params(("tcp4", "unix")))
def test_cancelled_connect_closes_its_socket(
    run: Callable[[Awaitable[Any]], Any], kind: str, make_address: Callable[[str], str]
) -> None:
    """A connect stuck on a full backlog is cancelled: the socket it opened is closed."""

    async def main() -> None:
        async with await aio.listen(make_address(kind), backlog=0) as listener:
            address = connectable(listener.address)
            # Fill the backlog: nobody accepts, so the kernel queues a few then holds new ones.
            held = []
            try:
                for _ in range(4):
                    held.append(await asyncio.wait_for(aio.connect(address), 0.5))
            except TimeoutError:
                pass
            assert held, "could not connect at all"
            before = open_fds()
            for _ in range(3):
                pending = asyncio.create_task(aio.connect(address))
                await asyncio.sleep(0.1)
                assert not pending.done(), "the backlog was not full: connect did not block"
                assert open_fds() == before + 1  # the socket of the attempt
                pending.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await pending
                assert open_fds() == before
            for conn in held:
                await conn.aclose()

    run(main())


def test_connect_waits_while_a_unix_backlog_is_full(
    run: Callable[[Awaitable[Any]], Any], make_address: Callable[[str], str]
) -> None:
    """A full unix backlog makes connect wait (as a blocking connect does), not fail oddly."""

    async def main() -> None:
        async with await aio.listen(make_address("unix"), backlog=0) as listener:
            address = connectable(listener.address)
            first = await aio.connect(address)
            second = asyncio.create_task(aio.connect(address))
            await asyncio.sleep(0.1)
            assert not second.done()
            accepted = await listener.accept()  # room in the backlog again
            async with await second as conn, await listener.accept() as server:
                await conn.send_all(b"made it")
                assert await server.recv() == b"made it"
            async with await aio.connect(address):  # fills the backlog again
                before = open_fds()
                with pytest.raises(TimedOut):
                    await aio.connect(address, timeout=0.1)  # times out cleanly
                assert open_fds() == before
            await first.aclose()
            await accepted.aclose()

    run(main())


@pytest.mark.parametrize("kind", kind_params(("tcp4", "unix-abstract")))
def test_cancelled_recv_loses_no_bytes(
    run: Callable[[Awaitable[Any]], Any], kind: str, make_address: Callable[[str], str]
) -> None:
    async def main() -> None:
        async with connected(make_address(kind)) as (client, server):
            # A recv cancelled while it waits takes nothing.
            waiting = asyncio.create_task(server.recv())
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await client.send_all(b"first")
            assert await server.recv() == b"first"

            # recv_exactly and recv_until keep what they had read when cancelled.
            await client.send_all(b"abc")
            partial = asyncio.create_task(server.recv_exactly(6))
            await asyncio.sleep(0.05)
            partial.cancel()
            with pytest.raises(asyncio.CancelledError):
                await partial
            await client.send_all(b"def")
            assert await server.recv_exactly(6) == b"abcdef"

            await client.send_all(b"no newline yet")
            line = asyncio.create_task(server.recv_until(b"\n"))
            await asyncio.sleep(0.05)
            line.cancel()
            with pytest.raises(asyncio.CancelledError):
                await line
            await client.send_all(b"; now\n")
            assert await server.recv_until(b"\n") == b"no newline yet; now\n"

            # Cancellation racing with arriving data, many times: every byte arrives once.
            rng = random.Random(4)
            sent = bytearray()
            got = bytearray()
            for i in range(300):
                task = asyncio.create_task(server.recv(rng.choice([1, 7, 65536])))
                chunk = b"%d," % i
                sent += chunk
                await client.send_all(chunk)
                for _ in range(rng.randrange(3)):
                    await asyncio.sleep(0)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    got += await task
            await client.shutdown_write()
            while data := await server.recv():
                got += data
            assert bytes(got) == bytes(sent)

    run(main())


def test_cancelled_recvfrom_loses_no_datagram(
    run: Callable[[Awaitable[Any]], Any], make_address: Callable[[str], str]
) -> None:
    async def main() -> None:
        async with (
            await aio.bind_datagram(make_address("unixgram")) as server,
            await aio.connect_datagram(connectable(server.local_address)) as client,
        ):
            got = []
            for i in range(200):
                task = asyncio.create_task(server.recvfrom())
                await client.send(b"%d" % i)
                for _ in range(i % 3):
                    await asyncio.sleep(0)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    got.append((await task)[0])
            server.set_timeout(0.2)
            with contextlib.suppress(TimedOut):
                while True:
                    got.append(await server.recv())
            assert got == [b"%d" % i for i in range(200)]

    run(main())


def test_close_wakes_pending_waiters(
    run: Callable[[Awaitable[Any]], Any], make_address: Callable[[str], str]
) -> None:
    async def main() -> None:
        async with connected(make_address("tcp4")) as (_client, server):
            reader = asyncio.create_task(server.recv())
            await asyncio.sleep(0.05)
            server.close()
            with pytest.raises(ClosedError):
                await reader
        async with await aio.bind_datagram(make_address("udp4")) as sock:
            waiting = asyncio.create_task(sock.recvfrom())
            await asyncio.sleep(0.05)
            await sock.aclose()
            with pytest.raises(ClosedError):
                await waiting
        listener = await aio.listen(make_address("unix"))
        accepting = asyncio.create_task(listener.accept())
        iterating = asyncio.create_task(_collect(listener))
        await asyncio.sleep(0.05)
        await listener.aclose()
        with pytest.raises(ClosedError):
            await accepting
        assert await iterating == []

    run(main())


async def _collect(listener: aio.Listener) -> list[aio.Connection]:
    return [conn async for conn in listener]


# --- backpressure ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", kind_params(("tcp4", "unix")))
def test_send_all_waits_for_a_slow_reader_and_buffers_nothing(
    run: Callable[[Awaitable[Any]], Any], kind: str, make_address: Callable[[str], str]
) -> None:
    """send_all to a reader that does not read stays pending once the kernel's buffers are
    full, and the process does not grow: no copy of the data is kept in Python."""
    size = 48 * 1024 * 1024
    payload = os.urandom(size)

    async def main() -> None:
        async with connected(make_address(kind)) as (client, server):
            rss_before = rss_bytes()
            sending = asyncio.create_task(client.send_all(payload))
            # Wait until the kernel stops taking bytes (its send queue no longer grows).
            last = -1
            for _ in range(100):
                await asyncio.sleep(0.05)
                queued = unsent_bytes(client.socket)
                if queued == last:
                    break
                last = queued
            assert not sending.done(), "send_all returned although nobody reads"
            await asyncio.sleep(0.3)
            assert not sending.done()
            grown = rss_bytes() - rss_before
            assert grown < 8 * 1024 * 1024, f"the process grew by {grown} bytes while sending"
            # Now read: everything arrives, intact, and send_all completes.
            digest = hashlib.sha256()
            total = 0
            while total < size:
                data = await server.recv()
                assert data
                digest.update(data)
                total += len(data)
            await sending
            assert digest.digest() == hashlib.sha256(payload).digest()

    run(main())


# --- running --------------------------------------------------------------------------------------


def test_run_and_new_event_loop() -> None:
    async def answer() -> str:
        return type(asyncio.get_running_loop()).__module__

    try:
        import uvloop  # noqa: F401
    except ImportError:
        assert aio.run(answer()).startswith("asyncio")
    else:
        assert aio.run(answer()).startswith("uvloop")
        loop = aio.new_event_loop()
        assert type(loop).__module__.startswith("uvloop")
        loop.close()
    assert aio.run(answer(), use_uvloop=False).startswith("asyncio")


def test_the_namespace_is_exactly_its_public_names() -> None:
    """``enchufe.aio`` shows what it offers and nothing it merely uses (asyncio, socket, …)."""
    import enchufe.aio.serve  # noqa: F401  (a submodule users import: it must be listed too)

    # isidentifier(): pytest's assertion rewriting adds "@py_builtins" to modules of a plugin's
    # distribution (enchufe.testing is one), which are not names anyone can import.
    public = {name for name in dir(aio) if not name.startswith("_") and name.isidentifier()}
    assert public == set(aio.__all__)
    assert {"asyncio", "socket", "Any", "annotations", "ConnectPlan"}.isdisjoint(public)


def test_reprs_name_the_asyncio_side(run: Callable[[Awaitable[Any]], Any]) -> None:
    """Each asyncio endpoint names its class as the sync ones do (the datagram socket once
    showed ``<aio.<DatagramSocket …>``, from the sync object it wrapped)."""

    async def main() -> list[str]:
        async with (
            await aio.listen("tcp://127.0.0.1:0") as listener,
            await aio.bind_datagram("udp://127.0.0.1:0") as sock,
        ):
            shown = [repr(listener), repr(sock)]
        return [*shown, repr(sock)]

    listener, sock, closed = run(main())
    assert listener.startswith("<aio.Listener tcp://127.0.0.1:")
    assert sock.startswith("<aio.DatagramSocket udp://127.0.0.1:")
    assert closed.endswith(" closed>")


#: Both connects with no descriptor left, in a child (the limit is the whole process's).
NO_DESCRIPTOR_LEFT = r"""
import os, resource
import enchufe
import enchufe.aio as aio
from enchufe.errors import NetworkError

async def main() -> None:
    # enchufe's public names are imported on first use (enchufe._lazy), and importing a module
    # opens its file: this is about connect's own socket(), so the names are looked up first.
    connects = {"sync": enchufe.connect, "aio": aio.connect}
    async with await aio.listen("tcp://127.0.0.1:0") as listener:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        fillers = []
        for _ in range(64):
            try:
                fillers.append(os.open("/dev/null", os.O_RDONLY))
            except OSError:
                break
        for side in ("sync", "aio"):
            try:
                if side == "sync":
                    connects["sync"](listener.address)
                else:
                    await connects["aio"](listener.address)
            except NetworkError as exc:
                print(side, "NetworkError", exc.errno, exc)
            except OSError as exc:
                print(side, "untranslated", type(exc).__name__, exc)
        for fd in fillers:
            os.close(fd)

aio.run(main(), use_uvloop=False)
"""


def test_connect_with_no_descriptor_left_raises_an_enchufe_error_on_both_sides() -> None:
    """socket() failing (EMFILE) is a NetworkError that names the connect, from aio.connect as
    from enchufe.connect (aio.connect let the raw OSError out)."""
    import errno
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", NO_DESCRIPTOR_LEFT], capture_output=True, text=True, timeout=60, check=True
    )
    lines = done.stdout.splitlines()
    assert [line.split(" ", 3)[:3] for line in lines] == [
        ["sync", "NetworkError", str(errno.EMFILE)],
        ["aio", "NetworkError", str(errno.EMFILE)],
    ], done.stdout
    assert all("cannot connect to tcp://127.0.0.1:" in line for line in lines)

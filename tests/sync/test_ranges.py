"""Every numeric argument of the library has a range: nan, inf, negative, huge, bool or float
where a count is due are one UsageError naming the argument, before any socket is touched (no
bare ValueError, OverflowError or MemoryError, no wait forever); a huge ``recv`` size is read
in bounded chunks, as its "up to" allows."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

import enchufe
import enchufe.aio as aio
from enchufe import UsageError
from enchufe.aio.serve import Server as AsyncServer
from enchufe.sessions import SessionTable
from enchufe.sync.serve import Server as SyncServer

pytestmark = pytest.mark.timeout(60)

BAD_SECONDS = [math.nan, math.inf, -math.inf, -1.0, 1e300, True, "5"]
BAD_COUNTS = [-1, 1.5, True, 2**64, "3"]


def nothing(_arg: object) -> None:
    return None


@pytest.mark.parametrize("value", BAD_SECONDS, ids=repr)
def test_timeouts_and_delays(value: Any, make_address: Callable[[str], str]) -> None:
    listener = enchufe.listen(make_address("tcp4"))
    with listener, enchufe.connect(str(listener.address)) as conn:
        with pytest.raises(UsageError, match="timeout must be a number of seconds"):
            conn.set_timeout(value)
        with enchufe.bind_datagram(make_address("udp4")) as sock, pytest.raises(UsageError, match="timeout"):
            sock.set_timeout(value)
        with pytest.raises(UsageError, match=r"^timeout must be"):
            enchufe.connect(str(listener.address), timeout=value)
        with pytest.raises(UsageError, match=r"^retry_delay must be"):
            enchufe.connect(str(listener.address), retries=1, retry_delay=value)
        with pytest.raises(UsageError, match=r"^idle_timeout must be"):
            SyncServer(make_address("tcp4"), nothing, idle_timeout=value)
        with pytest.raises(UsageError, match=r"^idle_timeout must be"):
            AsyncServer(make_address("tcp4"), nothing, idle_timeout=value)
        with pytest.raises(UsageError, match=r"^idle_timeout must be"):
            SessionTable(idle_timeout=value)
        server = SyncServer(make_address("tcp4"), nothing)
        with server, pytest.raises(UsageError, match=r"^drain_timeout"):
            server.shutdown(value)

    async def main() -> None:
        async with await aio.listen(make_address("tcp4")) as alistener:
            async with await aio.connect(str(alistener.address)) as aconn:
                with pytest.raises(UsageError, match=r"^timeout must be"):
                    aconn.set_timeout(value)
            with pytest.raises(UsageError, match=r"^timeout must be"):
                await aio.connect(str(alistener.address), timeout=value)
            with pytest.raises(UsageError, match=r"^retry_delay must be"):
                await aio.connect(str(alistener.address), retries=1, retry_delay=value)
        async with await aio.bind_datagram(make_address("udp4")) as asock:
            with pytest.raises(UsageError, match=r"^timeout must be"):
                asock.set_timeout(value)

    asyncio.run(main())


@pytest.mark.parametrize("value", BAD_COUNTS, ids=repr)
def test_counts_and_sizes(value: Any, make_address: Callable[[str], str]) -> None:
    with pytest.raises(UsageError, match=r"^backlog must be"):
        enchufe.listen(make_address("tcp4"), backlog=value if value != 1.5 else 2**40)
    with pytest.raises(UsageError, match=r"^mode must be"):
        enchufe.listen(make_address("unix"), mode=value if value != 1.5 else 0o7777)
    with pytest.raises(UsageError, match=r"^max_connections must be"):
        SyncServer(make_address("tcp4"), nothing, max_connections=value if value != 2**64 else 0)
    with pytest.raises(UsageError, match=r"^max_connections must be"):
        AsyncServer(make_address("tcp4"), nothing, max_connections=value if value != 2**64 else 0)
    with pytest.raises(UsageError, match=r"^retries must be"):
        enchufe.connect("tcp://127.0.0.1:1", retries=value if value != 2**64 else -5)
    listener = enchufe.listen(make_address("tcp4"))
    with listener, enchufe.connect(str(listener.address)) as conn, listener.accept() as server_side:
        server_side.send_all(b"abcdef")
        conn.set_timeout(5)
        with pytest.raises(UsageError, match=r"^size must be"):
            conn.recv_exactly(value if value != 2**64 else -1)
        with pytest.raises(UsageError, match=r"^max_bytes must be"):
            conn.recv_until(b"\n", max_bytes=value if value != 2**64 else 0)
        with pytest.raises(UsageError, match=r"^max_size must be"):
            conn.recv_message(max_size=value if value != 1.5 else 2**32)
        assert conn.recv_exactly(6) == b"abcdef"  # nothing was taken by the refused calls
    with enchufe.bind_datagram(make_address("udp4")) as sock, pytest.raises(UsageError, match=r"^max_size"):
        sock.recvfrom(value if value != 1.5 else 2**40)


def test_a_huge_recv_size_is_read_in_bounded_chunks(make_address: Callable[[str], str]) -> None:
    """``recv(n)`` returns up to n bytes: a length a peer announced (2**40) allocates nothing
    like it (it used to raise MemoryError)."""
    listener = enchufe.listen(make_address("tcp4"))
    with listener, enchufe.connect(str(listener.address)) as conn, listener.accept() as server_side:
        conn.set_timeout(5)
        server_side.send_all(b"x" * 1000)
        assert conn.recv(2**40) == b"x" * 1000
        server_side.send_all(b"y" * 10)
        assert conn.recv(2**62) == b"y" * 10

        async def main() -> bytes:
            async with await aio.listen(make_address("tcp4")) as alistener:
                aconn = await aio.connect(str(alistener.address))
                async with aconn, await alistener.accept() as other:
                    await other.send_all(b"z" * 100)
                    aconn.set_timeout(5)
                    return await aconn.recv(2**40)

        assert asyncio.run(main()) == b"z" * 100


@pytest.mark.parametrize("value", [0.0, 0, 0.5, 1_000_000, None])
def test_values_in_range_are_accepted(value: Any, make_address: Callable[[str], str]) -> None:
    listener = enchufe.listen(make_address("tcp4"))
    with listener, enchufe.connect(str(listener.address)) as conn:
        conn.set_timeout(value)

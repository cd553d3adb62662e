"""One test body for every API flavour: ``enchufe`` (sync), ``enchufe.aio`` on asyncio, on uvloop.

The conformance tests are written against the blocking API.  The ``api`` fixture hands them
either the blocking functions themselves, or an :class:`AsyncApi` that runs ``enchufe.aio`` on
an event loop in a background thread and exposes it through blocking proxies: every method call
(and property read) runs on the loop and the calling thread waits for its result.  So a test
can block in ``accept()`` in a :class:`~tests.conftest.Peer` thread while the main thread closes
the listener, exactly as with the sync API, and the same ``pytest.raises`` checks apply to both.

Name differences between the two APIs are mapped in one place: ``close`` → ``aclose``, ``with``
→ ``async with``, iterating a listener → ``async for``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import enchufe
import enchufe.aio as aio

#: Seconds any single call may take before the test calls it a hang.
IO_TIMEOUT = 10.0

FLAVOURS = ("sync", "asyncio", "uvloop")


class LoopThread:
    """An event loop running in a daemon thread; :meth:`call` runs a function on it and waits."""

    def __init__(self, factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self.loop = factory()
        self._thread = threading.Thread(target=self.loop.run_forever, name="conformance-loop", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on the loop (awaited if it returns an awaitable)."""

        async def runner() -> Any:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result

        future = asyncio.run_coroutine_threadsafe(runner(), self.loop)
        try:
            return future.result(IO_TIMEOUT)
        except concurrent.futures.TimeoutError:
            if future.done():
                raise  # the call itself raised TimeoutError
            future.cancel()
            raise AssertionError(
                f"{getattr(fn, '__qualname__', fn)} still pending after {IO_TIMEOUT} s"
            ) from None

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(IO_TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(IO_TIMEOUT)
        self.loop.close()


_WRAPPED = (aio.Connection, aio.Listener, aio.DatagramSocket)
_RENAMED = {"close": "aclose"}
_DONE = object()


class Proxy:
    """A blocking view of an ``enchufe.aio`` object: the same calls as its sync counterpart."""

    def __init__(self, target: Any, runner: LoopThread) -> None:
        self._target = target
        self._runner = runner

    @property
    def target(self) -> Any:
        """The ``enchufe.aio`` object behind the proxy."""
        return self._target

    def __getattr__(self, name: str) -> Any:
        attr = self._runner.call(getattr, self._target, _RENAMED.get(name, name))
        if not callable(attr):
            return attr

        def method(*args: Any, **kwargs: Any) -> Any:
            return _wrap(self._runner.call(attr, *args, **kwargs), self._runner)

        return method

    def __iter__(self) -> Iterator[Any]:
        iterator = self._runner.call(aiter, self._target)

        async def next_or_done() -> Any:
            try:
                return await anext(iterator)
            except StopAsyncIteration:
                return _DONE

        while (item := self._runner.call(next_or_done)) is not _DONE:
            yield _wrap(item, self._runner)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._runner.call(self._target.aclose)

    def __repr__(self) -> str:
        return f"<proxy {self._target!r}>"


def _wrap(value: Any, runner: LoopThread) -> Any:
    return Proxy(value, runner) if isinstance(value, _WRAPPED) else value


class SyncApi:
    """The blocking API, as is."""

    name = "sync"
    listen = staticmethod(enchufe.listen)
    connect = staticmethod(enchufe.connect)
    bind_datagram = staticmethod(enchufe.bind_datagram)
    connect_datagram = staticmethod(enchufe.connect_datagram)

    def close(self) -> None:
        pass


class AsyncApi:
    """``enchufe.aio`` on a loop in a background thread, through blocking proxies."""

    def __init__(self, name: str, factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self.name = name
        self.runner = LoopThread(factory)

    def _opener(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def open_(*args: Any, **kwargs: Any) -> Any:
            return _wrap(self.runner.call(fn, *args, **kwargs), self.runner)

        return open_

    def __getattr__(self, name: str) -> Any:
        if name in ("listen", "connect", "bind_datagram", "connect_datagram"):
            return self._opener(getattr(aio, name))
        raise AttributeError(name)

    def close(self) -> None:
        self.runner.close()


def _uvloop_factory() -> asyncio.AbstractEventLoop:
    import uvloop

    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def make_api(flavour: str) -> Any:
    if flavour == "sync":
        return SyncApi()
    if flavour == "asyncio":
        return AsyncApi(flavour, asyncio.new_event_loop)
    return AsyncApi(flavour, _uvloop_factory)


@pytest.fixture(params=FLAVOURS)
def api(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The API under test: ``sync``, ``asyncio`` or ``uvloop`` (same calls for all three)."""
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    flavour = make_api(request.param)
    try:
        yield flavour
    finally:
        flavour.close()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PEM files for the TLS legs: ``ca`` (a trustme CA) and ``server`` (its certificate for
    localhost, 127.0.0.1 and ::1, with the key)."""
    import trustme

    folder = tmp_path_factory.mktemp("conformance-tls")
    ca = trustme.CA()
    paths = {"ca": str(folder / "ca.pem"), "server": str(folder / "server.pem")}
    ca.cert_pem.write_to_path(paths["ca"])
    ca.issue_cert("localhost", "127.0.0.1", "::1").private_key_and_cert_chain_pem.write_to_path(
        paths["server"]
    )
    return paths


def tls_of(address: str, query: str) -> str:
    """The TLS form of a plain stream address, with ``query``: ``tcp4://h:p`` → ``tls4://h:p?…``,
    ``unix:…`` → ``tls+unix:…?…`` (an address that is TLS already keeps only its place)."""
    place = address.split("?", 1)[0]
    if place.startswith("tcp"):
        place = "tls" + place[3:]
    elif place.startswith("unix:"):
        place = "tls+" + place
    return f"{place}?{query}"

"""Fixtures shared by every test: real sockets on loopback, parametrized over the kinds.

* ``sock_dir``: a short temporary folder for unix socket files (sun_path holds only 108 bytes,
  so pytest's long ``tmp_path`` will not do); removed afterwards.
* ``make_address(kind)``: a fresh address to listen on or bind for one of :data:`KINDS`
  (port 0 on loopback, a new path in ``sock_dir``, or an abstract name with a random suffix).
* ``stream_address`` / ``datagram_address``: the same, parametrized over the stream kinds and
  the datagram kinds (test ids ``tcp4``, ``unix-abstract``, ``udp6`` …).
* :func:`connectable`: the address a client uses to reach what was bound (``Listener.address``
  or ``DatagramSocket.local_address``): a wildcard host becomes loopback.
* :class:`Peer`: run the other end in a thread and collect its result or its exception.
* ``trace_lines``: a list that receives the trace narration while the test runs.
* ``mypy_cache_dir``: one mypy cache folder for the whole run, so that the tests that run
  ``mypy --strict`` analyse the standard library and enchufe once, not once each.

The suite speaks English whatever the shell's locale (a Spanish ``LANG`` would turn every
message the tests match into Spanish); tests of Spanish ask for it.  A test that switched the
language in this process (``--lang es`` parsed by click in-process) gets English back after it,
and one that switched the narration on (``--trace``) gets it switched off.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import enchufe
from enchufe import i18n, trace
from enchufe.address import InetAddress

for _name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
    if os.environ.get(_name, "").lower().startswith("es"):
        os.environ[_name] = "C.UTF-8"


# The suite starts hundreds of enchufe processes.  Where the environment forbids writing
# bytecode (PYTHONDONTWRITEBYTECODE), each of them would compile every module it imports from
# source again (about 90 ms of CPU each); they get a bytecode cache of their own instead, in a
# folder of this run (the source tree stays clean), removed at the end.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None and "PYTHONPYCACHEPREFIX" not in os.environ:
    _PYCACHE = tempfile.mkdtemp(prefix="enchufe-pycache-")
    os.environ["PYTHONPYCACHEPREFIX"] = _PYCACHE
    atexit.register(shutil.rmtree, _PYCACHE, True)


@pytest.fixture(autouse=True)
def _english_after_each_test() -> Iterator[None]:
    yield
    if i18n.language() != "en":
        i18n.set_language("en")


@pytest.fixture(autouse=True)
def _no_trace_after_each_test() -> Iterator[None]:
    """A command run in-process with ``--trace`` leaves the narration on: off again after it,
    whatever test comes next."""
    yield
    if trace.enabled():
        trace.disable()


#: kind id → (scheme, True for a file path / False for an abstract name / None for inet)
KINDS: dict[str, tuple[str, bool | None]] = {
    "tcp4": ("tcp4", None),
    "tcp6": ("tcp6", None),
    "unix": ("unix", True),
    "unix-abstract": ("unix", False),
    "udp4": ("udp4", None),
    "udp6": ("udp6", None),
    "unixgram": ("unixgram", True),
    "unixgram-abstract": ("unixgram", False),
}
STREAM_KINDS = ("tcp4", "tcp6", "unix", "unix-abstract")
DATAGRAM_KINDS = ("udp4", "udp6", "unixgram", "unixgram-abstract")
TCP_KINDS = ("tcp4", "tcp6")
UNIX_STREAM_KINDS = ("unix", "unix-abstract")

#: How long a test waits for a peer thread before calling it stuck.
PEER_TIMEOUT = 10.0


def _has_ipv6() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _has_ipv6()
needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="this host cannot bind ::1")


def kind_params(kinds: tuple[str, ...]) -> list[Any]:
    """``pytest.param`` for each kind, with its id, skipping IPv6 kinds on hosts without IPv6."""
    return [pytest.param(k, id=k, marks=[needs_ipv6] if k.endswith("6") else []) for k in kinds]


def abstract_name() -> str:
    """A Linux abstract socket name no other test (or run) uses."""
    return f"enc-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def sock_dir() -> Iterator[str]:
    """A short temporary folder (``/tmp/enc-XXXXXXXX``) for unix socket files."""
    folder = tempfile.mkdtemp(prefix="enc-", dir="/tmp")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def make_address(sock_dir: str) -> Callable[[str], str]:
    """``make_address("udp6")`` → a fresh address string to bind or listen on for that kind."""
    counter = iter(range(1_000_000))

    def make(kind: str) -> str:
        scheme, file = KINDS[kind]
        if file is None:
            host = "[::1]" if kind.endswith("6") else "127.0.0.1"
            return f"{scheme}://{host}:0"
        if file:
            return f"{scheme}://{os.path.join(sock_dir, f's{next(counter)}.sock')}"
        return f"{scheme}:@{abstract_name()}"

    return make


@pytest.fixture(params=kind_params(STREAM_KINDS))
def stream_address(request: pytest.FixtureRequest, make_address: Callable[[str], str]) -> str:
    """A fresh address to listen on, for each stream kind in turn."""
    return make_address(request.param)


@pytest.fixture(params=kind_params(DATAGRAM_KINDS))
def datagram_address(request: pytest.FixtureRequest, make_address: Callable[[str], str]) -> str:
    """A fresh address to bind a datagram socket on, for each datagram kind in turn."""
    return make_address(request.param)


def connectable(bound: enchufe.Address | str | None) -> str:
    """The address a client on this host uses to reach ``bound`` (a wildcard becomes loopback)."""
    assert bound is not None, "the socket has no address"
    address = enchufe.parse(bound) if isinstance(bound, str) else bound
    if isinstance(address, InetAddress) and address.host in ("", "0.0.0.0", "::"):
        loopback = "::1" if address.forced_family == 6 or address.host == "::" else "127.0.0.1"
        return str(InetAddress(address.transport, loopback, address.port, address.forced_family))
    return str(address)


class Peer:
    """Run ``fn(*args)`` in a daemon thread; :meth:`result` joins it and returns or re-raises.

    Tests keep the peer's exceptions (a failed assert in the server thread fails the test) and
    never wait for it without a bound.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, *args), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self._value = fn(*args)
        except BaseException as exc:
            self._error = exc

    def result(self, timeout: float = PEER_TIMEOUT) -> Any:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the peer thread is still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value

    def is_alive(self) -> bool:
        return self._thread.is_alive()


@pytest.fixture
def trace_lines() -> Iterator[list[str]]:
    """Narration lines emitted while the test runs; tracing is always switched off afterwards."""
    lines: list[str] = []
    trace.enable(lines.append)
    try:
        yield lines
    finally:
        trace.disable()


@pytest.fixture(scope="session")
def mypy_cache_dir() -> Iterator[str]:
    """A mypy cache folder shared by the run's mypy checks (removed at the end): the first check
    fills it with the standard library's and enchufe's analysis, the others only check their own
    files (about 3 s saved for each on the CI machine)."""
    folder = tempfile.mkdtemp(prefix="enc-mypy-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["compiled", "pure"])
def both_paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the relay's compiled hot path (``enchufe._speedups``: the loop's
    shortcuts) and again without it (``ENCHUFE_PURE_PYTHON=1`` for relay processes, and
    :data:`enchufe.relay.engine.COMPILED` off for relays in this process): the fallback a
    machine without a compiler runs must pass the same tests.  Used by the test modules of the
    stream data path (``pytestmark = pytest.mark.usefixtures("both_paths")``)."""
    from enchufe.relay import engine

    if request.param == "pure":
        monkeypatch.setenv("ENCHUFE_PURE_PYTHON", "1")
        monkeypatch.setattr(engine, "COMPILED", False)
    elif not engine.COMPILED:
        pytest.skip("enchufe._speedups is not built here (no C compiler at install)")
    return str(request.param)

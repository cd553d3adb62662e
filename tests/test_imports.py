"""The import graph flows one way.

The asyncio mirror uses only what the sync side makes public: no ``_private`` name imported
from ``enchufe.sync``, no reach into a wrapped sync object's privates (``._inner._x``).  What
both sides need (constants, address checks, sans-IO state) lives in the shared modules
(``enchufe._connect``, ``enchufe._buffer``, ``enchufe._serving``) instead.

The relay runs on its own event loop: none of its modules loads asyncio or the asyncio side.

The socket layer (the traced calls, resolution, unix socket files, the openers) sits under every
endpoint: it imports none of the layers built on it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import enchufe.aio

AIO = Path(enchufe.aio.__file__).parent
PACKAGE = AIO.parent

#: The modules of the socket layer, and the layers built on it, which they must not import.
SOCKET_LAYER = ("_calls", "_nonblocking", "_resolve", "_unixfiles", "_sockets")
ABOVE_SOCKETS = ("sync", "aio", "relay", "servers", "bench", "cli", "exec", "stdio", "tour")


def _from_sync(node: ast.ImportFrom) -> bool:
    module = node.module or ""
    if node.level == 0:
        return module == "enchufe.sync" or module.startswith("enchufe.sync.")
    # Inside enchufe/aio/, "..sync" is the sibling package.
    return node.level == 2 and (module == "sync" or module.startswith("sync."))


def private_reaches(source: str) -> list[str]:
    """Each place where ``source`` (a module of enchufe.aio) uses a private of the sync side."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and _from_sync(node):
            found += [
                f"line {node.lineno}: imports {alias.name} from {'.' * node.level}{node.module}"
                for alias in node.names
                if alias.name.startswith("_")
            ]
        elif (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "_inner"
        ):
            found.append(f"line {node.lineno}: reaches ._inner.{node.attr}")
    return found


@pytest.mark.parametrize("path", sorted(AIO.glob("*.py")), ids=lambda p: p.name)
def test_aio_uses_no_private_of_sync(path: Path) -> None:
    assert private_reaches(path.read_text()) == []


@pytest.mark.parametrize(
    "source",
    [
        "from ..sync import DEFAULT_RETRY_DELAY, _socket_address",
        "from ..sync.datagram import _RESOLVE_CACHE_SIZE",
        "from enchufe.sync.stream import _name",
        "def f(sock):\n    return sock._inner._stalled",
    ],
)
def test_the_check_sees_a_private_reach(source: str) -> None:
    assert len(private_reaches(source)) == 1


@pytest.mark.parametrize(
    "source",
    [
        "from ..sync.datagram import DatagramSocket as _SyncDatagramSocket",
        "from .._connect import socket_address",
        "from ._wait import _private_of_aio",
        "def f(sock):\n    return sock._inner.stalled_peers",
    ],
)
def test_the_check_allows_public_names(source: str) -> None:
    assert private_reaches(source) == []


#: Imports every module of the relay, then lists the asyncio modules loaded (stdlib or ours).
RELAY_PROBE = """
import pkgutil, sys
import enchufe.relay
for module in pkgutil.iter_modules(enchufe.relay.__path__, "enchufe.relay."):
    __import__(module.name)
asyncio = ("asyncio", "enchufe.aio", "enchufe.exec")
print(sorted(m for m in sys.modules if m in asyncio or m.startswith(tuple(a + "." for a in asyncio))))
"""


def test_the_relay_does_not_load_asyncio() -> None:
    """Every relay process (each worker too) imports the relay: asyncio and enchufe.aio would cost
    each tens of milliseconds and memory for nothing.  Its exec: children start through
    enchufe._spawn, which the asyncio ``listen --exec`` shares, not through enchufe.exec."""
    done = subprocess.run(
        [sys.executable, "-c", RELAY_PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


def imported_modules(source: str) -> list[str]:
    """Every module that ``source`` (a module directly inside the enchufe package) imports,
    anywhere in it, as absolute names: ``from . import sync`` is ``enchufe.sync``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append(node.module or "")
                continue
            base = "enchufe" if node.level == 1 else ""  # deeper levels leave the package: never ours
            if node.module:
                found.append(f"{base}.{node.module}")
            else:
                found += [f"{base}.{alias.name}" for alias in node.names]
    return found


def upward_imports(source: str) -> list[str]:
    """The imports in ``source`` of a layer built on the socket layer."""
    above = tuple(f"enchufe.{layer}" for layer in ABOVE_SOCKETS)
    return [
        name
        for name in imported_modules(source)
        if name in above or name.startswith(tuple(a + "." for a in above))
    ]


@pytest.mark.parametrize("name", SOCKET_LAYER)
def test_the_socket_layer_imports_no_layer_above_it(name: str) -> None:
    assert upward_imports((PACKAGE / f"{name}.py").read_text()) == []


@pytest.mark.parametrize(
    "source",
    [
        "from . import sync",
        "from .relay.pump import Pump",
        "from .aio import Connection",
        "import enchufe.cli",
        "def f():\n    from .sync.stream import Connection",
        "from enchufe.exec import run_exec",
    ],
)
def test_the_check_sees_an_upward_import(source: str) -> None:
    assert len(upward_imports(source)) == 1


@pytest.mark.parametrize(
    "source",
    ["from . import trace, _ranges", "from ._calls import bind", "from .synchrony import x", "import socket"],
)
def test_the_check_allows_the_layers_below(source: str) -> None:
    assert upward_imports(source) == []

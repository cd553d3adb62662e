"""The import graph flows one way.

Every module of the package sits in one layer, and imports only from its own layer or the ones
below it::

    pure       _lazy, address, _inet_text, _unix_text, errors, framing, trace, sessions, _text, _ranges,
               _networks, _buffer, _backoff, _notices, _proxypolicy,
               _serving, _halfclose, tlsparams, tlsinfo, _tls, _tls_trace, clienthello,
               _proxytypes, _proxywrite, _proxytlv, proxyproto, hops, _hop_socks5, _hop_http, _socks5_server,
               _socks_rules
    sockets    _calls, _nonblocking, _resolve, _unixfiles, _sockets, _connect, _spawn,
               _endpoint, _streams, _datagrams (the endpoint cores), tlschannel, _tlssetup, _tlscore,
               _tlsstream,
               _proxyaccept, _via
    endpoints  sync | aio (siblings: neither imports the other), and the package itself (sync's facade)
    apps       relay, servers, bench, tour, exec, stdio, testing
    cli        cli, __main__

What the sync and asyncio sides share (constants, address checks, sans-IO state, the endpoint
cores) lives below both of them.  A module in no layer fails the test until it is given one.

The relay runs on its own event loop: none of its modules loads asyncio or the asyncio side.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import enchufe

PACKAGE = Path(enchufe.__file__).parent

#: The layers, lowest first: a top-level name of the package → its layer.
LAYERS: dict[str, tuple[str, ...]] = {
    "pure": (
        "i18n",
        "_lazy",
        "address",
        "_fastinit",
        "_inet_text",
        "_unix_text",
        "errors",
        "framing",
        "trace",
        "sessions",
        "_text",
        "_ranges",
        "_networks",
        "_buffer",
        "_backoff",
        "_notices",
        "_proxypolicy",
        "_serving",
        "_halfclose",
        "tlsparams",
        "tlsinfo",
        "_tls",
        "_tls_refusals",
        "_tls_text",
        "_tls_trace",
        "_tls_seen",
        "_tls_verify",
        "_tls_suites",
        "_tls_sessions",
        "_tls_batch",
        "clienthello",
        "_proxytypes",
        "_proxywrite",
        "_proxytlv",
        "proxyproto",
        "_hop_url",
        "hops",
        "_hop_socks5",
        "_hop_http",
        "_socks5_server",
        "_http_connect_server",
        "_socks_rules",
        # compiled (C), importing nothing of the package
        "_speedups",
        "_tls_records",
    ),
    "sockets": (
        "_calls",
        "_nonblocking",
        "_resolve",
        "_unixfiles",
        "_sockets",
        "_connect",
        "_spawn",
        "_wakeup",
        "_endpoint",
        "_streams",
        "_datagrams",
        "_tls_socket",
        "tlschannel",
        "_tlssetup",
        "_tlscore",
        "_tlsstream",
        "_proxyaccept",
        "_via",
        "_tracefile",
    ),
    "endpoints": ("sync", "aio", ""),  # "": the package itself, which re-exports sync
    "apps": ("relay", "faults", "servers", "bench", "tour", "diagram", "exec", "stdio", "_waits", "testing"),
    "cli": ("cli", "__main__"),
}
RANK = {name: rank for rank, names in enumerate(LAYERS.values()) for name in names}
LAYER_OF = {name: layer for layer, names in LAYERS.items() for name in names}

#: Parts of one layer that must not import each other: the two mirrors.  The package itself
#: ("") re-exports sync: aio importing it would be importing sync, and ``import enchufe``
#: must not load asyncio.
SIBLINGS = {"sync": ("aio",), "aio": ("sync", ""), "": ("aio",)}


def module_name(path: Path) -> str:
    """``enchufe.sync.stream`` for .../enchufe/sync/stream.py, ``enchufe.aio`` for its __init__."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute name) of every import in ``source``, the text of ``module``: relative
    imports resolved (``from .. import _calls`` in enchufe.sync.stream is enchufe._calls)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.lineno, node.module or ""))
                continue
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1])
            if node.module:
                found.append((node.lineno, f"{base}.{node.module}"))
            else:
                found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def part(module: str, *, imported: bool = True) -> str | None:
    """The top-level name inside the package that ``module`` belongs to ("" for the package
    itself); ``None`` for a module outside the package.  An ``imported`` name that is no module
    (``from . import parse``) is one of the package's own names."""
    head, _, rest = module.partition(".")
    if head != "enchufe":
        return None
    top = rest.partition(".")[0]
    # A compiled module (no .py) is known by its .pyi.
    own = any((PACKAGE / f"{top}{suffix}").exists() for suffix in (".py", ".pyi"))
    if imported and top and not own and not (PACKAGE / top).is_dir():
        return ""
    return top


def wrong_edges(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """Each import in ``source`` that goes up a layer or across to the other mirror."""
    here = part(module, imported=False)
    assert here is not None
    if here not in LAYER_OF:
        return [f"{module} is in no layer: add {here!r} to LAYERS in tests/test_imports.py"]
    found = []
    for line, name in imported_modules(source, module, is_package=is_package):
        there = part(name)
        if there is None or there == here:
            continue
        if there not in LAYER_OF:
            found.append(f"{module}:{line} imports {name}, which is in no layer")
        elif RANK[there] > RANK[here]:
            found.append(f"{module}:{line} imports {name}: up from {LAYER_OF[here]} to {LAYER_OF[there]}")
        elif there in SIBLINGS.get(here, ()):
            found.append(f"{module}:{line} imports {name}: across from {here} to {there}")
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_go_down_the_layers(path: Path) -> None:
    module = module_name(path)
    assert wrong_edges(path.read_text(), module, is_package=path.name == "__init__.py") == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("enchufe.aio.datagram", "from ..sync.datagram import DatagramSocket"),
        ("enchufe.sync.serve", "from ..aio import serve"),
        ("enchufe.aio", "from enchufe.sync import connect"),
        ("enchufe.aio._open", "from .. import parse"),
        ("enchufe.aio.stream", "import enchufe"),
        ("enchufe", "from .aio import run"),
        ("enchufe._calls", "from . import sync"),
        ("enchufe._resolve", "def f():\n    from .relay.pump import Pump"),
        ("enchufe.framing", "from ._calls import recv"),
        ("enchufe.sync.stream", "from ..relay import Relay"),
        ("enchufe.relay.stream", "from ..cli import main"),
        ("enchufe._sockets", "import enchufe.cli"),
        ("enchufe.errors", "from . import listen"),
        ("enchufe.brand_new", "import os"),
    ],
)
def test_the_check_sees_a_wrong_edge(module: str, source: str) -> None:
    assert len(wrong_edges(source, module, is_package=module == "enchufe")) == 1


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("enchufe.aio.stream", "from .. import _calls, _ranges, framing"),
        ("enchufe.aio.serve", "from ._open import listen"),
        ("enchufe.sync", "from .stream import Connection"),
        ("enchufe.relay.stream", "from ..sync import connect"),
        ("enchufe.cli.listen", "from .. import AddressError, parse"),
        ("enchufe.tour", "from .relay import Relay"),
        ("enchufe._sockets", "from ._resolve import resolve\nimport socket"),
        ("enchufe._text", "import os"),
    ],
)
def test_the_check_allows_what_goes_down_or_stays(module: str, source: str) -> None:
    assert wrong_edges(source, module) == []


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

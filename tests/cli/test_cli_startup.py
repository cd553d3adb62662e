"""``enchufe --help`` stays fast: listing the commands imports none of them, nor asyncio."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import STEP

PROBE = """
import json, sys
from enchufe.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
sys.stderr.write(json.dumps(sorted(sys.modules)))
"""


def test_help_imports_no_command_and_no_asyncio() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, timeout=STEP, check=True, text=True
    )
    assert "listen" in done.stdout and "bench" in done.stdout
    modules = set(json.loads(done.stderr))
    # The shared helpers (_common and the option types it uses) load; no command module does.
    shared = ("enchufe.cli._common", "enchufe.cli._numbers", "enchufe.cli._language")
    commands = {m for m in modules if m.startswith("enchufe.cli.") and m not in shared}
    assert not commands, commands  # not even the man page's generator: --man loads it
    heavy = {"asyncio", "enchufe.aio", "enchufe.relay", "enchufe.bench", "enchufe.servers", "ssl", "base64"}
    # TLS: OpenSSL, the certificate library and the TLS layer load with the first TLS address.
    heavy |= {"cryptography", "enchufe._tls", "enchufe.tlschannel"}
    assert not heavy & modules, heavy & modules


def _modules_after(code: str) -> set[str]:
    """The modules loaded once ``code`` has run in a new Python."""
    probe = code + "\nimport json, sys\nsys.stderr.write(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, timeout=STEP, check=True, text=True
    )
    return set(json.loads(done.stderr.splitlines()[-1]))


def test_importing_the_package_loads_none_of_its_modules() -> None:
    """``import enchufe`` (which every command does first) loads a name's module on its first use."""
    loaded = {m for m in _modules_after("import enchufe") if m.startswith("enchufe.")}
    assert loaded <= {"enchufe._lazy"}, loaded


def test_every_public_name_is_there_when_asked_for() -> None:
    """The lazy names are the eager ones: each name in ``__all__``, ``import *`` and ``dir()``."""
    probe = """
import enchufe, enchufe.relay
for package in (enchufe, enchufe.relay):
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    assert set(package.__all__) <= set(dir(package))
namespace = {}
exec("from enchufe import *", namespace)
assert {"connect", "listen", "parse", "trace", "EnchufeError"} <= set(namespace)
assert enchufe.sync.connect is enchufe.connect and enchufe.address.parse is enchufe.parse
for package, name in ((enchufe, "aio"), (enchufe, "nothing"), (enchufe.relay, "nothing")):
    try:
        getattr(package, name)
    except AttributeError:
        continue
    raise AssertionError(name)
"""
    assert "asyncio" not in _modules_after(probe)


def test_a_relay_command_loads_only_what_its_relay_uses() -> None:
    """``enchufe relay --help`` (and every refused command line) loads no relay engine; a stream
    relay's engine loads no datagram or framed handler, and no endpoint of the library."""
    help_only = _modules_after(
        "from enchufe.cli import main\ntry:\n    main(['relay', '--help'])\nexcept SystemExit:\n    pass"
    )
    assert "enchufe.cli.relay" in help_only
    assert not {"enchufe.relay.server", "enchufe.relay.engine", "enchufe.sync"} & help_only
    stream = _modules_after("import enchufe.cli.relay, enchufe.relay.server")
    unused = {
        "datagram",
        "datagram_listener",
        "framed",
        "tunnel",
        "proxying_datagram",
        "via_datagram",
        "workers",
    }
    assert not {f"enchufe.relay.{name}" for name in unused} & stream
    assert not {"enchufe.sync", "enchufe.hops", "enchufe._via"} & stream


def test_a_stream_connect_loads_no_datagram_side_no_proxies_and_no_man_page() -> None:
    """What ``enchufe connect tcp://…`` imports up to its connect(): the stream side only."""
    loaded = _modules_after(
        "import enchufe.cli.connect, enchufe.cli.listen, enchufe.cli.check\n"
        "from enchufe import connect, listen"
    )
    unused = {"enchufe.cli.manpage", "enchufe.hops", "enchufe._via", "enchufe.sync.datagram"}
    assert not unused & loaded, unused & loaded

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
    assert commands <= {"enchufe.cli.manpage"}, commands
    heavy = {"asyncio", "enchufe.aio", "enchufe.relay", "enchufe.bench", "enchufe.servers", "ssl", "base64"}
    # TLS: OpenSSL, the certificate library and the TLS layer load with the first TLS address.
    heavy |= {"cryptography", "enchufe._tls", "enchufe.tlschannel"}
    assert not heavy & modules, heavy & modules

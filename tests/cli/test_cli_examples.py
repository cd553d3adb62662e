"""Every command's --help shows examples, and the examples work.

Each example line is parsed as the CLI parses it (options, types, ranges, the address); the
servers among them are also run for real, on loopback, with their address swapped for a fresh
one of the same kind (a fixed port or path could be taken on the machine running the tests).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator

import click
import pytest

import enchufe
from enchufe.cli import cli
from tests.conftest import HAS_IPV6

from .conftest import Spawn

#: The commands this file checks (relay, connect and check have their own).
MINE = ["listen", "send", "recv", "echo", "chat", "tour", "bench"]
SERVERS = {"listen", "recv", "echo", "chat"}


def command_of(name: str) -> click.Command:
    with click.Context(cli) as ctx:
        command = cli.get_command(ctx, name)
    assert command is not None
    return command


def examples(name: str) -> Iterator[list[str]]:
    """The argument lists of the ``enchufe …`` lines in the command's Examples block."""
    help_text = command_of(name).help or ""
    assert "Examples:" in help_text, f"enchufe {name} --help has no examples"
    block = help_text.split("Examples:", 1)[1]
    for line in block.splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        # The enchufe part of a pipeline, without its redirection.
        (text,) = [part.split(">")[0].strip() for part in text.split("|") if "enchufe " in part]
        argv = shlex.split(text)
        assert argv[0] == "enchufe", line
        yield argv[1:]


EXAMPLES = [
    pytest.param(argv, id=" ".join(argv)) for name in MINE for argv in examples(name) if argv[0] == name
]


@pytest.mark.parametrize("name", MINE)
def test_help_shows_two_or_three_examples(name: str) -> None:
    own = [argv for argv in examples(name) if argv[0] == name]
    assert 2 <= len(own) <= 3, own


@pytest.mark.parametrize("argv", EXAMPLES)
def test_each_example_parses(argv: list[str]) -> None:
    name, *args = argv
    command = command_of(name)
    with command.make_context(name, list(args)) as ctx:  # options, types and ranges
        for param in command.params:
            value = ctx.params.get(param.name or "")
            if isinstance(param, click.Argument) and param.name in ("address", "addresses"):
                for address in value if isinstance(value, tuple) else (value,):
                    enchufe.parse(address)


def _fresh(address: str, sock_dir: str, n: int) -> str:
    """The same kind of address, on loopback, at a port or path nobody else uses."""
    scheme = address.split(":", 1)[0]
    if scheme in ("unix", "unixgram"):
        return f"{scheme}://{sock_dir}/example{n}.sock"
    host = "[::1]" if "[" in address else "127.0.0.1"
    return f"{scheme}://{host}:0"


@pytest.mark.parametrize("argv", [p for p in EXAMPLES if p.values[0][0] in SERVERS])  # type: ignore[index]
def test_each_server_example_runs(argv: list[str], sock_dir: str, spawn: Spawn) -> None:
    if "[::1]" in " ".join(argv) and not HAS_IPV6:
        pytest.skip("no IPv6 on this host")
    args = [
        _fresh(arg, sock_dir, n) if re.match(r"^(tcp|udp|unix|unixgram)[46]?:", arg) else arg
        for n, arg in enumerate(argv)
    ]
    server = spawn(*args)
    server.listening()
    assert server.running()
    assert server.terminate() == 0, server.err

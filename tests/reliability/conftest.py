"""Helpers for the reliability suite: enchufe's own commands and library through faults.

* ``start_relay`` (from the relay tests): ``enchufe relay …`` as a process, e.g. with
  ``--fault`` and ``--seed``;
* ``start_command("echo", ADDRESS, …)``: any other serving command (``echo``, ``listen``) as a
  process (the CLI tests' :class:`~tests.cli.conftest.Proc`), once it said ``listening on``;
* ``run`` (from the CLI tests): a client command to its end, stdin given, its time bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.cli.conftest import Proc, Spawn, run, spawn
from tests.conftest import connectable
from tests.relay.conftest import start_relay

__all__ = ["Serving", "StartCommand", "run", "spawn", "start_relay"]


@dataclass
class Serving:
    """A serving command and the address its clients connect to."""

    proc: Proc
    address: str


StartCommand = Callable[..., Serving]


@pytest.fixture
def start_command(spawn: Spawn) -> StartCommand:
    """``start_command("echo", "tcp://127.0.0.1:0")`` → a :class:`Serving` that is listening."""

    def start(*args: str) -> Serving:
        proc = spawn(*args, stdin=False)
        match = proc.wait_err(r"^listening on (\S+)")
        return Serving(proc, connectable(match.group(1)))

    return start

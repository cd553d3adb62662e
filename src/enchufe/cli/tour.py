"""enchufe tour: the six kinds and TLS on loopback, narrated, then a summary table."""

from __future__ import annotations

import sys

import click

from ._common import global_options, stop_on_sigterm


@click.command("tour")
@global_options
def command() -> int:
    """Run a server and a client for each of the six kinds on loopback, narrating each system
    call in lifecycle order, then a TLS leg (a cert=auto listener, a client trusting its pin: the
    handshake narrated), then print a summary table.  Exits 0 only if all seven worked.

    \b
    Examples:
      # the whole tour, to read at leisure
      enchufe tour | less
      # does every kind work on this host?  (the exit status says)
      enchufe tour > /dev/null
    """
    from ..tour import run

    # A closed terminal (SIGHUP) or SIGTERM stops the tour as Ctrl-C does: servers closed,
    # socket files removed.
    stop_on_sigterm()

    results = run(sys.stdout)
    return 0 if all(r.ok for r in results) else 1

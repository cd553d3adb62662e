"""enchufe tour: the six kinds and TLS on loopback, narrated, then a summary table."""

from __future__ import annotations

import sys

import click

from ..i18n import _
from ._common import event, global_options, stop_on_sigterm


@click.command("tour")
@click.option(
    "--diagram",
    "diagram",
    metavar="FILE",
    help="Also draw each kind as a sequence diagram: FILE.md (Mermaid, all kinds in one file), "
    "FILE.mmd (Mermaid), FILE.svg or FILE.png (matplotlib); one file per kind but for .md "
    "(tour.svg -> tour-tcp4.svg, tour-udp4.svg...).",
)
@global_options
def command(diagram: str | None) -> int:
    """Run a server and a client for each of the six kinds on loopback, narrating each system
    call in lifecycle order, then a TLS leg (a cert=auto listener, a client trusting its pin: the
    handshake narrated), then print a summary table.  Exits 0 only if all seven worked.

    With --diagram, each kind is also drawn as a sequence diagram: the server's and the client's
    calls on two lifelines, the connection, the bytes or datagrams between them (size and first
    characters), the ends of data, and the calls that waited for the other side.

    With --lang es (or a Spanish LANG) the tour, the narration's words and the diagrams' labels
    are in Spanish, in the lecture's pictures (a stream socket is a telephone call, a datagram
    socket the post); system call names, constants and addresses stay as they are.

    \b
    Examples:
      # the whole tour, to read at leisure
      enchufe tour | less
      # does every kind work on this host?  (the exit status says)
      enchufe tour > /dev/null
      # each kind as a sequence diagram: tour-tcp4.svg... (or tour.md: Mermaid, for GitHub)
      enchufe tour --diagram tour.svg
    """
    from ..tour import run

    if diagram is not None:
        from ..diagram.files import check_format

        check_format(diagram, "--diagram")

    # A closed terminal (SIGHUP) or SIGTERM stops the tour as Ctrl-C does: servers closed,
    # socket files removed.
    stop_on_sigterm()

    results = run(sys.stdout, record=diagram is not None)
    if diagram is not None:
        from ..diagram.files import write
        from ..diagram.model import build

        drawn = [(r.label, build(r.events, f"{r.label}: {r.header}")) for r in results if r.events]
        for path in write(drawn, diagram):
            event("diagram", _("enchufe: wrote {path}").format(path=path), path=path)
    return 0 if all(r.ok for r in results) else 1

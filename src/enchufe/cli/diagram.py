"""enchufe diagram: the --trace-file outputs of one or more processes as one sequence diagram."""

from __future__ import annotations

import sys

import click

from ..i18n import _
from ._common import event, global_options


@click.command("diagram")
@click.argument(
    "traces", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False), metavar="TRACE.jsonl..."
)
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    help="FILE.md (Mermaid in Markdown), FILE.mmd (Mermaid), FILE.svg or FILE.png (matplotlib). "
    "Without it, Mermaid text on stdout.",
)
@global_options
def command(traces: tuple[str, ...], output: str | None) -> int:
    """Draw the --trace-file outputs of one or more processes (a server and its clients, run in
    separate terminals) as one sequence diagram: a lifeline per process, every traced call on it
    in order, and the connections, bytes, datagrams and ends of data between them, the two ends
    of each matched by their addresses.  Calls that waited for the other side are marked.

    The labels follow --lang (or LANG): with --lang es the lifelines, marks and the words in each
    call's text are in Spanish; the trace files themselves are the same in any language.

    \b
    Examples:
      # a server and a client in two terminals, each writing its trace
      enchufe --trace-file server.jsonl listen tcp://127.0.0.1:9000
      echo hello | enchufe --trace-file client.jsonl connect tcp://127.0.0.1:9000
      # one diagram of both, for GitHub (Mermaid) or as a picture
      enchufe diagram server.jsonl client.jsonl -o call.md
      enchufe diagram server.jsonl client.jsonl -o call.svg
    """
    from ..diagram.files import check_format, read_events, title_of, write
    from ..diagram.model import build

    if output is not None:
        check_format(output, "-o")
    events = [e for path in traces for e in read_events(path)]
    diagram = build(events, title_of(list(traces)))
    if output is None:
        from ..diagram.mermaid import mermaid

        sys.stdout.write(mermaid(diagram))
        return 0
    for path in write([("", diagram)], output):
        event("diagram", _("enchufe: wrote {path}").format(path=path), path=path)
    return 0

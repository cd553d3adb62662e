"""enchufe echo ADDRESS: an echo server for any of the six kinds."""

from __future__ import annotations

import click

from ._common import drain_option, global_options, json_option, parse_mode, run_server, settings


@click.command("echo")
@click.argument("address")
@click.option(
    "--max-conns",
    type=click.IntRange(1),
    default=1024,
    show_default=True,
    help="Clients at once (datagram: peers remembered); extra ones are closed at once.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Close a client idle this many seconds (datagram peers: forgotten, default 60).",
)
@click.option("--mode", default=None, help="Permissions of a unix socket file, e.g. 660.")
@drain_option
@json_option
@global_options
def command(
    address: str,
    max_conns: int,
    idle_timeout: float | None,
    mode: str | None,
    drain_timeout: float,
    json_: bool,
) -> int:
    """Echo every byte (stream) or datagram (datagram kinds) back to its sender.

    On a stream, the server closes after the client's EOF once everything is echoed.
    """
    from .. import parse
    from ..aio.serve import Server
    from ..servers import echo_datagram, echo_stream

    settings.json = settings.json or json_
    target = parse(address)
    handler = echo_stream if target.is_stream else echo_datagram
    server = Server(
        target, handler, max_connections=max_conns, idle_timeout=idle_timeout, mode=parse_mode(mode)
    )
    return run_server(server, drain_timeout)

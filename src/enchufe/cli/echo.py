"""enchufe echo ADDRESS: an echo server for any of the six kinds."""

from __future__ import annotations

import click

from ._common import global_options, json_option, parse_mode, run_server, server_options, settings


@click.command("echo")
@click.argument("address")
@server_options
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

"""enchufe chat ADDRESS: every message from one client goes to all the others."""

from __future__ import annotations

import click

from ._common import BoundedInt, global_options, json_option, parse_mode, run_server, server_options, settings


@click.command("chat")
@click.argument("address")
@click.option("--raw", is_flag=True, help="Forward bytes unchanged (no lines, no names), like ncat's broker.")
@click.option(
    "--queue-limit",
    type=BoundedInt(1),
    default=1 << 20,
    show_default=True,
    help="Bytes waiting for one client before it is dropped as not reading.",
)
@server_options
@json_option
@global_options
def command(
    address: str,
    raw: bool,
    max_conns: int,
    idle_timeout: float | None,
    queue_limit: int,
    mode: str | None,
    drain_timeout: float,
    json_: bool,
) -> int:
    """A chat room: each line from one client goes to every other client, prefixed with the
    sender's name.  On datagram kinds peers join by sending and leave after the idle timeout."""
    from .. import parse
    from ..aio.serve import Server
    from ..servers import ChatRoom

    settings.json = settings.json or json_
    target = parse(address)
    room = ChatRoom(raw=raw, queue_limit=queue_limit)
    handler = room.stream if target.is_stream else room.datagram
    server = Server(
        target, handler, max_connections=max_conns, idle_timeout=idle_timeout, mode=parse_mode(mode)
    )
    return run_server(server, drain_timeout)

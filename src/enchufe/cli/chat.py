"""enchufe chat ADDRESS: every message from one client goes to all the others."""

from __future__ import annotations

import click

from ._common import drain_option, global_options, json_option, parse_mode, run_server, settings


@click.command("chat")
@click.argument("address")
@click.option("--raw", is_flag=True, help="Forward bytes unchanged (no lines, no names), like ncat's broker.")
@click.option(
    "--max-conns",
    type=click.IntRange(1),
    default=1024,
    show_default=True,
    help="Clients at once (datagram: peers remembered).",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Close a client idle this long; datagram peers leave after it (default 60).",
)
@click.option(
    "--queue-limit",
    type=click.IntRange(1),
    default=1 << 20,
    show_default=True,
    help="Bytes waiting for one client before it is dropped as not reading.",
)
@click.option("--mode", default=None, help="Permissions of a unix socket file, e.g. 660.")
@drain_option
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

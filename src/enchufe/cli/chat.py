"""enchufe chat ADDRESS: every message from one client goes to all the others."""

from __future__ import annotations

import click

from ..i18n import _
from ._common import given, global_options, json_option
from ._numbers import BoundedInt
from ._server import proxy_options, proxy_settings, serve, server_target, serving_options
from ._tls import help_text as tls_help


@click.command("chat", epilog=tls_help())
@click.argument("address")
@click.option("--raw", is_flag=True, help="Forward bytes unchanged (no lines, no names), like ncat's broker.")
@click.option(
    "--queue-limit",
    type=BoundedInt(1),
    default=1 << 20,
    show_default=True,
    help="Stream: bytes waiting for one client before it is dropped as not reading.",
)
@serving_options()
@proxy_options()
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
    accept_proxy: bool,
    trusted_proxy: tuple[str, ...],
    proxy_timeout: float,
    json_: bool,
) -> int:
    """A chat room: each line from one client goes to every other client, prefixed with the
    sender's name.  On datagram kinds peers join by sending and leave after the idle timeout.
    TLS addresses (tls://, tls+unix:) take the parameters `enchufe listen --help` lists.

    \b
    Examples:
      # a room on port 6000; join from other terminals with the second line
      enchufe chat tcp://:6000
      enchufe connect tcp://localhost:6000
      # a room for one group of users
      enchufe chat unix:/tmp/room.sock --mode 660
      # datagram peers stay in the room for 5 minutes after their last message
      enchufe chat udp://127.0.0.1:6000 --idle-timeout 300
    """
    from ..errors import UsageError
    from ..servers import ChatRoom

    target = server_target(address, json_, mode)
    if not target.is_stream and given("queue_limit"):
        raise UsageError(
            _(
                "--queue-limit bounds what waits for a stream client; {address} is a datagram socket, "
                "where a peer that does not read loses its datagrams"
            ).format(address=target)
        )
    room = ChatRoom(raw=raw, queue_limit=queue_limit)
    return serve(
        target,
        room.stream,
        room.datagram,
        max_conns=max_conns,
        idle_timeout=idle_timeout,
        mode=mode,
        drain_timeout=drain_timeout,
        proxy=proxy_settings(target, accept_proxy, trusted_proxy, proxy_timeout),
    )

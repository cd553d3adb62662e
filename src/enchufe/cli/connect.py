"""enchufe connect ADDRESS: the active side, stdio piped through the socket."""

from __future__ import annotations

import click

from ._common import DatagramPrinter, global_options, stop_on_sigterm
from .listen import _warn_truncated


@click.command("connect")
@click.argument("address")
@click.option(
    "--retry",
    type=click.IntRange(0),
    default=0,
    help="Attempts after the first when refused or not there yet (new socket each).",
)
@click.option(
    "--retry-delay",
    type=click.FloatRange(0),
    default=0.5,
    show_default=True,
    help="Seconds between attempts.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Stream: seconds per connection attempt. Datagram: seconds to wait for "
    "replies after stdin ends (default 1).",
)
@global_options
def command(address: str, retry: int, retry_delay: float, timeout: float | None) -> int:
    """Connect to ADDRESS; copy stdin to the peer and what it sends to stdout.

    On stdin's EOF the write side is shut down and reading goes on until the peer closes.
    On a datagram ADDRESS each stdin read is sent as one datagram and replies are printed until
    none has come for --timeout seconds.
    """
    from .. import connect, connect_datagram, parse
    from ..stdio import pump_datagram, pump_stream

    target = parse(address)
    stop_on_sigterm()
    if not target.is_stream:
        with connect_datagram(target, retries=retry, retry_delay=retry_delay) as sock:
            try:
                pump_datagram(
                    sock,
                    DatagramPrinter(as_json=False, as_hex=False),
                    linger=1.0 if timeout is None else timeout,
                    on_truncated=_warn_truncated,
                )
            except KeyboardInterrupt:  # SIGINT/SIGTERM: cut before done, as for a stream
                return 1
        return 0
    with connect(target, timeout=timeout, retries=retry, retry_delay=retry_delay) as conn:
        try:
            pump_stream(conn)
        except KeyboardInterrupt:
            return 1
    return 0

"""enchufe send ADDRESS [DATA]: one datagram, or one stream write, then close."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import BinaryIO

import click

from ._common import BoundedInt, FiniteFloat, global_options

#: How long to wait for a reply, or for the peer to close after our EOF, unless --timeout says.
DEFAULT_TIMEOUT = 5.0


@click.command("send")
@click.argument("address")
@click.argument("data", required=False)
@click.option("--wait-reply", is_flag=True, help="Print the answer (stream: all until the peer closes).")
@click.option(
    "--timeout",
    type=FiniteFloat(0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds to wait for the connection and the reply.",
)
@click.option("--retry", type=BoundedInt(0), default=0, help="Attempts after the first.")
@click.option(
    "--retry-delay",
    type=FiniteFloat(0),
    default=0.5,
    show_default=True,
    help="Seconds between attempts.",
)
@global_options
def command(
    address: str, data: str | None, wait_reply: bool, timeout: float, retry: int, retry_delay: float
) -> int:
    """Send DATA (or all of stdin) to ADDRESS and close.

    On a stream the write side is shut down after the data; with --wait-reply everything the
    peer sends until it closes is printed.  On a datagram socket DATA goes as one datagram;
    with --wait-reply the first datagram that comes back is printed.
    """
    from .. import TimedOut, connect, connect_datagram, parse
    from ..stdio import drain_until_eof

    target = parse(address)
    # os.fsencode gives back the bytes of the command line even when they are not UTF-8.
    payload = os.fsencode(data) if data is not None else sys.stdin.buffer.read()
    out = sys.stdout.buffer
    if not target.is_stream:
        with connect_datagram(target, retries=retry, retry_delay=retry_delay) as sock:
            sock.send(payload)
            if wait_reply:
                sock.set_timeout(timeout)
                try:
                    out.write(sock.recv())
                except TimedOut:
                    raise TimedOut(
                        f"no reply from {target} within {timeout:g} s; is a server "
                        f"answering there? (raise --timeout to wait longer)"
                    ) from None
                out.flush()
        return 0
    with connect(target, timeout=timeout, retries=retry, retry_delay=retry_delay) as conn:
        conn.send_all(payload)
        conn.shutdown_write()
        # Wait for the peer's EOF before closing: closing with unread data would reset the
        # connection, and a reset can destroy what the peer has not read yet.
        finished = drain_until_eof(conn, timeout, _writer(out) if wait_reply else None)
        out.flush()
        if wait_reply and not finished:
            raise TimedOut(
                f"{target} did not close within {timeout:g} s after our data; raise --timeout to wait longer"
            )
    return 0


def _writer(out: BinaryIO) -> Callable[[bytes], None]:
    def write(chunk: bytes) -> None:
        out.write(chunk)

    return write

"""enchufe listen ADDRESS: the passive side, stdio piped through the socket."""

from __future__ import annotations

import click

from ._common import DatagramPrinter, event, global_options, json_option, settings, stop_on_sigterm


@click.command("listen")
@click.argument("address")
@click.option("-k", "--keep-open", is_flag=True, help="Serve client after client (stream).")
@click.option("--backlog", type=click.IntRange(1), default=None, help="Listen queue length.")
@click.option("--mode", "mode", default=None, help="Permissions of a unix socket file, e.g. 660.")
@click.option("--hex", "hex_", is_flag=True, help="Datagrams: a hex dump per datagram.")
@click.option("--count", type=click.IntRange(1), default=None, help="Datagrams: stop after N.")
@json_option
@global_options
def command(
    address: str,
    keep_open: bool,
    backlog: int | None,
    mode: str | None,
    hex_: bool,
    count: int | None,
    json_: bool,
) -> int:
    """Accept a client on ADDRESS and copy stdin to it and what it sends to stdout.

    On stdin's EOF the write side is shut down and reading goes on until the client closes.
    On a datagram ADDRESS, each datagram's payload goes to stdout, and stdin is sent to the
    last sender.
    """
    from .. import bind_datagram, listen, parse
    from .._sockets import DEFAULT_BACKLOG
    from ..errors import NetworkError
    from ..stdio import pump_datagram, pump_stream

    settings.json = settings.json or json_
    target = parse(address)
    file_mode = _parse_mode(mode)
    stop_on_sigterm()
    if not getattr(target, "is_stream", True) or getattr(target, "datagram", False):
        with bind_datagram(target, mode=file_mode) as sock:
            event("listening", f"listening on {sock.local_address}", address=str(sock.local_address))
            printer = DatagramPrinter(as_json=json_, as_hex=hex_)
            try:
                pump_datagram(
                    sock,
                    printer,
                    reply_to_last_sender=True,
                    count=count,
                    on_truncated=_warn_truncated,
                )
            except KeyboardInterrupt:
                return 0
        return 0
    with listen(target, backlog=backlog or DEFAULT_BACKLOG, mode=file_mode) as listener:
        event("listening", f"listening on {listener.address}", address=str(listener.address))
        stdin_fd: int | None = 0
        while True:
            try:
                conn = listener.accept()
            except KeyboardInterrupt:
                return 0
            peer = str(conn.peer_address) if conn.peer_address else "(unnamed)"
            event("accept", f"accepted {peer}", level=1, peer=peer)
            try:
                with conn:
                    result = pump_stream(conn, stdin_fd=stdin_fd)
            except KeyboardInterrupt:
                event("close", f"interrupted: connection from {peer} cut", peer=peer, cut=True)
                return 1
            except NetworkError as exc:
                event("error", f"enchufe: {exc}", level=0, peer=peer, error=str(exc))
                if not keep_open:
                    return 1
                continue
            if result.stdin_eof:
                stdin_fd = None  # later clients get EOF from us at once
            event(
                "close",
                f"closed {peer}: sent {result.sent} bytes, received {result.received}",
                level=1,
                peer=peer,
                sent=result.sent,
                received=result.received,
            )
            if not keep_open:
                return 0


def _parse_mode(mode: str | None) -> int | None:
    if mode is None:
        return None
    try:
        value = int(mode, 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o777:
        raise click.BadParameter(
            f"{mode!r} is not an octal file mode such as 600 or 660", param_hint="--mode"
        )
    return value


def _warn_truncated(exc: Exception) -> None:
    event("truncated", f"enchufe: warning: {exc}", error=str(exc))

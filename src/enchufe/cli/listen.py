"""enchufe listen ADDRESS: the passive side, stdio piped through the socket."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ._common import (
    MAX_BACKLOG,
    BoundedInt,
    DatagramPrinter,
    event,
    global_options,
    json_option,
    parse_mode,
    settings,
    stop_on_sigterm,
)

if TYPE_CHECKING:
    from ..address import Address
    from ..sync import Listener


@click.command("listen")
@click.argument("address")
@click.option("-k", "--keep-open", is_flag=True, help="Serve client after client (stream).")
@click.option("--backlog", type=BoundedInt(1, MAX_BACKLOG), default=None, help="Stream: listen queue length.")
@click.option("--mode", "mode", default=None, help="Permissions of a unix socket file, e.g. 660.")
@click.option("--hex", "hex_", is_flag=True, help="Datagrams: a hex dump per datagram.")
@click.option("--count", type=BoundedInt(1), default=None, help="Datagrams: stop after N.")
@click.option(
    "--exec",
    "exec_",
    metavar='"PROGRAM ARGS"',
    default=None,
    help="Stream: run PROGRAM for each client, its stdin/stdout as the connection (no shell).",
)
@json_option
@global_options
def command(
    address: str,
    keep_open: bool,
    backlog: int | None,
    mode: str | None,
    hex_: bool,
    count: int | None,
    exec_: str | None,
    json_: bool,
) -> int:
    """Accept a client on ADDRESS and copy stdin to it and what it sends to stdout.

    On stdin's EOF the write side is shut down and reading goes on until the client closes.
    On a datagram ADDRESS, each datagram's payload goes to stdout, and stdin is sent to the
    last sender.
    """
    from .. import bind_datagram, listen, parse
    from .._sockets import DEFAULT_BACKLOG
    from ..stdio import pump_datagram

    settings.json = settings.json or json_
    target = parse(address)
    file_mode = parse_mode(mode)
    if exec_ is not None:
        return _serve_exec(target, exec_, keep_open, file_mode)
    stop_on_sigterm()
    if not target.is_stream:
        with bind_datagram(target, mode=file_mode) as sock:
            printer = DatagramPrinter(as_json=json_, as_hex=hex_)
            try:  # from the listening line on, SIGTERM means a clean stop
                event("listening", f"listening on {sock.local_address}", address=str(sock.local_address))
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
        try:  # from the listening line on, SIGTERM between clients means a clean stop
            return _serve(listener, keep_open)
        except KeyboardInterrupt:
            return 0


def _serve(listener: Listener, keep_open: bool) -> int:
    """Announce the listener, then serve one client (or, with ``keep_open``, client after client)."""
    from ..errors import NetworkError
    from ..stdio import pump_stream

    event("listening", f"listening on {listener.address}", address=str(listener.address))
    stdin_fd: int | None = 0
    while True:
        conn = listener.accept()
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


def _warn_truncated(exc: Exception) -> None:
    event("truncated", f"enchufe: warning: {exc}", error=str(exc))


def _serve_exec(target: Address, command_line: str, keep_open: bool, file_mode: int | None) -> int:
    """An inetd in one line: each client gets its own PROGRAM, without a shell."""
    from .. import AddressError, ExecAddress, parse
    from ..aio.serve import Server
    from ..aio.stream import Connection
    from ..exec import run_exec
    from ._common import run_server

    program = parse("exec:" + command_line)
    assert isinstance(program, ExecAddress)
    if not target.is_stream:
        raise AddressError(f"{target}: --exec needs a stream address (tcp://, unix:)")

    async def handler(conn: Connection) -> None:
        status = await run_exec(conn, program)
        peer = str(conn.peer_address) if conn.peer_address else "(unnamed)"
        event(
            "exit",
            f"{program.argv[0]} for {peer} exited with status {status}",
            level=1,
            peer=peer,
            status=status,
        )
        if not keep_open:
            server.shutdown()

    server = Server(target, handler, max_connections=1024 if keep_open else 1, mode=file_mode)
    return run_server(server, drain_timeout=10.0)

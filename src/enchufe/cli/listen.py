"""enchufe listen ADDRESS: the passive side, stdio piped through the socket."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .._serving import DEFAULT_DRAIN_TIMEOUT
from ..i18n import _
from ._common import (
    DatagramPrinter,
    event,
    given,
    global_options,
    json_option,
    peer_name,
    settings,
    setup_logging,
    stop_on_sigterm,
    tagged,
    warn_truncated,
)
from ._numbers import BoundedInt
from ._server import (
    backlog_option,
    drain_option,
    mode_option,
    parse_mode,
    policy_of,
    proxy_options,
    proxy_settings,
    refuse_mode_unless_file,
)
from ._tls import help_text as tls_help

TLS_EXAMPLES = """\b
TLS examples:
  # a throwaway certificate: the line ends with the pin a client gives as pin=
  enchufe listen 'tls://:9443?cert=auto'
  # mutual TLS: only clients with a certificate of ca.pem, named alice or bob
  enchufe listen -k 'tls://:9443?cert=srv.pem&key=srv.key&client-ca=ca.pem&allow-cn=alice,bob'
"""

if TYPE_CHECKING:
    from .._proxypolicy import ProxyPolicy
    from ..address import Address
    from ..sync import Listener


@click.command("listen", epilog=TLS_EXAMPLES + "\n" + tls_help())
@click.argument("address")
@click.option("-k", "--keep-open", is_flag=True, help="Stream: serve client after client.")
@backlog_option("Stream: listen queue length (not with --exec).")
@mode_option("Permissions of a unix socket file, e.g. 660.")
@click.option("--hex", "hex_", is_flag=True, help="Datagram: a hex dump per datagram.")
@click.option("--count", type=BoundedInt(1), default=None, help="Datagram: stop after N.")
@click.option(
    "--exec",
    "exec_",
    metavar='"PROGRAM ARGS"',
    default=None,
    help="Stream: run PROGRAM for each client, its stdin/stdout as the connection (no shell).",
)
@drain_option(
    DEFAULT_DRAIN_TIMEOUT,
    "With --exec: on SIGTERM, SIGINT or SIGHUP, seconds to let clients finish before cutting them.",
)
@proxy_options()
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
    drain_timeout: float,
    accept_proxy: bool,
    trusted_proxy: tuple[str, ...],
    proxy_timeout: float,
    json_: bool,
) -> int:
    """Accept a client on ADDRESS and copy stdin to it and what it sends to stdout.

    On stdin's EOF the write side is shut down and reading goes on until the client closes.
    On a datagram ADDRESS, each datagram's payload goes to stdout, and stdin is sent to the
    last sender.

    On a TLS ADDRESS each client's handshake runs first (-v: its version, cipher and
    certificate); a refused one ends that client (with -k the next is served).  SIGUSR1 on
    listen -k reads the certificate, key and CA files again for the next clients (a plain
    listener says there is nothing to reload).

    Behind a load balancer (--accept-proxy), each client's PROXY header is read first: the
    client it names is the peer in every line and in --exec's ENCHUFE_PEER_* variables; a
    client without a valid header from a trusted proxy is closed and the next one awaited.
    On a datagram ADDRESS each datagram starts with a v2 header (as relay --send-proxy v2
    sends it): stdout gets the payload, --json names the client ("from") and the proxy
    ("via"), and stdin goes back to the proxy; a datagram without one is dropped.

    Exit status: 0 done, 1 a runtime failure (a TLS client refused, truncated), 2 bad input.

    \b
    Examples:
      # one client on port 9000 of every interface: stdin to it, what it sends to stdout
      enchufe listen tcp://:9000
      # a numbering service: every client gets its own `cat -n`
      enchufe listen -k unix:/tmp/number.sock --exec 'cat -n'
      # dump the first datagram that arrives, and who sent it
      enchufe listen udp://127.0.0.1:5353 --hex --count 1
    """
    from .. import AddressError, bind_datagram, listen, parse
    from .._sockets import DEFAULT_BACKLOG
    from ..stdio import pump_datagram

    settings.json = settings.json or json_
    target = parse(address)
    _refuse_what_does_not_apply(target, keep_open, backlog, hex_, count, exec_, json_)
    refuse_mode_unless_file(target, mode)
    file_mode = parse_mode(mode)
    proxy = proxy_settings(target, accept_proxy, trusted_proxy, proxy_timeout)
    if exec_ is not None:
        if not target.is_stream:
            raise AddressError(
                _("{address}: --exec needs a stream address (tcp://, unix:)").format(address=target)
            )
        return _serve_exec(target, exec_, keep_open, file_mode, drain_timeout, proxy)
    stop_on_sigterm()
    if not target.is_stream:
        if proxy:
            setup_logging()  # the datagrams dropped over their header are logged
        with bind_datagram(target, mode=file_mode) as sock:
            printer = DatagramPrinter(as_json=json_, as_hex=hex_)
            try:  # from the listening line on, SIGTERM means a clean stop
                said = _("listening on {address}").format(address=sock.local_address)
                event("listening", said, address=str(sock.local_address))
                pump_datagram(
                    sock,
                    printer,
                    reply_to_last_sender=True,
                    count=count,
                    on_truncated=warn_truncated,
                    proxy=policy_of(proxy),
                )
            except KeyboardInterrupt:
                return 0
        return 0
    with listen(target, backlog=backlog or DEFAULT_BACKLOG, mode=file_mode) as listener:
        try:  # from the listening line on, SIGTERM between clients means a clean stop
            return _serve(listener, keep_open, policy_of(proxy))
        except KeyboardInterrupt:
            return 0


def _refuse_what_does_not_apply(
    target: Address,
    keep_open: bool,
    backlog: int | None,
    hex_: bool,
    count: int | None,
    exec_: str | None,
    json_: bool,
) -> None:
    """An option that would be ignored for this address is bad input: the user meant something."""
    from ..errors import UsageError

    if target.is_stream:
        if hex_:
            message = _("--hex dumps datagrams; {address} is a stream, whose bytes go to stdout unchanged")
        elif count is not None:
            message = _("--count counts datagrams; {address} is a stream (one client, or -k for many)")
        elif exec_ is not None and backlog is not None:
            message = _("--backlog applies to listen without --exec")
        elif exec_ is None and given("drain_timeout"):
            message = _(
                "--drain-timeout applies with --exec (without it, SIGTERM ends the one client at once)"
            )
        else:
            return
    elif keep_open:
        message = _(
            "-k/--keep-open serves stream clients one after another; {address} is a datagram socket, "
            "which takes every sender already"
        )
    elif backlog is not None:
        message = _("--backlog is the queue of stream clients; {address} is a datagram socket")
    elif given("drain_timeout"):
        message = _("--drain-timeout applies with --exec on a stream; {address} is a datagram socket")
    elif hex_ and json_:
        message = _("--hex and --json both say how to print a datagram: choose one")
    else:
        return
    raise UsageError(message.format(address=target))


def _serve(listener: Listener, keep_open: bool, proxy: ProxyPolicy | None = None) -> int:
    """Announce the listener, then serve one client (or, with ``keep_open``, client after client).
    With ``proxy``, each client's PROXY header first: a client refused over it is closed, and
    the next one awaited (nobody was served yet)."""
    from .._proxypolicy import ProxyRefused
    from ..errors import ConnectionReset, NetworkError
    from ..stdio import pump_stream
    from ..sync.serve import take_proxy_header
    from ._server import accepted
    from ._tls import handshake_done, listening, reload_on_sigusr1

    # Before the line (whoever reads it may signal at once); a plain listener says it has
    # nothing to reload rather than die of SIGUSR1's default action.
    reload_on_sigusr1(listener)
    listening(listener.address, listener.tls_pin)
    stdin_fd: int | None = 0
    while True:
        try:
            conn = listener.accept()
        except ConnectionReset:
            # The client reset before we accepted it: nobody was served yet, so even a
            # one-shot listen waits for the next client, as nc -l and socat do.
            event("reset", _("a client left before it was accepted"), level=1)
            continue
        if proxy is not None:
            try:
                take_proxy_header(conn, proxy)
            except ProxyRefused as exc:
                conn.close()
                event("refused", tagged(exc), peer=peer_name(conn.peer_address), error=str(exc))
                continue
        peer = peer_name(conn.peer_address)
        accepted(peer, conn.proxy_address, conn.proxy_header)
        try:
            with conn:
                conn.handshake()  # TLS: refused or timed out ends this client only (with -k)
                handshake_done(conn, peer)
                result = pump_stream(conn, stdin_fd=stdin_fd)
        except KeyboardInterrupt:
            event(
                "close", _("interrupted: connection from {peer} cut").format(peer=peer), peer=peer, cut=True
            )
            return 1
        except NetworkError as exc:
            event("error", tagged(exc), level=0, peer=peer, error=str(exc))
            if not keep_open:
                return 1
            continue
        if result.stdin_eof:
            stdin_fd = None  # later clients get EOF from us at once
        said = _("closed {peer} after {received} bytes in, {sent} out").format(
            peer=peer, received=result.received, sent=result.sent
        )
        event("close", said, level=1, peer=peer, sent=result.sent, received=result.received)
        if not keep_open:
            return 0


def _serve_exec(
    target: Address,
    command_line: str,
    keep_open: bool,
    file_mode: int | None,
    drain_timeout: float,
    proxy: dict[str, Any],
) -> int:
    """An inetd in one line: each client gets its own PROGRAM, without a shell.

    A PROGRAM that cannot start (missing, not executable) is said on stderr for each client it
    fails for; without ``-k`` the command then ends with exit status 1.
    """
    from .. import ExecAddress, parse
    from ..aio.serve import Server
    from ..aio.stream import Connection
    from ..errors import EnchufeError, NetworkError
    from ..exec import run_exec
    from ._server import announced, run_server

    program = parse("exec:" + command_line)
    assert isinstance(program, ExecAddress)
    failed = False

    async def handler(conn: Connection) -> None:
        nonlocal failed
        peer = peer_name(conn.peer_address)
        try:
            status = await run_exec(conn, program)
        except EnchufeError as exc:  # the program could not start for this client
            failed = True
            event("error", tagged(exc), peer=peer, error=str(exc))
        else:
            said = _("{program} for {peer} exited with status {status}").format(
                program=program.argv[0], peer=peer, status=status
            )
            event("exit", said, level=1, peer=peer, status=status)
        if not keep_open:
            server.shutdown(drain_timeout)

    def refused(conn: Connection, exc: NetworkError) -> None:
        # The line is the library's own (a warning, with or without -v; a "log" event with --json).
        nonlocal failed
        if not keep_open:  # as listen without --exec: that client was the one
            failed = True
            server.shutdown(drain_timeout)

    server = Server(
        target,
        announced(handler),
        max_connections=1024 if keep_open else 1,
        mode=file_mode,
        on_handshake_failure=refused,
        **proxy,
    )
    status = run_server(server, drain_timeout=drain_timeout)
    return 1 if failed and not keep_open else status

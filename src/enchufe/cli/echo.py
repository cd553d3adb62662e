"""enchufe echo ADDRESS: an echo server for any of the six kinds."""

from __future__ import annotations

import click

from ._common import global_options, json_option
from ._server import proxy_options, proxy_settings, serve, server_target, serving_options
from ._tls import help_text as tls_help


@click.command("echo", epilog=tls_help())
@click.argument("address")
@serving_options()
@proxy_options()
@json_option
@global_options
def command(
    address: str,
    max_conns: int,
    idle_timeout: float | None,
    mode: str | None,
    drain_timeout: float,
    accept_proxy: bool,
    trusted_proxy: tuple[str, ...],
    proxy_timeout: float,
    json_: bool,
) -> int:
    """Echo every byte (stream) or datagram (datagram kinds) back to its sender.

    On a stream, the server closes after the client's EOF once everything is echoed.  TLS
    addresses (tls://, tls+unix:) echo what each client sends inside TLS: the address's
    parameters (cert=, or cert=auto for a throwaway certificate; client-ca=, alpn=…) are those
    `enchufe listen --help` lists.

    \b
    Examples:
      # a TCP echo server that says what each client sent and got back
      enchufe echo tcp://127.0.0.1:7000 -v
      # datagrams back to their senders, over IPv6
      enchufe echo udp://[::1]:7000
      # a unix socket file for one group; clients silent for 30 s are closed
      enchufe echo unix:/tmp/echo.sock --mode 660 --idle-timeout 30
    """
    from ..servers import echo_datagram, echo_stream

    target = server_target(address, json_, mode)
    return serve(
        target,
        echo_stream,
        echo_datagram,
        max_conns=max_conns,
        idle_timeout=idle_timeout,
        mode=mode,
        drain_timeout=drain_timeout,
        proxy=proxy_settings(target, accept_proxy, trusted_proxy, proxy_timeout),
    )

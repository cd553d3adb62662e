"""enchufe recv ADDRESS: bind a datagram socket and print what arrives."""

from __future__ import annotations

import click

from .._buffer import DEFAULT_MAX_DATAGRAM
from ..i18n import _
from ._common import (
    DatagramPrinter,
    event,
    global_options,
    json_option,
    settings,
    setup_logging,
    stop_on_sigterm,
    warn_truncated,
)
from ._numbers import BoundedInt
from ._server import (
    mode_option,
    parse_mode,
    policy_of,
    proxy_options,
    proxy_settings,
    refuse_mode_unless_file,
)

#: The largest --max-size: a receive buffer of this many bytes is allocated per datagram, and no
#: datagram socket carries more (UDP: 64 KiB; unix: the send buffer, 208 KiB by default).
MAX_DATAGRAM_SIZE = 16 * 1024 * 1024


@click.command("recv")
@click.argument("address")
@click.option("--count", type=BoundedInt(1), default=None, help="Stop after N datagrams.")
@click.option("--hex", "hex_", is_flag=True, help="A hex dump per datagram, sender first.")
@click.option(
    "--max-size",
    type=BoundedInt(1, MAX_DATAGRAM_SIZE),
    default=DEFAULT_MAX_DATAGRAM,
    show_default=True,
    help="Largest datagram accepted; larger ones are reported as truncated.",
)
@mode_option("Permissions of a unixgram socket file, e.g. 660.")
@proxy_options(streams=False)
@json_option
@global_options
def command(
    address: str,
    count: int | None,
    hex_: bool,
    max_size: int,
    mode: str | None,
    accept_proxy: bool,
    trusted_proxy: tuple[str, ...],
    json_: bool,
) -> int:
    """Bind ADDRESS (udp:// or unixgram:) and print each datagram that arrives.

    By default each payload is written exactly as received; --json writes one object per line
    (from, size, base64, text); --hex a dump per datagram.

    Behind an enchufe relay with --send-proxy v2, --accept-proxy takes the PROXY header off
    each datagram: the payload is printed, and --json names the client it names ("from") and
    the relay ("via"); a datagram without one, or not from a trusted proxy, is dropped.

    \b
    Examples:
      # print datagrams on port 5140 of every interface as they come
      enchufe recv udp://:5140
      # ten datagrams on a unix socket file, as JSON lines (sender, size, payload)
      enchufe recv unixgram:/tmp/log.sock --json --count 10
      # a hex dump of each datagram; -v also says who sent it, on stderr
      enchufe recv udp://127.0.0.1:9999 --hex -v
    """
    from .. import AddressError, bind_datagram, parse
    from .._proxypolicy import DEFAULT_PROXY_TIMEOUT
    from ..errors import UsageError
    from ..stdio import pump_datagram

    settings.json = settings.json or json_  # the events on stderr too, as listen does
    target = parse(address)
    if target.is_stream:
        import shlex  # a TLS address's ?query must be quoted to be pasted into a shell

        raise AddressError(
            _(
                "{address}: recv takes a datagram address (udp://…, unixgram:…); for a stream use "
                "`enchufe listen {quoted}`"
            ).format(address=address, quoted=shlex.quote(address))
        )
    refuse_mode_unless_file(target, mode)
    if hex_ and json_:
        raise UsageError(_("--hex and --json both say how to print a datagram: choose one"))
    proxy = policy_of(proxy_settings(target, accept_proxy, trusted_proxy, DEFAULT_PROXY_TIMEOUT))
    if proxy is not None:
        setup_logging()  # the datagrams dropped over their header are logged
    stop_on_sigterm()
    with bind_datagram(target, mode=parse_mode(mode)) as sock:
        try:  # from the listening line on, SIGTERM and SIGHUP mean a clean stop
            said = _("listening on {address}").format(address=sock.local_address)
            event("listening", said, address=str(sock.local_address))
            pump_datagram(
                sock,
                DatagramPrinter(as_json=json_, as_hex=hex_),
                stdin_fd=None,
                count=count,
                max_size=max_size,
                on_truncated=warn_truncated,
                proxy=proxy,
            )
        except KeyboardInterrupt:
            return 0
    return 0

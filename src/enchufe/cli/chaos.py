"""``enchufe chaos``: named proxies with faults, driven by Toxiproxy's HTTP API."""

from __future__ import annotations

from typing import Any

import click

from ..i18n import _
from ._common import event, global_options, json_option, settings
from ._numbers import BoundedInt

#: Toxiproxy's own default: its clients look there first.
DEFAULT_CONTROL = "127.0.0.1:8474"


@click.command("chaos")
@click.option(
    "--control",
    default=DEFAULT_CONTROL,
    show_default=True,
    metavar="HOST:PORT",
    help="Serve Toxiproxy's HTTP API here (tcp://HOST:PORT too).  It has no authentication: "
    "keep it on loopback.",
)
@click.option(
    "--config",
    "config_file",
    metavar="FILE",
    help='A JSON array of proxies ({"name", "listen", "upstream", "enabled"}), created at '
    "start, as Toxiproxy's -config and POST /populate.",
)
@click.option(
    "--seed",
    type=BoundedInt(0, 2**63 - 1),
    default=None,
    help="Seed of every proxy's random choices (jitter, toxicity, slicer sizes, datagram loss).",
)
@json_option
@global_options
def command(control: str, config_file: str | None, seed: int | None, json_: bool) -> int:
    """A fault-injection server: proxies (relays) with toxics, created and changed over
    Toxiproxy's HTTP API, so that Toxiproxy's clients drive it unchanged.

    \b
    API (Toxiproxy's routes, status codes and JSON): GET /version; GET, POST /proxies;
    GET, POST, DELETE /proxies/NAME; GET, POST /proxies/NAME/toxics; GET, POST, DELETE
    /proxies/NAME/toxics/TOXIC; POST /reset; POST /populate.  A proxy's listen and upstream
    are host:port (TCP, as in Toxiproxy) or any enchufe address (unix:…, udp://…, unixgram:…).
    Toxics: latency, bandwidth, slicer, limit_data, timeout, reset_peer, slow_close; for datagrams
    latency, bandwidth, loss, duplicate, corrupt, reorder.  A connection has the toxics its proxy
    had when it started.

    \b
    SIGINT, SIGTERM and SIGHUP stop the API and every proxy (their connections are cut); exit 0.

    \b
    Examples:
      enchufe chaos
      curl -s -XPOST localhost:8474/proxies \\
        -d '{"name":"db","listen":"127.0.0.1:15432","upstream":"127.0.0.1:5432"}'
      curl -s -XPOST localhost:8474/proxies/db/toxics -d '{"type":"latency","attributes":{"latency":100}}'
      enchufe chaos --config proxies.json --control 127.0.0.1:9474
    """
    import signal
    import threading

    settings.json = settings.json or json_
    host, port = _control_address(control)
    from ..faults.chaos_run import ChaosServer

    level = 2 if settings.json else settings.verbose
    try:
        server = ChaosServer(host, port, _emit, level, seed=seed)
    except OSError as exc:
        from ..errors import NetworkError, reason

        raise NetworkError(
            _("cannot serve the API on {address}: {reason}; pick another --control address").format(
                address=control, reason=reason(exc)
            )
        ) from None
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stopped.set())
    try:
        if config_file is not None:
            server.populate_file(config_file)
        shown = f"[{host}]:{server.port}" if ":" in host else f"{host}:{server.port}"
        if not _loopback(host):
            event(
                "warning",
                _(
                    "enchufe: warning: the API on {address} has no authentication: anyone who reaches it "
                    "can open proxies from this machine"
                ).format(address=shown),
            )
        server.start()
        address = f"tcp://{shown}"
        event("listening", _("listening on {address}").format(address=address), address=address)
        while not stopped.wait(3600):
            pass
    finally:
        server.close()
    return 0


def _control_address(control: str) -> tuple[str, int]:
    """--control as the host and port to serve on; UsageError unless it is HOST:PORT (TCP)."""
    from ..address import InetAddress
    from ..errors import UsageError
    from ..faults.chaos import ApiError, as_address

    try:
        address = as_address(control, "--control")
    except ApiError as exc:
        raise UsageError(exc.message) from None
    if not isinstance(address, InetAddress) or not address.is_stream or address.is_tls:
        raise UsageError(
            _("--control {address}: the API is HTTP over TCP; give HOST:PORT, e.g. {example}").format(
                address=control, example=DEFAULT_CONTROL
            )
        )
    return address.host or "0.0.0.0", address.port


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _emit(name: str, message: str, /, *, level: int = 0, **fields: Any) -> None:
    event(name, message, level=level, **fields)

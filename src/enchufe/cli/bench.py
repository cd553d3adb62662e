"""enchufe bench [ADDRESS…]: throughput, latency, connection rate, datagram rate and loss."""

from __future__ import annotations

import click

from ..bench.options import MAX_COUNT, MAX_DURATION, MAX_PARALLEL, MAX_STREAM_SIZE
from ._common import global_options, settings, stop_on_sigterm
from ._numbers import BoundedInt, FiniteFloat


@click.command("bench")
@click.argument("addresses", nargs=-1, metavar="[ADDRESS]...")
@click.option(
    "--mode",
    metavar="MODE",
    help="Only one measure: throughput, latency, connect or datagram.  [default: every one the kind has]",
)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    metavar="KIND",
    help="Loopback run only: these kinds (tcp4 tcp6 udp4 udp6 unix unixgram; repeat or use commas), "
    "or tls and tls+unix: each beside the same connection without TLS, with the ratio.",
)
@click.option(
    "--duration",
    type=FiniteFloat(0, MAX_DURATION, min_open=True),
    metavar="SECONDS",
    help="Seconds per timed test, after a warm-up.  [default: 1]",
)
@click.option(
    "--count", type=BoundedInt(1, MAX_COUNT), metavar="N", help="Latency round trips.  [default: 5000]"
)
@click.option(
    "--size",
    type=BoundedInt(1, MAX_STREAM_SIZE),
    metavar="BYTES",
    help="Bytes per write (throughput, default 131072), per ping (latency, default 64) "
    "or per datagram (default: both 64 and 1400).",
)
@click.option(
    "-P",
    "--parallel",
    type=BoundedInt(1, MAX_PARALLEL),
    metavar="N",
    help="Connections of the parallel throughput test.  [default: 4]",
)
@click.option(
    "--sink",
    is_flag=True,
    help="The servers given discard what they receive: throughput does not read an echo back.",
)
@click.option(
    "--json", "json_", is_flag=True, help="Print one JSON object with every figure instead of tables."
)
@click.option("--plot", metavar="FILE.png", help="Draw the comparison as a PNG (needs enchufe[plot]).")
@click.option("--compare", metavar="FILE.json", help="Show the difference to an earlier --json run.")
@global_options
def command(
    addresses: tuple[str, ...],
    mode: str | None,
    kinds: tuple[str, ...],
    duration: float | None,
    count: int | None,
    size: int | None,
    parallel: int | None,
    sink: bool,
    json_: bool,
    plot: str | None,
    compare: str | None,
) -> int:
    """Measure sockets: throughput, latency, connection rate, datagram rate and loss.

    With no ADDRESS, each of the six kinds on loopback, against bench's own servers running in
    a separate process.  With ADDRESSes, servers that already run there: an echo server
    (`enchufe echo`, or any other), or with --sink one that discards.

    \b
    Examples:
      # every kind on loopback, every measure, about half a minute
      enchufe bench
      # what TLS costs: throughput, handshakes/s, ping-pong, each beside the same without TLS
      enchufe bench --kind tls,tls+unix
      # an echo server that already runs, its figures kept as JSON for a later --compare
      enchufe bench tcp://127.0.0.1:7000 --json > before.json
    """
    from ..bench.command import Request, main

    # A closed terminal (SIGHUP) or SIGTERM stops the run as Ctrl-C does, cleaning up.
    stop_on_sigterm()
    request = Request(
        addresses,
        mode=mode,
        kinds=kinds,
        duration=duration,
        count=count,
        size=size,
        parallel=parallel,
        sink=sink,
        as_json=json_,
        plot=plot,
        compare=compare,
        quiet=settings.quiet,
    )
    return main(request)

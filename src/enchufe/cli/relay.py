"""enchufe relay LISTEN TARGET: for every client of LISTEN, open TARGET and carry bytes both ways."""

from __future__ import annotations

from typing import Any

import click

from ._common import event, global_options, json_option, settings


@click.command("relay")
@click.argument("listen_address", metavar="LISTEN")
@click.argument("target_address", metavar="TARGET")
@click.option(
    "--max-conns", type=click.IntRange(1), default=None, help="Relayed connections at once; more are reset."
)
@click.option(
    "--connect-timeout",
    type=click.FloatRange(0, min_open=True),
    default=None,
    metavar="S",
    help="Give up connecting to TARGET after S seconds (default 10).",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(0, min_open=True),
    default=None,
    metavar="S",
    help="Close a connection after S seconds without traffic (default: never).",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(0),
    default=None,
    metavar="S",
    help="On SIGTERM/SIGINT, let open connections finish for S seconds (default 10).",
)
@click.option("--allow", multiple=True, metavar="CIDR", help="Only these IP peers (repeatable).")
@click.option(
    "--deny", multiple=True, metavar="CIDR", help="Refuse these IP peers (repeatable; wins over --allow)."
)
@click.option(
    "--allow-uid", multiple=True, metavar="UID", help="Unix LISTEN: only peers with this uid or user."
)
@click.option(
    "--allow-gid", multiple=True, metavar="GID", help="Unix LISTEN: only peers with this gid or group."
)
@click.option(
    "--stats",
    "stats_interval",
    type=click.FloatRange(0, min_open=True),
    is_flag=False,
    flag_value=1.0,
    default=None,
    metavar="[S]",
    help="A stats line every S seconds (default 1; write --stats=S) and a summary at exit.",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=1,
    help="Processes sharing a tcp LISTEN port (SO_REUSEPORT).",
)
@click.option("--backlog", type=click.IntRange(1), default=None, help="Listen queue length.")
@click.option("--mode", default=None, help="Permissions of a unix LISTEN socket file, e.g. 660.")
@click.option("--no-splice", is_flag=True, help="Copy through a buffer instead of splice() (to compare).")
@json_option
@global_options
def command(
    listen_address: str,
    target_address: str,
    max_conns: int | None,
    connect_timeout: float | None,
    idle_timeout: float | None,
    drain_timeout: float | None,
    allow: tuple[str, ...],
    deny: tuple[str, ...],
    allow_uid: tuple[str, ...],
    allow_gid: tuple[str, ...],
    stats_interval: float | None,
    workers: int,
    backlog: int | None,
    mode: str | None,
    no_splice: bool,
    json_: bool,
) -> int:
    """For every client of LISTEN, connect to TARGET and carry bytes both ways until both are done.

    \b
    LISTEN and TARGET are stream addresses: tcp, tcp4, tcp6, unix (path or @abstract), in any
    combination.  Each direction is half-closed on its own: the client's EOF is passed on to the
    target, whose answer still comes back.  SIGTERM/SIGINT stop accepting and let open
    connections finish (--drain-timeout); a second signal cuts them.  Exit status 0, or 1 if
    connections had to be cut.

    \b
    Examples:
      enchufe relay tcp://:8080 tcp://10.0.0.5:80
      enchufe relay unix:///run/app.sock tcp://127.0.0.1:9000 --allow-uid www-data
      enchufe relay tcp://:8080 unix:@backend --max-conns 1000 --stats=5
    """
    from .._sockets import DEFAULT_BACKLOG
    from ..relay import AccessRules, EventSink, Relay, RelayConfig, run_workers
    from ..relay.server import DEFAULT_CONNECT_TIMEOUT, DEFAULT_DRAIN_TIMEOUT

    settings.json = settings.json or json_
    config = RelayConfig(
        listen=listen_address,
        target=target_address,
        max_conns=max_conns,
        connect_timeout=connect_timeout or DEFAULT_CONNECT_TIMEOUT,
        idle_timeout=idle_timeout,
        drain_timeout=DEFAULT_DRAIN_TIMEOUT if drain_timeout is None else drain_timeout,
        rules=AccessRules.parse(allow=allow, deny=deny, allow_uids=allow_uid, allow_gids=allow_gid),
        stats_interval=stats_interval,
        splice=not no_splice,
        backlog=backlog or DEFAULT_BACKLOG,
        mode=_parse_mode(mode),
    )
    level = _event_level()
    if workers > 1:
        return run_workers(
            config,
            workers,
            events=EventSink(_emit, level),
            worker_events=lambda index: EventSink(_emit, level, worker=index),
        )
    relay = Relay(config, events=EventSink(_emit, level))
    relay.open()
    return relay.run().exit_status


def _event_level() -> int:
    """The most detailed event level wanted: all of them for --json, else one per -v."""
    if settings.json:
        return 2
    return settings.verbose


def _emit(name: str, message: str, /, *, level: int = 0, **fields: Any) -> None:
    event(name, message, level=level, **fields)


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

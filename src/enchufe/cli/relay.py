"""enchufe relay LISTEN TARGET: for every client of LISTEN, open TARGET and carry bytes (or datagrams)
both ways."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from .._buffer import DEFAULT_MAX_DATAGRAM
from .._sockets import DEFAULT_BACKLOG
from ..i18n import _
from ..relay.config import DEFAULT_CONNECT_TIMEOUT, DEFAULT_DRAIN_TIMEOUT
from ..sessions import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_SESSIONS
from ._common import F, event, given, global_options, json_option, settings
from ._numbers import MAX_SECONDS, BoundedInt, FiniteFloat
from ._server import parse_mode, proxy_options, proxy_settings, server_options
from ._tls import help_text as tls_help
from ._via import parse_via, relay_via_option

if TYPE_CHECKING:
    from ..faults import FaultPlan

#: The shortest --stats interval: a line per 100 ms is already more than anyone reads, and a
#: shorter one would make the relay spend its time reporting.
MIN_STATS_INTERVAL = 0.1

#: More worker processes than this only costs memory: each runs one event loop on one CPU.
MAX_WORKERS = 256

#: The largest --max-datagram: 16 MiB, as the library allows (a unix datagram can be that large
#: with big socket buffers; a UDP one is at most 65,507 bytes over IPv4).
MAX_DATAGRAM = 16 * 1024 * 1024


def access_options(who: str) -> Callable[[F], F]:
    """``--allow``/``--deny CIDR`` of the relay's commands (``who``: "peers", "clients")."""

    def decorate(f: F) -> F:
        deny = f"Refuse these IP {who} (repeatable; wins over --allow)."
        f = click.option("--deny", multiple=True, metavar="CIDR", help=deny)(f)
        allow = f"Only these IP {who} (repeatable)."
        return click.option("--allow", multiple=True, metavar="CIDR", help=allow)(f)

    return decorate


def stats_option(f: F) -> F:
    """``--stats[=S]`` of the relay's commands (a negative value: see :class:`_RelayCommand`)."""
    return click.option(
        "--stats",
        "stats_interval",
        type=FiniteFloat(MIN_STATS_INTERVAL, MAX_SECONDS),
        is_flag=False,
        flag_value=1.0,
        default=None,
        help="A stats line every S seconds (default 1; write --stats=S) and a summary at exit.",
    )(f)


def workers_option(kinds: str) -> Callable[[F], F]:
    """``--workers N`` of the relay's commands (``kinds``: the LISTEN kinds that can share a port)."""
    return click.option(
        "--workers",
        type=BoundedInt(1, MAX_WORKERS),
        default=1,
        help=f"Processes sharing a {kinds} LISTEN port (SO_REUSEPORT).",
    )


class _RelayCommand(click.Command):
    """The relay's command, where a negative ``--stats`` value gets the range message.

    ``--stats`` takes an optional value, so click reads a value starting with ``-`` after it
    (``--stats -1``, even ``--stats=-1``) as an option of its own and says "No such option
    '-1'"; a number there is meant as the interval, and is refused as any other bad one.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing:
            _refuse_negative_stats(ctx, self.params, args)
        return super().parse_args(ctx, args)


def _refuse_negative_stats(ctx: click.Context, params: list[click.Parameter], args: list[str]) -> None:
    """Convert a negative number given to --stats, which raises click.BadParameter (exit 2)."""
    (stats,) = [p for p in params if p.name == "stats_interval"]
    for index, arg in enumerate(args):
        if arg == "--":
            return
        if arg.startswith("--stats="):
            value = arg[len("--stats=") :]
        elif arg == "--stats" and index + 1 < len(args):
            value = args[index + 1]
        else:
            continue
        sign, rest = value[:1], value[1:]
        # "-" alone is stdio as LISTEN; "-v", "--json" are options (a number does not start so).
        if (
            sign == "-"
            and rest[:1] not in ("", "-")
            and (not rest[:1].isalpha() or rest.lower() in _NON_FINITE)
        ):
            stats.type.convert(value, stats, ctx)


_NON_FINITE = ("inf", "infinity", "nan")


@click.command("relay", cls=_RelayCommand, epilog=tls_help())
@click.argument("listen_address", metavar="LISTEN")
@click.argument("target_address", metavar="TARGET")
@server_options(
    max_conns=None,  # the relay works it out from the descriptor limit
    max_conns_help="Relayed connections at once; more are reset (default: what the descriptor limit holds).",
    idle_help="Close a connection after S seconds without traffic (default: never for streams, "
    f"{DEFAULT_IDLE_TIMEOUT:g} for datagram sessions).",
    drain_timeout=DEFAULT_DRAIN_TIMEOUT,
    drain_help="On SIGTERM/SIGINT/SIGHUP, let open connections finish for S seconds (0 cuts them at once).",
    mode_help="Permissions of a unix LISTEN socket file, e.g. 660.",
    backlog_help="Listen queue length of a stream LISTEN (default "
    f"{DEFAULT_BACKLOG}, capped by net.core.somaxconn).",
)
@click.option(
    "--connect-timeout",
    type=FiniteFloat(0, MAX_SECONDS, min_open=True),
    default=None,
    help=f"Give up connecting to TARGET after S seconds (default {DEFAULT_CONNECT_TIMEOUT:g}); "
    "with --via, to the first proxy and through every hop's handshake.",
)
@click.option(
    "--max-sessions",
    type=BoundedInt(1),
    default=None,
    help="Datagram sessions (one per sender) at once; a new sender evicts the least active "
    f"(default {DEFAULT_MAX_SESSIONS}).",
)
@click.option(
    "--max-datagram",
    type=BoundedInt(1, MAX_DATAGRAM, symbol="BYTES"),
    default=None,
    help=f"Largest datagram relayed; larger ones are counted and dropped (default {DEFAULT_MAX_DATAGRAM}).",
)
@click.option(
    "--frame",
    is_flag=True,
    help="Carry datagrams over a stream as length-prefixed messages (one stream and one datagram end).",
)
@access_options("peers")
@click.option(
    "--allow-uid", multiple=True, metavar="UID", help="Unix LISTEN: only peers with this uid or user."
)
@click.option(
    "--allow-gid", multiple=True, metavar="GID", help="Unix LISTEN: only peers with this gid or group."
)
@stats_option
@click.option(
    "--reload-interval",
    type=FiniteFloat(MIN_STATS_INTERVAL, MAX_SECONDS),
    default=None,
    help="Look at the TLS certificate, key and CA files every S seconds; read them again when "
    "one changed (as SIGUSR1 does).",
)
@workers_option("tcp or udp")
@click.option(
    "--route",
    "routes",
    multiple=True,
    metavar="NAME=TARGET",
    help="Send clients whose TLS server name (SNI) is NAME (*.DOMAIN: one label) to TARGET "
    "(repeatable; exact names first); TARGET is then the default, - for none (refused).  A tls:// "
    "LISTEN terminates (NAME=TARGET?cert=F&key=K: NAME's certificate); tcp:// and unix: pass "
    "the TLS bytes through untouched.  ?alpn=P,… : only clients offering one of these ALPN protocols.",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="TYPE[:ATTR=VALUE,…]",
    help="Inject a fault, as Toxiproxy's toxics (repeatable, applied in order): on streams latency, "
    "bandwidth, slicer, limit_data, timeout, reset_peer, slow_close; on datagrams latency, bandwidth, "
    "loss, duplicate, corrupt, reorder.  ATTR=VALUE as Toxiproxy's attributes, and "
    "stream=upstream|downstream (default downstream: towards the client), toxicity=0…1 (default 1).  "
    "With --frame the datagram faults act on the datagrams, at either end; with a TLS end the "
    "stream faults act on the plaintext.  E.g. --fault latency:latency=100,jitter=10",
)
@click.option(
    "--seed",
    type=BoundedInt(0, 2**63 - 1),
    default=None,
    help="Seed of the faults' random choices (jitter, toxicity, slicer sizes): the same seed, "
    "the same choices.",
)
@proxy_options()
@click.option(
    "--send-proxy",
    type=click.Choice(["v1", "v2"]),
    default=None,
    help="Start each connection to TARGET with a PROXY protocol header naming the real client "
    "(behind --accept-proxy: the client its header named), as HAProxy's send-proxy[-v2]; v2 also "
    "carries the client's TLS (version, cipher, certificate CN, ALPN, server name) on a tls:// LISTEN.  "
    "Datagrams: v2, a header before each datagram.",
)
@relay_via_option
@click.option("--no-splice", is_flag=True, help="Copy through a buffer instead of splice() (to compare).")
@json_option
@global_options
def command(
    listen_address: str,
    target_address: str,
    max_conns: int | None,
    idle_timeout: float | None,
    mode: str | None,
    drain_timeout: float,
    backlog: int | None,
    connect_timeout: float | None,
    max_sessions: int | None,
    max_datagram: int | None,
    frame: bool,
    allow: tuple[str, ...],
    deny: tuple[str, ...],
    allow_uid: tuple[str, ...],
    allow_gid: tuple[str, ...],
    stats_interval: float | None,
    reload_interval: float | None,
    workers: int,
    routes: tuple[str, ...],
    faults: tuple[str, ...],
    seed: int | None,
    accept_proxy: bool,
    trusted_proxy: tuple[str, ...],
    proxy_timeout: float,
    send_proxy: str | None,
    via: tuple[str, ...],
    no_splice: bool,
    json_: bool,
) -> int:
    """For every client of LISTEN, connect to TARGET and carry bytes both ways until both are done.

    \b
    Streams (tcp, tcp4, tcp6, unix path or @abstract, in any combination): each direction is
    half-closed on its own: the client's EOF is passed on to the target, whose answer still comes
    back.  TARGET may also be exec:PROGRAM ARGS (a child per client, its stdin and stdout) or -
    (the first client, to this process's stdin and stdout); LISTEN - relays stdin and stdout to
    TARGET once.

    \b
    Datagrams (udp, udp4, udp6, unixgram, in any combination): a session per sender, each with its
    own upstream socket, so that replies go back to their sender; sessions end after
    --idle-timeout (60 s) and the least active is evicted past --max-sessions.  A stream and a
    datagram address need --frame: each datagram travels as a length-prefixed message.

    \b
    SIGTERM, SIGINT and SIGHUP stop accepting and let open connections finish (--drain-timeout); a
    second signal cuts them.  SIGUSR1 reads the TLS files again for the handshakes that come next
    (a bad file keeps the old ones).  Exit status 0, or 1 if connections had to be cut (or a
    one-shot stdio relay was reset).

    \b
    With --route, each client goes to the TARGET of its TLS server name (SNI): read from its
    ClientHello and passed through untouched (tcp://, unix: LISTEN), or after the relay
    terminated TLS with that name's certificate (tls:// LISTEN).

    \b
    Behind a load balancer, --accept-proxy takes each client's address from the PROXY header
    (v1 or v2) its proxy sends first: that client is the one --allow/--deny judge and the logs,
    --json and exec:'s ENCHUFE_PEER* name; --send-proxy v1|v2 passes it on to TARGET.  On a
    datagram LISTEN a v2 header comes before each datagram (as --send-proxy v2 sends them).

    \b
    With --via, each client's connection reaches TARGET through SOCKS5 or HTTP CONNECT proxies
    (a chain, first hop first), and each sender's datagrams a udp:// TARGET through one SOCKS5
    proxy (UDP ASSOCIATE): a proxy's refusal ends that client's session with one line naming
    the hop and its reason, counted as a failed connect.

    \b
    Examples:
      enchufe relay tcp://:8080 tcp://10.0.0.5:80
      enchufe relay unix:///run/app.sock tcp://127.0.0.1:9000 --allow-uid www-data
      enchufe relay tcp://:8080 unix:@backend --max-conns 1000 --stats=5
      enchufe relay udp://:5353 udp://10.0.0.53:53
      enchufe relay udp://:5353 tcp://10.0.0.7:9000 --frame   # and on 10.0.0.7:
      enchufe relay tcp://:9000 udp://10.0.0.53:53 --frame
      enchufe relay tcp://:7000 'exec:tr a-z A-Z'
      enchufe relay - tcp://example.com:80 < request.txt
      enchufe relay tcp://:443 - --route a.example.com=tcp://10.0.0.5:443 --route '*.example.com=unix:@web'
      enchufe relay tcp://:8080 tcp://10.0.0.5:80 --accept-proxy --trusted-proxy 10.0.0.2 --send-proxy v2
      enchufe relay tcp://:8443 tls://internal.example:443 --via socks5://user:pass@10.0.0.9:1080
    """
    from ..relay import AccessRules, EventSink, RelayConfig  # the engine: once the config is good

    settings.json = settings.json or json_
    proxy = _proxy_settings(listen_address, accept_proxy, trusted_proxy, proxy_timeout)
    config = RelayConfig(
        listen=listen_address,
        target=target_address,
        max_conns=max_conns,
        connect_timeout=connect_timeout or DEFAULT_CONNECT_TIMEOUT,
        idle_timeout=idle_timeout,
        max_sessions=max_sessions or DEFAULT_MAX_SESSIONS,
        max_datagram=max_datagram or DEFAULT_MAX_DATAGRAM,
        frame=frame,
        drain_timeout=drain_timeout,
        rules=AccessRules.parse(allow=allow, deny=deny, allow_uids=allow_uid, allow_gids=allow_gid),
        stats_interval=stats_interval,
        reload_interval=reload_interval,
        splice=not no_splice,
        backlog=backlog,
        mode=parse_mode(mode),
        routes=routes,
        send_proxy=int(send_proxy[1]) if send_proxy else None,
        **proxy,
        faults=_fault_plan(faults, seed),
        via=parse_via(via),
    )
    level = _event_level()
    if settings.debug:
        _tracebacks()
    if workers > 1:
        from ..relay import run_workers

        return run_workers(
            config,
            workers,
            events=EventSink(_emit, level),
            worker_events=lambda index: EventSink(_emit, level, worker=index),
        )
    from ..relay import Relay

    relay = Relay(config, events=EventSink(_emit, level))
    relay.open()
    return relay.run().exit_status


def _fault_plan(faults: tuple[str, ...], seed: int | None) -> FaultPlan | None:
    """--fault and --seed as the relay's plan (None without --fault); UsageError for a bad one."""
    if not faults:
        if seed is not None:
            from ..errors import UsageError

            raise UsageError(_("--seed makes the faults' random choices repeatable: give --fault too"))
        return None
    import random

    from ..faults import FaultError, FaultPlan, parse_fault

    try:
        toxics = tuple(parse_fault(text) for text in faults)
    except FaultError as exc:
        raise FaultError(_("--fault {error}").format(error=exc)) from None
    plan = FaultPlan(toxics, seed if seed is not None else random.SystemRandom().randrange(2**63))
    # The seed is said even when drawn: a run that failed can be repeated with --seed.
    shown = "; ".join(t.describe() for t in toxics)
    event(
        "faults",
        _("faults: {faults}; --seed {seed}").format(faults=shown, seed=plan.seed),
        level=1,
        toxics=[t.to_json() for t in toxics],
        seed=plan.seed,
    )
    return plan


def _proxy_settings(
    listen_address: str, accept_proxy: bool, trusted_proxy: tuple[str, ...], proxy_timeout: float
) -> dict[str, Any]:
    """--accept-proxy and its options, checked as the servers' are (the relay's config checks
    the rest): RelayConfig's fields."""
    if not accept_proxy and not trusted_proxy and not given("proxy_timeout"):
        return {}
    from .. import parse

    proxy = proxy_settings(parse(listen_address), accept_proxy, trusted_proxy, proxy_timeout)
    proxy["trusted_proxies"] = tuple(proxy["trusted_proxies"])
    return proxy


def _tracebacks() -> None:
    """--debug: a handler or timer that raised in the relay (its session ended, the relay went
    on) is also written with its traceback (the engine logs it at DEBUG level)."""
    import logging
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("enchufe.relay")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


def _event_level() -> int:
    """The most detailed event level wanted: all of them for --json, else one per -v."""
    if settings.json:
        return 2
    return settings.verbose


def _emit(name: str, message: str, /, *, level: int = 0, **fields: Any) -> None:
    event(name, message, level=level, **fields)

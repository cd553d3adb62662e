"""enchufe socks LISTEN: a SOCKS5 server, built on the relay (its limits, drain, stats, workers)."""

from __future__ import annotations

from typing import Any

import click

from .._socks_rules import DEFAULT_HANDSHAKE_TIMEOUT
from ..i18n import _
from ..relay.config import DEFAULT_CONNECT_TIMEOUT, DEFAULT_DRAIN_TIMEOUT
from ._common import event, global_options, json_option, settings
from ._numbers import MAX_SECONDS, FiniteFloat
from ._server import parse_mode, proxy_options, server_options
from .relay import (
    _emit,
    _event_level,
    _proxy_settings,
    _RelayCommand,
    _tracebacks,
    access_options,
    stats_option,
    workers_option,
)


@click.command("socks", cls=_RelayCommand)
@click.argument("listen_address", metavar="LISTEN")
@click.option(
    "--auth",
    multiple=True,
    metavar="USER:PASS",
    help="Clients must log in (RFC 1929 username/password) as this user (repeatable).",
)
@click.option(
    "--auth-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Users who may log in: USER:PASS a line (# comments); with --auth, both count.",
)
@click.option(
    "--allow-dest",
    multiple=True,
    metavar="RULE",
    help="Only these destinations (repeatable): CIDR, IP, HOST or *.DOMAIN, each with an "
    "optional :PORT; a name passes if it, or the address it resolves to, matches.",
)
@click.option(
    "--deny-dest",
    multiple=True,
    metavar="RULE",
    help="Refuse these destinations (repeatable; wins over --allow-dest), judged on the name "
    "asked for and on every address it resolves to.",
)
@click.option(
    "--handshake-timeout",
    type=FiniteFloat(0, MAX_SECONDS, min_open=True),
    default=DEFAULT_HANDSHAKE_TIMEOUT,
    show_default=True,
    help="Seconds a client has for its whole SOCKS handshake; a slower one is cut.",
)
@server_options(
    max_conns=None,
    max_conns_help="Clients at once; more are reset (default: what the descriptor limit holds).",
    idle_help="Close a connection after S seconds without traffic (default: never).",
    drain_timeout=DEFAULT_DRAIN_TIMEOUT,
    drain_help="On SIGTERM/SIGINT/SIGHUP, let open connections finish for S seconds (0 cuts them at once).",
    mode_help="Permissions of a unix LISTEN socket file, e.g. 660.",
    backlog_help="Listen queue length.",
)
@click.option(
    "--connect-timeout",
    type=FiniteFloat(0, MAX_SECONDS, min_open=True),
    default=None,
    help=f"Give up connecting to a destination after S seconds (default {DEFAULT_CONNECT_TIMEOUT:g}; "
    "SOCKS reply 6).",
)
@access_options("clients")
@stats_option
@workers_option("tcp")
@proxy_options()
@click.option("--no-splice", is_flag=True, help="Copy through a buffer instead of splice() (to compare).")
@json_option
@global_options
def command(
    listen_address: str,
    auth: tuple[str, ...],
    auth_file: str | None,
    allow_dest: tuple[str, ...],
    deny_dest: tuple[str, ...],
    handshake_timeout: float,
    max_conns: int | None,
    idle_timeout: float | None,
    mode: str | None,
    drain_timeout: float,
    backlog: int | None,
    connect_timeout: float | None,
    allow: tuple[str, ...],
    deny: tuple[str, ...],
    stats_interval: float | None,
    workers: int,
    accept_proxy: bool,
    trusted_proxy: tuple[str, ...],
    proxy_timeout: float,
    no_splice: bool,
    json_: bool,
) -> int:
    """A SOCKS5 server (RFC 1928): each client names its destination, which is then relayed as
    `enchufe relay` does (splice, half-close, limits, drain, --stats, --workers).  UDP ASSOCIATE
    relays a client's datagrams (each judged by the rules) for as long as its TCP connection lasts.
    The same listener serves HTTP CONNECT (curl --proxy http://…, ncat --proxy-type http) with
    the same rules, limits and --auth (as Basic credentials); its answers: 200 tunnel open,
    400 not HOST:PORT, 405 a method other than CONNECT, 407 credentials wanted, 403 the rules,
    431 a head over 8 KiB, 502 unreachable or refused, 504 timed out.

    \b
    Without --auth or --auth-file any client may use it: on an address other than loopback
    that is an open proxy, and a warning says so.  --allow-dest/--deny-dest judge the name a
    client asks for and every address it resolves to (names are resolved here, off the
    relay's loop), so a name cannot smuggle a denied address in; 0.0.0.0 and :: are judged as
    the loopback address (127.0.0.1, ::1) the kernel takes them to, and an IPv4-mapped or
    NAT64 (64:ff9b::/96) address as the IPv4 address it reaches.  A refused request gets its
    SOCKS reply code: 2 the rules, 3 network unreachable, 4 host unreachable or unknown,
    5 refused by the destination, 6 timed out, 7 an unsupported command, 8 an unsupported
    address type.

    \b
    SIGTERM, SIGINT and SIGHUP stop accepting and let open connections finish
    (--drain-timeout); a second signal cuts them.  Exit status 0, or 1 if connections had to be cut.

    \b
    Examples:
      enchufe socks tcp://127.0.0.1:1080
      curl --socks5-hostname 127.0.0.1:1080 https://example.com/
      enchufe socks tcp://:1080 --auth-file /etc/enchufe/socks.users --deny-dest 10.0.0.0/8
      enchufe socks tcp://:1080 --auth alice:secret --allow-dest '*.example.com:443' --workers 4
      enchufe connect tcp://example.com:80 --via socks5://alice:secret@127.0.0.1:1080
    """
    from .. import parse
    from .._socks_rules import DestRules, SocksPolicy
    from ..relay import AccessRules, EventSink, RelayConfig  # the engine: once the config is good

    settings.json = settings.json or json_
    listen = parse(listen_address)
    policy = SocksPolicy(
        users=_users(auth, auth_file),
        rules=DestRules.parse(allow=allow_dest, deny=deny_dest),
        handshake_timeout=handshake_timeout,
    )
    config = RelayConfig(
        listen=listen,
        target="-",
        socks=policy,
        max_conns=max_conns,
        connect_timeout=connect_timeout or DEFAULT_CONNECT_TIMEOUT,
        idle_timeout=idle_timeout,
        drain_timeout=drain_timeout,
        rules=AccessRules.parse(allow=allow, deny=deny),
        stats_interval=stats_interval,
        splice=not no_splice,
        backlog=backlog,
        mode=parse_mode(mode),
        **_proxy_settings(listen_address, accept_proxy, trusted_proxy, proxy_timeout),
    )
    level = _event_level()
    if settings.debug:
        _tracebacks()
    if policy.users is None:
        _warn_if_open(listen)
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


def _users(auth: tuple[str, ...], auth_file: str | None) -> dict[bytes, bytes] | None:
    """The users of --auth and --auth-file (``None``: no authentication); UsageError (exit 2)
    for a bad line (never showing a password) and for a file that cannot be read, as for a
    TLS address's files."""
    from .._socks_rules import parse_user, parse_users
    from .._text import printable
    from ..errors import UsageError, reason

    users: dict[bytes, bytes] = {}
    for text in auth:
        user, password = parse_user(text, "--auth")
        users[user] = password
    if auth_file is not None:
        try:
            with open(auth_file, encoding="utf-8") as lines:
                users.update(parse_users(lines, f"--auth-file {printable(auth_file)}"))
        except (OSError, UnicodeDecodeError) as exc:
            why = reason(exc, lower=False) if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UsageError(
                _("cannot read --auth-file {file}: {reason}").format(file=printable(auth_file), reason=why)
            ) from None
    return users or None


def _warn_if_open(listen: Any) -> None:
    """One warning line: without credentials, a SOCKS server anyone can reach is an open proxy."""
    from ..address import InetAddress

    if not isinstance(listen, InetAddress) or _loopback(listen.host):
        return
    if listen.is_wildcard:
        line = _(
            "enchufe: warning: no --auth: anyone who can reach every interface may use this proxy "
            "(an open proxy); give --auth USER:PASS or --auth-file, or listen on 127.0.0.1"
        )
    else:
        line = _(
            "enchufe: warning: no --auth: anyone who can reach {host} may use this proxy (an open proxy); "
            "give --auth USER:PASS or --auth-file, or listen on 127.0.0.1"
        ).format(host=listen.host)
    event(
        "warning",
        line,
        detail="open proxy",
    )


def _loopback(host: str) -> bool:
    """Whether ``host`` (a literal or a name) is loopback only; a name is resolved to tell."""
    import ipaddress
    import socket

    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    addresses = {ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos}
    return bool(addresses) and all(address.is_loopback for address in addresses)

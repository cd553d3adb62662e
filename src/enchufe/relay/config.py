"""What a relay is told (:class:`RelayConfig`) and how it ended (:class:`RelayResult`), and the
checks that refuse a configuration before anything is bound: pure, no I/O.

Every refusal is a :class:`~enchufe.errors.UsageError` (exit status 2) naming what is wrong and
what is accepted; a TARGET the relay cannot connect to is an :class:`~enchufe.errors.AddressError`.
An option that does not apply to LISTEN is refused, never ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .._buffer import DEFAULT_MAX_DATAGRAM
from .._proxypolicy import DEFAULT_PROXY_TIMEOUT, parse_trusted
from .._ranges import MAX_BACKLOG, MAX_DATAGRAM_SIZE, MAX_SECONDS
from .._serving import DEFAULT_DRAIN_TIMEOUT
from ..address import (
    Address,
    ExecAddress,
    InetAddress,
    StdioAddress,
    UnixAddress,
    check_tls_use,
    parse,
)
from ..errors import AddressError, UsageError
from ..i18n import _
from ..sessions import DEFAULT_MAX_SESSIONS
from .limits import AccessRules
from .routes import check_routes
from .stats import Snapshot

if TYPE_CHECKING:
    from .._socks_rules import SocksPolicy
    from ..faults import FaultPlan
    from ..hops import Hop

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_DRAIN_TIMEOUT",
    "RelayConfig",
    "RelayResult",
    "check_config",
    "check_endpoints",
    "config_hops",
]

#: Seconds to wait for the target to accept.  The kernel alone would wait minutes (SYN retries);
#: a client of a relay would rather be told quickly.  Loopback and LAN targets answer in
#: milliseconds, distant ones well within this.
DEFAULT_CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class RelayConfig:
    """What to relay and how.  ``listen`` and ``target`` are address strings or values."""

    listen: Address | str
    target: Address | str
    #: relayed connections open at once; more are reset at accept.  ``None``: the fd budget.
    max_conns: int | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    #: close a connection after this many seconds without a byte either way (off by default)
    idle_timeout: float | None = None
    #: seconds open connections get to finish after SIGTERM/SIGINT/SIGHUP (the library's default)
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    rules: AccessRules = field(default_factory=AccessRules)
    #: seconds between stats lines; ``None``: no stats lines (the summary is at level 1)
    stats_interval: float | None = None
    #: seconds between looks at the TLS files; one replaced or rewritten is read again
    #: (as SIGUSR1 does).  ``None``: only SIGUSR1 reloads them.
    reload_interval: float | None = None
    #: splice through pipes (zero-copy); False copies through a buffer (for comparison)
    splice: bool = True
    #: listen queue of a stream listener; ``None``: DEFAULT_BACKLOG
    backlog: int | None = None
    #: permissions of a unix listener's socket file (only a unix LISTEN has one)
    mode: int | None = None
    #: bind with SO_REUSEPORT (for several worker processes on one port)
    reuse_port: bool = False
    #: raise RLIMIT_NOFILE as far as allowed at open()
    raise_fd_limit: bool = True
    #: carry datagrams over a stream as length-prefixed messages (a stream and a datagram end)
    frame: bool = False
    #: datagram sessions (one per sender) kept at once; a new sender evicts the least active
    max_sessions: int = DEFAULT_MAX_SESSIONS
    #: largest datagram relayed; larger ones are counted as truncated and dropped
    max_datagram: int = DEFAULT_MAX_DATAGRAM
    #: ``NAME=TARGET`` routes by TLS server name (:mod:`.routes`); TARGET is then the default,
    #: ``-`` for none
    routes: tuple[str, ...] = ()
    #: --accept-proxy: each client starts with a PROXY protocol header (v1 or v2), taken only
    #: from ``trusted_proxies`` (CIDR; empty: loopback, and unix peers always) within
    #: ``proxy_timeout`` seconds; the client it names is the peer everywhere
    accept_proxy: bool = False
    trusted_proxies: tuple[str, ...] = ()
    proxy_timeout: float = DEFAULT_PROXY_TIMEOUT
    #: --send-proxy: the target gets a PROXY protocol header of this version (1 or 2) first
    #: (datagrams: version 2, before each one)
    send_proxy: int | None = None
    #: faults on purpose (``--fault``, ``--seed``): see :mod:`enchufe.faults`
    faults: FaultPlan | None = None
    #: ``enchufe socks``: a SOCKS5 server (see :mod:`.socks`); each client's request names its
    #: target, so TARGET is ``-`` (none)
    socks: SocksPolicy | None = None
    #: --via: reach a stream TARGET through these proxies (``socks5://…``, ``http://…`` URLs or
    #: :class:`~enchufe.hops.Hop` values), first hop first; the last one resolves TARGET's name
    via: Sequence[str | Hop] = ()


@dataclass(frozen=True)
class RelayResult:
    """How a relay ended: how many connections the shutdown cut, whether a one-shot (stdio) relay
    lost data, and the final counters."""

    cut: int
    stats: Snapshot
    failed: bool = False

    @property
    def exit_status(self) -> int:
        """0 if nothing in flight was cut (and a one-shot relay ended cleanly), else 1."""
        return 1 if self.cut or self.failed else 0


def check_endpoints(
    listen: Address | str, target: Address | str, *, frame: bool = False
) -> tuple[Address, Address]:
    """Parse and check a LISTEN/TARGET pair: UsageError (exit status 2) if it cannot be relayed.

    LISTEN is a socket address or ``-`` (stdio: one session, then the relay ends); TARGET is a
    socket address, ``-`` (the first client is relayed to stdio) or ``exec:PROGRAM``.  Streams go
    to streams and datagrams to datagrams; a stream and a datagram address need ``--frame``.
    """
    source = parse(listen) if isinstance(listen, str) else listen
    dest = parse(target) if isinstance(target, str) else target
    _check_roles(source, dest)
    _check_kinds(source, dest, frame)
    _check_tls(source, dest)
    if isinstance(dest, InetAddress) and (dest.is_wildcard or dest.port == 0):
        raise AddressError(
            _(
                "TARGET {target}: the relay connects there, so it needs a host and a port, e.g. {example}"
            ).format(target=dest, example=f"{dest.scheme}://127.0.0.1:{dest.port or 9000}")
        )
    return source, dest


def _check_roles(source: Address, dest: Address) -> None:
    """exec: is a TARGET only; stdio and exec: need a socket (stream) address on the other end."""
    if isinstance(source, ExecAddress):
        raise UsageError(
            _(
                "LISTEN {listen}: exec: runs a program per client, so it can only be the TARGET, "
                "e.g. enchufe relay tcp://:9000 '{listen}'"
            ).format(listen=source)
        )
    if isinstance(source, StdioAddress) and isinstance(dest, StdioAddress | ExecAddress):
        raise UsageError(
            _("cannot relay {listen} to {target}: one of LISTEN and TARGET must be a socket address").format(
                listen=source, target=dest
            )
        )
    for end, other in ((source, dest), (dest, source)):
        if isinstance(end, StdioAddress | ExecAddress) and not other.is_stream:
            raise UsageError(
                _(
                    "cannot relay {end} to {other}: stdio and exec: carry a byte stream, {other} datagrams; "
                    "to send stdin as datagrams use enchufe connect {other}"
                ).format(end=end, other=other)
            )


def _check_tls(source: Address, dest: Address) -> None:
    """TLS is terminated on a stream LISTEN and originated to a stream TARGET, whatever the other
    end (a socket, stdio, exec:); what is not built yet (--frame over TLS) is refused, never
    relayed as plaintext."""
    for role, end, other in (("LISTEN", source, dest), ("TARGET", dest, source)):
        if not end.is_tls:
            continue
        if not other.is_stream:
            raise UsageError(
                _(
                    "{role} {end}: the relay does not carry datagrams over TLS yet ({other} with "
                    "--frame); use a plain tcp:// or unix: address for the framed stream"
                ).format(role=role, end=end, other=other)
            )
        check_tls_use(end, "server" if role == "LISTEN" else "client")


def _check_kinds(source: Address, dest: Address, frame: bool) -> None:
    """Streams to streams and datagrams to datagrams, or one of each with ``frame``."""
    if source.is_stream != dest.is_stream:
        stream, datagram = (source, dest) if source.is_stream else (dest, source)
        if not frame:
            raise UsageError(
                _(
                    "cannot relay between {stream} (a stream) and {datagram} (datagrams) without framing: "
                    "a stream has no message boundaries; add --frame to carry each datagram as a "
                    "length-prefixed message, or use two stream or two datagram addresses"
                ).format(stream=stream, datagram=datagram)
            )
    elif frame:
        if source.is_stream:
            line = _(
                "--frame carries datagrams over a stream, but {listen} and {target} are both streams; "
                "give one stream and one datagram address, or leave out --frame"
            )
        else:
            line = _(
                "--frame carries datagrams over a stream, but {listen} and {target} are both datagrams; "
                "give one stream and one datagram address, or leave out --frame"
            )
        raise UsageError(line.format(listen=source, target=dest))


def check_config(config: RelayConfig) -> tuple[Address, Address]:
    """Check everything in ``config`` (UsageError for the first thing wrong); LISTEN and TARGET."""
    if config.routes:  # first: TARGET - means "no default" then, not stdio
        check_routes(_parsed(config.listen), _parsed(config.target), config.routes)
    if config.socks is not None:  # first: TARGET - means "what each client asks for", not stdio
        _check_socks(_parsed(config.listen), _parsed(config.target), config, config.socks)
    listen, target = check_endpoints(config.listen, config.target, frame=config.frame)
    _check_rules(listen, config.rules, config.accept_proxy)
    _check_numbers(config)
    _check_proxy(listen, target, config)
    _check_applies(listen, config)
    if config.via:
        _check_via(target, config)
    if config.faults is not None:
        config.faults.check_relay(listen, target, frame=config.frame)
    return listen, target


def _check_socks(listen: Address, target: Address, config: RelayConfig, socks: SocksPolicy) -> None:
    """A SOCKS server listens on a plain stream socket and has no TARGET of its own."""
    if not isinstance(target, StdioAddress):
        raise UsageError(
            _("a SOCKS server's clients name their targets: TARGET is -, not {target}").format(target=target)
        )
    if not (isinstance(listen, InetAddress | UnixAddress) and listen.is_stream) or listen.is_tls:
        raise UsageError(
            _(
                "a SOCKS server listens on a tcp:// or unix: stream address, not {listen}; "
                "e.g. enchufe socks tcp://127.0.0.1:1080"
            ).format(listen=listen)
        )
    if config.frame or config.routes or config.faults is not None:
        raise UsageError(_("--frame, --route and --fault do not apply to a SOCKS server"))
    if not 0 < socks.handshake_timeout <= MAX_SECONDS:
        raise UsageError(
            _("--handshake-timeout must be more than 0 and at most {limit} seconds").format(
                limit=f"{MAX_SECONDS:.0f}"
            )
        )


def config_hops(config: RelayConfig) -> tuple[Hop, ...]:
    """The proxies of ``config.via``, parsed (AddressError for a bad URL)."""
    if not config.via:
        return ()
    from ..hops import parse_hops

    return parse_hops(config.via)


def _check_via(target: Address, config: RelayConfig) -> None:
    """--via reaches a tcp:// or tls:// TARGET through proxies, one client's connection per
    tunnel, and a udp:// TARGET of a datagram LISTEN through one socks5:// proxy (a UDP
    association per sender): an exec: or stdio TARGET, --frame, --route, SOCKS servers, and
    faults on datagrams through a proxy are refused."""
    hops = config_hops(config)
    shown = ", ".join(str(hop) for hop in hops)
    if config.routes:
        raise UsageError(_("--via with --route is not built yet: give one tcp:// or tls:// TARGET"))
    if config.socks is not None:
        raise UsageError(_("--via with a SOCKS server is not built yet: give one tcp:// or tls:// TARGET"))
    if config.frame:
        raise UsageError(
            _(
                "--via with --frame is not built yet ({target}): a stream TARGET takes each client's "
                "stream through {hops}, a udp:// TARGET of a datagram LISTEN each sender's datagrams"
            ).format(target=target, hops=shown)
        )
    if not target.is_stream:
        _check_datagrams_via(config)
    if isinstance(target, ExecAddress | StdioAddress):
        raise UsageError(
            _("--via reaches a tcp:// or tls:// TARGET through the proxies, not {target}").format(
                target=target
            )
        )
    from ..hops import check_target

    check_target(target, hops)


def _check_datagrams_via(config: RelayConfig) -> None:
    """A datagram TARGET through a proxy (from a datagram LISTEN: a stream one needs --frame):
    no faults (one socks5:// hop is :func:`~enchufe.hops.check_target`'s to check)."""
    if config.faults is not None:
        raise UsageError(_("--fault with --via on datagrams is not built yet: leave out one of them"))


def _parsed(address: Address | str) -> Address:
    return parse(address) if isinstance(address, str) else address


def _check_rules(listen: Address, rules: AccessRules, accept_proxy: bool = False) -> None:
    """Access rules judge the peers of a stream listener: IP rules an IP one (or the client a
    PROXY header names, on any stream listener), credentials a unix one."""
    if (rules.filters_ip or rules.filters_credentials) and not (
        isinstance(listen, InetAddress | UnixAddress) and listen.is_stream
    ):
        raise UsageError(
            _(
                "--allow/--deny/--allow-uid/--allow-gid check the peers of a stream listener, not of {listen}"
            ).format(listen=listen)
        )
    if rules.filters_ip and isinstance(listen, UnixAddress) and not accept_proxy:
        raise UsageError(
            _("--allow/--deny filter IP peers, but LISTEN is a unix socket; use --allow-uid/--allow-gid")
        )
    if rules.filters_credentials and isinstance(listen, InetAddress):
        raise UsageError(
            _("--allow-uid/--allow-gid need a unix LISTEN address (SO_PEERCRED); use --allow/--deny for IP")
        )


def _check_proxy(listen: Address, target: Address, config: RelayConfig) -> None:
    """--accept-proxy reads a header at the start of a stream client's connection (before each
    datagram of a datagram relay), and --send-proxy writes one at the start of a stream
    target's (before each datagram, version 2): elsewhere, refused."""
    if not config.accept_proxy:
        if config.trusted_proxies or config.proxy_timeout != DEFAULT_PROXY_TIMEOUT:
            raise UsageError(
                _(
                    "--trusted-proxy and --proxy-timeout apply with --accept-proxy (the peers that send "
                    "a PROXY header)"
                )
            )
    elif not isinstance(listen, InetAddress | UnixAddress):
        raise UsageError(
            _(
                "--accept-proxy reads a PROXY header at the start of each client's stream connection; "
                "LISTEN {listen} has none: give a tcp://, tls:// or unix: stream LISTEN"
            ).format(listen=listen)
        )
    elif not listen.is_stream:
        _check_datagrams_accepting(target, config)
    elif not target.is_stream:
        raise UsageError(
            _(
                "--accept-proxy with --frame (a stream LISTEN to a datagram TARGET) is not built yet; "
                "relay stream to stream"
            )
        )
    if config.accept_proxy:
        for text in config.trusted_proxies:
            parse_trusted(text)
        if not 0 < config.proxy_timeout <= MAX_SECONDS:
            raise UsageError(
                _("--proxy-timeout must be more than 0 and at most {limit} seconds, not {value}").format(
                    limit=f"{MAX_SECONDS:.0f}", value=config.proxy_timeout
                )
            )
    if config.send_proxy is not None:
        _check_send_proxy(listen, target, config)


def _check_datagrams_accepting(target: Address, config: RelayConfig) -> None:
    """--accept-proxy on a datagram LISTEN: a PROXY v2 header before each datagram, taken off on
    the way to a datagram TARGET, directly or through a SOCKS5 proxy (--frame and --fault: not
    built yet)."""
    if target.is_stream:
        raise UsageError(
            _(
                "--accept-proxy on datagrams with --frame (a datagram LISTEN to a stream TARGET) "
                "is not built yet"
            )
        )
    if config.faults is not None:
        raise UsageError(
            _("--accept-proxy on datagrams with --fault is not built yet: leave out one of them")
        )


def _check_send_proxy(listen: Address, target: Address, config: RelayConfig) -> None:
    """--send-proxy: v1 or v2 between streams, v2 between datagrams (a header per datagram)."""
    if config.send_proxy not in (1, 2):
        raise UsageError(_("--send-proxy is v1 or v2, not {value}").format(value=repr(config.send_proxy)))
    if listen.is_stream != target.is_stream:
        raise UsageError(
            _("--send-proxy with --frame is not built yet: relay stream to stream or datagrams to datagrams")
        )
    if not listen.is_stream and config.send_proxy != 2:
        raise UsageError(
            _(
                "a datagram relay sends PROXY protocol v2 (a header per datagram); v1 is for TCP: "
                "write --send-proxy v2"
            )
        )
    if not listen.is_stream and config.faults is not None:
        raise UsageError(_("--send-proxy with --fault on a datagram relay is not built yet"))


def _check_numbers(config: RelayConfig) -> None:
    # nan passes every comparison and inf overflows the event loop's timers: a finite number in
    # range, or a UsageError.
    for name, value in (
        ("connect_timeout", config.connect_timeout),
        ("idle_timeout", config.idle_timeout),
        ("stats_interval", config.stats_interval),
    ):
        if value is not None and not 0 < value <= MAX_SECONDS:
            raise UsageError(
                _("{name} must be more than 0 and at most {limit} seconds, not {value}").format(
                    name=name, limit=f"{MAX_SECONDS:.0f}", value=value
                )
            )
    if not 0 <= config.drain_timeout <= MAX_SECONDS:
        raise UsageError(
            _("drain_timeout must be from 0 to {limit} seconds, not {value}").format(
                limit=f"{MAX_SECONDS:.0f}", value=config.drain_timeout
            )
        )
    if config.max_conns is not None and config.max_conns < 1:
        raise UsageError(_("max_conns must be at least 1, not {value}").format(value=config.max_conns))
    if config.max_sessions < 1:
        raise UsageError(_("max_sessions must be at least 1, not {value}").format(value=config.max_sessions))
    if not 1 <= config.max_datagram <= MAX_DATAGRAM_SIZE:
        raise UsageError(
            _("max_datagram must be from 1 to 16 MiB, not {value}").format(value=config.max_datagram)
        )


def _check_applies(listen: Address, config: RelayConfig) -> None:
    """An option that does not apply to LISTEN is refused (UsageError), never ignored."""
    if config.mode is not None and not (isinstance(listen, UnixAddress) and not listen.abstract):
        if isinstance(listen, UnixAddress):
            line = _(
                "--mode sets the permissions of a unix LISTEN socket file, but {listen} is an abstract "
                "unix name, which has no file; leave out --mode or listen on unix:///PATH"
            )
        else:
            line = _(
                "--mode sets the permissions of a unix LISTEN socket file, but {listen} is no file; "
                "leave out --mode or listen on unix:///PATH"
            )
        raise UsageError(line.format(listen=listen))
    if config.backlog is not None:
        if not (isinstance(listen, InetAddress | UnixAddress) and listen.is_stream):
            raise UsageError(
                _(
                    "--backlog sets the listen queue of a stream LISTEN, but {listen} has none; "
                    "leave out --backlog"
                ).format(listen=listen)
            )
        if not 1 <= config.backlog <= MAX_BACKLOG:
            raise UsageError(
                _("--backlog must be from 1 to {limit}, not {value}").format(
                    limit=MAX_BACKLOG, value=config.backlog
                )
            )

"""The relay's routes by TLS server name (``--route NAME=TARGET``): parsed, checked and matched,
without I/O.

::

    table = check_routes(listen, target, ("a.test=tcp://127.0.0.1:9001",
                                          "*.example.com=unix:///run/web.sock"))
    table.match("A.Test")          # Route("a.test", …): exact names first, case-insensitive
    table.match("x.example.com")   # Route("*.example.com", …): a wildcard is one whole label
    table.match("a.b.example.com") # the default (the positional TARGET), or None with TARGET -
    table.match("a.test", ("acme-tls/1",))  # a route of a.test with alpn=acme-tls/1 first

NAME is a server name (labels of letters, digits, ``-`` and ``_`` joined by dots), or ``*.``
and one: ``*.example.com`` matches ``x.example.com``, not ``example.com`` nor
``a.b.example.com`` (as certificates' wildcards do, RFC 6125 §6.4.3).  A client without SNI
goes to the default.  On a ``tls://`` LISTEN, ``?cert=F&key=K`` after TARGET is the
certificate served for NAME (else the listener's).  ``?alpn=P1,P2`` makes a route take only
clients that offer one of those ALPN protocols (``acme-tls/1`` to an ACME client, ``h2`` to
another backend); a NAME may have several such routes (the first listed that matches wins) and
one without ``alpn=``, taken otherwise; when none of a name's routes matches, the wildcard and
then the default are tried.

Every refusal is a :class:`~enchufe.errors.UsageError` (exit status 2) naming the route and what
is accepted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from .._text import quoted
from ..address import Address, InetAddress, StdioAddress, UnixAddress, parse
from ..errors import UsageError
from ..i18n import _

__all__ = ["DEFAULT", "NO_HELLO", "UNMATCHED", "Route", "RouteTable", "check_routes", "parse_route"]

#: How the positional TARGET is named where routes are counted (no server name has parentheses).
DEFAULT = "(default)"
#: Counted for clients whose server name no route matches, with no default (TARGET ``-``).
UNMATCHED = "(unmatched)"
#: Counted for clients that sent no ClientHello the relay accepts (garbage, nothing, too much).
NO_HELLO = "(no hello)"

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")


@dataclass(frozen=True)
class Route:
    """One route: server ``name`` (lowercase; ``*.`` first for a wildcard) to ``target``.
    ``cert``/``key``: the certificate served for ``name`` when the relay terminates TLS."""

    name: str
    target: InetAddress | UnixAddress
    cert: str | None = None
    key: str | None = None
    #: the route takes only clients offering one of these ALPN protocols (empty: any client)
    alpn: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How the route is named in counts and events."""
        return f"{self.name} alpn={','.join(self.alpn)}" if self.alpn else self.name

    def takes(self, offered: tuple[str, ...]) -> bool:
        return not self.alpn or any(protocol in offered for protocol in self.alpn)


@dataclass(frozen=True)
class RouteTable:
    """Routes by exact name and by wildcard suffix (those with ``alpn=`` first, then the one
    without), and the ``default`` (``None``: refused)."""

    exact: dict[str, tuple[Route, ...]]
    wildcard: dict[str, tuple[Route, ...]]  # by the suffix after "*."
    default: Route | None

    @property
    def routes(self) -> tuple[Route, ...]:
        """Every route, the default last."""
        found = tuple(
            route for table in (self.exact, self.wildcard) for group in table.values() for route in group
        )
        return (*found, self.default) if self.default is not None else found

    def match(self, server_name: str | None, alpn: tuple[str, ...] = ()) -> Route | None:
        """The route for ``server_name`` (any case, a trailing dot ignored) and the ALPN protocols
        the client offers: an exact name's, else a wildcard's over its first label, else the
        default; ``None`` when there is none."""
        if server_name:
            name = server_name.lower().rstrip(".")
            route = _first_taking(self.exact.get(name, ()), alpn)
            if route is not None:
                return route
            _first, dot, rest = name.partition(".")
            if dot:
                route = _first_taking(self.wildcard.get(rest, ()), alpn)
                if route is not None:
                    return route
        return self.default


def _first_taking(routes: tuple[Route, ...], offered: tuple[str, ...]) -> Route | None:
    for route in routes:
        if route.takes(offered):
            return route
    return None


def parse_route(text: str, *, terminating: bool) -> Route:
    """One ``--route NAME=TARGET[?cert=F&key=K]`` (UsageError if it cannot be one)."""
    shown = quoted(text)
    name, sep, target_text = text.partition("=")
    if not sep or not name or not target_text:
        raise UsageError(
            _(
                "--route {route}: expected NAME=TARGET, e.g. --route 'api.example.com=tcp://127.0.0.1:9001'"
            ).format(route=shown)
        )
    name = name.strip().lower().rstrip(".")
    if len(name) > 253 or not _NAME.fullmatch(name):
        raise UsageError(
            _(
                "--route {route}: {name} is not a server name: labels of letters, digits, "
                "'-' and '_' joined by dots, or '*.' and such a name (one label), e.g. *.example.com"
            ).format(route=shown, name=quoted(name))
        )
    target_text, options = _take_options(target_text)
    cert, key = options.get("cert"), options.get("key")
    if (cert or key) and not terminating:
        raise UsageError(
            _(
                "--route {route}: cert= and key= are the certificate served for {name} when the relay "
                "terminates TLS; LISTEN is not tls://, so the relay passes the TLS bytes through untouched "
                "and holds no certificate: leave them out, or listen on tls://"
            ).format(route=shown, name=name)
        )
    if key and not cert:
        raise UsageError(
            _("--route {route}: key= needs cert= (the certificate it is the key of)").format(route=shown)
        )
    alpn = _alpn(options.get("alpn"), shown)
    return Route(name, _route_target(target_text, f"--route {shown}"), cert, key, alpn)


def _take_options(target_text: str) -> tuple[str, dict[str, str]]:
    """The route's own options (``cert=``, ``key=``, ``alpn=``) taken out of TARGET's query;
    the rest stays with TARGET (which refuses what it does not know)."""
    address, sep, query = target_text.partition("?")
    if not sep:
        return target_text, {}
    options = {}
    kept = []
    for pair in query.split("&"):
        field, _eq, value = pair.partition("=")
        if field in ("cert", "key", "alpn") and value:
            options[field] = unquote(value)
        elif pair:
            kept.append(pair)
    return address + ("?" + "&".join(kept) if kept else ""), options


def _alpn(value: str | None, shown: str) -> tuple[str, ...]:
    """``alpn=h2,http/1.1``: protocol names of 1 to 255 printable ASCII characters."""
    if value is None:
        return ()
    names = tuple(value.split(","))
    for name in names:
        if not 1 <= len(name) <= 255 or not name.isascii() or not name.isprintable():
            raise UsageError(
                _(
                    "--route {route}: alpn= takes ALPN protocol names separated by commas, "
                    "e.g. alpn=h2,http/1.1 or alpn=acme-tls/1; {name} is not one"
                ).format(route=shown, name=quoted(name))
            )
    return names


def _route_target(given: str | Address, where: str) -> InetAddress | UnixAddress:
    """A route's (or the default's) TARGET: a plain stream socket address."""
    target = parse(given) if isinstance(given, str) else given
    text = str(given)
    if not isinstance(target, InetAddress | UnixAddress) or not target.is_stream:
        raise UsageError(
            _(
                "{where}: TARGET {target} must be a stream socket address (tcp://HOST:PORT or "
                "unix:PATH): the relay connects there for each routed client"
            ).format(where=where, target=quoted(text))
        )
    if target.is_tls:
        raise UsageError(
            _(
                "{where}: TARGET {target} is tls://, which routes do not originate yet; "
                "give a tcp:// or unix: address (a passthrough route sends the client's own TLS bytes)"
            ).format(where=where, target=quoted(text))
        )
    if isinstance(target, InetAddress) and (target.is_wildcard or target.port == 0):
        raise UsageError(
            _("{where}: TARGET {target} needs a host and a port, e.g. tcp://127.0.0.1:9001").format(
                where=where, target=target
            )
        )
    return target


def check_routes(listen: Address, target: Address, routes: Iterable[str]) -> RouteTable:
    """The routing table of ``--route`` options with LISTEN and the positional TARGET (the
    default; ``-`` for none), or a UsageError for the first thing wrong."""
    if not (isinstance(listen, InetAddress | UnixAddress) and listen.is_stream):
        raise UsageError(
            _(
                "--route chooses the target by the TLS server name of each client, so LISTEN must be a "
                "tcp://, tls:// or unix: stream address, not {listen}"
            ).format(listen=listen)
        )
    terminating = listen.is_tls
    exact: dict[str, tuple[Route, ...]] = {}
    wildcard: dict[str, tuple[Route, ...]] = {}
    for text in routes:
        route = parse_route(text, terminating=terminating)
        table, key = (wildcard, route.name[2:]) if route.name.startswith("*.") else (exact, route.name)
        group = table.get(key, ())
        if any(set(other.alpn) == set(route.alpn) for other in group):
            if route.alpn:
                line = _("--route {route} with alpn={alpn} is given twice; give each NAME (and alpn=) once")
            else:
                line = _("--route {route} is given twice; give each NAME (and alpn=) once")
            raise UsageError(line.format(route=route.name, alpn=",".join(route.alpn)))
        # Those with alpn= are tried first, in the order given; the one without takes the rest.
        table[key] = tuple(sorted((*group, route), key=lambda r: not r.alpn))
    default = None
    if not isinstance(target, StdioAddress):
        where = _("with --route, the positional TARGET (the default)")
        default = Route(DEFAULT, _route_target(target, where))
    return RouteTable(exact, wildcard, default)

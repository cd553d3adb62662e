"""The relay's routes by TLS server name (``--route NAME=TARGET``): parsed, checked and matched,
without I/O.

::

    table = check_routes(listen, target, ("a.test=tcp://127.0.0.1:9001",
                                          "*.example.com=unix:///run/web.sock"))
    table.match("A.Test")          # Route("a.test", …): exact names first, case-insensitive
    table.match("x.example.com")   # Route("*.example.com", …): a wildcard is one whole label
    table.match("a.b.example.com") # the default (the positional TARGET), or None with TARGET -

NAME is a server name (labels of letters, digits, ``-`` and ``_`` joined by dots), or ``*.``
and one: ``*.example.com`` matches ``x.example.com``, not ``example.com`` nor
``a.b.example.com`` (as certificates' wildcards do, RFC 6125 §6.4.3).  A client without SNI
goes to the default.  On a ``tls://`` LISTEN, ``?cert=F&key=K`` after TARGET is the
certificate served for NAME (else the listener's).

Every refusal is a :class:`~enchufe.errors.UsageError` (exit status 2) naming the route and what
is accepted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from .._text import printable
from ..address import Address, InetAddress, StdioAddress, UnixAddress, parse
from ..errors import UsageError

__all__ = ["DEFAULT", "NO_HELLO", "UNMATCHED", "Route", "RouteTable", "check_routes", "parse_route"]

#: How the positional TARGET is named where routes are counted (no server name has parentheses).
DEFAULT = "(default)"
#: Counted for clients whose server name no route matches, with no default (TARGET ``-``).
UNMATCHED = "(unmatched)"
#: Counted for clients that sent no ClientHello the relay accepts (garbage, nothing, too much).
NO_HELLO = "(no hello)"

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
_EXAMPLE = "e.g. --route 'api.example.com=tcp://127.0.0.1:9001'"


@dataclass(frozen=True)
class Route:
    """One route: server ``name`` (lowercase; ``*.`` first for a wildcard) to ``target``.
    ``cert``/``key``: the certificate served for ``name`` when the relay terminates TLS."""

    name: str
    target: InetAddress | UnixAddress
    cert: str | None = None
    key: str | None = None

    @property
    def label(self) -> str:
        """How the route is named in counts and events."""
        return self.name


@dataclass(frozen=True)
class RouteTable:
    """Routes by exact name and by wildcard suffix, and the ``default`` (``None``: refused)."""

    exact: dict[str, Route]
    wildcard: dict[str, Route]  # by the suffix after "*."
    default: Route | None

    @property
    def routes(self) -> tuple[Route, ...]:
        """Every route, the default last."""
        found = (*self.exact.values(), *self.wildcard.values())
        return (*found, self.default) if self.default is not None else found

    def match(self, server_name: str | None) -> Route | None:
        """The route for ``server_name`` (any case, a trailing dot ignored): an exact name, else a
        wildcard over its first label, else the default; ``None`` when there is none."""
        if server_name:
            name = server_name.lower().rstrip(".")
            route = self.exact.get(name)
            if route is not None:
                return route
            _first, dot, rest = name.partition(".")
            if dot:
                route = self.wildcard.get(rest)
                if route is not None:
                    return route
        return self.default


def parse_route(text: str, *, terminating: bool) -> Route:
    """One ``--route NAME=TARGET[?cert=F&key=K]`` (UsageError if it cannot be one)."""
    shown = printable(text)
    name, sep, target_text = text.partition("=")
    if not sep or not name or not target_text:
        raise UsageError(f"--route {shown!r}: expected NAME=TARGET, {_EXAMPLE}")
    name = name.strip().lower().rstrip(".")
    if len(name) > 253 or not _NAME.fullmatch(name):
        raise UsageError(
            f"--route {shown!r}: {printable(name)!r} is not a server name: labels of letters, digits, "
            "'-' and '_' joined by dots, or '*.' and such a name (one label), e.g. *.example.com"
        )
    target_text, cert, key = _take_cert(target_text)
    if (cert or key) and not terminating:
        raise UsageError(
            f"--route {shown!r}: cert= and key= are the certificate served for {name} when the relay "
            "terminates TLS; LISTEN is not tls://, so the relay passes the TLS bytes through untouched "
            "and holds no certificate: leave them out, or listen on tls://"
        )
    if key and not cert:
        raise UsageError(f"--route {shown!r}: key= needs cert= (the certificate it is the key of)")
    return Route(name, _route_target(target_text, f"--route {shown!r}"), cert, key)


def _take_cert(target_text: str) -> tuple[str, str | None, str | None]:
    """``cert=`` and ``key=`` taken out of TARGET's query (the rest stays with TARGET)."""
    address, sep, query = target_text.partition("?")
    if not sep:
        return target_text, None, None
    cert = key = None
    kept = []
    for pair in query.split("&"):
        field, _eq, value = pair.partition("=")
        if field == "cert":
            cert = unquote(value)
        elif field == "key":
            key = unquote(value)
        elif pair:
            kept.append(pair)
    return address + ("?" + "&".join(kept) if kept else ""), cert or None, key or None


def _route_target(given: str | Address, where: str) -> InetAddress | UnixAddress:
    """A route's (or the default's) TARGET: a plain stream socket address."""
    target = parse(given) if isinstance(given, str) else given
    text = str(given)
    if not isinstance(target, InetAddress | UnixAddress) or not target.is_stream:
        raise UsageError(
            f"{where}: TARGET {printable(text)!r} must be a stream socket address (tcp://HOST:PORT or "
            "unix:PATH): the relay connects there for each routed client"
        )
    if target.is_tls:
        raise UsageError(
            f"{where}: TARGET {printable(text)!r} is tls://, which routes do not originate yet; "
            "give a tcp:// or unix: address (a passthrough route sends the client's own TLS bytes)"
        )
    if isinstance(target, InetAddress) and (target.is_wildcard or target.port == 0):
        raise UsageError(f"{where}: TARGET {target} needs a host and a port, e.g. tcp://127.0.0.1:9001")
    return target


def check_routes(listen: Address, target: Address, routes: Iterable[str]) -> RouteTable:
    """The routing table of ``--route`` options with LISTEN and the positional TARGET (the
    default; ``-`` for none), or a UsageError for the first thing wrong."""
    if not (isinstance(listen, InetAddress | UnixAddress) and listen.is_stream):
        raise UsageError(
            f"--route chooses the target by the TLS server name of each client, so LISTEN must be a "
            f"tcp://, tls:// or unix: stream address, not {listen}"
        )
    terminating = listen.is_tls
    exact: dict[str, Route] = {}
    wildcard: dict[str, Route] = {}
    for text in routes:
        route = parse_route(text, terminating=terminating)
        table, key = (wildcard, route.name[2:]) if route.name.startswith("*.") else (exact, route.name)
        if key in table:
            raise UsageError(f"--route {route.name} is given twice; give each NAME once")
        table[key] = route
    default = None
    if not isinstance(target, StdioAddress):
        where = "with --route, the positional TARGET (the default)"
        default = Route(DEFAULT, _route_target(target, where))
    return RouteTable(exact, wildcard, default)

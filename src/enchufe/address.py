"""Addresses: one syntax for every kind of socket, parsed without any I/O.

``parse(text)`` turns a string into a frozen value; ``str(value)`` gives back a canonical form
that parses to an equal value.  No name is resolved and no socket is made here: a host name
stays a name until a socket is opened for it.

=====================================  ==============================================
form                                   value
=====================================  ==============================================
``tcp://HOST:PORT``                    :class:`InetAddress` (stream, family from HOST)
``tcp4://HOST:PORT``                   :class:`InetAddress` (stream, IPv4 only)
``tcp6://[HOST]:PORT``                 :class:`InetAddress` (stream, IPv6 only)
``udp://``, ``udp4://``, ``udp6://``   :class:`InetAddress` (datagram)
``unix:///abs/path``, ``unix:rel``     :class:`UnixAddress` (stream, file)
``unix:@name``                         :class:`UnixAddress` (stream, abstract name)
``unixgram:…``                         :class:`UnixAddress` (datagram), same forms
``tls://HOST:PORT?QUERY``              :class:`InetAddress` with ``tls`` (TLS over TCP)
``tls4://…``, ``tls6://[…]:PORT``      the same, IPv4 or IPv6 only
``tls+unix:…?QUERY``                   :class:`UnixAddress` with ``tls``, name percent-decoded
``-``, ``stdio:``                      :class:`StdioAddress`
``exec:PROGRAM ARGS…``                 :class:`ExecAddress` (argv split like a shell)
=====================================  ==============================================

TLS is a layer above the socket: a TLS address has the socket kind of its plain form
(``tls://`` is TCP, ``tls+unix:`` is unix stream) and its settings in ``tls``, parsed by
:func:`enchufe.tlsparams.parse_query`.
"""

from __future__ import annotations

import os
import shlex
import socket
from dataclasses import dataclass
from enum import Enum
from typing import Any

from . import _tls_text
from ._inet_text import SERVICES as SERVICES  # the service names a port may be given as
from ._inet_text import check_host_name, is_ipv6, literal_family, parse_port
from ._text import printable
from ._text import quoted as _q
from ._unix_text import MAX_UNIX_NAME as MAX_UNIX_NAME  # the longest name a unix address holds
from ._unix_text import check_length, split_unix
from .errors import AddressError
from .i18n import _
from .tlsparams import Side, TLSParams

__all__ = [
    "Address",
    "ExecAddress",
    "InetAddress",
    "Kind",
    "StdioAddress",
    "UnixAddress",
    "check_tls_use",
    "inet_address",
    "parse",
    "tls_server_name",
]

_INET_SCHEMES = {
    # scheme: (transport, forced family, TLS)
    "tcp": ("tcp", None, False),
    "tcp4": ("tcp", 4, False),
    "tcp6": ("tcp", 6, False),
    "udp": ("udp", None, False),
    "udp4": ("udp", 4, False),
    "udp6": ("udp", 6, False),
} | {scheme: ("tcp", family, True) for scheme, family in _tls_text.INET_SCHEMES.items()}
# scheme: (datagram, TLS)
_UNIX_SCHEMES = {"unix": (False, False), "unixgram": (True, False), _tls_text.UNIX_SCHEME: (False, True)}
_KNOWN = f"tcp, tcp4, tcp6, udp, udp4, udp6, unix, unixgram, {_tls_text.KNOWN}, stdio, exec"


class Kind(Enum):
    """The six kinds of socket enchufe speaks: domain by type."""

    TCP4 = ("tcp4", socket.AF_INET, socket.SOCK_STREAM)
    TCP6 = ("tcp6", socket.AF_INET6, socket.SOCK_STREAM)
    UDP4 = ("udp4", socket.AF_INET, socket.SOCK_DGRAM)
    UDP6 = ("udp6", socket.AF_INET6, socket.SOCK_DGRAM)
    UNIX = ("unix", socket.AF_UNIX, socket.SOCK_STREAM)
    UNIXGRAM = ("unixgram", socket.AF_UNIX, socket.SOCK_DGRAM)

    @property
    def label(self) -> str:
        return self.value[0]

    @property
    def family(self) -> socket.AddressFamily:
        family: socket.AddressFamily = self.value[1]
        return family

    @property
    def type(self) -> socket.SocketKind:
        kind: socket.SocketKind = self.value[2]
        return kind

    @property
    def is_stream(self) -> bool:
        return self.type == socket.SOCK_STREAM


@dataclass(frozen=True)
class InetAddress:
    """An IPv4 or IPv6 address: ``tcp://host:port``, ``udp6://[::1]:53`` …

    ``host`` is an IP literal (IPv6 without brackets, possibly with ``%scope``), a host name, or
    ``""`` for "every interface" (listening only).  ``family`` is 4 or 6 when the scheme forces
    it, or when the host is a literal of that family; ``None`` when a name decides at open time.
    ``tls`` holds the TLS settings of a ``tls://`` address (TCP only), ``None`` for plain ones.
    """

    transport: str  # "tcp" or "udp"
    host: str
    port: int
    forced_family: int | None = None
    tls: TLSParams | None = None

    @property
    def scheme(self) -> str:
        base = self.transport if self.tls is None else "tls"
        return base + (str(self.forced_family) if self.forced_family else "")

    @property
    def is_tls(self) -> bool:
        return self.tls is not None

    @property
    def is_stream(self) -> bool:
        return self.transport == "tcp"

    @property
    def family(self) -> int | None:
        """4, 6, or ``None`` when only resolving the host name will tell."""
        if self.forced_family:
            return self.forced_family
        return literal_family(self.host)

    @property
    def kind(self) -> Kind | None:
        """The socket kind, or ``None`` while the family depends on name resolution."""
        family = self.family
        if family is None:
            return None
        return Kind[f"{self.transport.upper()}{family}"]

    @property
    def is_wildcard(self) -> bool:
        return self.host == ""

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{_query(self.tls)}"


@dataclass(frozen=True)
class UnixAddress:
    """An AF_UNIX address: a file system path, or a name in Linux's abstract namespace.

    ``name`` is the path, or for abstract sockets the name without its leading NUL (shown as
    ``@name``).  ``datagram`` selects SOCK_DGRAM (``unixgram:``) over SOCK_STREAM (``unix:``).
    ``tls`` holds the TLS settings of a ``tls+unix:`` address (stream only), ``None`` for plain ones.
    """

    name: str
    abstract: bool = False
    datagram: bool = False
    tls: TLSParams | None = None

    @property
    def scheme(self) -> str:
        if self.tls is not None:
            return _tls_text.UNIX_SCHEME
        return "unixgram" if self.datagram else "unix"

    @property
    def is_tls(self) -> bool:
        return self.tls is not None

    @property
    def is_stream(self) -> bool:
        return not self.datagram

    @property
    def family(self) -> int | None:
        return None

    @property
    def kind(self) -> Kind:
        return Kind.UNIXGRAM if self.datagram else Kind.UNIX

    @property
    def sockaddr(self) -> str | bytes:
        """The address in the form Python's socket module takes."""
        if self.abstract:
            return b"\0" + self.name.encode("utf-8", "surrogateescape")
        return self.name

    @property
    def path(self) -> str | None:
        """The file system path, or ``None`` for an abstract name."""
        return None if self.abstract else self.name

    def __str__(self) -> str:
        name = self.name if self.tls is None else _tls_text.encode_name(self.name, abstract=self.abstract)
        if self.abstract:
            return f"{self.scheme}:@{name}{_query(self.tls)}"
        if self.name.startswith("/"):
            return f"{self.scheme}://{name}{_query(self.tls)}"
        return f"{self.scheme}:{name}{_query(self.tls)}"


@dataclass(frozen=True)
class StdioAddress:
    """Standard input and output of this process (``-`` or ``stdio:``)."""

    is_tls = False  # a class attribute, not a field

    @property
    def is_stream(self) -> bool:
        return True

    def __str__(self) -> str:
        return "-"


@dataclass(frozen=True)
class ExecAddress:
    """A child process whose stdin and stdout are the stream; ``argv`` is split like a shell."""

    argv: tuple[str, ...]

    is_tls = False  # a class attribute, not a field

    @property
    def is_stream(self) -> bool:
        return True

    def __str__(self) -> str:
        return "exec:" + shlex.join(self.argv)


Address = InetAddress | UnixAddress | StdioAddress | ExecAddress
SocketAddress = InetAddress | UnixAddress


def _query(tls: TLSParams | None) -> str:
    """``?`` and the canonical query of these settings, or nothing when there are none."""
    query = "" if tls is None else str(tls)
    return f"?{query}" if query else ""


def parse(text: str) -> Address:
    """Parse an address string into a frozen value.  Pure: no DNS, no socket.

    Raises :class:`~enchufe.errors.AddressError` with a one-line message naming the problem and
    showing an accepted form.
    """
    if not isinstance(text, str):
        raise AddressError(_("an address must be a string, not {type}").format(type=type(text).__name__))
    if "\0" in text:
        raise AddressError(
            _(
                "{text}: NUL bytes are not allowed in an address; e.g. tcp://127.0.0.1:9000 or unix:///tmp/app.sock"
            ).format(text=_q(text))
        )
    if text in ("-", "stdio:"):
        return StdioAddress()
    scheme, sep, rest = text.partition(":")
    if not sep or not scheme:
        raise AddressError(
            _(
                "{text}: missing scheme; write it as SCHEME:…, e.g. tcp://127.0.0.1:9000 "
                "or unix:///run/app.sock (schemes: {schemes})"
            ).format(text=_q(text), schemes=_KNOWN)
        )
    lowered = scheme.lower()
    if lowered in _INET_SCHEMES:
        return _parse_inet(text, lowered, rest)
    if lowered in _UNIX_SCHEMES:
        return _parse_unix(text, lowered, rest)
    if lowered == "exec":
        return _parse_exec(text, rest)
    if lowered == "stdio":
        raise AddressError(
            _("{text}: stdio takes nothing after the colon; write - or stdio:").format(text=_q(text))
        )
    if _tls_text.is_datagram_tls(lowered):
        raise _tls_text.no_dtls(text)
    suggestion = _as_tcp(text, rest, "tls" if lowered in _tls_text.TLS_LOOKALIKES else "tcp")
    if suggestion:
        raise AddressError(
            _(
                "{text}: unknown scheme {scheme}; for a {protocol} address write {suggestion} "
                "(schemes: {schemes})"
            ).format(
                text=_q(text),
                scheme=_q(scheme),
                protocol=suggestion.partition(":")[0].upper(),
                suggestion=suggestion,
                schemes=_KNOWN,
            )
        )
    raise AddressError(
        _("{text}: unknown scheme {scheme}; accepted: {schemes} (e.g. tcp://127.0.0.1:9000)").format(
            text=_q(text), scheme=_q(scheme), schemes=_KNOWN
        )
    )


def _as_tcp(text: str, rest: str, scheme: str) -> str | None:
    """``tcp://…`` (or ``tls://…``) for input that reads as HOST:PORT (``127.0.0.1:80``,
    ``[::1]:80``) or as another protocol's URL (``http://host:80``), when that parses; else
    ``None``."""
    hostport = rest[2:] if rest.startswith("//") else text
    try:
        return str(_parse_inet(f"{scheme}://{hostport}", scheme, f"//{hostport}"))
    except AddressError:
        return None


def _parse_inet(text: str, scheme: str, rest: str) -> InetAddress:
    transport, forced, tls = _INET_SCHEMES[scheme]
    example = f"{scheme}://{'[::1]' if forced == 6 else '127.0.0.1'}:9000"
    if not rest.startswith("//"):
        raise AddressError(
            _("{text}: {scheme} addresses start with {scheme}://, e.g. {example}").format(
                text=_q(text), scheme=scheme, example=example
            )
        )
    hostport, query = _tls_text.split_query(rest[2:]) if tls else (rest[2:], None)
    if "?" in hostport:
        _refuse_query(text, scheme, hostport)
    if "/" in hostport or "?" in hostport or "#" in hostport:
        raise AddressError(
            _("{text}: nothing may follow the port; write it as {example}").format(
                text=_q(text), example=example
            )
        )
    if hostport.startswith("["):
        host, port_text = _split_bracketed(text, scheme, hostport)
    else:
        host, port_text = _split_plain(text, scheme, hostport, example)
    port = parse_port(text, port_text, example, transport)
    family = literal_family(host)
    if forced and family and family != forced:
        hostport = f"[{_shown(host)}]:{port}" if family == 6 else f"{host}:{port}"
        raise AddressError(
            _(
                "{text}: {scheme} needs an IPv{forced} host, but {host} is IPv{family}; "
                "use {fitting} or {either}"
            ).format(
                text=_q(text),
                scheme=scheme,
                forced=forced,
                host=_shown(host),
                family=family,
                fitting=f"{transport}{family}://{hostport}",
                either=f"{transport}://{hostport}",
            )
        )
    return InetAddress(transport, host, port, forced, _tls_text.params(text, query) if tls else None)


def _refuse_query(text: str, scheme: str, rest: str) -> None:
    """Refuse TLS parameters (``?…``) on a plain address, suggesting its TLS scheme; other
    queries are left to the caller (an error after a port, part of a unix path)."""
    unix = scheme.startswith("unix")
    tls_scheme = f"{_tls_text.UNIX_SCHEME}:" if unix else f"tls{scheme[3:]}://"
    suggestion = tls_scheme + rest
    try:
        parse(suggestion)
    except AddressError:
        suggestion = tls_scheme + ("///run/app.sock" if unix else "127.0.0.1:443")
    _tls_text.refuse_query(text, scheme, rest.partition("?")[2], _shown(suggestion))


def _split_bracketed(text: str, scheme: str, hostport: str) -> tuple[str, str]:
    """``[IPV6]:PORT`` as the IPv6 address and the port's text."""
    close = hostport.find("]")
    if close < 0:
        raise AddressError(
            _("{text}: missing ']' after the IPv6 address, e.g. {example}").format(
                text=_q(text), example=f"{scheme}://[::1]:9000"
            )
        )
    host = hostport[1:close]
    after = hostport[close + 1 :]
    if not after.startswith(":"):
        raise AddressError(
            _("{text}: missing port after ']', e.g. {example}").format(
                text=_q(text), example=f"{scheme}://[{_shown(host) or '::1'}]:9000"
            )
        )
    if not is_ipv6(host):
        raise AddressError(
            _("{text}: {host} between brackets is not an IPv6 address, e.g. {example}").format(
                text=_q(text), host=_q(host), example=f"{scheme}://[::1]:9000"
            )
        )
    return host, after[1:]


def _split_plain(text: str, scheme: str, hostport: str, example: str) -> tuple[str, str]:
    """``HOST:PORT`` (HOST an IPv4 literal, a name, or empty) as the host and the port's text."""
    host, colon, port_text = hostport.rpartition(":")
    if not colon:
        raise AddressError(
            _("{text}: missing port; write it as {example}").format(text=_q(text), example=example)
        )
    if ":" in host:
        raise AddressError(
            _("{text}: an IPv6 address must be in brackets, e.g. {example}").format(
                text=_q(text), example=f"{scheme}://[{_shown(host)}]:{_shown(port_text) or 9000}"
            )
        )
    if host and literal_family(host) is None:
        check_host_name(text, scheme, host, port_text, example)
    return host, port_text


def _parse_unix(text: str, scheme: str, rest: str) -> UnixAddress:
    datagram, tls = _UNIX_SCHEMES[scheme]
    rest, query = _tls_text.split_query(rest) if tls else (rest, None)
    if "?" in rest:
        _refuse_query(text, scheme, rest)
    abstract, name = split_unix(text, scheme, rest)
    if tls:
        name = _tls_text.decode_name(text, name)
    check_length(text, scheme, name, abstract=abstract)
    return UnixAddress(name, abstract, datagram, _tls_text.params(text, query) if tls else None)


def _parse_exec(text: str, rest: str) -> ExecAddress:
    try:
        argv = tuple(shlex.split(rest))
    except ValueError as exc:
        raise AddressError(
            _("{text}: cannot split the command line ({error}); e.g. exec:tr a-z A-Z").format(
                text=_q(text), error=exc
            )
        ) from None
    if not argv:
        raise AddressError(
            _("{text}: missing program; write exec:PROGRAM ARGS…, e.g. exec:tr a-z A-Z").format(text=_q(text))
        )
    return ExecAddress(argv)


#: A piece of the user's input as it may appear in a one-line message: everything that is not
#: printable (controls, line and paragraph separators, U+0085 …) escaped.
_shown = printable


def tls_server_name(address: Address) -> str | None:
    """The name a TLS client sends (SNI) and verifies: ``sni=``, else the host of a ``tls://``
    address (without a trailing dot or an IPv6 ``%scope``, which no certificate names); ``None``
    when there is none (a ``tls+unix:`` address without ``sni=``, a wildcard, a plain address)."""
    if not isinstance(address, InetAddress | UnixAddress) or address.tls is None:
        return None
    if address.tls.sni is not None or isinstance(address, UnixAddress):
        return address.tls.sni
    return address.host.partition("%")[0].removesuffix(".") or None


def check_tls_use(address: Address, side: Side) -> None:
    """Refuse, before any socket exists, TLS settings that cannot work on this ``side``: those of
    the other side, a listener without a certificate, TLS over datagrams, and a ``tls+unix:``
    client with nothing to verify the server against.  Plain addresses pass."""
    if not isinstance(address, InetAddress | UnixAddress) or address.tls is None:
        return
    if not address.is_stream:
        raise _tls_text.no_dtls(str(address))
    tls = address.tls
    tls.check_side(side)
    # A tls:// client without a host is refused where every client is (it needs a host to reach).
    if side == "client" and isinstance(address, UnixAddress) and not (tls.sni or tls.pins or tls.insecure):
        raise AddressError(
            _(
                "{address}: {scheme}:… has no host name to verify: add sni=NAME, pin=sha256:… or insecure"
            ).format(address=_q(str(address)), scheme=address.scheme)
        )


def inet_address(transport: str, host: str, port: int) -> InetAddress:
    """``InetAddress(transport, host, port)``, made as fast as can be (:func:`._fastinit.make`,
    inlined): for the addresses of every connection (its peer's, a PROXY header's)."""
    address = object.__new__(InetAddress)
    address.__dict__.update(transport=transport, host=host, port=port, forced_family=None, tls=None)
    return address


def from_sockaddr(family: int, sock_type: int, sockaddr: Any) -> InetAddress | UnixAddress | None:
    """The enchufe address for what ``getsockname``/``getpeername``/``recvfrom`` returned.

    ``None`` when there is no address (an unbound unix socket).  An IPv4 peer of a dual-stack
    socket, which the kernel shows as IPv4-mapped (``::ffff:127.0.0.1``), is reported as the
    IPv4 address it is (``127.0.0.1``), as users think of it; a datagram socket sending to that
    address from a dual-stack socket maps it back, so that replies still reach it.
    """
    if family == socket.AF_INET:
        host, port = sockaddr
        return inet_address("tcp" if sock_type == socket.SOCK_STREAM else "udp", host, port)
    if family == socket.AF_INET6:
        host, port, _flow, scope = sockaddr
        if host.startswith("::ffff:") and "." in host:  # cheap test first: this is a hot path
            host = host[7:]
        elif scope and "%" not in host:
            host = f"{host}%{scope}"
        return inet_address("tcp" if sock_type == socket.SOCK_STREAM else "udp", host, port)
    if family == socket.AF_UNIX:
        return _unix_from_sockaddr(sockaddr, datagram=sock_type != socket.SOCK_STREAM)
    raise ValueError(f"unsupported address family {family}")


def _unix_from_sockaddr(sockaddr: str | bytes, *, datagram: bool) -> UnixAddress | None:
    """A unix sockaddr (bytes when the name is not text, or abstract) as an address; ``None``
    for an unbound socket."""
    if isinstance(sockaddr, bytes):
        if not sockaddr:
            return None
        if sockaddr.startswith(b"\0"):
            name = sockaddr[1:].decode("utf-8", "surrogateescape")
            return UnixAddress(name, abstract=True, datagram=datagram)
        sockaddr = os.fsdecode(sockaddr)
    if not sockaddr:
        return None
    return UnixAddress(str(sockaddr), abstract=False, datagram=datagram)

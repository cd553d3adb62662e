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
``-``, ``stdio:``                      :class:`StdioAddress`
``exec:PROGRAM ARGS…``                 :class:`ExecAddress` (argv split like a shell)
=====================================  ==============================================
"""

from __future__ import annotations

import os
import shlex
import socket
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ._inet_text import SERVICES as SERVICES  # the service names a port may be given as
from ._inet_text import check_host_name, is_ipv6, literal_family, parse_port
from ._text import printable
from ._text import quoted as _q
from .errors import AddressError

__all__ = [
    "Address",
    "ExecAddress",
    "InetAddress",
    "Kind",
    "StdioAddress",
    "UnixAddress",
    "parse",
]

#: sun_path holds 108 bytes; a path needs its terminating NUL and an abstract name its leading
#: NUL, so 107 bytes of name are what either form can use.
MAX_UNIX_NAME = 107

_INET_SCHEMES = {
    # scheme: (transport, forced family)
    "tcp": ("tcp", None),
    "tcp4": ("tcp", 4),
    "tcp6": ("tcp", 6),
    "udp": ("udp", None),
    "udp4": ("udp", 4),
    "udp6": ("udp", 6),
}
_UNIX_SCHEMES = {"unix": False, "unixgram": True}
_KNOWN = "tcp, tcp4, tcp6, udp, udp4, udp6, unix, unixgram, stdio, exec"


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
    """

    transport: str  # "tcp" or "udp"
    host: str
    port: int
    forced_family: int | None = None

    @property
    def scheme(self) -> str:
        return self.transport + (str(self.forced_family) if self.forced_family else "")

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
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class UnixAddress:
    """An AF_UNIX address: a file system path, or a name in Linux's abstract namespace.

    ``name`` is the path, or for abstract sockets the name without its leading NUL (shown as
    ``@name``).  ``datagram`` selects SOCK_DGRAM (``unixgram:``) over SOCK_STREAM (``unix:``).
    """

    name: str
    abstract: bool = False
    datagram: bool = False

    @property
    def scheme(self) -> str:
        return "unixgram" if self.datagram else "unix"

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
        if self.abstract:
            return f"{self.scheme}:@{self.name}"
        if self.name.startswith("/"):
            return f"{self.scheme}://{self.name}"
        return f"{self.scheme}:{self.name}"


@dataclass(frozen=True)
class StdioAddress:
    """Standard input and output of this process (``-`` or ``stdio:``)."""

    @property
    def is_stream(self) -> bool:
        return True

    def __str__(self) -> str:
        return "-"


@dataclass(frozen=True)
class ExecAddress:
    """A child process whose stdin and stdout are the stream; ``argv`` is split like a shell."""

    argv: tuple[str, ...]

    @property
    def is_stream(self) -> bool:
        return True

    def __str__(self) -> str:
        return "exec:" + shlex.join(self.argv)


Address = InetAddress | UnixAddress | StdioAddress | ExecAddress
SocketAddress = InetAddress | UnixAddress


def parse(text: str) -> Address:
    """Parse an address string into a frozen value.  Pure: no DNS, no socket.

    Raises :class:`~enchufe.errors.AddressError` with a one-line message naming the problem and
    showing an accepted form.
    """
    if not isinstance(text, str):
        raise AddressError(f"an address must be a string, not {type(text).__name__}")
    if "\0" in text:
        raise AddressError(
            f"{_q(text)}: NUL bytes are not allowed in an address; "
            "e.g. tcp://127.0.0.1:9000 or unix:///tmp/app.sock"
        )
    if text in ("-", "stdio:"):
        return StdioAddress()
    scheme, sep, rest = text.partition(":")
    if not sep or not scheme:
        raise AddressError(
            f"{_q(text)}: missing scheme; write it as SCHEME:…, e.g. tcp://127.0.0.1:9000 "
            f"or unix:///run/app.sock (schemes: {_KNOWN})"
        )
    lowered = scheme.lower()
    if lowered in _INET_SCHEMES:
        return _parse_inet(text, lowered, rest)
    if lowered in _UNIX_SCHEMES:
        return _parse_unix(text, lowered, rest)
    if lowered == "exec":
        return _parse_exec(text, rest)
    if lowered == "stdio":
        raise AddressError(f"{_q(text)}: stdio takes nothing after the colon; write - or stdio:")
    suggestion = _as_tcp(text, rest)
    if suggestion:
        raise AddressError(
            f"{_q(text)}: unknown scheme {_q(scheme)}; for a TCP address write {suggestion} "
            f"(schemes: {_KNOWN})"
        )
    raise AddressError(
        f"{_q(text)}: unknown scheme {_q(scheme)}; accepted: {_KNOWN} (e.g. tcp://127.0.0.1:9000)"
    )


def _as_tcp(text: str, rest: str) -> str | None:
    """``tcp://…`` for input that reads as HOST:PORT (``127.0.0.1:80``, ``[::1]:80``) or as
    another protocol's URL (``http://host:80``), when that parses; else ``None``."""
    hostport = rest[2:] if rest.startswith("//") else text
    try:
        return str(_parse_inet(f"tcp://{hostport}", "tcp", f"//{hostport}"))
    except AddressError:
        return None


def _parse_inet(text: str, scheme: str, rest: str) -> InetAddress:
    transport, forced = _INET_SCHEMES[scheme]
    example = f"{scheme}://{'[::1]' if forced == 6 else '127.0.0.1'}:9000"
    if not rest.startswith("//"):
        raise AddressError(f"{_q(text)}: {scheme} addresses start with {scheme}://, e.g. {example}")
    hostport = rest[2:]
    if "/" in hostport or "?" in hostport or "#" in hostport:
        raise AddressError(f"{_q(text)}: nothing may follow the port; write it as {example}")
    if hostport.startswith("["):
        host, port_text = _split_bracketed(text, scheme, hostport)
    else:
        host, port_text = _split_plain(text, scheme, hostport, example)
    port = parse_port(text, port_text, example, transport)
    family = literal_family(host)
    if forced and family and family != forced:
        hostport = f"[{_shown(host)}]:{port}" if family == 6 else f"{host}:{port}"
        raise AddressError(
            f"{_q(text)}: {scheme} needs an IPv{forced} host, but {_shown(host)} is IPv{family}; "
            f"use {transport}{family}://{hostport} or {transport}://{hostport}"
        )
    return InetAddress(transport, host, port, forced)


def _split_bracketed(text: str, scheme: str, hostport: str) -> tuple[str, str]:
    """``[IPV6]:PORT`` as the IPv6 address and the port's text."""
    close = hostport.find("]")
    if close < 0:
        raise AddressError(f"{_q(text)}: missing ']' after the IPv6 address, e.g. {scheme}://[::1]:9000")
    host = hostport[1:close]
    after = hostport[close + 1 :]
    if not after.startswith(":"):
        raise AddressError(
            f"{_q(text)}: missing port after ']', e.g. {scheme}://[{_shown(host) or '::1'}]:9000"
        )
    if not is_ipv6(host):
        raise AddressError(
            f"{_q(text)}: {_q(host)} between brackets is not an IPv6 address, e.g. {scheme}://[::1]:9000"
        )
    return host, after[1:]


def _split_plain(text: str, scheme: str, hostport: str, example: str) -> tuple[str, str]:
    """``HOST:PORT`` (HOST an IPv4 literal, a name, or empty) as the host and the port's text."""
    host, colon, port_text = hostport.rpartition(":")
    if not colon:
        raise AddressError(f"{_q(text)}: missing port; write it as {example}")
    if ":" in host:
        raise AddressError(
            f"{_q(text)}: an IPv6 address must be in brackets, "
            f"e.g. {scheme}://[{_shown(host)}]:{_shown(port_text) or 9000}"
        )
    if host and literal_family(host) is None:
        check_host_name(text, scheme, host, port_text, example)
    return host, port_text


def _parse_unix(text: str, scheme: str, rest: str) -> UnixAddress:
    datagram = _UNIX_SCHEMES[scheme]
    examples = f"{scheme}:///tmp/app.sock, {scheme}:rel/app.sock or {scheme}:@name"
    if rest.startswith("@"):
        name = rest[1:]
        if not name:
            raise AddressError(f"{_q(text)}: empty abstract name; write {scheme}:@name")
        _check_length(text, scheme, name, abstract=True)
        return UnixAddress(name, abstract=True, datagram=datagram)
    if rest.startswith("//"):
        path = rest[2:]
        if not path.startswith("/"):
            raise AddressError(
                f"{_q(text)}: after {scheme}:// comes an absolute path (three slashes: "
                f"{scheme}:///tmp/app.sock); a relative path is written {scheme}:{_shown(path) or 'app.sock'}"
            )
    else:
        path = rest
    if not path:
        raise AddressError(f"{_q(text)}: missing socket path; write {examples}")
    _check_length(text, scheme, path, abstract=False)
    return UnixAddress(path, abstract=False, datagram=datagram)


def _check_length(text: str, scheme: str, name: str, *, abstract: bool) -> None:
    size = len(name.encode("utf-8", "surrogateescape")) if abstract else len(os.fsencode(name))
    if size > MAX_UNIX_NAME:
        what, instead = (
            ("abstract name", f"use a shorter name, e.g. {scheme}:@app")
            if abstract
            else ("socket path", f"use a shorter path, e.g. {scheme}:///tmp/app.sock, or {scheme}:@app")
        )
        raise AddressError(
            f"{_q(text)}: {what} is {size} bytes, longer than the {MAX_UNIX_NAME} a unix socket "
            f"address holds; {instead}"
        )


def _parse_exec(text: str, rest: str) -> ExecAddress:
    try:
        argv = tuple(shlex.split(rest))
    except ValueError as exc:
        raise AddressError(
            f"{_q(text)}: cannot split the command line ({exc}); e.g. exec:tr a-z A-Z"
        ) from None
    if not argv:
        raise AddressError(f"{_q(text)}: missing program; write exec:PROGRAM ARGS…, e.g. exec:tr a-z A-Z")
    return ExecAddress(argv)


def _shown(part: str) -> str:
    """A piece of the user's input as it may appear in a one-line message: everything that is
    not printable (controls, line and paragraph separators, U+0085 …) escaped."""
    return printable(part)


def from_sockaddr(family: int, sock_type: int, sockaddr: Any) -> InetAddress | UnixAddress | None:
    """The enchufe address for what ``getsockname``/``getpeername``/``recvfrom`` returned.

    ``None`` when there is no address (an unbound unix socket).  An IPv4 peer of a dual-stack
    socket, which the kernel shows as IPv4-mapped (``::ffff:127.0.0.1``), is reported as the
    IPv4 address it is (``127.0.0.1``), as users think of it; a datagram socket sending to that
    address from a dual-stack socket maps it back, so that replies still reach it.
    """
    if family == socket.AF_INET:
        host, port = sockaddr
        return InetAddress("tcp" if sock_type == socket.SOCK_STREAM else "udp", host, port)
    if family == socket.AF_INET6:
        host, port, _flow, scope = sockaddr
        if host.startswith("::ffff:") and "." in host:  # cheap test first: this is a hot path
            host = host[7:]
        elif scope and "%" not in host:
            host = f"{host}%{scope}"
        return InetAddress("tcp" if sock_type == socket.SOCK_STREAM else "udp", host, port)
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

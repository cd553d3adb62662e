"""The server side of SOCKS5 (RFC 1928) with username/password (RFC 1929), sans I/O.

::

    machine = Socks5Server(users)            # users: {b"alice": b"secret"}, or None: no auth
    step = machine.feed(data)                # what the client sent, in any split
    write(step.send)                         # a method choice, an auth status (maybe b"")
    if step.refused: close after step.send   # step.refused: why, in words (no password ever)
    if step.request: connect to step.request.host:port, then
        write(reply(SUCCEEDED, bound_host, bound_port))  (or reply(code) and close)

The client's bytes are buffered only until a message is whole, and every message is bounded
(a greeting 257 bytes, a username/password 513, a request 262), so a client holds at most
:data:`MAX_MESSAGE` bytes here whatever it sends.  Bytes after the request belong to the
target (``step.leftover``).  Constants and address encoding are the client side's
(:mod:`enchufe._hop_socks5`); the reply codes' words too.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from socket import AF_INET, inet_ntop

from ._hop_socks5 import (
    ATYP_IPV4,
    ATYP_IPV6,
    ATYP_NAME,
    AUTH_VERSION,
    CONNECT,
    NO_ACCEPTABLE,
    NO_AUTH,
    REPLIES,
    UDP_ASSOCIATE,
    USER_PASS,
    VERSION,
    _address,
)
from ._text import printable
from .i18n import _

__all__ = [
    "ADDRESS_TYPE_NOT_SUPPORTED",
    "COMMAND_NOT_SUPPORTED",
    "CONNECTION_NOT_ALLOWED",
    "CONNECTION_REFUSED",
    "GENERAL_FAILURE",
    "HOST_UNREACHABLE",
    "MAX_MESSAGE",
    "NETWORK_UNREACHABLE",
    "SUCCEEDED",
    "TTL_EXPIRED",
    "Request",
    "Socks5Server",
    "Step",
    "host_name",
    "reply",
    "reply_words",
]

SUCCEEDED = 0
GENERAL_FAILURE = 1
CONNECTION_NOT_ALLOWED = 2
NETWORK_UNREACHABLE = 3
HOST_UNREACHABLE = 4
CONNECTION_REFUSED = 5
TTL_EXPIRED = 6
COMMAND_NOT_SUPPORTED = 7
ADDRESS_TYPE_NOT_SUPPORTED = 8

#: The largest message a client sends (a username/password request: 1 + 1 + 255 + 1 + 255).
MAX_MESSAGE = 513

_COMMAND_NAMES = {CONNECT: "CONNECT", 0x02: "BIND", UDP_ASSOCIATE: "UDP ASSOCIATE"}


@dataclass(frozen=True)
class Request:
    """What the client asked for: ``command`` (CONNECT or UDP_ASSOCIATE), a host (an IP literal,
    or a name as the client sent it, not yet resolved), a port, and the user it authenticated
    as (``None`` without authentication)."""

    command: int
    host: str
    port: int
    by_name: bool
    user: str | None = None

    @property
    def command_name(self) -> str:
        return _COMMAND_NAMES.get(self.command, f"command {self.command}")

    @property
    def hostport(self) -> str:
        """``host:port`` (``[v6]:port``), escaped: the client chose the name."""
        host = printable(self.host)
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


@dataclass(frozen=True)
class Step:
    """What to do after a :meth:`Socks5Server.feed`: write ``send`` to the client; then, if
    ``refused`` (why, in words), close; if ``request``, serve it (``leftover``: the bytes that
    came after it); otherwise wait for more bytes."""

    send: bytes = b""
    request: Request | None = None
    refused: str | None = None
    leftover: bytes = b""


#: A greeting offering "no authentication" only, and what an open server answers (a Step is
#: immutable: one for every client).
_NO_AUTH_GREETING = bytes([VERSION, 1, NO_AUTH])
_NO_AUTH_CHOSEN = Step(bytes([VERSION, NO_AUTH]))


class Socks5Server:
    """Greeting → method choice → (username/password → status) → request; see the module.

    ``users`` maps usernames to passwords (bytes); ``None`` serves clients without
    authentication.  A password is compared with :func:`hmac.compare_digest`, and never
    appears in a refusal."""

    def __init__(self, users: Mapping[bytes, bytes] | None = None) -> None:
        self._users = users
        self._state = "greeting"
        self._buffer = bytearray()
        self._user: str | None = None

    def feed(self, data: bytes) -> Step:
        """Take the client's bytes (any split); what to do now (see :class:`Step`).  Once a
        step carries a request or a refusal, the machine is done: later calls refuse."""
        state = self._state
        if state == "done":
            return Step(refused=_("bytes after the handshake ended (a bug of the caller)"))
        if data == _NO_AUTH_GREETING and state == "greeting" and self._users is None and not self._buffer:
            # What nearly every client of an open server sends first, whole: its answer at once.
            self._state = "request"
            return _NO_AUTH_CHOSEN
        buffer = self._buffer
        buffer += data
        sent = b""
        while True:
            # The state's method called directly, and not again on an empty buffer: every
            # connection goes through here twice.
            step: bytes | Request | None
            try:
                if state == "greeting":
                    step = self._greeting()
                elif state == "auth":
                    step = self._auth()
                else:
                    step = self._request()
            except _Refusal as refusal:
                self._state = "done"
                return Step(sent + refusal.send, refused=refusal.reason)
            request = leftover = None
            if isinstance(step, Request):
                self._state = "done"
                request, leftover, self._buffer = step, bytes(buffer), bytearray()
            elif step is not None:
                sent += step
                if buffer:
                    state = self._state
                    continue
            answer = object.__new__(Step)  # Step(…), made fast (see ._fastinit): two a connection
            answer.__dict__.update(send=sent, request=request, refused=None, leftover=leftover or b"")
            return answer

    @property
    def waiting_for(self) -> str:
        """What the client has not sent yet, for a timeout's line."""
        if self._state == "greeting":
            return _("its greeting")
        if self._state == "auth":
            return _("its username and password")
        if self._state == "request":
            return _("its request")
        return _("nothing")

    def _greeting(self) -> bytes | None:
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        if buffer[0] != VERSION:
            raise _Refusal(_("not a SOCKS5 client: its greeting began {start}").format(start=_shown(buffer)))
        total = 2 + buffer[1]
        if len(buffer) < total:
            return None
        methods = set(buffer[2:total])
        del buffer[:total]
        wanted = USER_PASS if self._users is not None else NO_AUTH
        if wanted not in methods:
            line = (
                _("the client does not offer username/password")
                if self._users is not None
                else _("the client does not offer no authentication")
            )
            raise _Refusal(line, bytes([VERSION, NO_ACCEPTABLE]))
        self._state = "auth" if wanted == USER_PASS else "request"
        return bytes([VERSION, wanted])

    def _auth(self) -> bytes | None:
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        if buffer[0] != AUTH_VERSION:
            raise _Refusal(
                _("not a username/password request: it began {start}").format(start=_shown(buffer)),
                b"\x01\x01",
            )
        ulen = buffer[1]
        if len(buffer) < 3 + ulen:
            return None
        plen = buffer[2 + ulen]
        total = 3 + ulen + plen
        if len(buffer) < total:
            return None
        user = bytes(buffer[2 : 2 + ulen])
        password = bytes(buffer[3 + ulen : total])
        del buffer[:total]
        assert self._users is not None
        known = self._users.get(user)
        # Compared even for an unknown user, so that the time taken does not say which exist.
        matched = hmac.compare_digest(password, known if known is not None else b"\0" * len(password))
        shown = printable(user)
        if known is None or not matched:
            raise _Refusal(
                _("username/password refused (user {user})").format(user=shown), bytes([AUTH_VERSION, 1])
            )
        self._user = user.decode("utf-8", errors="replace")
        self._state = "request"
        return bytes([AUTH_VERSION, 0])

    def _request(self) -> Request | None:
        buffer = self._buffer
        if len(buffer) < 5:
            return None
        if buffer[0] != VERSION:
            raise _Refusal(
                _("not a SOCKS5 request: it began {start}").format(start=_shown(buffer)),
                reply(GENERAL_FAILURE),
            )
        command, atyp = buffer[1], buffer[3]
        size = {ATYP_IPV4: 4, ATYP_IPV6: 16, ATYP_NAME: 1 + buffer[4]}.get(atyp)
        if size is None:
            raise _Refusal(
                _("address type {type} is not IPv4, a name or IPv6").format(type=atyp),
                reply(ADDRESS_TYPE_NOT_SUPPORTED),
            )
        total = 4 + size + 2
        if len(buffer) < total:
            return None
        raw = bytes(buffer[4 : total - 2])
        port = int.from_bytes(buffer[total - 2 : total], "big")
        del buffer[:total]
        if command not in (CONNECT, UDP_ASSOCIATE):
            name = _COMMAND_NAMES.get(command) or _("command {number}").format(number=command)
            raise _Refusal(
                _("{command} is not supported (CONNECT and UDP ASSOCIATE are)").format(command=name),
                reply(COMMAND_NOT_SUPPORTED),
            )
        if atyp == ATYP_NAME:
            host = host_name(raw[1:])
            if host is None:
                raise _Refusal(
                    _("not a host name: {name}").format(name=printable(raw[1:])), reply(HOST_UNREACHABLE)
                )
        elif atyp == ATYP_IPV4:
            host = inet_ntop(AF_INET, raw)  # what _ip_text does for 4 bytes, without the call
        else:
            host = _ip_text(raw)
        request = object.__new__(Request)  # Request(…), made fast (see ._fastinit)
        request.__dict__.update(
            command=command, host=host, port=port, by_name=atyp == ATYP_NAME, user=self._user
        )
        return request


class _Refusal(Exception):
    """The client is refused: ``send`` what tells it (maybe nothing), then close."""

    def __init__(self, reason: str, send: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.send = send


def host_name(raw: bytes) -> str | None:
    """A host name as a client sent it: printable ASCII, no spaces, ``None`` otherwise (IDNA
    names arrive encoded already, as curl sends them)."""
    if not raw or not raw.isascii():
        return None
    text = raw.decode("ascii").rstrip(".")
    if not text or any(not (ch.isalnum() or ch in "-._") for ch in text):
        return None
    return text


def _ip_text(raw: bytes) -> str:
    """A request's IPv4 or IPv6 address as text, as :mod:`ipaddress` writes it, in a C call or
    two: every request for an address goes through here."""
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    text = socket.inet_ntop(socket.AF_INET6, raw)
    # The C library writes an IPv4-mapped or -compatible address with a dotted tail; ipaddress's
    # text is all hex groups, and is what requests have always been shown as.
    return str(ipaddress.IPv6Address(raw)) if "." in text else text


def reply(code: int, host: str = "0.0.0.0", port: int = 0) -> bytes:
    """A reply to a request: ``code`` (:data:`SUCCEEDED` or why not) and the address bound
    for the client (where the target sees us; for UDP ASSOCIATE, where the relay listens)."""
    host = host.partition("%")[0]
    try:  # an IP address (a socket's, as every reply names): packed at once, no parsing
        if ":" in host:
            address = bytes([ATYP_IPV6]) + socket.inet_pton(socket.AF_INET6, host)
        else:
            address = bytes([ATYP_IPV4]) + socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return bytes([VERSION, code, 0]) + _address(host, port)[0]
    return bytes([VERSION, code, 0]) + address + port.to_bytes(2, "big")


def reply_words(code: int) -> str:
    """A reply code in words (the client side's table)."""
    if code in REPLIES:
        return _(REPLIES[code])
    return _("succeeded") if code == SUCCEEDED else _("reply {code}").format(code=code)


def _shown(data: bytes | bytearray) -> str:
    return repr(bytes(data[:16]))[1:]

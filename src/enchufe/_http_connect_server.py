"""The server side of HTTP CONNECT (RFC 9110 §9.3.6), sans I/O: what ``enchufe socks`` answers
a client that speaks HTTP to it (``curl --proxy http://…``, ``ncat --proxy-type http``).

::

    machine = HttpConnectServer(users)       # users: {b"alice": b"secret"}, or None: no auth
    step = machine.feed(data)                # a Step, as enchufe._socks5_server's machine gives
    if step.refused: write(step.send), close # an HTTP error response (405, 407, 400, 431…)
    if step.request: connect to step.request.host:port, then
        write(ESTABLISHED)                   (or http_reply(socks_code) and close)

Only CONNECT is served (the proxy carries bytes, it does not fetch URLs); the request's head is
bounded by :data:`MAX_HEAD` bytes, and bytes after it belong to the target.  With users, the
client must send ``Proxy-Authorization: Basic …`` (RFC 7617); a missing or wrong one is
answered 407 with ``Proxy-Authenticate``.  The request it yields is the SOCKS machine's
:class:`~enchufe._socks5_server.Request` (command CONNECT), so that the server judges, opens
and logs both alike; failures to open the target are answered by :func:`http_reply` from the
same SOCKS reply codes.

Hand-written rather than taken from h11: the server needs one request line and one header of
one request, bounded, and then the bytes are no longer HTTP; h11 would be a dependency for
that, and its CONNECT handling ends in the same hand-over of the leftover bytes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping

from . import _socks5_server as socks5
from ._hop_socks5 import CONNECT
from ._inet_text import literal_family
from ._socks5_server import Request, Step
from ._text import printable
from .i18n import _

__all__ = ["ESTABLISHED", "MAX_HEAD", "HttpConnectServer", "http_reply", "http_status", "speaks_http"]

#: The most bytes a request's head may take (request line and headers).
MAX_HEAD = 8192
#: What a 407 asks for.
_ASK_FOR_CREDENTIALS = 'Proxy-Authenticate: Basic realm="enchufe"'
#: What a client whose tunnel is open reads before the target's bytes.
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"

_BAD_GATEWAY = (502, "Bad Gateway")
#: A SOCKS reply code (why a request was refused, or its target not opened) as an HTTP status.
_STATUS = {
    socks5.GENERAL_FAILURE: (502, "Bad Gateway"),
    socks5.CONNECTION_NOT_ALLOWED: (403, "Forbidden"),
    socks5.NETWORK_UNREACHABLE: (502, "Bad Gateway"),
    socks5.HOST_UNREACHABLE: (502, "Bad Gateway"),
    socks5.CONNECTION_REFUSED: (502, "Bad Gateway"),
    socks5.TTL_EXPIRED: (504, "Gateway Timeout"),
    socks5.COMMAND_NOT_SUPPORTED: (405, "Method Not Allowed"),
    socks5.ADDRESS_TYPE_NOT_SUPPORTED: (400, "Bad Request"),
}


def speaks_http(first: bytes) -> bool:
    """Whether a client's first bytes begin an HTTP request (a method's capital letter) rather
    than a SOCKS5 greeting (byte 5)."""
    return bool(first) and 0x41 <= first[0] <= 0x5A


def http_status(code: int) -> int:
    """The HTTP status that says a SOCKS reply ``code``'s refusal."""
    return _STATUS.get(code, _BAD_GATEWAY)[0]


def http_reply(code: int) -> bytes:
    """The response that says a SOCKS reply ``code``'s refusal in HTTP (and closes)."""
    return _response(*_STATUS.get(code, _BAD_GATEWAY))


def _response(status: int, reason: str, *extra: str) -> bytes:
    head = [f"HTTP/1.1 {status} {reason}", *extra, "Content-Length: 0", "Connection: close", "", ""]
    return "\r\n".join(head).encode("ascii")


class HttpConnectServer:
    """One client's CONNECT request (see the module); ``users`` as for the SOCKS machine."""

    def __init__(self, users: Mapping[bytes, bytes] | None = None) -> None:
        self._users = users
        self._buffer = bytearray()
        self._done = False

    @property
    def waiting_for(self) -> str:
        """What the client has not sent yet, for a timeout's line."""
        return _("nothing") if self._done else _("its CONNECT request")

    def feed(self, data: bytes) -> Step:
        """Take the client's bytes (any split): a Step with the request, a refusal (its HTTP
        response in ``send``), or nothing yet."""
        if self._done:
            return Step(refused=_("bytes after the handshake ended (a bug of the caller)"))
        buffer = self._buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                return self._refuse(
                    _("its request's head is larger than {limit} bytes").format(limit=MAX_HEAD),
                    _response(431, "Request Header Fields Too Large"),
                )
            return Step()
        if end > MAX_HEAD:
            return self._refuse(
                _("its request's head is larger than {limit} bytes").format(limit=MAX_HEAD),
                _response(431, "Request Header Fields Too Large"),
            )
        head = bytes(buffer[:end]).decode("utf-8", "surrogateescape").split("\r\n")
        leftover = bytes(buffer[end + 4 :])
        self._buffer = bytearray()
        parts = head[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return self._refuse(
                _("not an HTTP/1 request: {line}").format(line=printable(head[0][:64])),
                _response(400, "Bad Request"),
            )
        method, target, _version = parts
        if method != "CONNECT":
            return self._refuse(
                _(
                    "{method} is not served: this proxy only tunnels (CONNECT; with curl: "
                    "--proxytunnel, or an https:// URL)"
                ).format(method=printable(method[:16])),
                _response(405, "Method Not Allowed", "Allow: CONNECT"),
            )
        address = _authority(target)
        if address is None:
            return self._refuse(
                _("CONNECT {target}: not HOST:PORT").format(target=printable(target[:300])),
                _response(400, "Bad Request"),
            )
        user = None
        if self._users is not None:
            user = self._authenticated(head[1:])
            if user is None:
                return self._refuse(
                    _("no valid Proxy-Authorization (Basic) for CONNECT {target}").format(
                        target=printable(target[:300])
                    ),
                    _response(407, "Proxy Authentication Required", _ASK_FOR_CREDENTIALS),
                )
        host, port, by_name = address
        self._done = True
        request = Request(command=CONNECT, host=host, port=port, by_name=by_name, user=user)
        return Step(request=request, leftover=leftover)

    def _refuse(self, reason: str, response: bytes) -> Step:
        self._done = True
        self._buffer = bytearray()
        return Step(send=response, refused=reason)

    def _authenticated(self, headers: list[str]) -> str | None:
        """The user a ``Proxy-Authorization: Basic`` header names with its password, or None.
        The password is compared with :func:`hmac.compare_digest`, never shown."""
        assert self._users is not None
        for line in headers:
            header, sep, value = line.partition(":")
            if not sep or header.strip().lower() != "proxy-authorization":
                continue
            scheme, _sp, token = value.strip().partition(" ")
            if scheme.lower() != "basic":
                return None
            try:
                decoded = base64.b64decode(token.strip(), validate=True)
            except (binascii.Error, ValueError):
                return None
            user, colon, password = decoded.partition(b":")
            if not colon:
                return None
            known = self._users.get(user)
            matched = hmac.compare_digest(password, known if known is not None else b"\0" * len(password))
            if known is None or not matched:
                return None
            return user.decode("utf-8", errors="replace")
        return None


def _authority(target: str) -> tuple[str, int, bool] | None:
    """``host:port`` or ``[v6]:port`` as (host, port, whether the host is a name); None when it
    is not one (no port, a port out of range, a host that is neither an IP nor a name)."""
    bracketed = target.startswith("[")
    if bracketed:
        host, sep, rest = target[1:].partition("]")
        if not sep or not rest.startswith(":"):
            return None
        port_text = rest[1:]
    else:
        host, sep, port_text = target.rpartition(":")
        if not sep:
            return None
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536 or not host:
        return None
    family = literal_family(host)
    if family is not None:
        # An IPv6 address only in brackets (RFC 9110's authority), and without a %zone: a zone
        # names an interface of the client's host, which means nothing to this proxy.
        if (family == 6) != bracketed or "%" in host:
            return None
        return host, int(port_text), False
    if bracketed:
        return None
    name = socks5.host_name(host.encode("utf-8", "surrogateescape"))
    return (name, int(port_text), True) if name is not None else None

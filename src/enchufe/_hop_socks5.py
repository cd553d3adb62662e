"""The client side of a SOCKS5 CONNECT or UDP ASSOCIATE (RFC 1928) with username/password
(RFC 1929), sans I/O, and the header of SOCKS5 UDP datagrams.

See :mod:`enchufe.hops` for how a driver uses it.  A target's name is sent as a name (ATYP 3):
the proxy resolves it, never this side.  Every read is bounded: a reply is at most 262 bytes.

Written here rather than taken from a library: python-socks does its own I/O (blocking,
asyncio, trio), which the relay's event loop cannot drive without blocking, and socksio, the
sans-I/O one, has no UDP ASSOCIATE and no HTTP CONNECT; both are client-side only, and
``enchufe socks`` needs the server side too (:mod:`enchufe._socks5_server`).  The protocol is
a few fixed-size messages.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import replace

from ._inet_text import literal_family
from ._text import printable
from .hops import Event, Handshake, Hop, NeedMore, Send, shown_answer
from .i18n import N_, _

VERSION = 5
AUTH_VERSION = 1
NO_AUTH = 0x00
USER_PASS = 0x02
NO_ACCEPTABLE = 0xFF
CONNECT = 0x01
UDP_ASSOCIATE = 0x03
#: The request as the trace and the refusals name it: the command (a protocol word) and its address.
_COMMANDS = {CONNECT: N_("CONNECT {target}"), UDP_ASSOCIATE: N_("UDP ASSOCIATE from {target}")}
ATYP_IPV4, ATYP_NAME, ATYP_IPV6 = 1, 3, 4

#: RFC 1928's reply codes in words; 2 is the proxy's own rules, 5 the target's refusal.
REPLIES = {
    1: N_("general SOCKS server failure"),
    2: N_("connection refused by the proxy's rules"),
    3: N_("network unreachable from the proxy"),
    4: N_("host unreachable from the proxy"),
    5: N_("connection refused by the target"),
    6: N_("TTL expired on the way to the target (most proxies say so when their connect timed out)"),
    7: N_("command not supported by the proxy"),
    8: N_("address type not supported by the proxy"),
}
#: The same replies when what the proxy was asked to reach is the next proxy of a chain.
NEXT_PROXY_REPLIES = {
    5: N_("connection refused by the next proxy"),
    6: N_("TTL expired on the way to the next proxy (most proxies say so when their connect timed out)"),
}
#: The replies that say the target, not the proxy, is not there (yet): worth retrying.
TARGET_DOWN = frozenset({3, 4, 5, 6})
_METHOD_NAMES = {NO_AUTH: N_("no authentication"), USER_PASS: N_("username/password"), 0x01: "GSSAPI"}
#: How the target's host goes in a request, for the trace (constants: _address runs per datagram).
_AS_IPV4, _AS_IPV6, _AS_NAME = (
    N_("an IPv4 address"),
    N_("an IPv6 address"),
    N_("a name, resolved by the proxy"),
)


class Socks5Handshake(Handshake):
    """Greeting, method reply, optional username/password, CONNECT, reply."""

    def __init__(self, hop: Hop, host: str, port: int, *, command: int = CONNECT) -> None:
        """``command`` CONNECT asks for a tunnel to ``host``:``port``; UDP_ASSOCIATE asks for a
        datagram relay for a client that sends from ``host``:``port`` (its bound address, or
        ``0.0.0.0:0``): :class:`~enchufe.hops.Established`'s ``bound`` is where the relay listens."""
        super().__init__(hop, host, port)
        self._command = command
        self._state = "method"
        self._methods = (NO_AUTH, USER_PASS) if self.hop.username is not None else (NO_AUTH,)

    def start(self) -> Send:
        offered = ", ".join(_(_METHOD_NAMES[m]) for m in self._methods)
        greeting = bytes([VERSION, len(self._methods), *self._methods])
        return Send(greeting, (_("greeting: SOCKS5, methods offered: {methods}").format(methods=offered),))

    def _step(self) -> Event:
        if self._state == "method":
            event = self._method()
        elif self._state == "auth":
            event = self._auth()
        else:
            return self._reply()
        if isinstance(event, Send) and self._buffer:
            # It cannot answer a request it has not received: whatever this is, it is not SOCKS5.
            raise self.refused(
                _("the proxy sent {size} bytes before it was asked for them").format(size=len(self._buffer))
            )
        return event

    def _waiting_for(self) -> str:
        if self._state == "method":
            return _("before choosing a method")
        if self._state == "auth":
            return _("before answering the username/password")
        return _("before its reply to {request}").format(request=self._request())

    def _request(self) -> str:
        return _(_COMMANDS[self._command]).format(target=self.target)

    def _method(self) -> Event:
        if len(self._buffer) < 2:
            return self._need(2)
        self._check_version(VERSION, "greeting")
        method = self._buffer[1]
        del self._buffer[:2]
        if method == NO_ACCEPTABLE:
            if self.hop.username is None:
                raise self.refused(
                    _(
                        "the proxy accepts no method offered (it may want a username and password: "
                        "give USER:PASS@ in the proxy URL)"
                    )
                )
            raise self.refused(_("the proxy accepts neither no authentication nor username/password"))
        if method not in self._methods:
            raise self.refused(
                _("the proxy chose method {method}, which was not offered").format(method=f"{method:#04x}")
            )
        said = _("method chosen: {method}").format(method=_(_METHOD_NAMES[method]))
        if method == USER_PASS:
            self._state = "auth"
            user = printable(self.hop.username or "")
            return Send(
                self._auth_request(),
                (said, _("username/password: user {user}, password ***").format(user=user)),
            )
        return self._connect(said)

    def _auth_request(self) -> bytes:
        user = (self.hop.username or "").encode()
        password = (self.hop.password or "").encode()
        return bytes([AUTH_VERSION, len(user)]) + user + bytes([len(password)]) + password

    def _auth(self) -> Event:
        if len(self._buffer) < 2:
            return self._need(2)
        # RFC 1929 says version 1; a few servers answer 5.  Only the status decides.
        if self._buffer[0] not in (AUTH_VERSION, VERSION):
            raise self.refused(_("not a username/password reply: {start}").format(start=_shown(self._buffer)))
        status = self._buffer[1]
        del self._buffer[:2]
        if status != 0:
            reason = _("username/password refused by the proxy (RFC 1929 status {status})").format(
                status=status
            )
            raise self.refused(reason, code=status)
        return self._connect(_("username/password accepted"))

    def _connect(self, said: str) -> Send:
        self._state = "reply"
        address, how = _address(self.host, self.port)
        request = bytes([VERSION, self._command, 0]) + address
        return Send(request, (said, f"{self._request()} ({_(how)})"))

    def _reply(self) -> Event:
        if len(self._buffer) < 2:
            return self._need(2)
        self._check_version(VERSION, "reply")
        code = self._buffer[1]
        if code != 0:
            words = _(REPLIES[code]) if code in REPLIES else _("unknown reply code")
            if code in TARGET_DOWN:
                if self.next_hop is not None:
                    if code in NEXT_PROXY_REPLIES:
                        words = _(NEXT_PROXY_REPLIES[code])
                    target = str(self.next_hop)
                else:
                    target = self.target
                words = _("{target}: {reason}").format(target=target, reason=words)
            raise self.refused(
                _("{reason} (SOCKS reply {code})").format(reason=words, code=code),
                code=code,
                target_down=code in TARGET_DOWN,
            )
        if len(self._buffer) < 4:
            return self._need(4)
        atyp = self._buffer[3]
        if atyp not in (ATYP_IPV4, ATYP_IPV6, ATYP_NAME):
            raise self.refused(_("bad SOCKS5 reply: unknown address type {type}").format(type=atyp))
        if len(self._buffer) < 5:
            return self._need(5)
        sizes = {ATYP_IPV4: 4, ATYP_IPV6: 16, ATYP_NAME: 1 + self._buffer[4]}
        total = 4 + sizes[atyp] + 2
        if len(self._buffer) < total:
            return self._need(total)
        port = int.from_bytes(self._buffer[total - 2 : total], "big")
        host = _host(atyp, bytes(self._buffer[4 : total - 2]))
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        established = self._established(
            total, (_("reply: succeeded, bound {address}").format(address=shown),)
        )
        return replace(established, bound=(host, port))

    def _need(self, size: int) -> NeedMore:
        return NeedMore(size - len(self._buffer))

    def _check_version(self, version: int, what: str) -> None:
        if self._buffer[0] != version:
            template = (
                _("not a SOCKS5 proxy: its greeting began {start}")
                if what == "greeting"
                else _("not a SOCKS5 proxy: its reply began {start}")
            )
            raise self.refused(template.format(start=_shown(self._buffer)))


def _address(host: str, port: int) -> tuple[bytes, str]:
    """ATYP, address and port as SOCKS5 sends them, and how the host went."""
    family = literal_family(host)
    if family == 4:
        address, how = bytes([ATYP_IPV4]) + socket.inet_pton(socket.AF_INET, host), _AS_IPV4
    elif family == 6:
        address, how = bytes([ATYP_IPV6]) + socket.inet_pton(socket.AF_INET6, host), _AS_IPV6
    else:
        name = host.encode("ascii", errors="replace")
        address, how = bytes([ATYP_NAME, len(name)]) + name, _AS_NAME
    return address + port.to_bytes(2, "big"), how


def _host(atyp: int, raw: bytes) -> str:
    """The host of a reply's address: an IP literal, or a name (escaped: the proxy chose it)."""
    if atyp == ATYP_IPV4:
        return str(ipaddress.IPv4Address(raw))
    if atyp == ATYP_IPV6:
        return str(ipaddress.IPv6Address(raw))
    return printable(raw[1:])


def udp_wrap(host: str, port: int, payload: bytes) -> bytes:
    """``payload`` as a datagram to the relay of a UDP association, for ``host``:``port``."""
    return b"\x00\x00\x00" + _address(host, port)[0] + payload


def udp_unwrap(datagram: bytes) -> tuple[str, int, bytes] | None:
    """A datagram from the relay as (sender's host, port, payload); ``None`` for one that is
    malformed or a fragment (FRAG is not 0: RFC 1928 lets a client drop those)."""
    if len(datagram) < 4 or datagram[:3] != b"\x00\x00\x00":
        return None
    atyp = datagram[3]
    size = {ATYP_IPV4: 4, ATYP_IPV6: 16}.get(atyp)
    if size is None:
        if atyp != ATYP_NAME or len(datagram) < 5:
            return None
        size = 1 + datagram[4]
    end = 4 + size + 2
    if len(datagram) < end:
        return None
    port = int.from_bytes(datagram[end - 2 : end], "big")
    return _host(atyp, datagram[4 : end - 2]), port, datagram[end:]


def _shown(data: bytes | bytearray) -> str:
    """The first bytes of an answer, escaped (an HTTP server's status line reads as one)."""
    text = shown_answer(data, 24)
    return _("{start} (an HTTP server?)").format(start=text) if bytes(data[:5]) == b"HTTP/" else text

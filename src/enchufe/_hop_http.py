"""The client side of HTTP CONNECT (RFC 9110, section 9.3.6) with Basic credentials, sans I/O.

See :mod:`enchufe.hops` for how a driver uses it.  The answer is read up to the end of its
header and no further: what follows belongs to the tunnel.  A status other than 2xx is refused
as soon as its line is complete (a proxy may send a page after it, or keep the connection open).
"""

from __future__ import annotations

import base64
import re

from ._text import printable
from .hops import Event, Handshake, NeedMore, Send, shown_answer
from .i18n import _

#: The most of a proxy's answer read before giving up on it: a status line and headers.
MAX_HEADER = 16 * 1024
#: The statuses that say the next step is not there (yet), not that the proxy refused.
TARGET_DOWN = frozenset({502, 503, 504})
_STATUS = re.compile(rb"HTTP/\d\.\d ([1-9]\d\d)(?: ([^\r\n]*))?\r?\n")
_PREFIX = b"HTTP/"


class HttpConnectHandshake(Handshake):
    """``CONNECT host:port HTTP/1.1``, then the proxy's status line and headers."""

    def start(self) -> Send:
        lines = [f"CONNECT {self.target} HTTP/1.1", f"Host: {self.target}"]
        said = _("request: {line}").format(line=f"CONNECT {self.target} HTTP/1.1")
        if self.hop.username is not None:
            pair = f"{self.hop.username}:{self.hop.password or ''}".encode()
            lines.append(f"Proxy-Authorization: Basic {base64.b64encode(pair).decode()}")
            said += ", " + _("Proxy-Authorization: Basic (user {user}, password ***)").format(
                user=printable(self.hop.username)
            )
        request = "".join(f"{line}\r\n" for line in lines) + "\r\n"
        # The target is an IP literal or a checked host name: ASCII.
        return Send(request.encode("ascii", errors="replace"), (said,))

    def _waiting_for(self) -> str:
        return _("before the end of its answer to CONNECT {target}").format(target=self.target)

    def _step(self) -> Event:
        data = self._buffer
        head = bytes(data[: len(_PREFIX)])
        if not _PREFIX.startswith(head):
            raise self.refused(
                _("not an HTTP proxy: it answered {start}").format(start=shown_answer(data, 80))
            )
        newline = data.find(b"\n")
        if newline < 0:
            return self._more(len(data))
        match = _STATUS.match(data, 0, newline + 1)
        if match is None:
            raise self.refused(_("bad HTTP status line: {line}").format(line=shown_answer(data, 80)))
        status = int(match.group(1))
        line = f"{status} {printable(match.group(2) or b'')}".rstrip()
        if not 200 <= status < 300:
            if status in (401, 407):  # what to try (tinyproxy refuses wrong credentials with 401)
                hint = (
                    _("give USER:PASS@ in the proxy URL")
                    if self.hop.username is None
                    else _("the proxy refused these credentials")
                )
                line = _("{problem} ({hint})").format(problem=line, hint=hint)
            raise self.refused(line, code=status, target_down=status in TARGET_DOWN)
        end = _header_end(data, newline)
        if end is None:
            return self._more(len(data))
        status_line = printable(bytes(data[:newline]).rstrip(b"\r"))
        return self._established(end, (_("reply: {line}").format(line=status_line),))

    def _more(self, held: int) -> NeedMore:
        if held >= MAX_HEADER:
            raise self.refused(_("its answer has no end within {size} bytes").format(size=MAX_HEADER))
        # The fewest bytes that could end the header: what is left of CRLF CRLF after the tail.
        for size in (3, 2, 1):
            if self._buffer.endswith(b"\r\n\r\n"[:size]):
                return NeedMore(4 - size)
        return NeedMore(1)


def _header_end(data: bytearray, newline: int) -> int | None:
    """Where the header ends (after its empty line), or ``None`` when it has not yet.  The
    status line's own line end counts: an answer without headers is ``HTTP/1.1 200 OK\\r\\n\\r\\n``."""
    ends = []
    for blank in (b"\n\r\n", b"\n\n"):
        found = data.find(blank, newline)
        if found >= 0:
            ends.append(found + len(blank))
    return min(ends) if ends else None

"""The errors enchufe raises, named by who is at fault.

::

    EnchufeError                      everything enchufe raises derives from this
    ├── UsageError                    the caller asked for something invalid (CLI exit status 2)
    │   └── AddressError              an address string that does not parse, or does not fit the role
    ├── ClosedError                   the object was already closed by this process
    ├── ProtocolError                 the peer broke a framing rule (frame too large, EOF mid-frame)
    │   └── IncompleteRead            the peer closed before the bytes asked for arrived
    └── NetworkError                  the operating system said no at run time (CLI exit status 1)
        ├── ConnectionRefused         nobody accepts at that address (ECONNREFUSED, missing socket file)
        ├── ConnectionReset           the peer reset the connection (ECONNRESET, EPIPE)
        │   └── TLSTruncated          the connection ended without TLS close_notify
        ├── TLSRefused                a TLS handshake failed, or the peer is not accepted (``reason``)
        ├── TimedOut                  no answer within the time allowed
        ├── AddressInUse              another socket already owns that address (EADDRINUSE, live socket)
        ├── PermissionDenied          EACCES / EPERM
        ├── NameResolutionError       a host name did not resolve
        ├── MessageTooLarge           a datagram too large for the socket (EMSGSIZE)
        ├── DatagramTruncated         a datagram larger than the receive buffer arrived
        └── NotASocket                a path exists and is not a socket file; enchufe never touches it

    InsecureTLSWarning                a warning (``warnings``), not an error: a TLS client connects
                                      with ``insecure``, verifying nothing

``OSError`` is translated into these at one boundary (:func:`translate`), keeping the original
as ``__cause__`` and its ``errno``.  Messages say what happened and what to try.
"""

from __future__ import annotations

import errno as _errno
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import i18n
from .i18n import N_, _

if TYPE_CHECKING:
    from .address import Address

__all__ = [
    "AddressError",
    "AddressInUse",
    "ClosedError",
    "ConnectionRefused",
    "ConnectionReset",
    "DatagramTruncated",
    "EnchufeError",
    "IncompleteRead",
    "InsecureTLSWarning",
    "MessageTooLarge",
    "NameResolutionError",
    "NetworkError",
    "NotASocket",
    "PermissionDenied",
    "ProtocolError",
    "TLSRefused",
    "TLSTruncated",
    "TimedOut",
    "UsageError",
    "doing",
    "reason",
    "translate",
]


class EnchufeError(Exception):
    """Root of every error enchufe raises."""


class InsecureTLSWarning(UserWarning):
    """A TLS client connection made with ``insecure``: the server is not verified, so anyone on
    the path can read and change the data.  Issued (:mod:`warnings`) for every such connection;
    Python's default filter shows the first.  ``warnings.simplefilter("error",
    InsecureTLSWarning)`` makes them errors, ``"ignore"`` silences them."""


class UsageError(EnchufeError, ValueError):
    """The caller asked for something that cannot work; nothing was attempted."""


class AddressError(UsageError):
    """An address that does not parse, or that does not fit how it is used.

    Raised before any socket exists.  The message names the problem and shows an accepted form.
    """


class ClosedError(EnchufeError):
    """The listener, connection or socket was closed by this process; it cannot be used again."""


class ProtocolError(EnchufeError):
    """The peer broke the rules of the framing in use."""


class IncompleteRead(ProtocolError):
    """The peer closed the connection before all the bytes asked for had arrived.

    ``partial`` holds what did arrive.
    """

    def __init__(self, message: str, partial: bytes = b"") -> None:
        super().__init__(message)
        self.partial = partial


class NetworkError(EnchufeError):
    """The operating system refused or failed an operation at run time.

    ``errno`` is the underlying error number when there is one; ``attempts`` lists the error of
    every attempt when the operation was retried (the last one is this error itself);
    ``action`` is what was being done (``"connect"``, ``"listen"``, ``"bind"``, ``"send"``,
    ``"receive"``, ``"accept"``…, or ``None``), and :attr:`retryable` whether another attempt
    may succeed.  Messages never name command-line options: a program built on the library
    adds its own hints from these attributes (the CLI says ``--retry``, ``--timeout``).
    """

    def __init__(self, message: str, *, errno: int | None = None, action: str | None = None) -> None:
        super().__init__(message)
        self.errno = errno
        self.action = action
        self.attempts: Sequence[NetworkError] = ()

    @property
    def retryable(self) -> bool:
        """Whether trying again later may succeed: nobody accepted yet (refused, no socket file
        yet, no route for now) or no answer in time.  ``connect(retries=N)`` retries these."""
        return isinstance(self, ConnectionRefused | TimedOut)


class ConnectionRefused(NetworkError):
    """Nobody accepts at that address: ECONNREFUSED, or a unix socket file that does not exist."""


class ConnectionReset(NetworkError):
    """The peer reset the connection (ECONNRESET), or it is gone for writing (EPIPE)."""


class TLSTruncated(ConnectionReset):
    """A TLS connection ended without close_notify: what arrived may be incomplete (a peer, or
    something in the middle, cut the stream).  Never reported as a clean EOF."""

    def __init__(self, message: str) -> None:
        super().__init__(message, action="receive")


class TLSRefused(NetworkError):
    """A TLS handshake failed, or finished with a peer this side does not accept.

    ``reason`` is a short key (``untrusted``, ``self-signed``, ``name-mismatch``, ``expired``,
    ``not-yet-valid``, ``pin-mismatch``, ``client-certificate-missing``,
    ``client-certificate-refused``, ``not-allowed``, ``protocol-version``, ``alpn``, ``sni``
    (the server serves no such name), ``not-tls``, ``closed``, ``handshake``; ``protocol`` for a
    TLS error once the handshake was done, such as a record that fails its check); ``str()`` is
    the line a user reads.  Not worth retrying as is.
    ``after_handshake`` is true for a refusal this side made once OpenSSL had finished the
    handshake (a pin; ALPN; ``allow-san``/``allow-cn`` where OpenSSL's verification callback
    cannot be reached): the peer was told by no alert.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message, action="handshake")
        self.reason = reason
        self.after_handshake = False


class TimedOut(NetworkError):
    """The operation did not complete within the time allowed."""


class AddressInUse(NetworkError):
    """Another socket is bound to that address, or a live server owns that socket file."""


class PermissionDenied(NetworkError):
    """The operating system denied access (EACCES, EPERM)."""


class NameResolutionError(NetworkError):
    """A host name could not be resolved."""


class MessageTooLarge(NetworkError):
    """A datagram is larger than the socket can send in one piece (EMSGSIZE)."""


class NotASocket(NetworkError):
    """A file system path is in the way and is not a socket file; it is left untouched."""


class DatagramTruncated(NetworkError):
    """A datagram arrived that is larger than the receive buffer; it was cut by the kernel.

    The datagram is consumed.  ``data`` holds the part that fitted, ``size`` the datagram's real
    size and ``sender`` who sent it, so the caller can count, log or retry with a larger buffer.
    """

    def __init__(self, message: str, *, data: bytes, size: int, sender: Address | None) -> None:
        super().__init__(message, errno=None)
        self.data = data
        self.size = size
        self.sender = sender


# errno → (error class, what to try).  The hint completes "… : <strerror>; <hint>": it says what
# the reason does not (why, or what to try), never the reason again in other words.  Hints never
# name a command-line option: the library serves every command (and programs without a CLI);
# each command adds the flag that helps at its own error boundary.
_BY_ERRNO: dict[int, tuple[type[NetworkError], str]] = {
    _errno.ECONNREFUSED: (
        ConnectionRefused,
        N_("is a server listening there?"),
    ),
    _errno.ENOENT: (
        ConnectionRefused,
        N_("no socket file there yet: start the server first"),
    ),
    _errno.ECONNRESET: (
        ConnectionReset,
        N_("the peer closed with our data unread, or its program stopped; its log may say why"),
    ),
    _errno.EPIPE: (ConnectionReset, N_("the peer closed the connection")),
    _errno.ECONNABORTED: (ConnectionReset, N_("this machine gave up on the connection; try again")),
    _errno.ETIMEDOUT: (TimedOut, N_("the host did not answer; check the address")),
    _errno.EADDRINUSE: (AddressInUse, N_("another socket is bound there; pick another port or path")),
    _errno.EADDRNOTAVAIL: (AddressInUse, N_("that address is not available on this host")),
    _errno.EACCES: (PermissionDenied, N_("check the permissions")),  # made precise by _access_hint
    _errno.EPERM: (PermissionDenied, N_("a firewall rule or this user's privileges forbid it")),
    _errno.EMSGSIZE: (MessageTooLarge, N_("send less per datagram")),
    _errno.ENETUNREACH: (
        ConnectionRefused,
        N_("check the address, and this machine's routes and network link"),
    ),
    _errno.EHOSTUNREACH: (
        ConnectionRefused,
        N_("the host may be down, or a firewall rejects it; check the address"),
    ),
    _errno.ENOTSOCK: (NotASocket, N_("that path is not a socket")),
}

#: The system's reasons (glibc's strerror and gai_strerror, lower-cased) that enchufe's users
#: meet, marked so that :func:`reason` gives them in the user's language.  Python never sets
#: LC_MESSAGES, so the C library speaks English; a reason not listed here stays English.
_REASONS = (
    N_("connection refused"),
    N_("no such file or directory"),
    N_("connection reset by peer"),
    N_("broken pipe"),
    N_("software caused connection abort"),
    N_("connection timed out"),
    N_("address already in use"),
    N_("cannot assign requested address"),
    N_("permission denied"),
    N_("operation not permitted"),
    N_("message too long"),
    N_("network is unreachable"),
    N_("no route to host"),
    N_("socket operation on non-socket"),
    N_("transport endpoint is not connected"),
    N_("too many open files"),
    N_("address family not supported by protocol"),
    N_("invalid argument"),
    N_("not a directory"),
    N_("is a directory"),
    N_("read-only file system"),
    N_("no buffer space available"),
    N_("cannot allocate memory"),
    N_("exec format error"),
    N_("name or service not known"),
    N_("temporary failure in name resolution"),
    N_("no address associated with hostname"),
    N_("servname not supported for ai_socktype"),
    N_("address family for hostname not supported"),
)

#: What enchufe was doing when the system said no, as the callers of :func:`translate` write it
#: (in English: its first word is the action, its last the address), each phrase translated
#: whole; the first that matches is used, so a longer phrase comes before its prefix.
_DOING = (
    N_("connect to {target}"),
    N_("connect"),
    N_("listen on {target}"),
    N_("bind the source address {target}"),
    N_("bind {target}"),
    N_("send to the proxy {target}"),
    N_("send to {target}"),
    N_("receive from the proxy {target}"),
    N_("receive from {target}"),
    N_("accept on {target}"),
    N_("shut down the write side towards {target}"),
    N_("send a {size}-byte datagram to {target}"),
    N_("receive a datagram from {target}"),
    N_("receive a datagram on {target}"),
    N_("complete the TLS handshake with {target}"),
    N_("complete the handshake with the proxy"),
    N_("use the proxy's UDP relay"),
    N_("open a socket"),
    N_("reach an echo server at {target}"),
    N_("read a PROXY header"),
    N_("finish sending to {target}"),
    N_("close the connection to {target}"),
    N_("exchange datagrams with {target}"),
    N_("send datagrams to {target}"),
    N_("receive echoes from {target}"),
)


def _phrase_pattern(template: str) -> re.Pattern[str]:
    """``connect to {target}`` → a pattern that matches ``connect to tcp://…`` and names the field."""
    parts = re.split(r"\{(\w+)\}", template)
    return re.compile(
        "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>.+)" for i, part in enumerate(parts))
    )


_DOING_PATTERNS = tuple((_phrase_pattern(template), template) for template in _DOING)


def doing(what: str) -> str:
    """``what`` (an English phrase such as ``"connect to tcp://127.0.0.1:9"``) in the current
    language; itself when it is not one of the phrases enchufe uses."""
    if i18n.language() == "en":
        return what
    for pattern, template in _DOING_PATTERNS:
        found = pattern.fullmatch(what)
        if found:
            return _(template).format(**found.groupdict())
    return what


def reason(exc: OSError, *, lower: bool = True) -> str:
    """The system's reason for ``exc`` (lower-cased when ``lower``), in the current language when
    it is one of the reasons enchufe's catalog knows, else as the C library said it."""
    text = exc.strerror or str(exc) if exc.errno is not None else str(exc)
    key = text.lower()
    translated = _(key) if key else key
    if translated != key:
        return translated
    return key if lower and exc.errno is not None else text


def _access_hint(what: str) -> str:
    """What EACCES means depends on the address: a unix socket file's (or its folder's)
    permissions, a privileged port, or a datagram to a broadcast address."""
    target = what.rsplit(" ", 1)[-1]
    if target.startswith(("unix", "tls+unix")):
        return _("check the permissions of the socket file and of its folder")
    if what.startswith(("bind", "listen")):
        return _("ports below 1024 need root (or CAP_NET_BIND_SERVICE): use a port above 1023")
    if target.startswith("udp"):
        return _("a datagram to a broadcast address needs SO_BROADCAST, not set here (or a firewall said no)")
    return _("a firewall rule or security policy refused it")


def translate(exc: OSError, what: str) -> NetworkError:
    """Turn an ``OSError`` raised while doing ``what`` into the matching :class:`NetworkError`.

    ``what`` is an English phrase such as ``"connect to tcp://127.0.0.1:9"`` (its first word
    becomes ``action``; :func:`doing` translates it); the message becomes
    ``"cannot connect to tcp://127.0.0.1:9: connection refused; is a server listening there?"``,
    in the current language.  The caller raises the result ``from exc``.
    """
    if isinstance(exc, NetworkError):  # pragma: no cover - defensive
        return exc
    action = what.split(" ", 1)[0] or None
    if isinstance(exc, TimeoutError) and exc.errno is None:
        message = _("cannot {what}: timed out").format(what=doing(what))
        err: NetworkError = TimedOut(message, errno=_errno.ETIMEDOUT, action=action)
        return err
    code = exc.errno
    cls, hint = _BY_ERRNO.get(code or -1, (NetworkError, ""))
    if code == _errno.ENOENT and not what.startswith("connect"):
        cls, hint = NetworkError, _("does its folder exist?")
    elif code == _errno.ECONNREFUSED and not what.startswith("connect"):
        hint = _("nothing is listening there (the port answered 'unreachable')")
    elif code == _errno.EACCES:
        hint = _access_hint(what)
    elif hint:
        hint = _(hint)
    message = _("cannot {what}: {reason}").format(what=doing(what), reason=reason(exc))
    if hint:
        message += f"; {hint}"
    return cls(message, errno=code, action=action)

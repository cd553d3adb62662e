"""enchufe: stream and datagram sockets for UNIX, IPv4 and IPv6, with one address syntax.

Six kinds, two shapes::

    import enchufe

    with enchufe.listen("tcp://127.0.0.1:0") as listener:       # tcp, tcp4, tcp6, unix
        print(listener.address)                                 # the real port
        conn = enchufe.connect(listener.address)                 # a Connection
    sock = enchufe.bind_datagram("udp://127.0.0.1:0")            # udp, udp4, udp6, unixgram
    data, sender = sock.recvfrom()

Everything raised derives from :class:`EnchufeError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_names

if TYPE_CHECKING:
    from . import trace
    from ._calls import Credentials
    from .address import (
        Address,
        ExecAddress,
        InetAddress,
        Kind,
        StdioAddress,
        UnixAddress,
        parse,
    )
    from .errors import (
        AddressError,
        AddressInUse,
        ClosedError,
        ConnectionRefused,
        ConnectionReset,
        DatagramTruncated,
        EnchufeError,
        IncompleteRead,
        InsecureTLSWarning,
        MessageTooLarge,
        NameResolutionError,
        NetworkError,
        NotASocket,
        PermissionDenied,
        ProtocolError,
        TimedOut,
        UsageError,
    )
    from .framing import Framer
    from .sync import (
        Connection,
        DatagramSocket,
        Listener,
        bind_datagram,
        connect,
        connect_datagram,
        listen,
    )

#: Public name → the module that defines it, imported on first use (PEP 562): a program (each
#: `enchufe` command first) loads only the parts it uses, not every endpoint, TLS and proxies.
_LAZY: dict[str, str] = {
    # the public submodules that `import enchufe` loaded when it loaded everything: code that
    # reads enchufe.sync.… or enchufe.address.… after a bare `import enchufe` keeps working
    **{name: f".{name}" for name in ("address", "errors", "framing", "hops", "i18n", "sessions")},
    **{name: f".{name}" for name in ("sync", "tlsinfo", "tlsparams", "trace")},
    "Credentials": "._calls",
    "Framer": ".framing",
    "Address": ".address",
    "ExecAddress": ".address",
    "InetAddress": ".address",
    "Kind": ".address",
    "StdioAddress": ".address",
    "UnixAddress": ".address",
    "parse": ".address",
    "AddressError": ".errors",
    "AddressInUse": ".errors",
    "ClosedError": ".errors",
    "ConnectionRefused": ".errors",
    "ConnectionReset": ".errors",
    "DatagramTruncated": ".errors",
    "EnchufeError": ".errors",
    "IncompleteRead": ".errors",
    "InsecureTLSWarning": ".errors",
    "MessageTooLarge": ".errors",
    "NameResolutionError": ".errors",
    "NetworkError": ".errors",
    "NotASocket": ".errors",
    "PermissionDenied": ".errors",
    "ProtocolError": ".errors",
    "TimedOut": ".errors",
    "UsageError": ".errors",
    "Connection": ".sync",
    "DatagramSocket": ".sync",
    "Listener": ".sync",
    "bind_datagram": ".sync",
    "connect": ".sync",
    "connect_datagram": ".sync",
    "listen": ".sync",
}

__version__ = "0.1.0"

__all__ = [
    "Address",
    "AddressError",
    "AddressInUse",
    "ClosedError",
    "Connection",
    "ConnectionRefused",
    "ConnectionReset",
    "Credentials",
    "DatagramSocket",
    "DatagramTruncated",
    "EnchufeError",
    "ExecAddress",
    "Framer",
    "IncompleteRead",
    "InetAddress",
    "InsecureTLSWarning",
    "Kind",
    "Listener",
    "MessageTooLarge",
    "NameResolutionError",
    "NetworkError",
    "NotASocket",
    "PermissionDenied",
    "ProtocolError",
    "StdioAddress",
    "TimedOut",
    "UnixAddress",
    "UsageError",
    "__version__",
    "bind_datagram",
    "connect",
    "connect_datagram",
    "listen",
    "parse",
    "trace",
]


__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)

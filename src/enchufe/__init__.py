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

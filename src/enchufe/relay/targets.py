"""The relay's TARGET: the concrete addresses to open for it, resolved at most every so often.

::

    resolver = TargetResolver(InetAddress(...))   # or UnixAddress
    resolver.targets()        # [Target(family, sockaddr), …]: try in order; cached for a while
    resolver_address(resolver)                    # the address it resolves (asserts it has one)

Resolution blocks the event loop, so it is not done per connection: a host name is resolved
again only after :data:`RESOLVE_TTL` seconds, and numeric or unix targets only once.  Every
relay session (stream, framed, datagram) takes its addresses from here.
"""

from __future__ import annotations

import socket
import time

from .. import _resolve
from .._resolve import Target
from ..address import Address, SocketAddress, UnixAddress

__all__ = ["RESOLVE_TTL", "Target", "TargetResolver", "resolver_address"]

#: Seconds a resolved host name is reused before resolving it again (resolution blocks the loop,
#: so it is not done per connection).
RESOLVE_TTL = 30.0


class TargetResolver:
    """The concrete addresses to connect to for TARGET, resolved at most every :data:`RESOLVE_TTL`."""

    def __init__(self, address: SocketAddress) -> None:
        self.address = address
        self._targets: list[Target] = []
        self._expires = 0.0
        self._static = isinstance(address, UnixAddress) or address.family is not None

    def targets(self) -> list[Target]:
        """Raises NameResolutionError (or AddressError for a target no client can reach)."""
        if self._targets and (self._static or time.monotonic() < self._expires):
            return self._targets
        address = self.address
        if isinstance(address, UnixAddress):
            self._targets = [Target(socket.AF_UNIX, address.sockaddr)]
        else:
            self._targets = _resolve.resolve(address, passive=False)
            self._expires = time.monotonic() + RESOLVE_TTL
        return self._targets


def resolver_address(resolver: TargetResolver | None) -> Address:
    """The address ``resolver`` resolves: a relay whose target is a socket always has one."""
    assert resolver is not None, "a socket target needs a resolver"
    return resolver.address

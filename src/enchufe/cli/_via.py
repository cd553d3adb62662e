"""``--via URL`` (connect, send, check): proxy hops before the target, first hop first.

Only click and enchufe.i18n are imported here, so that ``--help`` stays fast; the hops are
parsed when a command runs (:func:`parse_via`), before any socket exists, so that a bad URL exits 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import click

from ..i18n import _

if TYPE_CHECKING:
    from ..address import Address
    from ..hops import Hop

F = TypeVar("F", bound=Callable[..., object])

HELP = (
    "Go through this proxy (repeat for a chain, first hop first): socks5://[USER:PASS@]HOST:PORT "
    "(SOCKS5; the proxy resolves the target's name) or http://[USER:PASS@]HOST:PORT (HTTP CONNECT). "
    "TLS runs end to end through the tunnel; connect and send carry udp:// datagrams through one "
    "socks5:// proxy (UDP ASSOCIATE)."
)


#: The relay's: a tunnel per client, to its TARGET.
RELAY_HELP = (
    "Reach TARGET through this proxy (repeat for a chain, first hop first): "
    "socks5://[USER:PASS@]HOST:PORT (SOCKS5; the proxy resolves TARGET's name) or "
    "http://[USER:PASS@]HOST:PORT (HTTP CONNECT).  A tunnel per client, opened within "
    "--connect-timeout; a tls:// TARGET's handshake runs through it (SNI: TARGET's name).  "
    "A udp:// TARGET of a datagram LISTEN: one socks5:// proxy, a UDP association per sender."
)


def via_option(f: F, text: str = HELP) -> F:
    option = click.option("--via", "via", metavar="URL", multiple=True, help=text)
    return option(f)


def relay_via_option(f: F) -> F:
    return via_option(f, RELAY_HELP)


def parse_via(texts: Sequence[str]) -> tuple[Hop, ...]:
    """The hops of ``--via`` options; a bad URL is an AddressError naming ``--via`` (exit 2)."""
    if not texts:
        return ()
    from ..errors import AddressError
    from ..hops import parse_hop

    hops = []
    for text in texts:
        try:
            hops.append(parse_hop(text))
        except AddressError as exc:
            raise AddressError(_("--via {problem}").format(problem=exc)) from None
    return tuple(hops)


def check_via_target(target: Address, hops: Sequence[Hop], *, command: str = "connect") -> None:
    """Refuse (exit 2) a target that no tunnel reaches (unix sockets…), and a UDP check through
    a proxy: the proxy, not this host, would hear the target's refusal (ICMP port unreachable),
    so such a check could only ever pass.  connect and send take udp:// targets (a SOCKS5 UDP
    association)."""
    if not hops:
        return
    from ..errors import AddressError
    from ..hops import check_target

    check_target(target, hops)
    if not target.is_stream and command == "check":
        raise AddressError(
            _(
                "{target}: check --via takes stream targets (tcp://, tls://): through a proxy a UDP "
                "port's refusal reaches the proxy, not this host, so the check could not fail "
                "(via {hops}); enchufe send --wait-reply asks for an answer instead"
            ).format(target=target, hops=", ".join(str(hop) for hop in hops))
        )


def shown(hops: Sequence[Hop]) -> str:
    """`` via socks5://…, http://…`` for the lines that name a target (passwords masked)."""
    if not hops:
        return ""

    return " " + _("via {hops}").format(hops=", ".join(str(hop) for hop in hops))

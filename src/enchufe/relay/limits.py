"""Who may use the relay and how many at once: access rules (pure) and the file-descriptor budget.

Access rules have no I/O: they take a peer's IP address or unix credentials and say whether it
may pass, so they are unit-tested as plain functions.

* **IP rules** (``--allow CIDR`` / ``--deny CIDR``): a peer matching any ``--deny`` is refused;
  otherwise, if any ``--allow`` is given, the peer must match one.  Peers and rules are both
  judged as users think of them: an IPv4-mapped IPv6 address (``::ffff:127.0.0.1``, how a
  dual-stack listener sees an IPv4 client) is the IPv4 address it carries, whether it is the
  peer or the rule.  So ``--deny ::ffff:127.0.0.1`` refuses 127.0.0.1 on an IPv4 listener as on
  a dual-stack one, and a dual-stack listener cannot be used to slip past an IPv4 rule.  An IPv6
  rule that is not IPv4-mapped (``::/0``, ``2001:db8::/32``) judges IPv6 peers only.
* **Unix credentials** (``--allow-uid`` / ``--allow-gid``): when any is given, the peer's uid
  (as SO_PEERCRED reports it) must be one of the uids, or its gid one of the gids.  A uid or gid
  is written in ASCII digits (other scripts' digits are not numbers here) or as the name of a
  user or group that exists.

The descriptor budget: every relayed connection holds two sockets; a connection moving bytes
also borrows up to two pipes (four descriptors) from the pool, and falls back to copying through
a small buffer when no descriptor is left, so the budget is counted in sockets.
"""

from __future__ import annotations

import contextlib
import grp
import pwd
import resource
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .. import _networks
from .._networks import Network, matching, peer_ip
from .._text import printable
from ..errors import UsageError
from ..i18n import _

__all__ = [
    "AccessRules",
    "FdBudget",
    "Network",
    "connection_budget",
    "fd_budget",
    "parse_gid",
    "parse_network",
    "parse_uid",
    "raise_fd_limit",
]

#: Descriptors kept out of the connection budget: stdio, the epoll and wake-up descriptors, the
#: listener, the spare descriptor kept for EMFILE, the idle pipes of the pool (see
#: ``pump.MAX_IDLE_PIPES``) and some slack for the interpreter's own files.
RESERVED_FDS = 64 + 2 * 64

#: The descriptor limit a privileged relay raises itself to, when the hard limit is lower: room
#: for 30,000+ connections, far below fs.nr_open (1,048,576 by default).
WANTED_NOFILE = 65536

#: The largest uid or gid: uid_t is 32 bits, and (uid_t)-1 means "no id" to the kernel.
MAX_ID = 2**32 - 2


def parse_network(text: str, option: str = "--allow") -> Network:
    """``"10.0.0.0/8"``, ``"::1"``, ``"192.168.1.7"`` → a network; UsageError with an example.

    An IPv4-mapped network (``::ffff:10.0.0.0/104``) comes back as the IPv4 network it covers
    (``10.0.0.0/8``): that is how peers are judged (see the module's docstring).
    """
    return _networks.parse_network(text, option)


def _parse_id(text: str, option: str, what: str, lookup: Callable[[str], int]) -> int:
    """A uid or gid: ASCII digits in range, or the name of a user or group that exists."""
    # str.isdigit() is true for "٣" and "³" too: only ASCII digits make a number here.
    if text.isascii() and text.isdigit():
        value = int(text)
        if value > MAX_ID:
            raise UsageError(
                _("{option} {value}: out of range; a numeric {what} is from 0 to {limit}").format(
                    option=option, value=text, what=what, limit=MAX_ID
                )
            )
        return value
    try:
        return lookup(text)
    except (KeyError, ValueError):  # ValueError: a NUL in the name
        if what == "uid":
            line = _(
                "{option} '{name}': no such user; give a user name that exists or "
                "a numeric {what} in ASCII digits (0 to {limit})"
            )
        else:
            line = _(
                "{option} '{name}': no such group; give a group name that exists or "
                "a numeric {what} in ASCII digits (0 to {limit})"
            )
        raise UsageError(line.format(option=option, name=printable(text), what=what, limit=MAX_ID)) from None


def parse_uid(text: str) -> int:
    """A uid from ASCII digits or a user name; UsageError otherwise."""
    return _parse_id(text, "--allow-uid", "uid", lambda name: pwd.getpwnam(name).pw_uid)


def parse_gid(text: str) -> int:
    """A gid from ASCII digits or a group name; UsageError otherwise."""
    return _parse_id(text, "--allow-gid", "gid", lambda name: grp.getgrnam(name).gr_gid)


@dataclass(frozen=True)
class AccessRules:
    """Who may connect.  Empty rules let everyone in."""

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    allow_uids: frozenset[int] = field(default_factory=frozenset)
    allow_gids: frozenset[int] = field(default_factory=frozenset)
    #: whether any IP rule or any uid/gid rule is given: plain fields, not properties, since
    #: the relay looks at them for every client it accepts
    filters_ip: bool = field(init=False, repr=False, compare=False)
    filters_credentials: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters_ip", bool(self.allow or self.deny))
        object.__setattr__(self, "filters_credentials", bool(self.allow_uids or self.allow_gids))

    @classmethod
    def parse(
        cls,
        *,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        allow_uids: Iterable[str] = (),
        allow_gids: Iterable[str] = (),
    ) -> AccessRules:
        """Rules from option strings; UsageError names the bad one."""
        return cls(
            allow=tuple(parse_network(t, "--allow") for t in allow),
            deny=tuple(parse_network(t, "--deny") for t in deny),
            allow_uids=frozenset(parse_uid(t) for t in allow_uids),
            allow_gids=frozenset(parse_gid(t) for t in allow_gids),
        )

    def check_ip(self, host: str) -> str | None:
        """``None`` if a peer at ``host`` may pass, else the reason it may not."""
        if not self.filters_ip:
            return None
        try:
            addr = peer_ip(host)
        except ValueError:
            return _("peer address '{host}' is not an IP address").format(host=printable(host))
        denied = matching(self.deny, addr)
        if denied is not None:
            return _("matches --deny {network}").format(network=denied)
        if self.allow and matching(self.allow, addr) is None:
            return _("matches no --allow rule")
        return None

    def check_credentials(self, uid: int, gid: int) -> str | None:
        """``None`` if a unix peer running as ``uid``/``gid`` may pass, else the reason."""
        if not self.filters_credentials:
            return None
        if uid in self.allow_uids or gid in self.allow_gids:
            return None
        return _("uid {uid} / gid {gid} is not allowed by --allow-uid/--allow-gid").format(uid=uid, gid=gid)


def connection_budget(nofile: int) -> int:
    """How many relayed connections ``nofile`` descriptors hold (two sockets each), after the
    reserve (at most half of a small limit)."""
    return max(1, (nofile - min(RESERVED_FDS, nofile // 2)) // 2)


def raise_fd_limit(wanted: int = WANTED_NOFILE) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit, and both to ``wanted`` where allowed
    (raising the hard limit needs CAP_SYS_RESOURCE).  Returns the (soft, hard) limits in force."""
    infinity = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nr_open = 1 << 20
    with contextlib.suppress(OSError, ValueError), open("/proc/sys/fs/nr_open") as f:
        nr_open = int(f.read())
    ceiling = nr_open if hard == infinity else hard
    target = min(max(ceiling, wanted), nr_open)
    if soft == infinity or soft >= target:
        return soft, hard
    attempts = [(target, hard if hard == infinity or hard >= target else target)]
    if ceiling > soft:
        attempts.append((ceiling, hard))  # not allowed to raise the hard limit: up to it
    for new_soft, new_hard in attempts:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, new_hard))
        except (ValueError, OSError):
            continue
        break
    return resource.getrlimit(resource.RLIMIT_NOFILE)


@dataclass(frozen=True)
class FdBudget:
    """The descriptor limit a relay runs with and the connections it makes room for."""

    #: RLIMIT_NOFILE's soft and hard limits in force
    nofile: int
    hard: int

    @property
    def connections(self) -> int:
        return connection_budget(self.nofile)

    def line(self, max_conns: int) -> str:
        """The line that says the budget (and why it is no higher, when the hard limit caps it)."""
        if self.nofile == self.hard and self.nofile < WANTED_NOFILE:
            line = _(
                "fd budget: {nofile} descriptors (the hard limit; raising it needs CAP_SYS_RESOURCE "
                "or a higher ulimit -Hn): room for {connections} relayed connections (2 sockets each; "
                "pipes are borrowed only while bytes are in flight); max-conns {max_conns}"
            )
        else:
            line = _(
                "fd budget: {nofile} descriptors: room for {connections} relayed connections "
                "(2 sockets each; pipes are borrowed only while bytes are in flight); max-conns {max_conns}"
            )
        return line.format(nofile=self.nofile, connections=self.connections, max_conns=max_conns)

    def excess(self, max_conns: int) -> str | None:
        """What to warn about when ``max_conns`` asks for more than the budget holds, else None."""
        if max_conns <= self.connections:
            return None
        return _(
            "--max-conns {max_conns} exceeds the fd budget ({nofile} descriptors: about "
            "{connections} connections); clients past that are turned away"
        ).format(max_conns=max_conns, nofile=self.nofile, connections=self.connections)


def fd_budget(*, raise_limit: bool) -> FdBudget:
    """The budget under the descriptor limit, raised first (:func:`raise_fd_limit`) if asked."""
    if raise_limit:
        return FdBudget(*raise_fd_limit())
    return FdBudget(*resource.getrlimit(resource.RLIMIT_NOFILE))

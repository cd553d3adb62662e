"""What a SOCKS server asks of its clients, pure: credentials, and where they may go
(``--allow-dest``/``--deny-dest``).

A rule is ``CIDR``, ``IP``, ``HOST`` or ``*.DOMAIN``, each with an optional ``:PORT``
(``10.0.0.0/8``, ``[fd00::]/8:443``, ``db.internal:5432``, ``*.example.com``).  A request is
judged twice: on the name the client asked for (name rules), and on every address that name
resolved to (network rules), so that a name cannot smuggle a denied address in::

    rules = DestRules.parse(allow=["*.example.com"], deny=["10.0.0.0/8", "metadata.internal"])
    rules.check_name("db.example.com", 5432)      # None (it may go on), or why not
    rules.check_address(ip, 5432, name_allowed)   # None, or why not (per resolved address)

``--deny-dest`` wins over ``--allow-dest``; with any ``--allow-dest`` a destination must match
one, by its name or by its address.  Names compare without case or a trailing dot;
``*.example.com`` matches every name under example.com (not example.com itself).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ._inet_text import literal_family
from ._networks import IP, Network, destination_ip, nat64_ipv4, parse_network, peer_ip
from ._text import printable
from .errors import UsageError
from .i18n import N_, _

__all__ = ["DEFAULT_HANDSHAKE_TIMEOUT", "DestRule", "DestRules", "SocksPolicy", "parse_user", "parse_users"]

_ACCEPTED = N_(
    "CIDR, IP, HOST or *.DOMAIN, each with an optional :PORT (e.g. 10.0.0.0/8, [::1]:22, example.com:443)"
)


@dataclass(frozen=True)
class DestRule:
    """One rule: a network or a name (``*.`` prefix: any name under it), and a port or any."""

    text: str
    network: Network | None = None
    name: str | None = None
    port: int | None = None

    def matches_name(self, name: str, port: int) -> bool:
        if self.name is None or (self.port is not None and self.port != port):
            return False
        if self.name.startswith("*."):
            return name.endswith(self.name[1:])
        return name == self.name

    def matches_address(self, ip: IP, port: int) -> bool:
        if self.network is None or (self.port is not None and self.port != port):
            return False
        return ip.version == self.network.version and ip in self.network


def _normal(name: str) -> str:
    return name.lower().rstrip(".")


def parse_rule(text: str, option: str) -> DestRule:
    """One rule (see the module); UsageError naming ``option`` and the accepted forms."""
    body, port = _split_port(text, option)
    bare = body.replace("[", "").replace("]", "")
    if literal_family(bare.partition("/")[0]) is not None:
        return DestRule(text, network=parse_network(bare, option), port=port)
    name = _normal(body)
    labels = name.removeprefix("*.").split(".")
    if (
        not name
        or "/" in name
        or not all(
            label and all(ch.isalnum() or ch in "-_" for ch in label) and label.isascii() for label in labels
        )
    ):
        raise UsageError(_not_a_rule(option, text))
    return DestRule(text, name=name, port=port)


def _not_a_rule(option: str, text: str) -> str:
    return _("{option} '{rule}': not a destination rule; write {accepted}").format(
        option=option, rule=printable(text), accepted=_(_ACCEPTED)
    )


def _split_port(text: str, option: str) -> tuple[str, int | None]:
    """``HOST[:PORT]``: a bare IPv6 network has no port (write ``[fd00::]/8:443`` for one)."""
    text = text.strip()
    if text.startswith("["):
        close = text.find("]")
        head, rest = text[: close + 1], text[close + 1 :]
        if "/" in rest.partition(":")[0]:  # [fd00::]/8:443
            prefix, _colon, after = rest.partition(":")
            head, rest = head + prefix, (":" + after) if after else ""
        if not rest:
            return head, None
        if not rest.startswith(":"):
            raise UsageError(_not_a_rule(option, text))
        return head, _port(rest[1:], text, option)
    if text.count(":") != 1:
        return text, None
    head, _colon, port = text.partition(":")
    return head, _port(port, text, option)


def _port(text: str, rule: str, option: str) -> int:
    if text.isascii() and text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    raise UsageError(
        _("{option} '{rule}': the port must be from 1 to 65535, not '{port}'").format(
            option=option, rule=printable(rule), port=printable(text)
        )
    )


@dataclass(frozen=True)
class DestRules:
    """The ``--allow-dest`` and ``--deny-dest`` rules (see the module)."""

    allow: tuple[DestRule, ...] = ()
    deny: tuple[DestRule, ...] = ()

    @classmethod
    def parse(cls, *, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> DestRules:
        return cls(
            tuple(parse_rule(text, "--allow-dest") for text in allow),
            tuple(parse_rule(text, "--deny-dest") for text in deny),
        )

    def __bool__(self) -> bool:
        return bool(self.allow or self.deny)

    def check_name(self, name: str, port: int) -> tuple[str | None, bool]:
        """A name the client asked for: (why it is denied or ``None``, whether an allow rule
        named it, which lets its addresses through)."""
        name = _normal(name)
        for rule in self.deny:
            if rule.matches_name(name, port):
                return f"--deny-dest {printable(rule.text)}", False
        return None, any(rule.matches_name(name, port) for rule in self.allow)

    def check_address(self, host: str, port: int, name_allowed: bool = False) -> str | None:
        """An address the request would connect to (an IP literal): why not, or ``None``.  An
        unspecified one (``0.0.0.0``, ``::``) is judged as the loopback address it reaches."""
        try:
            asked, ip = peer_ip(host), destination_ip(host)
        except ValueError:
            return _("{host} is not an IP address").format(host=printable(host))
        # A NAT64 address is judged as the IPv4 address it reaches too (either form matches).
        embedded = nat64_ipv4(ip)
        judged = (ip,) if embedded is None else (ip, embedded)
        if asked != ip or embedded is not None:
            # TRANSLATORS: an address a client asked for (0.0.0.0, 64:ff9b::a00:1), and the one it reaches.
            shown = _("{asked}, that is {ip}").format(asked=asked, ip=embedded or ip)
        else:
            shown = str(ip)
        for rule in self.deny:
            if any(rule.matches_address(one, port) for one in judged):
                return f"--deny-dest {printable(rule.text)} ({shown})"
        if (
            self.allow
            and not name_allowed
            and not any(rule.matches_address(one, port) for rule in self.allow for one in judged)
        ):
            return _("no --allow-dest matches {ip} port {port}").format(ip=shown, port=port)
        return None


#: Seconds a SOCKS client has for its whole handshake (greeting, credentials, request): a client
#: that trickles bytes holds its slot until then, and is cut.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0

#: RFC 1929 gives a username and a password one length byte each.
MAX_CREDENTIAL = 255


@dataclass(frozen=True)
class SocksPolicy:
    """What ``enchufe socks`` asks of its clients: credentials (``users``: name → password,
    ``None`` for no authentication), where they may go, and how long their handshake may take."""

    users: dict[bytes, bytes] | None = None
    rules: DestRules = DestRules()
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT


def parse_user(text: str, origin: str) -> tuple[bytes, bytes]:
    """``USER:PASS`` → (user, password) as bytes; UsageError naming ``origin`` (never the
    password) when it is not one."""
    user, colon, password = text.partition(":")
    raw_user, raw_password = user.encode(), password.encode()
    if not colon or not 1 <= len(raw_user) <= MAX_CREDENTIAL or not 1 <= len(raw_password) <= MAX_CREDENTIAL:
        raise UsageError(
            _("{origin}: write USER:PASS, each 1 to {most} bytes (RFC 1929), not '{given}'").format(
                origin=origin, most=MAX_CREDENTIAL, given=printable(user) + (":***" if colon else "")
            )
        )
    return raw_user, raw_password


def parse_users(lines: Iterable[str], origin: str) -> dict[bytes, bytes]:
    """An ``--auth-file``'s lines: ``USER:PASS`` each; blank lines and ``#`` comments skipped."""
    users: dict[bytes, bytes] = {}
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, password = parse_user(line, _("{file} line {number}").format(file=origin, number=number))
        users[user] = password
    if not users:
        raise UsageError(_("{origin}: no USER:PASS line in it; write one user a line").format(origin=origin))
    return users

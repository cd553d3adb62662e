"""The host and port of an inet address, as text: IP literals, host names, inet_aton's numeric
shorthands and service names.  Pure: no DNS, no /etc/services, no socket.

:mod:`enchufe.address` parses the whole address; this module answers what its host and port
parts are, and refuses (:class:`~enchufe.errors.AddressError`, naming the whole ``text``) the
parts nobody means.
"""

from __future__ import annotations

import ipaddress
import re

from ._text import quoted as _q
from .errors import AddressError
from .i18n import _

# RFC 1123 labels, plus "_" which real-world names (and /etc/hosts) do contain.
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_-]{1,63})*\.?$")
# A part of inet_aton's shorthand: decimal, octal (leading 0) or hexadecimal (0x).  A host made
# only of such parts is a number to getaddrinfo, never a name: "1.2.3" is 1.2.0.3 and
# "2130706433" is 127.0.0.1, which nobody means by writing them.
_NUMERIC_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")

#: Service names a port may be given as, by transport: the common entries of the IANA registry
#: as netbase's /etc/services lists them.  Built in rather than read with getservbyname() so
#: that parsing stays pure (no file read, the same answer on every host, containers without
#: /etc/services included) and the port stays a number for everything downstream.
SERVICES: dict[str, dict[str, int]] = {
    "tcp": {
        "echo": 7, "discard": 9, "daytime": 13, "ftp-data": 20, "ftp": 21, "ssh": 22,
        "telnet": 23, "smtp": 25, "time": 37, "domain": 53, "gopher": 70, "finger": 79,
        "http": 80, "www": 80, "kerberos": 88, "kerberos5": 88, "krb5": 88, "pop3": 110,
        "pop-3": 110, "sunrpc": 111, "portmapper": 111, "auth": 113, "ident": 113, "nntp": 119,
        "netbios-ssn": 139, "imap": 143, "imap2": 143, "snmp": 161, "snmp-trap": 162,
        "snmptrap": 162, "bgp": 179, "ldap": 389, "https": 443, "microsoft-ds": 445,
        "submissions": 465, "smtps": 465, "ssmtp": 465, "printer": 515, "rtsp": 554,
        "submission": 587, "ipp": 631, "ldaps": 636, "domain-s": 853, "rsync": 873,
        "imaps": 993, "pop3s": 995, "socks": 1080, "openvpn": 1194, "ms-sql-s": 1433,
        "radius": 1812, "radius-acct": 1813, "nfs": 2049, "mysql": 3306, "svn": 3690,
        "subversion": 3690, "epmd": 4369, "sip": 5060, "xmpp-client": 5222,
        "jabber-client": 5222, "xmpp-server": 5269, "jabber-server": 5269, "postgresql": 5432,
        "postgres": 5432, "amqp": 5672, "x11": 6000, "redis": 6379, "http-alt": 8080,
        "puppet": 8140, "git": 9418,
    },
    "udp": {
        "echo": 7, "discard": 9, "daytime": 13, "time": 37, "domain": 53, "bootps": 67,
        "bootpc": 68, "tftp": 69, "kerberos": 88, "kerberos5": 88, "krb5": 88, "sunrpc": 111,
        "portmapper": 111, "ntp": 123, "netbios-ns": 137, "snmp": 161, "snmp-trap": 162,
        "snmptrap": 162, "ldap": 389, "https": 443, "isakmp": 500, "syslog": 514, "rtsp": 554,
        "ldaps": 636, "domain-s": 853, "openvpn": 1194, "ms-sql-m": 1434, "radius": 1812,
        "radius-acct": 1813, "nfs": 2049, "sip": 5060, "mdns": 5353,
    },
}  # fmt: skip


def is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def literal_family(host: str) -> int | None:
    """4 or 6 if ``host`` is an IP literal of that family, else ``None``."""
    if not host:
        return None
    if ":" in host:
        return 6 if is_ipv6(host) else None
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return None
    return 4


def check_host_name(text: str, scheme: str, host: str, port_text: str, example: str) -> None:
    """Refuse a ``host`` (not an IP literal) that is not a valid name, or that is a number."""
    if not _HOSTNAME.match(host):
        raise AddressError(
            _("{text}: {host} is not a valid host name or IP address, e.g. {example}").format(
                text=_q(text), host=_q(host), example=example
            )
        )
    refuse_numeric_shorthand(text, scheme, host, port_text)


def refuse_numeric_shorthand(text: str, scheme: str, host: str, port_text: str) -> None:
    """Refuse a host that is a number to inet_aton but not a dotted quad (``1.2.3``, ``0x7f.1``)."""
    parts = host.removesuffix(".").split(".")
    if not all(_NUMERIC_PART.match(part) for part in parts):
        return
    value = inet_aton(parts) if not host.endswith(".") else None
    port = port_text if port_text.isascii() and port_text.isdigit() else "9000"
    if value is None:
        raise AddressError(
            _(
                "{text}: {host} is neither a host name nor a dotted-quad IPv4 address; "
                "write the four decimal numbers, e.g. {example}"
            ).format(text=_q(text), host=_q(host), example=f"{scheme}://127.0.0.1:{port}")
        )
    raise AddressError(
        _(
            "{text}: {host} is not a dotted-quad IPv4 address (some tools would read it as {value}); "
            "write the four decimal numbers: {example}"
        ).format(text=_q(text), host=_q(host), value=value, example=f"{scheme}://{value}:{port}")
    )


def inet_aton(parts: list[str]) -> str | None:
    """What inet_aton makes of these numeric parts (the last one fills the remaining bytes)."""
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        if part[:2].lower() == "0x":
            digits, base = part[2:], 16
        elif len(part) > 1 and part.startswith("0"):
            digits, base = part[1:], 8
        else:
            digits, base = part, 10
        try:
            numbers.append(int(digits, base))
        except ValueError:  # "08", "0x": not a number to inet_aton either
            return None
    *leading, last = numbers
    last_bytes = 4 - len(leading)
    if any(n > 255 for n in leading) or last >= 256**last_bytes:
        return None
    return str(ipaddress.IPv4Address(bytes(leading) + last.to_bytes(last_bytes, "big")))


def parse_port(text: str, port_text: str, example: str, transport: str) -> int:
    if not port_text:
        raise AddressError(
            _("{text}: missing port; write it as {example}").format(text=_q(text), example=example)
        )
    if port_text.isascii() and port_text.isdigit():
        port = int(port_text)
        if port > 65535:
            raise AddressError(
                _("{text}: port {port} is out of range (0 to 65535), e.g. {example}").format(
                    text=_q(text), port=port, example=example
                )
            )
        return port
    known = SERVICES[transport].get(port_text.lower())
    if known is not None:
        return known
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", port_text):
        elsewhere = [t for t in SERVICES if t != transport and port_text.lower() in SERVICES[t]]
        if elsewhere:
            message = _(
                "{text}: port {port} is a {other} service, not {transport}; "
                "write the port number, e.g. {example}"
            )
        else:
            message = _(
                "{text}: port {port} is an unknown {transport} service; write the port number, e.g. {example}"
            )
        raise AddressError(
            message.format(
                text=_q(text),
                port=_q(port_text),
                other=elsewhere[0] if elsewhere else "",
                transport=transport,
                example=example,
            )
        )
    raise AddressError(
        _("{text}: port {port} is not a number from 0 to 65535 or a service name, e.g. {example}").format(
            text=_q(text), port=_q(port_text), example=example
        )
    )

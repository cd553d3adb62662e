"""Access rules and the descriptor budget: pure functions, tested as tables (and with hypothesis)."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enchufe import UsageError
from enchufe.relay.limits import (
    RESERVED_FDS,
    WANTED_NOFILE,
    AccessRules,
    FdBudget,
    connection_budget,
    parse_network,
)


@pytest.mark.parametrize(
    ("allow", "deny", "peer", "verdict"),
    [
        ((), (), "203.0.113.9", None),
        (("127.0.0.0/8",), (), "127.0.0.1", None),
        (("127.0.0.0/8",), (), "10.1.2.3", "matches no --allow rule"),
        (("127.0.0.0/8",), (), "::ffff:127.0.0.1", None),  # IPv4 rule, IPv4-mapped peer
        (("127.0.0.0/8",), (), "::1", "matches no --allow rule"),
        ((), ("127.0.0.1",), "::ffff:127.0.0.1", "matches --deny 127.0.0.1/32"),
        ((), ("127.0.0.1",), "127.0.0.1", "matches --deny 127.0.0.1/32"),
        ((), ("127.0.0.1",), "127.0.0.2", None),
        (("10.0.0.0/8",), ("10.9.0.0/16",), "10.9.1.1", "matches --deny 10.9.0.0/16"),  # deny wins
        (("10.0.0.0/8",), ("10.9.0.0/16",), "10.8.1.1", None),
        (("::ffff:0:0/96",), (), "::ffff:192.0.2.1", None),  # an IPv6 rule for mapped peers
        (("::ffff:0:0/96",), (), "192.0.2.1", None),  # ... is an IPv4 rule, whatever the listener
        ((), ("::ffff:127.0.0.1",), "127.0.0.1", "matches --deny 127.0.0.1/32"),  # a mapped rule
        ((), ("::ffff:127.0.0.1",), "::ffff:127.0.0.1", "matches --deny 127.0.0.1/32"),
        ((), ("::ffff:10.0.0.0/104",), "10.1.2.3", "matches --deny 10.0.0.0/8"),
        ((), ("::/0",), "127.0.0.1", None),  # an IPv6 rule judges IPv6 peers only
        ((), ("::/0",), "::ffff:127.0.0.1", None),
        ((), ("::/0",), "::1", "matches --deny ::/0"),
        (("fe80::/10",), (), "fe80::1%2", None),  # a scope id is not part of the address
        (("::1",), (), "::1", None),
        (("2001:db8::/32",), (), "192.0.2.1", "matches no --allow rule"),
    ],
)
def test_ip_rules(allow: tuple[str, ...], deny: tuple[str, ...], peer: str, verdict: str | None) -> None:
    assert AccessRules.parse(allow=allow, deny=deny).check_ip(peer) == verdict


@given(st.ip_addresses(v=4), st.integers(0, 32), st.ip_addresses(v=4))
def test_an_ipv4_rule_judges_a_mapped_peer_as_its_ipv4_address(
    base: ipaddress.IPv4Address, prefix: int, peer: ipaddress.IPv4Address
) -> None:
    network = ipaddress.ip_network(f"{base}/{prefix}", strict=False)
    for rules in (AccessRules.parse(allow=[str(network)]), AccessRules.parse(deny=[str(network)])):
        mapped = f"::ffff:{peer}"
        assert rules.check_ip(mapped) == rules.check_ip(str(peer))
        assert (rules.check_ip(str(peer)) is None) == ((peer in network) == bool(rules.allow))


@pytest.mark.parametrize(
    ("uids", "gids", "uid", "gid", "allowed"),
    [
        ((), (), 1000, 1000, True),
        (("0",), (), 0, 0, True),
        (("0",), (), 65534, 65534, False),
        (("0",), ("65534",), 65534, 65534, True),
        (("root",), (), 0, 5, True),  # user names are resolved
        ((), ("root",), 7, 0, True),  # so are group names
    ],
)
def test_credential_rules(
    uids: tuple[str, ...], gids: tuple[str, ...], uid: int, gid: int, allowed: bool
) -> None:
    verdict = AccessRules.parse(allow_uids=uids, allow_gids=gids).check_credentials(uid, gid)
    assert (verdict is None) == allowed
    if not allowed:
        assert verdict == f"uid {uid} / gid {gid} is not allowed by --allow-uid/--allow-gid"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.300/8", "--allow '10.0.0.300/8': not an IP network; write an address or CIDR such as"),
        ("banana", "--allow 'banana': not an IP network"),
        ("10.0.0.0/33", "--allow '10.0.0.0/33': not an IP network"),
        ("a\x00b", "--allow 'a\\x00b': not an IP network"),
        ("a\nb", "--allow 'a\\nb': not an IP network"),
    ],
)
def test_bad_networks_are_usage_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_network(text)
    assert str(caught.value).startswith(message)


def test_networks_accept_plain_and_bracketed_addresses() -> None:
    assert str(parse_network("192.168.1.7")) == "192.168.1.7/32"
    assert str(parse_network("[::1]")) == "::1/128"
    assert str(parse_network("10.1.2.3/8")) == "10.0.0.0/8"  # host bits are forgiven
    # A bracketed IPv6 network with its prefix outside, as --trusted-proxy takes it (one parser).
    assert str(parse_network("[fd00::]/8")) == "fd00::/8"


@pytest.mark.parametrize("option", ["allow_uids", "allow_gids"])
def test_unknown_names_are_usage_errors(option: str) -> None:
    with pytest.raises(UsageError, match="no such"):
        AccessRules.parse(**{option: ["no-such-name-here"]})


@pytest.mark.parametrize("option", ["allow_uids", "allow_gids"])
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("\u0663", "'\u0663': no such"),  # ARABIC-INDIC DIGIT THREE: a digit, not an ASCII one
        ("\u00b3", "'\u00b3': no such"),  # SUPERSCRIPT THREE: int() would even raise
        ("\uff13", "'\uff13': no such"),  # FULLWIDTH DIGIT THREE
        ("a\x00b", "'a\\x00b': no such"),  # getpwnam raises ValueError for a NUL
        ("4294967295", "4294967295: out of range"),
        ("99999999999999999999", "99999999999999999999: out of range"),
    ],
)
def test_ids_are_ascii_digits_in_range_or_names(option: str, text: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        AccessRules.parse(**{option: [text]})
    assert message in str(caught.value)
    assert "ASCII digits" in str(caught.value) or "from 0 to 4294967294" in str(caught.value)


def test_ascii_ids_are_numbers() -> None:
    rules = AccessRules.parse(allow_uids=["0", "4294967294"], allow_gids=["007"])
    assert rules.allow_uids == {0, 4294967294}
    assert rules.allow_gids == {7}


def test_the_budget_counts_two_sockets_per_connection() -> None:
    assert connection_budget(20000) == (20000 - RESERVED_FDS) // 2
    assert connection_budget(64) == 16  # a small limit keeps half for the reserve
    assert connection_budget(1) == 1


def test_the_budget_line_says_when_the_hard_limit_caps_it_and_warns_past_it() -> None:
    capped = FdBudget(nofile=1024, hard=1024)
    assert capped.connections == connection_budget(1024)
    assert capped.line(100) == (
        "fd budget: 1024 descriptors (the hard limit; raising it needs CAP_SYS_RESOURCE or a higher "
        f"ulimit -Hn): room for {capped.connections} relayed connections (2 sockets each; pipes are "
        "borrowed only while bytes are in flight); max-conns 100"
    )
    assert "hard limit" not in FdBudget(nofile=1024, hard=4096).line(100)
    assert "hard limit" not in FdBudget(nofile=WANTED_NOFILE, hard=WANTED_NOFILE).line(100)
    assert capped.excess(capped.connections) is None
    assert capped.excess(capped.connections + 1) == (
        f"--max-conns {capped.connections + 1} exceeds the fd budget (1024 descriptors: about "
        f"{capped.connections} connections); clients past that are turned away"
    )


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is not installed")
def test_the_soft_descriptor_limit_is_raised_to_the_hard_one() -> None:
    code = "from enchufe.relay.limits import raise_fd_limit; print(*raise_fd_limit())"
    done = subprocess.run(
        ["prlimit", "--nofile=100:1000", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=15,
        check=True,
    )
    soft, hard = map(int, done.stdout.split())
    # Up to the hard limit at least; beyond it (65536) where CAP_SYS_RESOURCE allows.
    assert soft == hard and soft in (1000, WANTED_NOFILE)

"""The integer forms of networks and peers (enchufe._networks) that the per-connection trust
check of ``--accept-proxy`` uses: they judge exactly as the ipaddress forms do."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enchufe._networks import Network, host_int, matching, parse_network, peer_ip
from enchufe._proxypolicy import ProxyPolicy

_HOSTS = st.one_of(
    st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.integers(0, 2**32 - 1)),
    st.builds(lambda n: str(ipaddress.IPv6Address(n)), st.integers(0, 2**128 - 1)),
    st.builds(lambda n: f"::ffff:{ipaddress.IPv4Address(n)}", st.integers(0, 2**32 - 1)),
    st.builds(lambda n: f"fe80::{n:x}%eth0", st.integers(0, 0xFFFF)),
    st.sampled_from(["127.0.0.1", "::1", "::ffff:127.0.0.1", "10.1.2.3", "::"]),
)

_NETWORKS = st.sampled_from(
    ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "0.0.0.0/0", "::/0", "fe80::/10", "::ffff:10.0.0.0/104", "::/96"]
)


@settings(max_examples=400, deadline=None)
@given(_HOSTS)
def test_host_int_is_peer_ip_as_an_integer(host: str) -> None:
    ip = peer_ip(host)
    assert host_int(host) == (ip.version, int(ip))


@pytest.mark.parametrize("host", ["", "localhost", "1.2.3", "01.2.3.4", "::g", "unix:/x"])
def test_host_int_refuses_what_is_not_an_ip_address(host: str) -> None:
    with pytest.raises(ValueError):
        host_int(host)


@settings(max_examples=400, deadline=None)
@given(st.lists(_NETWORKS, min_size=1, max_size=3), _HOSTS)
def test_the_trust_check_judges_as_the_networks_do(rules: list[str], host: str) -> None:
    networks: tuple[Network, ...] = tuple(parse_network(rule, "--trusted-proxy") for rule in rules)
    policy = ProxyPolicy(networks)
    trusted = matching(networks, peer_ip(host)) is not None
    assert (policy.untrusted_host(host) is None) == trusted

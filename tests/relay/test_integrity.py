"""Every byte arrives, both ways at once, through every stream combination (relay as a process).

The issue's size, 256 MiB each way at the same time, through each data path the relay has:
towards a TCP socket it copies through a bulk buffer, towards a unix socket it splices, so
tcp4 → tcp4 (bulk both ways), unix → unix (splice both ways) and tcp4 → unix (one of each at
once).  The other combinations only change the address family of a path already crossed at that
size (IPv6, abstract names): 32 MiB each way, eight bulk buffers' worth, is enough to show that
every byte gets through them.  The copy fallback (``--no-splice``) moves 64 MiB each way.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import needs_ipv6

from .conftest import StartRelay, Target, dial, digest_of, exchange

#: the relay with its compiled hot path and without it (tests/conftest.py: both_paths)
pytestmark = pytest.mark.usefixtures("both_paths")

MiB = 1024 * 1024

# (LISTEN kind, TARGET kind, MiB each way)
COMBOS = [
    ("tcp4", "tcp4", 256),
    ("tcp4", "unix", 256),
    ("tcp4", "tcp6", 32),
    ("tcp6", "tcp4", 32),
    ("tcp6", "unix-abstract", 32),
    ("unix", "tcp4", 32),
    ("unix", "unix", 256),
    ("unix-abstract", "unix-abstract", 32),
    ("unix-abstract", "tcp6", 32),
]


def _params(combos: list[tuple[str, str, int]]) -> list[object]:
    return [
        pytest.param(a, b, size, id=f"{a}-to-{b}", marks=[needs_ipv6] if "6" in a + b else [])
        for a, b, size in combos
    ]


def _check(
    start_relay: StartRelay,
    make_address: Callable[[str], str],
    listen_kind: str,
    target_kind: str,
    size: int,
    *options: str,
) -> None:
    with Target(make_address(target_kind), lambda conn: exchange(conn, seed=2, size=size)) as target:
        relay = start_relay(make_address(listen_kind), target.address, *options)
        with dial(relay.address) as client:
            got = exchange(client, seed=1, size=size)
        (served,) = target.wait_results(1)
    assert got.sent == size and served.received == size, (got, served)
    assert served.received_digest == got.sent_digest == digest_of(1, size)
    assert got.received == size
    assert got.received_digest == served.sent_digest == digest_of(2, size)


@pytest.mark.parametrize(("listen_kind", "target_kind", "mib"), _params(COMBOS))
def test_both_ways_at_once_every_byte_arrives(
    start_relay: StartRelay, make_address: Callable[[str], str], listen_kind: str, target_kind: str, mib: int
) -> None:
    _check(start_relay, make_address, listen_kind, target_kind, mib * MiB)


@pytest.mark.parametrize(
    ("listen_kind", "target_kind"), [("tcp4", "tcp4"), ("unix", "tcp4")], ids=["tcp4-to-tcp4", "unix-to-tcp4"]
)
def test_copy_fallback_every_byte_arrives(
    start_relay: StartRelay, make_address: Callable[[str], str], listen_kind: str, target_kind: str
) -> None:
    """--no-splice: the recv_into/send path carries the same bytes."""
    _check(start_relay, make_address, listen_kind, target_kind, 64 * MiB, "--no-splice")

"""What `enchufe bench` accepts, checked before any socket exists: one-line UsageErrors."""

from __future__ import annotations

import pytest

from enchufe import Kind
from enchufe.bench import runner
from enchufe.errors import AddressError, UsageError


def test_defaults_measure_all_six_kinds_in_under_a_minute() -> None:
    options = runner.parse_options()
    assert options.kinds == tuple(Kind)
    assert options.modes is None
    assert options.duration == runner.DEFAULT_DURATION
    assert 0 < options.warmup < options.duration
    assert options.latency_warmup < options.count
    assert options.modes_for(stream=True) == ("throughput", "latency", "connect")
    assert options.modes_for(stream=False) == ("latency", "datagram")


def test_mode_without_address_keeps_the_kinds_it_applies_to() -> None:
    assert runner.parse_options(mode="datagram").kinds == (Kind.UDP4, Kind.UDP6, Kind.UNIXGRAM)
    assert runner.parse_options(mode="connect").kinds == (Kind.TCP4, Kind.TCP6, Kind.UNIX)
    assert runner.parse_options(mode="latency").kinds == tuple(Kind)
    assert runner.parse_options(kinds=("unix,tcp4", "unix")).kinds == (Kind.UNIX, Kind.TCP4)


def test_tls_kinds_run_alone_or_beside_the_six() -> None:
    alone = runner.parse_options(kinds=("tls,tls+unix", "tls"))
    assert (alone.kinds, alone.tls_kinds) == ((), ("tls", "tls+unix"))
    both = runner.parse_options(kinds=("unix,tls",), mode="connect")
    assert (both.kinds, both.tls_kinds) == ((Kind.UNIX,), ("tls",))


def test_values_are_taken() -> None:
    options = runner.parse_options(
        ["tcp://127.0.0.1:9", "udp://[::1]:9"],
        duration="0.5",
        count="10",
        size="100",
        parallel="2",
        sink=True,
    )
    assert [str(a) for a in options.addresses] == ["tcp://127.0.0.1:9", "udp://[::1]:9"]
    assert (options.duration, options.count, options.size, options.parallel, options.sink) == (
        0.5,
        10,
        100,
        2,
        True,
    )


BAD = [
    ({"duration": "-1"}, "--duration"),
    ({"duration": "0"}, "--duration"),
    ({"duration": "abc"}, "--duration"),
    ({"duration": "nan"}, "--duration"),
    ({"duration": "1e9"}, "--duration"),
    ({"count": "0"}, "--count"),
    ({"count": "1.5"}, "--count"),
    ({"parallel": "0"}, "-P"),
    ({"parallel": "1000"}, "-P"),
    ({"size": "0"}, "--size"),
    ({"size": "-5"}, "--size"),
    ({"mode": "bandwidth"}, "unknown --mode 'bandwidth'"),
    ({"addresses": ["tcp://127.0.0.1:9"], "mode": "datagram"}, "is a stream"),
    ({"addresses": ["udp://127.0.0.1:9"], "mode": "throughput"}, "is a datagram socket"),
    ({"addresses": ["unixgram:@x"], "mode": "connect"}, "is a datagram socket"),
    ({"kinds": ["udp4"], "mode": "throughput"}, "udp4 is a datagram socket"),
    ({"kinds": ["tcp5"]}, "unknown --kind 'tcp5'"),
    ({"kinds": ["tls5"]}, "tls, tls+unix"),
    ({"kinds": ["tls"], "mode": "datagram"}, "tls is a stream"),
    ({"kinds": ["tls"], "addresses": ["tcp://127.0.0.1:9"]}, "--kind"),
    ({"kinds": ["tcp4"], "addresses": ["tcp://127.0.0.1:9"]}, "--kind"),
    ({"sink": True}, "--sink"),
    ({"addresses": ["udp://127.0.0.1:9"], "size": "8"}, "16-byte"),
    ({"addresses": ["udp://127.0.0.1:9"], "size": "70000"}, "65507"),
    ({"mode": "datagram", "size": "65520", "kinds": ["udp4"]}, "65507"),
]


@pytest.mark.parametrize(("kwargs", "needle"), BAD, ids=[f"{i}-{n[:20]}" for i, (_k, n) in enumerate(BAD)])
def test_bad_options_are_one_line_usage_errors(kwargs: dict[str, object], needle: str) -> None:
    addresses = kwargs.pop("addresses", ())
    with pytest.raises(UsageError) as caught:
        runner.parse_options(addresses, **kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert needle in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("address", "needle"),
    [
        ("-", "socket servers"),
        ("exec:cat", "socket servers"),
        ("tcp://:9000", "host"),
        ("tcp://127.0.0.1:0", "port 0"),
        ("tcp://x", "port"),
        ("tls://127.0.0.1:9?insecure", "--kind tls"),
    ],
)
def test_bad_addresses_are_address_errors(address: str, needle: str) -> None:
    with pytest.raises(AddressError, match=needle):
        runner.parse_options([address])


def test_unixgram_sizes_are_not_limited_like_udp() -> None:
    assert runner.parse_options(["unixgram:@x"], size="100000").size == 100000

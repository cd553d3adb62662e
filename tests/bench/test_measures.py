"""Each measure, very short, against the fixture servers of every kind: sane, consistent figures.

These check structure and consistency (received ≤ sent, p50 ≤ p90 ≤ p99 ≤ max, rates > 0),
never speed: the machine running them may be busy with anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from enchufe.address import SocketAddress
from enchufe.bench import measures
from enchufe.bench.process import ServerProcess
from enchufe.bench.results import DatagramRate, Latency, Throughput
from enchufe.errors import ConnectionRefused, TimedOut, UsageError
from tests.conftest import kind_params

STREAM = kind_params(("tcp4", "tcp6", "unix", "unix-abstract"))
DATAGRAM = kind_params(("udp4", "udp6", "unixgram", "unixgram-abstract"))

#: Short, but long enough that even a starved CI machine moves some bytes.
DURATION = 0.05
WARMUP = 0.01


def check_latency(result: Latency, count: int) -> None:
    s = result.summary
    assert s.samples + result.lost == count
    assert s.samples > 0
    assert 0 < s.min_us <= s.p50_us <= s.p90_us <= s.p99_us <= s.max_us
    assert len(result.samples_ns) == s.samples
    d = result.to_dict()
    assert d["p50_us"] <= d["p90_us"] <= d["p99_us"] <= d["max_us"]


def check_throughput(result: Throughput, connections: int, method: str) -> None:
    assert result.connections == connections
    assert result.method == method
    assert result.seconds >= DURATION * 0.9
    assert result.bytes > 0
    assert result.mb_per_s > 0


def check_datagrams(result: DatagramRate, method: str) -> None:
    assert result.method == method
    assert result.sent > 0
    assert 0 < result.received <= result.sent
    assert 0.0 <= result.loss < 1.0
    assert result.received_per_s <= result.sent_per_s
    assert result.seconds >= DURATION * 0.9


@pytest.mark.parametrize("kind", STREAM)
class TestStream:
    def test_throughput_into_a_sink(self, kind: str, sink_server: Callable[..., Any]) -> None:
        sink = sink_server(kind)
        result = measures.throughput(
            sink.address, duration=DURATION, warmup=WARMUP, size=65536, connections=1
        )
        check_throughput(result, 1, "sink")
        # Everything counted really arrived: the sink saw at least that many bytes.
        assert sum(sink.handler_object.sizes) >= result.bytes

    def test_parallel_throughput_read_back_from_an_echo_server(
        self, kind: str, echo_server: Callable[..., SocketAddress]
    ) -> None:
        address = echo_server(kind)
        result = measures.throughput(
            address, duration=DURATION, warmup=WARMUP, size=16384, connections=3, method="echo"
        )
        check_throughput(result, 3, "echo")

    def test_latency(self, kind: str, echo_server: Callable[..., SocketAddress]) -> None:
        result = measures.latency(echo_server(kind), count=40, warmup=5, size=64)
        check_latency(result, 40)
        assert result.lost == 0

    def test_connection_rate(self, kind: str, echo_server: Callable[..., SocketAddress]) -> None:
        result = measures.connect_rate(echo_server(kind), duration=DURATION, warmup=WARMUP)
        assert result.connections > 0
        assert result.per_s > 0
        assert result.seconds >= DURATION * 0.9


@pytest.mark.parametrize("kind", DATAGRAM)
class TestDatagram:
    def test_latency(self, kind: str, echo_server: Callable[..., SocketAddress]) -> None:
        result = measures.latency(echo_server(kind), count=40, warmup=5, size=64)
        check_latency(result, 40)

    @pytest.mark.parametrize("size", [64, 1400])
    def test_rate_and_loss_counted_from_echoes(
        self, kind: str, size: int, echo_server: Callable[..., SocketAddress]
    ) -> None:
        result = measures.datagram_rate(echo_server(kind), duration=DURATION, warmup=WARMUP, size=size)
        check_datagrams(result, "echo")
        assert result.size == size

    def test_probe_finds_the_echo_server(self, kind: str, echo_server: Callable[..., SocketAddress]) -> None:
        measures.probe(echo_server(kind))


@pytest.mark.parametrize("kind", ["udp4", "unixgram"])
def test_probe_of_a_silent_server_says_what_is_needed(kind: str, sink_server: Callable[..., Any]) -> None:
    with pytest.raises(TimedOut, match="echo server"):
        measures.probe(sink_server(kind).address, timeout=0.1)


def test_own_counting_sink_in_a_separate_process() -> None:
    with ServerProcess() as servers:
        assert servers.pid is not None
        server_id, address = servers.start("count", "udp://127.0.0.1:0")
        result = measures.datagram_rate(
            address,
            duration=DURATION,
            warmup=WARMUP,
            size=64,
            counter=lambda token: servers.counts(server_id, token),
        )
        check_datagrams(result, "sink")
        with pytest.raises(UsageError, match="unknown role"):
            servers.start("bogus", "udp://127.0.0.1:0")
        with pytest.raises(UsageError, match="needs a stream address"):
            servers.start("sink", "udp://127.0.0.1:0")
        sink_id, _ = servers.start("sink", "tcp://127.0.0.1:0")
        with pytest.raises(UsageError, match="does not count"):
            servers.counts(sink_id, 1)
        servers.stop(server_id)


def test_probe_of_nobody_is_refused() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    from enchufe import parse

    address = parse(f"tcp://127.0.0.1:{port}")
    assert not isinstance(address, str)
    with pytest.raises(ConnectionRefused, match="nobody answers"):
        measures.probe(address)  # type: ignore[arg-type]

"""The relay as a library: configuration checks, events, stop and cut, target fallbacks."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

import enchufe
from enchufe import AddressError, NameResolutionError, UsageError
from enchufe._resolve import Target as SockTarget
from enchufe.relay import AccessRules, Relay, RelayConfig, check_endpoints

from .conftest import STEP, Target, dial, echo, ping, read_all, relay_thread, wait_until


@pytest.mark.parametrize(
    ("listen", "target", "message"),
    [
        (
            "tcp://127.0.0.1:0",
            "unixgram:@x",
            "cannot relay between tcp://127.0.0.1:0 (a stream) and unixgram:@x (datagrams) without framing",
        ),
        ("exec:cat", "tcp://127.0.0.1:9", "LISTEN exec:cat: exec: runs a program per client"),
        ("-", "exec:cat", "cannot relay - to exec:cat: one of LISTEN and TARGET must be a socket"),
        ("-", "-", "cannot relay - to -"),
        ("-", "udp://127.0.0.1:9", "cannot relay - to udp://127.0.0.1:9: stdio and exec: carry a byte"),
        ("udp://127.0.0.1:0", "exec:cat", "cannot relay exec:cat to udp://127.0.0.1:0"),
        ("tcp://127.0.0.1:0", "tcp6://:9", "TARGET tcp6://:9: the relay connects there"),
    ],
)
def test_endpoints_that_cannot_be_relayed(listen: str, target: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_endpoints(listen, target)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("listen", "target"), [("tcp://127.0.0.1:0", "tcp://127.0.0.1:9"), ("udp://127.0.0.1:0", "udp://[::1]:9")]
)
def test_frame_needs_one_stream_and_one_datagram_address(listen: str, target: str) -> None:
    with pytest.raises(UsageError, match="--frame carries datagrams over a stream, but"):
        check_endpoints(listen, target, frame=True)


@pytest.mark.parametrize(
    ("listen", "target"),
    [
        ("udp://127.0.0.1:0", "udp://127.0.0.1:9"),
        ("unixgram:@a", "udp6://[::1]:9"),
        ("-", "tcp://127.0.0.1:9"),
        ("tcp://127.0.0.1:0", "-"),
        ("unix:@a", "exec:cat -n"),
    ],
)
def test_endpoints_that_can_be_relayed(listen: str, target: str) -> None:
    source, dest = check_endpoints(listen, target)
    assert (str(source), str(dest)) == (listen, target)


def test_a_mix_with_frame_is_accepted() -> None:
    check_endpoints("tcp://127.0.0.1:0", "udp://127.0.0.1:9", frame=True)
    check_endpoints("unixgram:@x", "tcp://127.0.0.1:9", frame=True)


def test_bad_addresses_are_address_errors() -> None:
    with pytest.raises(AddressError):
        Relay(RelayConfig("tcp://127.0.0.1", "tcp://127.0.0.1:9"))


@pytest.mark.parametrize(
    ("listen", "rules", "message"),
    [
        ("unix:@r", AccessRules.parse(deny=["10.0.0.0/8"]), "--allow/--deny filter IP peers"),
        ("tcp://127.0.0.1:0", AccessRules.parse(allow_uids=["0"]), "--allow-uid/--allow-gid need a unix"),
    ],
)
def test_rules_that_do_not_fit_the_listener(listen: str, rules: AccessRules, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Relay(RelayConfig(listen, "tcp://127.0.0.1:9", rules=rules))


@pytest.mark.parametrize(
    ("field", "value"),
    [("connect_timeout", 0.0), ("idle_timeout", -1.0), ("drain_timeout", -1.0), ("max_conns", 0)],
)
def test_limits_out_of_range(field: str, value: float) -> None:
    with pytest.raises(UsageError, match=field):
        Relay(RelayConfig("tcp://127.0.0.1:0", "tcp://127.0.0.1:9", **{field: value}))  # type: ignore[arg-type]


def test_one_drain_default_for_the_relay_and_the_servers() -> None:
    """The relay's default drain is the library's one constant, not a copy of its value."""
    from enchufe import _serving, relay

    assert relay.DEFAULT_DRAIN_TIMEOUT is _serving.DEFAULT_DRAIN_TIMEOUT
    assert (
        RelayConfig("tcp://127.0.0.1:0", "tcp://127.0.0.1:9").drain_timeout is _serving.DEFAULT_DRAIN_TIMEOUT
    )


def test_an_unresolvable_target_fails_at_open_and_releases_the_listener(sock_dir: str) -> None:
    path = f"{sock_dir}/r.sock"
    relay = Relay(RelayConfig(f"unix://{path}", "tcp://no-such-host.invalid:80"))
    with pytest.raises(NameResolutionError):
        relay.open()
    with enchufe.listen(f"unix://{path}"):  # the path is free again
        pass


def test_run_in_a_thread_with_events_and_a_clean_stop(make_address: Callable[[str], str]) -> None:
    with Target(make_address("unix-abstract"), echo) as target:
        config = RelayConfig(make_address("tcp6" if _ipv6() else "tcp4"), target.address)
        with relay_thread(config) as running:
            with dial(running.address) as client:
                assert ping(client, b"library")
                client.shutdown(socket.SHUT_WR)
                assert read_all(client) == b""
            wait_until(lambda: bool(running.events.named("close")), "the close event")
            running.relay.stop()
            result = running.peer.result(STEP)
    assert result.exit_status == 0 and result.cut == 0
    assert result.stats.total == 1 and result.stats.to_target == len(b"library")
    (close,) = running.events.named("close")
    assert close["reason"] == "done" and close["to_client"] == 7
    assert [name for name, _m, _f in running.events.events][:2] == ["limits", "listening"]


def _ipv6() -> bool:
    from tests.conftest import HAS_IPV6

    return HAS_IPV6


def test_stop_now_cuts_open_connections(make_address: Callable[[str], str]) -> None:
    with (
        Target(make_address("tcp4"), echo) as target,
        relay_thread(RelayConfig(make_address("unix"), target.address)) as running,
        dial(running.address) as client,
    ):
        assert ping(client)
        running.relay.stop(now=True)
        result = running.peer.result(STEP)
        assert read_all(client) == b""  # unix: the cut reads as EOF
    assert result.cut == 1 and result.exit_status == 1
    assert running.events.named("cut")[0]["cut"] == 1


def test_the_next_resolved_address_is_tried_when_one_refuses(make_address: Callable[[str], str]) -> None:
    """A name may resolve to several addresses (::1 and 127.0.0.1); a refusal moves to the next."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    with Target(make_address("tcp4"), echo) as target:
        port = int(target.address.rsplit(":", 1)[1])
        with relay_thread(RelayConfig(make_address("tcp4"), target.address)) as running:
            resolver = running.relay._resolver
            assert resolver is not None
            resolver._targets = [
                SockTarget(socket.AF_INET, ("127.0.0.1", dead_port)),
                SockTarget(socket.AF_INET, ("127.0.0.1", port)),
            ]
            with dial(running.address) as client:
                assert ping(client)
            assert running.relay.stats.failed == 0

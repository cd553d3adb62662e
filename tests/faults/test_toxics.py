"""The toxics' names, defaults, JSON shape and checks (pure: no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from enchufe.address import parse
from enchufe.errors import UsageError
from enchufe.faults import TYPES, FaultError, FaultPlan, Toxic, parse_fault


def test_the_json_shape_is_toxiproxys_with_its_defaults() -> None:
    toxic = parse_fault("latency:latency=100")
    assert toxic.to_json() == {
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"latency": 100, "jitter": 0},
    }


@pytest.mark.parametrize("kind", sorted(TYPES))
def test_every_type_round_trips_through_json(kind: str) -> None:
    toxic = parse_fault(f"{kind}:stream=upstream,toxicity=0.25,name=mine")
    again = Toxic.from_json(toxic.to_json())
    assert again.to_json() == toxic.to_json()
    assert again.name == "mine" and again.stream == "upstream" and again.toxicity == 0.25


def test_the_attributes_are_toxiproxys() -> None:
    names = {kind: [a.name for a in attributes] for kind, attributes in TYPES.items()}
    assert names["latency"] == ["latency", "jitter"]
    assert names["bandwidth"] == ["rate"]
    assert names["slicer"] == ["average_size", "size_variation", "delay"]
    assert names["limit_data"] == ["bytes"]
    assert names["timeout"] == names["reset_peer"] == ["timeout"]
    assert names["slow_close"] == ["delay"]
    assert names["reorder"] == ["probability", "delay"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("nope", "unknown fault type 'nope'; accepted: latency"),
        ("latency:latency=-1", "latency must be a whole number from 0 to"),
        ("latency:latency=1.5", "not '1.5'"),
        ("latency:latency=nan", "not 'nan'"),
        ("latency:latency=1e999", "not '1e999'"),
        ("latency:latency=٣", "not '٣'"),
        ("latency:colour=1", "unknown attribute 'colour'; accepted: latency, jitter"),
        ("latency:latency", "is not ATTR=VALUE"),
        ("latency:latency=1,latency=2", "latency is given twice"),
        ("loss:probability=1.5", "probability must be a number from 0 to 1"),
        ("latency:toxicity=2", "toxicity must be a number from 0 to 1"),
        ("latency:stream=sideways", "stream must be upstream or downstream"),
        ("slicer:average_size=0", "average_size must be a whole number from 1"),
        ("slicer:average_size=4,size_variation=5", "size_variation must be at most average_size"),
    ],
)
def test_a_bad_fault_is_one_line_naming_it(text: str, words: str) -> None:
    with pytest.raises(FaultError) as caught:
        parse_fault(text)
    message = str(caught.value)
    assert words in message and "\n" not in message
    assert isinstance(caught.value, UsageError)  # exit status 2


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"type": "latency", "attributes": []},
        {"type": "latency", "colour": 1},
        {"type": "latency", "attributes": {"latency": True}},
        {"type": "latency", "attributes": {"latency": "100"}, "name": 7},
        {"type": None},
    ],
)
def test_bad_json_is_refused(data: Any) -> None:
    with pytest.raises(FaultError):
        Toxic.from_json(data)


def test_a_plan_refuses_what_the_kind_relayed_cannot_carry() -> None:
    plan = FaultPlan((parse_fault("loss:probability=0.5"),), seed=1)
    with pytest.raises(FaultError, match="acts on datagrams only"):
        plan.check_relay(parse("tcp://127.0.0.1:1"), parse("tcp://127.0.0.1:2"), frame=False)
    plan = FaultPlan((parse_fault("limit_data:bytes=5"),), seed=1)
    with pytest.raises(FaultError, match="acts on streams only"):
        plan.check_kind(stream=False)
    plan.check_relay(parse("tcp://127.0.0.1:1"), parse("unix:@x"), frame=False)
    with pytest.raises(FaultError, match="acts on streams only"):
        plan.check_relay(parse("udp://127.0.0.1:1"), parse("udp://127.0.0.1:2"), frame=False)
    datagrams = FaultPlan((parse_fault("loss:probability=0.5"), parse_fault("latency:latency=5")), seed=1)
    datagrams.check_relay(parse("udp://127.0.0.1:1"), parse("unixgram:@x"), frame=False)
    # Every relay path carries faults: framed from a datagram LISTEN, and with a TLS end.
    datagrams.check_relay(parse("udp://127.0.0.1:1"), parse("tcp://127.0.0.1:2"), frame=True)
    plan.check_relay(parse("tls://127.0.0.1:1?cert=auto"), parse("tls://127.0.0.1:2"), frame=False)
    with pytest.raises(FaultError, match="acts on streams only, but with --frame"):
        plan.check_relay(parse("udp://127.0.0.1:1"), parse("tcp://127.0.0.1:2"), frame=True)


def test_a_plan_splits_its_toxics_by_direction() -> None:
    up = parse_fault("latency:stream=upstream")
    down = parse_fault("slicer:average_size=3")
    plan = FaultPlan((up, down), seed=0)
    assert plan.direction(upstream=True) == (up,)
    assert plan.direction(upstream=False) == (down,)

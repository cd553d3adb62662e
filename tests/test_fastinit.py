"""Frozen dataclasses made without their __init__ (enchufe._fastinit) are the same values as
those their __init__ makes: equal, hashed alike, shown alike, and still frozen."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from enchufe._fastinit import make
from enchufe._proxytypes import ProxyHeader
from enchufe._resolve import Target
from enchufe._socks5_server import Request, Step
from enchufe.address import InetAddress, inet_address
from enchufe.proxyproto import _header, parse
from enchufe.relay.proxying import Proxied

#: Every class made with make() in the package, and the fields it is made with there.
SOURCE = InetAddress("tcp", "192.0.2.7", 4321)
DESTINATION = InetAddress("tcp", "198.51.100.1", 443)
HEADER = ProxyHeader(2, "proxy", "TCP4", SOURCE, DESTINATION, 28, ())
MADE: list[tuple[type[Any], dict[str, Any]]] = [
    (InetAddress, {"transport": "udp", "host": "::1", "port": 53, "forced_family": None, "tls": None}),
    (ProxyHeader, {field.name: getattr(HEADER, field.name) for field in dataclasses.fields(HEADER)}),
    (Proxied, {"header": HEADER, "peer": SOURCE, "proxy": DESTINATION}),
    (Request, {"command": 1, "host": "192.0.2.7", "port": 80, "by_name": False, "user": None}),
    (Step, {"send": b"\x05\x00", "request": None, "refused": None, "leftover": b""}),
    (Target, {"family": 2, "sockaddr": ("192.0.2.7", 80), "dual_stack": False}),
]


@pytest.mark.parametrize(("cls", "fields"), MADE, ids=[cls.__name__ for cls, _ in MADE])
def test_made_without_init_is_the_same_value(cls: type[Any], fields: dict[str, Any]) -> None:
    # make() skips these: a class that gains one must be made by its __init__ again.
    assert "__post_init__" not in vars(cls) and "__slots__" not in vars(cls)
    assert set(fields) == {field.name for field in dataclasses.fields(cls)}
    made, built = make(cls, fields), cls(**fields)
    assert made == built and hash(made) == hash(built) and repr(made) == repr(built)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.port = 1


def test_the_helpers_make_what_the_constructors_make() -> None:
    assert inet_address("tcp", "192.0.2.7", 4321) == SOURCE
    assert _header(2, "proxy", "TCP4", SOURCE, DESTINATION, 28, ()) == HEADER
    line = b"PROXY TCP4 192.0.2.7 198.51.100.1 4321 443\r\n"
    assert parse(line) == dataclasses.replace(HEADER, version=1, consumed=len(line))

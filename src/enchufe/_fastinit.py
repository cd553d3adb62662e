"""Frozen dataclass instances made without their ``__init__``, for the few made per connection.

A frozen dataclass's ``__init__`` sets every field through ``object.__setattr__`` (its own
``__setattr__`` refuses), a call through a slot wrapper per field: for a PROXY header of twelve
fields, or an address of five, that is most of the cost of making it, and a relay behind a load
balancer makes a header, its addresses and the proxy's address for every connection.
:func:`make` fills the new instance's ``__dict__`` at once instead.

Only for dataclasses without ``__post_init__`` or ``__slots__``, given every field:
``tests/test_fastinit.py`` checks each class made here against its own ``__init__``.
"""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["make"]

T = TypeVar("T")


def make(cls: type[T], fields: dict[str, Any]) -> T:
    """``cls(**fields)`` for a frozen dataclass ``cls``, ``fields`` naming every field."""
    instance = object.__new__(cls)
    instance.__dict__.update(fields)
    return instance

"""The faults a relay injects, as Toxiproxy names them: types, attributes, defaults, checks.

A :class:`Toxic` is Toxiproxy's toxic: ``{"name", "type", "stream", "toxicity", "attributes"}``
in JSON, with Toxiproxy's attribute names and defaults (an attribute left out is 0, ``stream``
is ``downstream``, ``toxicity`` 1, ``name`` is ``TYPE_STREAM``).  The datagram types (``loss``,
``duplicate``, ``corrupt``, ``reorder``) are enchufe's: Toxiproxy carries no datagrams.

Every value is checked where it is read: a wrong one is a :class:`~enchufe.errors.UsageError`
(exit status 2) in one line naming the toxic, the attribute, the value and the accepted range.

``--fault TYPE[:ATTR=VALUE,…]`` is read by :func:`parse_fault`::

    parse_fault("latency:latency=100,jitter=10,stream=upstream")
    parse_fault("limit_data:bytes=1000,toxicity=0.5")

Pure: no I/O.  How a toxic moves bytes in time is :mod:`.schedule`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._ranges import MAX_SECONDS
from .._text import printable
from ..address import Address
from ..errors import UsageError
from ..i18n import _

__all__ = [
    "DATAGRAM_ONLY",
    "STREAMS",
    "STREAM_ONLY",
    "TYPES",
    "Attribute",
    "FaultError",
    "FaultPlan",
    "Toxic",
    "parse_fault",
]

#: Toxiproxy's names of the two directions: upstream is client → target, downstream target → client.
STREAMS = ("upstream", "downstream")

#: The longest delay, in milliseconds, any attribute may ask for (the CLI's longest wait).
MAX_MS = int(MAX_SECONDS * 1000)
#: The largest byte count or rate: what a JSON number keeps exactly.
MAX_COUNT = 2**53


class FaultError(UsageError):
    """A fault that cannot be: an unknown type or attribute, a value out of its range."""


@dataclass(frozen=True)
class Attribute:
    """One attribute of a toxic type: its range, its unit (for messages), and whether it is a
    probability (a float from 0 to 1) rather than a whole number."""

    name: str
    unit: str
    low: float = 0
    high: float = MAX_MS
    probability: bool = False
    #: what 0 means, when it means something else than none ("never")
    zero: str = ""

    def accepted(self) -> str:
        if self.probability:
            return _("a number from 0 to 1")
        low, high = f"{self.low:g}", f"{self.high:.0f}"
        if self.zero:
            return _("a whole number from {low} to {high} ({unit}; 0 = {zero})").format(
                low=low, high=high, unit=self.unit, zero=_zero_means(self.zero)
            )
        return _("a whole number from {low} to {high} ({unit})").format(low=low, high=high, unit=self.unit)

    def check(self, toxic: str, value: Any) -> int | float:
        """``value`` (a JSON number, or the text of one) as this attribute takes it."""
        number = _number(value, whole=not self.probability)
        if number is None or not self.low <= number <= self.high:
            raise FaultError(
                _("{toxic}: {attribute} must be {accepted}, not {value}").format(
                    toxic=toxic, attribute=self.name, accepted=self.accepted(), value=_show(value)
                )
            )
        return number


def _zero_means(zero: str) -> str:
    """What 0 means for an attribute (:attr:`Attribute.zero`), in the current language."""
    meanings = {"no limit": _("no limit"), "never": _("never"), "at once": _("at once")}
    return meanings.get(zero, zero)


def _ms(name: str, zero: str = "") -> Attribute:
    return Attribute(name, "ms", zero=zero)


_PROBABILITY = Attribute("probability", "", probability=True, high=1)

#: type → its attributes, in Toxiproxy's order.
TYPES: dict[str, tuple[Attribute, ...]] = {
    "latency": (_ms("latency"), _ms("jitter")),
    "bandwidth": (Attribute("rate", "KB/s", high=MAX_COUNT, zero="no limit"),),
    "slicer": (
        Attribute("average_size", "bytes", low=1, high=MAX_COUNT),
        Attribute("size_variation", "bytes", high=MAX_COUNT),
        Attribute("delay", "µs", high=MAX_MS * 1000),
    ),
    "limit_data": (Attribute("bytes", "bytes", high=MAX_COUNT),),
    "timeout": (_ms("timeout", zero="never"),),
    "reset_peer": (_ms("timeout", zero="at once"),),
    "slow_close": (_ms("delay"),),
    "loss": (_PROBABILITY,),
    "duplicate": (_PROBABILITY,),
    "corrupt": (_PROBABILITY,),
    "reorder": (_PROBABILITY, _ms("delay")),
}

#: Types that act on a byte stream's timeline or its end: no meaning for datagrams.
STREAM_ONLY = frozenset({"slicer", "limit_data", "timeout", "reset_peer", "slow_close"})
#: Types that act on whole datagrams.
DATAGRAM_ONLY = frozenset({"loss", "duplicate", "corrupt", "reorder"})

#: Attribute defaults that are not 0: a slicer with no average size would never end its cuts.
_DEFAULTS: dict[tuple[str, str], int] = {("slicer", "average_size"): 1}


@dataclass(frozen=True)
class Toxic:
    """One fault on one direction (see the module); :meth:`from_json` checks, the constructor
    does not."""

    type: str
    attributes: Mapping[str, int | float] = field(default_factory=dict)
    stream: str = "downstream"
    toxicity: float = 1.0
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"{self.type}_{self.stream}")

    def attr(self, name: str) -> Any:
        return self.attributes.get(name, _DEFAULTS.get((self.type, name), 0))

    @property
    def upstream(self) -> bool:
        return self.stream == "upstream"

    def describe(self) -> str:
        """One line: ``latency_downstream latency=100 jitter=10 toxicity=1``."""
        values = " ".join(f"{a.name}={self.attr(a.name):g}" for a in TYPES[self.type])
        return f"{printable(self.name)} {values} toxicity={self.toxicity:g}"

    def to_json(self) -> dict[str, Any]:
        """Toxiproxy's shape, every attribute of the type present."""
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": {a.name: self.attr(a.name) for a in TYPES[self.type]},
        }

    @classmethod
    def from_json(cls, data: Any) -> Toxic:
        """A toxic from Toxiproxy's JSON (what left out takes Toxiproxy's default); FaultError
        for an unknown type, stream or attribute and for a value out of range."""
        if not isinstance(data, Mapping):
            raise FaultError(_("a toxic is a JSON object, not {value}").format(value=_show(data)))
        unknown = set(data) - {"name", "type", "stream", "toxicity", "attributes"}
        if unknown:
            raise FaultError(
                _("unknown field {field} in a toxic; accepted: {fields}").format(
                    field=repr(sorted(unknown)[0]), fields=_FIELDS
                )
            )
        kind = check_type(data.get("type"))
        attributes = data.get("attributes")
        attributes = {} if attributes is None else attributes
        if not isinstance(attributes, Mapping):
            raise FaultError(
                _("{toxic}: attributes must be a JSON object, not {value}").format(
                    toxic=kind, value=_show(attributes)
                )
            )
        name = data.get("name") or ""
        if not isinstance(name, str):
            raise FaultError(
                _("{toxic}: name must be a string, not {value}").format(toxic=kind, value=_show(name))
            )
        return cls(
            kind,
            check_attributes(kind, attributes),
            check_stream(kind, data.get("stream", "downstream")),
            check_toxicity(kind, data.get("toxicity", 1.0)),
            name,
        )


_FIELDS = "name, type, stream, toxicity, attributes"


def check_type(kind: Any) -> str:
    if not isinstance(kind, str) or kind not in TYPES:
        raise FaultError(
            _("unknown fault type {value}; accepted: {types}").format(
                value=_show(kind), types=", ".join(TYPES)
            )
        )
    return kind


def check_stream(kind: str, stream: Any) -> str:
    if stream not in STREAMS:
        raise FaultError(
            _("{toxic}: stream must be upstream or downstream, not {value}").format(
                toxic=kind, value=_show(stream)
            )
        )
    return str(stream)


def check_toxicity(kind: str, value: Any) -> float:
    number = _number(value, whole=False)
    if number is None or not 0 <= number <= 1:
        raise FaultError(
            _("{toxic}: toxicity must be a number from 0 to 1, not {value}").format(
                toxic=kind, value=_show(value)
            )
        )
    return float(number)


def check_attributes(kind: str, given: Mapping[str, Any]) -> dict[str, int | float]:
    """The attributes of a ``kind`` toxic, checked; FaultError names the first one wrong."""
    known = {a.name: a for a in TYPES[kind]}
    checked: dict[str, int | float] = {}
    for name, value in given.items():
        attribute = known.get(name)
        if attribute is None:
            accepted = ", ".join(known)
            raise FaultError(
                _("{toxic}: unknown attribute {attribute}; accepted: {attributes}").format(
                    toxic=kind, attribute=_show(name), attributes=accepted
                )
            )
        checked[name] = attribute.check(kind, value)
    if kind == "slicer":
        average = checked.get("average_size", 1)
        if checked.get("size_variation", 0) > average:
            raise FaultError(
                _("slicer: size_variation must be at most average_size ({average}), not {value}").format(
                    average=f"{average:g}", value=f"{checked['size_variation']:g}"
                )
            )
    return checked


_NAME = re.compile(r"[a-z_]+")


def parse_fault(text: str) -> Toxic:
    """``TYPE[:ATTR=VALUE,…]`` (``stream``, ``toxicity`` and ``name`` among them) as a checked
    :class:`Toxic`; FaultError in one line for anything wrong."""
    kind_text, _colon, rest = text.partition(":")
    kind = check_type(kind_text.strip())
    fields: dict[str, Any] = {"type": kind}
    attributes: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        name, equals, value = item.partition("=")
        name = name.strip()
        if not equals or not _NAME.fullmatch(name):
            raise FaultError(
                _("{toxic}: {item} is not ATTR=VALUE; e.g. --fault latency:latency=100,jitter=10").format(
                    toxic=kind, item=_show(item)
                )
            )
        if name in fields or name in attributes:
            raise FaultError(_("{toxic}: {attribute} is given twice").format(toxic=kind, attribute=name))
        if name in ("stream", "toxicity", "name"):
            fields[name] = value.strip()
        else:
            attributes[name] = value.strip()
    fields["attributes"] = attributes
    return Toxic.from_json(fields)


@dataclass
class FaultPlan:
    """The toxics of a relay, in order (a direction's toxics act one after the other, as
    Toxiproxy chains them), and the seed of every random choice (``--seed``).

    The relay reads :attr:`toxics` when a connection (a datagram session) starts.  A ``live``
    plan (``enchufe chaos``'s) is changed while the relay runs (:meth:`replace`, from another
    thread: one assignment, read whole or not at all), and its connections follow each change
    (:attr:`version`)."""

    toxics: tuple[Toxic, ...]
    seed: int
    #: changed at run time: every connection copies through its schedule, toxics or not
    live: bool = False
    #: how many times :meth:`replace` changed the toxics
    version: int = 0

    def replace(self, toxics: tuple[Toxic, ...]) -> None:
        self.toxics = toxics
        self.version += 1

    def direction(self, upstream: bool) -> tuple[Toxic, ...]:
        return tuple(t for t in self.toxics if t.upstream == upstream)

    def check_kind(self, stream: bool) -> None:
        """FaultError if a toxic has no meaning for the kind relayed (streams or datagrams)."""
        wrong = DATAGRAM_ONLY if stream else STREAM_ONLY
        for toxic in self.toxics:
            if toxic.type in wrong:
                if stream:
                    text = _(
                        "--fault {type} acts on datagrams only, but this relay carries streams; "
                        "for streams: {types}"
                    )
                else:
                    text = _(
                        "--fault {type} acts on streams only, but this relay carries datagrams; "
                        "for datagrams: {types}"
                    )
                raise FaultError(text.format(type=toxic.type, types=", ".join(sorted(set(TYPES) - wrong))))

    def check_relay(self, listen: Address, target: Address, *, frame: bool) -> None:
        """FaultError if a toxic has no meaning on the relay from ``listen`` to ``target``: a
        stream's faults where datagrams are relayed, and the other way round.  With ``frame``
        the faults act on the datagrams, whichever end is the stream that frames them."""
        stream = listen.is_stream and target.is_stream
        if frame and not stream:
            for toxic in self.toxics:
                if toxic.type in STREAM_ONLY:
                    raise FaultError(
                        _(
                            "--fault {type} acts on streams only, but with --frame the faults act on "
                            "the datagrams, not on the stream that frames them; for datagrams: {types}"
                        ).format(type=toxic.type, types=", ".join(sorted(set(TYPES) - STREAM_ONLY)))
                    )
        self.check_kind(stream)


def _number(value: Any, *, whole: bool) -> int | float | None:
    """A JSON number, or the text of one (ASCII digits only), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", text, re.ASCII):
            return None
        value = float(text) if any(c in text for c in ".eE") else int(text)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        if whole:
            return int(value) if value.is_integer() else None
        return value
    return None


def _show(value: Any) -> str:
    """A value as the user wrote it, quoted and shortened (it may come from an HTTP client)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

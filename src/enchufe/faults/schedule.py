"""When each byte goes: the toxics of one direction as a schedule, sans I/O.

A stream's direction is fed what its source sent, with the time it arrived
(:meth:`StreamSchedule.feed`, :meth:`StreamSchedule.end`), and answers with :class:`Action`\\ s:
these bytes at that time, or the end of the direction (:data:`EOF`: pass the end on, the other
direction goes on; :data:`CLOSE`: close the connection; :data:`RESET`: reset it).  The toxics
act one after the other, each on what the one before it let through, as Toxiproxy chains them;
each follows Toxiproxy's code (``toxics/*.go``):

* ``latency``: each chunk ``latency`` ± ``jitter`` ms after it came (``jitter`` drawn in
  ``[-jitter, jitter)``), never before the one before it;
* ``bandwidth``: a link of ``rate`` KB/s (bytes per ms): each chunk goes once the link has
  carried it, in pieces of at most 100 ms;
* ``slicer``: each chunk halved (± ``size_variation``) until the pieces are at most
  ``average_size`` + ``size_variation``, ``delay`` µs after each piece;
* ``limit_data``: ``bytes`` in all, then close;
* ``timeout``: nothing passes; close ``timeout`` ms after the start (0: never);
* ``reset_peer``: nothing passes once something came; reset ``timeout`` ms after it;
* ``slow_close``: the end passed on ``delay`` ms late.

``toxicity`` is drawn once per toxic and direction when the schedule is made (as Toxiproxy
draws it per link): the toxic acts, or lets everything through untouched.  A datagram's toxics
(:class:`DatagramSchedule`) draw it per datagram.  Every draw comes from the ``random.Random``
given, so one seed gives one schedule.

Times are seconds on any clock that does not go back (the relay's ``time.monotonic()``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from .toxics import Toxic

__all__ = ["CLOSE", "DATA", "EOF", "RESET", "Action", "DatagramSchedule", "StreamSchedule", "slices"]

DATA = 0
EOF = 1
CLOSE = 2
RESET = 3

#: Largest piece of a bandwidth toxic, in ms of the link (Toxiproxy's 100 ms).
BANDWIDTH_PIECE_MS = 100


@dataclass(frozen=True)
class Action:
    """``data`` at ``at`` (:data:`DATA`), or the direction's end of that ``kind`` at ``at``."""

    at: float
    kind: int
    data: bytes = b""


class _Stage:
    """One toxic acting on one direction.  After it ends the direction, it lets nothing through."""

    def __init__(self) -> None:
        self.last = 0.0  # the time of what it let through last: nothing goes before it
        self.ended = False

    def start(self, now: float) -> list[Action]:
        return []

    def feed(self, at: float, data: bytes) -> list[Action]:
        at = max(at, self.last)
        self.last = at
        return [Action(at, DATA, data)]

    def end(self, at: float, kind: int) -> list[Action]:
        return [Action(max(at, self.last), kind)]


class _Latency(_Stage):
    def __init__(self, toxic: Toxic, rng: random.Random) -> None:
        super().__init__()
        self.latency = toxic.attr("latency")
        self.jitter = toxic.attr("jitter")
        self.rng = rng

    def feed(self, at: float, data: bytes) -> list[Action]:
        delay = self.latency
        if self.jitter > 0:
            delay += self.rng.randrange(self.jitter * 2) - self.jitter
        when = max(self.last, at + max(0, delay) / 1000)
        self.last = when
        return [Action(when, DATA, data)]


class _Bandwidth(_Stage):
    def __init__(self, toxic: Toxic) -> None:
        super().__init__()
        self.rate = toxic.attr("rate")  # KB/s: bytes per ms

    def feed(self, at: float, data: bytes) -> list[Action]:
        if self.rate <= 0:
            return super().feed(at, data)
        when = max(at, self.last)
        piece = self.rate * BANDWIDTH_PIECE_MS
        actions = []
        for start in range(0, len(data), piece):
            part = data[start : start + piece]
            when += len(part) / (self.rate * 1000)
            actions.append(Action(when, DATA, part))
        self.last = when
        return actions


def slices(size: int, average: int, variation: int, rng: random.Random) -> list[int]:
    """Where the slicer cuts ``size`` bytes: the ends of the pieces, in order (Toxiproxy's
    ``chunk``: halve, move the middle by ``[-variation, variation)``, until a piece is at most
    ``average + variation``).  No piece is empty."""
    ends: list[int] = []
    pending = [(0, size)]  # a stack, right halves below left ones: pieces come out in order
    while pending:
        start, end = pending.pop()
        if end - start - average <= variation:
            if end > start:
                ends.append(end)
            continue
        middle = start + (end - start) // 2
        if variation > 0:
            middle += rng.randrange(variation * 2) - variation
        pending.append((middle, end))
        pending.append((start, middle))
    return ends


class _Slicer(_Stage):
    def __init__(self, toxic: Toxic, rng: random.Random) -> None:
        super().__init__()
        self.average = toxic.attr("average_size")
        self.variation = toxic.attr("size_variation")
        self.delay = toxic.attr("delay") / 1_000_000
        self.rng = rng

    def feed(self, at: float, data: bytes) -> list[Action]:
        when = max(at, self.last)
        actions = []
        start = 0
        for end in slices(len(data), self.average, self.variation, self.rng):
            actions.append(Action(when, DATA, data[start:end]))
            when += self.delay  # Toxiproxy waits after each piece, the last one too
            start = end
        self.last = when
        return actions


class _LimitData(_Stage):
    def __init__(self, toxic: Toxic) -> None:
        super().__init__()
        self.remaining = toxic.attr("bytes")

    def feed(self, at: float, data: bytes) -> list[Action]:
        # As Toxiproxy: the limit is looked at when something comes (bytes=0: the first chunk closes).
        take = data[: max(0, self.remaining)]
        self.remaining -= len(take)
        actions = super().feed(at, take) if take else []
        if self.remaining <= 0:
            self.ended = True
            actions.append(Action(max(at, self.last), CLOSE))
        return actions


class _Timeout(_Stage):
    def __init__(self, toxic: Toxic) -> None:
        super().__init__()
        self.timeout = toxic.attr("timeout") / 1000

    def start(self, now: float) -> list[Action]:
        if not self.timeout:
            return []
        self.last = now + self.timeout
        return [Action(self.last, CLOSE)]

    def feed(self, at: float, data: bytes) -> list[Action]:
        return []  # dropped, as Toxiproxy does

    def end(self, at: float, kind: int) -> list[Action]:
        return [Action(at, kind)]  # the source's end is passed on at once


class _ResetPeer(_Stage):
    def __init__(self, toxic: Toxic) -> None:
        super().__init__()
        self.timeout = toxic.attr("timeout") / 1000

    def feed(self, at: float, data: bytes) -> list[Action]:
        return self.end(at, RESET)  # the first chunk (or the end) starts the clock; dropped

    def end(self, at: float, kind: int) -> list[Action]:
        self.ended = True
        return [Action(at + self.timeout, RESET)]


class _SlowClose(_Stage):
    def __init__(self, toxic: Toxic) -> None:
        super().__init__()
        self.delay = toxic.attr("delay") / 1000

    def end(self, at: float, kind: int) -> list[Action]:
        return [Action(max(at, self.last) + self.delay, kind)]


def _stage(toxic: Toxic, rng: random.Random) -> _Stage:
    kind = toxic.type
    if kind == "latency":
        return _Latency(toxic, rng)
    if kind == "slicer":
        return _Slicer(toxic, rng)
    simple = {
        "bandwidth": _Bandwidth,
        "limit_data": _LimitData,
        "timeout": _Timeout,
        "reset_peer": _ResetPeer,
        "slow_close": _SlowClose,
    }
    maker = simple.get(kind)
    if maker is None:
        raise ValueError(f"{kind} acts on datagrams, not on a stream")
    return maker(toxic)


def _affects(toxic: Toxic, rng: random.Random) -> bool:
    """Toxiproxy's draw: ``rand < toxicity`` (made even at 1, so that the draws stay in step)."""
    return rng.random() < toxic.toxicity


class StreamSchedule:
    """The toxics of one direction of one connection, from ``now`` (see the module)."""

    def __init__(self, toxics: Iterable[Toxic], rng: random.Random, now: float) -> None:
        #: the toxics that act on this direction (each drawn with its toxicity)
        self.toxics = [t for t in toxics if _affects(t, rng)]
        self.stages = [_stage(t, rng) for t in self.toxics]
        self.ended = False
        #: what :meth:`start` found: the toxics' own deadlines (a timeout's close)
        self.started: list[Action] = []
        for index, stage in enumerate(self.stages):
            self.started += self._through(index + 1, stage.start(now))

    def carry_over(self, previous: StreamSchedule) -> None:
        """A live plan changed: a ``limit_data`` that is still there, unchanged, goes on counting
        from where the schedule before this one was."""
        left = [
            (toxic, stage)
            for toxic, stage in zip(previous.toxics, previous.stages, strict=True)
            if isinstance(stage, _LimitData)
        ]
        for toxic, stage in zip(self.toxics, self.stages, strict=True):
            if isinstance(stage, _LimitData):
                for old_toxic, old in left:
                    if old_toxic == toxic:
                        stage.remaining = old.remaining
                        stage.ended = old.ended

    @property
    def acts(self) -> bool:
        """Whether any toxic acts on this direction (else it can be relayed untouched)."""
        return bool(self.stages)

    def feed(self, at: float, data: bytes) -> list[Action]:
        """``data`` came from the source at ``at``: what to do with it, and when."""
        return self._through(0, [Action(at, DATA, data)])

    def end(self, at: float) -> list[Action]:
        """The source ended at ``at``."""
        return self._through(0, [Action(at, EOF)])

    def _through(self, first: int, actions: list[Action]) -> list[Action]:
        for stage in self.stages[first:]:
            out: list[Action] = []
            for action in actions:
                if stage.ended:
                    break
                if action.kind == DATA:
                    out += stage.feed(action.at, action.data)
                else:
                    out += stage.end(action.at, action.kind)
                    stage.ended = True
            actions = out
        return actions


class DatagramSchedule:
    """The toxics of one direction of a datagram session: each datagram that came at ``at``
    becomes zero, one or two datagrams, each with the time it goes (:meth:`feed`).

    ``latency`` delays each datagram on its own (with jitter, datagrams may overtake each other
    as on a real network); ``bandwidth`` is a link of ``rate`` KB/s; ``loss`` drops, ``duplicate``
    sends twice, ``corrupt`` flips one bit, each with ``probability``; ``reorder`` holds a
    datagram back ``delay`` ms with ``probability``, so that later ones overtake it.  Each toxic
    acts on a datagram with probability ``toxicity``.
    """

    def __init__(self, toxics: Iterable[Toxic], rng: random.Random) -> None:
        self.toxics = tuple(toxics)
        self.rng = rng
        self._link_free = 0.0  # bandwidth: when the link has carried what it was given

    def feed(self, at: float, datagram: bytes) -> list[tuple[float, bytes]]:
        out = [(at, datagram)]
        for toxic in self.toxics:
            out = [piece for when, data in out for piece in self._apply(toxic, when, data)]
        return out

    def _apply(self, toxic: Toxic, at: float, data: bytes) -> list[tuple[float, bytes]]:
        rng = self.rng
        if not _affects(toxic, rng):
            return [(at, data)]
        kind = toxic.type
        if kind == "latency":
            jitter = toxic.attr("jitter")
            delay = toxic.attr("latency") + (rng.randrange(jitter * 2) - jitter if jitter > 0 else 0)
            return [(at + max(0, delay) / 1000, data)]
        if kind == "bandwidth":
            rate = toxic.attr("rate")
            if rate <= 0:
                return [(at, data)]
            self._link_free = max(at, self._link_free) + len(data) / (rate * 1000)
            return [(self._link_free, data)]
        chosen = rng.random() < toxic.attr("probability")
        if not chosen:
            return [(at, data)]
        if kind == "loss":
            return []
        if kind == "duplicate":
            return [(at, data), (at, data)]
        if kind == "corrupt":
            return [(at, _flip(data, rng))]
        return [(at + toxic.attr("delay") / 1000, data)]  # reorder


def _flip(data: bytes, rng: random.Random) -> bytes:
    """``data`` with one bit flipped (an empty datagram has none)."""
    if not data:
        return data
    bit = rng.randrange(len(data) * 8)
    changed = bytearray(data)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)

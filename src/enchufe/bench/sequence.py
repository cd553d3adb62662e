"""Datagram accounting without I/O: stamp each payload with a sequence number, count what arrives.

Every datagram bench sends starts with a 16-byte header, then zeros up to the payload size::

    +--------+-------------+------------------+------------
    | "ENCB" | token (!I)  | sequence (!Q)    | zero padding
    +--------+-------------+------------------+------------

The token is drawn at random for each measurement (and another one for its warm-up), so a
datagram still in flight from an earlier measurement, or from someone else, is never counted.
Sequence numbers count from 0 in the order the datagrams were sent; the receiving side keeps a
bit per sequence number, so loss, duplicates and reordering are counted exactly:

* ``received``: distinct sequence numbers seen, so ``received ≤ sent`` always holds;
* ``duplicates``: a sequence number seen again (the network, or an echo server, doubled it);
* ``reordered``: a datagram that arrived after one sent later than it;
* ``foreign``: a datagram that is not ours (wrong magic, another token, too short).

Loss is ``sent - received``: it needs the sender's count, which the receiver does not have, so
it is computed where both are known (:meth:`Counts.lost`).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "MAGIC",
    "Counts",
    "SequenceBook",
    "SequenceTracker",
    "new_token",
    "read",
    "stamp",
]

MAGIC = b"ENCB"
HEADER = struct.Struct("!4sIQ")
#: The smallest payload that can carry the header: bench's datagrams are at least this large.
HEADER_SIZE = HEADER.size
assert HEADER_SIZE == 16

#: Tokens one :class:`SequenceBook` remembers; older ones are forgotten (a long-running sink
#: serving many measurements must not grow without bound).
MAX_TOKENS = 64


def new_token() -> int:
    """A random 32-bit token for one measurement (not a secret: only tells runs apart)."""
    return random.getrandbits(32)


def stamp(buffer: bytearray, token: int, sequence: int) -> None:
    """Write the header for ``sequence`` into the first bytes of ``buffer`` (in place)."""
    HEADER.pack_into(buffer, 0, MAGIC, token, sequence)


def read(payload: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """``(token, sequence)`` from a payload, or ``None`` if it does not carry bench's header."""
    if len(payload) < HEADER_SIZE:
        return None
    magic, token, sequence = HEADER.unpack_from(payload, 0)
    if magic != MAGIC:
        return None
    return token, sequence


@dataclass(frozen=True)
class Counts:
    """What a receiver saw of one measurement."""

    received: int = 0
    duplicates: int = 0
    reordered: int = 0
    foreign: int = 0

    def lost(self, sent: int) -> int:
        """Datagrams sent and never received."""
        return max(0, sent - self.received)

    def loss(self, sent: int) -> float:
        """The fraction of ``sent`` that never arrived (0.0 when nothing was sent)."""
        return self.lost(sent) / sent if sent else 0.0


class SequenceTracker:
    """Counts the datagrams of one token from their sequence numbers: one bit per number."""

    def __init__(self, token: int) -> None:
        self.token = token
        self._seen = bytearray()
        self._highest = -1
        self._received = 0
        self._duplicates = 0
        self._reordered = 0
        self._foreign = 0

    def feed(self, payload: bytes | bytearray | memoryview) -> bool:
        """Account for one received payload; True if it is a datagram of ours seen for the first time."""
        header = read(payload)
        if header is None or header[0] != self.token:
            self._foreign += 1
            return False
        return self.feed_sequence(header[1])

    def feed_sequence(self, sequence: int) -> bool:
        """Account for one received sequence number; True if it is new."""
        index, bit = sequence >> 3, 1 << (sequence & 7)
        seen = self._seen
        if index >= len(seen):
            # Grow by doubling: amortised O(1) per datagram, and only as far as what arrived.
            seen.extend(bytes(max(index + 1 - len(seen), len(seen))))
        if seen[index] & bit:
            self._duplicates += 1
            return False
        seen[index] |= bit
        self._received += 1
        if sequence < self._highest:
            self._reordered += 1
        else:
            self._highest = sequence
        return True

    def count_foreign(self) -> None:
        """Account for a datagram that was not ours (counted by whoever routes payloads)."""
        self._foreign += 1

    @property
    def counts(self) -> Counts:
        return Counts(self._received, self._duplicates, self._reordered, self._foreign)


class SequenceBook:
    """Trackers for many tokens at once: what a sink serving several measurements keeps.

    :meth:`feed` routes each payload to its token's tracker (a new token starts a new one);
    payloads without bench's header count as foreign for the whole book.
    """

    def __init__(self, max_tokens: int = MAX_TOKENS) -> None:
        self._trackers: dict[int, SequenceTracker] = {}
        self._max_tokens = max_tokens
        self.foreign = 0

    def feed(self, payload: bytes | bytearray | memoryview) -> None:
        header = read(payload)
        if header is None:
            self.foreign += 1
            return
        token, sequence = header
        self.tracker(token).feed_sequence(sequence)

    def tracker(self, token: int) -> SequenceTracker:
        """The tracker of ``token``, started now if it is new (the oldest is then forgotten if
        the book is full).  A receiver may keep it to feed sequence numbers straight in."""
        tracker = self._trackers.get(token)
        if tracker is None:
            if len(self._trackers) >= self._max_tokens:
                del self._trackers[next(iter(self._trackers))]  # the oldest token
            tracker = self._trackers[token] = SequenceTracker(token)
        return tracker

    def counts(self, token: int) -> Counts:
        """What arrived for ``token`` (all zeros if nothing did); ``foreign`` is the book's."""
        tracker = self._trackers.get(token)
        base = tracker.counts if tracker is not None else Counts()
        return Counts(base.received, base.duplicates, base.reordered, self.foreign)

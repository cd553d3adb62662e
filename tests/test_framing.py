"""Tests for enchufe.framing: the sans-IO length-prefixed framer."""

from __future__ import annotations

import array
import itertools
import struct
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enchufe import framing
from enchufe.errors import IncompleteRead, ProtocolError, UsageError
from enchufe.framing import (
    DEFAULT_MAX_MESSAGE_SIZE,
    HEADER,
    HEADER_SIZE,
    MAX_WIRE_SIZE,
    Framer,
    encode,
    parse_header,
)

messages_st = st.lists(st.binary(max_size=300), max_size=20)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """Cut ``data`` at the given offsets (clamped, sorted, duplicates kept as empty chunks)."""
    points = sorted(min(c, len(data)) for c in cuts)
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def feed_all(framer: Framer, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for chunk in chunks:
        framer.feed(chunk)
        out.extend(framer.messages())
    return out


# --- constants and wire format ------------------------------------------------------------------


def test_constants() -> None:
    assert HEADER_SIZE == 4
    assert HEADER.format == "!I"
    assert HEADER.size == HEADER_SIZE
    assert DEFAULT_MAX_MESSAGE_SIZE == 16 * 1024 * 1024
    assert MAX_WIRE_SIZE == 0xFFFFFFFF


def test_encode_wire_format_is_big_endian_length_then_payload() -> None:
    assert encode(b"hello") == b"\x00\x00\x00\x05hello"
    assert encode(b"x" * 0x010203, max_size=MAX_WIRE_SIZE)[:4] == b"\x00\x01\x02\x03"


def test_encode_accepts_bytes_like() -> None:
    assert encode(bytearray(b"abc")) == b"\x00\x00\x00\x03abc"
    assert encode(memoryview(b"abcdef")[::2]) == b"\x00\x00\x00\x03ace"  # non-contiguous
    ints = array.array("i", [1, 2])
    assert encode(memoryview(ints)) == struct.pack("!I", ints.itemsize * 2) + ints.tobytes()


def test_zero_length_message_encoding() -> None:
    assert encode(b"") == b"\x00\x00\x00\x00"


def test_encode_refuses_oversize() -> None:
    assert encode(b"x" * 10, max_size=10) == b"\x00\x00\x00\x0a" + b"x" * 10
    with pytest.raises(UsageError, match=r"11 bytes.*limit is 10 bytes"):
        encode(b"x" * 11, max_size=10)


def test_encode_refuses_oversize_with_default_limit() -> None:
    encode(bytes(DEFAULT_MAX_MESSAGE_SIZE))  # exactly at the limit: fine
    with pytest.raises(UsageError):
        encode(bytes(DEFAULT_MAX_MESSAGE_SIZE + 1))


@pytest.mark.parametrize("bad", [-1, MAX_WIRE_SIZE + 1])
def test_invalid_max_size_is_a_usage_error(bad: int) -> None:
    with pytest.raises(UsageError):
        Framer(max_size=bad)
    with pytest.raises(UsageError):
        encode(b"", max_size=bad)
    with pytest.raises(UsageError):
        parse_header(b"\0\0\0\0", max_size=bad)


# --- parse_header -------------------------------------------------------------------------------


def test_parse_header() -> None:
    assert parse_header(b"\x00\x00\x00\x00") == 0
    assert parse_header(b"\x00\x00\x01\x00") == 256
    assert parse_header(bytearray(b"\x00\x00\x00\x07"), max_size=7) == 7
    assert parse_header(memoryview(HEADER.pack(DEFAULT_MAX_MESSAGE_SIZE))) == (DEFAULT_MAX_MESSAGE_SIZE)


def test_parse_header_refuses_oversize_naming_length_and_limit() -> None:
    with pytest.raises(ProtocolError, match=r"\b8\b.*\b7\b") as info:
        parse_header(HEADER.pack(8), max_size=7)
    assert not isinstance(info.value, IncompleteRead)
    with pytest.raises(ProtocolError, match=rf"{MAX_WIRE_SIZE}.*{DEFAULT_MAX_MESSAGE_SIZE}"):
        parse_header(b"\xff\xff\xff\xff")


@pytest.mark.parametrize("header", [b"", b"\0\0\0", b"\0\0\0\0\0"])
def test_parse_header_wrong_size_is_a_usage_error(header: bytes) -> None:
    with pytest.raises(UsageError):
        parse_header(header)


@given(st.integers(0, MAX_WIRE_SIZE), st.integers(0, MAX_WIRE_SIZE))
def test_parse_header_matches_limit(length: int, limit: int) -> None:
    if length <= limit:
        assert parse_header(HEADER.pack(length), max_size=limit) == length
    else:
        with pytest.raises(ProtocolError):
            parse_header(HEADER.pack(length), max_size=limit)


# --- Framer round trips -------------------------------------------------------------------------


@settings(max_examples=300)
@given(
    messages=messages_st,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
    compact_threshold=st.sampled_from([1, 7, framing._COMPACT_THRESHOLD]),
)
def test_round_trip_arbitrary_chunking(
    messages: list[bytes], cuts: list[int], compact_threshold: int
) -> None:
    stream = b"".join(encode(m) for m in messages)
    with mock.patch.object(framing, "_COMPACT_THRESHOLD", compact_threshold):
        framer = Framer()
        assert feed_all(framer, split(stream, cuts)) == messages
        assert framer.buffered == 0
        assert framer.next_message() is None
        framer.feed_eof()  # at a boundary: fine


@given(messages=messages_st)
def test_round_trip_one_byte_chunks(messages: list[bytes]) -> None:
    stream = b"".join(encode(m) for m in messages)
    framer = Framer()
    got = feed_all(framer, [stream[i : i + 1] for i in range(len(stream))])
    assert got == messages
    framer.feed_eof()


@given(messages=messages_st, data=st.data())
def test_round_trip_with_bytes_like_chunks_and_send(messages: list[bytes], data: st.DataObject) -> None:
    sender = Framer()
    stream = b"".join(sender.send(bytearray(m)) for m in messages)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    framer = Framer()
    got: list[bytes] = []
    for chunk in split(stream, cuts):
        framer.feed(memoryview(chunk))
        got.extend(framer.messages())
    assert got == messages
    assert all(type(m) is bytes for m in got)


@given(messages=messages_st, data=st.data())
def test_buffered_counts_bytes_not_yet_taken(messages: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode(m) for m in messages)
    cut = data.draw(st.integers(0, len(stream)))
    framer = Framer()
    framer.feed(stream[:cut])
    assert framer.buffered == cut
    taken = list(framer.messages())
    assert taken == messages[: len(taken)]
    assert framer.buffered == cut - sum(HEADER_SIZE + len(m) for m in taken)
    framer.feed(stream[cut:])
    assert taken + list(framer.messages()) == messages


def test_next_message_returns_none_until_complete() -> None:
    framer = Framer()
    wire = encode(b"abc")
    for i in range(len(wire) - 1):
        framer.feed(wire[i : i + 1])
        assert framer.next_message() is None
    framer.feed(wire[-1:])
    assert framer.next_message() == b"abc"
    assert framer.next_message() is None


def test_feed_empty_is_a_no_op() -> None:
    framer = Framer()
    framer.feed(b"")
    assert framer.buffered == 0
    assert framer.next_message() is None


def test_zero_length_messages() -> None:
    framer = Framer()
    framer.feed(encode(b"") + encode(b"a") + encode(b"") + encode(b""))
    assert framer.next_message() == b""  # empty, not None
    assert list(framer.messages()) == [b"a", b"", b""]
    assert framer.next_message() is None
    assert framer.buffered == 0


def test_zero_length_message_with_zero_limit() -> None:
    framer = Framer(max_size=0)
    framer.feed(framer.send(b"") * 3)
    assert list(framer.messages()) == [b"", b"", b""]
    with pytest.raises(UsageError):
        framer.send(b"x")


def test_large_message_in_small_chunks() -> None:
    payload = bytes(range(256)) * (8 * 1024 * 1024 // 256)  # 8 MiB
    wire = encode(payload)
    framer = Framer()
    chunk = 1024
    for i in range(0, len(wire) - chunk, chunk):
        framer.feed(wire[i : i + chunk])
        assert framer.next_message() is None
    framer.feed(wire[(len(wire) - 1) // chunk * chunk :])
    assert framer.next_message() == payload
    assert framer.buffered == 0


def test_many_small_messages_in_one_huge_chunk() -> None:
    messages = [i.to_bytes(4, "big") * (i % 5) for i in range(200_000)]
    framer = Framer()
    framer.feed(b"".join(encode(m) for m in messages))
    assert list(framer.messages()) == messages
    assert framer.buffered == 0


# --- limits -------------------------------------------------------------------------------------


def test_oversize_length_refused_right_after_header() -> None:
    framer = Framer(max_size=100)
    framer.feed(b"\x00\x00")
    framer.feed(b"\x00")  # 3 of 4 header bytes: nothing to judge yet
    with pytest.raises(ProtocolError, match=r"\b101\b.*\b100\b") as info:
        framer.feed(b"\x65")  # 101
    assert not isinstance(info.value, IncompleteRead)
    assert framer.buffered == 0  # the bad header is not kept


def test_hostile_length_refused_with_default_limit() -> None:
    framer = Framer()
    with pytest.raises(ProtocolError, match=str(MAX_WIRE_SIZE)):
        framer.feed(b"\xff\xff\xff\xff")


def test_limit_is_inclusive() -> None:
    framer = Framer(max_size=5)
    framer.feed(encode(b"12345"))
    assert framer.next_message() == b"12345"


def test_stream_stays_broken_after_oversize_header() -> None:
    framer = Framer(max_size=10)
    good = encode(b"one") + encode(b"two")
    with pytest.raises(ProtocolError):
        framer.feed(good + HEADER.pack(11) + b"junk")
    # Messages complete before the bad header can still be taken, then the error again.
    assert framer.next_message() == b"one"
    assert framer.next_message() == b"two"
    with pytest.raises(ProtocolError):
        framer.next_message()
    with pytest.raises(ProtocolError):
        framer.feed(encode(b"more"))
    assert framer.buffered == 0  # neither the junk nor the later data was kept


def test_oversize_header_after_a_partial_frame_is_detected_when_it_completes() -> None:
    framer = Framer(max_size=10)
    framer.feed(encode(b"ok")[:3])
    framer.feed(encode(b"ok")[3:] + HEADER.pack(1000)[:2])
    assert framer.next_message() == b"ok"
    with pytest.raises(ProtocolError):
        framer.feed(HEADER.pack(1000)[2:])


def test_send_uses_framer_limit() -> None:
    framer = Framer(max_size=3)
    assert framer.max_size == 3
    assert framer.send(b"abc") == encode(b"abc")
    with pytest.raises(UsageError):
        framer.send(b"abcd")


# --- end of stream ------------------------------------------------------------------------------


def test_feed_eof_at_boundary_is_fine() -> None:
    framer = Framer()
    framer.feed_eof()  # empty stream
    assert framer.at_eof

    framer = Framer()
    framer.feed(encode(b"a") + encode(b"bc"))
    framer.feed_eof()  # whole messages still buffered: fine, and still available
    assert list(framer.messages()) == [b"a", b"bc"]
    assert framer.next_message() is None


@pytest.mark.parametrize("got", [1, 2, 3])
def test_feed_eof_mid_header(got: int) -> None:
    framer = Framer()
    framer.feed(encode(b"first") + encode(b"second")[:got])
    with pytest.raises(IncompleteRead, match=rf"{got} of the 4 header bytes") as info:
        framer.feed_eof()
    assert info.value.partial == encode(b"second")[:got]
    assert isinstance(info.value, ProtocolError)
    assert list(framer.messages()) == [b"first"]


@given(payload=st.binary(min_size=1, max_size=200), data=st.data())
def test_feed_eof_mid_payload(payload: bytes, data: st.DataObject) -> None:
    wire = encode(payload)
    cut = data.draw(st.integers(HEADER_SIZE, len(wire) - 1))
    framer = Framer()
    framer.feed(encode(b"before") + wire[:cut])
    assert framer.next_message() == b"before"
    with pytest.raises(IncompleteRead, match=rf"{cut - HEADER_SIZE} of the {len(payload)} bytes"):
        framer.feed_eof()

    framer = Framer()
    framer.feed(wire[:cut])
    with pytest.raises(IncompleteRead) as info:
        framer.feed_eof()
    assert info.value.partial == wire[:cut]
    assert framer.buffered == 0  # the partial bytes moved into the exception


def test_feed_after_eof_is_a_usage_error() -> None:
    framer = Framer()
    framer.feed_eof()
    with pytest.raises(UsageError):
        framer.feed(b"x")
    with pytest.raises(UsageError):
        framer.feed(b"")
    framer.feed_eof()  # a second EOF is harmless


def test_feed_after_incomplete_eof_is_a_usage_error() -> None:
    framer = Framer()
    framer.feed(b"\0\0")
    with pytest.raises(IncompleteRead):
        framer.feed_eof()
    with pytest.raises(UsageError):
        framer.feed(b"\0\0")
    framer.feed_eof()  # already reported; nothing new

"""The ClientHello reader (:mod:`enchufe.clienthello`): real ClientHellos from Python's ssl and
from ``openssl s_client``, fed whole, split at every byte, spread over several TLS records;
refusals with their reasons; and hypothesis feeding it anything, split anyhow, checking that it
never raises anything but its own error and never takes more than its bound.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import struct
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enchufe.clienthello import (
    MAX_HELLO,
    MAX_RECORDS,
    MAX_WIRE,
    NEED_MORE,
    ClientHello,
    ClientHelloError,
    Event,
    HelloReader,
    Refused,
)

TIMEOUT = 15.0


def python_hello(
    server_name: str | None = "a.test", alpn: list[str] | None = None, *, tls12: bool = False
) -> bytes:
    """The first flight of a Python ssl client (memory BIOs: nothing leaves the process)."""
    ctx = ssl.create_default_context()
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if server_name is None:
        ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def openssl_hello(*args: str) -> bytes:
    """The first flight of ``openssl s_client ARGS``, read by a raw socket server here."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(TIMEOUT)
        port = server.getsockname()[1]
        proc = subprocess.Popen(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                reader = HelloReader()
                event: Event = NEED_MORE
                for _ in range(1000):  # bounded: a hello is far fewer reads
                    event = reader.feed(conn.recv(reader.room))
                    if event is not NEED_MORE:
                        break
                assert isinstance(event, ClientHello), event
                return reader.data
        finally:
            proc.kill()
            proc.wait(TIMEOUT)


def records_of(wire: bytes) -> list[bytes]:
    """The payloads of the TLS records in ``wire``."""
    payloads = []
    while wire:
        length = struct.unpack("!H", wire[3:5])[0]
        payloads.append(wire[5 : 5 + length])
        wire = wire[5 + length :]
    return payloads


def refragment(wire: bytes, sizes: list[int]) -> bytes:
    """The same handshake bytes in records of ``sizes`` (the last takes the rest)."""
    message = b"".join(records_of(wire))
    out = b""
    for size in sizes:
        if not message:
            break
        chunk, message = message[:size], message[size:]
        out += b"\x16\x03\x01" + struct.pack("!H", len(chunk)) + chunk
    if message:
        out += b"\x16\x03\x01" + struct.pack("!H", len(message)) + message
    return out


def read(wire: bytes) -> ClientHello | Refused:
    event = HelloReader().feed(wire)
    assert event is not NEED_MORE
    assert isinstance(event, ClientHello | Refused)
    return event


# ----------------------------------------------------------------------------- real hellos


def test_python_hello_names_alpn_and_versions() -> None:
    hello = read(python_hello("Api.Example.COM", ["h2", "http/1.1"]))
    assert isinstance(hello, ClientHello)
    assert hello.server_names == ("api.example.com",)
    assert hello.server_name == "api.example.com"
    assert hello.alpn == ("h2", "http/1.1")
    assert 0x0304 in hello.versions
    assert hello.legacy_version == 0x0303
    assert hello.records == 1


def test_python_hello_without_sni_or_alpn() -> None:
    hello = read(python_hello(None))
    assert isinstance(hello, ClientHello)
    assert hello.server_names == () and hello.server_name is None and hello.alpn == ()


def test_tls12_only_hello() -> None:
    hello = read(python_hello("b.test", tls12=True))
    assert isinstance(hello, ClientHello)
    assert hello.server_name == "b.test"
    assert 0x0304 not in hello.versions


def test_openssl_s_client_hello() -> None:
    wire = openssl_hello("-servername", "b.test", "-alpn", "h2,http/1.1")
    hello = read(wire)
    assert isinstance(hello, ClientHello)
    assert hello.server_name == "b.test"
    assert hello.alpn == ("h2", "http/1.1")
    assert 0x0304 in hello.versions


def test_openssl_s_client_without_sni() -> None:
    hello = read(openssl_hello("-noservername"))
    assert isinstance(hello, ClientHello) and hello.server_name is None


# ----------------------------------------------------------------------------- splits


def test_every_split_point() -> None:
    """Two TCP segments, cut at every byte: more is needed until the last byte is in."""
    wire = python_hello("split.test", ["h2"])
    for cut in range(1, len(wire)):
        reader = HelloReader()
        assert reader.feed(wire[:cut]) is NEED_MORE, cut
        hello = reader.feed(wire[cut:])
        assert isinstance(hello, ClientHello) and hello.server_name == "split.test", cut
        assert reader.data == wire


def test_one_byte_at_a_time() -> None:
    wire = python_hello("slow.test")
    reader = HelloReader()
    events = [reader.feed(wire[i : i + 1]) for i in range(len(wire))]
    assert all(event is NEED_MORE for event in events[:-1])
    assert isinstance(events[-1], ClientHello) and events[-1].server_name == "slow.test"


@pytest.mark.parametrize("sizes", [[1], [3, 4], [50, 50, 50], [4], [100] * 30], ids=repr)
def test_several_records(sizes: list[int]) -> None:
    """RFC 8446 §5.1: a handshake message may span records, even its 4-byte header."""
    wire = refragment(python_hello("records.test", ["h2"]), sizes)
    hello = read(wire)
    assert isinstance(hello, ClientHello), hello
    assert hello.server_name == "records.test" and hello.records == len(records_of(wire))


def test_several_records_split_at_every_byte() -> None:
    wire = refragment(python_hello("both.test"), [7, 90, 200])
    for cut in range(1, len(wire)):
        reader = HelloReader()
        assert reader.feed(wire[:cut]) is NEED_MORE, cut
        assert isinstance(reader.feed(wire[cut:]), ClientHello), cut


def test_bytes_after_the_hello_are_kept_for_the_replay() -> None:
    """A ChangeCipherSpec and early data may follow at once: kept, not parsed."""
    wire = python_hello("early.test")
    after = b"\x14\x03\x03\x00\x01\x01" + b"\x17\x03\x03\x00\x05hello"
    reader = HelloReader()
    assert isinstance(reader.feed(wire + after), ClientHello)
    assert reader.data == wire + after
    assert reader.room == 0


def test_done_reader_refuses_more() -> None:
    reader = HelloReader()
    reader.feed(python_hello())
    with pytest.raises(ClientHelloError, match="done"):
        reader.feed(b"x")


# ----------------------------------------------------------------------------- refusals


def _hello_with(extensions: bytes, *, session_id: bytes = b"") -> bytes:
    """A minimal ClientHello with these raw extensions, in one record."""
    body = (
        b"\x03\x03"
        + bytes(32)
        + bytes([len(session_id)])
        + session_id
        + b"\x00\x02\x13\x01"
        + b"\x01\x00"
        + struct.pack("!H", len(extensions))
        + extensions
    )
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(message)) + message


def _sni(*names: bytes) -> bytes:
    entries = b"".join(b"\x00" + struct.pack("!H", len(n)) + n for n in names)
    data = struct.pack("!H", len(entries)) + entries
    return b"\x00\x00" + struct.pack("!H", len(data)) + data


def test_minimal_hello() -> None:
    hello = read(_hello_with(_sni(b"Min.Test")))
    assert isinstance(hello, ClientHello) and hello.server_names == ("min.test",)


@pytest.mark.parametrize(
    ("wire", "kind", "words"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "not-tls", "plain text"),
        (b"\x00\x01\x02\x03\x04\x05", "not-tls", "first byte 0x00"),
        (b"\x16\x02\x00\x00\x05", "not-tls", "version bytes"),
        (b"\x16\x03\x01\x00\x00", "malformed", "0 bytes"),
        (b"\x16\x03\x01\x40\x01", "malformed", "16385 bytes"),
        (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "not-hello", "type 2"),
        (b"\x16\x03\x01\x00\x04\x01\xff\xff\xff", "oversized", "at most 16384"),
        (_hello_with(_sni(b"a.test") + _sni(b"b.test")), "malformed", "twice"),
        (_hello_with(_sni(b"bad name")), "malformed", "not a host name"),
        # the client's bytes escaped once: a backslash as \\, a byte as \xNN, a newline as \n
        (_hello_with(_sni(b"a\\b\n\xff")), "malformed", "'a\\\\b\\n\\xff' is not a host name"),
        (_hello_with(_sni(b"trailing.dot.")), "malformed", "empty label"),
        (_hello_with(_sni(b"")), "malformed", "0 bytes"),
        (_hello_with(b"\x00\x10\x00\x03\x00\x01\x00"), "malformed", "empty protocol name"),
        (_hello_with(b"\x00\x2b\x00\x02\x01\x03"), "malformed", "a list of 1 bytes"),
        (_hello_with(b"", session_id=bytes(33)), "malformed", "33 bytes"),
        (_hello_with(b"\x00\x00\x00\x09"), "malformed", "runs past"),
    ],
    ids=[
        "http",
        "binary",
        "sslv2-ish",
        "empty-record",
        "long-record",
        "server-hello",
        "huge-hello",
        "duplicate-ext",
        "bad-host",
        "bad-host-escaped",
        "trailing-dot",
        "empty-host",
        "empty-alpn",
        "short-versions",
        "long-session-id",
        "short-extension",
    ],
)
def test_refusals(wire: bytes, kind: str, words: str) -> None:
    event = read(wire)
    assert isinstance(event, Refused), event
    assert event.kind == kind and words in event.detail, event


def test_eof_refusals() -> None:
    assert HelloReader().feed(b"") == Refused("truncated", "the client closed without sending anything")
    reader = HelloReader()
    reader.feed(python_hello()[:40])
    event = reader.feed(b"")
    assert isinstance(event, Refused) and event.kind == "truncated" and "40 bytes" in event.detail


def test_too_many_records() -> None:
    wire = refragment(python_hello("many.test"), [4] * (MAX_RECORDS + 5))
    event = read(wire)
    assert isinstance(event, Refused) and event.kind == "oversized" and "records" in event.detail


def test_records_past_the_bound_refused_at_their_header() -> None:
    """A header whose record would take the reader past MAX_WIRE is refused before its payload."""
    reader = HelloReader()
    # 16000 of a 16384-byte hello, then a record of 1000 bytes: 16000 + 2 * 5 + 1000 > MAX_WIRE
    first = b"\x16\x03\x01" + struct.pack("!H", 16000) + b"\x01\x00\x3f\xfc" + bytes(16000 - 4)
    assert reader.feed(first) is NEED_MORE
    event = reader.feed(b"\x16\x03\x01" + struct.pack("!H", 1000))
    assert isinstance(event, Refused) and event.kind == "oversized"


def test_more_than_the_bound_at_once() -> None:
    first = b"\x16\x03\x01" + struct.pack("!H", 16000) + b"\x01\x00\x3f\xfc" + bytes(16000 - 4)
    event = HelloReader().feed(first + b"\x16\x03\x01" + struct.pack("!H", 1000) + bytes(1000))
    assert isinstance(event, Refused) and event.kind == "oversized"


def test_bound_reached_inside_a_record_header() -> None:
    """The bound filled by MAX_RECORDS whole records (a 16 KiB hello 3 bytes short) and the
    start of one more header: refused then (with no room left, reading on could only look like
    the end of the stream)."""
    message = b"\x01\x00\x3f\xfc" + bytes(MAX_HELLO - 4)
    short = MAX_WIRE - 3 - 5 * MAX_RECORDS  # handshake bytes that fit
    sizes = [16000] + [12] * (MAX_RECORDS - 2)
    sizes.append(short - sum(sizes))
    wire = b""
    offset = 0
    for size in sizes:
        wire += b"\x16\x03\x01" + struct.pack("!H", size) + message[offset : offset + size]
        offset += size
    assert len(wire) == MAX_WIRE - 3 and offset < MAX_HELLO
    reader = HelloReader()
    assert reader.feed(wire) is NEED_MORE
    event = reader.feed(b"\x16\x03\x01")
    assert isinstance(event, Refused) and event.kind == "oversized", event
    assert len(reader.data) == MAX_WIRE and reader.room == 0


def test_the_largest_hello_accepted() -> None:
    """A hello of exactly MAX_HELLO bytes (an ALPN list padding it out), in two records."""
    base = _hello_with(b"")
    pad = MAX_HELLO - (len(base) - 5) - 4 - 2  # ext header, list length
    names = b""
    while len(names) < pad:
        name = b"p" * min(200, pad - len(names) - 1)
        names += bytes([len(name)]) + name
    ext = b"\x00\x10" + struct.pack("!H", len(names) + 2) + struct.pack("!H", len(names)) + names
    wire = refragment(_hello_with(ext), [16000])
    hello = read(wire)
    assert isinstance(hello, ClientHello) and hello.size == MAX_HELLO
    assert len(wire) <= MAX_WIRE


# ----------------------------------------------------------------------------- fuzzing

REAL = python_hello("fuzz.test", ["h2", "http/1.1"])


def _run(stream: bytes, cuts: list[int]) -> tuple[ClientHello | Refused | None, int]:
    """Feed ``stream`` as a relay does (never more than ``room`` at once), cut at ``cuts``:
    the answer (``None``: still needs more) and how many bytes were taken."""
    reader = HelloReader()
    taken = 0
    pieces = []
    start = 0
    for cut in sorted(set(cuts)):
        pieces.append(stream[start:cut])
        start = cut
    pieces.append(stream[start:])
    for piece in pieces:
        while piece:
            room = reader.room
            assert room > 0
            chunk, piece = piece[:room], piece[room:]
            taken += len(chunk)
            assert taken <= MAX_WIRE
            try:
                event = reader.feed(chunk)
            except ClientHelloError:  # the reader said it was done, and was fed again
                raise AssertionError("fed after an answer") from None
            if event is not NEED_MORE:
                assert isinstance(event, ClientHello | Refused)
                assert len(reader.data) == taken <= MAX_WIRE
                return event, taken
    return None, taken


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048), st.lists(st.integers(0, 2048), max_size=8))
def test_fuzz_any_bytes(stream: bytes, cuts: list[int]) -> None:
    _run(stream, cuts)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(REAL) - 1), st.integers(0, 255)), max_size=6),
    st.lists(st.integers(0, len(REAL)), max_size=6),
    st.integers(0, 300),
)
def test_fuzz_mutated_real_hello(edits: list[tuple[int, int]], cuts: list[int], chop: int) -> None:
    wire = bytearray(REAL)
    for index, value in edits:
        wire[index] = value
    event, _ = _run(bytes(wire[: len(wire) - chop]), cuts)
    if not edits and not chop:
        assert isinstance(event, ClientHello) and event.server_name == "fuzz.test"


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(1, 40))
def test_fuzz_endless_records_stay_bounded(payload: bytes, count: int) -> None:
    """Record after record of handshake bytes that never make a whole hello: refused by the
    bound, never held beyond it."""
    record = b"\x16\x03\x01" + struct.pack("!H", len(payload)) + payload
    _run(b"\x16\x03\x01\x00\x04\x01\x00\x3f\xfc" + record * count, [])

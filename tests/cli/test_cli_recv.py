"""``enchufe recv``: raw, --json and --hex output, --count, and what it refuses."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
from collections.abc import Callable

import pytest

import enchufe
from tests.conftest import DATAGRAM_KINDS, kind_params

from .conftest import ENCHUFE, STEP, Spawn, assert_one_error_line, run, wait_until

BINARY = b"\x00\xff\x00 raw \r\n\xfe\x80"


@pytest.mark.parametrize("kind", kind_params(DATAGRAM_KINDS))
def test_raw_output_is_each_payload_exactly(
    kind: str, make_address: Callable[[str], str], spawn: Spawn
) -> None:
    receiver = spawn("recv", make_address(kind), "--count", "3", stdin=False)
    address = receiver.listening()
    payloads = [BINARY, b"", b"\xff" * 1000 + b"\x00"]
    with enchufe.connect_datagram(address) as sender:
        for n, payload in enumerate(payloads):
            sender.send(payload)
            if n < len(payloads) - 1:
                receiver.wait_out(sum(map(len, payloads[: n + 1])))
    assert receiver.finish() == 0, receiver.err
    assert receiver.out == b"".join(payloads)


@pytest.mark.parametrize("kind", kind_params(("udp4", "udp6", "unixgram")))
def test_json_gives_sender_size_base64_and_text_when_utf8(
    kind: str, make_address: Callable[[str], str], spawn: Spawn
) -> None:
    receiver = spawn("recv", make_address(kind), "--json", "--count", "2", stdin=False)
    address = receiver.listening()
    with enchufe.connect_datagram(address) as sender:
        sender.send("grüße\n".encode())
        receiver.wait_out(1)  # keep the order
        sender.send(BINARY)
        me = str(sender.local_address)
    assert receiver.finish() == 0, receiver.err
    lines = receiver.out.decode("utf-8").splitlines()
    assert len(lines) == 2, receiver.out
    text, binary = (json.loads(line) for line in lines)

    assert text["from"] == me
    assert enchufe.parse(text["from"]) == sender.local_address
    assert text["size"] == len("grüße\n".encode())
    assert base64.b64decode(text["base64"]) == "grüße\n".encode()
    assert text["text"] == "grüße\n"

    assert binary["from"] == me
    assert binary["size"] == len(BINARY)
    assert base64.b64decode(binary["base64"]) == BINARY
    assert "text" not in binary  # not UTF-8


def test_json_from_is_null_for_an_unbound_unix_sender(
    make_address: Callable[[str], str], spawn: Spawn
) -> None:
    receiver = spawn("recv", make_address("unixgram"), "--json", "--count", "1", stdin=False)
    address = enchufe.parse(receiver.listening())
    assert isinstance(address, enchufe.UnixAddress)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unbound:
        unbound.sendto(b"who am I", address.name)
    assert receiver.finish() == 0, receiver.err
    record = json.loads(receiver.out)
    assert record["from"] is None
    assert record["size"] == 8
    assert record["text"] == "who am I"


@pytest.mark.parametrize("kind", ["udp4", "unixgram-abstract"])
def test_hex_dump_has_a_header_with_the_sender(
    kind: str, make_address: Callable[[str], str], spawn: Spawn
) -> None:
    receiver = spawn("recv", make_address(kind), "--hex", "--count", "1", stdin=False)
    address = receiver.listening()
    payload = bytes(range(20))
    with enchufe.connect_datagram(address) as sender:
        sender.send(payload)
        me = str(sender.local_address)
    assert receiver.finish() == 0, receiver.err
    lines = receiver.out.decode("ascii").splitlines()
    assert me in lines[0] and "20 bytes" in lines[0], lines[0]
    dump = lines[1:]
    assert len(dump) == 2  # 16 bytes a line
    assert dump[0].startswith("00000000") and dump[1].startswith("00000010")
    hex_bytes = "".join(line.split("|")[0][8:] for line in dump).split()
    assert bytes.fromhex("".join(hex_bytes)) == payload


def test_count_stops_after_n_and_not_before(make_address: Callable[[str], str], spawn: Spawn) -> None:
    receiver = spawn("recv", make_address("udp4"), "--count", "3", stdin=False)
    address = receiver.listening()
    with enchufe.connect_datagram(address) as sender:
        for n in range(3):
            assert receiver.running(), f"recv --count 3 exited after {n} datagrams"
            sender.send(b"%d" % n)
            receiver.wait_out(n + 1)
        assert receiver.finish() == 0, receiver.err
    assert receiver.out == b"012"


def test_recv_without_count_runs_until_sigterm(make_address: Callable[[str], str], spawn: Spawn) -> None:
    receiver = spawn("recv", make_address("unixgram"), stdin=False)
    address = receiver.listening()
    with enchufe.connect_datagram(address) as sender:
        for _ in range(5):
            sender.send(b"x")
        receiver.wait_out(5)
    assert receiver.running()
    assert receiver.terminate() == 0, receiver.err
    assert receiver.out == b"xxxxx"


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:0", "unix:@enc-recv-stream"])
def test_recv_refuses_a_stream_address(address: str) -> None:
    done = run("--trace", "recv", address)
    assert done.returncode == 2
    assert_one_error_line(done.stderr, "datagram")


def test_recv_exits_0_when_the_reader_of_its_stdout_goes_away(sock_dir: str) -> None:
    """`enchufe recv … | head -c 3`: a closed stdout is not an error (no traceback, status 0)."""
    path = os.path.join(sock_dir, "r.sock")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        proc = subprocess.Popen(
            [*ENCHUFE, "recv", f"unixgram://{path}"],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    try:
        wait_until(lambda: os.path.exists(path), "the socket file to appear")
        with enchufe.connect_datagram(f"unixgram://{path}") as sender:
            sender.send(b"nobody reads this")
            _out, err = proc.communicate(timeout=STEP)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(STEP)
        assert proc.stderr is not None
        proc.stderr.close()
    assert proc.returncode == 0, err
    assert "Traceback" not in err.decode() and "Exception ignored" not in err.decode()
    assert not os.path.exists(path)

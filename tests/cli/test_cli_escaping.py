"""Untrusted text never starts a log line of its own.

A unix client chooses its abstract name; one with a newline in it, shown raw, would print a line
that looks like enchufe's own (``enchufe: FORGED …``).  Every human-readable line on stderr
escapes it instead (``\\n``), whatever the verbosity; ``--json`` escapes it as JSON does.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time

import pytest

from enchufe._text import printable

from .conftest import STEP, Spawn, assert_one_error_line, run

#: A peer's abstract name that would forge two lines (a newline, a U+2028 line separator), move
#: the cursor back (a carriage return) and clear the terminal line (an escape sequence).
FORGED_NAME = "x\nenchufe: FORGED one\u2028enchufe: FORGED two\r\x1b[2Kenchufe: FORGED three"


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns()}"


def assert_not_forged(stderr: str) -> None:
    lines = stderr.splitlines()
    forged = [line for line in lines if "FORGED" in line and not line.startswith(("accepted", "closed"))]
    for line in lines:
        assert not line.lstrip("\r").startswith("enchufe: FORGED"), stderr
        assert "\x1b" not in line and "\r" not in line and "\u2028" not in line, repr(line)
    # The name is there, escaped, on the line that reports it.
    assert any("\\n" in line for line in lines if "FORGED" in line), (stderr, forged)


def forged_stream_client(server: str, payload: bytes = b"hello\n") -> bytes:
    """Connect to the abstract ``server`` from FORGED_NAME, send, half-close, read to EOF."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(STEP)
        sock.bind("\0" + FORGED_NAME)
        sock.connect("\0" + server)
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_listen_verbose_escapes_the_peer_name(spawn: Spawn) -> None:
    name = unique("listen")
    server = spawn("listen", "-v", f"unix:@{name}")
    server.listening()
    server.close_stdin()
    forged_stream_client(name)
    assert server.finish() == 0, server.err
    assert server.out == b"hello\n"
    assert_not_forged(server.err)


def test_echo_verbose_escapes_the_peer_name(spawn: Spawn) -> None:
    name = unique("echo")
    server = spawn("echo", "-v", f"unix:@{name}")
    server.listening()
    assert forged_stream_client(name) == b"hello\n"
    server.wait_err(r"^closed .*FORGED")
    server.terminate()
    assert_not_forged(server.err)


def test_chat_escapes_a_datagram_peer_name_in_logs_and_for_the_others(spawn: Spawn) -> None:
    name = unique("chat")
    server = spawn("chat", "-v", f"unixgram:@{name}")
    server.listening()
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as forger,
    ):
        other.settimeout(STEP)
        other.bind("\0" + unique("other"))
        other.sendto(b"hi\n", "\0" + name)
        server.wait_err(r"joined")
        forger.bind("\0" + FORGED_NAME)
        forger.sendto(b"hello\n", "\0" + name)
        shown = other.recv(65536)
    # What the others see is one line, the name escaped in it.
    assert shown.count(b"\n") == 1 and shown.endswith(b": hello\n"), shown
    assert b"\\n" in shown
    server.wait_err(r"FORGED.*joined")
    server.terminate()
    assert_not_forged(server.err)


def test_json_gives_the_name_escaped_as_the_relay_does(spawn: Spawn) -> None:
    """JSON could carry the name exactly, but ``jq -r .peer`` would then print its escape
    sequences and newlines (and a non-UTF-8 byte becomes a lone surrogate that strict parsers
    refuse): the field holds the escaped name, backslashes doubled, as ``relay --json`` does."""
    name = unique("json")
    server = spawn("listen", "-v", "--json", f"unix:@{name}")
    server.listening()
    server.close_stdin()
    forged_stream_client(name)
    assert server.finish() == 0, server.err
    records = [json.loads(line) for line in server.err.splitlines()]
    accepted = [r for r in records if r["event"] == "accept"]
    assert accepted and accepted[0]["peer"] == f"unix:@{printable(FORGED_NAME)}"
    assert "\n" not in accepted[0]["peer"] and "\x1b" not in accepted[0]["peer"]


def test_hex_dump_header_escapes_the_sender(spawn: Spawn) -> None:
    name = unique("recv")
    server = spawn("recv", "--hex", "--count", "1", f"unixgram:@{name}")
    server.listening()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as forger:
        forger.bind("\0" + FORGED_NAME)
        forger.sendto(b"hello", "\0" + name)
    assert server.finish() == 0, server.err
    header, *_dump = server.out.decode().splitlines()
    assert header.startswith("from unixgram:@x\\nenchufe: FORGED one"), header
    assert not any(line.startswith("enchufe: FORGED") for line in server.out.decode().splitlines())


@pytest.mark.parametrize("command", ["send", "listen"])
def test_error_line_escapes_what_it_quotes(command: str) -> None:
    """main()'s error line: an address with a newline (here the user's own) stays one line."""
    name = unique("nobody") + "\nenchufe: FORGED"
    args = ("send", f"unix:@{name}", "x") if command == "send" else ("listen", f"unix:///no/such/dir/{name}")
    done = run(*args)
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "\\nenchufe: FORGED")


def test_trace_escapes_the_peer_name(spawn: Spawn) -> None:
    name = unique("trace")
    server = spawn("--trace", "listen", f"unix:@{name}")
    server.listening()
    server.close_stdin()
    forged_stream_client(name)
    assert server.finish() == 0, server.err
    assert re.search(r"^accept\(fd \d+\) = fd \d+ from @x\\nenchufe: FORGED", server.err, re.MULTILINE)
    assert_not_forged(server.err)

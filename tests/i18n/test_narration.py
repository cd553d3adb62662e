"""The --trace narration in Spanish: the words around the calls translated (``bound to``, ``from``,
``(EOF)``, ``connected peer``…), the calls, constants, descriptors and addresses as they are;
``--trace-file`` (for programs) keeps the calls' lines in English whatever ``--lang`` says."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from enchufe import _calls, i18n, trace
from enchufe._tracefile import MemoryRecorder
from tests.cli.conftest import STEP, run


@pytest.fixture(autouse=True)
def _english_afterwards() -> Iterator[None]:
    yield
    trace.disable()
    trace.record_to(None)
    i18n.set_language("en")


def _answering_server() -> tuple[socket.socket, threading.Thread]:
    """A TCP listener on loopback that takes one client, reads to EOF and answers in upper case."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(STEP)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(STEP)
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
            conn.sendall(data.upper())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_a_traced_connect_narrates_in_spanish_and_writes_its_trace_file_in_english(tmp_path: Path) -> None:
    listener, thread = _answering_server()
    port = listener.getsockname()[1]
    trace_file = tmp_path / "client.jsonl"
    try:
        done = run(
            "--lang", "es", "--trace", "--trace-file", str(trace_file), "connect", f"tcp://127.0.0.1:{port}",
            input=b"hola\n",
        )  # fmt: skip
    finally:
        thread.join(STEP)
        listener.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"HOLA\n"
    lines = done.stderr.decode().splitlines()
    assert any(line.startswith("socket(AF_INET, SOCK_STREAM) = fd ") for line in lines), lines
    assert f"connect(fd 3, 127.0.0.1:{port}) = 0" in lines or any(
        line.startswith("connect(fd ") and line.endswith(f"127.0.0.1:{port}) = 0") for line in lines
    ), lines
    assert any(line.startswith("send(fd ") and line.endswith(", 5 bytes) = 5") for line in lines), lines
    eof = [
        line
        for line in lines
        if line.startswith("recv(fd ") and line.endswith(" = 0 (EOF: fin de los datos)")
    ]
    assert eof, lines
    assert not any(line.endswith("(EOF)") for line in lines), lines
    # The file for programs: the same calls, in the words the code wrote them in.
    events = [json.loads(line) for line in trace_file.read_text().splitlines()]
    recvs = [e for e in events if e["call"] == "recv"]
    assert recvs[-1]["line"].endswith(" = 0 (EOF)") and recvs[-1]["size"] == 0
    assert "fin de los datos" not in trace_file.read_text()


def test_the_narration_words_in_spanish_and_the_recorder_in_english() -> None:
    """Real calls on loopback (a unix datagram pair, a TCP connection), narrated in Spanish to the
    text sink while a recorder gets the same calls in English."""
    lines: list[str] = []
    memory = MemoryRecorder()
    i18n.set_language("es")
    trace.enable(lines.append)
    trace.record_to(memory)
    listener = _calls.new_socket(socket.AF_INET, socket.SOCK_STREAM)
    client = _calls.new_socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        _calls.bind(listener, ("127.0.0.1", 0))
        _calls.listen(listener, 1)
        _calls.connect(client, listener.getsockname())
        accepted, _peer = _calls.accept(listener)
        _calls.send(client, b"hola")
        _calls.shutdown(client, socket.SHUT_WR)
        assert _calls.recv(accepted, 100) == b"hola"
        assert _calls.recv(accepted, 100) == b""
        _calls.close(accepted)
        left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with left, right:
            _calls.send_datagram(left, b"una carta", None)
            size, _sender = _calls.recv_datagram_into(right, memoryview(bytearray(4)))
            assert size == 9
    finally:
        _calls.close(client)
        _calls.close(listener)
    port = int(lines[2].rsplit(":", 1)[1])
    assert lines[2].endswith(f") → asociado a 127.0.0.1:{port}"), lines
    accept = next(line for line in lines if line.startswith("accept("))
    assert accept.startswith("accept(fd ") and " = fd " in accept and " desde 127.0.0.1:" in accept, accept
    assert any(line.endswith(", 4 bytes) = 4") and line.startswith("send(fd ") for line in lines), lines
    assert (
        lines.count(f"recv(fd {accept.split(' = fd ')[1].split()[0]}, 100) = 0 (EOF: fin de los datos)") == 1
    )
    sendto = next(line for line in lines if line.startswith("sendto("))
    assert sendto.endswith(", 9 bytes, el otro extremo conectado) = 9"), sendto
    recvfrom = next(line for line in lines if line.startswith("recvfrom("))
    assert recvfrom.endswith(" = 9 bytes desde (sin nombre) (MSG_TRUNC: solo se guardaron 4)"), recvfrom
    # The recorder: the lines as written, in English.
    recorded = [event["line"] for event in memory.events]
    assert recorded[2].endswith(f" → bound to 127.0.0.1:{port}")
    assert any(line.endswith(" = 0 (EOF)") for line in recorded)
    assert any(line.endswith(", 9 bytes, connected peer) = 9") for line in recorded)
    assert any(line.endswith(" = 9 bytes from (unnamed) (MSG_TRUNC: only 4 kept)") for line in recorded)
    assert all("desde" not in line and "asociado" not in line for line in recorded)


@pytest.mark.parametrize(
    ("line", "spanish"),
    [
        (
            "bind(fd 3, 127.0.0.1:0) → bound to 127.0.0.1:4000",
            "bind(fd 3, 127.0.0.1:0) → asociado a 127.0.0.1:4000",
        ),
        ("accept(fd 3) = fd 4 from [::1]:5000", "accept(fd 3) = fd 4 desde [::1]:5000"),
        ("getsockopt(fd 5, SO_ERROR) = 0 (connected)", "getsockopt(fd 5, SO_ERROR) = 0 (conectado)"),
        (
            "connect(fd 5, [::1]:80) = -1 EISCONN (connected)",
            "connect(fd 5, [::1]:80) = -1 EISCONN (conectado)",
        ),
        ("waitpid(41) = exit status 3", "waitpid(41) = estado de salida 3"),
        (
            "unlink(/tmp/d/stream.sock)  # our socket file, removed on close",
            "unlink(/tmp/d/stream.sock)  # nuestro archivo de socket, que se borra al cerrar",
        ),
        (
            "unlink(/tmp/d/s.sock)  # stale socket file: nobody accepts on it",
            "unlink(/tmp/d/s.sock)  # archivo de socket abandonado: nadie acepta conexiones en él",
        ),
        # A peer's path that looks like the words is an address: left as it is.
        (
            "bind(fd 3, /tmp/x (EOF)) → bound to /tmp/x (EOF)",
            "bind(fd 3, /tmp/x (EOF)) → asociado a /tmp/x (EOF)",
        ),
        ("connect(fd 3, /tmp/a from b) = 0", "connect(fd 3, /tmp/a from b) = 0"),
    ],
)
def test_localized_translates_the_words_and_nothing_else(line: str, spanish: str) -> None:
    assert trace.localized(line) == line
    i18n.set_language("es")
    assert trace.localized(line) == spanish


def test_the_tour_actors_are_named_in_spanish_in_the_narration_only() -> None:
    lines: list[str] = []
    memory = MemoryRecorder()
    i18n.set_language("es")
    trace.enable(lines.append)
    trace.record_to(memory)
    with trace.actor("server", i18n._("server")):
        sock = _calls.new_socket(socket.AF_INET, socket.SOCK_DGRAM)
        _calls.close(sock)
    assert lines[0].startswith("servidor socket(AF_INET, SOCK_DGRAM) = fd "), lines
    assert memory.events[0]["actor"] == "server"

"""The trace as structured events: narration lines parsed, addresses asked of the kernel, the
text sink and a recorder side by side."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

import enchufe
from enchufe import trace
from enchufe._tracefile import MemoryRecorder, file_recorder, open_trace_file, parse_line


@pytest.fixture
def recorded() -> Iterator[MemoryRecorder]:
    memory = MemoryRecorder()
    trace.record_to(memory)
    try:
        yield memory
    finally:
        trace.record_to(None)


@pytest.mark.parametrize(
    ("line", "fields"),
    [
        (
            "socket(AF_INET, SOCK_STREAM) = fd 3",
            {"call": "socket", "args": ["AF_INET", "SOCK_STREAM"], "new_fd": 3},
        ),
        ("bind(fd 4, (unnamed)) → bound to @30e44", {"call": "bind", "fd": 4, "result": "bound to @30e44"}),
        ("accept(fd 3) = fd 5 from [::1]:45184", {"call": "accept", "fd": 3, "new_fd": 5}),
        ("recv(fd 5, 65536) = 0 (EOF)", {"call": "recv", "fd": 5, "size": 0}),
        (
            "sendto(fd 3, 33 bytes, 127.0.0.1:53435) = 33",
            {"args": ["fd 3", "33 bytes", "127.0.0.1:53435"], "size": 33},
        ),
        ("recv(fd 4, 131072) = -1 EAGAIN (Resource temporarily unavailable)", {"error": "EAGAIN"}),
        ("connect(fd 3, 127.0.0.1:9) = -1 timeout (timed out)", {"error": "timeout"}),
        (
            "setsockopt(fd 7, SO_LINGER, {on, 0 s})",
            {"args": ["fd 7", "SO_LINGER", "{on, 0 s}"], "result": None},
        ),
        (
            "unlink(/tmp/a.sock)  # our socket file",
            {"call": "unlink", "comment": "our socket file", "fd": None},
        ),
        ("tls fd 5: agreed: TLSv1.3", {"call": "tls", "fd": 5, "text": "agreed: TLSv1.3"}),
        ("· the client connects", {"call": "note", "text": "the client connects"}),
        ("via socks5://h:1: connect to the proxy", {"call": "note"}),
    ],
)
def test_parse_line(line: str, fields: dict[str, object]) -> None:
    parsed = parse_line(line)
    assert {key: parsed.get(key) for key in fields} == fields, parsed


def test_a_recorder_gets_the_calls_with_addresses_times_and_payloads(recorded: MemoryRecorder) -> None:
    with (
        enchufe.listen("tcp4://127.0.0.1:0") as listener,
        enchufe.connect(listener.address) as client,
        listener.accept() as server,
    ):
        client.send_all(b"ping")
        assert server.recv() == b"ping"
    by_call = {e["call"]: e for e in recorded.events if e["call"] in ("connect", "accept", "send", "recv")}
    connect, accept = by_call["connect"], by_call["accept"]
    assert (
        connect["local"] == accept["peer"]
        and connect["peer"] == accept["local"] == str(listener.address).split("//")[1]
    )
    assert by_call["send"]["data"] == by_call["recv"]["data"] == "ping"
    assert by_call["send"]["size"] == 4
    for event in by_call.values():
        assert event["started"] <= event["monotonic"] and event["wall"] > 0
    closes = [e for e in recorded.events if e["call"] == "close"]
    # The kernel has no addresses for a closed descriptor: they are remembered from before.
    assert all("local" in e for e in closes), closes


def test_the_text_sink_and_a_recorder_side_by_side(recorded: MemoryRecorder) -> None:
    lines: list[str] = []
    trace.enable(lines.append)
    try:
        with trace.actor("server"):
            trace.emit("listen(fd 3, backlog=1)")
    finally:
        trace.disable()
    assert lines == ["server  listen(fd 3, backlog=1)"]
    assert recorded.events[-1]["actor"] == "server" and recorded.events[-1]["call"] == "listen"
    assert trace.enabled()  # the recorder is still there
    trace.record_to(None)
    assert not trace.enabled()


def test_a_payload_keeps_only_its_head(recorded: MemoryRecorder) -> None:
    trace.emit("send(fd 3, 100000 bytes) = 100000", data=memoryview(b"y" * 100_000))
    assert recorded.events[-1]["data"] == "y" * trace.PAYLOAD_HEAD


def test_a_forked_worker_writes_its_own_pid_to_the_same_file(tmp_path: object) -> None:
    """relay --workers forks after --trace-file opened the file: each line names its process,
    and no line overwrites another's."""
    path = os.path.join(str(tmp_path), "t.jsonl")
    fd = open_trace_file(path)
    trace.record_to(file_recorder(fd))
    try:
        trace.emit("listen(fd 3, backlog=1)")
        child = os.fork()
        if child == 0:  # pragma: no cover - the child
            trace.emit("accept(fd 3) = -1 EAGAIN (Resource temporarily unavailable)")
            os._exit(0)
        _, status = os.waitpid(child, 0)
        trace.emit("close(fd 3)")
    finally:
        trace.record_to(None)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    with open(path, encoding="utf-8") as lines:
        events = [json.loads(line) for line in lines]
    assert [(e["call"], e["pid"]) for e in events] == [
        ("listen", os.getpid()),
        ("accept", child),
        ("close", os.getpid()),
    ]


def test_a_recorder_alone_turns_the_narration_on_everywhere(recorded: MemoryRecorder) -> None:
    """The relay's per-connection paths read ``trace._sink`` inline instead of calling
    enabled(): a recorder alone must look like tracing to them too (else --trace-file would
    miss the relay's transfers), while no text is written anywhere."""
    assert trace.enabled()
    assert trace._sink is not None
    assert trace.current_sink() is None
    trace.emit("close(fd 9)")
    assert recorded.events[-1]["call"] == "close"

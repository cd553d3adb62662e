"""--trace-file FILE.jsonl, enchufe diagram (two real processes' traces merged) and tour --diagram."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET

import click
import pytest

from enchufe.cli import cli
from enchufe.diagram.files import read_events
from enchufe.diagram.model import build, summary

from .conftest import STEP, Spawn, assert_one_error_line, run, run_here


def traced_call(spawn: Spawn, folder: str) -> tuple[str, str]:
    """An ``enchufe listen`` and an ``enchufe connect``, each writing its --trace-file: the
    client sends one line and ends its side, the server answers and ends its own."""
    server_trace, client_trace = os.path.join(folder, "server.jsonl"), os.path.join(folder, "client.jsonl")
    server = spawn("--trace-file", server_trace, "listen", "tcp://127.0.0.1:0")
    address = server.listening()
    client = spawn("connect", address, "--trace-file", client_trace)  # after the command, too
    client.feed(b"hello\n")
    server.wait_out_equal(b"hello\n")
    server.feed(b"HELLO\n")
    client.wait_out_equal(b"HELLO\n")
    assert client.finish() == 0, client.err
    assert server.finish() == 0, server.err
    return server_trace, client_trace


def test_diagram_merges_a_server_and_a_client_process(spawn: Spawn, tmp_path: object) -> None:
    folder = str(tmp_path)
    server_trace, client_trace = traced_call(spawn, folder)
    for path in (server_trace, client_trace):
        # Created with its final mode, whatever the umask allowed.
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, oct(os.stat(path).st_mode)
    events = read_events(server_trace) + read_events(client_trace)
    assert len({e["pid"] for e in events}) == 2
    assert {"pid", "thread", "fd", "call", "args", "result", "monotonic", "wall", "line"} <= set(events[1])
    diagram = build(events)
    server_pid = read_events(server_trace)[0]["pid"]
    names = [line.name for line in diagram.lifelines]
    assert names == [f"server (pid {server_pid})", names[1]] and names[1].startswith("client (pid ")
    server, client = names
    arrows = summary(diagram)
    assert arrows[0] == ("connect", client, server, "connect")
    assert [a for a in arrows if a[0] == "bytes"] == [
        ("bytes", client, server, '6 B "hello\\n"'),
        ("bytes", server, client, '6 B "HELLO\\n"'),
    ]
    assert {(a[1], a[2]) for a in arrows if a[0] == "eof"} == {(client, server), (server, client)}
    calls = diagram.calls(server)
    assert calls.index("listen") < calls.index("accept") < calls.index("recv")
    assert diagram.calls(client)[:2] == ["socket", "connect"]
    # The server listened long before the client connected: its accept() is marked as waiting.
    accept = next(step for step in diagram.steps if step.call == "accept")
    assert accept.waited > 0 and any(m.endswith("for the connect()") for m in accept.marks), accept.marks

    done = run("diagram", server_trace, client_trace)
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    assert text.startswith("sequenceDiagram\n")
    assert f"participant P0 as server (pid {server_pid})<br/>127.0.0.1:" in text
    assert "P1-->>P0: connect" in text and "P1->>P0: 6 B #quot;hello\\n#quot;" in text
    md = os.path.join(folder, "call.md")
    done = run("diagram", server_trace, client_trace, "-o", md)
    assert done.returncode == 0 and done.stderr.decode().strip() == f"enchufe: wrote {md}", done.stderr
    with open(md, encoding="utf-8") as out:
        assert out.read().count("```mermaid\nsequenceDiagram\n") == 1


def test_diagram_draws_svg(spawn: Spawn, tmp_path: object) -> None:
    pytest.importorskip("matplotlib", reason="SVG diagrams need matplotlib (the plot extra)")
    server_trace, client_trace = traced_call(spawn, str(tmp_path))
    svg = os.path.join(str(tmp_path), "call.svg")
    done = run("diagram", server_trace, client_trace, "-o", svg)
    assert done.returncode == 0, done.stderr
    texts = "".join(ET.parse(svg).getroot().itertext())
    assert "listen(fd" in texts and "connect(fd" in texts and '6 B "hello\\n"' in texts


def test_trace_file_mode_ignores_a_permissive_umask(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "t.jsonl")
    code = "import os, sys; os.umask(0); from enchufe.cli import main; main(sys.argv[1:])"
    args = ["--trace-file", path, "send", "udp://127.0.0.1:9", "x"]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, timeout=STEP, check=False)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path, encoding="utf-8") as lines:
        calls = [json.loads(line)["call"] for line in lines]
    assert calls[0] == "socket" and "sendto" in calls, calls


def test_peer_names_stay_escaped_in_the_trace_file(spawn: Spawn, tmp_path: object) -> None:
    """A unix path with a newline and an escape: each event is still one line, no control byte."""
    folder = str(tmp_path)
    trace_path = os.path.join(folder, "t.jsonl")
    socket_path = os.path.join(folder, "a\nb\x1b[31m.sock")
    server = spawn("--trace-file", trace_path, "recv", f"unixgram://{socket_path}", "--count", "1")
    server.wait_err("(?s)listening on .*")
    sent = run("send", f"unixgram://{socket_path}", "hi")
    assert sent.returncode == 0, sent.stderr
    assert server.finish() == 0, server.err
    with open(trace_path, "rb") as raw:
        data = raw.read()
    assert not any(b < 0x20 and b != 0x0A for b in data)
    events = [json.loads(line) for line in data.splitlines()]
    bind = next(e for e in events if e["call"] == "bind")
    assert "a\\nb\\x1b[31m.sock" in bind["local"], bind


def test_help_loads_neither_the_trace_file_nor_the_diagrams() -> None:
    code = "import sys\nfrom enchufe.cli import main\ntry:\n main(['--help'])\nexcept SystemExit:\n pass\n"
    code += "print(sorted(m for m in sys.modules if 'tracefile' in m or 'diagram' in m))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=STEP, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("diagram", "{folder}/none.jsonl"), ("does not exist",)),
        (("diagram", "{folder}/bad.jsonl"), ("line 2", "not a trace event")),
        (("diagram", "{folder}/good.jsonl", "-o", "{folder}/d.txt"), (".md", ".mmd", ".svg", ".png")),
        (("tour", "--diagram", "{folder}/t.html"), (".md", ".mmd", ".svg", ".png")),
        (("--trace-file", "{folder}/no/such/dir/t.jsonl", "tour"), ("cannot write", "No such file")),
        (("--trace-file", "{folder}/link.jsonl", "tour"), ("cannot write",)),
    ],
)
def test_bad_input_is_one_line_and_status_2(
    tmp_path: object, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    folder = str(tmp_path)
    with open(os.path.join(folder, "bad.jsonl"), "w") as bad:
        bad.write('{"pid": 1, "call": "close", "fd": 3}\n[1, 2]\n')
    with open(os.path.join(folder, "good.jsonl"), "w") as good:
        good.write('{"pid": 1, "call": "close", "fd": 3, "monotonic": 1.0}\n')
    os.symlink(os.path.join(folder, "elsewhere"), os.path.join(folder, "link.jsonl"))
    ran = run_here(*(arg.format(folder=folder) for arg in args))
    assert ran.returncode == 2, ran
    assert_one_error_line(ran.stderr, *needles)
    assert not os.path.exists(os.path.join(folder, "elsewhere"))


def test_tour_diagram_markdown_has_every_kind(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "tour.md")
    done = run("tour", "--diagram", path)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert done.stderr.decode().strip() == f"enchufe: wrote {path}"
    with open(path, encoding="utf-8") as out:
        text = out.read()
    assert text.count("```mermaid\nsequenceDiagram\n") == 7
    for kind in ("tcp4", "tcp6", "udp4", "udp6", "unix", "unixgram", "tls"):
        assert f"## {kind}: AF_" in text


def test_diagram_help_examples_parse(tmp_path: object) -> None:
    """The examples of `enchufe diagram --help`, parsed as the CLI parses them (their trace
    files made first, as the examples before them would)."""
    with click.Context(cli) as ctx:
        command = cli.get_command(ctx, "diagram")
    assert command is not None and "Examples:" in (command.help or "")
    lines = [line.strip() for line in (command.help or "").split("Examples:", 1)[1].splitlines()]
    own = [shlex.split(line)[1:] for line in lines if line.startswith("enchufe diagram ")]
    assert len(own) == 2
    cwd = os.getcwd()
    os.chdir(str(tmp_path))
    try:
        for name in ("server.jsonl", "client.jsonl"):
            open(name, "w").close()
        for argv in own:
            with command.make_context("diagram", argv[1:]) as parsed:
                assert parsed.params["traces"] == ("server.jsonl", "client.jsonl")
    finally:
        os.chdir(cwd)


def test_an_existing_trace_file_others_may_read_is_refused_and_kept(tmp_path: object) -> None:
    """The trace holds peer data: a file left readable (or made by someone else in /tmp) is not
    written to; one of this user with mode 600 is emptied and used."""
    path = os.path.join(str(tmp_path), "t.jsonl")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"old\n")
    os.close(fd)
    os.chmod(path, 0o644)  # whatever the umask made of it
    ran = run_here("--trace-file", path, "send", "udp://127.0.0.1:9", "x")
    assert ran.returncode == 2, ran
    assert_one_error_line(ran.stderr, "mode 644", "mode 600")
    with open(path, "rb") as kept:
        assert kept.read() == b"old\n"
    os.chmod(path, 0o600)
    ran = run_here("--trace-file", path, "send", "udp://127.0.0.1:9", "x")
    assert ran.returncode == 0, ran
    with open(path, encoding="utf-8") as lines:
        assert json.loads(lines.readline())["call"] == "socket"

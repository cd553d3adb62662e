"""Rendered diagrams parse: Mermaid has the participants and messages, SVG is XML, PNG decodes."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from enchufe.diagram.files import write
from enchufe.diagram.mermaid import markdown, mermaid
from enchufe.diagram.model import Diagram

KINDS = ["tcp4", "tcp6", "udp4", "udp6", "unix", "unixgram", "tls"]
STREAM_MESSAGES = [
    "P1-->>P0: connect",
    "P1->>P0: 33 B #quot;hello, server: th…#quot;",
    "P1--)P0: EOF (shutdown)",
    "P0->>P1: 33 B #quot;HELLO, SERVER: TH…#quot;",
    "P0--)P1: EOF (close)",
]
DATAGRAM_MESSAGES = [
    "P1-)P0: 33 B #quot;hello, server: th…#quot;",
    "P0-)P1: 33 B #quot;HELLO, SERVER: TH…#quot;",
]


def messages(text: str) -> list[str]:
    skipped = ("sequenceDiagram", "%%", "participant ", "Note over ")
    return [line.strip() for line in text.splitlines() if not line.strip().startswith(skipped)]


@pytest.mark.parametrize("kind", KINDS[:-1])
def test_mermaid_has_the_participants_and_messages(tour_diagrams: dict[str, Diagram], kind: str) -> None:
    diagram = tour_diagrams[kind]
    text = mermaid(diagram)
    lines = text.splitlines()
    assert lines[0] == "sequenceDiagram"
    assert lines[2].startswith("    participant P0 as server<br/>")
    assert lines[3].startswith("    participant P1 as client")
    stream = kind in ("tcp4", "tcp6", "unix")
    assert messages(text) == (STREAM_MESSAGES if stream else DATAGRAM_MESSAGES)
    notes = [line for line in lines if line.startswith("    Note over P")]
    assert len(notes) == len(diagram.steps)
    assert "accept(" in text if stream else "recvfrom(" in text
    # Nothing a step or a peer says can end a line or start a statement: one message, one line.
    assert all(
        ";" not in line.replace("#59;", "").replace("#35;", "").replace("#quot;", "") for line in lines
    )


def test_markdown_has_one_fenced_block_per_kind(tour_diagrams: dict[str, Diagram]) -> None:
    text = markdown([tour_diagrams[kind] for kind in KINDS])
    assert text.count("```mermaid\nsequenceDiagram\n") == len(KINDS)
    assert text.count("\n```\n") + text.endswith("```\n") >= len(KINDS)
    assert [line[3:].split(":")[0] for line in text.splitlines() if line.startswith("## ")] == KINDS


@pytest.mark.parametrize("kind", ["tcp4", "unixgram", "tls"])
def test_svg_is_xml_with_the_calls_as_text(
    tour_diagrams: dict[str, Diagram], kind: str, tmp_path: object
) -> None:
    pytest.importorskip("matplotlib", reason="SVG and PNG diagrams need matplotlib (the plot extra)")
    path = os.path.join(str(tmp_path), f"{kind}.svg")
    assert write([(kind, tour_diagrams[kind])], path) == [path]
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = "\n".join("".join(node.itertext()) for node in root.iter("{http://www.w3.org/2000/svg}text"))
    for needle in ("server", "client", "socket(", "close(fd"):
        assert needle in texts, needle
    assert ("accept(" in texts) if kind != "unixgram" else ("recvfrom(" in texts)


def test_png_decodes(tour_diagrams: dict[str, Diagram], tmp_path: object) -> None:
    pytest.importorskip("matplotlib", reason="SVG and PNG diagrams need matplotlib (the plot extra)")
    from matplotlib.image import imread

    path = os.path.join(str(tmp_path), "tour.png")
    written = write([(kind, tour_diagrams[kind]) for kind in ("tcp4", "udp4")], path)
    assert written == [os.path.join(str(tmp_path), f"tour-{k}.png") for k in ("tcp4", "udp4")]
    for one in written:
        with open(one, "rb") as png:
            head = png.read(24)
        assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
        width, height = struct.unpack(">II", head[16:24])
        pixels = imread(one)
        assert pixels.shape[:2] == (height, width) and width > 300 and height > 300


def test_mmd_and_md_need_no_matplotlib(tour_diagrams: dict[str, Diagram], tmp_path: object) -> None:
    """With matplotlib unimportable, .mmd and .md are written and .svg is refused in one line,
    exit status 2, that suggests Mermaid."""
    folder = str(tmp_path)
    trace = os.path.join(folder, "tcp4.jsonl")
    with open(trace, "w", encoding="utf-8") as out:
        out.writelines(json.dumps(dict(step.event)) + "\n" for step in tour_diagrams["tcp4"].steps)
    code = "import sys; sys.modules['matplotlib'] = None; from enchufe.cli import main; main(sys.argv[1:])"
    for name in ("d.mmd", "d.md", "d.svg"):
        done = subprocess.run(
            [sys.executable, "-c", code, "diagram", trace, "-o", name],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=folder,
        )
        if name == "d.svg":
            assert done.returncode == 2, done
            (line,) = done.stderr.splitlines()
            assert "needs matplotlib, which is not installed" in line and ".mmd" in line, line
            assert not os.path.exists(os.path.join(folder, name))
        else:
            assert done.returncode == 0, done.stderr
            with open(os.path.join(folder, name), encoding="utf-8") as written:
                assert "sequenceDiagram\n" in written.read()


def test_a_picture_of_too_many_calls_is_refused_in_one_line(tmp_path: object) -> None:
    pytest.importorskip("matplotlib", reason="SVG and PNG diagrams need matplotlib (the plot extra)")
    from enchufe.diagram.draw import MAX_STEPS
    from enchufe.diagram.model import build
    from enchufe.errors import UsageError

    events = [
        {"pid": 1, "call": "recv", "fd": 3, "size": 1, "monotonic": float(n), "line": "recv(fd 3, 1) = 1"}
        for n in range(MAX_STEPS + 1)
    ]
    path = os.path.join(str(tmp_path), "big.png")
    with pytest.raises(UsageError, match=r"too many for one picture .*\.mmd"):
        write([("big", build(events))], path)
    assert not os.path.exists(path)


def _svg_texts(path: str) -> list[str]:
    root = ET.parse(path).getroot()
    return ["".join(node.itertext()) for node in root.iter("{http://www.w3.org/2000/svg}text")]


def test_long_texts_are_wrapped(tour_diagrams: dict[str, Diagram], tmp_path: object) -> None:
    """A call's text longer than WRAP characters goes on more lines (the unix paths of unixgram),
    and a title longer than the picture is wide on more lines (the TLS leg's story)."""
    pytest.importorskip("matplotlib", reason="SVG and PNG diagrams need matplotlib (the plot extra)")
    from enchufe.diagram.draw import WRAP

    unixgram = tour_diagrams["unixgram"]
    long_calls = [step.text for step in unixgram.steps if len(step.text) > WRAP]
    assert long_calls, [step.text for step in unixgram.steps]
    path = os.path.join(str(tmp_path), "unixgram.svg")
    write([("unixgram", unixgram)], path)
    texts = _svg_texts(path)
    calls = [t for t in texts if "(fd " in t or t.startswith("  ")]
    assert calls and all(len(t) <= WRAP for t in calls), [t for t in calls if len(t) > WRAP]
    # Each long call reads whole again from its lines.
    for text in long_calls:
        words = text.split()
        first = next(n for n, t in enumerate(texts) if t.split() == words[: len(t.split())] and t.split())
        joined = " ".join(" ".join(t.split()) for t in texts[first : first + 3])
        assert joined.startswith(" ".join(words)), (text, texts[first : first + 3])
    tls = tour_diagrams["tls"]
    path = os.path.join(str(tmp_path), "tls.svg")
    write([("tls", tls)], path)
    texts = _svg_texts(path)
    title = [t for t in texts if t.startswith("tls: AF_INET, SOCK_STREAM, TLS:")]
    assert title and title[0] != tls.title and tls.title.startswith(title[0])
    at = texts.index(title[0])
    assert " ".join(texts[at : at + 2]) == tls.title


def test_three_lifelines_stand_apart_and_labels_avoid_the_middle_ones() -> None:
    """Name boxes as wide as long unix paths do not overlap; an arrow from the third lifeline to
    the first has its label in the gap left of the second (where no call's text is)."""
    from enchufe.diagram.draw import _BOX_CHAR, _columns, _label_at
    from enchufe.diagram.model import Lifeline

    lines = [
        Lifeline(
            n,
            100 + n,
            "",
            role,
            name,
            f"/tmp/a-rather-long-folder-for-the-sockets-of-this-test/endpoint-number-{n}.sock",
        )
        for n, (role, name) in enumerate(
            [("server", "server"), ("client", "client 1"), ("client", "client 2")]
        )
    ]
    columns, width = _columns(Diagram("three", lines, [], []))
    boxes = [len(line.address) * _BOX_CHAR for line in lines]
    xs = [columns[n] for n in range(3)]
    assert xs[0] - boxes[0] / 2 > 0 and xs[2] + boxes[2] / 2 < width
    assert all(xs[n + 1] - xs[n] > (boxes[n] + boxes[n + 1]) / 2 for n in range(2)), (xs, boxes)
    for x0, x1 in ((xs[2], xs[0]), (xs[0], xs[2])):
        x, y = _label_at(x0, 10.0, x1, 20.0, columns)
        assert xs[0] < x < xs[1], (x, xs)
        assert 10.0 < y < 20.0
    # Between two neighbours, a third of the way from the sender.
    assert _label_at(xs[1], 0.0, xs[2], 3.0, columns) == pytest.approx((xs[1] + (xs[2] - xs[1]) / 3, 1.0))

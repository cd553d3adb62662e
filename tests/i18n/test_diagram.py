"""Sequence diagrams in Spanish: lifeline names, marks, arrow labels and the words in each call's
text follow the language; calls, constants and addresses are as traced.  From a real tour (in
this process) and from two real processes' --trace-file outputs (``enchufe diagram``)."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from enchufe import i18n, tour
from enchufe.diagram.mermaid import mermaid
from enchufe.diagram.model import Diagram, build, summary
from tests.cli.conftest import Spawn, run, spawn  # noqa: F401  (spawn: the fixture)
from tests.cli.test_cli_diagram import traced_call

#: What a call that waited says, in Spanish (how long varies).
WAITED = re.compile(
    r"^(bloqueado [\d.]+ ms en \w+\(\) esperando (el connect\(\)|los bytes|el EOF|el datagrama)"
    r"|esperó [\d.]+ ms (el connect\(\)|los bytes|el EOF|el datagrama))$"
)


@pytest.fixture(scope="module")
def spanish_diagrams() -> dict[str, Diagram]:
    """Each leg of one real tour, recorded and built in Spanish (English again afterwards: the
    diagrams keep their words, and the tests after these speak English)."""
    i18n.set_language("es")
    try:
        results = tour.run(io.StringIO(), record=True)
        assert all(r.ok for r in results), [(r.label, r.error) for r in results]
        return {r.label: build(r.events, f"{r.label}: {r.header}") for r in results}
    finally:
        i18n.set_language("en")


def _marks(diagram: Diagram, call: str) -> list[str]:
    return [mark for step in diagram.steps if step.call == call for mark in step.marks]


@pytest.mark.parametrize("kind", ["tcp4", "tcp6", "unix", "tls"])
def test_stream_diagrams_in_spanish(spanish_diagrams: dict[str, Diagram], kind: str) -> None:
    diagram = spanish_diagrams[kind]
    assert [(line.name, line.role) for line in diagram.lifelines] == [
        ("servidor", "server"),
        ("cliente", "client"),
    ]
    assert diagram.calls("servidor")[:1] == ["socket"] and "accept" in diagram.calls("servidor")
    if kind == "unix":  # the client's socket has no name, and the box says so in Spanish
        assert diagram.lifelines[1].address == "(sin nombre)"
    assert "apertura activa" in _marks(diagram, "connect")
    accept = _marks(diagram, "accept")
    assert accept[0] == "apertura pasiva"
    assert all(WAITED.match(m) or m.endswith(" ms en espera en la cola (backlog)") for m in accept[1:]), (
        accept
    )
    ends = _marks(diagram, "shutdown") + _marks(diagram, "close")
    assert ("fin de los datos" if kind == "unix" else "fin de los datos (FIN)") in ends, ends
    eof = [step for step in diagram.steps if step.text.endswith(" = 0 (EOF: fin de los datos)")]
    assert eof and all("EOF" in step.marks for step in eof[:1]), [s.text for s in diagram.steps]
    arrows = summary(diagram)
    assert arrows[0] == ("connect", "cliente", "servidor", "connect")
    # Over TLS the ends of data are close_notify records, then the server's TCP close.
    end = (
        ("eof", "servidor", "cliente", "EOF (close)")
        if kind == "tls"
        else ("eof", "cliente", "servidor", "EOF (shutdown)")
    )
    assert end in arrows, arrows
    if kind == "tls":
        labels = {a[3].split(" B ", 1)[1] for a in arrows if a[0] == "bytes"}
        assert {"negociación TLS", "datos TLS"} <= labels, labels
        tls_text = {step.text.split(": ", 1)[1] for step in diagram.steps if step.call == "tls"}
        assert {"negociación como servidor", "negociación como cliente", "acordado"} <= tls_text, tls_text
    else:
        assert ("bytes", "cliente", "servidor", '33 B "hello, server: th…"') in arrows
    for step in diagram.steps:
        assert not step.wait_mark or WAITED.match(step.wait_mark), step.wait_mark
        assert " bound to " not in step.text and " from " not in step.text, step.text


@pytest.mark.parametrize("kind", ["udp4", "udp6", "unixgram"])
def test_datagram_diagrams_in_spanish(spanish_diagrams: dict[str, Diagram], kind: str) -> None:
    diagram = spanish_diagrams[kind]
    assert [line.name for line in diagram.lifelines] == ["servidor", "cliente"]
    assert [a[:3] for a in summary(diagram)] == [
        ("datagram", "cliente", "servidor"),
        ("datagram", "servidor", "cliente"),
    ]
    recvfrom = [step.text for step in diagram.steps if step.call == "recvfrom"]
    assert all(" = 33 bytes desde " in text for text in recvfrom), recvfrom
    sendto = next(step.text for step in diagram.steps if step.call == "sendto")
    assert sendto.endswith(", 33 bytes, el otro extremo conectado) = 33"), sendto


def test_mermaid_in_spanish(spanish_diagrams: dict[str, Diagram]) -> None:
    text = mermaid(spanish_diagrams["tcp4"])
    server = spanish_diagrams["tcp4"].lifelines[0].address
    assert f"    participant P0 as servidor<br/>{server}\n" in text
    assert re.search(r"^    participant P1 as cliente<br/>127\.0\.0\.1:\d+$", text, re.MULTILINE), text
    assert re.search(
        r"^    Note over P1: connect\(fd \d+, 127\.0\.0\.1:\d+\) = 0<br/>apertura activa", text, re.M
    )
    assert re.search(
        r"^    Note over P0: accept\(fd \d+\) = fd \d+ desde 127\.0\.0\.1:\d+<br/>apertura pasiva", text, re.M
    )
    assert re.search(r"^    P1--\)P0: EOF \(shutdown\)$", text, re.MULTILINE), text
    assert "%% tcp4: AF_INET, SOCK_STREAM: una llamada telefónica por IPv4" in text


def test_diagram_of_two_real_processes_in_spanish(spawn: Spawn, tmp_path: Path) -> None:  # noqa: F811
    """``enchufe --lang es diagram server.jsonl client.jsonl -o call.md``, and the same as SVG."""
    server_trace, client_trace = traced_call(spawn, str(tmp_path))
    out = tmp_path / "call.md"
    done = run("--lang", "es", "diagram", server_trace, client_trace, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode() == f"enchufe: se escribió {out}\n"
    text = out.read_text(encoding="utf-8")
    assert re.search(
        r"^    participant P0 as servidor \(pid \d+\)<br/>127\.0\.0\.1:\d+$", text, re.MULTILINE
    ), text
    assert re.search(r"^    participant P1 as cliente \(pid \d+\)", text, re.MULTILINE), text
    assert "apertura activa" in text and "apertura pasiva" in text and "fin de los datos (FIN)" in text
    assert "    P1->>P0: 6 B #quot;hello\\n#quot;\n" in text
    assert "(EOF: fin de los datos)" in text
    # English when asked, from the same files: the words come from the language, not the files.
    english = run("diagram", server_trace, client_trace, "--lang", "en")
    assert english.returncode == 0, english.stderr
    assert b"participant P0 as server (pid " in english.stdout and b"active open" in english.stdout
    assert b"servidor" not in english.stdout and b"apertura" not in english.stdout
    pytest.importorskip("matplotlib")
    svg = tmp_path / "call.svg"
    done = run("diagram", server_trace, client_trace, "-o", str(svg), "--lang", "es")
    assert done.returncode == 0, done.stderr
    texts = {"".join(node.itertext()) for node in ET.parse(svg).iter() if node.tag.endswith("text")}
    assert any(t.startswith("servidor (pid ") for t in texts), texts
    assert "apertura activa" in texts and "apertura pasiva" in texts, texts

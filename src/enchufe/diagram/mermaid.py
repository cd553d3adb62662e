"""A diagram as Mermaid text: a ``sequenceDiagram`` that GitHub, GitLab and mermaid.live draw.

Each call is a note over its lifeline, in order; an arrow is written right after the call that
sent it (Mermaid draws messages level, so the receiving call's note comes after it): ``->>``
bytes, ``-)`` a datagram, ``-->>`` a connection, ``--)`` an end of data.  An arrow nobody took
is a note on its sender.  Labels are escaped for Mermaid (``#``, ``;``, ``<``, ``>`` as entity
codes), after the trace escaped every control character.
"""

from __future__ import annotations

from ..i18n import _
from .model import Arrow, Diagram

__all__ = ["markdown", "mermaid", "text"]

_ARROWS = {"bytes": "->>", "datagram": "-)", "connect": "-->>", "eof": "--)"}
_ENTITIES = {"#": "#35;", ";": "#59;", "<": "#lt;", ">": "#gt;", '"': "#quot;"}


def text(label: str) -> str:
    """``label`` made safe as Mermaid message or note text."""
    return "".join(_ENTITIES.get(ch, ch) for ch in label)


def mermaid(diagram: Diagram) -> str:
    """The ``sequenceDiagram`` source (no fences)."""
    ids = {line.index: f"P{n}" for n, line in enumerate(diagram.lifelines)}
    lines = ["sequenceDiagram"]
    if diagram.title:
        lines.append(f"    %% {text(diagram.title)}")
    for line in diagram.lifelines:
        where = f"<br/>{text(line.address)}" if line.address else ""
        lines.append(f"    participant {ids[line.index]} as {text(line.name)}{where}")
    sent: dict[int, list[Arrow]] = {}
    for arrow in diagram.arrows:
        sent.setdefault(arrow.source, []).append(arrow)
    for step in diagram.steps:
        marks = "".join(f"<br/>{text(mark)}" for mark in step.marks)
        lines.append(f"    Note over {ids[step.lifeline]}: {text(step.text)}{marks}")
        for arrow in sent.get(step.index, []):
            source = ids[step.lifeline]
            if arrow.target is None:
                untaken = _("{label}: no call took it").format(label=arrow.label)
                lines.append(f"    Note over {source}: {text(untaken)}")
                continue
            target = ids[diagram.steps[arrow.target].lifeline]
            lines.append(f"    {source}{_ARROWS[arrow.kind]}{target}: {text(arrow.label)}")
    return "\n".join(lines) + "\n"


def markdown(diagrams: list[Diagram]) -> str:
    """Each diagram under a heading (its title), in a ```mermaid fence."""
    parts = []
    for diagram in diagrams:
        if diagram.title:
            parts.append(f"## {diagram.title}\n")
        parts.append(f"```mermaid\n{mermaid(diagram)}```\n")
    return "\n".join(parts)

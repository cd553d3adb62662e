"""Trace files in, diagram files out, the format chosen by the file's suffix.

``.md``: Markdown with one fenced Mermaid block per diagram (a heading each).  ``.mmd``: raw
Mermaid, ``.svg`` and ``.png``: matplotlib; these hold one diagram, so several diagrams (the
tour's kinds) go to one file each, named after the given one: ``tour.svg`` → ``tour-tcp4.svg``…
"""

from __future__ import annotations

import json
import os
from typing import Any

from .._text import printable, quoted
from ..errors import UsageError
from ..i18n import _
from .model import Diagram

__all__ = ["FORMATS", "check_format", "read_events", "write"]

FORMATS = (".md", ".mmd", ".svg", ".png")


def check_format(path: str, option: str) -> str:
    """The suffix of ``path`` if it is one we write; else UsageError naming what is accepted.
    For .svg/.png, also that matplotlib is there."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in FORMATS:
        raise UsageError(
            _(
                "{option} {path}: the name must end in .md or .mmd (Mermaid text), .svg or .png (matplotlib)"
            ).format(option=option, path=quoted(path))
        )
    if suffix in (".svg", ".png"):
        from .draw import require

        require(f"{option} {quoted(path)}")
    return suffix


def read_events(path: str) -> list[dict[str, Any]]:
    """The events of a ``--trace-file`` output; UsageError for a line that is not one."""
    events = []
    try:
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if not isinstance(event, dict) or "call" not in event or "pid" not in event:
                    raise UsageError(
                        _(
                            "{path} line {number}: not a trace event "
                            "(expected the JSON objects, one per line, that --trace-file writes)"
                        ).format(path=quoted(path), number=number)
                    )
                events.append(event)
    except UnicodeDecodeError:
        raise UsageError(
            _("{path}: not UTF-8 text (expected a --trace-file output)").format(path=quoted(path))
        ) from None
    return events


def write(diagrams: list[tuple[str, Diagram]], path: str) -> list[str]:
    """Write the (label, diagram) pairs to ``path`` in its format; the files written."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".md":
        from .mermaid import markdown

        _save(path, markdown([d for _label, d in diagrams]))
        return [path]
    written = []
    stem = path[: -len(suffix)]
    for label, diagram in diagrams:
        target = path if len(diagrams) == 1 else f"{stem}-{label}{suffix}"
        if suffix == ".mmd":
            from .mermaid import mermaid

            _save(target, mermaid(diagram))
        else:
            from .draw import draw

            draw(diagram, target, suffix[1:])
        written.append(target)
    return written


def _save(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write(text)


def title_of(paths: list[str]) -> str:
    """A merged diagram's title: the trace files it came from."""
    return " + ".join(printable(os.path.basename(p)) for p in paths)

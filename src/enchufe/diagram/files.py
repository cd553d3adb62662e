"""Trace files in, diagram files out, the format chosen by the file's suffix.

``.md``: Markdown with one fenced Mermaid block per diagram (a heading each).  ``.mmd``: raw
Mermaid, ``.svg`` and ``.png``: matplotlib; these hold one diagram, so several diagrams (the
tour's kinds) go to one file each, named after the given one: ``tour.svg`` → ``tour-tcp4.svg``…
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import stat
from collections.abc import Callable
from typing import IO, Any

from .._text import printable, quoted
from ..errors import EnchufeError, UsageError, reason
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
            from .draw import check_size, draw

            check_size(diagram)  # before any file is made
            _replace(target, functools.partial(draw, diagram, fmt=suffix[1:]))
        written.append(target)
    return written


def _save(path: str, text: str) -> None:
    _replace(path, lambda out: out.write(text.encode("utf-8")))


def _replace(path: str, fill: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` whole or not at all: ``fill`` writes a temporary file in the same folder,
    created with the mode ``path`` will have (an existing file's, else what the umask leaves of
    rw-rw-rw-, as open() would), which then replaces it by rename(2).  A reader never sees half a
    diagram, and a failure leaves the old file as it was and no temporary one behind.

    EnchufeError, saying why, when the folder does not exist or cannot be written.
    """
    folder, name = os.path.split(path)
    try:
        mode: int | None = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = None  # a new file (or one we cannot see: the rename says what is wrong)
    temporary = ""
    try:
        fd, temporary = _create(folder or ".", name, 0o666 if mode is None else mode)
        with os.fdopen(fd, "wb") as out:
            if mode is not None:
                os.fchmod(out.fileno(), mode)  # exactly the old file's, whatever the umask
            fill(out)
            out.flush()
            os.fsync(out.fileno())  # the new content is on disk before it takes the name
        os.replace(temporary, path)
    except BaseException as exc:
        if temporary:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        if isinstance(exc, OSError):
            message = _("cannot write {path}: {reason} (give a path in a folder you can write to)")
            raise EnchufeError(message.format(path=quoted(path), reason=reason(exc, lower=False))) from None
        raise


def _create(folder: str, name: str, mode: int) -> tuple[int, str]:
    """A new file next to ``name`` in ``folder`` (a hidden name of its own), created with ``mode``
    (less the umask), open for writing: (descriptor, path)."""
    for _attempt in range(100):
        path = os.path.join(folder, f".{name}.{os.urandom(4).hex()}.tmp")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode), path
        except FileExistsError:
            continue
    raise FileExistsError(os.path.join(folder, f".{name}.*.tmp"))


def title_of(paths: list[str]) -> str:
    """A merged diagram's title: the trace files it came from."""
    return " + ".join(printable(os.path.basename(p)) for p in paths)

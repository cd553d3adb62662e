"""A diagram drawn as SVG or PNG with matplotlib (the optional extra ``plot``).

The lifelines are vertical lines, one column each, their name and address on top; time runs
down, one row per call, its text beside its lifeline (left of the first, right of the others).
Arrows go from the row of the call that sent to the row of the call that took it: bytes blue,
datagrams purple, connections green, ends of data grey and dashed.  A call that waited for the
other side has an orange bar on its lifeline, from the call before it, and says how long: solid
when it waited inside the call (blocked), dotted when the process waited elsewhere (poll()).
Long texts are wrapped (a call's text and its marks at WRAP characters, the title at the
picture's width); an arrow's label sits in a gap between lifelines that no call's text uses
when the arrow crosses other lifelines, and the label of an arrow nobody took points away from
its lifeline.

matplotlib is imported only here, through its object-oriented API (no pyplot, no display);
SVG keeps its text as text (``svg.fonttype: none``), so the calls can be searched and selected.
"""

from __future__ import annotations

import textwrap
from typing import IO, Any

from ..errors import UsageError
from ..i18n import _
from .model import Arrow, Diagram, Step

__all__ = ["DrawUnavailable", "draw", "require"]

INSTALL_HINT = "pip install 'enchufe[plot]' (or pip install matplotlib)"

_COLORS = {"bytes": "#1f5fbf", "datagram": "#7b2fa8", "connect": "#2e8b3a", "eof": "#7f7f7f"}
_BLOCKED = "#e07b00"
_ROW = 0.26  # inches per row
_COLUMN = 4.2  # inches between lifelines, at least
_CHAR = 0.065  # inches per character of a step's text (7.5 pt monospace, with room)
_BOX_CHAR = 0.08  # inches per character of a lifeline's name or address (9 pt, with room)
#: A picture of more calls than this would be taller than a PNG may be (65536 pixels).
MAX_STEPS = 1500
#: A call's text or mark longer than this many characters goes on more lines.
WRAP = 60
_LINE = 0.48  # rows per line of a step's text (7.5 pt, spaced 1.2)
_MARK = 0.75  # rows per mark line
_TITLE_LINE = 0.8  # rows per line of the title (11 pt bold)
_TITLE_CHAR = 0.095  # inches per character of the title


class DrawUnavailable(UsageError):
    """matplotlib is not installed."""


def require(what: str) -> None:
    """Raise :class:`DrawUnavailable` (one line, exit status 2) unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise DrawUnavailable(
            _(
                "{what} needs matplotlib, which is not installed: {install}; "
                "or write Mermaid text instead (.mmd or .md), which needs nothing"
            ).format(what=what, install=INSTALL_HINT)
        ) from None


def _wrapped(text: str, width: int = WRAP) -> list[str]:
    """``text`` on lines of at most ``width`` characters where it has spaces to break at; the
    lines after the first indented (they continue a call's text)."""
    return textwrap.wrap(
        text, width, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False
    ) or [text]


def _rows(diagram: Diagram) -> dict[int, float]:
    """Each step's row (a step with marks, or a long text, takes more room)."""
    rows = {}
    y = 0.0
    for step in diagram.steps:
        rows[step.index] = y
        extra = len(_wrapped(step.text)) - 1
        y += 1.0 + _LINE * extra + _MARK * sum(len(_wrapped(mark)) for mark in step.marks)
    return rows


def check_size(diagram: Diagram) -> None:
    """UsageError if ``diagram`` has too many calls for one picture."""
    if len(diagram.steps) > MAX_STEPS:
        raise UsageError(
            _(
                "the trace has {calls} calls, too many for one picture (at most {most}): "
                "write Mermaid text instead (.mmd or .md), or trace a shorter run"
            ).format(calls=len(diagram.steps), most=MAX_STEPS)
        )


def draw(diagram: Diagram, out: str | IO[bytes], fmt: str) -> None:
    """Write ``diagram`` to ``out`` (a path or a binary file) as ``fmt`` (``svg`` or ``png``)."""
    require(f"a .{fmt} diagram")
    check_size(diagram)
    import matplotlib
    from matplotlib.figure import Figure

    rows = _rows(diagram)
    columns, width = _columns(diagram)
    title = _wrapped(diagram.title, int((width - 0.3) / _TITLE_CHAR)) if diagram.title else []
    top = -3.2 - _TITLE_LINE * max(len(title) - 1, 0)
    bottom = max(rows.values(), default=0.0) + 1.5
    height = (bottom - top - 0.7) * _ROW + 0.8
    figure = Figure(figsize=(width, height))
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.set_axis_off()
    axes.set_xlim(0.0, width)  # x in inches
    axes.set_ylim(bottom, top)
    if title:
        # The title's continuation lines are not indented: it is a sentence, not a call.
        text = "\n".join(line.strip() for line in title)
        _text(axes, 0.15, -2.3, text, fontsize=11, weight="bold", va="bottom")
    for line in diagram.lifelines:
        x = columns[line.index]
        axes.plot([x, x], [-1.0, bottom - 0.5], color="#555555", linewidth=1, zorder=1)
        label = line.name + (f"\n{line.address}" if line.address else "")
        box = {"boxstyle": "round,pad=0.4", "facecolor": "#eef2f8", "edgecolor": "#555555"}
        _text(axes, x, -1.4, label, ha="center", va="center", fontsize=9, bbox=box, zorder=3)
    previous: dict[int, float] = {}
    first = diagram.lifelines[0].index if diagram.lifelines else -1
    for step in diagram.steps:
        x = columns[step.lifeline]
        _step(axes, step, x, rows[step.index], previous.get(step.lifeline, -1.0), step.lifeline == first)
        previous[step.lifeline] = rows[step.index]
    for arrow in diagram.arrows:
        _arrow(axes, diagram, arrow, columns, rows)
    with matplotlib.rc_context({"svg.fonttype": "none", "font.family": "DejaVu Sans"}):
        figure.savefig(out, format=fmt, dpi=100)


def _columns(diagram: Diagram) -> tuple[dict[int, float], float]:
    """Each lifeline's x and the figure's width, in inches: room for the longest text beside
    each line (left of the first, right of the others) and for the arrows' labels between."""
    widths = [
        max(
            (
                len(part)
                for s in diagram.steps
                if s.lifeline == line.index
                for text in [s.text, *s.marks]
                for part in _wrapped(text)
            ),
            default=10,
        )
        * _CHAR
        for line in diagram.lifelines
    ]
    # A lifeline's name box is centred on it: neighbours stand far enough apart for two boxes.
    boxes = [max(len(line.name), len(line.address)) * _BOX_CHAR + 0.3 for line in diagram.lifelines]
    columns: dict[int, float] = {}
    x = max(widths[0] + 0.3, boxes[0] / 2 + 0.15) if widths else 1.0
    for n, line in enumerate(diagram.lifelines):
        if n == 1:
            x += max(_COLUMN, (boxes[0] + boxes[1]) / 2 + 0.2)
        elif n > 1:
            x += max(_COLUMN, widths[n - 1] + 1.2, (boxes[n - 1] + boxes[n]) / 2 + 0.2)
        columns[line.index] = x
    width = x + max(widths[-1] if len(widths) > 1 else 1.0, boxes[-1] / 2 if boxes else 0.0) + 0.3
    return columns, max(width, 6.0)


def _text(axes: Any, x: float, y: float, text: str, **style: Any) -> None:
    """Text as it is: a ``$`` in a peer's bytes is not the start of a formula (parse_math off)."""
    axes.text(x, y, text, parse_math=False, **style)


def _step(axes: Any, step: Step, x: float, y: float, before: float, first: bool) -> None:
    if step.waited:
        style = "-" if step.blocked else ":"
        axes.plot(
            [x, x], [before + 0.3, y], color=_BLOCKED, linewidth=5, linestyle=style, alpha=0.8, zorder=2
        )
    axes.plot([x], [y], marker="o", markersize=3.5, color="#333333", zorder=4)
    offset = -0.12 if first else 0.12
    align = "right" if first else "left"
    lines = _wrapped(step.text)
    for n, line in enumerate(lines):
        # Each line on its own, so that a right-aligned text keeps its indent on the left.
        _text(
            axes,
            x + offset,
            y + _LINE * n,
            line,
            ha=align,
            va="center",
            fontsize=7.5,
            family="monospace",
            zorder=4,
        )
    below = y + _LINE * (len(lines) - 1)
    for mark in step.marks:
        color = _BLOCKED if mark == step.wait_mark else "#2e6b3a"
        for part in _wrapped(mark):
            below += _MARK
            _text(
                axes,
                x + offset,
                below,
                part.strip(),
                ha=align,
                va="center",
                fontsize=7,
                style="italic",
                color=color,
            )


def _arrow(
    axes: Any, diagram: Diagram, arrow: Arrow, columns: dict[int, float], rows: dict[int, float]
) -> None:
    source = diagram.steps[arrow.source]
    x0, y0 = columns[source.lifeline], rows[arrow.source]
    if arrow.target is None:
        leftmost = source.lifeline == diagram.lifelines[0].index
        x1 = x0 + (1.4 if leftmost else -1.4)
        y1 = y0 + 0.4
    else:
        x1, y1 = columns[diagram.steps[arrow.target].lifeline], rows[arrow.target]
    if x0 == x1:
        return  # a process talking to itself: the calls say it
    label_x, label_y = _label_at(x0, y0, x1, y1, columns)
    color = _COLORS[arrow.kind]
    style = "--" if arrow.kind in ("eof", "connect") else "-"
    props = {
        "arrowstyle": "-|>",
        "color": color,
        "linestyle": style,
        "linewidth": 1.2,
        "shrinkA": 4,
        "shrinkB": 4,
    }
    axes.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=props, zorder=3)
    box = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}
    look = {"va": "center", "fontsize": 7, "color": color, "bbox": box, "zorder": 5}
    if arrow.target is None:
        # Beyond the stub's end, away from the lifeline and its calls' text.
        label = _("{label}: no call took it").format(label=arrow.label)
        _text(axes, x1 + (0.1 if x1 > x0 else -0.1), y1, label, ha="left" if x1 > x0 else "right", **look)
        return
    _text(axes, label_x, label_y - 0.3, arrow.label, ha="center", **look)


def _label_at(x0: float, y0: float, x1: float, y1: float, columns: dict[int, float]) -> tuple[float, float]:
    """Where an arrow's label goes: a third of the way from the sender, so that the labels of
    two crossing arrows stay apart; for an arrow that crosses other lifelines, that third of the
    leftmost gap it spans (the first lifeline's calls are on its left, so that gap is free of
    text when the arrow starts or ends there; a middle one always holds its left lifeline's)."""
    low, high = sorted((x0, x1))
    between = sorted(x for x in columns.values() if low < x < high)
    if not between:
        x = x0 + (x1 - x0) / 3
    else:
        gap = between[0] - low
        x = low + gap / 3 if x0 < x1 else low + 2 * gap / 3
    return x, y0 + (y1 - y0) * (x - x0) / (x1 - x0)

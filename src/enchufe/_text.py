"""Untrusted text made safe to show on one line.

Peers choose their abstract socket names, unix paths and (through PROXY headers or DNS) much
of what we print about them.  A newline in such a name would start a forged log line; an escape
sequence would drive the user's terminal; a NUL would end a C string early.  Every piece of text
that came from outside and reaches a log line, an event message or a child's environment goes
through :func:`printable` first, at the place where it is built.
"""

from __future__ import annotations

__all__ = ["one_line", "printable", "quoted"]

# Lone surrogates U+DC80..U+DCFF are what ``surrogateescape`` makes of bytes that are not
# UTF-8: showing the original byte (``\xff``) tells the reader what was really there.
_ESCAPED_BYTE_FIRST = 0xDC80
_ESCAPED_BYTE_LAST = 0xDCFF

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def printable(text: str | bytes) -> str:
    r"""``text`` as one printable line: every character that could break or fake a line escaped.

    Escaped, Python-style, so that the result is unambiguous and contains only printable
    characters (never a line break, a terminal escape or a NUL):

    - the backslash itself, as ``\\`` (so that a literal ``\n`` in a name cannot pose as an
      escaped newline);
    - ``\n``, ``\r``, ``\t``; every other C0 control, NUL and DEL as ``\xNN``;
    - C1 controls (U+0080..U+009F), the line and paragraph separators U+2028/U+2029 and every
      other character Python does not call printable (format characters, unassigned code
      points, spaces other than U+0020) as ``\uNNNN`` or ``\UNNNNNNNN``;
    - lone surrogates U+DC80..U+DCFF, which ``surrogateescape`` makes of non-UTF-8 bytes, as the
      byte they stand for (``\xff``); any other lone surrogate as ``\uNNNN``.

    ``bytes`` are decoded as UTF-8 with ``surrogateescape`` first.  Printable text without a
    backslash comes back unchanged (the same object).
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escaped(ch) for ch in text)


def quoted(text: str) -> str:
    """``text`` between single quotes, escaped as :func:`printable` does: a piece of the user's
    input named in a message."""
    return f"'{printable(text)}'"


def _escaped(ch: str) -> str:
    short = _SHORT.get(ch)
    if short is not None:
        return short
    if ch.isprintable():
        return ch
    code = ord(ch)
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if _ESCAPED_BYTE_FIRST <= code <= _ESCAPED_BYTE_LAST:
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def one_line(text: str) -> str:
    r"""``text`` with every character that could end or fake a line escaped (``\n``, ``\x1b``,
    ``\u2028``…), as :func:`printable` escapes them.

    Backslashes are kept as they are: text escaped where it was built (a peer's name) is not
    escaped twice, and no control character survives either way.  This is the last guard before
    stderr: whatever a message carries, one event is one line.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else printable(ch) for ch in text)

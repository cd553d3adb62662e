"""printable(): untrusted text shown on one line, never a line break, a terminal escape or a NUL."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enchufe._text import printable

CASES = [
    ("plain name", "plain name"),
    ("café ☕", "café ☕"),
    ("a\nenchufe: FORGED", "a\\nenchufe: FORGED"),
    ("cr\rlf\ttab", "cr\\rlf\\ttab"),
    ("nul\0end", "nul\\x00end"),
    ("esc\x1b[31mred", "esc\\x1b[31mred"),
    ("del\x7f", "del\\x7f"),
    ("c1\x85next", "c1\\u0085next"),
    ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
    ("bidi\u202eevil", "bidi\\u202eevil"),
    ("nbsp\u00a0", "nbsp\\u00a0"),
    ("back\\slash", "back\\\\slash"),
    (b"bytes\xff\xfe", "bytes\\xff\\xfe"),
    ("raw\udcff", "raw\\xff"),
    ("lone\ud800", "lone\\ud800"),
    ("\U000e0001tag", "\\U000e0001tag"),
]


@pytest.mark.parametrize(("text", "shown"), CASES)
def test_escapes(text: str | bytes, shown: str) -> None:
    assert printable(text) == shown


def test_printable_text_is_returned_unchanged() -> None:
    text = "unix:@ordinary-name"
    assert printable(text) is text


# Surrogates are rare in a uniform draw: ask for them on purpose.
_ANY_CHARACTER = st.characters(exclude_categories=[]) | st.characters(
    min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=[]
)


@given(st.text(alphabet=_ANY_CHARACTER) | st.binary())
def test_result_is_one_printable_line(text: str | bytes) -> None:
    shown = printable(text)
    assert shown.isprintable()
    assert len(shown.splitlines()) <= 1
    shown.encode("utf-8")  # strict: no surrogate survives

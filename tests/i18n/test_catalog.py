"""The Spanish catalog covers every user-facing string, and no user-facing string escapes marking.

Two checks that fail when someone adds English text without Spanish:

- every string marked with ``_()``/``N_()`` in the package (extracted with Babel, as
  ``tools/catalog.py`` does) has a Spanish translation, not fuzzy, with the same ``{fields}``;
- every message given to an enchufe error, a click error or an event line is marked: a string
  literal or f-string there, not wrapped in ``_()``, is English that no catalog can translate.
"""

from __future__ import annotations

import ast
import gettext
import importlib
import pkgutil
import string
import sys
from pathlib import Path

import pytest

babel = pytest.importorskip("babel")
from babel.messages.pofile import read_po  # noqa: E402

import enchufe  # noqa: E402
from enchufe import i18n  # noqa: E402
from enchufe.errors import EnchufeError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(enchufe.__file__).parent
sys.path.insert(0, str(ROOT / "tools"))
import catalog as catalog_tool  # noqa: E402

PO = PACKAGE / "locale" / "es" / "LC_MESSAGES" / "enchufe.po"


def _fields(text: str) -> set[str]:
    return {name for _lit, name, _spec, _conv in string.Formatter().parse(text) if name is not None}


def _spanish() -> dict[str, object]:
    with PO.open("rb") as f:
        return {str(m.id): m for m in read_po(f) if m.id}


def test_every_marked_string_has_a_spanish_translation_with_the_same_fields() -> None:
    spanish = _spanish()
    problems = []
    for message in catalog_tool.extract():
        if not message.id:
            continue
        where = ", ".join(sorted({loc[0] for loc in message.locations}))
        entry = spanish.get(str(message.id))
        text = getattr(entry, "string", "")
        if not text or getattr(entry, "fuzzy", False):
            problems.append(f"no Spanish for {message.id!r} ({where})")
            continue
        if _fields(str(message.id)) != _fields(str(text)):
            problems.append(f"fields differ: {message.id!r} → {text!r} ({where})")
    assert not problems, f"{len(problems)} strings (see `python3 tools/catalog.py missing`):\n" + "\n".join(
        problems
    )


def test_the_compiled_catalog_is_the_source_catalog() -> None:
    """The .mo the package loads says what the .po says (`python3 tools/catalog.py compile`)."""
    mo = PO.with_suffix(".mo")
    assert mo.exists(), "no compiled catalog: install the package, or run tools/catalog.py compile"
    with mo.open("rb") as f:
        compiled = gettext.GNUTranslations(f)
    for msgid, entry in _spanish().items():
        text = getattr(entry, "string", "")
        if text and not getattr(entry, "fuzzy", False):
            assert compiled.gettext(str(msgid)) == text, f"stale .mo for {msgid!r}"


def _error_names() -> set[str]:
    for info in pkgutil.walk_packages(enchufe.__path__, "enchufe."):
        if not info.name.endswith("__main__"):  # that one runs the command
            importlib.import_module(info.name)
    names: set[str] = set()
    todo: list[type] = [EnchufeError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names | {"BadParameter", "UsageError", "ClickException", "BadOptionUsage", "BadArgumentUsage"}


def _is_text(node: ast.expr) -> bool:
    """A literal with words in it, an f-string, or a concatenation/format of those."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and any(c.isalpha() for c in node.value)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp):
        return _is_text(node.left) or _is_text(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return _is_text(node.func.value)
    return False


def _callee(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _unmarked(path: Path, errors: set[str]) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _callee(node)
        if name in ("_", "N_"):
            # A literal; for _(), also a name holding one marked with N_() where it was defined.
            if len(node.args) != 1 or not (
                (isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str))
                or (name == "_" and isinstance(node.args[0], ast.Name | ast.Attribute | ast.Subscript))
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: _() of something not a plain literal")
            continue
        if name in errors and node.args:
            candidates = [node.args[0]]
        elif name == "event" and len(node.args) >= 2:
            candidates = [node.args[1]]
        else:
            continue
        found.extend(
            f"{path.relative_to(ROOT)}:{node.lineno}: {name}() gets unmarked text"
            for arg in candidates
            if _is_text(arg)
        )
    return found


def test_no_user_facing_message_is_left_unmarked() -> None:
    errors = _error_names()
    found = [line for path in sorted(PACKAGE.rglob("*.py")) for line in _unmarked(path, errors)]
    assert not found, f"{len(found)} messages not marked for translation:\n" + "\n".join(found)


def test_spanish_is_used_when_asked_and_english_otherwise() -> None:
    try:
        assert i18n.set_language("es_AR.UTF-8") == "es"
        assert i18n._("missing argument {name}") == "falta el argumento {name}"
        assert i18n.set_language("fr") == "en"
        assert i18n._("missing argument {name}") == "missing argument {name}"
    finally:
        i18n.set_language("en")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "en"),
        ({"LANG": "es_ES.UTF-8"}, "es"),
        ({"LANG": "C.UTF-8"}, "en"),
        ({"LANG": "en_US.UTF-8", "LC_MESSAGES": "es_MX"}, "es"),
        ({"LC_ALL": "en_GB", "LANG": "es_ES"}, "en"),
        ({"LANGUAGE": "fr:es", "LANG": "en_US"}, "es"),
        ({"LANGUAGE": "en:es", "LANG": "es_ES"}, "en"),
    ],
)
def test_the_language_comes_from_the_environment_as_gettext_reads_it(
    environ: dict[str, str], expected: str
) -> None:
    assert i18n.language_from_environment(environ) == expected

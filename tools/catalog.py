"""Keep enchufe's message catalogs with Babel: extract, update, add translations, compile, check.

    python3 tools/catalog.py sync              extract the marked strings, update the Spanish
                                               catalog (new ones untranslated, gone ones kept as
                                               obsolete: --drop-obsolete drops them), compile it
    python3 tools/catalog.py add FILE…         the same, then take translations from FILE
                                               (a .po, or a JSON object {english: spanish})
    python3 tools/catalog.py missing [PATH…]   the strings with no Spanish yet (under PATH…)
    python3 tools/catalog.py compile           .po → .mo (the build does this too: setup.py)

Several people may run it at once in one working tree: each run holds a lock on the catalog
from reading it to writing it, so no run loses another's translations.  Fuzzy matching is off:
a changed English string gets no guessed translation, it shows up in ``missing``.
"""

from __future__ import annotations

import fcntl
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "enchufe"
LOCALE = PACKAGE / "locale"
TEMPLATE = LOCALE / "enchufe.pot"
LANGUAGES = ("es",)
KEYWORDS = {**DEFAULT_KEYWORDS, "N_": None}
#: The catalogs' dates never move: a catalog changes only when a string does.
EPOCH = datetime(2026, 11, 30, tzinfo=UTC)


def po_path(lang: str) -> Path:
    return LOCALE / lang / "LC_MESSAGES" / "enchufe.po"


def extract() -> Catalog:
    """Every string marked in the package, with the files it is in."""
    template = _new_catalog(None)
    method_map = [("**.py", "python")]
    for filename, lineno, message, comments, context in extract_from_dir(
        str(PACKAGE), method_map, keywords=KEYWORDS, comment_tags=("TRANSLATORS:",), strip_comment_tags=True
    ):
        path = f"src/enchufe/{filename}"
        template.add(message, None, [(path, lineno)], auto_comments=comments, context=context)
    return template


def _new_catalog(lang: str | None) -> Catalog:
    return _headers(Catalog(locale=lang, charset="utf-8"))


def _headers(catalog: Catalog) -> Catalog:
    """Fixed headers, and never fuzzy: a fuzzy header is left out of the .mo, and without its
    charset Python's gettext reads every translation as ASCII."""
    catalog.project = "enchufe"
    catalog.version = ""
    catalog.copyright_holder = "the enchufe authors"
    catalog.msgid_bugs_address = ""
    catalog.last_translator = "enchufe"
    catalog.language_team = "enchufe"
    catalog.creation_date = EPOCH
    catalog.revision_date = EPOCH
    catalog.fuzzy = False
    return catalog


def _write(catalog: Catalog, path: Path, *, drop_obsolete: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as f:
        # Files without line numbers: a catalog that changes only when a string does.
        write_po(f, catalog, width=100, sort_output=True, include_lineno=False, ignore_obsolete=drop_obsolete)
    tmp.replace(path)


def _read(path: Path, lang: str) -> Catalog:
    if not path.exists():
        return _new_catalog(lang)
    with path.open("rb") as f:
        return _headers(read_po(f, locale=lang))


def compile_catalogs() -> None:
    for lang in LANGUAGES:
        po = po_path(lang)
        catalog = _read(po, lang)
        tmp = po.with_suffix(".mo.tmp")
        with tmp.open("wb") as f:
            write_mo(f, catalog)
        tmp.replace(po.with_suffix(".mo"))


@contextmanager
def _locked() -> Iterator[None]:
    LOCALE.mkdir(parents=True, exist_ok=True)
    with (LOCALE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _load_translations(path: Path) -> dict[str, str]:
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise SystemExit(f"{path}: expected a JSON object of English → Spanish strings")
        return data
    with path.open("rb") as f:
        return {str(m.id): str(m.string) for m in read_po(f) if m.id and m.string}


def _update(catalog: Catalog, template: Catalog) -> None:
    """Babel's update, except that a string that comes back (its mark removed and put back while
    someone edits) gets its old translation back from the obsolete ones."""
    old = dict(catalog.obsolete)
    catalog.update(template, no_fuzzy_matching=True)
    for message in catalog:
        previous = old.get(message.id) if isinstance(message.id, str) else None
        if message.id and not message.string and previous is not None and previous.string:
            message.string = previous.string
    for msgid, message in old.items():
        if msgid not in catalog and msgid not in catalog.obsolete:
            catalog.obsolete[msgid] = message
    _headers(catalog)


def sync(additions: list[Path], *, drop_obsolete: bool = False) -> int:
    """Extract, update, take ``additions``, write, compile.  Returns how many given strings were
    not found among the marked ones (typos, or strings not marked yet)."""
    unknown = 0
    with _locked():
        template = extract()
        _write(template, TEMPLATE)
        for lang in LANGUAGES:
            catalog = _read(po_path(lang), lang)
            _update(catalog, template)
            for path in additions:
                for english, spanish in _load_translations(path).items():
                    message = catalog.get(english)
                    if message is None:
                        print(f"not marked in the source: {english!r}", file=sys.stderr)
                        unknown += 1
                    else:
                        message.string = spanish
                        message.flags.discard("fuzzy")
            _write(catalog, po_path(lang), drop_obsolete=drop_obsolete)
        compile_catalogs()
    return unknown


def missing(prefixes: list[str]) -> int:
    count = 0
    for lang in LANGUAGES:
        catalog = _read(po_path(lang), lang)
        template = extract()
        for message in template:
            if not message.id:
                continue
            files = [loc[0] for loc in message.locations]
            if prefixes and not any(f.startswith(p) for f in files for p in prefixes):
                continue
            translated = catalog.get(message.id)
            if translated is None or not translated.string or translated.fuzzy:
                print(f"{lang}\t{', '.join(sorted(set(files)))}\t{message.id!r}")
                count += 1
    return count


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "sync":
        return 1 if sync([], drop_obsolete="--drop-obsolete" in rest) else 0
    if command == "add":
        return 1 if sync([Path(p) for p in rest]) else 0
    if command == "missing":
        return 1 if missing(rest) else 0
    if command == "compile":
        with _locked():
            compile_catalogs()
        return 0
    print(f"unknown command {command!r}: sync, add, missing or compile", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

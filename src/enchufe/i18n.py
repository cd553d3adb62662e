"""The language enchufe speaks: English, or Spanish from gettext catalogs.

Every user-facing string in the package is written in English and marked with :func:`_` (or
:func:`N_` where it is defined before any language is chosen, and translated where it is used).
The Spanish catalog is ``locale/es/LC_MESSAGES/enchufe.po``, kept with Babel (``tools/catalog.py``
extracts, updates and compiles it; the build compiles it into the wheel).

The library speaks English until :func:`set_language` says otherwise: a program that imports
enchufe gets the messages its programmers read.  The ``enchufe`` command chooses for the user:
``--lang es|en``, else the environment (``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG``, as
gettext reads them: ``es_*`` means Spanish), see :func:`language_from_environment`.

Messages with values are written with named fields, ``_("cannot bind {address}")``, and formatted
after translation (``.format(address=…)``), so that a translation can put the fields where its
grammar wants them.  System call names, constants and addresses are never translated.
"""

from __future__ import annotations

import gettext as _gettext
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "LANGUAGES",
    "N_",
    "_",
    "english",
    "language",
    "language_from_environment",
    "set_language",
]

#: The languages enchufe speaks; the first is the one its strings are written in.
LANGUAGES = ("en", "es")

DOMAIN = "enchufe"
LOCALE_DIR = Path(__file__).with_name("locale")

_translation: _gettext.NullTranslations = _gettext.NullTranslations()
_language = "en"
#: ``english`` is True in a thread inside :func:`english`.
_here = threading.local()


def _(message: str) -> str:
    """``message`` in the current language (itself when there is no translation, or inside
    :func:`english` in this thread)."""
    if getattr(_here, "english", False):
        return message
    return _translation.gettext(message)


@contextmanager
def english(on: bool = True) -> Iterator[None]:
    """In this thread only, while the block runs: messages in English (``on``), or back in the
    current language (``on=False``, inside an outer ``english()``).  For text another program
    reads, such as ``enchufe chaos``'s HTTP API, which answers as Toxiproxy does whatever
    ``--lang`` says, while the command's own lines follow ``--lang``."""
    before = getattr(_here, "english", False)
    _here.english = on
    try:
        yield
    finally:
        _here.english = before


def N_(message: str) -> str:
    """Mark ``message`` for translation without translating it yet: for strings defined at import
    time, translated with :func:`_` where they are shown."""
    return message


def language() -> str:
    """The current language's code: ``"en"`` or ``"es"``."""
    return _language


def set_language(code: str | None) -> str:
    """Speak ``code`` (``"es"``, ``"es_AR.UTF-8"``, ``"en"``…) from now on, in every thread.

    None or an unknown language means English.  Returns the code chosen.  A missing compiled
    catalog also means English: a build that did not compile it must not break the tool.
    """
    global _translation, _language
    chosen = _normalize(code)
    if chosen == "en":
        _translation, _language = _gettext.NullTranslations(), "en"
        return "en"
    _translation = _gettext.translation(DOMAIN, LOCALE_DIR, languages=[chosen], fallback=True)
    _language = chosen if isinstance(_translation, _gettext.GNUTranslations) else "en"
    return _language


def language_from_environment(environ: Mapping[str, str] | None = None) -> str:
    """The language the environment asks for, as gettext reads it: the first of ``LANGUAGE``
    (a colon-separated list), ``LC_ALL``, ``LC_MESSAGES`` and ``LANG`` that is set; ``"en"`` when
    none is, or when it names a language enchufe does not speak."""
    env = os.environ if environ is None else environ
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name, "")
        if value:
            for entry in value.split(":"):
                code = _normalize(entry)
                if code != "en" or entry.lower().startswith("en"):
                    return code
            return "en"
    return "en"


def _normalize(code: str | None) -> str:
    """``es_ES.UTF-8`` → ``es``; anything not spoken → ``en``."""
    if not code:
        return "en"
    base = code.strip().split(".")[0].split("@")[0].replace("-", "_").split("_")[0].lower()
    return base if base in LANGUAGES else "en"

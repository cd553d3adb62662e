"""Build hook: compile the message catalogs (.po → .mo) so that the wheel ships them.

Everything else about the package is in pyproject.toml.  The .mo files are build output, never
committed; ``tools/catalog.py`` keeps the .po files.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

LOCALE = Path(__file__).resolve().parent / "src" / "enchufe" / "locale"


def compile_catalogs() -> None:
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    for po in sorted(LOCALE.glob("*/LC_MESSAGES/*.po")):
        with po.open("rb") as f:
            catalog = read_po(f)
        with po.with_suffix(".mo").open("wb") as f:
            write_mo(f, catalog)


class BuildWithCatalogs(build_py):
    """build_py that compiles the catalogs first, in the source tree: a wheel copies them as
    package data, and an editable install finds them where they are."""

    def run(self) -> None:
        compile_catalogs()
        super().run()


setup(cmdclass={"build_py": BuildWithCatalogs})

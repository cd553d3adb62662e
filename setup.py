"""Build hooks: compile the message catalogs (.po → .mo) so that the wheel ships them, and the
relay's optional compiled hot path (``enchufe._speedups``) where a C compiler and Python's headers
are at hand.

Everything else about the package is in pyproject.toml.  The .mo files are build output, never
committed; ``tools/catalog.py`` keeps the .po files.  The extension is ``optional``: without a
compiler the build warns and goes on, and the relay runs its pure-Python path (the same tests
cover both; see ``enchufe.relay.engine``).
"""

from __future__ import annotations

from pathlib import Path

from setuptools import Extension, setup
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


SPEEDUPS = Extension(
    "enchufe._speedups",
    ["src/enchufe/_speedups.c"],
    optional=True,  # no compiler, no headers: the pure-Python path
    extra_compile_args=["-O2", "-std=c99", "-Wall"],
)

TLS_RECORDS = Extension(
    "enchufe._tls_records",
    ["src/enchufe/_tls_records.c"],
    optional=True,  # without it, a TLS channel reads its records one Python call each
    extra_compile_args=["-O2", "-std=c99", "-Wall"],
)

setup(cmdclass={"build_py": BuildWithCatalogs}, ext_modules=[SPEEDUPS, TLS_RECORDS])

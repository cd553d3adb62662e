"""The README's Python examples run as written and type-check under ``mypy --strict``."""

from __future__ import annotations

import inspect
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"

BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def block_ids() -> list[str]:
    """``line115``: where each block starts in the README."""
    text = README.read_text()
    return [f"line{text.count(chr(10), 0, text.index(block))}" for block in BLOCKS]


def test_readme_has_python_examples() -> None:
    assert BLOCKS, "the README shows no Python example"


@pytest.fixture(scope="module")
def mypy_errors(mypy_cache_dir: str) -> Iterator[dict[int, list[str]]]:
    """One ``mypy --strict`` run over every block, each in a file of its own: errors by block."""
    from mypy import api

    with tempfile.TemporaryDirectory(prefix="enc-readme-") as folder:
        files = []
        for n, block in enumerate(BLOCKS):
            path = Path(folder) / f"readme_block_{n}.py"
            path.write_text(block)
            files.append(str(path))
        stdout, stderr, _status = api.run(
            ["--strict", "--no-error-summary", "--cache-dir", mypy_cache_dir, *files]
        )
        errors: dict[int, list[str]] = {n: [] for n in range(len(BLOCKS))}
        for line in stdout.splitlines():
            found = re.search(r"readme_block_(\d+)\.py:\d+: error:", line)
            if found:
                errors[int(found.group(1))].append(line)
            elif "error:" in line:
                raise AssertionError(f"mypy failed: {line}\n{stderr}")
        yield errors


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=block_ids())
def test_readme_python_example_type_checks(index: int, mypy_errors: dict[int, list[str]]) -> None:
    assert mypy_errors[index] == []


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=block_ids())
def test_readme_python_example_runs(index: int, request: pytest.FixtureRequest) -> None:
    """Each block runs in a namespace of its own; a block that defines pytest tests (the
    fixtures example) has them run with the fixtures they ask for."""
    namespace: dict[str, object] = {"__name__": f"readme_block_{index}"}
    exec(compile(BLOCKS[index], str(README), "exec"), namespace)
    for name, value in list(namespace.items()):
        if name.startswith("test_") and inspect.isfunction(value):
            fixtures = {p: request.getfixturevalue(p) for p in inspect.signature(value).parameters}
            value(**fixtures)


def test_readme_quick_start_has_exactly_the_two_commands() -> None:
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)```", quick, flags=re.S)
    assert [c.strip() for c in commands] == [
        "python3 -m venv .venv && .venv/bin/python -m pip install . && .venv/bin/enchufe tour",
        "python3 -m venv .venv && .venv/bin/python -m pip install -e '.[test]' "
        "&& .venv/bin/python -m pytest -n 2",
    ]

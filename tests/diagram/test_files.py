"""A diagram file is replaced whole: written to a temporary file in the same folder, created with
the mode the file will have, then renamed over it; nothing half-written, nothing left behind."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from enchufe.diagram.files import write
from enchufe.diagram.model import Diagram, build
from enchufe.errors import EnchufeError
from tests.cli.conftest import assert_one_error_line, run

EVENTS = [
    {"pid": 1, "call": "recv", "fd": 3, "size": 1, "monotonic": float(n), "line": "recv(fd 3, 1) = 1"}
    for n in range(3)
]


@pytest.fixture
def diagram() -> Diagram:
    return build(EVENTS, "test")


@pytest.mark.parametrize("suffix", [".md", ".mmd"])
def test_a_reader_of_the_old_file_sees_it_whole_and_the_new_one_takes_its_name(
    diagram: Diagram, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"d{suffix}"
    path.write_text("the old diagram\n")
    with open(path) as reader:  # opened before: keeps the old file, never a truncated or mixed one
        assert write([("", diagram)], str(path)) == [str(path)]
        assert reader.read() == "the old diagram\n"
    assert "sequenceDiagram" in path.read_text()
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left


def test_the_file_keeps_its_mode_and_a_new_one_gets_what_the_umask_leaves(
    diagram: Diagram, tmp_path: Path
) -> None:
    old = tmp_path / "old.md"
    old.write_text("")
    os.chmod(old, 0o604)
    new = tmp_path / "new.mmd"
    umask = os.umask(0o027)
    try:
        write([("", diagram)], str(old))
        write([("", diagram)], str(new))
    finally:
        os.umask(umask)
    assert stat.S_IMODE(old.stat().st_mode) == 0o604  # not cut by the umask, as open() would keep it
    assert stat.S_IMODE(new.stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["new.mmd", "old.md"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(diagram: Diagram, tmp_path: Path) -> None:
    """A folder in the way of the name: the rename fails after the temporary file was written."""
    (tmp_path / "d.md").mkdir()
    (tmp_path / "d.md" / "inside").write_text("kept")
    with pytest.raises(EnchufeError, match=r"cannot write .*d\.md"):
        write([("", diagram)], str(tmp_path / "d.md"))
    assert os.listdir(tmp_path) == ["d.md"] and (tmp_path / "d.md" / "inside").read_text() == "kept"


def test_a_folder_that_does_not_exist_is_one_line_and_status_1(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps(event) + "\n" for event in EVENTS))
    done = run("diagram", str(trace), "-o", str(tmp_path / "missing" / "d.md"))
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "cannot write", "missing/d.md", "no such file or directory")

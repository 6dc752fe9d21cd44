"""The step runner (xdistil/runner.py): one declaration per step, one runner for `run`, the
step commands and the benchmarks.

1. Two runs that share a teacher and a transfer set train one teacher and label once: the
   second links the first's outputs (hard links) and computes only the step that differs.
2. A subset of the plan writes only its steps; a given output is used, never written.
3. ``xdistil distill`` writes the students where ``xdistil run`` does (``distill/``), and a
   folder of the older layout (``students/``) is still read and reused.
"""

from __future__ import annotations

import json
import os

import pytest
import yaml
from synth import synth_files
from tiny import make_tiny_teacher, tiny_run_config

from xdistil import digests
from xdistil.cli import main
from xdistil.config import load_config
from xdistil.run import RunDir
from xdistil.runner import STEPS, Runner

STAGES = [{"name": "hard", "losses": {"hard": 1.0, "gold": 1.0}, "epochs": 1, "unfreeze": False}]


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runner")
    files = synth_files(tmp / "data", n_train=100, n_dev=20, n_unlabeled=40)
    teacher = make_tiny_teacher(tmp / "tiny", seed=0)
    raw = tiny_run_config(files, teacher, STAGES)
    cfg = tmp / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return tmp, cfg, teacher


def same_file(a, b) -> bool:
    return os.stat(a).st_ino == os.stat(b).st_ino


def test_a_second_run_links_the_shared_steps_and_computes_the_one_that_differs(setup, capsys):
    tmp, cfg, _ = setup
    a, b = tmp / "runs" / "a", tmp / "runs" / "b"
    assert main(["run", "--config", str(cfg), "-q", "--out", str(a)]) == 0
    capsys.readouterr()
    assert main(["run", "--config", str(cfg), "-q", "--out", str(b), "--distill.seed", "7",
                 "--reuse", str(tmp / "runs")]) == 0
    out = capsys.readouterr().out
    assert f"teacher: linked {a / 'teacher'} into {b / 'teacher'}" in out
    assert f"label: linked {a / 'transfer'} into {b / 'transfer'}" in out
    assert "distill: linked" not in out  # another seed: distilled again
    ra, rb = RunDir(a), RunDir(b)
    for step in ("teacher", "transfer"):
        assert digests.digest_of(getattr(ra, step)) == digests.digest_of(getattr(rb, step))
    assert same_file(ra.teacher / "model.safetensors", rb.teacher / "model.safetensors")
    assert same_file(ra.transfer_manifest, rb.transfer_manifest)
    assert digests.digest_of(ra.distill) != digests.digest_of(rb.distill)
    # the record of b times only the step it computed; the linked ones were not built here
    timings = json.loads(rb.metrics.read_text())["timings"]
    assert "distill_s" in timings and "teacher_s" not in timings and "label_s" not in timings
    # a rerun of b reuses its own folders (nothing linked again, nothing recomputed)
    capsys.readouterr()
    assert main(["run", "--config", str(cfg), "-q", "--out", str(b), "--distill.seed", "7",
                 "--reuse", str(tmp / "runs")]) == 0
    out = capsys.readouterr().out
    assert "linked" not in out and f"distill: reusing {rb.distill}" in out


def test_a_subset_writes_only_its_steps_and_never_a_given_output(setup):
    tmp, cfg, teacher = setup
    rd = RunDir(tmp / "subset")
    before = {p: p.stat().st_mtime_ns for p in teacher.rglob("*") if p.is_file()}
    got = Runner(load_config(cfg), rd, given={"teacher": teacher}, progress=False).run(only=("label",))
    assert got.teachers == [teacher] and got.transfer == rd.transfer and got.students == []
    assert STEPS["label"].finished(rd.transfer)
    assert not rd.teacher.exists() and not rd.distill.exists()
    assert {p: p.stat().st_mtime_ns for p in teacher.rglob("*") if p.is_file()} == before
    with pytest.raises(ValueError, match="nothing/transfer is not a finished transfer set"):
        Runner(load_config(cfg), tmp / "nothing", progress=False).run(only=("distill",))


def test_distill_writes_the_run_layout_and_still_reads_the_old_one(setup, capsys):
    tmp, cfg, teacher = setup
    out = tmp / "d"
    args = ["distill", "--config", str(cfg), "-q", "--no-eval", "--teacher-dir", str(teacher), "--out", str(out)]
    assert main(args) == 0
    rd = RunDir(out)
    assert (rd.distill / "stage1-hard").is_dir() and rd.transfer_manifest.is_file()
    assert not (out / "students").exists()
    # the layout of an earlier xdistil: distill/ was called students/
    old = tmp / "old"
    os.rename(out, old)
    os.rename(old / "distill", old / "students")
    record = json.loads((old / "xdistil_files.json").read_text())
    record["entries"] = {("students" if k == "distill" else k): v for k, v in record["entries"].items()}
    (old / "xdistil_files.json").write_text(json.dumps(record))
    digest = digests.digest_of(old / "students")
    capsys.readouterr()
    assert main([*args[:-1], str(old)]) == 0
    said = capsys.readouterr().out
    assert f"distill: reusing {old / 'students'}" in said and f"final: {old / 'students' / 'stage1-hard'}" in said
    assert not (old / "distill").exists() and digests.digest_of(old / "students") == digest

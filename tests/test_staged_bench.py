"""The staged benchmark (benchmarks/staged.py) on a tiny teacher and a synthetic language: the
base run trains the teacher and labels once, every variant is a run folder of its own with
them linked in, a variant continues another's student through the run layout, and a rerun
computes nothing again. The F1 numbers of tiny models mean nothing."""

from __future__ import annotations

import os
import sys

import pytest
import yaml
from conftest import REPO
from synth import synth_files
from tiny import make_tiny_teacher

from xdistil.results import Summary
from xdistil.run import RunDir
from xdistil.run.layout import read_distill_log
from xdistil.runner import outputs

if str(REPO) not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks import staged  # noqa: E402

HARD = {"name": "hard", "losses": {"hard": 1.0, "gold": 1.0}, "epochs": 1, "unfreeze": False}
SOFT = {"name": "soft", "losses": {"soft": 1.0, "gold": 1.0}, "epochs": 1, "unfreeze": False}


pytestmark = pytest.mark.usefixtures("one_thread_module")


def test_variants_are_run_folders_sharing_one_teacher_and_transfer_set(tmp_path, capsys):
    run = tmp_path / "bench"
    raw = {
        "data": {"languages": ["xx"], "labeled_budget": 60, "val_size": 20,
                 "files": synth_files(tmp_path / "data", n_train=100, n_dev=20, n_unlabeled=40)},
        "teacher": {"model": str(make_tiny_teacher(tmp_path / "tiny")), "epochs": 1, "min_steps": 0,
                    "min_selection_f1": 0, "batch_size": 16, "lr": 1e-3, "max_length": 24,
                    "freeze_embeddings": False},
        "transfer": {"layers": [1], "chunk_size": 40, "batch_size": 16},
        "student": {"embedding_dim": 8, "hidden_dim": 16, "max_length": 24},
        "distill": {"stages": [HARD], "match": {"teacher_layer": 1}, "max_steps_per_epoch": 2},
        "variants": {
            "bilstm-staged": {"distill": {"stages": [HARD, SOFT]}},
            # continued from the other variant's first student, found through the run layout
            "bilstm-staged-long": {"distill": {"init_from": str(RunDir(run / "bilstm-staged").distill / "stage1-hard"),
                                               "stages": [SOFT]}}},
    }
    config = tmp_path / "staged.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    only = ["bilstm-staged", "bilstm-staged-long"]
    s = staged.run(str(config), run, tmp_path / "results", only, progress=False)

    assert [m.name for m in s.models] == ["teacher", "bilstm-staged/stage1-hard", "bilstm-staged/stage2-soft",
                                          "bilstm-staged-long/stage1-soft"]
    assert [(m.group, m.stage) for m in s.models[1:]] == [("bilstm-staged", 1), ("bilstm-staged", 2),
                                                          ("bilstm-staged-long", 1)]
    assert Summary.read(tmp_path / "results" / "summary.json").models == s.models
    assert "bilstm-staged-long/stage1-soft" in (tmp_path / "results" / "results.md").read_text()
    base = outputs(run)  # the base run: the teacher and the transfer set, no students
    assert base.students == [] and list(s.protocol["transfer"]["counts"]) == ["xx"]
    for name in only:  # each variant a whole run folder, the shared steps hard links of the base run's
        got = outputs(run / name)
        assert got.student.parent == RunDir(run / name).distill
        assert os.path.samefile(got.teacher / "model.safetensors", base.teacher / "model.safetensors")
        assert os.path.samefile(RunDir(run / name).transfer_manifest, RunDir(run).transfer_manifest)
        assert s.extra["stage_logs"][name] == read_distill_log(got.student)
        assert s.timings[f"{name}_s"] >= 0
    assert set(s.timings) == {"teacher_s", "label_s", "bilstm-staged_s", "bilstm-staged-long_s"}

    with pytest.raises(ValueError, match=r"unknown variant\(s\) \['nope'\]: the config has bilstm-staged, "):
        staged.run(str(config), run, tmp_path / "results", ["nope"], progress=False)
    capsys.readouterr()
    again = staged.run(str(config), run, tmp_path / "results", only, progress=False)
    out = capsys.readouterr().out
    assert "linked" not in out and "reusing" in out  # every step found finished where it is
    assert again.models == s.models

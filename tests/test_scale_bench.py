"""The scale benchmark (benchmarks/scale.py) on a tiny teacher and a synthetic language: each size
is a run folder labeled and distilled by ``xdistil`` processes whose memory is measured, its
figures read from the run layout; a rerun measures nothing again, and a size whose figures are
lost is labeled and distilled again. The figures of tiny models mean nothing."""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from conftest import REPO
from synth import synth_files
from tiny import make_tiny_teacher

from xdistil.config import RunConfig, from_dict
from xdistil.run import RunDir
from xdistil.run.layout import read_distill_log, read_transfer_manifest
from xdistil.runner import Runner, outputs

if str(REPO) not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks import scale  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread_module")


def test_each_size_is_a_run_folder_measured_once(tmp_path):
    files = synth_files(tmp_path / "data", n_train=100, n_dev=20, n_unlabeled=60)

    raw = {"demo_rows": 90,  # the module's sections, at a tiny size, on the synthetic language
           "data": {"languages": ["xx"], "labeled_budget": 60, "val_size": 20, "dev_limit": 20, "files": files},
           "transfer": {"layers": [1], "chunk_size": 40, "batch_size": 16},
           "student": {"embedding_dim": 8, "hidden_dim": 16, "max_length": 24},
           "distill": {"match": {"teacher_layer": 1}, "max_steps_per_epoch": 2, "stages": [
               {"name": "soft-hidden", "losses": {"soft": 1.0, "hidden": 1.0, "gold": 1.0}, "epochs": 1,
                "unfreeze": False, "batch_size": 16}]}}
    config = tmp_path / "scale.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    sized, demo_rows = scale.config_for(2, config)  # 2 x 90 rows for the one language, less its budget
    assert sized["transfer"]["limit"] == 2 * 90 - 60 and demo_rows == 90 and "demo_rows" not in sized
    teacher_cfg = from_dict(RunConfig, {**scale.config_for(1, config)[0], "teacher": {
        "model": str(make_tiny_teacher(tmp_path / "tiny")), "epochs": 1, "min_steps": 0, "min_selection_f1": 0,
        "batch_size": 16, "max_length": 24, "freeze_embeddings": False}})
    teacher = Runner(teacher_cfg, RunDir(tmp_path / "teacher-run"), progress=False).run(only=("teacher",)).teacher
    run, results = tmp_path / "scale", tmp_path / "results"
    s = scale.run(teacher, run, results, [1.0], quiet=True, config=config)

    (entry,) = s["runs"]
    size = RunDir(run / "x1")
    manifest = read_transfer_manifest(size.transfer)
    assert entry["rows"] == sum(manifest["counts"]["xx"].values()) > 0 and entry["counts"] == manifest["counts"]
    assert entry["transfer_mb"] >= 0 and entry["label"]["peak_anon_mb"] > 0 and entry["distill"]["peak_anon_mb"] > 0
    phase = read_distill_log(size.distill)["stages"][0]["phases"][0]
    assert entry["distill"]["tokens_per_s"] == phase["tokens_per_s"]
    (student,) = outputs(size).students
    assert student.parent == size.distill and entry["student"]["params"] > 0
    assert json.loads((results / "summary.json").read_text())["runs"] == [entry]
    assert (s["languages"], s["demo_rows"]) == (["xx"], 90) and entry["rows"] <= 90

    again = scale.run(teacher, run, results, [1.0], quiet=True, config=config)  # measured already: nothing runs
    assert again["runs"] == [entry]
    state = json.loads((run / "scale.json").read_text())
    del state["x1"]["label"], state["x1"]["distill"]
    (run / "scale.json").write_text(json.dumps(state), encoding="utf-8")
    remeasured = scale.run(teacher, run, results, [1.0], quiet=True, config=config)["runs"][0]  # figures lost: both again
    assert remeasured["rows"] == entry["rows"] and remeasured["label"]["seconds"] > 0
    assert outputs(size).students == [student]

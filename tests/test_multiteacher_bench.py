"""The multi-teacher benchmark (benchmarks/multiteacher.py) on two tiny teachers and a synthetic
language: teachers fine-tuned apart and co-finetuned, one transfer set per group labeled by all
its teachers, every student a run folder distilled from its group's teachers and set (given,
never copied), the summary's rows and verdict. The F1 numbers of tiny models mean nothing."""

from __future__ import annotations

import sys

import pytest
import yaml
from conftest import REPO
from synth import synth_files
from tiny import make_tiny_teacher

from xdistil import digests
from xdistil.run import RunDir
from xdistil.run.layout import read_distill_log, read_transfer_manifest
from xdistil.runner import outputs

if str(REPO) not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks import multiteacher  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread_module")


def test_groups_of_teachers_label_once_and_every_student_is_a_run_folder(tmp_path):
    raw = {
        "data": {"languages": ["xx"], "labeled_budget": 60, "val_size": 20, "dev_limit": 20,
                 "files": synth_files(tmp_path / "data", n_train=100, n_dev=20, n_unlabeled=40)},
        "teacher": {"epochs": 1, "min_steps": 0, "min_selection_f1": 0, "batch_size": 16, "lr": 1e-3,
                    "max_length": 24, "freeze_embeddings": False},
        "transfer": {"layers": [1], "chunk_size": 40, "batch_size": 16},
        "student": {"embedding_dim": 8, "hidden_dim": 16, "max_length": 24},
        "distill": {"match": {"teacher_layer": 1}, "max_steps_per_epoch": 2,
                    "stages": [{"name": "soft", "losses": {"soft": 1.0, "gold": 1.0}, "epochs": 1,
                                "unfreeze": False}]},
        "teachers": [{"name": "a", "model": str(make_tiny_teacher(tmp_path / "a", seed=0)), "seed": 13},
                     {"name": "b", "model": str(make_tiny_teacher(tmp_path / "b", seed=1)), "seed": 29}],
        "variants": {"single a": {"distill": {"teachers": [0]}}, "single b": {"distill": {"teachers": [1]}},
                     "multi uniform": {"distill": {"teacher_weighting": "uniform"}},
                     "multi mtbert": {"distill": {"teacher_weighting": "mtbert"}}},
    }
    config = tmp_path / "mt.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    run = tmp_path / "mt"
    s = multiteacher.run(str(config), run, tmp_path / "results", progress=False)

    students = ["single a", "single b", "multi uniform", "multi mtbert"]
    assert [m.name for m in s.models] == [f"{g}/teacher {t}" for g in multiteacher.GROUPS for t in "ab"] + [
        f"{g}/{n}" for g in multiteacher.GROUPS for n in students]
    assert set(s.extra["verdict"]) == {"overall", *multiteacher.GROUPS, "mtbert_minus_uniform"}
    teachers = {"apart": [outputs(run / "apart" / t).teacher for t in "ab"], "co": outputs(run / "co").teachers}
    assert len(teachers["co"]) == 2 and all(t.parent == RunDir(run / "co").teacher for t in teachers["co"])
    for group in multiteacher.GROUPS:
        # one transfer set per group, labeled by both of its teachers
        transfer = RunDir(run / group).transfer
        assert [t["path"] for t in read_transfer_manifest(transfer)["teachers"]] == [str(t) for t in teachers[group]]
        for name in students:
            student = RunDir(run / group / name.replace(" ", "-"))
            got = outputs(student)
            assert not student.teacher.exists() and not student.transfer.exists()  # given, not copied
            inputs = digests.read(student.distill)["inputs"]
            assert inputs["transfer"] == digests.folder_digest(transfer)
            assert inputs["teacher"] == digests.folder_digest(teachers[group][0])
            log = read_distill_log(got.student)
            ids = {"single a": [0], "single b": [1]}.get(name, [0, 1])  # the config's variants, as they say
            assert log["teachers"]["ids"] == ids and (name != "multi uniform" or log["teachers"]["weighting"] == "uniform")
            assert s.extra["logs"][f"{group}/{name}"] == {"teachers": log.get("teachers"), "stages": log["stages"]}
    assert {"teacher a", "teacher b", "teachers co-finetuned"} <= set(s.timings)
    assert "Verdict" in (tmp_path / "results" / "results.md").read_text()

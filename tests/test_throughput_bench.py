"""The throughput benchmark end to end in its --quick settings on a tiny teacher and a synthetic
language (the numbers mean nothing here): issue 14's summary schema, results.md, resumption."""

from __future__ import annotations

import json
import sys

from conftest import REPO
from synth import synth_files

from xdistil.config import RunConfig, from_dict, load_yaml
from xdistil.run import RunDir
from xdistil.runner import outputs

if str(REPO) not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks import throughput  # noqa: E402

STEPS = {"teacher", "label", "distill-hard", "distill-soft", "distill-intermediate",
         "distill-soft-packed"}  # the BiLSTM's previous (packed) forward, side by side


def test_quick_run_schema_and_resume(tmp_path, one_thread, monkeypatch):
    raw = load_yaml("demo")  # the demo's stages and student, on a synthetic language
    raw["data"] = {**raw["data"], "languages": ["xx"], "files": synth_files(tmp_path / "data")}
    cfg = throughput.with_overrides(from_dict(RunConfig, raw), throughput.QUICK.overrides)
    teacher = throughput.tiny_teacher(cfg, tmp_path / "tiny-teacher")
    results = tmp_path / "results"
    s = throughput.run(cfg, tmp_path / "run", results, throughput.QUICK, teacher=str(teacher), command="test",
                       progress=False)

    assert set(s) == {"throughput", "quality", "machine"}
    assert {(r["step"], r["precision"]) for r in s["throughput"]} == {(st, p) for st in STEPS for p in ("fp32", "bf16")}
    for r in s["throughput"]:
        extra = {"forward_sentences_per_s"} if r["step"] == "label" else set()
        assert set(r) == {"step", "precision", "tokens_per_s", "sentences_per_s"} | extra
        assert all(isinstance(r[k], float) and r[k] > 0 for k in set(r) - {"step", "precision"}), r
    assert {(r["model"], r["precision"]) for r in s["quality"]} == \
        {(m, p) for m in ("teacher", "student") for p in ("fp32", "bf16")}
    assert all(set(r) == {"precision", "model", "f1_avg"} and 0 <= r["f1_avg"] <= 100 for r in s["quality"])
    assert s["machine"]["usable_cpus"] >= 1 and "cpu" in s["machine"] and s["machine"]["command"] == "test"
    assert json.loads((results / "summary.json").read_text()) == s
    md = (results / "results.md").read_text()
    assert "| distill-intermediate |" in md and "Targets (issue 14)" in md
    assert "| distill-soft-packed |" in md and "the previous release's (packed BiLSTM, fp32)" in md
    measured = json.loads((tmp_path / "run" / "measurements.json").read_text())
    assert measured["quality/bf16"]["applied"] == "bf16"  # labeling ran in bf16
    for p in ("fp32", "bf16"):  # each precision's pipeline is one run folder, in the run layout
        got, q = outputs(tmp_path / "run" / p), measured[f"quality/{p}"]
        assert [q["teacher_dir"], q["transfer_dir"], q["student_dir"]] == [str(got.teacher), str(got.transfer),
                                                                            str(got.student)]
        assert got.student.parent == RunDir(tmp_path / "run" / p).distill and q["final_stage"] == got.student.name

    # a rerun measures nothing again
    def boom(*a, **k):
        raise AssertionError("measured twice")

    for name in ("quality_run", "time_teacher", "time_distill"):
        monkeypatch.setattr(throughput, name, boom)
    again = throughput.run(cfg, tmp_path / "run", results, throughput.QUICK, teacher=str(teacher), command="test",
                           progress=False)
    assert again["throughput"] == s["throughput"] and again["quality"] == s["quality"]

"""``xdistil bench`` then ``xdistil report`` on a tiny run made by the real pipeline (tiny random models).

The numbers mean nothing here; the tests check that every figure the benchmark issue asks
for is in bench.json, consistent with the run's own files, and shown by the report.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from synth import synth_files
from tiny import make_tiny_teacher

from xdistil.cli import main
from xdistil.results import Bench

BATCHES = [1, 4]
QUICK = ["--batch-sizes", *map(str, BATCHES), "--seq", "16", "--repeats", "2", "--quick", "--threads", "1", "-q"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run directory: teacher, transfer set, two stages, dev scores (a few seconds)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only waits (and stalls on a busy machine)
    tmp = tmp_path_factory.mktemp("bench")
    cfg = {
        "data": {"languages": ["xx"], "labeled_budget": 100, "val_size": 20,
                 "files": synth_files(tmp / "data", n_train=120, n_dev=40, n_unlabeled=40)},
        "teacher": {"model": str(make_tiny_teacher(tmp)), "epochs": 1, "batch_size": 16, "lr": 1e-3,
                    "max_length": 24, "freeze_embeddings": False},
        "transfer": {"layers": [1], "chunk_size": 50, "batch_size": 16},
        "student": {"embedding_dim": 8, "hidden_dim": 16, "max_length": 24},
        "distill": {"stages": [{"name": "hard", "losses": {"hard": 1.0}, "epochs": 1, "unfreeze": False},
                               {"name": "soft", "losses": {"soft": 1.0}, "epochs": 1, "unfreeze": False}],
                    "max_steps_per_epoch": 2},
    }
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", "--config", str(tmp / "cfg.yaml"), "--out", str(tmp / "run"), "-q"]) == 0
    yield tmp / "run", tmp / "cfg.yaml"
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bench(run):
    run_dir, _ = run
    # int8 agreement floor 0: a barely trained student has near-tied logits, int8 may flip some
    assert main(["bench", str(run_dir), *QUICK, "--teacher-ort", "--int8-min-agreement", "0"]) == 0
    return Bench.read(run_dir / "bench.json")


def test_bench_json_has_every_figure(run, bench):
    run_dir, _ = run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    students = list(metrics["students"])
    assert students == ["stage1-hard", "stage2-soft"]
    assert json.loads((run_dir / "bench.json").read_text())["format"] == "xdistil-bench/3"
    # beside it, what it was measured on: the very teacher and students of the run
    from xdistil import digests
    fp = json.loads((run_dir / "bench.fingerprint.json").read_text())
    assert fp["step"] == "bench" and fp["inputs"]["teacher"] == digests.folder_digest(run_dir / "teacher")
    assert fp["inputs"]["student:stage2-soft"] == digests.folder_digest(run_dir / "distill" / "stage2-soft")

    # quality per language: teacher, every stage (index, name, folder), % of the teacher kept
    q = bench.quality
    assert q.languages == ["xx"] and q.final.name == "stage2-soft"
    assert [m.name for m in q.models] == ["teacher", *students]
    assert [(m.stage, m.stage_name) for m in q.students] == [(1, "hard"), (2, "soft")]
    assert [m.folder for m in q.students] == [metrics["students"][n]["path"] for n in students]
    for m in q.models:
        source = metrics["teacher"] if m.role == "teacher" else metrics["students"][m.name]
        xx = m.languages["xx"]
        assert xx.f1 == source["dev"]["xx"]["f1"] and 0 <= xx.f1 <= 100
        assert (xx.precision, xx.recall, xx.entities) == (source["dev"]["xx"]["precision"],
                                                          source["dev"]["xx"]["recall"],
                                                          source["dev"]["xx"]["support"])
        assert set(xx.per_type) == set(source["dev"]["xx"]["per_type"])
        assert m.params == source["params"]
    assert bench.exports["stage2-soft"].keys() == {"fp32", "int8"}

    # latency: every model x runtime x batch size, medians > 0; speedups against the teacher in PyTorch
    cells = {(*c.key, c.batch): c for c in bench.cells}
    expected = [("teacher", "torch", "fp32"), ("teacher", "ort", "fp32"), ("stage2-soft", "torch", "fp32"),
                ("stage2-soft", "ort", "fp32"), ("stage2-soft", "ort", "int8")]
    assert sorted(cells) == sorted((*c, b) for c in expected for b in BATCHES)
    for c in bench.cells:
        assert c.median_ms > 0 and c.repeats >= 2 and c.seq == 16
        assert c.kind == ("bilstm" if c.role == "student" else "hf")
    st = bench.latency_settings
    assert st["threads"] == 1 and st["batch_sizes"] == BATCHES
    assert all(0 < m["mean_real_pieces"] <= 16 for m in bench.latency_models)
    assert len(bench.speedups) == 3 * len(BATCHES)
    for s in bench.speedups:
        ref = cells[("teacher", "torch", "fp32", s.batch)].median_ms
        assert s.speedup == pytest.approx(ref / cells[(s.model, s.runtime, s.precision, s.batch)].median_ms)

    # end to end on raw dev text: the runtime on both exports, the teacher through the HF pipeline
    e2e = {(t.name, t.runtime): t for t in bench.end_to_end}
    assert set(e2e) == {("stage2-soft", "onnx-int8"), ("stage2-soft", "onnx-fp32"), ("teacher", "torch")}
    for t in e2e.values():
        assert t.sentences == 32 and t.words > t.sentences and t.seconds > 0
        assert t.words_per_s == pytest.approx(t.words / t.seconds, rel=0.01)

    # labeling throughput: copied from the transfer set's manifest
    tp = json.loads((run_dir / "transfer" / "manifest.json").read_text())["throughput"]
    lab = bench.labeling
    assert (lab.sentences_per_s, lab.extra["forward_sentences_per_s"], lab.extra["overhead"]) == \
        (tp["label_sentences_per_s"], tp["forward_sentences_per_s"], tp["overhead"])
    assert lab.sentences == tp["sentences_labeled_this_run"] > 0
    assert lab.runtime == "torch"  # the engine that labeled it (a tiny set: torch without probing)

    # distillation tokens/s per step, paired with the stage students through their stage records
    assert [(s.stage_index, s.stage, s.student) for s in bench.phases] == [(1, "hard", "stage1-hard"),
                                                                         (2, "soft", "stage2-soft")]
    assert all(s.tokens_per_s > 0 and s.seconds >= 0 for s in bench.phases)

    # peak memory of labeling and training
    mem = bench.memory
    assert mem["labeling"]["peak_rss_mb"] == tp["peak_rss_mb"] > 0
    assert mem["training"]["peak_rss_mb"] > 0 and set(mem["training"]["per_stage"]) == set(students)

    # provenance: machine, versions and command on every section
    for section in ("quality", "latency", "labeling", "distillation"):
        prov = bench.sections[section]
        assert prov.machine["cpu"] and prov.machine["usable_cpus"] >= 1
        assert prov.versions["torch"] and prov.versions["xdistil"]
        assert prov.command.startswith("xdistil ")
    assert bench.sections["latency"].command.startswith("xdistil bench ")
    assert bench.sections["labeling"].command.startswith("xdistil run ")
    assert bench.provenance.versions["onnxruntime"]
    assert q.protocol["labeled_budget"] == 100


def test_report_shows_the_bench(run, bench, tmp_path, capsys):
    from xdistil.report import ms

    run_dir, _ = run
    out = tmp_path / "report"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    assert "report.md" in capsys.readouterr().out
    for png in ("f1_retained.png", "f1_vs_params.png", "f1_vs_latency.png", "latency.png", "stages.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
    assert Bench.read(out / "bench.json") == bench
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()

    q = bench.quality
    expected = ["labeled budget", "100 sentences per language", "evaluation split", "dev (whole file)",
                f"{q.teacher.f1_avg:.2f}",  # the teacher's F1
                *[m.name for m in q.models], *[f"{m.f1['xx']:.2f}" for m in q.models],
                *[ms(c.median_ms) for c in bench.cells],
                *[f"{t.words_per_s:,.0f}" for t in bench.end_to_end], "Tagging raw text end to end",
                f"{bench.labeling.sentences_per_s:,.1f}", "timings depend on the machine",
                "F1 against latency", "Per entity type"]
    for text in expected:
        assert text.lower() in md.lower(), text
        assert text.lower() in page.lower(), text
    assert "88.64" not in md and "anchors are left out" in md  # "xx" is none of the paper's languages
    assert "nan" not in md.lower()
    assert md.count("\n|---") == page.count("<table>") >= 8  # the same tables in both
    assert "target" in md.splitlines()[2]  # the verdict comes first
    for png in ("f1_retained.png", "latency.png", "f1_vs_latency.png"):
        assert f"]({png})" in md and f'src="{png}"' in page


def test_bench_with_config_reuses_run_and_exports(run, bench):
    run_dir, cfg = run
    assert main(["bench", str(run_dir), "--config", str(cfg), *QUICK, "--no-int8"]) == 0
    again = Bench.read(run_dir / "bench.json")
    student = next(m for m in again.latency_models if m["role"] == "student")
    assert student["export_reused"] and {c.precision for c in again.cells} == {"fp32"}
    assert {t.runtime for t in again.end_to_end} == {"onnx-fp32", "torch"}
    assert "--config" in again.provenance.command
    assert again.quality.models == bench.quality.models  # nothing was retrained or re-evaluated


def test_clear_errors(tmp_path, capsys):
    assert main(["bench", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not an xdistil run directory (no metrics.json)" in err and "xdistil run" in err
    assert "Traceback" not in err
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "xdistil bench" in capsys.readouterr().err


def test_phase_logs_pair_stages_with_their_students():
    """A stage resumed from an earlier run has no log; the logs that are there still find their students."""
    from xdistil.results import phase_logs

    logs = [{"stage": "soft", "phases": [{"groups": ["output"], "seconds": 2.0, "tokens_per_s": 10.0,
                                         "history": [{}, {}]}]},
            {"stage": "soft", "phases": [{"groups": ["output", "encoder"], "seconds": 1.0, "tokens_per_s": 5.0}]}]
    students = [(1, "hard", "stage1-hard"), (2, "soft", "stage2-soft"), (3, "soft", "stage3-soft")]
    assert [(s.stage_index, s.student, s.epochs, s.tokens) for s in phase_logs(logs, students)] == \
        [(2, "stage2-soft", 2, 20.0), (3, "stage3-soft", 0, 5.0)]

"""The frontier benchmark (benchmarks/frontier.py + configs/frontier.yaml, issue 35): its grid
changes the student shape only, and its cells become the quality state (--quick settings on a
tiny teacher and the real WikiANN de/ar/hi files); on a tiny exported student the speed cells
run end to end, the summary has the issue's schema, the targets say met / missed from the
figures, the plot is written and docs/deployment.md's block renders from it. The numbers mean
nothing here; the state the summary is built from is made up."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import REPO
from tiny import make_tiny_teacher, tiny_sentences
from transformers import AutoModelForTokenClassification, AutoTokenizer

from xdistil import DEFAULT_LABELS
from xdistil.students import BiLSTMConfig, build_student, save_student
from xdistil.vocab import seen_piece_ids

if str(REPO) not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks import frontier, grid  # noqa: E402

LABELS = list(DEFAULT_LABELS)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from xdistil.deployable import export_model

    root = tmp_path_factory.mktemp("frontier")
    path = make_tiny_teacher(root / "teacher")
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = tiny_sentences(40)
    teacher = AutoModelForTokenClassification.from_pretrained(path).eval()
    torch.manual_seed(0)
    model, tok = build_student("bilstm", teacher, tokenizer, seen_piece_ids(tokenizer, data), LABELS,
                               BiLSTMConfig(embedding_dim=8, hidden_dim=8))
    src = save_student(model.eval(), tok, root / "student", extra={"labels": LABELS, "max_length": 16})
    export_model(src, root / "export", parity_sentences=data[:8], int8=True, int8_min_agreement=0.5)
    return root / "export"


GRID = grid.Grid.load(frontier.CONFIG)


def test_every_variant_is_the_demo_recipe_with_another_student():
    base = GRID.config("control")
    assert base.data.languages == ["de", "ar", "hi"] and base.precision == "auto"  # as `make demo` ran it
    assert next(iter(GRID.variants)) == "bilstm2" and GRID.variants["bilstm2"].get("about")
    for name, v in GRID.variants.items():
        cfg = GRID.config("control", name, 14)
        assert cfg.distill.seed == 14 and (cfg.data, cfg.teacher, cfg.transfer) == (base.data, base.teacher,
                                                                                      base.transfer), name
        assert cfg.distill.stages == base.distill.stages
        for change in frontier.changes(v):  # the summary's settings are the overrides, as --set writes them
            key, value = change.split("=")
            assert str(getattr(cfg.student, key.split(".")[1])).lower() == value, (name, change)
    assert frontier.changes(GRID.variants["cnn"]) == ["student.arch=cnn", "student.num_layers=1",
                                                      "student.residual=true"]


def test_the_grids_cells_are_the_quality_state(tmp_path, one_thread, shared_data):
    done = grid.run(GRID, tmp_path / "run", ["bilstm2", "cnn"], quick=True, progress=False, seeds=[13])
    state = frontier.quality(GRID, done)
    assert set(state) == {"teacher", "bilstm2-s13", "cnn-s13"}
    assert state["cnn-s13"]["arch"] == "cnn" and state["bilstm2-s13"]["arch"] == "bilstm"
    assert set(state["teacher"]["f1"]) == {"dev", "test"} and state["teacher"]["params"] > state["cnn-s13"]["params"]
    for cell in ("bilstm2-s13", "cnn-s13"):
        assert state[cell]["f1"]["dev"]["avg"] == pytest.approx(
            sum(state[cell]["f1"]["dev"][x] for x in ("de", "ar", "hi")) / 3)
        assert (tmp_path / "run" / "control" / cell / "distill").is_dir()


def _state(f1s: dict[str, float]) -> dict:
    state = {"teacher": {"f1": {"dev": {"avg": 80.0}, "test": {"avg": 70.0}}, "params": 100_000_000}}
    for name, f1 in f1s.items():
        for seed in (13, 14):
            state[grid.cell_name(name, seed)] = {"f1": {"dev": {"avg": f1}, "test": {"avg": f1 * 0.9}},
                                                 "params": 2_000_000, "arch": "cnn" if "cnn" in name else "bilstm"}
    return state


def test_frontier_cells_summary_targets_and_plot(exported, tmp_path, monkeypatch):
    monkeypatch.setattr(frontier, "SENTENCES", 30)
    monkeypatch.setattr(frontier, "B1_SENTENCES", 4)
    measured = frontier.speed({"bilstm2": exported, "cnn": exported}, rounds=1, spacy=False)
    kinds = {(c["model"], c["runtime"], c["threads"], c["input"], c["batch"]) for c in measured["cells"]}
    assert ("cnn", "xdistil-int8", 1, "text", 1) in kinds and ("bilstm2", "latency", 2, "text", 1) in kinds
    assert all(c["median"] > 0 and len(c["rounds"]) == 1 for c in measured["cells"])

    machine = {"cpu": "Test CPU", "threads": 2}
    s = frontier.summarise(GRID, _state({"bilstm2": 76.0, "bilstm1": 75.5, "cnn": 72.0}), measured, [13, 14], machine,
                           "cmd")
    assert s["default"] == "bilstm2"
    rows = {r["student"]: r for r in s["rows"]}
    assert set(rows) == {"bilstm2", "bilstm1", "cnn"}  # every student with scores, measured or not
    for r in rows.values():
        assert {"student", "arch", "params", "compression", "retention"} <= set(r)
        assert r["compression"] == 50.0 and 0 < r["retention"] <= 1
    assert rows["bilstm2"]["retention"] == pytest.approx(0.95) and "words_per_s" not in rows["bilstm1"]
    assert rows["bilstm1"]["changes"] == ["student.num_layers=1"] and rows["bilstm1"]["what"] == "1-layer BiLSTM, H=200"
    assert rows["cnn"]["arch"] == "cnn" and rows["cnn"]["latency_b1_ms"] > 0

    # the target reads the figures: nobody at 100,000 words/s here ...
    assert "**missed**: no student reaches 100,000 words/s" in frontier.targets(s)[1]
    # ... a fast student within a point meets it, one further behind does not
    rows["cnn"]["words_per_s"] = 150_000.0
    assert "**missed**: cnn reaches 150,000 words/s at 90.0 %" in frontier.targets(s)[1]
    assert frontier.targets(s)[0].startswith("Fastest student: cnn (150,000 words/s")
    rows["cnn"]["retention"] = 0.945
    assert "**met** by cnn" in frontier.targets(s)[1]
    s["spacy"] = [{"model": "fr_core_news_md", "threads": 1, "words_per_s": 1000.0, "best": 1100.0, "how": "1 process"},
                  {"model": "fr_core_news_md", "threads": 2, "words_per_s": 500.0, "best": 550.0, "how": "2 processes"}]
    ratio = rows["bilstm2"]["words_per_s"] / 1000.0
    assert f"{ratio:.1f}x spaCy's faster way to use them (1,000 words/s, one process" in frontier.targets(s)[2]

    frontier.plot(s, tmp_path / "frontier.png")
    assert (tmp_path / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    text = "\n".join(frontier.table(s))
    assert "| bilstm2 **(default)** |" in text and "95.0 % (95.0, 95.0)" in text
    assert "| fr_core_news_md | 2 | 2 processes | 500 (550) | - |" in text


def test_batch1_section_reads_the_compare_result():
    c = {"command": "python -m benchmarks.runtime compare x --batches 1", "rounds": 3, "sentences": 1000,
         "cells": [{"model": "xdistil-bilstm2-de", "precision": "int8", "input": "words", "batch": 1,
                    "before_median": 100.0, "after_median": 90.0, "before_best": 110.0, "after_best": 95.0}],
         "latency": {"int8_cold": {"before": {"p50_ms": 1.0}, "after": {"p50_ms": 1.2}}}}
    text = "\n".join(frontier.batch1(c))
    assert "| de | int8 | words | 1 | 100 (110) | 90 (95) | 0.90x |" in text
    assert "| int8 | cold | 1.000 | 1.200 |" in text

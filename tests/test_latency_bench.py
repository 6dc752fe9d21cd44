"""The latency benchmark end to end on tiny models (quick settings; the numbers mean nothing here).

The reference-shaped teachers (mBERT-base, XLM-R-base) are far too big for a test, so tiny
configs of the same model types are injected under the same names.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import REPO
from synth import synth_sentences
from tiny import make_tiny_teacher
from transformers import AutoModelForTokenClassification, AutoTokenizer, BertConfig, XLMRobertaConfig

from xdistil import DEFAULT_LABELS
from xdistil.results import Latency
from xdistil.students import BiLSTMConfig, TransformerStudentConfig, build_student, save_student
from xdistil.vocab import seen_piece_ids

if str(REPO) not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks import latency, timing  # noqa: E402

LABELS = list(DEFAULT_LABELS)
BATCHES = ((1, 32), (4, 32))  # batch 1 x 32 is the online target's cell
TINY = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            id2label=dict(enumerate(LABELS)), label2id={lab: i for i, lab in enumerate(LABELS)})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("latency")
    teacher = make_tiny_teacher(root)
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    model = AutoModelForTokenClassification.from_pretrained(teacher).eval()
    seen = seen_piece_ids(tokenizer, [w for w, _ in synth_sentences(40, 1)])
    torch.manual_seed(0)
    bilstm, btok = build_student("bilstm", model, tokenizer, seen, LABELS,
                                 BiLSTMConfig(embedding_dim=8, hidden_dim=8))
    trans, ttok = build_student("transformer", model, tokenizer, seen, LABELS, TransformerStudentConfig(num_layers=1))
    extra = {"labels": LABELS, "max_length": 16}
    yield root, {"teacher": teacher, "bilstm": save_student(bilstm.eval(), btok, root / "bilstm", extra=extra),
                 "transformer": save_student(trans.eval(), ttok, root / "transformer", extra=extra)}
    torch.set_num_threads(before)


def _run(models, out, exports, rounds=1):
    shapes = {"mbert-base": BertConfig(vocab_size=300, max_position_embeddings=64, **TINY),
              "xlmr-base": XLMRobertaConfig(vocab_size=300, max_position_embeddings=66, type_vocab_size=1,
                                            pad_token_id=1, **TINY)}
    quick = {**latency.QUICK, "batches": BATCHES}
    return latency.run(models, out, threads=1, shapes=shapes, exports_dir=exports, command="test",
                       export_kwargs={"int8_min_agreement": 0.0}, rounds=rounds, **quick)  # random: near-tied tags


def test_latency_run_on_tiny_models(models, tmp_path):
    root, dirs = models
    out, exports = tmp_path / "results", root / "exports"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"models": [{"name": "x"}], "latency": [{"old": 1}]}))
    report = _run(dirs, out, exports)

    # every (model, runtime, precision, batch) cell, once
    expected = set()
    for name in ("teacher", "mbert-base", "xlmr-base"):
        expected |= {(name, rt, "fp32") for rt in ("torch", "ort")}
    for name in ("bilstm", "transformer"):
        expected |= {(name, "torch", "fp32"), (name, "ort", "fp32"), (name, "ort", "int8")}
    cells = [(*c.key, c.batch, c.seq) for c in report.cells]
    assert sorted(cells) == sorted((*c, b, s) for c in expected for b, s in BATCHES)
    # students and their kinds come from the student registry
    kinds = {m["name"]: (m["role"], m["kind"]) for m in report.models}
    assert kinds["bilstm"] == ("student", "bilstm") and kinds["transformer"] == ("student", "transformer")
    assert kinds["teacher"] == ("teacher", "hf") and kinds["mbert-base"] == ("teacher", "shaped")

    # summary.json: the schema of the issue, other keys kept, old latency list replaced
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"] == [{"name": "x"}]
    assert len(summary["latency"]) == len(cells)
    types = {"model": str, "runtime": str, "precision": str, "batch": int, "seq": int, "median_ms": float}
    for row in summary["latency"]:
        assert set(row) == set(types)
        assert all(isinstance(row[k], t) for k, t in types.items())
        assert row["runtime"] in ("torch", "ort") and row["precision"] in ("fp32", "int8")
        assert row["median_ms"] > 0
    assert Latency.read(out / "latency.json") == report
    assert json.loads((out / "latency.json").read_text())["format"] == "xdistil-latency/1"
    assert summary["latency_report"]["targets"] == report.targets

    # speedups come from the medians: students over mbert-base and the real teacher, in torch fp32
    median = {c: r.median_ms for c, r in zip(cells, report.cells, strict=True)}
    rows = report.speedups
    assert {s.reference for s in rows} == {"mbert-base", "teacher"}
    assert len(rows) == 2 * 2 * 3 * len(BATCHES)  # references x students x cells x batches
    for s in rows:
        ref = median[(s.reference, "torch", "fp32", s.batch, s.seq)]
        assert s.speedup == pytest.approx(ref / median[(s.model, s.runtime, s.precision, s.batch, s.seq)])
    # targets at batch 32 / batch 1: batch 32 is not timed here, batch 1 is
    t = {x["name"]: x for x in report.targets}
    assert set(t) == {"batch", "online"} and t["batch"]["speedup"] is None and t["batch"]["met"] is None
    online = next(s for s in rows if s.model == "bilstm" and s.reference == "mbert-base"
                  and s.runtime == "ort" and s.precision == "int8" and s.batch == 1)
    assert t["online"]["speedup"] == online.speedup and t["online"]["met"] == (online.speedup >= 50)
    assert (t["online"]["target"], t["online"]["xtremedistil"]) == (50.0, 16.0)

    md = (out / "latency.md").read_text()
    assert "| bilstm | bilstm |" in md and "batch 4 x 32" in md and "not measured" in md
    assert report.settings["threads"] == 1 and report.provenance.command == "test"
    assert report.provenance.machine["threads"] == 1

    # a second run reuses every export; in two interleaved rounds every cell is still one row,
    # its median the median of the rounds' medians, the rounds' own medians kept beside it
    again = _run(dirs, out, exports, rounds=2)
    assert all(m["export_reused"] for m in again.models)
    assert sorted((*c.key, c.batch, c.seq) for c in again.cells) == sorted(cells)
    per_round = again.settings["round_medians_ms"]
    assert again.settings["rounds"] == 2 and len(per_round) == len(cells)
    for c in again.cells:
        ms = per_round[" ".join(map(str, (*c.key, c.batch, c.seq)))]
        assert len(ms) == 2 and c.median_ms == pytest.approx(sum(ms) / 2, abs=1e-3)
        assert c.min_ms <= min(ms) and c.max_ms >= max(ms)


def test_cli_parses_and_refuses_nothing_to_time():
    with pytest.raises(SystemExit):
        latency.main(["--shapes"])


def test_interleaved_rounds_rotate_the_order_and_honour_warmup_and_limits():
    calls = []
    cells = {k: (lambda k=k: calls.append(k) or len(calls)) for k in "abc"}
    got = timing.interleave(cells, 3, warmup=1, upto=lambda k: 1 if k == "c" else None)
    # round 0 (warm-up) a b c; round 1 from b; round 2 from c (its one timed round used up: skipped); round 3 from a
    assert calls == list("abc") + list("bca") + list("ab") + list("ab")
    assert got == {"a": [6, 7, 9], "b": [4, 8, 10], "c": [5]}
    assert timing.interleave({"x": lambda: 1, "y": lambda: 2}, 2, first=1) == {"x": [1, 1], "y": [2, 2]}

"""Model selection that is not a lottery: the student selected on its agreement with the
teacher on held-out transfer sentences (distill.select teacher), never trained on; the gold
slice's F1 as a report; a stage kept unless its start beats it by distill.keep_margin; the
new fields in the fingerprints and in ``--help``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from synth import synth_sentences, write_conll
from tiny import make_tiny_teacher

from xdistil import DEFAULT_LABELS
from xdistil.config import ConfigError, DistillConfig, RunConfig, from_dict, to_dict

LABELS = list(DEFAULT_LABELS)


# ---- the held-out rows --------------------------------------------------------------------

def test_selection_rows_spread_evenly_capped_and_deterministic():
    from xdistil.data.transfer import SELECTION_SHARE, selection_rows

    rows = {"de": list(range(0, 1000)), "ar": list(range(1000, 1400)), "hi": list(range(1400, 1420))}
    got = selection_rows(rows, 300)
    # 100 a language, but never more than a quarter of a language's rows (hi: 5 of 20)
    assert {k: len(v) for k, v in got.items()} == {"de": 100, "ar": 100, "hi": int(20 * SELECTION_SHARE)}
    for lang, held in got.items():
        assert set(held) <= set(rows[lang]) and len(set(held)) == len(held)
    # spread over the whole list (its sources follow one another), not its head
    assert got["de"][0] < 10 and got["de"][-1] > 990 and max(np.diff(got["de"])) == 10
    assert selection_rows(rows, 300) == got  # the same for every seed and every call
    assert selection_rows({"de": list(range(3))}, 100) == {"de": []}  # too few to hold any out


def test_no_transfer_rows_to_hold_out_is_one_line():
    import datasets

    from xdistil.stages import _held_out

    ds = datasets.Dataset.from_dict({"lang": ["xx"] * 5})
    with pytest.raises(ValueError, match="distill.select gold") as e:
        _held_out(ds, [3, 4], 100)
    assert "\n" not in str(e.value)


def test_teacher_tags_vote_by_weight_like_the_hard_loss():
    import datasets

    from xdistil.stages import teacher_tags

    def sure(tags):  # one sentence's (n_words, C) logits, confident in ``tags``
        out = np.full((len(tags), len(LABELS)), -8.0, dtype=np.float32)
        out[np.arange(len(tags)), [LABELS.index(t) for t in tags]] = 8.0
        return out.reshape(-1)

    ds = datasets.Dataset.from_dict({"t0_logits": [sure(["B-PER", "O"])], "t1_logits": [sure(["B-LOC", "I-LOC"])]})
    assert teacher_tags(ds, [0], [0, 1], LABELS, torch.tensor([0.7, 0.3])) == [["B-PER", "O"]]
    assert teacher_tags(ds, [0], [0, 1], LABELS, torch.tensor([0.3, 0.7])) == [["B-LOC", "I-LOC"]]
    assert teacher_tags(ds, [0], [1], LABELS, torch.tensor([1.0])) == [["B-LOC", "I-LOC"]]


# ---- the cross-stage rule (fit) -------------------------------------------------------------

def _job(scores, **kw):
    from xdistil.fit import Job

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x = torch.randn(16, 3)
    it = iter(scores)
    return Job(module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
               batches=lambda epoch: [list(range(0, 8)), list(range(8, 16))],
               loss=lambda m, b: (m(x[b]).pow(2).mean(), len(b)), select=lambda: (next(it), {}),
               select_start=True, **kw)


def test_a_stage_within_the_margin_keeps_its_own_weights():
    from xdistil.fit import fit, make_accelerator

    acc = make_accelerator()
    # the start scores 74.13, the stage's epochs 74.02 then 73.97 (the seed 13)
    old = fit(_job([74.13, 74.02, 73.97, 75.0], epochs=3, patience=2), acc, progress=False)
    assert old.best_epoch == 0 and old.epoch == 2  # margin 0: stopped early, the stage thrown away
    new = fit(_job([74.13, 74.02, 73.97, 75.0], epochs=3, patience=2, start_margin=0.5), acc, progress=False)
    assert new.best_epoch == 3 and new.epoch == 3 and new.best_score == 75.0  # it ran on, and its best is kept
    assert new.start_score == 74.13
    # seed 15 under teacher selection: a restarted stage dips beyond the margin before it climbs;
    # patience alone stops it in the dip, min_epochs lets it run its epochs and keeps the best
    dip = [78.14, 77.23, 77.40, 78.0, 78.3, 78.2]
    stopped = fit(_job(dip, epochs=5, patience=2, start_margin=0.5), acc, progress=False)
    assert stopped.epoch == 2 and stopped.best_epoch == 0
    ran = fit(_job(dip, epochs=5, patience=2, start_margin=0.5, min_epochs=5), acc, progress=False)
    assert ran.epoch == 5 and ran.best_epoch == 4 and ran.best_score == 78.3
    # a stage clearly worse than its start: the start wins, reported with its own score
    worse = fit(_job([74.13, 72.0, 71.0], epochs=2, start_margin=0.5), acc, progress=False)
    assert worse.best_epoch == 0 and worse.best_score == 74.13


# ---- selection end to end on a tiny distillation -------------------------------------------

def _biased_teacher(tmp_path, tag: str):
    """A tiny teacher that tags every word ``tag``."""
    from transformers import AutoModelForTokenClassification

    path = make_tiny_teacher(tmp_path)
    model = AutoModelForTokenClassification.from_pretrained(path)
    with torch.no_grad():
        model.classifier.bias.zero_()
        model.classifier.bias[LABELS.index(tag)] = 30.0
    model.save_pretrained(path)
    return path


def _cfg(data, teacher, **distill) -> RunConfig:
    """Budget 200 (160 labeled + 40 gold selection), every gold word B-LOC; the teacher says B-ORG.
    Stage g learns the gold (B-LOC everywhere), stage t the teacher's tags (B-ORG everywhere)."""
    return from_dict(RunConfig, {
        "data": {"languages": ["xx"], "labeled_budget": 200, "val_size": 40, "files": data},
        "teacher": {"model": str(teacher), "max_length": 24},
        "transfer": {"layers": [2], "chunk_size": 200, "batch_size": 32},
        "student": {"embedding_dim": 8, "hidden_dim": 8, "max_length": 24, "shape_dim": 0},
        "distill": {"stages": [{"name": "g", "losses": {"gold": 1.0}, "data": "labeled", "unfreeze": False,
                                "epochs": 2, "lr": 0.05, "batch_size": 16},
                               {"name": "t", "losses": {"hard": 1.0}, "unfreeze": False, "epochs": 2,
                                "lr": 0.05, "batch_size": 16}],
                    "match": {"teacher_layer": 2}, "max_steps_per_epoch": 8, "select_size": 40, **distill},
    })


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    from xdistil.labeling import label_transfer

    tmp = tmp_path_factory.mktemp("selection")
    teacher = _biased_teacher(tmp / "teacher", "B-ORG")
    locs = [(w, ["B-LOC"] * len(w)) for w, _ in synth_sentences(260, 1)]
    data = {"xx": {"train": [str(write_conll(tmp / "train.tsv", locs))],
                   "unlabeled": [str(write_conll(tmp / "unlabeled.tokens", synth_sentences(120, 3), False))]}}
    cfg = _cfg(data, teacher)
    return data, teacher, label_transfer(cfg, [teacher], tmp / "transfer", progress=False)


def _distill(labeled, out, monkeypatch=None, **distill):
    from xdistil import stages
    from xdistil.batching import TransferBatcher
    from xdistil.labeling import load_transfer

    data, teacher, transfer = labeled
    trained: list[int] = []
    if monkeypatch is not None:  # record every row a phase trains on
        plan = TransferBatcher.plan

        def recording(self, batches, *a, **k):
            trained.extend(r for b in batches for r in b)
            return plan(self, batches, *a, **k)

        monkeypatch.setattr(TransferBatcher, "plan", recording)
    cfg = _cfg(data, teacher, **distill)
    dirs = stages.distill(cfg, transfer, teacher, out, progress=False)
    log = json.loads((out / "metrics.json").read_text())
    ds, _ = load_transfer(transfer)
    return cfg, dirs, log, ds, trained


def _tags(student_dir, words) -> list[str]:
    from xdistil.taggers import load_tagger, predict_tags

    return sorted({t for s in predict_tags(load_tagger(student_dir), words, 32) for t in s})


def test_selection_follows_the_teacher_and_reports_gold(labeled, tmp_path, monkeypatch, one_thread):
    cfg, dirs, log, ds, trained = _distill(labeled, tmp_path / "teacher", monkeypatch)
    sel = log["selection"]
    assert sel["select"] == "teacher" and sel["gold_sentences"] == {"xx": 40}
    held = sel["held_out_sentences"]["xx"]
    assert 0 < held <= 40
    # the held-out rows: transfer-only sentences, never trained on (the others are)
    rows = [i for i, s in enumerate(ds["split"]) if s == "transfer"]
    from xdistil.data.transfer import selection_rows

    held_rows = set(selection_rows({"xx": rows}, 40)["xx"])
    assert len(held_rows) == held and not held_rows & set(trained)
    assert (set(rows) - held_rows) & set(trained)  # the other transfer sentences are

    g, t = log["stages"]
    # stage g learns from gold alone: it selects on gold, whatever distill.select says
    assert g["phases"][0]["select"] == "gold" and "gold_f1" not in g["phases"][0]["history"][0]
    # stage t: gold and teacher disagree (B-LOC against B-ORG); the teacher decides
    phase = t["phases"][0]
    assert phase["select"] == "teacher" and phase["best_epoch"] >= 1
    best = phase["history"][phase["best_epoch"] - 1]
    assert best["select"] > 90 and best["gold_f1"] < 10  # the gold F1 logged as a report
    words = [list(w) for w in ds.select(sorted(held_rows))["words"]]
    assert _tags(dirs[0], words) == ["B-LOC"] and _tags(dirs[1], words) == ["B-ORG"]


def test_gold_selection_and_the_margin(labeled, tmp_path, one_thread):
    # select gold, margin 0 (the behaviour before): the stage that loses gold F1 is thrown away
    _, dirs, log, ds, _ = _distill(labeled, tmp_path / "gold", select="gold", keep_margin=0)
    words = [list(w) for w in ds["words"][:50]]
    phase = log["stages"][1]["phases"][0]
    assert log["selection"]["held_out_sentences"] == {} and phase["select"] == "gold"
    assert phase["best_epoch"] == 0 and phase["start_select"] > 90 and _tags(dirs[1], words) == ["B-LOC"]
    # a margin wider than any F1 difference: the stage keeps its own weights
    _, dirs, log, _, _ = _distill(labeled, tmp_path / "wide", select="gold", keep_margin=150)
    assert log["stages"][1]["phases"][0]["best_epoch"] >= 1 and _tags(dirs[1], words) == ["B-ORG"]


# ---- config, fingerprints, --help ---------------------------------------------------------

def test_config_fields_are_checked():
    assert (DistillConfig().select, DistillConfig().select_size, DistillConfig().keep_margin) == ("teacher", 2000, 0.5)
    for bad, key in (({"select": "dev"}, "select"), ({"select_size": 0}, "select_size"),
                     ({"keep_margin": -1}, "keep_margin")):
        with pytest.raises(ConfigError, match=key) as e:
            from_dict(DistillConfig, bad, "distill")
        assert "\n" not in str(e.value)


def test_fingerprints_follow_the_selection_fields(tmp_path):
    from xdistil.run import fingerprints

    (tmp_path / "transfer").mkdir()
    (tmp_path / "teacher").mkdir()

    def digests(**distill):
        cfg = from_dict(RunConfig, {"data": {"languages": ["xx"]}, "distill": {"stages": "hard,soft", **distill}})
        stage = fingerprints.stages(cfg, cfg.distill.resolved_stages(), tmp_path / "transfer", [tmp_path / "teacher"])
        step = fingerprints.distill(cfg, tmp_path / "transfer", tmp_path / "teacher")
        return [fp["digest"] for fp in stage], step["digest"]

    base = digests()
    for change in ({"select": "gold"}, {"select_size": 1000}, {"keep_margin": 1.0}):
        got = digests(**change)
        assert got[0][0] != base[0][0] and got[0][1] != base[0][1] and got[1] != base[1], change
    # under select gold the held-out size changes nothing
    assert digests(select="gold", select_size=1000) == digests(select="gold")
    # the old selection (gold, margin 0) leaves the new keys out: digests made before them hold
    old = fingerprints.distill_fields(DistillConfig(select="gold", keep_margin=0))
    assert not set(old) & set(fingerprints.SELECTION_FIELDS)
    assert set(old) == set(to_dict(DistillConfig())) - {"stages", *fingerprints.NOT_OUTPUT,
                                                        *fingerprints.SELECTION_FIELDS, "precision"}


def test_distill_precision_sets_the_students_alone(tmp_path):
    """distill.precision: the students train in it, the teacher and labeling keep the run's; a
    stage's fingerprint holds the precision it trains in, so bf16 set either way is one student."""
    from xdistil.config import RunConfig, from_dict
    from xdistil.run import fingerprints
    from xdistil.stages import student_precision

    (tmp_path / "transfer").mkdir()
    (tmp_path / "teacher").mkdir()

    def run(**top):
        return from_dict(RunConfig, {"data": {"languages": ["xx"]}, **top,
                                     "distill": {"stages": "hard,soft", **top.pop("distill", {})}})

    def stage_digests(cfg):
        return [fp["digest"] for fp in fingerprints.stages(cfg, cfg.distill.resolved_stages(), tmp_path / "transfer",
                                                           [tmp_path / "teacher"])]

    fp32, student_bf16, all_bf16 = run(precision="fp32"), run(precision="fp32", distill={"precision": "bf16"}), \
        run(precision="bf16")
    assert [student_precision(c) for c in (fp32, student_bf16, all_bf16)] == ["fp32", "bf16", "bf16"]
    assert stage_digests(student_bf16) != stage_digests(fp32)
    assert stage_digests(student_bf16) == stage_digests(all_bf16)
    # the teacher's and the transfer set's fingerprints do not see it
    assert fingerprints.teacher(student_bf16, checkpoint=True) == fingerprints.teacher(fp32, checkpoint=True)
    assert fingerprints.label(student_bf16, [tmp_path / "teacher"]) == fingerprints.label(fp32, [tmp_path / "teacher"])
    # unset, the distill step's fingerprint is the one made before the field existed
    assert "precision" not in fingerprints.distill_fields(fp32.distill)
    with pytest.raises(ConfigError, match="precision"):
        run(distill={"precision": "int8"})


def test_distill_help_shows_the_fields(capsys):
    from xdistil.cli import main

    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # the help is wrapped to the terminal
    for flag in ("--distill.select {teacher|gold}", "--distill.select_size", "--distill.keep_margin"):
        assert flag in out
    assert "held out" in out and "F1 points" in out

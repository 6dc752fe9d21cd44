"""The sentence-level benchmark end to end in its --quick settings on tiny teachers and
synthetic languages (the numbers mean nothing here): issue 23's summary schema, results.md,
groups and variants as config overrides, running in pieces, resumption."""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from conftest import REPO
from synth import synth_files, synth_sentences, write_conll
from xdistil_export.atomic import write_json

from xdistil.config import load_yaml

if str(REPO) not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks import sentences  # noqa: E402

ROW_KEYS = {"variant", "language", "test", "domain", "teacher_f1", "student_f1", "retention"}


def _config(tmp_path) -> dict:
    raw = load_yaml(REPO / "benchmarks/configs/sentences.yaml")  # its stages, student, groups and variants
    xx = synth_files(tmp_path / "xx")["xx"]
    yy = synth_files(tmp_path / "yy")["xx"]
    test = write_conll(tmp_path / "xx-test.tsv", synth_sentences(40, seed=13))
    news = [(w + ["otherthing"], t + ["B-OTH"]) for w, t in synth_sentences(40, seed=11)]  # OTH maps to O
    ood = str(write_conll(tmp_path / "yy-news-test.tsv", news))
    groups = raw["groups"]
    groups["in"]["config"]["data"] = {"languages": ["xx"], "files": {"xx": {**xx, "test": [str(test)]}}}
    groups["in"]["tests"] = {"xx": ["dev", "test"]}
    groups["out"]["config"]["data"] = {"languages": ["yy"], "files": {"yy": yy}}
    groups["out"]["tests"] = {"yy": [ood]}
    groups["control"]["config"]["data"] = {"languages": ["xx"], "files": {"xx": xx}}
    groups["control"]["tests"] = {"xx": ["dev"]}
    return raw


def test_quick_run_schema_pieces_and_resume(tmp_path, one_thread, monkeypatch):
    raw = _config(tmp_path)
    results, run_dir = tmp_path / "results", tmp_path / "run"
    # in pieces: one group and variant, then the rest; the results hold everything finished
    first = sentences.run(raw, run_dir, results, ["baseline"], ["in"], quick=True, progress=False, command="test")
    assert {r["variant"] for r in first["rows"]} == {"baseline"}
    variants = ["baseline", "factorized", "wide-shape", "layer9"]
    s = sentences.run(raw, run_dir, results, variants, ["in", "out", "control"], quick=True, progress=False,
                      command="test")

    assert json.loads((results / "summary.json").read_text()) == json.loads(json.dumps(s))
    assert set(s) == {"chosen", "compression", "rows"}
    assert s["chosen"] in variants and isinstance(s["compression"], float) and s["compression"] > 1
    for r in s["rows"]:
        assert set(r) == ROW_KEYS and r["domain"] in ("in", "out")
        assert r["retention"] is None or (isinstance(r["retention"], float) and r["retention"] >= 0)
    tests = {(r["language"], r["test"], r["domain"]) for r in s["rows"]}
    assert {t for _, t, d in tests if d == "out"} == {"yy-news-test"}
    assert {t for _, t, d in tests if d == "in"} >= {"xx-test", "dev"}  # the in group's test and dev
    assert {(r["variant"]) for r in s["rows"]} == set(variants)

    d = json.loads((results / "details.json").read_text())
    assert set(d["verdicts"]) == set(variants) and set(d["seconds"]["layer9"]) == {"in", "out", "control"}
    assert all(o["test"] and "teacher_f1" in o for o in d["org"])
    md = (results / "results.md").read_text()
    assert "## Variant wide-shape" in md and "## Targets" in md

    # the levers reached the students; every variant here differs only in the student or the
    # distillation, so all share the baseline's teacher and transfer set (both hidden layers
    # stored once): linked from the first cell, trained and labeled once
    import os

    from xdistil.run import RunDir
    from xdistil.runner import outputs

    def config_of(variant):
        last = outputs(run_dir / "in" / variant).student
        return json.loads((last / "xdistil_student.json").read_text())["config"]

    assert config_of("factorized")["factor_dim"] == 32 and config_of("wide-shape")["shape_dim"] == 16
    assert config_of("baseline")["factor_dim"] == 0 == config_of("baseline")["shape_dim"]
    manifests = {os.stat(RunDir(run_dir / "in" / v).transfer_manifest).st_ino for v in variants}
    teachers = {os.stat(RunDir(run_dir / "in" / v).teacher / "model.safetensors").st_ino for v in variants}
    assert len(manifests) == 1 and len(teachers) == 1

    # a rerun builds and scores nothing again
    def boom(*a, **k):
        raise AssertionError("scored twice")

    monkeypatch.setattr("xdistil.evaluate.evaluate_tagger", boom)
    again = sentences.run(raw, run_dir, results, variants, ["in", "out", "control"], quick=True, progress=False,
                          command="test")
    assert again["rows"] == s["rows"]

    # every variant against the first, per group and split, with a bootstrap interval around it
    for name in ("factorized", "wide-shape", "layer9"):
        for x in d["differences"][name]["in"].values():
            assert x["low"] <= x["diff"] <= x["high"] and x["seeds"] == [1, 1]
    assert "baseline" not in d["differences"] and "## Each variant against baseline" in md
    # a group whose teacher is under steer_min_teacher_f1 is reported but never steers the choice
    done = json.loads((run_dir / "done.json").read_text())
    raw["steer_min_teacher_f1"] = 101
    reported, weak = sentences.build(sentences.bench_of(sentences.load(raw)), done, {"command": "test"})
    assert weak["not_steering"] == ["control", "in", "out"]
    assert all(v[p]["sentences_avg"] is None for v in weak["verdicts"].values() for p in ("dev", "test"))
    assert {r["variant"] for r in reported["rows"]} == set(variants)  # still reported
    assert reported["chosen"] is None  # and nothing steers the choice


def test_unknown_variant_or_group_is_one_line(tmp_path):
    raw = _config(tmp_path)
    with pytest.raises(ValueError, match="unknown variant"):
        sentences.run(raw, tmp_path / "run", tmp_path / "results", ["nope"], quick=True, progress=False)
    with pytest.raises(ValueError, match="unknown group"):
        sentences.run(raw, tmp_path / "run", tmp_path / "results", ["baseline"], ["nope"], quick=True, progress=False)


def test_error_analysis_counts_add_up(tmp_path, one_thread):
    from benchmarks import sentence_errors

    raw = _config(tmp_path)
    run_dir, results = tmp_path / "run", tmp_path / "results"
    sentences.run(raw, run_dir, results, ["baseline"], ["in", "out"], quick=True, progress=False, command="test")
    r = sentence_errors.run(raw, run_dir, results, ["in", "out", "control"], ["baseline", "shape"], "cmd")
    assert set(r["groups"]) == {"in", "out"}  # control and shape were never built: left out
    assert all(set(v) == {"baseline"} for v in r["groups"].values())
    for g in r["groups"].values():
        a = g["baseline"]["all"]
        right = {attr: sum(n for n, _ in vals.values()) for attr, vals in a["by"].items()}
        kept = {attr: sum(k for _, k in vals.values()) for attr, vals in a["by"].items()}
        assert len(set(right.values())) == 1 and len(set(kept.values())) == 1  # every entity in each breakdown
        n, k = next(iter(right.values())), next(iter(kept.values()))
        assert 0 <= k <= n and sum(a["failures"].values()) == n - k
    assert "Group in (in domain), variant baseline" in (results / "errors.md").read_text()
    assert json.loads((results / "errors.json").read_text())["command"] == "cmd"


def test_error_kinds_and_casing():
    from benchmarks.sentence_errors import analyse, casing, failure

    gold = ("ORG", 2, 4)
    assert failure(gold, [("ORG", 2, 4)]) is None
    assert failure(gold, [("PER", 0, 1)]) == "missed"
    assert failure(gold, [("LOC", 2, 4)]) == "type"
    assert failure(gold, [("ORG", 3, 4)]) == "boundary"
    assert failure(gold, [("PER", 1, 3)]) == "boundary+type"
    assert casing(["Banco", "do", "Brasil"]) == "lower" and casing(["NASA"]) == "upper"
    assert casing(["Paris", "2024"]) == "title"
    words = [["a", "New", "York", "Times", "story"]]
    g = [["O", "B-ORG", "I-ORG", "I-ORG", "O"]]
    s = [["O", "B-LOC", "I-LOC", "O", "O"]]
    out = analyse(words, g, g, s, [[1, 1, 1, 1, 1]], [[1, 2, 1, 1, 1]])
    assert out["failures"] == {"boundary+type": 1} and out["by"]["length"] == {"3+": [1, 0]}
    assert out["by"]["pieces"] == {"student splits more": [1, 0]} and out["spurious"] == {"student": 1, "teacher": 0}


@pytest.mark.parametrize("name", ["sentences.yaml", "sentences-full.yaml"])
def test_every_variant_of_the_committed_configs_validates(name):
    grid = sentences.load(REPO / "benchmarks/configs" / name)
    for g in grid.groups:
        base = grid.config(g)
        assert base.student.shape_dim == 0  # the baseline is explicit, whatever the default
        for v in grid.variants:
            cfg = grid.config(g, v)
            assert (cfg.data, cfg.teacher) == (base.data, base.teacher), v  # a variant changes neither
    assert set(grid.keys["default_variants"]) <= set(grid.variants)


def _entry(lang, teacher_f1, students):
    """One group of ``done.json`` with one dev test: the teacher's F1 and each variant's."""
    t = {"f1": teacher_f1, "support": 100, "per_type": {}, "params": 1000}
    return {"teacher": {f"{lang}:dev": t}, "languages": [lang],
            "variants": {n: {"scores": {f"{lang}:dev": {"f1": f1, "per_type": {}, "params": 10}},
                             "label_s": 1, "distill_s": 1, "wall_s": 1} for n, f1 in students.items()}}


def test_the_choice_pools_a_variants_seeds():
    """A variant that won with one seed and lost with another is judged on both (``seed_of``)."""
    bench = {"groups": {"in": {"domain": "in"}, "out": {"domain": "out"}},
             "variants": {"a": {}, "b": {}, "a-s2": {"seed_of": "a"}, "b-s2": {"seed_of": "b"}}, "min_entities": 0}
    done = {"in": _entry("xx", 80.0, {"a": 76.0, "b": 72.0}),
            "out": _entry("yy", 50.0, {"a": 47.5, "b": 45.0, "a-s2": 25.0, "b-s2": 45.0})}
    summary, details = sentences.build(bench, done, {"command": "test"})
    assert details["verdicts"]["a"]["dev"]["sentences_avg"] > details["verdicts"]["b"]["dev"]["sentences_avg"]
    pooled = details["pooled"]
    assert set(pooled) == {"a", "b"} and pooled["a"]["seeds"] == ["a", "a-s2"]
    assert pooled["a"]["runs_per_group"] == {"in": 1, "out": 2}
    assert pooled["a"]["dev"]["out_avg"] == pytest.approx((0.95 + 0.5) / 2)
    assert summary["chosen"] == "b"  # a alone would have won; its two seeds do not
    assert {r["variant"] for r in summary["rows"]} == {"a", "b", "a-s2", "b-s2"}  # every run stays in the rows


def test_nothing_is_chosen_where_no_group_steers(tmp_path):
    """Only groups whose teacher is under steer_min_teacher_f1 (sentences-fair's out-of-domain
    group run alone): every run is reported, no variant is chosen, and the page says why."""
    bench = {"groups": {"out": {"domain": "out"}}, "variants": {"a": {}, "b": {}}, "min_entities": 0,
             "steer_min_teacher_f1": 60}
    done = {"out": _entry("yy", 50.0, {"a": 47.5, "b": 45.0})}
    summary, details = sentences.build(bench, done, {"command": "test"})
    assert (summary["chosen"], summary["compression"]) == (None, None) and details["not_steering"] == ["out"]
    assert {r["variant"] for r in summary["rows"]} == {"a", "b"}
    sentences.write_page(sentences.blocks(summary, details), tmp_path)
    assert "Chosen: none. No group here steers the choice" in (tmp_path / "results.md").read_text()
    bench["steer_min_teacher_f1"] = 40  # the same teacher now steers: b loses to a
    assert sentences.build(bench, done, {"command": "test"})[0]["chosen"] == "a"


def test_the_choice_needs_as_many_seeds_as_the_most_measured_variant():
    """One lucky seed does not beat a mean of two: a variant with fewer seeds in a sentence-level
    group than the most-measured one does not compete (the control group does not count)."""
    bench = {"groups": {"in": {"domain": "in"}, "out": {"domain": "out"}, "ctl": {"domain": "in", "control": True}},
             "variants": {"a": {}, "b": {}, "a-s2": {"seed_of": "a"}}, "min_entities": 0}
    done = {"in": _entry("xx", 80.0, {"a": 70.0, "a-s2": 70.0, "b": 79.0}),
            "out": _entry("yy", 50.0, {"a": 40.0, "a-s2": 40.0, "b": 49.0}),
            "ctl": _entry("zz", 90.0, {"a": 80.0})}
    summary, details = sentences.build(bench, done, {"command": "test"})
    assert details["pooled"]["b"]["dev"]["sentences_avg"] > details["pooled"]["a"]["dev"]["sentences_avg"]
    assert details["pooled"]["b"]["runs_per_group"] == {"in": 1, "out": 1, "ctl": 0}
    assert summary["chosen"] == "a"  # b is ahead on one seed, a measured on two everywhere
    done["in"]["variants"]["b-s2"] = done["in"]["variants"]["b"]
    done["out"]["variants"]["b-s2"] = done["out"]["variants"]["b"]
    bench["variants"]["b-s2"] = {"seed_of": "b"}
    assert sentences.build(bench, done, {"command": "test"})[0]["chosen"] == "b"  # level coverage: b wins


def test_refresh_reapplies_the_choice_to_committed_results_without_a_run_dir(tmp_path, capsys):
    """``--refresh``: results written before the seed-coverage rule (no runs_per_group, the old
    choice) are rewritten from their own details.json, the seeds counted from its seconds."""
    bench = {"groups": {"in": {"domain": "in"}, "out": {"domain": "out"}, "ctl": {"domain": "in", "control": True}},
             "variants": {"a": {}, "b": {}, "a-s2": {"seed_of": "a"}}, "min_entities": 0, "notes": "now"}
    done = {"in": _entry("xx", 80.0, {"a": 70.0, "a-s2": 70.0, "b": 79.0}),
            "out": _entry("yy", 50.0, {"a": 40.0, "a-s2": 40.0, "b": 49.0}),
            "ctl": _entry("zz", 90.0, {"a": 80.0})}
    summary, details = sentences.build(bench, done, {"command": "first"})
    for v in details["pooled"].values():
        del v["runs_per_group"]  # as an older details.json has it
    results = tmp_path / "results"
    results.mkdir()
    write_json(results / "summary.json", {**summary, "chosen": "b"})  # the old rule's choice
    write_json(results / "details.json", {**details, "notes": "then"})
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump({"student": {"arch": "bilstm"}, **bench}))

    assert sentences.main(["--refresh", "--config", str(tmp_path / "bench.yaml"), "--results", str(results)]) == 0
    after = json.loads((results / "summary.json").read_text())
    assert after["chosen"] == "a" and after["rows"] == summary["rows"]
    kept = json.loads((results / "details.json").read_text())
    assert kept["pooled"]["b"]["runs_per_group"] == {"in": 1, "out": 1, "ctl": 0}
    assert kept["notes"] == "now" and kept["commands"][-1].endswith("--results " + str(results))
    page = (results / "results.md").read_text()
    assert "Chosen: **a**" in page and "in 2, out 2, ctl 1" in page
    assert "Chosen: **a**" in capsys.readouterr().out


def test_refresh_of_results_older_than_pooling_is_one_line(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    write_json(old / "summary.json", {"chosen": "baseline", "compression": 40.0, "rows": []})
    write_json(old / "details.json", {"format": sentences.FORMAT, "verdicts": {}, "groups": {}, "seconds": {}})
    with pytest.raises(SystemExit, match="made before seeds were pooled"):
        sentences.main(["--refresh", "--config", str(REPO / "benchmarks/configs/sentences.yaml"),
                        "--results", str(old), "-q"])

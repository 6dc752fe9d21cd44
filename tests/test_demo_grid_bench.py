"""The demo recipe's grid (benchmarks/demo_grid.py + configs/demo_grid.yaml, issue 33) in its
--quick settings on a tiny teacher and the real WikiANN de/ar/hi files (the numbers mean
nothing here): every view writes its results from the cells, a cell shared by two views is
distilled once, and the grid's variant keys (every_stage, steps_of, wall_of) change what they say."""

from __future__ import annotations

import json
import math
import sys

import pytest
from conftest import REPO

if str(REPO) not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks import demo_grid, grid  # noqa: E402
from xdistil.config import RunConfig, apply_overrides, from_dict, to_dict  # noqa: E402


def test_every_variant_changes_what_it_says_and_nothing_else():
    g = grid.Grid.load(demo_grid.CONFIG)
    base = g.config("control")
    assert base.precision == "fp32" and base.data.languages == ["de", "ar", "hi"]
    for name in g.variants:
        cfg = g.config("control", name, 13)
        assert (cfg.data, cfg.teacher) == (base.data, base.teacher), name
        assert cfg.distill.seed == 13
    b256 = g.config("control", "b256")
    assert [s.batch_size for s in b256.distill.stages] == [256] * len(base.distill.stages)
    assert [s.epochs for s in b256.distill.stages] == [s.epochs for s in base.distill.stages]
    gold = g.config("control", "gold")
    assert gold.distill.select == "gold" and {s.min_epochs for s in gold.distill.stages} == {0}
    half = g.config("control", "3x-steps", scale=0.4)
    assert [s.epochs for s in half.distill.stages] == [0.4 * s.epochs for s in base.distill.stages]
    assert half.distill.stages[-1].min_epochs == 2 and half.transfer.limit == 9000  # floor(5 * 0.4)
    assert [c for c, v, _ in g.cells(["demo", "1x-long"]) if v == "1x-long"] == ["1x-long-s13", "1x-long-s14"]
    assert g.config("control", "h128").student.hidden_dim == 128 != base.student.hidden_dim
    for view in g.keys["views"].values():
        assert set(view["variants"]) <= set(g.variants)
    with pytest.raises(ValueError, match="steps_of 'nope' is not a variant"):
        grid.Grid.load({"variants": {"a": {"steps_of": "nope"}}})
    with pytest.raises(ValueError, match="steps_of or wall_of, not both"):
        grid.Grid.load({"variants": {"a": {}, "b": {"steps_of": "a", "wall_of": "a"}}})
    assert (g.budget("3x-wall"), g.budget("3x-steps"), g.budget("demo")) == \
        (("wall", "demo"), ("steps", "demo"), ("epochs", None))


def test_a_budget_taken_from_another_variant_scales_the_epochs():
    other = {"trained_rows": 9000, "label_s": 60.0, "distill_s": 240.0}  # 300 s in all
    manifest = {"counts": {"de": {"transfer": 9000}, "ar": {"transfer": 6000, "augmented": 3000}},
                "throughput": {"label_sentences_per_s": 200.0}}  # 18,000 rows: 90 s of labeling
    assert grid.label_seconds(manifest) == 90.0
    assert grid.budget_scale("x", "steps", other, manifest, 18_000) == 0.5  # half the passes over twice the rows
    # 210 s left for distillation, at the other's 37.5 rows a second: 7,875 rows, 0.4375 of 18,000
    assert grid.budget_scale("x", "wall", other, manifest, 18_000) == pytest.approx(0.4375)
    slow = {**manifest, "throughput": {"label_sentences_per_s": 50.0}}  # 360 s of labeling > 300
    with pytest.raises(ValueError, match="alone takes 360 s, the whole budget is 300 s"):
        grid.budget_scale("x", "wall", other, slow, 18_000)
    with pytest.raises(ValueError, match="needs the labeling seconds"):
        grid.budget_scale("x", "wall", {**other, "label_s": None}, manifest, 18_000)


def test_the_rows_trained_on_count_gold_rows_and_leave_out_the_selection_slice():
    """The in-domain preset's cell: 900 labeled + 3,000 transfer rows in each of 6 languages, 1,800
    held out for selection: 21,600 rows an epoch, 338 steps at batch 64 (as its distillation took)."""
    g = grid.Grid.load(REPO / "benchmarks/configs/sentences-fair.yaml")
    cfg = g.config("in", "preset")
    six = {lang: {"labeled": 900, "val": 100, "transfer": 3000} for lang in ("lv", "no", "da", "hr", "sk", "sv")}
    assert grid.trained_rows({"counts": six}, cfg) == 21_600
    # a language with few transfer sentences gives at most a quarter of them; the others their share
    few = {**six, "sv": {"labeled": 900, "transfer": 400}}
    assert grid.trained_rows({"counts": few}, cfg) == 5 * 900 + 900 + 5 * 2700 + 300
    # selection on gold holds nothing out
    gold = from_dict(RunConfig, apply_overrides(to_dict(cfg), {"distill": {"select": "gold"}}))
    assert grid.trained_rows({"counts": six}, gold) == 23_400


def test_quick_views_share_cells_and_write_their_results(tmp_path, one_thread, capsys):
    run, out = tmp_path / "run", tmp_path / "out"
    common = ["--run", str(run), "--quick", "-q", "--seeds", "13", "--results"]
    assert demo_grid.main(["selection", "--variants", "demo", "gold", *common, str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [(s["method"], s["seed"]) for s in summary["selection"]] == [("demo", 13), ("gold", 13)]
    assert all(0 <= s["retention_dev"] for s in summary["selection"]) and "| gold | 13 |" in \
        (out / "selection.md").read_text()
    done = json.loads((run / "done.json").read_text())
    assert set(done["control"]["variants"]) == {"demo-s13", "gold-s13"}

    capsys.readouterr()
    # another grid's group already in the summary (sentences-fair's in-domain points) stays
    other = {"group": "in", "variant": "preset", "language": "lv", "test": "test", "retention": 0.9}
    demo_grid.update_summary(out / "summary.json", {"rows": [other], "differences": [{"group": "in", "variant": "x"}]})
    assert demo_grid.main(["transfer-size", "--variants", "demo", "3x-steps", "3x-wall", *common, str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selection"]  # the other view's results stay
    assert [r for r in summary["rows"] if r["group"] == "in"] == [other]
    assert [d["group"] for d in summary["differences"]] == ["in", "control", "control"]
    assert set(summary["rows_protocol"]) == {"control"}
    rows = [r for r in summary["rows"] if r["group"] == "control"]
    assert {(r["variant"], r["budget"]) for r in rows} == {("demo", "epochs"), ("3x-steps", "steps"), ("3x-wall", "wall")}
    assert {r["language"] for r in rows} == {"de", "ar", "hi"} and {r["test"] for r in rows} == {"dev", "test"}
    for r in rows:
        assert set(r) >= {"group", "language", "test", "domain", "transfer_sentences", "budget", "seed",
                          "teacher_f1", "student_f1", "retention", "cpu_s"}
        assert r["transfer_sentences"] > 0 and r["cpu_s"] > 0
    # the recipe's cell was not distilled again for the second view
    assert sorted(json.loads((run / "done.json").read_text())["control"]["variants"]) == \
        ["3x-steps-s13", "3x-wall-s13", "demo-s13", "gold-s13"]
    assert (out / "curve.png").stat().st_size > 0 and (out / "minutes.png").stat().st_size > 0
    diffs = [d for d in summary["differences"] if d["group"] == "control"]
    assert [d["variant"] for d in diffs] == ["3x-steps", "3x-wall"] and diffs[0]["against"] == "demo"
    assert diffs[0]["test"]["low"] <= diffs[0]["test"]["diff"] <= diffs[0]["test"]["high"]

    # a view of kind transfer-size with a page of its own (equal-time): its rows and differences
    # are its page's, the curve's stay as they were, and nothing is distilled again
    assert {r["page"] for r in rows} == {"results"}
    assert demo_grid.main(["equal-time", "--variants", "demo", "3x-wall", *common, str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    by_page = {}
    for r in summary["rows"]:
        if r["group"] == "control":
            by_page.setdefault(r["page"], []).append(r)
    assert by_page["results"] == rows  # the curve's rows, 3x-steps' included, untouched
    assert [{**r, "page": "results"} for r in by_page["equal-time"]] == [r for r in rows if r["variant"] != "3x-steps"]
    assert [(d["page"], d["variant"], d["against"]) for d in summary["differences"] if d["group"] == "control"] == \
        [("results", "3x-steps", "demo"), ("results", "3x-wall", "demo"), ("equal-time", "3x-wall", "demo")]
    assert set(summary["rows_protocol"]) == {"control", "control/equal-time"}
    assert "| 3x-wall | wall of demo |" in (out / "equal-time.md").read_text()
    assert "3x-steps" not in (out / "equal-time.md").read_text() and (out / "equal-time-curve.png").is_file()
    assert len(json.loads((run / "done.json").read_text())["control"]["variants"]) == 4
    # the page again: its rows replaced, not added twice
    assert demo_grid.main(["equal-time", "--variants", "demo", "3x-wall", *common, str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["rows"] == summary["rows"]
    with pytest.raises(SystemExit):
        demo_grid.main(["nope", *common, str(out)])
    assert "has no view 'nope'" in capsys.readouterr().err

    # the throughput view on the same cells: no distillation, and each variant against the first with its interval
    assert demo_grid.main(["distill-speed", "--variants", "demo", "gold", *common, str(out)]) == 0
    speed = json.loads((out / "summary.json").read_text())["variants"]
    assert [v["variant"] for v in speed] == ["demo", "gold"] and "vs_demo" not in speed[0]
    gap = speed[1]["vs_demo"]["test"]
    assert gap["low"] <= gap["diff"] <= gap["high"] and speed[1]["sentences_per_s"] > 0
    assert speed[1]["select_share"] is not None and 0 <= speed[1]["select_share"] < 1  # these fits time their selection
    assert "| gold | 13 |" in (out / "results.md").read_text()
    assert len(json.loads((run / "done.json").read_text())["control"]["variants"]) == 4


def test_cells_carried_to_a_later_session_on_the_same_cpu_and_teacher_only(tmp_path, one_thread, caplog):
    """A later session has no run folder: the cells recorded in the carry file on this CPU are
    taken, not distilled again, where the teacher built now is the one that scored them."""
    import gzip

    carry, out = tmp_path / "cells.json.gz", tmp_path / "out"

    def view(run, *variants, more=()):
        return demo_grid.main(["transfer-size", "--variants", *variants, "--run", str(tmp_path / run), "--quick", "-q",
                               "--seeds", "13", "--results", str(out), "--carry", str(carry), *more])

    assert view("one", "demo", "3x-wall") == 0
    rows = json.loads((out / "summary.json").read_text())["rows"]
    rec = grid.Carry(carry).group("control")
    assert set(rec["variants"]) == {"demo-s13", "3x-wall-s13"} and rec["teacher"]
    for r in rec["variants"].values():
        assert r["cpu"] == grid.Carry(carry).cpu and r["trained_rows"] > 0 and r["log"]["stages"] and r["config"]
    # a new session (another run folder), the same cells: nothing is built, not even the teacher
    assert view("two", "demo", "3x-wall") == 0
    assert not (tmp_path / "two" / "control" / "demo-s13").exists()
    done = json.loads((tmp_path / "two" / "done.json").read_text())["control"]
    assert all(c["carried"] == str(carry) for c in done["variants"].values())
    assert json.loads((out / "summary.json").read_text())["rows"] == rows
    # a cell to build beside a recorded one: the teacher is built and scored first (from run one's
    # tiny random start: the quick teacher's tokenizer training does not repeat bit for bit, a
    # real teacher's start is the hub's); it is the recorded one (the same entities on every
    # sentence), so the recipe's cell is taken, and the new one takes its optimizer steps from its record
    import shutil

    for run in ("three", "four"):
        shutil.copytree(tmp_path / "one" / "control" / "tiny-teacher", tmp_path / run / "control" / "tiny-teacher")
    assert view("three", "demo", "3x-steps") == 0
    assert not (tmp_path / "three" / "control" / "demo-s13").exists()
    assert (tmp_path / "three" / "control" / "3x-steps-s13" / "distill").is_dir()
    assert set(grid.Carry(carry).group("control")["variants"]) == {"demo-s13", "3x-wall-s13", "3x-steps-s13"}
    # a record of another teacher is not taken where a cell is to be built (gold): the recipe's cell
    # is built again (linked from run one's steps), and the record replaced
    # by this teacher's cells, not mixed with them
    data = json.loads(gzip.decompress(carry.read_bytes()))
    key = next(iter(data["cpus"][grid.Carry(carry).cpu]["control"]["teacher"]))
    data["cpus"][grid.Carry(carry).cpu]["control"]["teacher"][key]["counts"][0][0] += 1
    carry.write_bytes(gzip.compress(json.dumps(data).encode()))
    with caplog.at_level("WARNING", logger="benchmarks.grid"):
        assert view("four", "demo", "gold", more=["--reuse", str(tmp_path / "one"), str(tmp_path / "three")]) == 0
    assert any("not taken" in r.getMessage() for r in caplog.records)
    done = json.loads((tmp_path / "four" / "done.json").read_text())["control"]
    assert (tmp_path / "four" / "control" / "demo-s13").is_dir() and not any("carried" in c for c in done["variants"].values())
    assert set(grid.Carry(carry).group("control")["variants"]) == {"demo-s13", "gold-s13"}
    # another CPU sees none of it; a variant whose config changed since is built again
    assert grid.Carry(carry, cpu="Another CPU (family 6, model 143) avx2 avx512f").group("control") is None
    entry = {"variants": {}}
    wanted = {"demo-s13": "another-digest"}
    with caplog.at_level("WARNING", logger="benchmarks.grid"):
        assert grid.Carry(carry).take("control", entry, wanted, None) == [] and entry["variants"] == {}
    assert any("another config" in r.getMessage() for r in caplog.records)
    right = {"demo-s13": grid.Carry(carry).group("control")["variants"]["demo-s13"]["config"]}
    assert grid.Carry(carry).take("control", entry, right, None) == ["demo-s13"] and "teacher" in entry


def test_a_cpu_id_names_the_kind_of_cpu(tmp_path):
    from xdistil import cpuinfo

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                    "model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nmodel\t\t: 1\n")
    assert cpuinfo.cpu_id(info) == "AMD EPYC (family 25, model 17) avx2 avx512f avx512_bf16"
    info.write_text("model name\t: Some CPU\nflags\t: neon\n")  # no family or model numbers
    assert cpuinfo.cpu_id(info) == "Some CPU"
    assert cpuinfo.cpu_id(tmp_path / "missing") == "unknown CPU"


def test_a_sentence_grid_has_the_transfer_size_view_of_its_in_domain_group():
    assert demo_grid.split_of("de:dev") == ("de", "dev")
    assert demo_grid.split_of("lv:newsner/lv/test") == ("lv", "test")
    g = grid.Grid.load(REPO / "benchmarks/configs/sentences-fair.yaml")
    view = g.keys["views"]["transfer-size"]
    assert view["group"] in g.groups and set(view["variants"]) <= set(g.variants) and view["page"] != "results"
    # its seeds count as their variant
    done = {"in": {"teacher": {"lv:newsner/lv/test": {"f1": 80.0}}, "variants": {
        name: {"seed": seed, "scores": {"lv:newsner/lv/test": {"f1": f1}}}
        for name, seed, f1 in (("preset", 13, 72.0), ("preset-s2", 14, 76.0))}}}
    got = demo_grid.cells(g, done, ["preset", "preset-s2"], [None], "in")
    assert [(c["variant"], c["seed"], c["retention"]["test"]) for c in got] == [("preset", 13, 0.9), ("preset", 14, 0.95)]
    # a teacher that finds nothing (--quick's tiny one): retention undefined, not a division error
    done["in"]["teacher"]["lv:newsner/lv/test"]["f1"] = 0.0
    assert all(math.isnan(c["retention"]["test"]) for c in demo_grid.cells(g, done, ["preset"], [None], "in"))
    # the step-budget page: each seed of more-text-steps takes the optimizer steps of the preset's same seed
    steps = g.keys["views"]["in-domain-budgets"]
    assert steps["kind"] == "transfer-size" and steps["page"] not in ("results", view["page"])
    for lever, budget in (("more-text-steps", "steps"), ("more-text-wall", "wall")):
        pairs = {(g.variants[n].get("distill", {}).get("seed"), g.budget(n)) for n in g.variants
                 if g.variants[n].get("seed_of", n) == lever}
        assert pairs == {(None, (budget, "preset")), (14, (budget, "preset-s2")), (15, (budget, "preset-s3"))}


def test_the_bootstrap_interval_sees_a_real_difference_and_only_that():
    import numpy as np

    rng = np.random.default_rng(0)
    n = 400
    gold = rng.integers(1, 4, n)  # entities per sentence

    def counts(p_right):  # each entity found with probability p_right; a miss is a false negative
        tp = rng.binomial(gold, p_right)
        return np.stack([tp, np.zeros(n, int), gold - tp], 1).tolist()

    teacher = counts(0.8)
    same = counts(0.7)
    tests = {"xx:test": (teacher, [same], [same])}
    r = grid.bootstrap(tests, samples=500)
    assert r["diff"] == 0 and r["low"] == 0 == r["high"] and not r["excludes_0"]
    better, worse = [counts(0.75), counts(0.75)], [counts(0.6), counts(0.6)]
    r = grid.bootstrap({"xx:test": (teacher, better, worse), "yy:test": (teacher, better, worse)}, samples=500)
    assert r["excludes_0"] and r["low"] > 0 and r["low"] <= r["diff"] <= r["high"]
    f1 = lambda c: 200 * sum(x[0] for x in c) / (2 * sum(x[0] for x in c) + sum(x[1] + x[2] for x in c))  # noqa: E731
    want = 100 * (np.mean([f1(c) for c in better]) - np.mean([f1(c) for c in worse])) / f1(teacher)
    assert r["diff"] == pytest.approx(want, abs=0.01)
    r = grid.bootstrap({"xx:test": (teacher, [counts(0.7)], [counts(0.7)])}, samples=500)
    assert not r["excludes_0"]  # two draws of the same student: no lever


def test_interleaved_fits_train_the_same_sentences_at_every_batch_size(tmp_path, capsys):
    from benchmarks import distill_interleaved as di

    g = grid.Grid.load(di.CONFIG)
    plain, fast = di.short_config(g, "demo", 13, 150), di.short_config(g, "h128-b128-bf16-locked", 13, 150)
    assert all(s.epochs == 1 and s.min_epochs == 0 for s in plain.distill.resolved_stages())
    assert [s.batch_size for s in fast.distill.resolved_stages()] == [128] * 4
    assert plain.distill.max_steps_per_epoch * 64 == fast.distill.max_steps_per_epoch * 128 == 150 * 64
    assert (fast.student.hidden_dim, fast.student.locked_dropout, fast.distill.precision) == (128, True, "bf16")
    assert (plain.student.locked_dropout, plain.distill.precision, plain.precision) == (False, None, "fp32")
    text = di.page({"machine": {"cpu": "X", "vector_flags": ["avx2"], "threads": 2}, "command": "c", "steps": 150,
                    "rounds": 2, "variants": [
                        {"variant": "demo", "rounds": [{"sentences_per_s": 500.0}, {"sentences_per_s": 520.0}],
                         "sentences_per_s": 510.0, "ratio": 1.0},
                        {"variant": "fast", "rounds": [{"sentences_per_s": 1000.0}, {"sentences_per_s": 1040.0}],
                         "sentences_per_s": 1020.0, "ratio": 2.0}]})
    assert "(X, avx2, 2 threads)" in text and "| fast | 1000, 1040 | 1020 | 2.00x |" in text
    with pytest.raises(SystemExit):  # no grid cells to take the teacher from: says what to run
        di.main(["--run", str(tmp_path), "-q"])
    assert "distill-speed-bf16 first" in capsys.readouterr().err

"""The distillation-throughput grid (benchmarks/distill_speed.py, issue 33 step 1): a variant changes
every stage of the base preset alike, and the summary's speeds and shares come from the stage logs."""

from __future__ import annotations

import sys

import pytest
import yaml
from conftest import REPO

if str(REPO) not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks import distill_speed  # noqa: E402


def test_variants_change_every_stage_and_nothing_else():
    from xdistil.config import RunConfig, from_dict, load_yaml

    grid = yaml.safe_load(distill_speed.CONFIG.read_text())
    base = load_yaml(grid["base"])
    assert distill_speed.variant_config(grid, "b64") == base
    b256 = distill_speed.variant_config(grid, "b256")
    assert [st["batch_size"] for st in b256["distill"]["stages"]] == [256] * len(base["distill"]["stages"])
    assert {st["lr"] for st in b256["distill"]["stages"]} == {0.004}
    assert [st["epochs"] for st in b256["distill"]["stages"]] == [st["epochs"] for st in base["distill"]["stages"]]
    assert {k: v for k, v in b256.items() if k != "distill"} == {k: v for k, v in base.items() if k != "distill"}
    from_dict(RunConfig, b256)  # a valid config


def test_summary_speeds_from_the_stage_logs():
    grid = {"base": "demo", "variants": {"a": {}, "b": {"every_stage": {"batch_size": 128}}}}
    teacher = {"dev": {"avg": 80.0}, "test": {"avg": 70.0}}

    def row(variant, seed, secs, sel, f1):
        return {"variant": variant, "seed": seed, "f1": {"dev": {"avg": f1}, "test": {"avg": f1 - 8}},
                "stages": [{"stage": "hard", "sentences": 1000, "seconds": secs, "select_s": sel},
                           {"stage": "soft", "sentences": 1000, "seconds": secs, "select_s": sel}]}
    state = {"teacher": teacher, "rows": [row("a", 13, 10.0, 2.0, 76.0), row("a", 14, 10.0, 2.0, 72.0),
                                          row("b", 13, 5.0, 2.0, 76.0)]}
    s = distill_speed.summarise(state, ["a", "b"], grid, {"cpu": "x", "threads": 2}, "cmd")
    a, b = s["variants"]
    assert a["sentences_per_s"] == 100.0 and a["train_sentences_per_s"] == 125.0 and a["select_share"] == 0.2
    assert a["retention_dev_by_seed"] == [0.95, 0.9] and a["retention_dev"] == pytest.approx(0.925)
    assert b["sentences_per_s"] == 200.0 and b["seeds"] == [13]
    assert "200 (2.00x)" in distill_speed.markdown(s)

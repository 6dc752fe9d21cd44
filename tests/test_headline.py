"""The README's headline and the docs' figure tables are generated from committed results."""

from __future__ import annotations

import json
import re

import pytest

from benchmarks import headline


def test_every_generated_block_matches_the_committed_results():
    """What `python -m benchmarks.headline` would write is what the files hold (else: rerun it)."""
    for rel, generated in headline.blocks().items():
        text = (headline.REPO / rel).read_text(encoding="utf-8")
        assert headline.render(text, generated, rel) == text, f"{rel} is stale: python -m benchmarks.headline"
    assert headline.main(["--check"]) == 0


def test_the_headline_quotes_the_result_files():
    """Each figure of the table can be found, rounded, in the file it names."""
    s = headline.Summary.read(headline.L41)
    kept = s.final.retained(s.teacher)
    table = headline.headline_table()
    assert f"**{kept:.1f} %**" in table and f"{s.final.f1_avg:.2f} vs {s.teacher.f1_avg:.2f}" in table
    int8 = next(m for m in s.students if m.runtime == "onnx-int8")
    assert f"int8 {int8.f1_avg - s.final.f1_avg:+.2f} F1" in table  # a sign, not a typed "-0.02"
    lat = headline.Latency.read(headline.LATENCY)
    batch = next(t for t in lat.targets if t["name"] == "batch")
    assert f"**{batch['speedup']:.0f}x** at batch 32" in table
    demo = headline.Bench.read(headline.DEMO).quality
    assert f"**{demo.final.retained(demo.teacher):.1f} %**" in table
    fair = json.loads(headline.FAIR.read_text())
    chosen = json.loads((headline.FAIR.parent / "summary.json").read_text())["chosen"]
    assert f"**{100 * fair['pooled'][chosen]['test']['in_avg']:.1f} %** of the teacher (test)" in table
    # every row names the CPU and the day it was measured on
    rows = [r for r in table.splitlines()[2:]]
    assert len(rows) == 6 and all(re.search(r"(EPYC|Xeon|\w+), \d+ cores, 20\d\d-\d\d-\d\d", r) for r in rows)


def test_a_result_measured_without_todays_default_says_so():
    assert headline._shape_note({"student": {"shape_dim": 0}}).startswith("without the word-shape embedding")
    assert headline._shape_note({"student": {"shape_dim": headline.StudentConfig().shape_dim}}) == ""
    low = json.loads(headline.LOWRES.read_text())
    if (low["protocol"]["student"].get("shape_dim") or 0) != headline.StudentConfig().shape_dim:
        assert "without the word-shape embedding" in headline.low_resource().qualifier


def test_render_fills_only_its_blocks_and_refuses_a_missing_one():
    text = ("keep me\n<!-- generated:a by x -->\nold\n<!-- /generated:a -->\nand me\n"
            "<!-- generated:b by x -->\n<!-- /generated:b -->\n")
    out = headline.render(text, {"a": "new A", "b": "| t |"}, "f.md")
    assert out == ("keep me\n<!-- generated:a by x -->\nnew A\n<!-- /generated:a -->\nand me\n"
                   "<!-- generated:b by x -->\n| t |\n<!-- /generated:b -->\n")
    assert headline.render(out, {"a": "new A", "b": "| t |"}, "f.md") == out  # idempotent
    with pytest.raises(SystemExit, match="f.md: no '<!-- generated:c"):
        headline.render(text, {"c": "x"}, "f.md")


def test_check_fails_on_a_hand_edited_readme(tmp_path, monkeypatch, capsys):
    for rel in headline.blocks():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((headline.REPO / rel).read_text(encoding="utf-8"), encoding="utf-8")
    readme = tmp_path / "README.md"
    text = readme.read_text(encoding="utf-8")
    block = text.index("<!-- generated:headline")
    readme.write_text(text[:block] + text[block:].replace("**", "", 2), encoding="utf-8")  # a hand edit inside
    monkeypatch.setattr(headline, "REPO", tmp_path)
    assert headline.main(["--check"]) == 1
    assert "README.md" in capsys.readouterr().err
    assert headline.main([]) == 0 and headline.main(["--check"]) == 0

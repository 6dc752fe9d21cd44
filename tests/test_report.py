"""``xdistil report`` on summary.json inputs (quality only), the verdict, and the Markdown / HTML rendering.

The report of a benchmarked run (bench.json: latency, throughput, memory) is tested end to
end in test_bench.py; these tests need no model and run in about a second.
"""

from __future__ import annotations

import json

import pytest

from xdistil.cli import main
from xdistil.report import Heading, Image, Para, Table, build, load_source, to_html, to_markdown, verdict

PNG = b"\x89PNG\r\n\x1a\n"


def _summary(folder, students, teacher=(80.0, 70.0), protocol=None):
    """A summary.json as `xdistil run` (names stageN-x) or benchmarks/staged.py (variant/stageN-x) writes it."""
    folder.mkdir(parents=True)
    models = [{"name": "teacher", "role": "teacher", "arch": "e5-small", "params": 117_000_000,
               "f1": {"de": teacher[0], "ar": teacher[1]}, "f1_avg": sum(teacher) / 2}]
    for name, params, f1 in students:
        models.append({"name": name, "role": "student", "arch": "bilstm", "params": params,
                       "f1": {"de": f1[0], "ar": f1[1]}, "f1_avg": sum(f1) / 2})
    protocol = protocol or {"languages": ["de", "ar"], "labeled_budget": 1000, "selection_slice": 100,
                            "transfer_limit": 3000, "evaluation": "dev (first 500)",
                            "metric": "seqeval entity F1, IOB2 strict"}
    (folder / "summary.json").write_text(json.dumps({"protocol": protocol, "models": models}))
    return folder


def test_summary_inputs_give_a_quality_report(tmp_path, capsys):
    run = _summary(tmp_path / "demo", [("stage1-hard", 2_300_000, (60.0, 64.0)),
                                       ("stage2-soft", 2_300_000, (77.0, 67.0))])
    staged = _summary(tmp_path / "staged", [("bilstm/stage1-hard", 2_000_000, (70.0, 60.0)),
                                            ("bilstm/stage2-soft", 2_000_000, (78.5, 68.0)),
                                            ("transformer/stage1-soft", 19_000_000, (79.0, 69.0))])
    out = tmp_path / "report"
    assert main(["report", str(run), str(staged / "summary.json"), "--out", str(out)]) == 0
    assert "report.md" in capsys.readouterr().out
    for png in ("f1_retained.png", "f1_vs_params.png", "stages.png"):
        assert (out / png).read_bytes()[:8] == PNG
    assert not (out / "latency.png").exists() and not list(out.glob("*.json"))  # nothing was benchmarked
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    # demo: stage2-soft keeps 144/150 = 96.0 %; staged: its best (the transformer) 148/150 = 98.7 %
    assert "**demo**: the best student `stage2-soft` keeps **96.0 %**" in md
    assert "`transformer/stage1-soft` keeps **98.7 %**" in md and "**meets the ≥ 95 % target**" in md
    assert "Quality only (no bench.json) for: demo, staged." in md
    for text in ("1000 sentences per language", "at most 3,000 per language", "dev (first 500)",  # protocol
                 "88.64", "86.46", "91.86",  # the published anchors beside ours
                 "77.00 (96.2 %)", "50.9x", "bilstm/stage2-soft"):
        assert text in md and text in page, text
    assert md.count("\n|---") == page.count("<table>")
    assert "## Latency" not in md  # only bench.json has timings


def test_verdict_meets_or_misses_the_target(tmp_path):
    src = load_source(_summary(tmp_path / "run", [("stage1-hard", 1_000_000, (72.0, 70.0))]))
    assert src.headline == "stage1-hard" and src.retained(src.model("stage1-hard")) == pytest.approx(94.66, 0.01)
    text = verdict(src, 95.0)
    assert "**misses the ≥ 95 % target**" in text and "weakest language: de, 90.0 %" in text
    assert "**117x** fewer parameters" in text and "faster" not in text  # no bench.json: no speed claim
    assert "**meets the ≥ 90 % target**" in verdict(src, 90.0)


def test_markdown_and_html_show_the_same_blocks():
    blocks = [Heading(1, "Title"), Para("**bold** and `a<b>` x"), Table(["a", "b|c"], [["1", "2"]], {1}),
              Image("plot.png", "a plot")]
    md = to_markdown(blocks)
    assert md == "# Title\n\n**bold** and `a<b>` x\n\n| a | b\\|c |\n|---|---:|\n| 1 | 2 |\n\n![a plot](plot.png)\n"
    page = to_html(blocks, "t")
    assert "<h1>Title</h1>" in page and "<strong>bold</strong> and <code>a&lt;b&gt;</code> x" in page
    assert '<th>a</th><th class="r">b|c</th>' in page and '<td class="r">2</td>' in page
    assert '<img src="plot.png" alt="a plot">' in page
    # one block list, two renderings: every table in both
    src_blocks = build([], plots={})
    assert to_markdown(src_blocks).count("\n|---") == to_html(src_blocks, "t").count("<table>")


def test_inputs_that_are_not_results(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_source(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="xdistil bench"):
        load_source(tmp_path)
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="neither a bench.json nor a summary.json"):
        load_source(tmp_path / "other.json")

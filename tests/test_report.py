"""``xdistil report`` on summary.json records (quality only), the verdict, and the Markdown / HTML rendering.

The report of a benchmarked run (bench.json: latency, throughput, memory) is tested end to
end in test_bench.py; these tests need no model and run in about a second.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from tiny import import_blocker

from xdistil.cli import main
from xdistil.report import (
    Heading,
    Image,
    Para,
    Table,
    build,
    load_source,
    to_html,
    to_markdown,
    verdict,
    write_page,
)
from xdistil.results import LangScores, ModelScores, RecordError, Summary, TypeScores

PNG = b"\x89PNG\r\n\x1a\n"


def _lang(f1: float, per_type: bool = False) -> LangScores:
    types = {"PER": TypeScores(f1 + 1, f1 + 2, f1, 10), "LOC": TypeScores(f1 - 1, f1, f1 - 2, 20)} if per_type else {}
    return LangScores(f1, f1 + 0.5, f1 - 0.5, 30, 100, types)


def _summary(folder, students, teacher=(80.0, 70.0), languages=("de", "ar"), per_type=False):
    """A summary.json record as `xdistil run` (stage students) or a benchmark (grouped students) writes it."""
    folder.mkdir(parents=True)
    models = [ModelScores("teacher", "teacher", 117_000_000,
                          {lang: _lang(f, per_type) for lang, f in zip(languages, teacher, strict=True)},
                          arch="e5-small")]
    for name, params, f1 in students:
        group, _, short = name.rpartition("/")
        stage = int(short[5]) if short.startswith("stage") else None
        models.append(ModelScores(name, "student", params,
                                  {lang: _lang(f, per_type) for lang, f in zip(languages, f1, strict=True)},
                                  arch="bilstm", stage=stage, stage_name=short[7:] if stage else None,
                                  group=group or None))
    protocol = {"languages": list(languages), "labeled_budget": 1000, "selection_slice": 100,
                "transfer": {"limit_per_language": 3000}, "evaluation": "dev (first 500)",
                "metric": "seqeval entity F1, IOB2 strict",
                "student": {"arch": "bilstm", "embedding_dim": 50, "hidden_dim": 200, "num_layers": 2}}
    Summary(protocol, models).write(folder / "summary.json")
    return folder


def test_summary_inputs_give_a_quality_report(tmp_path, capsys):
    run = _summary(tmp_path / "demo", [("stage1-hard", 2_300_000, (60.0, 64.0)),
                                       ("stage2-soft", 2_300_000, (77.0, 67.0))], per_type=True)
    staged = _summary(tmp_path / "staged", [("bilstm/stage1-hard", 2_000_000, (70.0, 60.0)),
                                            ("bilstm/stage2-soft", 2_000_000, (78.5, 68.0)),
                                            ("transformer/stage1-soft", 19_000_000, (79.0, 69.0))])
    out = tmp_path / "report"
    assert main(["report", str(run), str(staged), "--out", str(out)]) == 0
    assert "report.md" in capsys.readouterr().out
    for png in ("f1_retained.png", "f1_vs_params.png", "stages.png"):
        assert (out / png).read_bytes()[:8] == PNG
    # nothing was benchmarked: no latency plot, no frontier, no JSON copies
    assert not (out / "latency.png").exists() and not (out / "f1_vs_latency.png").exists()
    assert [p.name for p in out.glob("*.json")] == ["report.files.json"]  # what the report wrote, no copies
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    # demo: stage2-soft keeps 144/150 = 96.0 %; staged: its best (the transformer) 148/150 = 98.7 %
    assert "**demo**: the best student `stage2-soft` keeps **96.0 %**" in md
    assert "`transformer/stage1-soft` keeps **98.7 %**" in md and "**meets the ≥ 95 % target**" in md
    assert "Quality only (no bench.json) for: demo, staged." in md
    for text in ("1000 sentences per language", "at most 3,000 per language", "dev (first 500)",  # protocol
                 "bilstm (E=50, H=200, 2 layer(s))",  # the student's shape, from the student registry
                 "88.64", "86.46", "91.86",  # the published anchors beside ours (de, ar are the paper's)
                 "77.00 (96.2 %)", "50.9x", "bilstm/stage2-soft"):
        assert text in md and text in page, text
    assert md.count("\n|---") == page.count("<table>")
    assert "## Latency" not in md  # only bench.json has timings
    assert "nan" not in md.lower()


def test_a_report_never_overwrites_a_users_file(tmp_path, capsys):
    run = _summary(tmp_path / "demo", [("stage1-hard", 2_300_000, (60.0, 64.0))])
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my own notes\n")
    (out / "notes.txt").write_text("kept\n")
    assert main(["report", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "report.md" in err and "did not write" in err and "Traceback" not in err
    assert (out / "report.md").read_text() == "my own notes\n"  # untouched, and nothing written beside it
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "report.md"]
    # a folder of its own: written, then rewritten; a user's other files stay
    (out / "report.md").unlink()
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert (out / "notes.txt").read_text() == "kept\n" and (out / "report.md").read_text().startswith("# xdistil")
    # a report folder from before the record: recognised by its report.md, rewritten
    (out / "report.files.json").unlink()
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert "report.md" in json.loads((out / "report.files.json").read_text())["entries"]
    # a user's plot of the same name as one of the report's
    other = tmp_path / "plots"
    other.mkdir()
    (other / "f1_retained.png").write_bytes(b"mine")
    assert main(["report", str(run), "--out", str(other)]) == 2
    assert "f1_retained.png" in capsys.readouterr().err and (other / "f1_retained.png").read_bytes() == b"mine"


def test_per_type_scores_per_language(tmp_path):
    """F1, precision and recall per language and entity type, of the teacher and the verdict's student."""
    src = load_source(_summary(tmp_path / "run", [("stage1-hard", 1_000_000, (72.0, 70.0))], per_type=True))
    md = to_markdown(build([src]))
    section = md.split("## Per entity type", 1)[1].split("\n## ", 1)[0]
    header = next(line for line in section.splitlines() if line.startswith("| language"))
    assert header == ("| language | type | teacher F1 | teacher P | teacher R | stage1-hard F1 | stage1-hard P | "
                      "stage1-hard R | gold entities |")
    # de, LOC: teacher 79/80/78, student 71/72/70, 20 gold entities; 'all' is the micro row
    assert "| de | LOC | 79.00 | 80.00 | 78.00 | 71.00 | 72.00 | 70.00 | 20 |" in section
    assert "| ar | PER | 71.00 | 72.00 | 70.00 | 71.00 | 72.00 | 70.00 | 10 |" in section
    assert "| de | **all** | 80.00 | 80.50 | 79.50 | 72.00 | 72.50 | 71.50 | 30 |" in section
    # results written without per-type scores say so instead of showing zeros
    old = load_source(_summary(tmp_path / "old", [("stage1-hard", 1_000_000, (72.0, 70.0))]))
    assert "Per-type scores: not recorded" in to_markdown(build([old]))


def test_zero_f1_teacher_gives_na_with_a_reason(tmp_path):
    src = load_source(_summary(tmp_path / "run", [("stage1-hard", 1_000_000, (10.0, 0.0))], teacher=(0.0, 0.0)))
    text = verdict(src, 95.0)
    assert "**n/a**" in text and "the teacher's F1 is 0" in text and "nan" not in text
    md = to_markdown(build([src]))
    assert "nan" not in md.lower() and "n/a" in md


def test_anchors_only_for_the_papers_languages(tmp_path):
    ours = load_source(_summary(tmp_path / "xx", [("stage1-hard", 1_000_000, (70.0,))], teacher=(80.0,),
                                languages=("xx",)))
    paper = load_source(_summary(tmp_path / "de", [("stage1-hard", 1_000_000, (70.0,))], teacher=(80.0,),
                                 languages=("de",)))
    md = to_markdown(build([ours]))
    assert "88.64" not in md and "anchors are left out" in md
    both = to_markdown(build([ours, paper]))
    assert "88.64" in both and "Left out (no language in common with the paper): xx" in both


def test_verdict_meets_or_misses_the_target(tmp_path):
    src = load_source(_summary(tmp_path / "run", [("stage1-hard", 1_000_000, (72.0, 70.0))]))
    assert src.headline.name == "stage1-hard" and src.kept(src.headline) == pytest.approx(94.66, 0.01)
    text = verdict(src, 95.0)
    assert "**misses the ≥ 95 % target**" in text and "weakest language: de, 90.0 %" in text
    assert "**117x** fewer parameters" in text and "faster" not in text  # no bench.json: no speed claim
    assert "**meets the ≥ 90 % target**" in verdict(src, 90.0)


def test_markdown_and_html_show_the_same_blocks(tmp_path):
    blocks = [Heading(1, "Title"), Para("**bold** and `a<b>` x"), Table(["a", "b|c"], [["1", "2"]], {1}),
              Image("plot.png", "a plot")]
    md = to_markdown(blocks)
    assert md == "# Title\n\n**bold** and `a<b>` x\n\n| a | b\\|c |\n|---|---:|\n| 1 | 2 |\n\n![a plot](plot.png)\n"
    page = to_html(blocks, "t")
    assert "<h1>Title</h1>" in page and "<strong>bold</strong> and <code>a&lt;b&gt;</code> x" in page
    assert '<th>a</th><th class="r">b|c</th>' in page and '<td class="r">2</td>' in page
    assert '<img src="plot.png" alt="a plot">' in page
    # the benchmarks' results pages go through the same renderer
    assert write_page(blocks, tmp_path, html_too=True).read_text() == md
    assert (tmp_path / "results.html").read_text() == page.replace("<title>t</title>", "<title>Title</title>")


def test_inputs_that_are_not_results(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_source(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="xdistil bench"):
        load_source(tmp_path)
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(RecordError, match="format None is not one of"):
        load_source(tmp_path / "other.json")
    # a summary.json of an older xdistil (no format key): one line, not a KeyError
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "summary.json").write_text(json.dumps({"protocol": {}, "models": []}))
    with pytest.raises(RecordError) as e:
        load_source(tmp_path / "old")
    assert "\n" not in str(e.value)
    (tmp_path / "v0.json").write_text(json.dumps({"format": "xdistil-summary/0", "models": []}))
    with pytest.raises(RecordError, match="older xdistil"):
        load_source(tmp_path / "v0.json")


def test_a_student_folders_stage_is_read_without_torch(tmp_path):
    """`xdistil.results` (what the report, the bench and the benchmarks read) and its `stage_of`
    import neither torch nor `xdistil.taggers`: the stage comes from the folder's metadata."""
    student = tmp_path / "stage2-soft"
    student.mkdir()
    (student / "xdistil_student.json").write_text(json.dumps({"extra": {"stage": "soft",
                                                                        "stages_so_far": ["hard", "soft"]}}))
    script = import_blocker("torch", "transformers", why="reading a record must not need it") + textwrap.dedent(f"""
        from xdistil.results import stage_of
        assert stage_of({str(student)!r}) == (2, "soft")
        assert "xdistil.taggers" not in sys.modules
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_the_committed_results_are_records():
    """Every committed result a report or a benchmark reads parses in its current format."""
    from conftest import REPO

    from xdistil.results import Bench, Latency, read

    results = REPO / "benchmarks" / "results"
    assert isinstance(read(results / "report" / "demo.bench.json"), Bench)
    assert isinstance(read(results / "latency" / "latency.json"), Latency)
    for name in ("staged", "multiteacher"):
        s = read(results / name / "summary.json")
        assert isinstance(s, Summary) and s.students and s.teacher.f1_avg > 0

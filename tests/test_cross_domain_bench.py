"""The cross-domain benchmark end to end in its --quick settings on a tiny teacher and two
synthetic languages (the numbers mean nothing here): issue 17's summary schema, results.md,
lever variants as config overrides, resumption."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import REPO
from synth import synth_files, synth_sentences, write_conll

from xdistil.config import load_yaml

if str(REPO) not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks import cross_domain  # noqa: E402

RETENTION_KEYS = {"model", "language", "in_domain_test", "out_of_domain_test", "in_domain", "out_of_domain"}


def _config(tmp_path) -> dict:
    raw = load_yaml(REPO / "benchmarks/configs/cross_domain.yaml")  # its stages, student and variants
    files = {**synth_files(tmp_path / "xx"), "yy": synth_files(tmp_path / "yy")["xx"]}
    # "news" text: other sentences, with a fourth entity type that the benchmark maps to O
    news = []
    for words, tags in synth_sentences(40, seed=11):
        news.append((words + ["otherthing"], tags + ["B-OTH"]))
    ood = {lang: str(write_conll(tmp_path / f"{lang}-news-test.tsv", news)) for lang in ("xx", "yy")}
    more = write_conll(tmp_path / "yy-more-train.tsv", synth_sentences(30, seed=12))
    raw["data"] = {**raw["data"], "languages": ["xx", "yy"], "files": files}
    raw["groups"]["wikiann"]["tests"] = {lang: ["dev", {"file": f, "domain": "out"}] for lang, f in ood.items()}
    raw["variants"]["uner-text"] = {"transfer": {"extra_sources": {"yy": [str(more)]}}}
    return raw


def test_quick_run_schema_and_resume(tmp_path, one_thread, monkeypatch):
    raw = _config(tmp_path)
    results = tmp_path / "results"
    variants = ["baseline", "uner-text", "augment", "soft-long"]
    s = cross_domain.run(raw, tmp_path / "run", results, variants, quick=True, progress=False, command="test")

    assert json.loads((results / "summary.json").read_text()) == json.loads(json.dumps(s))
    rows = s["retention"]
    assert {(r["model"], r["language"]) for r in rows} == {(v, lang) for v in variants for lang in ("xx", "yy")}
    for r in rows:
        assert set(r) == RETENTION_KEYS
        assert r["in_domain_test"] == "dev" and r["out_of_domain_test"].endswith("news-test")
        for k in ("in_domain", "out_of_domain"):
            assert r[k] is None or (isinstance(r[k], float) and r[k] >= 0)
    # teacher and every final student scored on every test, OTH mapped away
    scores = {(x["model"], x["language"], x["domain"]) for x in s["scores"]}
    assert scores == {(m, lang, d) for m in ["teacher", *variants] for lang in ("xx", "yy") for d in ("in", "out")}
    assert all("OTH" not in x["per_type"] for x in s["scores"])
    assert {p["type"] for p in s["per_type"]} <= {"PER", "LOC", "ORG"}
    assert set(s["targets"]["variants"]) == set(variants)
    md = (results / "results.md").read_text()
    assert "Retention in domain and out of domain" in md and "| augment | yy |" in md

    # soft-long changes only distillation: it shares the baseline's transfer set (linked, labeled once)
    import os

    from xdistil.labeling import load_transfer
    from xdistil.run import RunDir

    cell = {v: RunDir(tmp_path / "run" / "wikiann" / v) for v in variants}
    inode = {v: os.stat(d.transfer_manifest).st_ino for v, d in cell.items()}
    assert inode["soft-long"] == inode["baseline"] and len(set(inode.values())) == 3
    # the levers reached the transfer sets: augmented rows are marked, the extra text is in yy's set only
    aug, _ = load_transfer(cell["augment"].transfer)
    assert any("+" in src for src in aug["source"])
    extra, _ = load_transfer(cell["uner-text"].transfer)
    from_more = {lang for lang, src in zip(extra["lang"], extra["source"], strict=True) if "yy-more-train" in src}
    assert from_more == {"yy"}

    # a rerun builds and scores nothing again
    def boom(*a, **k):
        raise AssertionError("scored twice")

    monkeypatch.setattr("xdistil.evaluate.evaluate_tagger", boom)
    again = cross_domain.run(raw, tmp_path / "run", results, variants, quick=True, progress=False, command="test")
    assert again["retention"] == s["retention"]


def test_unknown_variant_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="unknown variant"):
        cross_domain.run(_config(tmp_path), tmp_path / "run", tmp_path / "results", ["nope"], quick=True,
                         progress=False)

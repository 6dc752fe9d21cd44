"""The 41-language run (issue 15): the preset's sizes, `benchmarks.languages41 --quick` and
`benchmarks.lowresource --quick` on tiny random models over real data of three languages,
per-language fine-tuning from the multilingual student, and the one-line answers for the
languages without labeled data. The F1 numbers of tiny models mean nothing; the tests check
what is written, where it comes from, and that the run resumes."""

from __future__ import annotations

import json
import struct
import sys

import pytest
import torch
from conftest import REPO

from xdistil import digests
from xdistil.cli import main as xdistil
from xdistil.config import RunConfig, from_dict, load_yaml
from xdistil.results import Summary
from xdistil.run import RunDir
from xdistil.run.layout import read_transfer_manifest
from xdistil.runner import outputs

if str(REPO) not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks import languages41, lowresource  # noqa: E402

SIX = ["bs", "ca", "cs", "mk", "sl", "sq"]
E5_SMALL = 117_500_000


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only waits
    yield
    torch.set_num_threads(before)


def test_preset_covers_every_labeled_language_and_fits_the_budget(shared_data):
    cfg = from_dict(RunConfig, load_yaml(languages41.PRESET))
    # the 35 registry languages with labeled data here, and the six without are the rest of the 41
    assert len(cfg.data.languages) == 35 and "no" in cfg.data.languages  # (YAML's `no` is quoted)
    assert languages41.without_labeled_data(cfg) == SIX
    assert {languages41.dataset_of(lang, cfg) for lang in ("da", "sv", "hr", "sk")} == {"uner"}
    assert {languages41.dataset_of(lang, cfg) for lang in ("lv", "no")} == {"newsner"}
    # the student at its vocabulary cap stays >= 35x smaller than e5-small; 10 % more pieces would not
    from xdistil.students.bilstm import BiLSTMConfig, BiLSTMTagger

    s = cfg.student

    def size(vocab: int) -> int:
        model = BiLSTMTagger(BiLSTMConfig(vocab_size=vocab, num_labels=7, embedding_dim=s.embedding_dim,
                                          hidden_dim=s.hidden_dim, num_layers=s.num_layers))
        return sum(p.numel() for p in model.parameters())

    assert E5_SMALL / size(s.max_vocab) >= 35 > E5_SMALL / size(int(s.max_vocab * 1.12))


def test_evaluate_a_language_without_labeled_data_says_so_in_one_line(tmp_path, shared_data, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "model").mkdir()
    for lang in ("bs", "sq"):
        assert xdistil(["evaluate", str(tmp_path / "model"), "--lang", lang, "--data-root", str(shared_data)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "no labeled data here" in err and f"--lang {lang}" in err


@pytest.fixture(scope="module")
def quick(tmp_path_factory, shared_data):
    tmp = tmp_path_factory.mktemp("l41")
    argv = ["--quick", "--run", str(tmp / "run"), "--results", str(tmp / "results"), "--finetune-weakest", "1",
            "--finetune-min-entities", "1", "-q"]
    assert languages41.main(argv) == 0
    return tmp, argv


def test_quick_run_writes_the_per_language_report(quick):
    tmp, _ = quick
    s = Summary.read(tmp / "results" / "summary.json")
    langs = languages41.QUICK_LANGUAGES
    assert s.languages == langs
    # one f1 per language per row: teacher, every stage, and the int8 export of the final student as its own row
    names = [m.name for m in s.models]
    assert names == ["teacher", "stage1-hard", "stage2-soft", "stage2-soft-int8"] and s.headline == "stage2-soft"
    assert all(sorted(m.f1) == sorted(langs) for m in s.models)
    int8 = s.model("stage2-soft-int8")
    assert int8.runtime == "onnx-int8" and s.model("stage2-soft").runtime == "torch"
    assert int8.params == s.model("stage2-soft").params
    cached = json.loads((tmp / "run" / "export-int8-scores.json").read_text())["scores"]
    assert {lang: r["f1"] for lang, r in cached["dev"].items()} == int8.f1  # scored through the runtime
    # per language: dataset, dev entities, transfer-set size (the manifest's), vocabulary coverage
    run = RunDir(tmp / "run" / "run")
    manifest = read_transfer_manifest(run.transfer)
    meta = json.loads((run.distill / "stage2-soft" / "xdistil_student.json").read_text())
    for lang in langs:
        p = s.extra["per_language"][lang]
        assert p["transfer_sentences"] == sum(manifest["counts"][lang].values()) > 0
        assert p["dev_entities"] == s.teacher.languages[lang].entities > 0
        assert p["vocab"] == meta["vocab"]["languages"][lang] and p["vocab"]["student_pieces_per_word"] >= 1
    assert [s.extra["per_language"][lang]["dataset"] for lang in langs] == ["wikiann", "uner", "newsner"]
    c = s.extra["compression"]
    assert c["vs_mbert_base"] == pytest.approx(177e6 / int8.params) and c["vs_teacher"] > 1
    # the table is sorted by retention; the six come after it, without F1
    order = s.extra["order"]
    kept = [s.model("stage2-soft").retained(s.teacher, lang) or 0.0 for lang in order]
    assert sorted(order) == sorted(langs) and kept == sorted(kept)
    md = (tmp / "results" / "results.md").read_text()
    table = md[:md.index("No labeled data here")]
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and
            line.split("|")[1].strip() in langs]
    assert rows == order
    tail = md[md.index("No labeled data here: no F1"):]
    assert all(f"{lang} (" in tail for lang in SIX) and md.index("| language |") < md.index("No labeled data")
    assert sorted(s.extra["no_labeled_data"]) == SIX
    assert all(d["tatoeba_sentences"] > 0 for d in s.extra["no_labeled_data"].values())
    # their Tatoeba text, labeled zero-shot, and a share of the vocabulary
    assert manifest["counts"].keys() == {*langs, *SIX}
    for lang, d in s.extra["no_labeled_data"].items():
        assert manifest["counts"][lang] == {"transfer": d["transfer_sentences"]} and d["transfer_sentences"] > 0
        assert d["vocab"] == meta["vocab"]["languages"][lang]
    assert "labeled zero-shot" in tail
    # `xdistil report` renders the results folder like any run
    assert xdistil(["report", str(tmp / "results"), "--out", str(tmp / "report")]) == 0
    assert "`stage2-soft`" in (tmp / "report" / "report.md").read_text()
    png = (tmp / "results" / "retention.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">I", png[16:20])[0] > 100
    # per-language fine-tuning of the weakest language: from the multilingual student, its own run
    # folder, on the run's teacher and transfer set
    (weakest, f), = s.extra["finetune"].items()
    assert weakest == order[0] and f["f1_before"] == s.model("stage2-soft").f1[weakest]
    assert f["lift"] == pytest.approx(f["f1_after"] - f["f1_before"], abs=0.01) and f["seconds"] >= 0
    finetuned = RunDir(tmp / "run" / f"finetune-{weakest}")
    assert outputs(finetuned).student == finetuned.distill / "stage1-finetune" and f["folder"] == str(
        finetuned.distill / "stage1-finetune")
    assert not finetuned.teacher.exists() and not finetuned.transfer.exists()  # given, never copied
    tuned = digests.read(finetuned.distill)
    assert tuned["fields"]["data"]["languages"] == [weakest] and "init_from" in tuned["inputs"]
    assert s.extra["finetune_passed_over"] == {} and "Passed over" not in md


def test_finetune_passes_over_languages_with_too_few_dev_entities():
    """UNER sv has 23 dev entities: its retention ranks it among the weakest by noise, and
    fine-tuning it measures nothing, so --finetune-weakest takes the next language instead."""
    entities = {"sv": 23, "hr": 1219, "ar": 1166, "he": 1386}
    assert languages41.finetune_candidates(["sv", "hr", "ar", "he"], entities, 2) == (["hr", "ar"], ["sv"])
    assert languages41.finetune_candidates(["sv", "hr", "ar"], entities, 2, min_entities=0) == (["sv", "hr"], [])
    assert languages41.finetune_candidates(["hr", "sv"], {"hr": 1219}, 1, min_entities=10) == (["hr"], ["sv"])


def test_quick_run_resumes_without_recomputing(quick, capsys):
    tmp, argv = quick
    teacher = RunDir(tmp / "run" / "run").teacher / "xdistil_teacher.json"
    before = teacher.stat().st_mtime_ns, (tmp / "run" / "export-int8-scores.json").stat().st_mtime_ns
    assert languages41.main(argv) == 0
    out = capsys.readouterr().out
    assert "teacher: reusing" in out and "export: reusing" in out
    assert (teacher.stat().st_mtime_ns, (tmp / "run" / "export-int8-scores.json").stat().st_mtime_ns) == before


def test_distill_one_language_from_the_multilingual_student(quick, capsys):
    tmp, _ = quick
    run = RunDir(tmp / "run" / "run")
    multi = run.distill / "stage2-soft"
    out = RunDir(tmp / "de-only")
    assert xdistil(["distill", "--config", str(run.config), "--lang", "de", "--teacher-dir",
                    str(run.teacher), "--transfer", str(run.transfer), "--distill.init_from", str(multi),
                    "--distill.stages", "soft", "--out", str(out.root), "-q"]) == 0
    printed = capsys.readouterr().out
    assert outputs(out).student == out.distill / "stage1-soft"
    meta = json.loads((out.distill / "stage1-soft" / "xdistil_student.json").read_text())
    multi_meta = json.loads((multi / "xdistil_student.json").read_text())
    # the same student (labels, vocabulary), continued on de alone
    assert meta["labels"] == multi_meta["labels"] and meta["vocab"]["size"] == multi_meta["vocab"]["size"]
    header = next(line for line in printed.splitlines() if line.startswith("model"))
    assert "stage1-soft" in printed and " de " in header + " "  # the one score table
    fp = digests.read(out.distill)
    assert fp["fields"]["data"]["languages"] == ["de"] and "init_from" in fp["inputs"]


def test_lowresource_stops_on_a_weak_teacher(tmp_path, shared_data, capsys):
    argv = ["--quick", "--run", str(tmp_path / "run"), "--set", "teacher.min_selection_f1=50", "-q"]
    assert lowresource.main(argv) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "min_selection_f1" in err[0] and "not labeling" in err[0]
    assert not RunDir(tmp_path / "run" / "run").transfer.exists() and not (tmp_path / "run" / "gold-only").exists()


def test_lowresource_quick_compares_gold_only_and_distilled(tmp_path, shared_data):
    assert lowresource.main(["--quick", "--run", str(tmp_path / "run"), "-q"]) == 0
    s = Summary.read(tmp_path / "run" / "results" / "summary.json")
    assert s.protocol["labeled_budget"] == 100 and s.protocol["selection_slice"] == 20
    gold, distilled = s.model("gold-only"), s.model(s.headline)
    assert gold.group == "gold-only" and gold.params == distilled.params
    # a run folder of its own, distilled from the run's teacher and transfer set (given, not copied)
    gold_run = RunDir(tmp_path / "run" / "gold-only")
    assert len(outputs(gold_run).students) == 1 and not gold_run.teacher.exists() and not gold_run.transfer.exists()
    gold_in, run_in = (digests.read(d)["inputs"] for d in (gold_run.distill, RunDir(tmp_path / "run" / "run").distill))
    assert (gold_in["teacher"], gold_in["transfer"]) == (run_in["teacher"], run_in["transfer"])
    for lang, p in s.extra["per_language"].items():
        assert (p["teacher"], p["gold_only"], p["distilled"]) == (s.teacher.f1[lang], gold.f1[lang],
                                                                  distilled.f1[lang])
        assert p["recovered"] == lowresource.recovered(p["teacher"], p["gold_only"], p["distilled"])
    assert "recovered" in (tmp_path / "run" / "results" / "results.md").read_text()


def test_recovered_share():
    assert lowresource.recovered(80.0, 60.0, 75.0) == pytest.approx(75.0)
    assert lowresource.recovered(50.0, 60.0, 55.0) is None  # no gap to close
    assert lowresource.recovered(0.0, 0.0, 0.0) is None

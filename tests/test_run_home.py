"""The run's home: `RunDir` joins every path, `RunRecord` types metrics.json, every step's
fingerprint is composed in `xdistil.run.fingerprints`, loss terms are found by name."""

import json

import pytest
import torch

from xdistil.config import ConfigError, RunConfig, StageSpec, from_dict
from xdistil.objective import TERMS, TermInputs
from xdistil.results import RecordError
from xdistil.run import RunDir, RunRecord, fingerprints


def test_run_dir_names_every_path_of_a_run_folder(tmp_path):
    rd = RunDir(tmp_path / "r")
    assert not (tmp_path / "r").exists()  # constructing it touches nothing
    assert (rd.teacher, rd.transfer, rd.distill) == tuple(tmp_path / "r" / n for n in ("teacher", "transfer", "distill"))
    assert rd.metrics != rd.distill_log and rd.distill_log.parent == rd.distill  # the two metrics.json
    assert rd.teachers() == [rd.teacher]
    (rd.teacher / "teacher1-a").mkdir(parents=True)
    (rd.teacher / "xdistil_teachers.json").write_text(json.dumps({"members": ["teacher1-a"]}))
    assert rd.teachers() == [rd.teacher / "teacher1-a"]  # a co-finetuned group: its members
    assert not rd.is_run()
    rd.metrics.write_text("{}")
    rd.config.write_text("{}")
    assert rd.is_run()


def test_run_record_reads_old_files_and_refuses_others_in_one_line(tmp_path):
    old = {"timings": {"teacher_s": 1.5}, "provenance": {}, "fingerprints": {"teacher": "abc"},
           "teacher": {"f1_avg": 50.0}, "students": {"stage1-hard": {"f1_avg": 40.0}}}
    (tmp_path / "m.json").write_text(json.dumps(old))  # written before the record had a format
    rec = RunRecord.read(tmp_path / "m.json")
    assert rec.teacher == {"f1_avg": 50.0} and rec.students["stage1-hard"]["f1_avg"] == 40.0
    rec.forget_step("teacher")
    rec.write(tmp_path / "m.json")
    again = json.loads((tmp_path / "m.json").read_text())
    assert again["format"] == RunRecord.FORMAT and "teacher_s" not in again["timings"] and "teachers" not in again
    assert RunRecord.read(tmp_path / "absent.json") == RunRecord()
    (tmp_path / "bad.json").write_text(json.dumps({"format": "xdistil-bench/3"}))
    with pytest.raises(RecordError, match="bad.json: format 'xdistil-bench/3'"):
        RunRecord.read(tmp_path / "bad.json")
    (tmp_path / "worse.json").write_text(json.dumps({"timings": {"teacher_s": "slow"}}))
    with pytest.raises(RecordError, match=r"timings\.teacher_s"):
        RunRecord.read(tmp_path / "worse.json")


def test_an_old_run_record_is_summarised_from_the_typed_record(tmp_path):
    """A metrics.json from before the format key, without provenance or co-finetuned teachers,
    reads into `RunRecord` with their defaults; the summary and the bench read that object."""
    from xdistil.bench import teacher_dir
    from xdistil.pipeline import summary

    def scores(params, f1):
        return {"params": params, "dev": {"xx": {"f1": f1, "support": 3, "sentences": 2}}, "f1_avg": f1}

    old = {"timings": {"teacher_s": 1.5}, "fingerprints": {"teacher": "abc"}, "teacher": scores(1000, 50.0),
           "students": {"stage1-hard": scores(100, 40.0)}}
    (tmp_path / "m.json").write_text(json.dumps(old))
    rec = RunRecord.read(tmp_path / "m.json")
    assert rec.provenance == {} and rec.teachers == {}
    cfg = from_dict(RunConfig, {"data": {"languages": ["xx"], "files": {}}, "teacher": {"model": "some/hub-id"}})
    s = summary(rec, cfg)
    assert [(m.name, m.role) for m in s.models] == [("teacher", "teacher"), ("stage1-hard", "student")]
    assert s.reference == "teacher" and s.final.name == "stage1-hard" and s.final.f1 == {"xx": 40.0}
    assert s.timings == {"teacher_s": 1.5} and s.provenance == {}
    assert teacher_dir(RunDir(tmp_path / "r"), rec) == tmp_path / "r" / "teacher"  # no co-finetuned member named


def test_teacher_fingerprints_step_and_checkpoint_from_one_function():
    cfg = from_dict(RunConfig, {"data": {"languages": ["xx"], "files": {}}, "teacher": {"model": "some/hub-id"}})
    bf16 = from_dict(RunConfig, {"data": {"languages": ["xx"]}, "teacher": {"model": "some/hub-id"},
                                 "precision": "bf16"})
    # the finished teacher is the same model in either precision; its checkpoint is not resumed across them
    assert fingerprints.teacher(cfg)["digest"] == fingerprints.teacher(bf16)["digest"]
    assert fingerprints.teacher(cfg, checkpoint=True)["digest"] != fingerprints.teacher(bf16, checkpoint=True)["digest"]
    # settings that change how a step reports, not what it writes, are left out
    quiet = from_dict(RunConfig, {"data": {"languages": ["xx"]}, "teacher": {"model": "some/hub-id",
                                                                            "eval_batch_size": 7}})
    assert fingerprints.teacher(quiet)["digest"] == fingerprints.teacher(cfg)["digest"]
    longer = from_dict(RunConfig, {"data": {"languages": ["xx"]}, "teacher": {"model": "some/hub-id", "epochs": 9}})
    assert fingerprints.teacher(longer)["digest"] != fingerprints.teacher(cfg)["digest"]


def test_loss_terms_by_name_validate_and_document_the_config():
    from xdistil.config import to_commented_yaml

    with pytest.raises((ConfigError, ValueError), match="'gold', 'hard', 'soft' or 'hidden'"):
        StageSpec(name="x", losses={"bogus": 1.0})
    text = to_commented_yaml(from_dict(RunConfig, {"distill": {"stages": [{"name": "a", "losses": {"gold": 1.0}}]}}))
    assert all(term.doc in text for term in TERMS.values())  # `config show` and --help read the docs


def test_loss_terms_compute_on_a_batch():
    torch.manual_seed(0)
    logits, teacher = torch.randn(5, 3, requires_grad=True), torch.randn(1, 5, 3)
    gold = torch.tensor([0, 2, -100, 1, -100])
    x = TermInputs(logits=logits, gold=gold, teacher_logits=teacher, weights=torch.ones(1), soft_kind="mse",
                   temperature=1.0, hidden_kind="mse", projections=lambda: [torch.zeros(5, 4)],
                   teacher_hidden=[torch.ones(5, 4)])
    gold_ce = torch.nn.functional.cross_entropy(logits[gold >= 0], gold[gold >= 0])
    torch.testing.assert_close(TERMS["gold"].compute(x), gold_ce)  # words without a gold tag left out
    hard_ce = torch.nn.functional.cross_entropy(logits, teacher[0].argmax(-1))
    torch.testing.assert_close(TERMS["hard"].compute(x), hard_ce)
    torch.testing.assert_close(TERMS["soft"].compute(x), ((logits - teacher[0]) ** 2).mean())
    assert TERMS["hidden"].compute(x).item() == pytest.approx(1.0)  # mse of zeros against ones

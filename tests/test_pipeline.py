"""End-to-end on a tiny random teacher: train (with resume), label (with resume), distill, run."""

import json

import pytest
import torch
from faults import Interrupt, before_step, interrupt_at
from safetensors.torch import load_file
from synth import synth_files
from tiny import make_tiny_teacher

from xdistil.config import RunConfig, from_dict


def small_cfg(tmp_path, teacher_path, **over) -> RunConfig:
    raw = {
        "data": {"languages": ["xx"], "labeled_budget": 200, "val_size": 40, "files": synth_files(tmp_path / "data")},
        "teacher": {"model": str(teacher_path), "epochs": 2, "batch_size": 16, "lr": 1e-3, "max_length": 24,
                    "checkpoint_every": 3, "freeze_embeddings": False, "min_steps": 0, "min_selection_f1": 0},
        "transfer": {"layers": [1, 2], "chunk_size": 50, "batch_size": 16},
        "student": {"embedding_dim": 8, "hidden_dim": 16, "max_length": 24},
        "distill": {"stages": "staged", "match": {"teacher_layer": 2}, "max_steps_per_epoch": 4},
    }
    for k, v in over.items():
        raw[k].update(v)
    return from_dict(RunConfig, raw)


@pytest.fixture(scope="module")
def teacher_src(tmp_path_factory):
    return make_tiny_teacher(tmp_path_factory.mktemp("teacher"))


def test_teacher_resume_matches_uninterrupted(tmp_path, teacher_src):
    from xdistil.models import DONE_MARKER
    from xdistil.teachers import train_teacher

    cfg = small_cfg(tmp_path, teacher_src)
    straight = train_teacher(cfg, tmp_path / "straight", progress=False)

    with pytest.raises(Interrupt), before_step(interrupt_at(8)):  # after the checkpoint at step 6
        train_teacher(cfg, tmp_path / "resumed", progress=False)
    state = json.loads((tmp_path / "resumed/checkpoint/state.json").read_text())
    assert state["global_step"] == 6 and not (tmp_path / "resumed" / DONE_MARKER).exists()
    resumed = train_teacher(cfg, tmp_path / "resumed", progress=False)

    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=f"{k} differs after resume")
    info = json.loads((resumed / DONE_MARKER).read_text())
    assert info["config"]["teacher"]["epochs"] == 2 and info["train_sentences"] == 160
    assert not (resumed / "checkpoint").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, teacher_src):
    from xdistil.teachers import train_teacher

    tmp = tmp_path_factory.mktemp("run")
    cfg = small_cfg(tmp, teacher_src, teacher={"epochs": 8, "lr": 3e-3, "head_lr": 1e-2})
    return cfg, train_teacher(cfg, tmp / "teacher", progress=False), tmp


def test_trained_teacher_learns_and_loads(trained):
    from transformers import AutoModelForTokenClassification

    from xdistil.evaluate import evaluate_dev

    cfg, teacher, _ = trained
    m = evaluate_dev(teacher, cfg, progress=False)
    assert m["dev"]["xx"]["f1"] > 25, m["dev"]["xx"]  # untrained: ~0 (2-word spans need context)
    model = AutoModelForTokenClassification.from_pretrained(teacher)  # a plain HF folder
    assert model.config.id2label[1] == "B-PER"


def test_label_resume_and_contents(trained, monkeypatch):
    import xdistil.labeling as labeling

    cfg, teacher, tmp = trained
    straight = labeling.label_transfer(cfg, [teacher], tmp / "transfer-a", progress=False)
    real, calls = labeling.label_chunk, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupt
        return real(*a, **k)

    monkeypatch.setattr(labeling, "label_chunk", dying)
    with pytest.raises(Interrupt):
        labeling.label_transfer(cfg, [teacher], tmp / "transfer-b", progress=False)
    assert len(list((tmp / "transfer-b/chunks").glob("xx-*"))) == 2
    monkeypatch.setattr(labeling, "label_chunk", real)
    resumed = labeling.label_transfer(cfg, [teacher], tmp / "transfer-b", progress=False)

    ds_a, man = labeling.load_transfer(straight)
    ds_b, _ = labeling.load_transfer(resumed)
    assert ds_a["words"] == ds_b["words"] and ds_a["t0_tags"] == ds_b["t0_tags"]
    # budget 200 = 160 labeled + 40 selection; transfer = train beyond the budget + unlabeled, de-duplicated
    assert man["counts"]["xx"]["labeled"] == 160 and man["counts"]["xx"]["val"] == 40
    assert 0 < man["counts"]["xx"]["transfer"] <= 100 + 120
    assert len(ds_a) == sum(man["counts"]["xx"].values())
    assert man["layers"] == [1, 2] and man["hidden_sizes"] == [32]
    row = ds_a[0]
    n = len(row["words"])
    assert len(row["t0_tags"]) == n and len(row["t0_logits"]) == n * 7 and len(row["t0_h2"]) == n * 32
    assert row["split"] == "labeled" and len(row["gold"]) == n
    logits = torch.tensor(row["t0_logits"]).view(n, 7)
    assert logits.argmax(-1).tolist() == row["t0_tags"]
    keys = ["\x1f".join(w) for w in ds_a["words"]]
    assert len(keys) == len(set(keys)), "transfer set is de-duplicated"
    assert man["throughput"]["forward_sentences_per_s"] >= man["throughput"]["label_sentences_per_s"]


def test_distill_stages_resume_and_load(trained, monkeypatch):
    import xdistil.stages as stages
    from xdistil.evaluate import evaluate_dev
    from xdistil.labeling import label_transfer

    cfg, teacher, tmp = trained
    transfer = label_transfer(cfg, [teacher], tmp / "transfer-a", progress=False)
    real, calls = stages.select_metric, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 6:
            raise Interrupt
        return real(*a, **k)

    monkeypatch.setattr(stages, "select_metric", dying)
    with pytest.raises(Interrupt):
        stages.distill(cfg, transfer, teacher, tmp / "distill", progress=False)
    done = json.loads((tmp / "distill/progress.json").read_text())
    assert done["phases"] and not done["stages"]
    monkeypatch.setattr(stages, "select_metric", real)
    dirs = stages.distill(cfg, transfer, teacher, tmp / "distill", progress=False)
    assert [d.name for d in dirs] == ["stage1-hard", "stage2-soft", "stage3-intermediate"]
    metrics = json.loads((tmp / "distill/metrics.json").read_text())
    # gradual unfreezing: the hard stage ran output -> encoder -> embeddings, intermediate also projection
    assert [s["groups"] for s in metrics["stages"][0]["phases"]][-1] == ["output", "encoder", "embeddings"]
    assert metrics["stages"][2]["phases"][1]["groups"] == ["output", "projection"]
    for d in dirs:
        m = evaluate_dev(d, cfg, progress=False)
        assert 0 <= m["dev"]["xx"]["f1"] <= 100 and m["params"] < 100_000

    # continuing from a saved student starts from its weights, not from scratch
    from xdistil.config import from_dict, to_dict
    from xdistil.students import load_student

    raw = to_dict(cfg)
    raw["distill"].update({"init_from": str(dirs[-1]), "stages": [{"name": "more", "losses": {"soft": 1.0},
                                                                   "unfreeze": False, "epochs": 1, "lr": 1e-9}]})
    more = stages.distill(from_dict(type(cfg), raw), transfer, teacher, tmp / "distill-more", progress=False)
    a, b = load_student(dirs[-1])[0], load_student(more[0])[0]
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, atol=1e-5, rtol=0, msg=name)


def test_run_pipeline_cli(tmp_path, teacher_src, capsys):
    import yaml

    from xdistil.cli import main

    cfg = small_cfg(tmp_path, teacher_src, distill={"stages": "xtremedistil"})
    from xdistil.config import to_dict

    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    assert main(["run", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "run"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "teacher" in out and "stage3-gold" in out and "% teacher" in out
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    names = [m["name"] for m in summary["models"]]
    assert names == ["teacher", "stage1-intermediate", "stage2-logits", "stage3-gold"]
    for m in summary["models"]:
        assert set(m) >= {"name", "role", "arch", "params", "f1", "f1_avg"} and "xx" in m["f1"]
    # rerunning is a no-op that reuses every step, and says so
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert main(["run", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "run"), "-q"]) == 0
    out = capsys.readouterr().out
    assert all(f"{step}: reusing" in out for step in ("teacher", "label", "distill")), out
    again = json.loads((tmp_path / "run/metrics.json").read_text())
    assert again["timings"] == metrics["timings"] and again["students"] == metrics["students"]


def test_export_step_reuses_and_recomputes(tmp_path, teacher_src, capsys):
    from xdistil import digests, steps

    out = tmp_path / "onnx"
    assert steps.export(teacher_src, out, tolerance=1e-3) == out
    first = digests.read(out)
    assert first is not None and (out / "export_manifest.json").exists()
    capsys.readouterr()
    steps.export(teacher_src, out, tolerance=1e-3)
    assert "export: reusing" in capsys.readouterr().out
    steps.export(teacher_src, out, tolerance=1e-2)  # another setting: exported again
    assert "fields.tolerance" in capsys.readouterr().out
    assert digests.read(out)["digest"] != first["digest"]

"""The one fit loop: length, early stopping, restore-best, exact resume (in process and after
kill -9), stage fingerprints, teacher checkpoints of another config, the weak-teacher stop."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from faults import Interrupt, before_step, interrupt_at
from safetensors.torch import load_file
from synth import synth_files
from tiny import make_tiny_teacher

from xdistil.config import RunConfig, from_dict, to_dict
from xdistil.fit import KILL_ENV

REPO = Path(__file__).resolve().parents[1]


# ---- fit on a toy job ------------------------------------------------------------------

class Boom(Exception):
    pass


def _toy_job(scores=None, die_at=None, **kw):
    """A linear model with dropout (torch RNG) whose loss also draws from python's and numpy's
    RNGs, so an inexact resume shows in the weights."""
    import random

    import numpy as np

    from xdistil.fit import Job

    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    model = torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(4, 1))
    x = torch.randn(64, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    calls = {"loss": 0, "select": 0}

    def loss(m, batch):
        calls["loss"] += 1
        if die_at is not None and calls["loss"] == die_at:
            raise Boom
        scale = 1.0 + random.random() * 0.1 + float(np.random.rand()) * 0.1
        return ((m(x[batch]).squeeze(-1) - y[batch]) ** 2).mean() * scale, len(batch)

    def select():
        calls["select"] += 1
        if scores is not None:
            return scores[calls["select"] - 1], {}
        with torch.no_grad():
            return -float(((model(x).squeeze(-1) - y) ** 2).mean()), {}

    job = Job(module=model, optimizer=torch.optim.Adam(model.parameters(), lr=0.05),
              batches=lambda epoch: [list(range(i, i + 8)) for i in range(0, 64, 8)][::(-1) ** epoch],
              loss=loss, select=select, **kw)
    return job, calls


def _acc():
    from xdistil.fit import make_accelerator

    return make_accelerator()


def test_fit_length_early_stopping_and_restore_best():
    from xdistil.fit import fit

    # 8 batches an epoch, 1 epoch asked, at least 20 steps: 3 epochs (the last one cut at 20)
    job, calls = _toy_job(epochs=1, min_steps=20)
    state = fit(job, _acc(), progress=False)
    assert state.global_step == 20 and state.epoch == 3 and calls["loss"] == 20

    # scores 0.5, 0.9, 0.7, 0.6: patience 2 stops after epoch 4; epoch 2's weights come back
    seen = {}

    def remember(epoch_scores):
        job, _ = _toy_job(scores=epoch_scores, epochs=10, patience=2)
        real = job.select

        def select():
            score, extra = real()
            seen[score] = {k: v.clone() for k, v in job.module.state_dict().items()}
            return score, extra

        job.select = select
        return job

    job = remember([0.5, 0.9, 0.7, 0.6, 0.95])
    state = fit(job, _acc(), progress=False)
    assert state.epoch == 4 and state.best_epoch == 2 and state.best_score == 0.9
    assert [h["select"] for h in state.history] == [0.5, 0.9, 0.7, 0.6]
    for k, v in job.module.state_dict().items():
        assert torch.equal(v, seen[0.9][k])

    # select_start: the starting weights win when no epoch beats them
    job, _ = _toy_job(scores=[1.0, 0.2, 0.1], epochs=2, select_start=True)
    start = {k: v.clone() for k, v in job.module.state_dict().items()}
    state = fit(job, _acc(), progress=False)
    assert state.best_epoch == 0
    for k, v in job.module.state_dict().items():
        assert torch.equal(v, start[k])


def test_fit_seconds_hold_every_selection_the_starting_score_included(monkeypatch):
    """select_seconds is a share of seconds (benchmarks divide one by the other): the starting
    weights' score, before the first epoch, counts in both."""
    import time

    from xdistil.fit import fit

    job, calls = _toy_job(scores=[1.0, 0.2, 0.1], epochs=2, select_start=True)
    inner = job.select

    def slow_start():  # the start's score takes 0.3 s, the epochs' nothing to speak of
        if calls["select"] == 0:
            time.sleep(0.3)
        return inner()

    job.select = slow_start
    state = fit(job, _acc(), progress=False)
    assert calls["select"] == 3
    assert state.select_seconds >= 0.3
    assert state.seconds >= state.select_seconds


def test_fit_resume_is_exact(tmp_path):
    from xdistil.fit import STATE, fit

    straight, _ = _toy_job(epochs=3, checkpoint_every=5)
    want = fit(straight, _acc(), checkpoint=tmp_path / "a", tag="t", progress=False)

    job, _ = _toy_job(epochs=3, checkpoint_every=5, die_at=13)  # after the checkpoint at step 10
    with pytest.raises(Boom):
        fit(job, _acc(), checkpoint=tmp_path / "b", tag="t", progress=False)
    state = json.loads((tmp_path / "b" / STATE).read_text())
    assert state["global_step"] == 10 and state["epoch"] == 1 and state["step_in_epoch"] == 2
    job, calls = _toy_job(epochs=3, checkpoint_every=5)  # a fresh model: everything comes from the checkpoint
    got = fit(job, _acc(), checkpoint=tmp_path / "b", tag="t", progress=False)
    assert calls["loss"] == 24 - 10
    for k, v in straight.module.state_dict().items():
        assert torch.equal(v, job.module.state_dict()[k]), k
    strip = ("seconds", "select_seconds", "tokens")
    assert {k: v for k, v in vars(got).items() if k not in strip} == \
        {k: v for k, v in vars(want).items() if k not in strip}

    # another tag or fingerprint: the checkpoint is not this fit's, training starts afresh
    job, calls = _toy_job(epochs=3, checkpoint_every=5)
    fit(job, _acc(), checkpoint=tmp_path / "b", tag="t", fingerprint={"digest": "other"}, progress=False)
    assert calls["loss"] == 24


def test_fit_weight_average_is_selected_kept_and_resumed(tmp_path):
    """Job.average: selection scores the warmed-up moving average of the weights, training goes
    on from the raw weights, the fit keeps the best average, and a resumed fit carries it on."""
    from xdistil.fit import before_step, fit

    job, _ = _toy_job(scores=[0.9, 0.1], epochs=2, average=0.9)
    model = job.module
    raw, seen = [], []

    def record(desc, state):
        raw.append({n: p.detach().clone() for n, p in model.named_parameters()})

    real = job.select

    def select():
        seen.append({n: p.detach().clone() for n, p in model.named_parameters()})
        return real()

    job.select = select
    with before_step(record):
        state = fit(job, _acc(), progress=False)
    assert state.best_epoch == 1 and len(raw) == 16
    expect = {n: w.clone() for n, w in raw[0].items()}  # the start
    for t in range(1, 9):  # the weights after step t are those before step t + 1
        d = min(0.9, (1 + t) / (10 + t))
        expect = {n: d * a + (1 - d) * raw[t][n] for n, a in expect.items()}
    for n, a in expect.items():
        assert torch.allclose(seen[0][n], a, atol=1e-6), n  # epoch 1 was scored on the average
        assert not torch.allclose(raw[8][n], a, atol=1e-4), n  # ... and trained on from the raw weights
        assert torch.allclose(model.state_dict()[n], a, atol=1e-6), n  # the best average is kept

    # exact resume: the average is in the checkpoint
    straight, _ = _toy_job(epochs=3, checkpoint_every=5, average=0.9)
    fit(straight, _acc(), checkpoint=tmp_path / "a", tag="t", progress=False)
    job, _ = _toy_job(epochs=3, checkpoint_every=5, average=0.9, die_at=13)
    with pytest.raises(Boom):
        fit(job, _acc(), checkpoint=tmp_path / "b", tag="t", progress=False)
    job, _ = _toy_job(epochs=3, checkpoint_every=5, average=0.9)
    fit(job, _acc(), checkpoint=tmp_path / "b", tag="t", progress=False)
    for k, v in straight.module.state_dict().items():
        assert torch.equal(v, job.module.state_dict()[k]), k
    plain, _ = _toy_job(epochs=3)
    fit(plain, _acc(), progress=False)
    assert not torch.equal(plain.module.state_dict()["1.weight"], straight.module.state_dict()["1.weight"])


def test_stage_average_off_leaves_stage_fingerprints_alone(tmp_path):
    """A stage's ``average`` at 0 (off) is not in the stage fingerprints, so students distilled
    before the key existed are reused; on, it is, and the digest changes."""
    from xdistil.run import fingerprints

    specs = [{"name": "soft", "losses": {"soft": 1.0}}]
    off = from_dict(RunConfig, {"distill": {"stages": specs}})
    on = from_dict(RunConfig, {"distill": {"stages": [{**specs[0], "average": 0.99}]}})
    assert "average" not in fingerprints.stage_fields(off.distill.resolved_stages()[0])
    assert fingerprints.stage_fields(on.distill.resolved_stages()[0])["average"] == 0.99
    (tmp_path / "t").mkdir()
    a, b = (fingerprints.stages(c, c.distill.resolved_stages(), tmp_path / "t", []) for c in (off, on))
    assert a[0]["fields"]["stage"] == {k: v for k, v in to_dict(off.distill.resolved_stages()[0]).items()
                                       if k not in ("average", "min_epochs")}  # both at their old values
    assert a[0]["digest"] != b[0]["digest"]
    longer = from_dict(RunConfig, {"distill": {"stages": [{**specs[0], "min_epochs": 3}]}})
    assert fingerprints.stage_fields(longer.distill.resolved_stages()[0])["min_epochs"] == 3


# ---- distillation: kill -9 and resume ----------------------------------------------------

STAGES = [
    {"name": "hard", "losses": {"hard": 1.0, "gold": 1.0}, "epochs": 2, "batch_size": 16, "patience": 5},
    {"name": "mix", "losses": {"soft": 1.0, "hidden": 1.0}, "epochs": 1, "unfreeze": False, "batch_size": 16},
]


def _cfg(tmp, teacher, stages=STAGES, **distill) -> RunConfig:
    return from_dict(RunConfig, {
        "data": {"languages": ["xx"], "labeled_budget": 200, "val_size": 40,
                 "files": synth_files(tmp / "data", n_unlabeled=40)},
        "teacher": {"model": str(teacher), "epochs": 1, "batch_size": 16, "lr": 1e-3, "max_length": 24,
                    "checkpoint_every": 3, "freeze_embeddings": False, "min_steps": 0, "min_selection_f1": 0},
        "transfer": {"layers": [2], "chunk_size": 100, "batch_size": 32},
        "student": {"embedding_dim": 8, "hidden_dim": 16, "max_length": 24},
        "distill": {"stages": stages, "match": {"teacher_layer": 2}, "max_steps_per_epoch": 4,
                    "checkpoint_every": 3, **distill},
        "precision": "fp32",
    })


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    from xdistil.labeling import label_transfer

    tmp = tmp_path_factory.mktemp("fit")
    teacher = make_tiny_teacher(tmp)
    cfg = _cfg(tmp, teacher)
    return tmp, teacher, label_transfer(cfg, [teacher], tmp / "transfer", progress=False)


CHILD = textwrap.dedent("""
    import sys, yaml
    from xdistil.config import RunConfig, from_dict
    from xdistil.stages import distill
    cfg_path, transfer, teacher, out = sys.argv[1:5]
    cfg = from_dict(RunConfig, yaml.safe_load(open(cfg_path)))
    distill(cfg, transfer, teacher, out, progress=False)
""")


def _child(tmp, cfg_path, transfer, teacher, out, die_at=None):
    """Distil in a child process; xdistil's own seam kills it (SIGKILL) before optimizer step
    ``die_at`` (None: it runs to the end). Every run that is compared bitwise runs this way, with
    one thread: float sums in another thread count round differently (~1e-7)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    env.pop(KILL_ENV, None)
    if die_at is not None:
        env[KILL_ENV] = str(die_at)
    r = subprocess.run([sys.executable, "-c", CHILD, str(cfg_path), str(transfer), str(teacher), str(out)],
                       env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    return r


def _untimed(metrics: dict) -> dict:
    """metrics.json without what depends on the clock or the process (time, memory)."""
    drop = {"seconds", "select_s", "tokens_per_s", "peak_rss_mb", "memory_scope"}
    return {**metrics, "stages": [{**s, "phases": [{k: v for k, v in st.items() if k not in drop}
                                                   for st in s["phases"]]} for s in metrics["stages"]]}


def test_distill_killed_mid_stage_resumes_bitwise(labeled):
    """kill -9 in the middle of an unfreezing step (after a mid-epoch checkpoint), resume: the
    students are bitwise those of an uninterrupted run, and metrics.json holds every step."""
    import yaml

    tmp, teacher, transfer = labeled
    cfg = _cfg(tmp, teacher)
    cfg_path = tmp / "distill.yaml"
    cfg_path.write_text(yaml.safe_dump(to_dict(cfg)))
    assert _child(tmp, cfg_path, transfer, teacher, tmp / "straight").returncode == 0
    straight = sorted((tmp / "straight").glob("stage*"))

    # stage 1 step 1 trains output (8 steps); step 2 output+encoder: its checkpoint at step 6
    # (mid-epoch 2) is the last one before the kill at its 8th step
    r = _child(tmp, cfg_path, transfer, teacher, tmp / "killed", die_at=8 + 8)
    assert r.returncode == -9, r.stderr[-3000:]
    state = json.loads((tmp / "killed/checkpoint/state.json").read_text())
    assert state["tag"] == "0:1" and state["global_step"] == 6 and state["step_in_epoch"] == 2
    assert not (tmp / "killed/stage1-hard").exists()
    r = _child(tmp, cfg_path, transfer, teacher, tmp / "killed")
    assert r.returncode == 0 and "resuming at epoch 2 batch 2 (step 6 of 8)" in r.stdout, r.stderr[-3000:]
    resumed = sorted((tmp / "killed").glob("stage*"))

    assert [p.name for p in resumed] == [p.name for p in straight] == ["stage1-hard", "stage2-mix"]
    for a, b in zip(straight, resumed, strict=True):
        wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), f"{b.name}: {k} differs after kill -9 and resume"
    ma = json.loads((tmp / "straight/metrics.json").read_text())
    mb = json.loads((tmp / "killed/metrics.json").read_text())
    assert [len(s["phases"]) for s in mb["stages"]] == [3, 1]  # every phase, across the resume
    assert _untimed(ma) == _untimed(mb)


def test_stage_fingerprints_reuse_recompute_refuse(labeled):
    from xdistil import digests
    from xdistil.stages import distill

    tmp, teacher, transfer = labeled
    quick = [dict(s, epochs=1, unfreeze=False) for s in STAGES]
    out = tmp / "fp"
    first = distill(_cfg(tmp, teacher, quick), transfer, teacher, out, progress=False)
    fp1 = digests.read(first[0])
    assert fp1["fields"]["stage"]["name"] == "hard" and fp1["inputs"]["previous"] is None
    assert fp1["fields"]["match"] == {"teacher_layer": 2, "student_layer": -1, "loss": "mse"}
    mtime = (first[0] / "model.safetensors").stat().st_mtime_ns

    # the same length, another second stage: stage 1 is reused, stage 2 recomputed under its name
    other = [quick[0], {"name": "soft", "losses": {"soft": 1.0}, "epochs": 1, "unfreeze": False,
                        "batch_size": 16}]
    with pytest.raises(digests.StaleOutput, match="fields.stage"):
        distill(_cfg(tmp, teacher, other), transfer, teacher, out, progress=False, resume_only=True)
    dirs = distill(_cfg(tmp, teacher, other), transfer, teacher, out, progress=False)
    assert [d.name for d in dirs] == ["stage1-hard", "stage2-soft"] and all(d.is_dir() for d in dirs)
    assert not (out / "stage2-mix").exists()
    assert (dirs[0] / "model.safetensors").stat().st_mtime_ns == mtime
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s["stage"] for s in metrics["stages"]] == ["hard", "soft"]

    # a stage's own match override is part of its fingerprint; a longer list adds a stage
    longer = [*other, {"name": "hid", "losses": {"hidden": 1.0}, "epochs": 1, "unfreeze": False,
                       "batch_size": 16, "match": {"loss": "cosine"}}]
    dirs = distill(_cfg(tmp, teacher, longer), transfer, teacher, out, progress=False)
    assert [d.name for d in dirs] == ["stage1-hard", "stage2-soft", "stage3-hid"]
    assert digests.read(dirs[2])["fields"]["match"]["loss"] == "cosine"
    assert (dirs[0] / "model.safetensors").stat().st_mtime_ns == mtime
    # everything done: a rerun returns at once, every folder exists
    assert distill(_cfg(tmp, teacher, longer), transfer, teacher, out, progress=False,
                   resume_only=True) == dirs


# ---- teachers ------------------------------------------------------------------------------

def test_teacher_checkpoint_of_another_config_is_discarded(tmp_path):
    from xdistil.teachers import train_teacher

    src = make_tiny_teacher(tmp_path)
    cfg = _cfg(tmp_path, src)
    with pytest.raises(Interrupt), before_step(interrupt_at(5)):  # after the checkpoint at step 3
        train_teacher(cfg, tmp_path / "t", progress=False)
    assert json.loads((tmp_path / "t/checkpoint/state.json").read_text())["global_step"] == 3

    other = _cfg(tmp_path, src)
    other.teacher.lr = 5e-3
    resumed = train_teacher(other, tmp_path / "t", progress=False)
    straight = train_teacher(other, tmp_path / "straight", progress=False)
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k}: the old config's checkpoint leaked into the new run"


def test_min_steps_and_weak_teacher_stop(tmp_path, capsys):
    import yaml

    from xdistil.cli import main
    from xdistil.models import DONE_MARKER
    from xdistil.teachers import WeakTeacher, train_teacher

    src = make_tiny_teacher(tmp_path)
    cfg = _cfg(tmp_path, src)
    cfg.teacher.min_steps = 25  # 160 sentences, batch 16: 10 steps an epoch -> 3 epochs, 25 steps
    cfg.teacher.min_selection_f1 = 101.0  # no teacher reaches it
    with pytest.raises(WeakTeacher, match="min_selection_f1"):
        train_teacher(cfg, tmp_path / "weak", progress=False)
    info = json.loads((tmp_path / "weak" / DONE_MARKER).read_text())
    assert info["steps"] == 25 and info["epochs_run"] == 3 and len(info["history"]) == 3
    with pytest.raises(WeakTeacher):  # a rerun does not slip through to labeling
        train_teacher(cfg, tmp_path / "weak", progress=False)

    # the command line says so in one line
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    code = main(["teacher", "train", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "weak2"),
                 "-q"])
    err = capsys.readouterr().err
    assert code != 0 and "min_selection_f1" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "min_selection_f1" in line]) == 1

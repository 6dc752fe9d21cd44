"""`xdistil teacher train / label / distill` under `accelerate launch` with 2 CPU processes (gloo).

The commands run unchanged as subprocesses of ``accelerate launch --multi_gpu
--num_processes 2``; ``ACCELERATE_USE_CPU=1`` makes accelerate use gloo on the CPU
(``accelerate launch --cpu`` alone starts several processes only through mpirun).
Tiny models: the whole module takes well under a minute and a half on 2 cores.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from synth import synth_files
from tiny import make_tiny_teacher

from xdistil.config import RunConfig, from_dict, to_dict

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")

STAGES = [
    # one stage long enough to see the loss fall ...
    {"name": "logits", "losses": {"soft": 1.0}, "unfreeze": False, "epochs": 3, "lr": 1e-2, "patience": 3,
     "batch_size": 16},
    # ... and one that unfreezes (a new DDP wrapper per step) and trains the projections
    {"name": "hidden", "losses": {"hidden": 1.0}, "unfreeze": True, "epochs": 1, "lr": 1e-3, "batch_size": 16},
]


def _cfg(tmp, teacher) -> RunConfig:
    return from_dict(RunConfig, {
        "data": {"languages": ["xx"], "labeled_budget": 200, "val_size": 40,
                 "files": synth_files(tmp / "data", n_unlabeled=40)},
        "teacher": {"model": str(teacher), "epochs": 1, "batch_size": 16, "lr": 1e-3, "max_length": 24,
                    "checkpoint_every": 100, "freeze_embeddings": False, "min_steps": 0, "min_selection_f1": 0},
        # 340 rows, 7 chunks of (at most) 50: the two processes label 4 and 3
        "transfer": {"layers": [2], "chunk_size": 50, "batch_size": 32},
        "student": {"embedding_dim": 8, "hidden_dim": 16, "max_length": 24},
        "distill": {"stages": STAGES, "match": {"teacher_layer": 2}, "max_steps_per_epoch": 3},
    })


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args: str, n: int = 2, timeout: int = 120) -> str:
    """``accelerate launch`` the xdistil CLI on ``n`` CPU processes; returns its output."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
           "-m", "xdistil.cli", *args]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{out[-6000:]}"
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny random teacher, synthetic data, the config as YAML, and a 1-process transfer set."""
    from xdistil.labeling import label_transfer

    tmp = tmp_path_factory.mktemp("mp")
    teacher = make_tiny_teacher(tmp)
    cfg = _cfg(tmp, teacher)
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    one = label_transfer(cfg, [teacher], tmp / "transfer-1", progress=False)
    return cfg, teacher, tmp, one


def test_two_process_labeling_matches_one(setup):
    from xdistil.labeling import load_transfer

    cfg, teacher, tmp, one = setup
    launch("label", "--config", str(tmp / "cfg.yaml"), "--teacher-dir", str(teacher), "--out", str(tmp / "transfer-2"),
           "-q")
    ds1, man1 = load_transfer(one)
    ds2, man2 = load_transfer(tmp / "transfer-2")
    assert man2["throughput"]["processes"] == 2 and len(man2["throughput"]["per_process"]) == 2
    # both processes labeled chunks, and the manifest lists every one of them
    assert all(p["sentences"] > 0 for p in man2["throughput"]["per_process"])
    assert man2["chunks"] == man1["chunks"] and len(man2["chunks"]) == 7
    assert man2["counts"] == man1["counts"]
    assert man2["throughput"]["sentences_labeled_this_run"] == len(ds1)
    assert len(ds1) == len(ds2) and ds1["words"] == ds2["words"] and ds1["split"] == ds2["split"]
    assert ds1["t0_tags"] == ds2["t0_tags"]
    n1, n2 = ds1.with_format("numpy"), ds2.with_format("numpy")
    for col, tol in (("t0_logits", 1e-5), ("t0_h2", 2e-3)):  # hidden states are stored as float16
        for a, b in zip(n1[col], n2[col], strict=True):
            torch.testing.assert_close(torch.from_numpy(b).float(), torch.from_numpy(a).float(), atol=tol, rtol=tol)
    assert not list((tmp / "transfer-2/chunks").glob("*.tmp"))


def test_two_process_distill_trains_and_writes_once(setup):
    cfg, teacher, tmp, one = setup
    out = tmp / "distill"
    launch("distill", "--config", str(tmp / "cfg.yaml"), "--teacher-dir", str(teacher), "--transfer", str(one),
           "--out", str(out), "--no-eval", "-q")
    run = out / "distill"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint", "metrics.json", "progress.json",
                                                     "stage1-logits", "stage2-hidden", "xdistil_files.json",
                                                     "xdistil_fingerprint.json"]
    # each stage's folder says what it was built from, and chains to the stage before it
    fp1, fp2 = (json.loads((run / s / "xdistil_fingerprint.json").read_text()) for s in ("stage1-logits",
                                                                                           "stage2-hidden"))
    assert fp1["inputs"]["previous"] is None and fp2["inputs"]["previous"] == fp1["digest"]
    done = json.loads((run / "progress.json").read_text())
    assert done["stages"] == ["logits", "hidden"] and len(done["phases"]) == 1 + 3  # projection, encoder, embeddings
    metrics = json.loads((run / "metrics.json").read_text())
    logits, hidden = metrics["stages"]
    step = logits["phases"][0]
    assert step["processes"] == 2 and len(step["history"]) == 3
    losses = [h["mean_loss"] for h in step["history"]]
    assert losses[-1] < losses[0], losses
    assert [s["groups"] for s in hidden["phases"]][-1] == ["projection", "encoder", "embeddings"]

    from xdistil.taggers import load_tagger

    student = load_tagger(run / "stage2-hidden")
    assert student.labels == json.loads((one / "manifest.json").read_text())["labels"]
    # rerunning finds everything done
    from xdistil.stages import distill

    assert distill(cfg, one, teacher, run, progress=False)[-1] == run / "stage2-hidden"


def test_two_process_teacher_train(setup):
    from xdistil.models import DONE_MARKER

    cfg, teacher, tmp, one = setup
    out = tmp / "teacher"
    text = launch("teacher", "train", "--config", str(tmp / "cfg.yaml"), "--out", str(out), "-q")
    # both processes evaluated the finished folder: it was complete before either returned
    assert text.count("avg: dev F1") == 2
    info = json.loads((out / DONE_MARKER).read_text())
    assert info["train_sentences"] == 160 and len(info["history"]) == 1
    assert not (out / "checkpoint").exists() and not (out / "best").exists()
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_two_process_run_with_cofinetuned_teachers(setup):
    """`xdistil run` under the launcher: two teachers co-finetuned with DDP, labeled, distilled;
    only the main process writes the run's files, evaluates and prints the summary."""
    from xdistil.models import GROUP_MARKER, teacher_dirs

    cfg, teacher, tmp, one = setup
    other = make_tiny_teacher(tmp / "other", seed=1, hidden_size=48, tokenizer="wordpiece")
    out = tmp / "run"
    text = launch("run", "--config", str(tmp / "cfg.yaml"), "--teacher", str(teacher), "--teacher", str(other),
                  "--out", str(out), "-q", timeout=240)
    assert text.count("% teacher") == 1  # one summary table, from the main process
    assert len(teacher_dirs(out / "teacher")) == 2 and (out / "teacher" / GROUP_MARKER).exists()
    manifest = json.loads((out / "transfer/manifest.json").read_text())
    assert manifest["throughput"]["processes"] == 2 and manifest["hidden_sizes"] == [32, 48]
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics["teachers"]) == ["teacher1-tiny-teacher-bert", "teacher2-tiny-teacher-bert-wordpiece-48"]
    assert metrics["teacher"]["member"] in metrics["teachers"]
    assert sorted(metrics["students"]) == ["stage1-logits", "stage2-hidden"]
    summary = json.loads((out / "summary.json").read_text())
    assert sum("teacher" in m["role"] for m in summary["models"]) == 2  # both co-finetuned teachers
    assert not [p.name for p in out.rglob("*.tmp")]

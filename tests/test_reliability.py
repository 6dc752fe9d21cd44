"""Runs that cannot lie (issue 12, points 1-5): every scenario with tiny models and the real CLI.

1. `label` with another teacher on a finished or half-finished set relabels it, never
   reuses or mixes it; a changed data file relabels it too.
2. `run` with a changed config recomputes the steps it changes (and only those) and its
   record (config.json, summary.json, metrics.json) describes the models on disk;
   ``--resume-only`` refuses in one line naming the fields.
3. `distill` with another stage list of the same length writes the students it names.
4. `distill` killed with SIGKILL resumes to bitwise the same weights, and its metrics keep
   every step.
5. A truncated or flipped transfer chunk is named in one line by `distill`, and `label`
   relabels it; `label` killed with SIGKILL mid-chunk resumes with 0 differing cells.

Kills are real (SIGKILL of a subprocess running ``xdistil.cli.main``), timed by slowing the
subprocess down (`_SLOW`) and watching its files, never by sleeping a fixed time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from synth import synth_files
from tiny import make_tiny_teacher

from xdistil.cli import main

# A subprocess running the CLI, slowed down so a kill lands where the test wants it:
# before each chunk is labeled, after a chunk's files are written (but before the chunk is
# renamed into place) and before every optimizer step.
_SLOW = """
import os, sys, time
import datasets
import xdistil.labeling as labeling
delay = float(os.environ["XD_TEST_DELAY"])
real_label, real_save = labeling.label_chunk, datasets.Dataset.save_to_disk
def label_chunk(*a, **k):
    time.sleep(delay)
    return real_label(*a, **k)
def save_to_disk(self, *a, **k):
    real_save(self, *a, **k)
    time.sleep(delay)
labeling.label_chunk, datasets.Dataset.save_to_disk = label_chunk, save_to_disk
from xdistil.cli import main
from xdistil.fit import before_step
with before_step(lambda *a: time.sleep(delay)):
    rc = main(sys.argv[1:])
sys.exit(rc)
"""

STAGES = [{"name": "hard", "losses": {"hard": 1.0, "gold": 1.0}, "epochs": 1, "unfreeze": False},
          {"name": "soft", "losses": {"soft": 1.0}, "epochs": 1, "unfreeze": False}]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Bitwise comparisons need the same reduction order in the test and its subprocesses.

    The CLI sets its own thread count (``xdistil.threads.configure``: ``OMP_NUM_THREADS``,
    else every usable CPU), so the in-process runs get one thread through the environment,
    as the killed subprocess does; on an AVX2-only CPU oneDNN's LSTM gives other bits on two
    threads than on one."""
    n = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Data files, two tiny random teachers (A, B) and a base config."""
    tmp = tmp_path_factory.mktemp("world")
    files = synth_files(tmp / "data", n_train=120, n_dev=20, n_unlabeled=40)
    a, b = make_tiny_teacher(tmp / "a", seed=0), make_tiny_teacher(tmp / "b", seed=1)
    raw = {
        "data": {"languages": ["xx"], "labeled_budget": 60, "val_size": 20, "files": files},
        "teacher": {"model": str(a), "epochs": 1, "min_steps": 0, "min_selection_f1": 0, "batch_size": 16,
                    "lr": 1e-3, "max_length": 24, "freeze_embeddings": False},
        # 60 budget + 60 train beyond it + 40 unlabeled = 160 sentences, 8 chunks
        "transfer": {"layers": [1], "chunk_size": 20, "batch_size": 16},
        "student": {"embedding_dim": 8, "hidden_dim": 16, "max_length": 24},
        "distill": {"stages": STAGES, "match": {"teacher_layer": 1}, "max_steps_per_epoch": 3,
                    "checkpoint_every": 1},
    }
    return {"a": a, "b": b, "raw": raw, "tmp": tmp}


def config(tmp_path: Path, world, name: str = "c.yaml", **sections) -> str:
    raw = json.loads(json.dumps(world["raw"]))
    for k, v in sections.items():
        raw[k].update(v)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return str(path)


def xd(capsys, *args) -> tuple[int, str, str]:
    """Run the real CLI in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def killed(*args, when, delay: float = 0.3, timeout: float = 120) -> None:
    """Run the CLI in a subprocess and SIGKILL it as soon as ``when()`` is true."""
    env = {**os.environ, "XD_TEST_DELAY": str(delay), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-c", _SLOW, *map(str, args)], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while not when():
            assert p.poll() is None, f"finished before it could be killed: {p.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "the moment to kill never came"
            time.sleep(0.02)
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
        p.stderr.close()
    assert p.returncode == -signal.SIGKILL


def cells(path: Path) -> dict:
    from xdistil.labeling import load_transfer

    return load_transfer(path)[0].to_dict()


def chunks(path: Path, hidden: bool = False) -> list[Path]:
    d = path / "chunks"
    return sorted(p for p in d.iterdir() if hidden or not p.name.startswith(".")) if d.is_dir() else []


def weights(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update({f"{f.name}:{k}": v for k, v in load_file(str(f)).items()})
    assert out, f"no weights in {folder}"
    return out


# ---- 1 + 5: label ---------------------------------------------------------------------

def test_label_teachers_never_mix_kills_resume_exactly(tmp_path, world, capsys):
    a, b = world["a"], world["b"]
    cfg = config(tmp_path, world)
    label = ["label", "--config", cfg, "-q"]
    assert xd(capsys, *label, "--teacher-dir", a, "--out", tmp_path / "straight-a")[0] == 0
    assert xd(capsys, *label, "--teacher-dir", b, "--out", tmp_path / "straight-b")[0] == 0
    straight_a, straight_b = cells(tmp_path / "straight-a"), cells(tmp_path / "straight-b")

    # kill -9 mid-chunk: three chunks done, the fourth's files written but not yet in place
    s = tmp_path / "s"
    args = [*label, "--teacher-dir", a, "--out", s]
    killed(*args, when=lambda: len(chunks(s)) >= 3 and any(p.name.startswith(".") for p in chunks(s, True)))
    assert not (s / "manifest.json").exists() and len(chunks(s)) == 3
    half = tmp_path / "half"
    shutil.copytree(s, half)  # A's half-finished set, for B below
    rc, out, _ = xd(capsys, *args)
    assert rc == 0 and "reusing" not in out
    assert cells(s) == straight_a  # 0 differing cells after the kill
    assert [p.name for p in chunks(s, hidden=True)] == [f"xx-{i:05d}" for i in range(8)]  # no temp left

    # 1: B on A's finished set relabels it; B on A's half-finished set keeps none of A's chunks
    for target in (s, half):
        rc, out, _ = xd(capsys, *label, "--teacher-dir", b, "--out", target)
        assert rc == 0 and "already" not in out and "reusing" not in out
        assert cells(target) == straight_b
        manifest = json.loads((target / "manifest.json").read_text())
        assert [t["path"] for t in manifest["teachers"]] == [str(b)]
    # the same command again: reused, and it says so in one line
    rc, out, _ = xd(capsys, *label, "--teacher-dir", b, "--out", s)
    assert rc == 0 and sum("reusing" in line for line in out.splitlines()) == 1

    # a changed data file: relabeled, and the line names the file
    unlabeled = Path(world["raw"]["data"]["files"]["xx"]["unlabeled"][0])
    moved = tmp_path / "data"
    moved.mkdir()
    files = {"xx": {**world["raw"]["data"]["files"]["xx"], "unlabeled": [str(moved / unlabeled.name)]}}
    (moved / unlabeled.name).write_text(unlabeled.read_text(encoding="utf-8").replace("\n\n", "\nkarimone\n\n", 1),
                                        encoding="utf-8")
    cfg2 = config(tmp_path, world, "c2.yaml", data={"files": files})
    rc, out, _ = xd(capsys, "label", "--config", cfg2, "-q", "--teacher-dir", b, "--out", s, "--resume-only")
    assert rc == 2
    rc, out, _ = xd(capsys, "label", "--config", cfg2, "-q", "--teacher-dir", b, "--out", s)
    assert rc == 0 and "inputs.unlabeled:xx:unlabeled.tokens" in out
    assert cells(s)["words"] != straight_b["words"]


def test_damaged_chunks_named_and_relabeled(tmp_path, world, capsys):
    a = world["a"]
    cfg = config(tmp_path, world)
    s = tmp_path / "s"
    assert xd(capsys, "label", "--config", cfg, "-q", "--teacher-dir", a, "--out", s)[0] == 0
    before = cells(s)
    for chunk, damage in (("xx-00002", "truncate"), ("xx-00005", "flip")):
        arrow = next((s / "chunks" / chunk).glob("*.arrow"))
        data = bytearray(arrow.read_bytes())
        if damage == "truncate":
            data = data[: len(data) // 3]
        else:
            mid = len(data) // 2
            data[mid : mid + 8] = bytes(x ^ 0x5A for x in data[mid : mid + 8])
        arrow.write_bytes(bytes(data))
        rc, out, err = xd(capsys, "distill", "--config", cfg, "-q", "--teacher-dir", a, "--transfer", s,
                          "--out", tmp_path / "d", "--no-eval")
        assert rc == 2 and chunk in err and len(err.strip().splitlines()) == 1, err
        rc, out, err = xd(capsys, "label", "--config", cfg, "-q", "--teacher-dir", a, "--out", s)
        assert rc == 0
        assert cells(s) == before


# ---- 2 + 3: run and distill with a changed config --------------------------------------

def test_run_with_changed_config_records_only_what_is_on_disk(tmp_path, world, capsys):
    from xdistil import digests
    from xdistil.students import load_student
    from xdistil.taggers import load_tagger

    run = tmp_path / "run"
    c1 = config(tmp_path, world, "c1.yaml")
    assert xd(capsys, "run", "--config", c1, "--out", run, "-q")[0] == 0
    m1 = json.loads((run / "metrics.json").read_text())
    assert set(m1["fingerprints"]) == {"teacher", "label", "distill"}

    # another student size and another stage list of the same length: teacher and label are reused
    stages2 = [STAGES[0], {"name": "logits", "losses": {"soft": 1.0}, "epochs": 1, "unfreeze": False}]
    c2 = config(tmp_path, world, "c2.yaml", student={"hidden_dim": 24}, distill={"stages": stages2})
    rc, out, err = xd(capsys, "run", "--config", c2, "--out", run, "-q")
    assert rc == 0, err
    assert "teacher: reusing" in out and "label: reusing" in out
    assert "fields.student.hidden_dim" in out and "fields.distill.stages" in out
    m2 = json.loads((run / "metrics.json").read_text())
    assert m2["timings"]["teacher_s"] == m1["timings"]["teacher_s"]  # the work of the first invocation
    assert m2["fingerprints"]["distill"] != m1["fingerprints"]["distill"]
    summary = json.loads((run / "summary.json").read_text())
    assert [m["name"] for m in summary["models"]] == ["teacher", "stage1-hard", "stage2-logits"]
    assert json.loads((run / "config.json").read_text())["student"]["hidden_dim"] == 24
    for m in summary["models"][1:]:  # each row is the student on disk
        student = load_student(run / "distill" / m["name"])[0]
        assert student.config.hidden_dim == 24
        assert m["params"] == load_tagger(run / "distill" / m["name"]).param_count()
    assert not (run / "distill" / "stage2-soft").exists()

    # another teacher config with --resume-only: one line naming the field, nothing touched
    c3 = config(tmp_path, world, "c3.yaml", teacher={"epochs": 2}, student={"hidden_dim": 24},
                distill={"stages": stages2})
    rc, out, err = xd(capsys, "run", "--config", c3, "--out", run, "-q", "--resume-only")
    assert rc == 2 and "fields.teacher.epochs" in err and len(err.strip().splitlines()) == 1, err
    assert json.loads((run / "config.json").read_text())["student"]["hidden_dim"] == 24
    # without it: every step is recomputed, and the record follows
    rc, out, err = xd(capsys, "run", "--config", c3, "--out", run, "-q")
    assert rc == 0, err
    assert "reusing" not in out and "teacher:" in out
    m3 = json.loads((run / "metrics.json").read_text())
    assert all(m3["fingerprints"][k] != m2["fingerprints"][k] for k in ("teacher", "label", "distill"))
    assert m3["fingerprints"]["teacher"] == digests.digest_of(run / "teacher")
    assert json.loads((run / "config.json").read_text())["teacher"]["epochs"] == 2
    assert m3["teacher"]["fingerprint"] != m2["teacher"]["fingerprint"]  # scored again


def test_distill_with_another_stage_list_of_the_same_length(tmp_path, world, capsys):
    a = world["a"]
    cfg = config(tmp_path, world)
    s, d = tmp_path / "s", tmp_path / "d"
    assert xd(capsys, "label", "--config", cfg, "-q", "--teacher-dir", a, "--out", s)[0] == 0
    common = ["--config", cfg, "-q", "--teacher-dir", a, "--transfer", s, "--out", d, "--no-eval"]
    assert xd(capsys, "distill", *common)[0] == 0
    first = weights(d / "distill/stage1-hard")
    rc, out, err = xd(capsys, "distill", *common, "--distill.stages", json.dumps(
        [STAGES[0], {"name": "logits", "losses": {"soft": 1.0}, "epochs": 1, "unfreeze": False}]))
    assert rc == 0, err
    assert "fields.distill.stages" in out
    again = weights(d / "distill/stage1-hard")  # the same first stage is kept
    assert all(torch.equal(first[n], again[n]) for n in first)
    final = Path(out.strip().splitlines()[-1].split("final: ")[1].rstrip(")"))
    assert final.name == "stage2-logits" and final.is_dir()
    assert sorted(p.name for p in (d / "distill").iterdir() if p.name.startswith("stage")) == \
        ["stage1-hard", "stage2-logits"]


# ---- 4: distill killed ------------------------------------------------------------------

def test_distill_killed_resumes_bitwise(tmp_path, world, capsys):
    a = world["a"]
    cfg = config(tmp_path, world)
    s = tmp_path / "s"
    assert xd(capsys, "label", "--config", cfg, "-q", "--teacher-dir", a, "--out", s)[0] == 0
    common = ["distill", "--config", cfg, "-q", "--teacher-dir", a, "--transfer", s, "--no-eval"]
    assert xd(capsys, *common, "--out", tmp_path / "straight")[0] == 0
    k = tmp_path / "killed"
    # killed inside the first stage, after its first checkpoint
    killed(*common, "--out", k, delay=0.2, when=lambda: (k / "distill" / "checkpoint").exists())
    assert not (k / "distill" / "stage2-soft").exists()
    rc, out, err = xd(capsys, *common, "--out", k)
    assert rc == 0 and "resuming" in out + err, err  # from the checkpoint, not from scratch
    for stage in ("stage1-hard", "stage2-soft"):
        want, got = weights(tmp_path / "straight/distill" / stage), weights(k / "distill" / stage)
        assert want.keys() == got.keys()
        assert [n for n in want if not torch.equal(want[n], got[n])] == [], f"{stage} differs after the resume"
    m_straight = json.loads((tmp_path / "straight/distill/metrics.json").read_text())
    m_killed = json.loads((k / "distill/metrics.json").read_text())
    assert [len(st["phases"]) for st in m_killed["stages"]] == [len(st["phases"]) for st in m_straight["stages"]]

"""What xdistil may delete (issue 24): every scenario with tiny models and the real CLI.

1. A failed step -- a bad ``--dev`` file, a parity failure at ``--tolerance 0``, a step that
   raises half-way -- leaves the previous output exactly as it was, byte for byte: the new
   one is built beside it and swapped in only when complete.
2. A foreign file survives every command that takes ``--out`` (teacher train, label,
   distill, export, run): a folder of other things is refused in one line that names what
   is there, an output beside which a foreign file was put is not recomputed over it, and
   an ``--out`` that is a file is refused.
3. By record, not by name (issue 27): a user's files survive at any depth -- a file in a
   stage or in ``chunks/``, a copied stage, an export written inside a stage, an own
   ``.onnx`` or hidden ``.x.tmp``, a folder of a README.md and a config.json -- and an
   export killed in the middle of its swap is repaired by the next run.
5. Config values that cannot train are refused; distill refuses a teacher that did not
   label its transfer set; ``-v`` works after the command; new head rows are a warning;
   the model cards of distill and export name their languages, teacher and dev F1, and
   their example commands parse.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from synth import synth_files
from tiny import make_tiny_teacher, tiny_run_config

from xdistil.cli import UsageError, build_parser, main

# the world's student trains 2 steps: its tags are near-tied, so int8 agrees on 96-98 % of words on
# an AVX-512 CPU and on 60-66 % on an AVX2-only AMD EPYC (onnxruntime's int8 kernels differ); these
# tests are about what each step owns, not int8 quality (tests/test_export.py checks that)
INT8 = ("--int8", "--int8-min-agreement", "0.3")
STAGES = [{"name": "hard", "losses": {"hard": 1.0, "gold": 1.0}, "epochs": 1, "unfreeze": False}]


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Data files, two tiny random teachers (A, B), a config, and one output of every step:
    a fine-tuned teacher, a transfer set labeled by A, students distilled from it, an export."""
    tmp = tmp_path_factory.mktemp("own")
    files = synth_files(tmp / "data", n_train=100, n_dev=20, n_unlabeled=40)
    a, b = make_tiny_teacher(tmp / "a", seed=0), make_tiny_teacher(tmp / "b", seed=1)
    raw = tiny_run_config(files, a, STAGES)
    cfg = tmp / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw), encoding="utf-8")
    w = {"a": a, "b": b, "cfg": str(cfg), "raw": raw, "tmp": tmp, "dev": files["xx"]["dev"][0]}
    w["set"], w["students"], w["teacher"], w["export"] = (tmp / n for n in ("set", "distill", "teacher", "exp"))
    assert main(["label", "--config", w["cfg"], "-q", "--teacher-dir", str(a), "--out", str(w["set"])]) == 0
    assert main(["distill", "--config", w["cfg"], "-q", "--teacher-dir", str(a), "--transfer", str(w["set"]),
                 "--out", str(w["students"])]) == 0
    assert main(["teacher", "train", "--config", w["cfg"], "-q", "--no-eval", "--out", str(w["teacher"])]) == 0
    w["student"] = w["students"] / "distill" / "stage1-hard"
    assert main(["export", str(w["student"]), "--out", str(w["export"]), *INT8]) == 0
    return w


def xd(capsys, *args) -> tuple[int, str, str]:
    """Run the real CLI in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def one_line_error(rc: int, err: str) -> str:
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---- 1: a failed step leaves the previous output as it was -------------------------------

def test_failed_reexport_keeps_the_old_export_byte_for_byte(tmp_path, world, capsys):
    exp = copy(world["export"], tmp_path / "exp")
    before = snapshot(exp)
    bad = tmp_path / "bad_latin1.tsv"
    bad.write_bytes("Zürich\tB-LOC\nliegt\tO\n".encode("latin-1"))
    rc, _, err = xd(capsys, "export", world["student"], "--out", exp, *INT8, "--dev", bad)
    one_line_error(rc, err)
    assert snapshot(exp) == before
    rc, _, err = xd(capsys, "export", world["student"], "--out", exp, *INT8, "--tolerance", "0")
    assert "differ from PyTorch" in one_line_error(rc, err)
    assert snapshot(exp) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad_latin1.tsv", "exp"]  # no temp left beside it
    rc, out, _ = xd(capsys, "export", world["student"], "--out", exp, *INT8)
    assert rc == 0 and "export: reusing" in out  # the old export is still the one for these options


def test_failed_relabel_keeps_the_old_set_and_resumes_aside(tmp_path, world, capsys, monkeypatch):
    import xdistil.labeling as labeling

    s = copy(world["set"], tmp_path / "s")
    before = snapshot(s)
    label = ["label", "--config", world["cfg"], "-q", "--teacher-dir", world["a"], "--out", s]
    # a failure inside the step (layer 9 of a 2-layer teacher): the finished set stays
    rc, _, err = xd(capsys, *label, "--transfer.layers", "[9]")
    assert "transfer.layers" in one_line_error(rc, err)
    assert snapshot(s) == before
    # killed half-way through its replacement: the old set stays, the new one resumes aside
    real, calls = labeling.label_chunk, {"n": 0, "die": 2}

    def counted(*a, **k):  # killed at the second chunk while "die" is set
        calls["n"] += 1
        if calls["n"] == calls["die"]:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(labeling, "label_chunk", counted)
    assert xd(capsys, *label, "--transfer.chunk_size", "30")[0] == 130
    assert snapshot(s) == before
    calls.update(n=0, die=None)
    rc, out, _ = xd(capsys, *label, "--transfer.chunk_size", "30")
    assert rc == 0 and "resuming its replacement" in out
    manifest = json.loads((s / "manifest.json").read_text())
    assert calls["n"] == len(manifest["chunks"]) - 1  # the chunk labeled before the kill is kept
    assert manifest["config"]["chunk_size"] == 30 and labeling.verify_transfer(s) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # swapped in: nothing left beside it


@pytest.mark.parametrize("step", ["teacher", "distill"])
def test_failed_rebuild_keeps_the_old_output(tmp_path, world, capsys, monkeypatch, step):
    import xdistil.stages
    import xdistil.teachers

    def broken(cfg, where, *a, **k):  # writes half a new output, then fails
        where = Path(where)
        (where / "checkpoint").mkdir(parents=True, exist_ok=True)
        (where / "checkpoint" / "state.json").write_text("{}")
        raise RuntimeError("the new output failed half-way")

    if step == "teacher":
        monkeypatch.setattr(xdistil.teachers, "train_teacher", broken)
        out = copy(world["teacher"], tmp_path / "t")
        args = ["teacher", "train", "--config", world["cfg"], "-q", "--no-eval", "--teacher.epochs", "2", "--out", out]
    else:
        monkeypatch.setattr(xdistil.stages, "distill", lambda cfg, t, te, where, *a, **k: broken(cfg, where))
        out = copy(world["students"], tmp_path / "d") / "distill"
        args = ["distill", "--config", world["cfg"], "-q", "--teacher-dir", world["a"], "--transfer", world["set"],
                "--student.hidden_dim", "12", "--no-eval", "--out", out.parent]
    before = snapshot(out)
    rc, _, err = xd(capsys, *args)
    assert "failed half-way" in one_line_error(rc, err)
    assert snapshot(out) == before


# ---- 2: foreign files -----------------------------------------------------------------

def commands(world, out) -> dict[str, list]:
    """Every command that takes --out, with arguments that would otherwise work."""
    cfg, a = world["cfg"], world["a"]
    return {
        "teacher": ["teacher", "train", "--config", cfg, "-q", "--no-eval", "--out", out],
        "label": ["label", "--config", cfg, "-q", "--teacher-dir", a, "--out", out],
        "distill": ["distill", "--config", cfg, "-q", "--teacher-dir", a, "--transfer", world["set"], "--no-eval",
                    "--out", out],
        "export": ["export", world["student"], "--out", out, *INT8],
        "run": ["run", "--config", cfg, "-q", "--out", out],
    }


@pytest.mark.parametrize("command", ["teacher", "label", "distill", "export", "run"])
def test_a_folder_of_other_things_is_refused(tmp_path, world, capsys, command):
    mine = tmp_path / "mydir"
    mine.mkdir()
    (mine / "notes.txt").write_text("x\n")
    rc, _, err = xd(capsys, *commands(world, mine)[command])
    err = one_line_error(rc, err)
    assert "notes.txt" in err and "--out" in err and str(mine) in err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "x\n"

    f = tmp_path / "a-file"
    f.write_text("keep me\n")
    rc, _, err = xd(capsys, *commands(world, f)[command])
    assert "is a file" in one_line_error(rc, err)
    assert f.read_text() == "keep me\n"


@pytest.mark.parametrize("command", ["teacher", "label", "distill", "export"])
def test_a_foreign_file_beside_an_output_survives_a_rerun(tmp_path, world, capsys, command):
    built = {"teacher": world["teacher"], "label": world["set"], "distill": world["students"],
             "export": world["export"]}[command]
    out = copy(built, tmp_path / "out")
    inner = out / "distill" if command == "distill" else out  # distill's --out holds its step folders
    (inner / "notes.txt").write_text("x\n")
    args = commands(world, out)[command]
    rc, _, _ = xd(capsys, *args)  # the same inputs: the output is reused, nothing is deleted
    assert rc == 0 and (inner / "notes.txt").read_text() == "x\n"
    changed = {"teacher": ["--teacher.epochs", "2"], "label": ["--transfer.chunk_size", "50"],
               "distill": ["--student.hidden_dim", "12"], "export": ["--tolerance", "1e-2"]}[command]
    before = snapshot(out)
    rc, _, err = xd(capsys, *args, *changed)  # other inputs: it would be recomputed over notes.txt
    assert "notes.txt" in one_line_error(rc, err) and "never deletes" in err
    assert snapshot(out) == before


def test_a_run_directory_keeps_foreign_files(tmp_path, world, capsys):
    run = tmp_path / "run"
    assert xd(capsys, *commands(world, run)["run"])[0] == 0
    (run / "notes.txt").write_text("x\n")  # beside the steps: the run never deletes it
    rc, out, err = xd(capsys, *commands(world, run)["run"], "--student.hidden_dim", "12")
    assert rc == 0 and "fields.student.hidden_dim" in out, err
    assert (run / "notes.txt").read_text() == "x\n"
    (run / "distill" / "stage1-hard" / "my_eval.txt").write_text("y\n")  # inside a step's output, at any
    before = snapshot(run / "distill")                                    # depth: that step is refused
    rc, _, err = xd(capsys, *commands(world, run)["run"], "--student.hidden_dim", "10")
    assert "stage1-hard/my_eval.txt" in one_line_error(rc, err)
    assert snapshot(run / "distill") == before and (run / "notes.txt").read_text() == "x\n"


# ---- by record, not by name (issue 27): a user's files at any depth --------------------

@pytest.mark.parametrize("case", ["a file in a stage", "a copied stage", "an export inside a stage",
                                  "an earlier release"])
def test_a_users_files_inside_a_distill_output_survive(tmp_path, world, capsys, case):
    out = copy(world["students"], tmp_path / "d")
    students = out / "distill"
    stage = students / "stage1-hard"
    if case == "a file in a stage":
        (stage / "my_eval.txt").write_text("x\n")
        named = "stage1-hard/my_eval.txt"
    elif case == "a copied stage":  # its name matches the stage folders', its record is a copy
        shutil.copytree(stage, students / "stage1-x-good")
        named = "stage1-x-good"
    elif case == "an export inside a stage":  # the student card's own advice: `xdistil export . --out onnx`
        assert xd(capsys, "export", stage, "--out", stage / "onnx")[0] == 0
        named = "stage1-hard/onnx"
    else:  # written by an xdistil that wrote no records: refused, naming what is there
        (students / "xdistil_files.json").unlink()
        named = "no record of what xdistil wrote"
    before = snapshot(out)
    rc, _, err = xd(capsys, *commands(world, out)["distill"], "--student.hidden_dim", "32")
    assert named in one_line_error(rc, err)
    assert snapshot(out) == before


def test_a_file_in_chunks_survives_a_relabel(tmp_path, world, capsys):
    s = copy(world["set"], tmp_path / "s")
    (s / "chunks" / "notes.txt").write_text("x\n")
    before = snapshot(s)
    rc, _, err = xd(capsys, *commands(world, s)["label"], "--transfer.chunk_size", "60")
    assert "chunks/notes.txt" in one_line_error(rc, err)
    assert snapshot(s) == before


@pytest.mark.parametrize("name", ["mine.onnx", ".notes.tmp"])
def test_a_users_file_in_an_export_survives(tmp_path, world, capsys, name):
    exp = copy(world["export"], tmp_path / "exp")
    (exp / name).write_text("mine\n")
    before = snapshot(exp)
    rc, _, err = xd(capsys, "export", world["student"], "--out", exp, "--tolerance", "1e-2")
    assert name in one_line_error(rc, err)
    assert snapshot(exp) == before


def test_a_readme_and_a_config_are_not_an_export(tmp_path, world, capsys):
    from xdistil_export.atomic import NotOurs

    from xdistil.deployable import export_model

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("# my model\n")
    (mine / "config.json").write_text("{}\n")
    rc, _, err = xd(capsys, "export", world["student"], "--out", mine)
    assert "README.md" in one_line_error(rc, err)
    with pytest.raises(NotOurs, match="README.md"):  # from Python too: the names prove nothing
        export_model(world["student"], mine)
    assert sorted(p.name for p in mine.iterdir()) == ["README.md", "config.json"]
    assert (mine / "README.md").read_text() == "# my model\n"


@pytest.mark.parametrize("point", ["aside", "swapped"])
def test_an_export_killed_in_its_swap_is_repaired_by_the_next_run(tmp_path, world, capsys, point):
    import os
    import subprocess
    import sys

    from xdistil_export.atomic import KILL_ENV

    exp = copy(world["export"], tmp_path / "exp")
    args = ["export", str(world["student"]), "--out", str(exp), "--tolerance", "1e-2"]
    p = subprocess.run([sys.executable, "-m", "xdistil.cli", *args], capture_output=True, text=True, timeout=300,
                       env={**os.environ, KILL_ENV: point, "OMP_NUM_THREADS": "1"})
    assert p.returncode == -9, p.stderr[-2000:]
    assert exp.exists() == (point == "swapped") and any(".exp.old-" in q.name for q in tmp_path.iterdir())
    rc, out, err = xd(capsys, *args)
    assert rc == 0 and "was finished" in err and "export: reusing" in out, err
    assert sorted(q.name for q in tmp_path.iterdir()) == ["exp"]
    assert json.loads((exp / "export_manifest.json").read_text())["parity"]["tolerance"] == 1e-2


# ---- 5: config values, teachers that disagree, -v, head rows, cards ------------------------

@pytest.mark.parametrize("raw, words", [
    ({"teacher": {"lr": float("nan")}}, "lr must be positive"),
    ({"teacher": {"head_lr": float("inf")}}, "head_lr must be positive"),
    ({"teacher": {"warmup_ratio": 1.5}}, "warmup_ratio"),
    ({"teacher": {"epochs": float("nan")}}, "epochs must be positive"),
    ({"transfer": {"chunk_size": 0}}, "chunk_size must be positive"),
    ({"transfer": {"batch_size": -4}}, "batch_size must be positive"),
    ({"transfer": {"limit": 0}}, "limit must be positive"),
    ({"transfer": {"layers": [-1]}}, "layers must be >= 0"),
    ({"data": {"dev_limit": 0}}, "dev_limit must be positive"),
    ({"student": {"hidden_dim": 0}}, "hidden_dim must be positive"),
    ({"student": {"dropout": 1.0}}, "dropout must be in [0, 1)"),
    ({"student": {"max_length": 4}}, "max_length must be >= 8"),
    ({"distill": {"max_steps_per_epoch": 0}}, "max_steps_per_epoch must be positive"),
    ({"distill": {"checkpoint_every": -1}}, "checkpoint_every must be a finite number >= 0"),
    ({"distill": {"match": {"teacher_layer": -1}}}, "teacher_layer must be >= 0"),
    ({"distill": {"stages": [{"name": "a", "losses": {"gold": float("nan")}}]}}, "loss weights"),
    ({"distill": {"stages": [{"name": "a", "losses": {"gold": 1.0}, "temperature": 0}]}}, "temperature must be"),
])
def test_config_values_that_cannot_train_are_refused(raw, words):
    from xdistil.config import ConfigError, RunConfig, from_dict

    with pytest.raises(ConfigError) as e:
        from_dict(RunConfig, raw)
    assert words in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_yaml_nan_is_refused_at_the_command_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("teacher:\n  lr: .nan\n", encoding="utf-8")
    rc, _, err = xd(capsys, "teacher", "train", "--config", cfg, "--lang", "de", "--out", tmp_path / "o")
    assert "lr must be positive" in one_line_error(rc, err) and not (tmp_path / "o").exists()
    rc, _, err = xd(capsys, "label", "--teacher-dir", tmp_path, "--transfer.chunk_size", "0", "--out", tmp_path / "o")
    assert "chunk_size must be positive" in one_line_error(rc, err)


def test_distill_refuses_a_teacher_that_did_not_label_the_set(tmp_path, world, capsys):
    out = tmp_path / "d"
    rc, _, err = xd(capsys, "distill", "--config", world["cfg"], "-q", "--teacher-dir", world["b"], "--transfer",
                    world["set"], "--no-eval", "--out", out)
    err = one_line_error(rc, err)
    assert "did not label the transfer set" in err and str(world["a"]) in err and str(world["b"]) in err
    assert not (out / "distill").exists()


def test_verbose_and_quiet_before_or_after_the_command(tmp_path):
    for argv in (["-v", "-q", "label", "--teacher-dir", "t", "--out", "o"],
                 ["label", "--teacher-dir", "t", "--out", "o", "-v", "-q"]):
        ns = build_parser().parse_args(argv)
        assert ns.verbose and ns.quiet
    ns = build_parser().parse_args(["export", "m", "--out", "o"])
    assert not ns.verbose and not ns.quiet
    # -v after the command reaches main: the error's full traceback instead of one line
    missing = str(tmp_path / "missing")
    assert main(["export", missing, "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(UsageError):
        main(["export", missing, "--out", str(tmp_path / "o"), "-v"])


def test_new_head_rows_are_a_warning(tmp_path, caplog):
    from xdistil.teachers import load_teacher

    teacher = make_tiny_teacher(tmp_path)
    labels = ["O", "B-PER", "I-PER", "B-MISC", "I-MISC"]
    with caplog.at_level(logging.INFO, logger="xdistil.teachers"):
        load_teacher(str(teacher), labels)
    rows = [r for r in caplog.records if "new rows" in r.getMessage()]
    assert rows and rows[0].levelno == logging.WARNING and "B-MISC I-MISC" in rows[0].getMessage()


def test_cards_of_distill_and_export_name_languages_teacher_and_f1(tmp_path, world, capsys):
    from xdistil.cards import code_blocks, read_card

    front, body = read_card(world["student"])
    assert front["language"] == ["xx"] and front["base_model"] == str(world["a"])
    assert set(front["xdistil"]["dev_f1"]) == {"xx"}  # distill evaluated it
    manifest = json.loads((world["export"] / "export_manifest.json").read_text())
    assert manifest["int8"]["parity"]["min_tag_agreement"] == 0.3  # --int8-min-agreement reached the check
    efront, _ = read_card(world["export"])
    assert efront["language"] == ["xx"] and efront["base_model"] == str(world["a"])
    assert efront["xdistil"]["dev_f1"] == front["xdistil"]["dev_f1"]
    # the card's own commands run as written (`.` is the student folder)
    usage = next(b for b in code_blocks(body, "bash") if "xdistil evaluate" in b)
    for line in usage.strip().splitlines():
        argv = shlex.split(line)[1:]
        argv = [str(world["student"]) if a == "." else world["dev"] if a == "dev.conll" else a for a in argv]
        if argv[0] == "export":
            argv[argv.index("--out") + 1] = str(tmp_path / "onnx")
            if "--int8" in argv:  # the 2-step student's near-tied tags (INT8)
                argv += INT8[1:]
        rc, _, err = xd(capsys, *argv)
        assert rc == 0, (line, err)
    # an export with --dev records its F1 in the front matter; a teacher's export its languages and base model
    exp = tmp_path / "teacher-onnx"
    assert xd(capsys, "export", world["teacher"], "--out", exp, "--dev", world["dev"])[0] == 0
    tfront, _ = read_card(exp)
    assert tfront["language"] == ["xx"] and tfront["base_model"] == str(world["a"])
    assert set(tfront["xdistil"]["dev_file_f1"]) == {"file", "fp32"}

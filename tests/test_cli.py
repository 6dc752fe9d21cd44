import argparse
import gzip
import json
import os
import subprocess
import sys

import pytest
import yaml

from xdistil.cli import build_parser, main
from xdistil.commands import flags
from xdistil.config import RunConfig, from_dict, load_config

COMMANDS = ["languages", "data", "teacher", "label", "distill", "evaluate", "export", "predict", "serve",
            "bench", "report", "run"]


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for c in COMMANDS:
        assert f"\n    {c} " in out or f"\n    {c}\n" in out, c


@pytest.mark.parametrize("argv", [[c] for c in COMMANDS if c not in ("data", "teacher")]
                         + [["data", "check"], ["teacher", "prepare"], ["teacher", "train"]])
def test_every_subcommand_help_explains_itself(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv + ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: xdistil" in out and len(out.splitlines()) >= 4


def test_languages_table_and_json(capsys, shared_data):
    assert main(["languages", "--data-root", str(shared_data)]) == 0
    out = capsys.readouterr().out
    for code in ("af", "de", "hi", "vi", "bs"):
        assert f"\n{code} " in out
    assert "hub only" in out
    assert main(["languages", "--json", "--data-root", str(shared_data), "de"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert any(d["code"] == "de" for d in data)


def test_data_check_counts_and_errors(tmp_path, capsys):
    good = tmp_path / "good.tsv.gz"
    good.write_bytes(gzip.compress(b"Berlin\tB-LOC\nist\tO\n\nMerkel\tB-PER\n"))
    assert main(["data", "check", str(good), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)[0]
    assert rep["sentences"] == 2 and rep["tokens"] == 3 and rep["tags"]["B-LOC"] == 1
    bad = tmp_path / "bad.tsv"
    bad.write_text("Berlin\tB-LOC\nist\tB-MISC\n")
    assert main(["data", "check", str(bad)]) == 0  # a user's own types (MISC) are valid IOB2
    capsys.readouterr()
    assert main(["data", "check", str(bad), "--labels", "O", "B-LOC", "I-LOC"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2" in err and "outside the label set" in err and "Traceback" not in err
    assert main(["data", "check", str(bad), "--any-labels"]) == 0
    rep_strict = tmp_path / "rep.tsv"
    rep_strict.write_text("a\tO\nb\tI-PER\n")
    assert main(["data", "check", str(rep_strict)]) == 0
    assert main(["data", "check", str(rep_strict), "--strict"]) == 2


def test_config_errors_are_clear(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("teacher:\n  epoch: 3\n")
    assert main(["teacher", "train", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "unknown key(s) ['epoch']" in capsys.readouterr().err
    assert main(["run", "--config", "no-such-preset", "--out", str(tmp_path / "o")]) == 2
    assert "demo" in capsys.readouterr().err
    assert main(["distill", "--stages", "hard,bogus", "--teacher", "t", "--out", str(tmp_path / "o")]) == 2
    assert "comma list" in capsys.readouterr().err


def test_unknown_language_needs_files(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--lang", "sw"]) == 2


def test_parser_builds():
    assert build_parser().prog == "xdistil"


# ---- generated flags, overrides, config show -------------------------------------------



def _cfg(argv, **kw):
    return flags.build_config(build_parser().parse_args(argv), **kw)


def test_generated_flags_set_nested_fields(tmp_path):
    cfg = _cfg(["run", "--out", str(tmp_path), "--lang", "de", "--lang", "ar,hi", "--student.hidden_dim", "64",
                "--student.arch", "transformer", "--distill.stages", "hard,soft", "--transfer.layers", "[4, 6]",
                "--teacher.freeze_embeddings", "false", "--teacher.lr", "1e-3", "--budget", "300",
                "--data.strict", "--steps", "teacher,label"])
    assert cfg.data.languages == ["de", "ar", "hi"] and cfg.data.labeled_budget == 300 and cfg.data.strict
    assert cfg.student.hidden_dim == 64 and cfg.student.arch == "transformer"
    assert [s.name for s in cfg.distill.resolved_stages()] == ["hard", "soft"]
    assert cfg.transfer.layers == [4, 6] and cfg.teacher.freeze_embeddings is False
    assert cfg.teacher.lr == 1e-3 and cfg.steps == ["teacher", "label"]
    # --seed sets the seed of every step the command runs; the dotted flag one of them
    cfg = _cfg(["run", "--out", str(tmp_path), "--lang", "de", "--seed", "7", "--distill.seed", "9"])
    assert (cfg.teacher.seed, cfg.distill.seed) == (7, 9)
    cfg = _cfg(["run", "--out", str(tmp_path), "--lang", "de", "--no-teacher.freeze_embeddings",
                "--set", "distill.stages=[{name: g, losses: {gold: 1}, data: labeled}]", "--layers", "2", "3"])
    assert cfg.teacher.freeze_embeddings is False and cfg.distill.resolved_stages()[0].data == "labeled"
    assert cfg.transfer.layers == [2, 3]  # the old --layers spelling took several values


def test_config_file_then_flags(tmp_path):
    cfg = _cfg(["run", "--config", "demo", "--out", str(tmp_path), "--student.hidden_dim", "32"])
    demo = load_config("demo")
    assert cfg.student.hidden_dim == 32 and cfg.student.num_layers == demo.student.num_layers
    assert cfg.data == demo.data and cfg.distill.stages == demo.distill.stages


def test_student_preset_lies_between_the_config_and_the_flags(tmp_path):
    """--student-preset fast (issue 35): the bundled shape over any --config, the flags over it;
    only distill and run (and config show) take it."""
    from xdistil.config import student_preset, student_preset_names

    assert "fast" in student_preset_names()
    fast = student_preset("fast")
    demo = load_config("demo")
    cfg = _cfg(["run", "--config", "demo", "--out", str(tmp_path), "--student-preset", "fast"])
    for key, value in fast["student"].items():
        assert getattr(cfg.student, key) == value, key
    assert cfg.data == demo.data and cfg.teacher == demo.teacher  # nothing else moved
    cfg = _cfg(["distill", "--config", "demo", "--out", str(tmp_path), "--student-preset", "fast",
                "--student.hidden_dim", "32"])
    assert cfg.student.hidden_dim == 32 and cfg.student.arch == fast["student"].get("arch", "bilstm")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["teacher", "train", "--out", "o", "--student-preset", "fast"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["distill", "--out", "o", "--student-preset", "nope"])


def test_every_option_has_help():
    def parsers(p):
        yield p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sp in a.choices.values():
                    yield from parsers(sp)
    missing = []
    for p in parsers(build_parser()):
        for a in p._actions:
            if a.option_strings and not a.help:
                missing.append(f"{p.prog} {a.option_strings[0]}")
    assert not missing, missing


def test_config_show_loads_back(tmp_path, capsys):
    assert main(["config", "show", "demo", "--student.hidden_dim", "100"]) == 0
    text = capsys.readouterr().out
    assert "# Student architecture." in text and "hidden_dim: 100" in text
    assert from_dict(RunConfig, yaml.safe_load(text)) == load_config("demo", {"student.hidden_dim": 100})
    assert main(["config", "show", "--out", str(tmp_path / "c.yaml")]) == 0
    assert from_dict(RunConfig, yaml.safe_load((tmp_path / "c.yaml").read_text())) == RunConfig()


def _fake_teacher(d, data):
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "xdistil_teacher.json").write_text(json.dumps({"config": {"data": data}}))
    return d


def test_teacher_flag_means_one_thing(tmp_path, capsys):
    args = build_parser().parse_args(["teacher", "train", "--teacher", "e5-small", "--teacher", "x/y", "--out", "o"])
    assert flags.build_config(args, need_languages=False).teacher.model_names() == ["e5-small", "x/y"]
    t = _fake_teacher(tmp_path / "t", {"languages": ["de"]})
    cfg, dirs = flags.with_teachers(build_parser().parse_args(["label", "--teacher-dir", str(t), "--out", "o"]))
    assert dirs == [t] and cfg.transfer.teachers == [str(t)]
    cfg, dirs = flags.with_teachers(build_parser().parse_args(["label", "--teacher", str(t), "--out", "o"]))
    assert dirs == [t] and "old spelling of --teacher-dir" in capsys.readouterr().err
    # a model name is not a fine-tuned teacher folder: say how to fine-tune it
    (tmp_path / "plain").mkdir()
    assert main(["label", "--teacher-dir", str(tmp_path / "plain"), "--out", str(tmp_path / "o")]) == 2
    assert "xdistil teacher train --teacher MODEL" in capsys.readouterr().err


def test_label_and_distill_take_the_teachers_budget(tmp_path):
    t = _fake_teacher(tmp_path / "t", {"languages": ["de", "ar"], "labeled_budget": 300, "val_size": 30})
    cfg, _ = flags.with_teachers(build_parser().parse_args(["distill", "--teacher-dir", str(t), "--out", "o"]))
    assert (cfg.data.languages, cfg.data.labeled_budget, cfg.data.val_size) == (["de", "ar"], 300, 30)
    cfg, _ = flags.with_teachers(build_parser().parse_args(["label", "--teacher-dir", str(t), "--budget", "500",
                                                           "--out", "o"]))
    assert (cfg.data.labeled_budget, cfg.data.val_size) == (500, 30)  # told otherwise


def test_teacher_train_without_language_refuses(tmp_path, capsys):
    assert main(["teacher", "train", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no language given" in err and "--lang" in err and len(err.strip().splitlines()) == 1


def test_predict_takes_options_after_positionals():
    args = build_parser().parse_args(["predict", "DIR", "--precision", "int8", "FILE"])
    assert (args.model, args.precision, args.file) == ("DIR", "int8", "FILE")


def test_broken_pipe_is_quiet(monkeypatch, capsys):
    class Closed:
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["config", "show"]) == 141
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("make_argv, words", [
    (lambda d: ["run", "--out", str(d / "o"), "--lang", "de", "--teacher.lr", "abc"], "teacher.lr:"),
    (lambda d: ["run", "--out", str(d / "o"), "--lang", "de", "--steps", "teacher,lable"], "steps[1]:"),
    (lambda d: ["run", "--out", str(d / "o"), "--lang", "de", "--data.files", "{de: [unclosed"], "YAML"),
    (lambda d: ["run", "--out", str(d / "o"), "--lang", "de", "--distill.stages", "hard,sfot"], "distill.stages:"),
    (lambda d: ["run", "--out", str(d / "o"), "--config", str(d)], "is a directory"),
    (lambda d: ["run", "--out", str(d / "o"), "--config", str(d / "bad.yaml")], "bad.yaml:3: invalid YAML"),
    (lambda d: ["teacher", "train", "--out", str(d / "o"), "--lang", "de", "--train", str(d / "none.tsv")],
     "no such file"),
    (lambda d: ["teacher", "train", "--out", str(d / "o"), "--lang", "de", "--train", str(d)], "is a directory"),
    (lambda d: ["teacher", "train", "--out", str(d / "bad.yaml"), "--lang", "de"], "is a file"),
    (lambda d: ["teacher", "train", "--out", str(d / "o"), "--lang", "de", "--data.root", str(d / "nope")],
     "data.root"),
    (lambda d: ["distill", "--teacher-dir", str(d / "none"), "--out", str(d / "o")], "no such directory"),
    (lambda d: ["evaluate", str(d / "none"), "x.tsv"], "no such directory"),
    (lambda d: ["evaluate", str(d), str(d / "none.tsv")], "no such file"),
    (lambda d: ["bench", str(d / "none")], "no such directory"),
    (lambda d: ["report", str(d / "none"), "--out", str(d / "r")], "no such directory"),
    (lambda d: ["run", "--out", str(d / "o"), "--data.dev_limit"], "expected one argument"),
])
def test_mistakes_get_one_line(tmp_path, capsys, make_argv, words):
    (tmp_path / "bad.yaml").write_text("teacher:\n  lr: [1\n")
    try:
        code = main(make_argv(tmp_path))
    except SystemExit as e:  # argparse's own errors (a flag without its value), one line too
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [x for x in err.splitlines() if not x.startswith(("xdistil: warning", "WARNING"))]
    assert len(lines) == 1 and lines[0].startswith("xdistil") and ": error: " in lines[0], err
    assert words in err and "Traceback" not in err


def _xdistil(*argv, **env):
    return subprocess.run([sys.executable, "-m", "xdistil.cli", *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **env})


def test_errors_in_a_real_process(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    r = _xdistil("evaluate", str(model), "--lang", "bs", "--data-root", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("xdistil: error: --lang bs: no labeled dev data") and "HF_HUB_OFFLINE" in r.stderr
    assert len(r.stderr.splitlines()) == 1
    r = _xdistil("run", "--out", str(tmp_path / "o"), "--lang", "de", "--student.hidden_dim", "wide")
    errors = [x for x in r.stderr.splitlines() if not x.startswith("WARNING this machine is already loaded")]
    assert r.returncode == 2 and "\n".join(errors) == (
        "xdistil: error: student.hidden_dim: input should be a valid integer, unable to parse string as an integer "
        "(got 'wide')")


@pytest.mark.parametrize("argv", [["teacher", "train"], ["label"], ["distill"], ["run"]])
def test_resume_only_and_top_level_fields_on_every_step(argv):
    args = build_parser().parse_args(argv + ["--out", "o", "--resume-only", "--precision", "bf16"])
    assert args.resume_only and args.overrides == {"precision": "bf16"}


def test_predict_into_a_closed_pipe_is_quiet(tmp_path):
    """`xdistil predict DIR --precision fp32 FILE | head -1`: options after positionals, and no
    BrokenPipeError when the reader stops early (more output than a pipe buffer holds)."""
    from tiny import make_tiny_teacher

    from xdistil.deployable import export_model

    export_model(make_tiny_teacher(tmp_path), tmp_path / "onnx")
    text = tmp_path / "in.txt"
    text.write_text("".join(f"Anna wohnt in Berlin seit {i} Jahren .\n" for i in range(3000)), encoding="utf-8")
    p = subprocess.Popen([sys.executable, "-m", "xdistil.cli", "predict", str(tmp_path / "onnx"), "--precision",
                          "fp32", str(text), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    first = p.stdout.readline()
    p.stdout.close()  # as `head -1` does
    err = p.stderr.read()
    assert p.wait(timeout=120) == 141, err  # stopped by the closed pipe, as a Unix filter is
    assert json.loads(first)["words"][:2] == ["Anna", "wohnt"]
    assert "Traceback" not in err and "BrokenPipe" not in err, err

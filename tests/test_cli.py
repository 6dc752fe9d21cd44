import gzip
import json

import pytest

from xdistil.cli import build_parser, main

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
    assert main(["data", "check", str(bad)]) == 2
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

"""Inputs that used to slip through, through the CLI as a user meets them: teachers with
BIOES or prefix-less (IO) labels, a copied teacher, invisible format characters, blank
tokens, and a CoNLL file given to ``predict`` as text."""

import json
import os
import shutil

import pytest
import torch
import yaml
from synth import synth_sentences, write_conll
from tiny import make_tiny_teacher

from xdistil import digests
from xdistil.cli import main
from xdistil.models import head_scheme, io_words_to_iob2, to_iob2

IOB2 = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
BIOES = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-ORG", "I-ORG", "E-ORG", "S-ORG",
         "B-LOC", "I-LOC", "E-LOC", "S-LOC"]
IO = ["O", "PER", "ORG", "LOC"]


def _setup(tmp_path, labels):
    """A teacher not trained by xdistil (its own head labels), CoNLL train/dev/unlabeled files and
    a config for label/distill."""
    teacher = make_tiny_teacher(tmp_path / "hub", labels=labels)
    data = tmp_path / "data"
    data.mkdir()
    files = {"train": [str(write_conll(data / "train.conll", synth_sentences(60, 1)))],
             "dev": [str(write_conll(data / "dev.conll", synth_sentences(20, 2)))],
             "unlabeled": [str(write_conll(data / "unlabeled.txt", synth_sentences(40, 3), with_tags=False))]}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"languages": ["xx"], "labeled_budget": 50, "val_size": 10, "files": {"xx": files}},
        "transfer": {"layers": [2], "chunk_size": 100, "batch_size": 32},
        "student": {"embedding_dim": 8, "hidden_dim": 16, "max_length": 24},
        "distill": {"stages": [{"name": "hard", "losses": {"hard": 1.0}, "epochs": 1, "unfreeze": False}],
                    "match": {"teacher_layer": 2}, "max_steps_per_epoch": 2},
    }))
    return teacher, cfg, data / "dev.conll"


# ---- teachers whose labels are not IOB2 ----------------------------------------------------


def test_head_schemes_map_rows_by_name():
    bioes = head_scheme(BIOES)
    assert bioes.name == "BIOES" and list(bioes.labels) == IOB2
    assert [BIOES[i] for i in bioes.rows[IOB2.index("B-LOC")]] == ["B-LOC", "S-LOC"]
    assert [BIOES[i] for i in bioes.rows[IOB2.index("I-LOC")]] == ["I-LOC", "E-LOC"]
    bilou = head_scheme(["O", "U-PER", "B-PER", "I-PER", "L-PER"])
    assert list(bilou.labels) == ["O", "B-PER", "I-PER"] and bilou.rows == ((0,), (1, 2), (3, 4))
    io = head_scheme(IO)
    assert io.name == "IO" and list(io.labels) == IOB2
    assert head_scheme(IOB2).converts is False
    for bad in (["O", "B-PER", "PER"], ["PER", "LOC"]):  # mixed schemes; no O
        with pytest.raises(ValueError, match="teacher x"):
            head_scheme(bad, "teacher x")


def test_bioes_probabilities_add_up():
    logits = torch.randn(3, 5, len(BIOES))
    scheme = head_scheme(BIOES)
    p_head, p = logits.softmax(-1), to_iob2(logits, scheme).softmax(-1)
    assert torch.allclose(p.sum(-1), torch.ones(3, 5), atol=1e-5)
    assert torch.allclose(p[..., IOB2.index("B-PER")], p_head[..., 1] + p_head[..., 4], atol=1e-5)
    assert torch.allclose(p[..., IOB2.index("I-PER")], p_head[..., 2] + p_head[..., 3], atol=1e-5)


def test_io_words_form_one_entity_per_run():
    """IO: consecutive PER words are one entity (B-PER I-PER), a LOC after them starts its own."""
    scheme = head_scheme(IO)
    big = 8.0
    head = torch.tensor([[0, big, 0, 0], [0, big, 0, 0], [0, 0, 0, big], [big, 0, 0, 0], [0, big, 0, 0]])
    out = io_words_to_iob2(to_iob2(head, scheme), scheme)
    assert [IOB2[i] for i in out.argmax(-1).tolist()] == ["B-PER", "I-PER", "B-LOC", "O", "B-PER"]
    assert torch.allclose(out.exp().sum(-1), torch.ones(5), atol=1e-4)  # still a distribution per word


@pytest.mark.parametrize("labels", [BIOES, IO], ids=["bioes", "io"])
def test_non_iob2_teacher_labels_distills_and_evaluates(tmp_path, capsys, labels):
    teacher, cfg, dev = _setup(tmp_path, labels)
    run = ["-q", "--config", str(cfg), "--teacher-dir", str(teacher)]
    assert main(["label", *run, "--out", str(tmp_path / "transfer")]) == 0
    manifest = json.loads((tmp_path / "transfer" / "manifest.json").read_text())
    assert manifest["labels"] == IOB2  # converted at the teacher's edge: nothing later sees E-/S- or bare types
    capsys.readouterr()
    assert main(["evaluate", str(teacher), str(dev), "--json", "-q"]) == 0
    scores = json.loads(capsys.readouterr().out)[str(dev)]
    assert set(scores["per_type"]) <= {"PER", "ORG", "LOC"}
    if labels is BIOES:  # the student and its evaluation (IO shares the path after labeling)
        out = tmp_path / "distill"
        assert main(["distill", *run, "--transfer", str(tmp_path / "transfer"), "--out", str(out), "--no-eval"]) == 0
        student = sorted(p.parent for p in out.rglob("xdistil_student.json"))[-1]
        assert json.loads((student / "xdistil_student.json").read_text())["labels"] == IOB2
        assert main(["evaluate", str(student), str(dev), "-q"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_export_refuses_a_prefixless_teacher_in_one_line(tmp_path, capsys):
    """Its B- or I- needs the previous word, which the exported graph does not see."""
    teacher = make_tiny_teacher(tmp_path / "hub", labels=IO)
    capsys.readouterr()
    assert main(["-q", "export", str(teacher), "--out", str(tmp_path / "onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert str(teacher) in err and "no B-/I- prefixes" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "onnx").exists()


def test_data_check_labels_without_prefixes_are_types_not_letters(tmp_path, capsys):
    f = write_conll(tmp_path / "d.tsv", synth_sentences(5, 1))
    assert main(["data", "check", str(f), "--labels", *IOB2]) == 0
    assert main(["data", "check", str(f), "--labels", "PER", "ORG", "LOC"]) == 0  # the same types, no prefixes
    capsys.readouterr()
    assert main(["data", "check", str(f), "--labels", "PER"]) == 2  # ORG / LOC are outside it
    err = capsys.readouterr().err
    assert "outside the label set" in err and "types: PER" in err and "E, P, R" not in err


def test_evaluate_names_a_tag_that_is_not_iob2():
    from xdistil.evaluate import score

    with pytest.raises(ValueError, match="predicted tag 'E-LOC' is not IOB2"):
        score([["B-LOC", "I-LOC"]], [["B-LOC", "E-LOC"]])


# ---- a copied teacher ---------------------------------------------------------------------


def test_a_copied_or_touched_teacher_is_the_same_teacher(tmp_path, capsys):
    teacher, cfg, _ = _setup(tmp_path, IOB2)
    copy = tmp_path / "copy"
    shutil.copytree(teacher, copy)  # new modification times, another path: the same bytes
    (copy / "README.md").write_text("my notes\n")
    assert digests.folder_digest(copy) == digests.folder_digest(teacher)
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one byte of the weights: another model
    weights.write_bytes(bytes(data))
    assert digests.folder_digest(copy) != digests.folder_digest(teacher)

    shutil.rmtree(copy)
    shutil.copytree(teacher, copy)
    for f in copy.iterdir():  # as `cp -r` (no -p) or a `touch` leaves them: new modification times
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    run = ["-q", "--config", str(cfg)]
    assert main(["label", *run, "--teacher-dir", str(teacher), "--out", str(tmp_path / "transfer")]) == 0
    assert main(["distill", *run, "--teacher-dir", str(copy), "--transfer", str(tmp_path / "transfer"),
                 "--out", str(tmp_path / "distill"), "--no-eval"]) == 0
    assert "did not label" not in capsys.readouterr().err


# ---- invisible words, blank tokens --------------------------------------------------------


@pytest.mark.parametrize("text, words", [
    ("Anna \u200f lebt", ["Anna", "lebt"]),  # a standalone right-to-left mark
    ("Anna\u200b lebt \u200b", ["Anna", "lebt"]),  # zero-width spaces
    ("ab\u200bcd", ["ab", "cd"]),  # U+200B separates words
    ("\u200fשלום\u200f עולם", ["שלום", "עולם"]),  # marks around words belong to none
    ("می\u200cخواهم", ["می\u200cخواهم"]),  # a ZWNJ between letters stays in its word
    ("\u2060\ufeff\u00ad", []),
])
def test_format_characters_are_never_words(text, words):
    from xdistil_export.text import split_words, split_words_with_offsets

    from xdistil.data.readers import split_words as training_split

    assert split_words(text) == training_split(text) == words
    got, spans = split_words_with_offsets(text)
    assert [text[a:b] for a, b in spans] == got == words


def test_raw_text_with_an_invisible_mark_reads_no_invisible_word(tmp_path):
    from xdistil.data.readers import read_raw

    f = tmp_path / "raw.txt"
    f.write_text("Anna \u200f lebt in Berlin\n\u200b \u200f\n", encoding="utf-8")
    assert [s.words for s in read_raw(f)] == [["Anna", "lebt", "in", "Berlin"]]


def test_data_check_refuses_a_blank_token(tmp_path, capsys):
    f = tmp_path / "blank.tsv"
    f.write_text("Anna\tB-PER\n \tO\nlebt\tO\n", encoding="utf-8")
    assert main(["data", "check", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{f}:2" in err and "blank token" in err and len(err.splitlines()) == 1


# ---- predict: blank words, CoNLL given as text ----------------------------------------------


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    teacher = make_tiny_teacher(tmp, labels=IOB2)
    assert main(["-q", "export", str(teacher), "--out", str(tmp / "export")]) == 0
    return tmp / "export"


def test_predict_refuses_conll_given_as_text(tmp_path, capsys, export_dir):
    from xdistil_export.cli import main as runtime

    dev = write_conll(tmp_path / "dev.tsv", synth_sentences(5, 4))
    for run, prog in ((main, "xdistil"), (runtime, "xdistil-runtime")):
        assert run(["predict", str(export_dir), str(dev), "--out", str(tmp_path / "p.jsonl")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"{prog}: error: {dev}: looks like CoNLL") and "--format conll" in err
        assert not (tmp_path / "p.jsonl").exists()
    assert main(["predict", str(export_dir), str(dev), "--format", "conll", "--out", str(tmp_path / "p.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    texts = tmp_path / "texts.tsv"  # a tab in every line, but texts, not word<TAB>tag
    texts.write_text("1\tAnna lebt in Berlin\n2\tkarimone latoqu\n", encoding="utf-8")
    assert main(["predict", str(export_dir), str(texts), "--out", str(tmp_path / "t.jsonl")]) == 0


def test_predict_conll_refuses_a_blank_word(tmp_path, capsys, export_dir):
    f = tmp_path / "in.conll"
    f.write_text("Anna\tO\nlebt\tO\n\nBerlin\tO\n \tO\n", encoding="utf-8")
    out = tmp_path / "out.conll"
    assert main(["predict", str(export_dir), str(f), "--format", "conll", "--output-format", "conll",
                 "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{f}:5: blank word" in err and len(err.splitlines()) == 1
    f.write_text("Anna\tO\nlebt\tO\n\nBerlin\tO\n", encoding="utf-8")
    assert main(["predict", str(export_dir), str(f), "--format", "conll", "--output-format", "conll",
                 "--out", str(out)]) == 0
    lines = [line for line in out.read_text(encoding="utf-8").splitlines() if line]
    assert [line.split("\t")[0] for line in lines] == ["Anna", "lebt", "Berlin"]

"""The label set: explicit, else the teacher's head, else the data; head rows mapped by name;
one-line errors for teachers that cannot be loaded."""

import logging

import pytest
import torch
from faults import before_step
from synth import synth_sentences, write_conll
from tiny import make_tiny_teacher

from xdistil import DEFAULT_LABELS
from xdistil.config import RunConfig, from_dict
from xdistil.tagsets import (
    LabelError,
    check_labels,
    for_teachers,
    head_labels,
    labels_for_types,
    remap_head,
    resolve,
    teacher_labels,
)

# The order of the common Hugging Face WikiANN checkpoints (not xdistil's DEFAULT_LABELS order)
WIKIANN = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]


def test_resolution_order(caplog):
    assert resolve(["O", "B-X", "I-X"], WIKIANN, ["B-PER"]).labels == ["O", "B-X", "I-X"]
    r = resolve(None, WIKIANN, ["O", "B-PER", "B-ORG"])
    assert r.labels == WIKIANN and r.source == "teacher" and r.added == []
    with caplog.at_level(logging.WARNING):
        r = resolve(None, WIKIANN, ["B-MISC", "I-MISC", "B-PER"], teacher_name="my-teacher")
    assert r.labels == WIKIANN + ["B-MISC", "I-MISC"] and r.added == ["B-MISC", "I-MISC"]
    assert "my-teacher has no head rows for MISC" in caplog.text
    r = resolve(None, None, ["B-DATE", "O", "B-ORG", "I-PER"])
    assert r.labels == ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-DATE", "I-DATE"] and r.source == "data"
    assert resolve(None, None, []).labels == list(DEFAULT_LABELS)
    assert labels_for_types(["PER", "LOC", "ORG"]) == list(DEFAULT_LABELS)  # the historical ids stay
    with pytest.raises(LabelError, match="give data.labels"):
        resolve(None, ["O", "S-PER", "B-PER", "I-PER", "E-PER"], [])


@pytest.mark.parametrize("bad,msg", [(["B-PER", "I-PER"], "must contain 'O'"), (["O", "PER"], "not IOB2"),
                                     (["O", "b-per"], "not IOB2"), (["O", "B-X", "B-X"], "repeated")])
def test_check_labels(bad, msg):
    with pytest.raises(LabelError, match=msg):
        check_labels(bad)


def test_head_labels_and_remap_by_name(tmp_path):
    from transformers import AutoConfig, AutoModelForTokenClassification, BertConfig

    assert head_labels(BertConfig()) is None  # a bare encoder (placeholder LABEL_0, LABEL_1)
    path = make_tiny_teacher(tmp_path, labels=WIKIANN)
    assert head_labels(AutoConfig.from_pretrained(path)) == WIKIANN
    model = AutoModelForTokenClassification.from_pretrained(path)
    ref = model.classifier.weight.detach().clone()
    moved = remap_head(model, list(DEFAULT_LABELS) + ["B-MISC", "I-MISC"])
    assert moved["added"] == ["B-MISC", "I-MISC"] and moved["dropped"] == []
    for i, lab in enumerate(DEFAULT_LABELS):
        torch.testing.assert_close(model.classifier.weight[i], ref[WIKIANN.index(lab)])
    assert model.config.id2label[5] == "B-ORG" and model.num_labels == 9


def _always(path, label: str):
    """Rewrite a saved token classifier so that its head says ``label`` for every word."""
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(path)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(-10.0)
        model.classifier.bias[model.config.label2id[label]] = 10.0
    model.save_pretrained(path)
    return path


def _cfg(tmp_path, teacher, train, dev, **data) -> RunConfig:
    return from_dict(RunConfig, {
        "data": {"languages": ["xx"], "labeled_budget": 40, "val_size": 10,
                 "files": {"xx": {"train": [str(train)], "dev": [str(dev)]}}, **data},
        "teacher": {"model": str(teacher), "epochs": 1, "batch_size": 16, "lr": 1e-12, "head_lr": 1e-12,
                    "max_length": 24, "freeze_embeddings": True, "min_steps": 0, "min_selection_f1": 0.0},
    })


def _misc(sents):
    return [(w, [t.replace("ORG", "MISC") for t in tags]) for w, tags in sents]


def test_wikiann_order_teacher_keeps_predicting_org(tmp_path):
    """Issue 13: a teacher in HF WikiANN order that says B-ORG still says B-ORG after
    `teacher train` with learning rates near zero, whatever order the run uses."""
    from xdistil.taggers import load_tagger, predict_tags
    from xdistil.teachers import train_teacher

    teacher = _always(make_tiny_teacher(tmp_path, labels=WIKIANN), "B-ORG")
    train = write_conll(tmp_path / "train.tsv", synth_sentences(40, 1))
    dev = write_conll(tmp_path / "dev.tsv", synth_sentences(10, 2))
    words = [s for s, _ in synth_sentences(5, 7)]
    for name, labels in (("own", None), ("xdistil-order", list(DEFAULT_LABELS))):
        out = train_teacher(_cfg(tmp_path, teacher, train, dev, labels=labels), tmp_path / name, progress=False)
        tagger = load_tagger(out)
        assert tagger.labels == (labels or WIKIANN)
        assert {t for tags in predict_tags(tagger, words) for t in tags} == {"B-ORG"}
        assert teacher_labels(out) == (labels or WIKIANN)


def test_misc_teacher_and_misc_data_train_without_a_label_list(tmp_path, caplog):
    from xdistil.taggers import load_tagger
    from xdistil.teachers import train_teacher

    misc = ["O", "B-PER", "I-PER", "B-MISC", "I-MISC", "B-LOC", "I-LOC"]
    teacher = make_tiny_teacher(tmp_path, labels=misc)
    train = write_conll(tmp_path / "train.tsv", _misc(synth_sentences(40, 1)))
    dev = write_conll(tmp_path / "dev.tsv", _misc(synth_sentences(10, 2)))
    out = train_teacher(_cfg(tmp_path, teacher, train, dev), tmp_path / "t", progress=False)
    assert load_tagger(out).labels == misc
    # a PER/LOC/ORG teacher given MISC data: new rows, said in the log
    plain = make_tiny_teacher(tmp_path / "plain")
    with caplog.at_level(logging.WARNING):
        out = train_teacher(_cfg(tmp_path, plain, train, dev), tmp_path / "t2", progress=False)
    assert load_tagger(out).labels == list(DEFAULT_LABELS) + ["B-MISC", "I-MISC"]
    assert "no head rows for MISC" in caplog.text


def test_bare_encoder_takes_labels_from_the_data(tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from xdistil.tagsets import resolve_run

    src = make_tiny_teacher(tmp_path)
    tok = AutoTokenizer.from_pretrained(src)
    enc = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, pad_token_id=tok.pad_token_id), add_pooling_layer=False)
    enc.save_pretrained(tmp_path / "enc")
    tok.save_pretrained(tmp_path / "enc")
    sents = [(w, [t.replace("LOC", "DATE") for t in tags]) for w, tags in synth_sentences(40, 1)]
    train = write_conll(tmp_path / "train.tsv", sents)
    dev = write_conll(tmp_path / "dev.tsv", synth_sentences(10, 2))  # LOC only in dev: still a label
    cfg = resolve_run(_cfg(tmp_path, tmp_path / "enc", train, dev))
    assert cfg.data.labels == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-DATE", "I-DATE"]


def test_bad_dev_file_fails_before_training(tmp_path):
    from xdistil.data.readers import DataError
    from xdistil.teachers import train_teacher

    teacher = make_tiny_teacher(tmp_path)
    train = write_conll(tmp_path / "train.tsv", synth_sentences(40, 1))
    dev = tmp_path / "dev.tsv"
    dev.write_text("karimone\tB-PER\nist\tPERSON\n")
    steps = []
    with pytest.raises(DataError, match=r"dev.tsv:2: tag 'PERSON' is not IOB2"), \
            before_step(lambda desc, state: steps.append(desc)):
        train_teacher(_cfg(tmp_path, teacher, train, dev), tmp_path / "t", progress=False)
    assert steps == [] and not (tmp_path / "t" / "checkpoint").exists()  # refused before any training
    # explicit labels: a type outside them is refused, naming the file and line
    dev.write_text("karimone\tB-PER\nx\tB-MISC\n")
    with pytest.raises(DataError, match=r"dev.tsv:2: tag 'B-MISC' is outside the label set"):
        train_teacher(_cfg(tmp_path, teacher, train, dev, labels=list(DEFAULT_LABELS)), tmp_path / "t",
                      progress=False)


def test_label_step_reads_the_teachers_labels(tmp_path):
    misc = ["O", "B-MISC", "I-MISC"]
    a, b = make_tiny_teacher(tmp_path / "a", labels=misc), make_tiny_teacher(tmp_path / "b")
    cfg = from_dict(RunConfig, {"data": {"languages": ["xx"]}})
    assert for_teachers(cfg, [a]).data.labels == misc
    assert for_teachers(from_dict(RunConfig, {"data": {"labels": ["O", "I-MISC", "B-MISC"]}}), [a]).data.labels == misc
    with pytest.raises(LabelError, match="leave data.labels unset"):
        for_teachers(from_dict(RunConfig, {"data": {"labels": list(DEFAULT_LABELS)}}), [a])
    with pytest.raises(LabelError, match="different label lists"):
        for_teachers(cfg, [a, b])


# ---- one-line teacher loading errors -------------------------------------------------------

def _cli_error(argv, capsys) -> str:
    from xdistil.cli import main

    capsys.readouterr()  # what came before
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_teacher_loading_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from xdistil.models import ModelLoadError
    from xdistil.teachers import load_teacher

    src = make_tiny_teacher(tmp_path)
    dev = write_conll(tmp_path / "dev.tsv", synth_sentences(5, 2))
    # a damaged model.safetensors
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in src.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    w = broken / "model.safetensors"
    w.write_bytes(w.read_bytes()[: len(w.read_bytes()) // 3])
    with pytest.raises(ModelLoadError, match="cannot load the model weights"):
        load_teacher(str(broken), list(DEFAULT_LABELS))
    assert "cannot load the model weights" in _cli_error(["evaluate", str(broken), str(dev)], capsys)
    # no tokenizer files
    notok = tmp_path / "notok"
    notok.mkdir()
    for f in src.iterdir():
        if "token" not in f.name:
            (notok / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ModelLoadError, match="no tokenizer files"):
        load_teacher(str(notok), list(DEFAULT_LABELS))
    # a missing path, a file, a folder that is no model
    with pytest.raises(ModelLoadError, match="no such model folder"):
        load_teacher(str(tmp_path / "nope" / ".." / "x"), None)
    with pytest.raises(ModelLoadError, match="a file; expected a model folder"):
        load_teacher(str(dev), None)
    with pytest.raises(ModelLoadError, match="not a model folder"):
        load_teacher(str(tmp_path), None)


def test_hub_id_without_network_fails_fast(monkeypatch):
    from xdistil.models import ModelLoadError, resolve_model_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE is set: pass a local path, or connect"):
        resolve_model_path("someone/ner-model-not-cached")
    # not offline by the environment, but the hub does not answer (a closed local port)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelLoadError, match=r"cannot be reached: pass a local path, or connect"):
        resolve_model_path("someone/ner-model-not-cached")


def test_teacher_train_cli_errors_are_one_line(tmp_path, capsys):
    train = write_conll(tmp_path / "train.tsv", synth_sentences(40, 1))
    dev = write_conll(tmp_path / "dev.tsv", synth_sentences(10, 2))
    common = ["teacher", "train", "--config", _yaml(tmp_path, train, dev), "--out", str(tmp_path / "t")]
    assert "no such model folder" in _cli_error([*common, "--model", str(tmp_path / "missing" / ".." / "m")], capsys)
    err = _cli_error([*common, "--model", "someone/ner-not-cached"], capsys)
    assert "pass a local path, or connect" in err
    bad = tmp_path / "bad_dev.tsv"
    bad.write_text("karimone\tB-PER\nx\tb-per\n")
    err = _cli_error(["teacher", "train", "--config", _yaml(tmp_path, train, bad), "--model",
                      str(make_tiny_teacher(tmp_path)), "--out", str(tmp_path / "t")], capsys)
    assert f"{bad}:2: tag 'b-per': the prefix must be upper case" in err
    assert not (tmp_path / "t" / "checkpoint").exists()


def _yaml(tmp_path, train, dev) -> str:
    import yaml

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"data": {"languages": ["xx"], "labeled_budget": 40, "val_size": 10,
                                          "files": {"xx": {"train": [str(train)], "dev": [str(dev)]}}}}))
    return str(p)


def test_unnamed_head_is_not_reused_by_position(tmp_path, caplog):
    from transformers import AutoModelForTokenClassification

    from xdistil.teachers import load_teacher

    path = make_tiny_teacher(tmp_path, labels=[f"LABEL_{i}" for i in range(7)])
    ref = AutoModelForTokenClassification.from_pretrained(path).classifier.weight
    with caplog.at_level(logging.WARNING):
        model, _ = load_teacher(str(path), list(DEFAULT_LABELS))
    assert "labels are unnamed" in caplog.text and model.config.id2label[1] == "B-PER"
    assert not torch.allclose(model.classifier.weight, ref)

"""ONNX export of students and teachers: parity with PyTorch, int8, manifest, evaluation on the export.

Random weights throughout (nothing is trained): parity and the graph contract do not
need a good model. One caveat: random models have near-tied logits, so int8 noise
flips a few percent of their argmax tags; the int8 agreement floor (0.98 by default,
meant for trained models) is lowered here.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from synth import synth_sentences, write_conll
from tiny import make_tiny_teacher
from transformers import AutoModelForTokenClassification, AutoTokenizer
from xdistil_export.runtime import Predictor

from xdistil import DEFAULT_LABELS, deployable
from xdistil.cli import main
from xdistil.deployable import WORD_MASK_CONTRACT, ExportParityError, export_model
from xdistil.students import BiLSTMConfig, TransformerStudentConfig, build_student, save_student
from xdistil.taggers import load_tagger, predict_tags
from xdistil.vocab import seen_piece_ids

LABELS = list(DEFAULT_LABELS)
RANDOM_INT8_AGREEMENT = 0.8  # see the module docstring


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run faster on one thread, and a busy 2-core machine makes two thread pools crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def env(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("export")
    teacher = make_tiny_teacher(root)
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    model = AutoModelForTokenClassification.from_pretrained(teacher).eval()
    train = [w for w, _ in synth_sentences(80, 1)]
    seen = seen_piece_ids(tokenizer, train)
    dev = write_conll(root / "dev.tsv", synth_sentences(40, 2))
    torch.manual_seed(0)
    bilstm, btok = build_student("bilstm", model, tokenizer, seen, LABELS, BiLSTMConfig(embedding_dim=16, hidden_dim=16))
    # max_length 16: most dev sentences fit one window, the longer ones are windowed
    student = save_student(bilstm.eval(), btok, root / "bilstm", extra={"labels": LABELS, "max_length": 16})
    out = root / "bilstm-onnx"
    manifest = export_model(student, out, int8=True, dev_file=dev, int8_min_agreement=RANDOM_INT8_AGREEMENT)
    return SimpleNamespace(root=root, teacher=teacher, model=model, tokenizer=tokenizer, seen=seen, dev=dev,
                           student=student, out=out, manifest=manifest)


def test_export_directory_is_self_contained(env):
    files = {p.name for p in env.out.iterdir()}
    assert files == {"model.onnx", "model.int8.onnx", "tokenizer.json", "export_manifest.json", "config.json",
                     "README.md", "xdistil_files.json"}  # config.json: id2label / label2id; README.md: the
    # model card (test_cards.py); xdistil_files.json: what xdistil wrote there (xdistil_export.atomic)
    m = json.loads((env.out / "export_manifest.json").read_text())
    assert m == env.manifest
    assert m["kind"] == "bilstm" and m["labels"] == LABELS and m["max_length"] == 16
    assert m["source"] == str(env.student.resolve()) and m["opset"] == 17
    assert m["word_mask"] == WORD_MASK_CONTRACT
    assert set(m["specials"]) == {"cls_id", "sep_id", "pad_id", "unk_id"}
    assert m["files"] == {"model": "model.onnx", "model_int8": "model.int8.onnx", "tokenizer": "tokenizer.json"}
    for lib in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers", "xdistil"):
        assert m["versions"][lib]
    # built in a temporary sibling and renamed: nothing left beside it
    assert not [p for p in env.root.iterdir() if p.name.startswith(".bilstm-onnx")]


def test_fp32_parity_figures(env):
    p = env.manifest["parity"]
    assert p["batch_sizes"] == [1, 3, 8]
    assert p["max_abs_diff"] <= p["tolerance"] == 1e-3
    assert set(p["subword_max_abs_diff"]) == set(p["word_max_abs_diff"]) == {"1", "3", "8"}
    assert p["min_agreement"] == 1.0
    # a sentence longer than the window was checked, so windows outnumber sentences
    assert p["longest_sentence_words"] > 16 and p["windows"] > p["sentences"]


def test_int8_report_and_dev_f1(env):
    q = env.manifest["int8"]
    assert q["size_bytes"] < q["fp32_size_bytes"]
    assert q["parity"]["min_agreement"] >= RANDOM_INT8_AGREEMENT
    d = env.manifest["dev"]
    assert d["sentences"] == 40 and 0 <= d["f1_fp32"] <= 100 and 0 <= d["f1_int8"] <= 100
    assert d["f1_delta"] == pytest.approx(d["f1_int8"] - d["f1_fp32"])
    assert d["target_max_drop"] == 0.5 and d["within_target"] == (d["f1_delta"] >= -0.5)


@pytest.mark.parametrize("name", ["model.onnx", "model.int8.onnx"])
def test_graph_contract_and_dynamic_axes(env, name):
    model = onnx.load(str(env.out / name))
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in model.graph.output] == ["logits"]
    for v in list(model.graph.input) + list(model.graph.output):
        assert [d.dim_param for d in v.type.tensor_type.shape.dim[:2]] == ["batch", "sequence"]
    session = ort.InferenceSession(str(env.out / name), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for B, T in ((1, 5), (4, 13), (7, 16)):  # other batch sizes and lengths than traced
        ids = rng.integers(4, 20, size=(B, T), dtype=np.int64)
        mask = np.ones((B, T), dtype=np.int64)
        mask[0, T // 2 :] = 0
        (logits,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
        assert logits.shape == (B, T, len(LABELS)) and logits.dtype == np.float32
        assert np.isfinite(logits).all()


def test_evaluate_on_export_equals_torch_model(env, capsys):
    assert main(["evaluate", str(env.student), str(env.dev), "--json", "-q"]) == 0
    torch_scores = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(env.out), str(env.dev), "--json", "-q"]) == 0
    onnx_scores = json.loads(capsys.readouterr().out)
    assert onnx_scores == torch_scores
    assert onnx_scores[str(env.dev)]["f1"] == pytest.approx(env.manifest["dev"]["f1_fp32"])


def test_transformer_student_export_parity_via_cli(env, capsys):
    torch.manual_seed(1)
    student, tok = build_student("transformer", env.model, env.tokenizer, env.seen, LABELS,
                                 TransformerStudentConfig(num_layers=1))
    src = save_student(student.eval(), tok, env.root / "transformer", extra={"labels": LABELS, "max_length": 24})
    out = env.root / "transformer-onnx"
    assert main(["export", str(src), "--out", str(out), "--dev", str(env.dev)]) == 0
    printed = capsys.readouterr().out
    assert "exported transformer model" in printed and "dev F1" in printed
    m = json.loads((out / "export_manifest.json").read_text())
    assert m["kind"] == "transformer" and m["int8"] is None and m["files"]["model_int8"] is None
    assert m["parity"]["max_abs_diff"] <= 1e-3
    _same_tags_as_torch(src, out)


def test_teacher_export_parity(env):
    out = env.root / "teacher-onnx"
    m = export_model(env.teacher, out, int8=True, int8_min_agreement=RANDOM_INT8_AGREEMENT)
    assert m["kind"] == "hf" and m["max_length"] == 128
    assert m["parity"]["max_abs_diff"] <= 1e-3 and m["parity"]["windows"] > m["parity"]["sentences"]
    _same_tags_as_torch(env.teacher, out)


def _same_tags_as_torch(model_dir, export_dir):
    long = [word for words, _ in synth_sentences(30, 8) for word in words]  # windowed
    words = [w for w, _ in synth_sentences(30, 7)] + [long]
    expected = predict_tags(load_tagger(model_dir), words, batch_size=8)
    assert Predictor(export_dir).predict_words(words, batch_size=5) == expected


def test_parity_failure_raises_and_writes_nothing(env, monkeypatch):
    real = deployable._torch_word_logits

    def off_by_one(tagger, sentences):
        logits, hidden = real(tagger, sentences)
        return [lg + 1 for lg in logits], hidden

    monkeypatch.setattr(deployable, "_torch_word_logits", off_by_one)
    out = env.root / "broken-onnx"
    with pytest.raises(ExportParityError, match="differ from PyTorch") as e:
        export_model(env.student, out)
    assert e.value.figures["max_abs_diff"] > 0.9
    assert not out.exists()
    assert not [p for p in env.root.iterdir() if p.name.startswith(".broken-onnx")]

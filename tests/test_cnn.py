"""The ID-CNN student (xdistil/students/cnn.py): the third architecture, added as one file.

It goes through the same registry, build / save / load, distillation stages and ONNX
export as the BiLSTM and Transformer students, with nothing in the rest of xdistil
naming it.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from synth import synth_files
from tiny import make_tiny_teacher, tiny_sentences
from transformers import AutoModelForTokenClassification, AutoTokenizer

from xdistil import DEFAULT_LABELS
from xdistil.students import build_student, count_parameters, load_student, registry, save_student
from xdistil.students.cnn import CNNConfig, CNNTagger
from xdistil.vocab import seen_piece_ids

LABELS = list(DEFAULT_LABELS)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = make_tiny_teacher(tmp_path_factory.mktemp("teacher"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = tiny_sentences(40)
    return SimpleNamespace(path=path, tokenizer=tokenizer, data=data, seen=seen_piece_ids(tokenizer, data),
                           model=AutoModelForTokenClassification.from_pretrained(path).eval())


def small_cnn(**kw) -> CNNTagger:
    torch.manual_seed(0)
    cfg = dict(vocab_size=40, num_labels=5, embedding_dim=8, hidden_dim=6, pad_id=1, iterations=2) | kw
    return CNNTagger(CNNConfig(**cfg))


def random_batch(lengths=(9, 3, 6), vocab=40, pad_id=1):
    g = torch.Generator().manual_seed(0)
    T = max(lengths)
    ids = torch.randint(2, vocab, (len(lengths), T), generator=g)
    am = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()  # (B, T)
    return ids.masked_fill(am == 0, pad_id), am


def test_registered_under_its_file_name():
    assert "cnn" in registry.names() and registry.get("cnn") is CNNTagger
    assert registry.arch_of(small_cnn()) == "cnn"
    assert registry.get("cnn").describe({"embedding_dim": 50, "hidden_dim": 200, "num_layers": 2}) == \
        "E=50, H=200, dilated block x2"


def test_config_checks():
    for bad in (dict(kernel_size=2), dict(dilations=()), dict(dilations=(1, 0)), dict(iterations=0),
                dict(dropout=1.0), dict(vocab_size=5, pad_id=5), dict(embedding_init="x")):
        with pytest.raises(ValueError):
            CNNConfig(**bad)
    with pytest.raises(ValueError, match="build_student"):
        CNNTagger(CNNConfig())
    assert CNNConfig(dilations=[1, 2]).dilations == (1, 2)  # JSON gives lists back


@pytest.mark.parametrize("kernel_size,dilation", [(1, 1), (3, 1), (3, 4), (5, 2)])
def test_convolution_as_a_matrix_product_equals_conv1d(kernel_size, dilation):
    """`conv_last` (what the graph exports: shifted copies joined, one MatMul) gives Conv1d's
    numbers with Conv1d's weights, channels last."""
    from xdistil.students.cnn import _conv, conv_last

    torch.manual_seed(0)
    conv = _conv(5, 7, kernel_size, dilation)
    x = torch.randn(2, 11, 5)
    torch.testing.assert_close(conv_last(x, conv), conv(x.transpose(1, 2)).transpose(1, 2), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("extra", [{}, {"shape_dim": 3, "residual": True}])
def test_shapes_hidden_sizes_and_padding_invariance(extra):
    model = small_cnn(**extra).eval()
    if extra:
        model.piece_shape.copy_(torch.arange(40) % 17)  # build() fills it from the vocabulary
    ids, am = random_batch()
    out = model(ids, am, am)
    assert out.logits.shape == (3, 9, 5)
    assert tuple(h.shape[-1] for h in out.hidden_states) == model.hidden_sizes == (8 + extra.get("shape_dim", 0), 6, 6)
    assert (out.hidden_states[-1][am == 0] == 0).all()
    for b, n in enumerate((9, 3, 6)):  # a sentence alone scores as it does in a padded batch
        alone = model(ids[b : b + 1, :n], am[b : b + 1, :n], am[b : b + 1, :n]).logits[0]
        torch.testing.assert_close(alone, out.logits[b, :n], atol=1e-6, rtol=1e-5)


def test_receptive_field_grows_with_iterations():
    """One block of kernel 3, dilations 1-2-4 after the input conv reaches 8 pieces either side."""
    for iterations, reach in ((1, 8), (2, 15)):
        model = small_cnn(iterations=iterations, dropout=0.0).eval()
        ids, am = random_batch(lengths=(40,))
        base = model(ids, am, am).logits[0]
        ids2 = ids.clone()
        ids2[0, 20] = 3 if ids[0, 20] != 3 else 4
        changed = (model(ids2, am, am).logits[0] - base).abs().sum(-1) > 0  # (T,)
        where = changed.nonzero().flatten()
        assert where.min() == 20 - reach and where.max() == 20 + reach


def test_param_groups_and_gradients(teacher):
    model, tokenizer = build_student("cnn", teacher.model, teacher.tokenizer, teacher.seen, LABELS,
                                     CNNConfig(embedding_dim=16, hidden_dim=8))
    groups = model.param_groups()
    assert [name for name, _ in groups] == ["output", "encoder", "embeddings"]
    ids = [id(p) for _, ps in groups for p in ps]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    enc = tokenizer(teacher.data[:4], is_split_into_words=True, padding=True, return_tensors="pt")
    out = model.train()(enc["input_ids"], enc["attention_mask"], enc["attention_mask"])
    (out.word_logits.logsumexp(-1).sum() + sum(h.pow(2).mean() for h in out.hidden_states)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    E, H, C, V = 16, 8, len(LABELS), len(tokenizer)
    assert model.vocab_size == V < len(teacher.tokenizer)
    assert count_parameters(model).total == V * E + (E * H * 3 + H) + 3 * (H * H * 3 + H) + H * C + C
    assert (model.embeddings.weight[tokenizer.pad_token_id] == 0).all()  # SVD init, pad row zero


def test_save_load_round_trip_gives_identical_outputs(teacher, tmp_path):
    model, tokenizer = build_student("cnn", teacher.model, teacher.tokenizer, teacher.seen, LABELS,
                                     CNNConfig(embedding_dim=16, hidden_dim=8, iterations=2, dilations=(1, 3)))
    model.eval()
    save_student(model, tokenizer, tmp_path / "s", extra={"stage": "x"})
    meta = json.loads((tmp_path / "s/xdistil_student.json").read_text())
    assert meta["arch"] == "cnn" and meta["config"]["dilations"] == [1, 3] and meta["labels"] == LABELS
    loaded, loaded_tok, labels, _ = load_student(tmp_path / "s")
    assert isinstance(loaded, CNNTagger) and loaded.config == model.config and labels == LABELS
    enc = loaded_tok(teacher.data[:5], is_split_into_words=True, padding=True, return_tensors="pt")
    args = (enc["input_ids"], enc["attention_mask"], enc["attention_mask"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(*args).logits, model(*args).logits, rtol=0, atol=0)


def test_onnx_export_parity(teacher, tmp_path):
    pytest.importorskip("onnxruntime")
    from xdistil_export.runtime import Predictor

    from xdistil.deployable import export_model

    torch.manual_seed(0)
    model, tokenizer = build_student("cnn", teacher.model, teacher.tokenizer, teacher.seen, LABELS,
                                     CNNConfig(embedding_dim=16, hidden_dim=8, iterations=2))
    src = save_student(model.eval(), tokenizer, tmp_path / "cnn", extra={"labels": LABELS, "max_length": 16})
    manifest = export_model(src, tmp_path / "onnx", parity_sentences=teacher.data[:12])
    assert manifest["kind"] == "cnn" and manifest["parity"]["max_abs_diff"] < 1e-4
    assert manifest["parity"]["windows"] > manifest["parity"]["sentences"]  # windowed sentences checked too
    tags = Predictor(tmp_path / "onnx", "fp32", threads=1).predict_words(teacher.data[:3])
    assert [len(t) for t in tags] == [len(s) for s in teacher.data[:3]]


def test_onnx_int8_export_quantizes_the_convolutions_and_agrees(teacher, tmp_path):
    """int8 (issue 35): the convolutions are exported as MatMuls, so dynamic quantization makes
    them integer products (MatMulInteger, not the slow ConvInteger), with the word shape and
    residual options on; the int8 tags agree with PyTorch on the parity words."""
    pytest.importorskip("onnxruntime")
    import onnx
    from xdistil_export.runtime import Predictor

    from xdistil.deployable import export_model

    torch.manual_seed(0)
    model, tokenizer = build_student("cnn", teacher.model, teacher.tokenizer, teacher.seen, LABELS,
                                     CNNConfig(embedding_dim=16, hidden_dim=16, iterations=2, shape_dim=4,
                                               residual=True))
    src = save_student(model.eval(), tokenizer, tmp_path / "cnn", extra={"labels": LABELS, "max_length": 16})
    manifest = export_model(src, tmp_path / "onnx", parity_sentences=teacher.data[:12], int8=True,
                            int8_min_agreement=0.9)  # a random model's tags are near-tied
    assert manifest["kind"] == "cnn" and "model_int8" in manifest["files"]
    ops = {n.op_type for n in onnx.load(str(tmp_path / "onnx" / manifest["files"]["model_int8"])).graph.node}
    assert "Conv" not in ops and "ConvInteger" not in ops, ops
    # input conv + 2 dilated convs (shared over the iterations, but each use is its own MatMul)
    # + the classifier: 1 + 2 * 3 + 1 integer products
    assert sum(n.op_type == "MatMulInteger" for n in onnx.load(str(tmp_path / "onnx" / manifest["files"]["model_int8"]))
               .graph.node) == 8, ops
    assert manifest["int8"]["parity"]["min_agreement"] >= 0.9
    tags = Predictor(tmp_path / "onnx", "int8", threads=1).predict_words(teacher.data[:3])
    assert [len(t) for t in tags] == [len(s) for s in teacher.data[:3]]


def test_distils_through_the_normal_stages(tmp_path, teacher):
    """``student.arch: cnn`` in a run config: label a transfer set, run three stages (the
    last with the hidden loss), load the final student."""
    import xdistil.stages as stages
    from xdistil.config import RunConfig, from_dict
    from xdistil.labeling import label_transfer

    cfg = from_dict(RunConfig, {
        "data": {"languages": ["xx"], "labeled_budget": 60, "val_size": 20,
                 "files": synth_files(tmp_path / "data", n_train=100, n_dev=20, n_unlabeled=40)},
        "teacher": {"model": str(teacher.path), "max_length": 24},
        "transfer": {"layers": [2], "chunk_size": 50, "batch_size": 16},
        "student": {"arch": "cnn", "embedding_dim": 8, "hidden_dim": 8, "num_layers": 2, "max_length": 24,
                    "max_vocab": 120},
        "distill": {"stages": "staged", "match": {"teacher_layer": 2}, "max_steps_per_epoch": 2},
    })
    transfer = label_transfer(cfg, [teacher.path], tmp_path / "transfer", progress=False)
    dirs = stages.distill(cfg, transfer, teacher.path, tmp_path / "distill", progress=False)
    assert [d.name for d in dirs] == ["stage1-hard", "stage2-soft", "stage3-intermediate"]
    metrics = json.loads((tmp_path / "distill/metrics.json").read_text())
    assert metrics["stages"][2]["phases"][1]["groups"] == ["output", "projection"]  # hidden loss ran
    student, tokenizer, labels, meta = load_student(dirs[-1])
    assert isinstance(student, CNNTagger) and student.config.iterations == 2
    vocab = meta["vocab"]
    assert vocab["size"] == len(tokenizer) <= 120 and vocab["occurrences_kept"] < 1  # the cap dropped pieces
    assert vocab["languages"]["xx"]["student_unk_words"] == vocab["languages"]["xx"]["teacher_unk_words"]

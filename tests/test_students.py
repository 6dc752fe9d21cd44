"""Students: the registry, and the BiLSTM and small Transformer built from a tiny teacher, saved and loaded."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import pytest
import torch
from tiny import make_tiny_teacher, tiny_sentences
from transformers import AutoModelForTokenClassification, AutoTokenizer

from xdistil import DEFAULT_LABELS
from xdistil.config import ConfigError, RunConfig, StudentConfig, from_dict, to_dict
from xdistil.students import (
    BiLSTMConfig,
    BiLSTMTagger,
    Student,
    TransformerStudentConfig,
    build_student,
    config_from,
    count_parameters,
    evenly_spaced_layers,
    is_student_dir,
    load_student,
    registry,
    save_student,
    svd_embeddings,
)
from xdistil.vocab import count_pieces, reduce_tokenizer, seen_piece_ids

LABELS = list(DEFAULT_LABELS)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = make_tiny_teacher(tmp_path_factory.mktemp("teacher"), num_layers=4)
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = tiny_sentences(40)
    return SimpleNamespace(
        path=path,
        tokenizer=tokenizer,
        model=AutoModelForTokenClassification.from_pretrained(path).eval(),
        data=data,
        seen=seen_piece_ids(tokenizer, data),
    )


def encode(tokenizer, sentences):
    """(input_ids, attention_mask, word_mask), right-padded; word_mask marks first sub-words."""
    enc = tokenizer(sentences, is_split_into_words=True, padding=True, return_tensors="pt")
    word_mask = torch.zeros_like(enc["input_ids"], dtype=torch.bool)
    for b in range(len(sentences)):
        previous = None
        for t, w in enumerate(enc.word_ids(b)):
            word_mask[b, t] = w is not None and w != previous
            previous = w
    return enc["input_ids"], enc["attention_mask"], word_mask


def small_bilstm(**kw) -> BiLSTMTagger:
    torch.manual_seed(0)
    cfg = dict(vocab_size=40, num_labels=5, embedding_dim=8, hidden_dim=6, pad_id=1) | kw
    return BiLSTMTagger(BiLSTMConfig(**cfg))


def random_batch(vocab=40, lengths=(7, 3, 5), pad_id=1):
    g = torch.Generator().manual_seed(0)
    T = max(lengths)
    ids = torch.randint(2, vocab, (len(lengths), T), generator=g)
    am = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(am == 0, pad_id), am


# ---------------------------------------------------------------- BiLSTM


def test_bilstm_config_checks():
    for bad in (
        dict(embedding_dim=0),
        dict(dropout=1.0),
        dict(vocab_size=5, pad_id=5),
        dict(embedding_init="x"),
    ):
        with pytest.raises(ValueError):
            BiLSTMConfig(**bad)
    with pytest.raises(ValueError, match="build_student"):
        BiLSTMTagger(BiLSTMConfig())  # vocab_size / num_labels still unset


def test_bilstm_shapes_and_hidden_sizes():
    model = small_bilstm(num_layers=2).eval()
    ids, am = random_batch()
    out = model(ids, am, am)
    assert out.logits.shape == (3, 7, 5)
    assert [h.shape[-1] for h in out.hidden_states] == [model.hidden_size(0), model.hidden_size(1)] == [8, 12]
    assert out.word_mask.dtype == torch.bool
    assert (out.hidden_states[1][am == 0] == 0).all()  # nothing computed at padding


def test_bilstm_sentence_alone_equals_sentence_in_padded_batch():
    model = small_bilstm(num_layers=2).eval()
    ids, am = random_batch(lengths=(7, 3, 5))
    batched = model(ids, am, am).logits
    for b, n in enumerate((7, 3, 5)):
        alone = model(ids[b : b + 1, :n], am[b : b + 1, :n], am[b : b + 1, :n]).logits[0]
        torch.testing.assert_close(alone, batched[b, :n], atol=1e-6, rtol=1e-5)


def test_bilstm_locked_dropout_shares_one_mask_over_a_sentences_positions():
    x = torch.ones(4, 9, 6)
    locked, plain = small_bilstm(locked_dropout=True, dropout=0.5).train(), small_bilstm(dropout=0.5).train()
    torch.manual_seed(1)
    y = locked.drop(x)
    assert set(y.unique().tolist()) <= {0.0, 2.0} and 0 < (y == 0).float().mean() < 1  # rate 0.5, rescaled
    assert torch.equal(y, y[:, :1].expand_as(y))  # every position of a sentence has its mask
    assert not torch.equal(y[0], y[1])  # sentences have their own (2^-54 odds of a false alarm)
    z = locked.drop(x, 0.0)
    assert torch.equal(z, x)
    torch.manual_seed(1)
    e = plain.drop(x)  # off, an element mask, the very numbers nn.Dropout draws
    torch.manual_seed(1)
    assert torch.equal(e, torch.nn.Dropout(0.5)(x)) and not torch.equal(e, e[:, :1].expand_as(e))
    assert torch.equal(locked.eval().drop(x), x)  # off while tagging
    # the whole model trains with it (the dropout between two layers too)
    model = small_bilstm(locked_dropout=True, num_layers=2).train()
    ids, am = random_batch()
    model(ids, am, am).logits.sum().backward()
    assert model.lstm.weight_ih_l1.grad is not None


def test_bilstm_per_direction_calls_match_the_packed_lstm_values_and_gradients():
    """The fast path (one oneDNN call per direction and layer, reversed within each length)
    computes what the packed nn.LSTM computes, gradients included (dropout off)."""
    torch.manual_seed(0)
    model = small_bilstm(num_layers=2, dropout=0.0).train()
    x = torch.randn(3, 7, 8)  # (B, T, E)
    am = torch.tensor([[1] * 7, [1] * 3 + [0] * 4, [1] * 5 + [0] * 2])
    grads = []
    for path in (model.packed, model.by_direction):
        model.zero_grad()
        h = path(x, am)
        (h * torch.linspace(-1, 1, h.shape[-1])).sum().backward()
        grads.append([p.grad.clone() for p in model.lstm.parameters()])
        assert (h[am == 0] == 0).all()
        if path == model.packed:
            ref = h.detach()
        else:
            torch.testing.assert_close(h.detach(), ref, atol=1e-6, rtol=1e-5)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_bilstm_onnx_export_keeps_padding_invariance(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = small_bilstm(num_layers=2).eval()

    class Logits(torch.nn.Module):
        def __init__(self, tagger):
            super().__init__()
            self.tagger = tagger

        def forward(self, input_ids, attention_mask):
            return self.tagger(input_ids, attention_mask, attention_mask).logits

    wrapper = Logits(model).eval()  # export restores the wrapper's mode: keep it eval
    axes = {0: "batch", 1: "seq"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            random_batch(lengths=(4, 2)),
            str(tmp_path / "bilstm.onnx"),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": axes},
        )
    session = ort.InferenceSession(str(tmp_path / "bilstm.onnx"))
    ids, am = random_batch(lengths=(7, 3, 5))  # another batch size and length than traced
    got = torch.from_numpy(session.run(None, {"input_ids": ids.numpy(), "attention_mask": am.numpy()})[0])
    with torch.no_grad():
        expected = wrapper(ids, am)
    torch.testing.assert_close(got[am.bool()], expected[am.bool()], atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- both students


def _students(teacher):
    bilstm, _ = build_student(
        "bilstm",
        teacher.model,
        teacher.tokenizer,
        teacher.seen,
        LABELS,
        BiLSTMConfig(embedding_dim=16, hidden_dim=8),
    )
    transformer, tokenizer = build_student(
        "transformer",
        teacher.model,
        teacher.tokenizer,
        teacher.seen,
        LABELS,
        TransformerStudentConfig(num_layers=2),
    )
    return {"bilstm": bilstm, "transformer": transformer}, tokenizer


@pytest.mark.parametrize("arch", ["bilstm", "transformer"])
def test_param_groups_cover_every_parameter_once(teacher, arch):
    model = _students(teacher)[0][arch]
    groups = model.param_groups()
    assert [name for name, _ in groups] == ["output", "encoder", "embeddings"]
    ids = [id(p) for _, params in groups for p in params]
    assert all(params for _, params in groups)
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("arch", ["bilstm", "transformer"])
def test_gradients_reach_every_parameter(teacher, arch):
    students, tokenizer = _students(teacher)
    model = students[arch].train()
    ids, am, wm = encode(tokenizer, teacher.data[:4])
    out = model(ids, am, wm)
    (out.word_logits.logsumexp(-1).sum() + sum(h[wm].pow(2).mean() for h in out.hidden_states)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_build_bilstm_student_reduces_vocabulary_and_zeroes_padding(teacher):
    model, tokenizer = build_student("bilstm", teacher.model, teacher.tokenizer, teacher.seen, LABELS)
    assert model.config.vocab_size == len(tokenizer) < len(teacher.tokenizer)
    assert model.config.num_labels == len(LABELS) and model.labels == tuple(LABELS)
    assert model.config.pad_id == tokenizer.pad_token_id
    assert model.config.embedding_dim == 50 and model.hidden_sizes == (50, 400)  # paper defaults
    assert (model.embeddings.weight[tokenizer.pad_token_id] == 0).all()


def test_svd_embeddings_keep_the_teacher_geometry(teacher):
    E = 12
    svd, tokenizer = build_student(
        "bilstm", teacher.model, teacher.tokenizer, teacher.seen, LABELS, BiLSTMConfig(embedding_dim=E)
    )
    rand, _ = build_student(
        "bilstm",
        teacher.model,
        teacher.tokenizer,
        teacher.seen,
        LABELS,
        BiLSTMConfig(embedding_dim=E, embedding_init="random"),
    )
    _, kept = reduce_tokenizer(teacher.tokenizer, teacher.seen)
    rows = teacher.model.get_input_embeddings().weight[kept].detach()
    rows = rows - rows.mean(0)
    keep = torch.arange(len(kept)) != tokenizer.pad_token_id  # the pad row is zeroed on purpose
    # Inner products equal those of the best rank-E approximation (Eckart-Young), up to the rescale.
    U, S, _ = torch.linalg.svd(rows, full_matrices=False)
    target = (U[:, :E] * S[:E])[keep]
    emb = svd.embeddings.weight.detach()[keep]
    gram, gram_target = emb @ emb.T, target @ target.T
    scale = (gram * gram_target).sum() / (gram_target * gram_target).sum()
    torch.testing.assert_close(gram, scale * gram_target, atol=1e-4 * gram.abs().max(), rtol=1e-3)
    assert svd.embeddings.weight.std().item() == pytest.approx(1.0, rel=0.05)

    def cosine_agreement(x):  # correlation of all pairwise cosines with the teacher's
        def cos(m):
            m = torch.nn.functional.normalize(m, dim=-1)
            return (m @ m.T)[torch.triu_indices(len(m), len(m), 1).unbind()]

        return torch.corrcoef(torch.stack([cos(x), cos(rows[keep])]))[0, 1].item()

    assert cosine_agreement(emb) > 0.6
    assert cosine_agreement(rand.embeddings.weight.detach()[keep]) < 0.2
    assert svd_embeddings(rows[:5, :3], 8)[:, 3:].abs().sum() == 0  # dim beyond the rank: zero columns


# ---------------------------------------------------------------- Transformer


def test_evenly_spaced_layers():
    assert evenly_spaced_layers(12, 4) == [2, 5, 8, 11]
    assert evenly_spaced_layers(12, 6) == [1, 3, 5, 7, 9, 11]
    assert evenly_spaced_layers(4, 2) == [1, 3]


def test_transformer_student_copies_the_chosen_teacher_layers(teacher):
    tagger, tokenizer = build_student(
        "transformer",
        teacher.model,
        teacher.tokenizer,
        teacher.seen,
        LABELS,
        TransformerStudentConfig(num_layers=2, teacher_layers=[0, 2]),
    )
    _, kept = reduce_tokenizer(teacher.tokenizer, teacher.seen)
    student, t = tagger.model, teacher.model
    assert type(student) is type(t) and student.config.num_hidden_layers == 2
    for s_layer, t_index in zip(student.bert.encoder.layer, [0, 2], strict=True):
        t_state = t.bert.encoder.layer[t_index].state_dict()
        for name, value in s_layer.state_dict().items():
            assert torch.equal(value, t_state[name]), name
    assert torch.equal(
        student.bert.embeddings.word_embeddings.weight, t.bert.embeddings.word_embeddings.weight[kept]
    )
    assert torch.equal(
        student.bert.embeddings.position_embeddings.weight, t.bert.embeddings.position_embeddings.weight
    )
    assert torch.equal(student.bert.embeddings.LayerNorm.weight, t.bert.embeddings.LayerNorm.weight)
    assert torch.equal(student.classifier.weight, t.classifier.weight)  # same tag set: head copied
    assert tagger.labels == tuple(LABELS) and tagger.hidden_sizes == (32, 32, 32)


@pytest.mark.parametrize("model_type", ["bert", "xlm-roberta"])
def test_full_depth_student_reproduces_the_teacher(tmp_path, model_type):
    path = make_tiny_teacher(tmp_path, num_layers=2, model_type=model_type)
    tok = AutoTokenizer.from_pretrained(path)
    t_model = AutoModelForTokenClassification.from_pretrained(path).eval()
    data = tiny_sentences(12)
    tagger, tokenizer = build_student(
        "transformer", t_model, tok, seen_piece_ids(tok, data), LABELS, TransformerStudentConfig(num_layers=2)
    )
    assert type(tagger.model) is type(t_model)
    ids, am, wm = encode(tokenizer, data)
    t_ids, t_am, t_wm = encode(tok, data)
    assert torch.equal(wm, t_wm)
    with torch.no_grad():
        out = tagger.eval()(ids, am, wm)
        expected = t_model(input_ids=t_ids, attention_mask=t_am, output_hidden_states=True)
    torch.testing.assert_close(out.logits[am.bool()], expected.logits[am.bool()])
    assert len(out.hidden_states) == 3


def test_transformer_widths(teacher):
    with pytest.raises(ValueError, match="cannot copy the teacher's 32-wide layers"):
        build_student("transformer", teacher.model, teacher.tokenizer, teacher.seen, LABELS,
                      TransformerStudentConfig(num_layers=2, hidden_size=16, teacher_layers=[0, 1]))
    # narrower than the teacher, init="teacher": the embeddings are the teacher's, projected
    narrow, tok = build_student("transformer", teacher.model, teacher.tokenizer, teacher.seen, LABELS,
                                TransformerStudentConfig(num_layers=2, hidden_size=16))
    kept = teacher.tokenizer.convert_tokens_to_ids(tok.convert_ids_to_tokens(list(range(len(tok)))))
    rows = teacher.model.get_input_embeddings().weight[kept].detach()
    centred = rows - rows.mean(0, keepdim=True)
    words = narrow.model.get_input_embeddings().weight.detach()
    assert words.shape == (len(kept), 16)
    gram = words.T @ words  # the principal coordinates: orthogonal columns, largest first
    assert torch.allclose(gram, torch.diag(torch.diagonal(gram)), atol=1e-3)
    assert (torch.diagonal(gram)[:-1] >= torch.diagonal(gram)[1:] - 1e-4).all()
    proj = torch.linalg.lstsq(centred, words).solution  # (32, 16): the one projection
    assert torch.allclose(centred @ proj, words, atol=1e-4)
    t_pos = teacher.model.base_model.embeddings.position_embeddings.weight.detach()
    s_pos = narrow.model.base_model.embeddings.position_embeddings.weight.detach()
    assert torch.allclose(s_pos, t_pos @ proj, atol=1e-4)  # positions mapped by the same projection
    tagger, tokenizer = build_student(
        "transformer",
        teacher.model,
        teacher.tokenizer,
        teacher.seen,
        LABELS,
        TransformerStudentConfig(num_layers=1, hidden_size=16, num_heads=2, init="random"),
    )
    ids, am, wm = encode(tokenizer, teacher.data[:2])
    out = tagger(ids, am, wm)
    assert out.logits.shape[-1] == len(LABELS) and out.hidden_states[-1].shape[
        -1
    ] == 16 == tagger.hidden_size(-1)
    assert tagger.config.intermediate_size == 32  # the teacher's 64, scaled with the width
    with pytest.raises(ValueError):
        TransformerStudentConfig(num_layers=2, teacher_layers=[1])


# ---------------------------------------------------------------- save / load


@pytest.mark.parametrize("arch", ["bilstm", "transformer"])
def test_save_load_round_trip(teacher, tmp_path, arch):
    students, _ = _students(teacher)
    model = students[arch].eval()
    tokenizer, _ = reduce_tokenizer(teacher.tokenizer, teacher.seen)
    out_dir = tmp_path / "student"
    save_student(model, tokenizer, out_dir, extra={"stage": "logits", "f1": 0.5})
    save_student(model, tokenizer, out_dir, extra={"stage": "hard", "f1": 0.7})  # overwrite in place
    assert is_student_dir(out_dir) and not is_student_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]  # no temporary folders left
    files = {p.name for p in out_dir.iterdir()}
    assert {"model.safetensors", "xdistil_student.json", "tokenizer.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)

    loaded, loaded_tok, labels, meta = load_student(out_dir)
    assert meta["arch"] == arch and meta["extra"] == {"stage": "hard", "f1": 0.7} and labels == LABELS
    assert not loaded.training
    ids, am, wm = encode(tokenizer, teacher.data[:3])
    assert torch.equal(encode(loaded_tok, teacher.data[:3])[0], ids)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, am, wm).logits, model(ids, am, wm).logits, rtol=0, atol=0)


def test_saved_transformer_student_loads_in_plain_transformers(teacher, tmp_path):
    from transformers import pipeline

    students, tokenizer = _students(teacher)
    tagger = students["transformer"].eval()
    save_student(tagger, tokenizer, tmp_path / "s")
    hf = AutoModelForTokenClassification.from_pretrained(tmp_path / "s").eval()
    assert type(hf) is type(tagger.model)
    ids, am, wm = encode(tokenizer, teacher.data[:2])
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids, attention_mask=am).logits, tagger(ids, am, wm).logits)
    ner = pipeline("token-classification", model=str(tmp_path / "s"))
    tags = ner(" ".join(teacher.data[0]))
    assert tags and {t["entity"] for t in tags} <= set(LABELS) - {"O"}


def test_count_parameters(teacher):
    tagger = _students(teacher)[0]["transformer"]
    manual = sum(p.numel() for p in tagger.parameters())
    counts = count_parameters(tagger)
    assert counts.total == counts.trainable == manual
    assert sum(b.numel() for b in tagger.buffers()) > 0  # position ids etc. exist but are not counted
    for p in dict(tagger.param_groups())["embeddings"]:
        p.requires_grad_(False)
    emb = sum(p.numel() for p in tagger.model.bert.embeddings.parameters())
    assert count_parameters(tagger) == (manual, manual - emb)
    bilstm = small_bilstm()
    assert count_parameters(bilstm).total == 40 * 8 + 2 * 4 * 6 * (8 + 6 + 2) + 12 * 5 + 5


# ---------------------------------------------------------------- the registry


def test_registry_lists_every_student_file():
    from pathlib import Path

    import xdistil.students as pkg

    files = sorted(p.stem for p in Path(pkg.__file__).parent.glob("*.py") if not p.stem.startswith("_"))
    assert registry.names() == [f for f in files if f != "registry"] == ["bilstm", "cnn", "transformer"]
    for arch in registry.names():
        cls = registry.get(arch)
        assert cls.arch == arch and isinstance(cls.describe(to_dict(StudentConfig(arch=arch))), str)
    with pytest.raises(ValueError, match="unknown student arch 'gru' \\(known: bilstm, cnn, transformer\\)"):
        registry.get("gru")
    with pytest.raises(TypeError, match="not a registered student"):
        registry.arch_of(torch.nn.Linear(2, 2))


def test_register_refuses_incomplete_or_duplicate_students():
    class Half(torch.nn.Module):
        def forward(self, input_ids, attention_mask, word_mask): ...

    with pytest.raises(TypeError, match="lacks config_from, build, save, load, describe"):
        registry.register("half")(Half)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("bilstm")(type("Other", (BiLSTMTagger,), {}))
    assert registry.get("bilstm") is BiLSTMTagger


def test_config_checks_the_arch_against_the_registry():
    with pytest.raises(ConfigError, match="student.arch: input should be 'bilstm', 'cnn' or 'transformer'"):
        from_dict(RunConfig, {"student": {"arch": "gru"}})
    for arch in registry.names():
        run = from_dict(RunConfig, {"student": {"arch": arch, "num_layers": 2}}).student
        assert isinstance(config_from(run), registry.get(arch).Config)
    assert config_from(StudentConfig(arch="bilstm", num_layers=2)).num_layers == 2


@pytest.mark.parametrize("arch", ["bilstm", "cnn", "transformer"])
def test_every_student_keeps_the_protocol(teacher, arch):
    cls = registry.get(arch)
    cfg = cls.config_from(StudentConfig(arch=arch, embedding_dim=12, hidden_dim=8, transformer_layers=2))
    model, tokenizer = build_student(arch, teacher.model, teacher.tokenizer, teacher.seen, LABELS, cfg)
    assert isinstance(model, Student) and registry.arch_of(model) == arch
    assert model.vocab_size == len(tokenizer) and model.labels == tuple(LABELS)
    ids, am, wm = encode(tokenizer, teacher.data[:3])
    with torch.no_grad():
        out = model.eval()(ids, am, wm)
    # hidden sizes are known without a forward pass, and they are right
    assert tuple(h.shape[-1] for h in out.hidden_states) == model.hidden_sizes
    with pytest.raises(TypeError, match=f"arch '{arch}' needs a {cls.Config.__name__}"):
        build_student(arch, teacher.model, teacher.tokenizer, teacher.seen, LABELS, object())


def test_the_vocabulary_report_travels_with_the_student(teacher, tmp_path):
    data = teacher.data + [["думи", "ράκο"]] * 3
    counts = count_pieces(teacher.tokenizer, data, ["a"] * len(teacher.data) + ["b"] * 3)
    cap = len(reduce_tokenizer(teacher.tokenizer, counts)[1]) - 10
    model, tokenizer = build_student("bilstm", teacher.model, teacher.tokenizer, counts, LABELS,
                                     BiLSTMConfig(embedding_dim=8, hidden_dim=4), max_vocab=cap)
    assert model.vocab_size == len(tokenizer) <= cap
    save_student(model, tokenizer, tmp_path / "s")
    meta = json.loads((tmp_path / "s/xdistil_student.json").read_text())
    vocab = meta["vocab"]
    assert vocab["max_vocab"] == cap and vocab["size"] == len(tokenizer) and set(vocab["languages"]) == {"a", "b"}
    assert {"teacher_pieces_per_word", "student_pieces_per_word"} <= set(vocab["languages"]["a"])
    loaded = load_student(tmp_path / "s")[0]
    save_student(loaded, tokenizer, tmp_path / "again")  # trained on and saved again: the report stays
    assert json.loads((tmp_path / "again/xdistil_student.json").read_text())["vocab"] == vocab
    plain, _ = build_student("bilstm", teacher.model, teacher.tokenizer, teacher.seen, LABELS)
    save_student(plain, tokenizer, tmp_path / "plain")  # bare seen ids: no report
    assert json.loads((tmp_path / "plain/xdistil_student.json").read_text())["vocab"] is None


def test_a_student_key_added_later_leaves_finished_students_alone(tmp_path):
    """transformer_width at its default is not in the distillation fingerprints (students built
    before the key existed keep their digest); set, it is, and changes the digest."""
    from xdistil.config import RunConfig, from_dict
    from xdistil.run import fingerprints

    plain = from_dict(RunConfig, {"student": {"arch": "transformer"}})
    narrow = from_dict(RunConfig, {"student": {"arch": "transformer", "transformer_width": 192}})
    assert "transformer_width" not in fingerprints.student_fields(plain.student)
    assert fingerprints.student_fields(narrow.student)["transformer_width"] == 192
    (tmp_path / "t").mkdir()
    specs = plain.distill.resolved_stages()
    a = fingerprints.stages(plain, specs, tmp_path / "t", [tmp_path / "t"])
    b = fingerprints.stages(narrow, specs, tmp_path / "t", [tmp_path / "t"])
    assert "transformer_width" not in a[0]["fields"]["student"]
    assert [x["digest"] for x in a] != [x["digest"] for x in b]


def test_a_bilstm_default_leaves_other_students_fingerprints_alone():
    """shape_dim became 16 by default: a BiLSTM's fingerprint holds it (the student changed), a
    Transformer's holds the keys it does not read at their old values whatever is set."""
    from xdistil.config import RunConfig, from_dict
    from xdistil.run import fingerprints

    lstm = fingerprints.student_fields(from_dict(RunConfig, {}).student)
    assert lstm["shape_dim"] == 16
    assert fingerprints.student_fields(from_dict(RunConfig, {"student": {"shape_dim": 0}}).student)["shape_dim"] == 0
    fields = [fingerprints.student_fields(from_dict(RunConfig, {"student": {"arch": "transformer", **extra}}).student)
              for extra in ({}, {"shape_dim": 0}, {"shape_dim": 8, "factor_dim": 4, "residual": True})]
    assert fields[0] == fields[1] == fields[2]
    assert fields[0]["shape_dim"] == 0 == fields[0]["factor_dim"] and "ngram_dim" not in fields[0]
    assert "residual" not in fields[0]
    # the CNN reads shape_dim and residual (issue 35), not the BiLSTM's factor_dim
    cnn = [fingerprints.student_fields(from_dict(RunConfig, {"student": {"arch": "cnn", **extra}}).student)
           for extra in ({}, {"factor_dim": 4}, {"shape_dim": 0}, {"residual": True})]
    assert cnn[0] == cnn[1] and cnn[0]["shape_dim"] == 16 and "residual" not in cnn[0]
    assert cnn[2]["shape_dim"] == 0 and cnn[3]["residual"] is True
    # locked_dropout: a BiLSTM's key only where it is on (students built before it keep their digests)
    assert "locked_dropout" not in lstm
    assert fingerprints.student_fields(from_dict(RunConfig, {"student": {"locked_dropout": True}}).student)[
        "locked_dropout"] is True
    assert "locked_dropout" not in fingerprints.student_fields(
        from_dict(RunConfig, {"student": {"arch": "cnn", "locked_dropout": True}}).student)

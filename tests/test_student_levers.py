"""Issue 23's student levers (student.factor_dim, shape_dim, ngram_dim): shapes, initialisation,
parameter groups, save / load, and ONNX export (fp32 and int8) matching torch with the graph's
inputs unchanged."""

from __future__ import annotations

import pytest
import torch
from synth import synth_sentences, write_conll
from tiny import make_tiny_teacher, make_wordpiece_tokenizer
from transformers import AutoModelForTokenClassification, AutoTokenizer

from xdistil import DEFAULT_LABELS
from xdistil.config import ConfigError, StudentConfig, from_dict
from xdistil.students import (
    BiLSTMConfig,
    BiLSTMTagger,
    build_student,
    config_from,
    load_student,
    save_student,
)
from xdistil.students.bilstm import N_SHAPES, NGRAMS_PER_PIECE
from xdistil.vocab import (
    SHAPES,
    piece_ngram_buckets,
    piece_ngrams,
    piece_shape,
    piece_shapes,
    piece_starts,
    seen_piece_ids,
)

LABELS = list(DEFAULT_LABELS)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    path = make_tiny_teacher(tmp_path_factory.mktemp("teacher"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    train = [w for w, _ in synth_sentences(80, 1)]
    return path, tokenizer, AutoModelForTokenClassification.from_pretrained(path).eval(), seen_piece_ids(tokenizer, train)


def _shape(piece: str, prefix: str = "") -> tuple[bool, str]:
    k = piece_shape(piece, prefix) - 1
    return bool(k // len(SHAPES)), SHAPES[k % len(SHAPES)]


def test_piece_shape_classes():
    assert _shape("\u2581Riga") == (True, "title")
    assert _shape("\u2581riga") == (True, "lower")
    assert _shape("\u2581NATO") == (True, "upper")
    assert _shape("\u2581McDonald") == (True, "mixed")
    assert _shape("\u2581\u0420\u0438\u0433\u0430") == (True, "title")  # Cyrillic has case
    assert _shape("\u2581\u6771\u4eac") == (True, "uncased")
    assert _shape("\u2581") == (True, "empty")
    assert _shape("1999") == (False, "digit")
    assert _shape(",") == (False, "punct")
    assert _shape("ga") == (False, "lower")
    # WordPiece: a piece without the prefix starts a word
    assert _shape("Riga", "##") == (True, "title") and _shape("##ga", "##") == (False, "lower")
    assert 1 + 2 * len(SHAPES) == N_SHAPES


def test_piece_shapes_cover_the_vocabulary_and_mark_specials(teacher):
    _, tokenizer, _, _ = teacher
    shapes = piece_shapes(tokenizer)
    assert len(shapes) == len(tokenizer)
    assert all(shapes[i] == 0 for i in tokenizer.all_special_ids)
    assert all(0 <= s < N_SHAPES for s in shapes) and len(set(shapes)) > 3
    wp = make_wordpiece_tokenizer()
    assert len(piece_shapes(wp)) == len(wp) and all(piece_shapes(wp)[i] == 0 for i in wp.all_special_ids)


def test_config_fields_reach_the_architecture_config():
    run = StudentConfig(factor_dim=16, shape_dim=8, ngram_dim=12, ngram_buckets=100)
    cfg = config_from(run)
    assert (cfg.factor_dim, cfg.shape_dim, cfg.ngram_dim, cfg.ngram_buckets) == (16, 8, 12, 100)
    default = config_from(StudentConfig())
    assert default.factor_dim == default.ngram_dim == 0  # off by default
    assert default.shape_dim == 16  # on by default since issue 23's sentence benchmark
    assert config_from(StudentConfig(shape_dim=0)).shape_dim == 0
    assert config_from(StudentConfig(locked_dropout=True)).locked_dropout and not default.locked_dropout
    with pytest.raises(ConfigError, match="shape_dim"):
        from_dict(StudentConfig, {"shape_dim": -1}, "student")
    with pytest.raises(ConfigError, match="ngram_buckets"):
        from_dict(StudentConfig, {"ngram_buckets": 0}, "student")
    with pytest.raises(ValueError):
        BiLSTMConfig(factor_dim=-1)


def test_shapes_parameters_and_groups():
    torch.manual_seed(0)
    base = dict(vocab_size=40, num_labels=5, embedding_dim=8, hidden_dim=6, pad_id=1)
    plain = BiLSTMTagger(BiLSTMConfig(**base))
    model = BiLSTMTagger(BiLSTMConfig(**base, factor_dim=3, shape_dim=4)).eval()
    ids = torch.randint(2, 40, (2, 5))
    am = torch.ones_like(ids)
    out = model(ids, am, am)
    assert out.logits.shape == (2, 5, 5)
    assert model.hidden_sizes == (12, 12) and out.hidden_states[0].shape[-1] == 12
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    lstm_growth = 2 * 4 * 6 * 4  # four more LSTM inputs per gate and direction
    assert n(model) - n(plain) == (40 * 3 + 3 * 8 - 40 * 8) + N_SHAPES * 4 + lstm_growth
    groups = dict(model.param_groups())
    ids_all = [id(p) for ps in groups.values() for p in ps]
    assert len(ids_all) == len(set(ids_all)) == len(list(model.parameters()))
    assert {id(p) for p in groups["embeddings"]} >= {id(model.projection.weight), id(model.shapes.weight)}
    assert "piece_shape" in model.state_dict() and "piece_shape" not in dict(model.named_parameters())


def test_factorized_table_starts_as_the_top_svd_directions(teacher):
    _, tokenizer, model, seen = teacher
    torch.manual_seed(0)
    full, _ = build_student("bilstm", model, tokenizer, seen, LABELS, BiLSTMConfig(embedding_dim=16, hidden_dim=8))
    fact, _ = build_student("bilstm", model, tokenizer, seen, LABELS,
                            BiLSTMConfig(embedding_dim=16, hidden_dim=8, factor_dim=6))
    assert fact.embeddings.weight.shape == (full.vocab_size, 6)
    projected = fact.projection(fact.embeddings.weight).detach()  # (V, 16)
    assert (projected[:, 6:] == 0).all()
    # the same top-6 principal coordinates (each table rescaled to unit std, so up to one factor)
    a, b = projected[:, :6], full.embeddings.weight.detach()[:, :6]
    ratio = (a * b).sum() / (b * b).sum()
    torch.testing.assert_close(a, ratio * b, atol=1e-4, rtol=1e-3)


def test_built_student_looks_up_shapes_and_round_trips(teacher, tmp_path):
    _, tokenizer, model, seen = teacher
    torch.manual_seed(0)
    student, tok = build_student("bilstm", model, tokenizer, seen, LABELS,
                                 BiLSTMConfig(embedding_dim=16, hidden_dim=8, shape_dim=4, factor_dim=8))
    assert student.piece_shape.tolist() == piece_shapes(tok)
    save_student(student.eval(), tok, tmp_path / "s")
    loaded, _, _, meta = load_student(tmp_path / "s")
    assert meta["config"]["shape_dim"] == 4 and meta["config"]["factor_dim"] == 8
    assert torch.equal(loaded.piece_shape, student.piece_shape)
    enc = tok([["Kari", "mone", "LATO"]], is_split_into_words=True, return_tensors="pt")
    am = enc["attention_mask"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(enc["input_ids"], am, am).logits, student(enc["input_ids"], am, am).logits,
                                   rtol=0, atol=0)


def test_levers_export_to_onnx_with_the_same_inputs_and_match_torch(teacher, tmp_path, one_thread):
    pytest.importorskip("onnxruntime")
    import onnx

    from xdistil.deployable import export_model

    _, tokenizer, model, seen = teacher
    torch.manual_seed(0)
    student, tok = build_student("bilstm", model, tokenizer, seen, LABELS,
                                 BiLSTMConfig(embedding_dim=16, hidden_dim=16, factor_dim=8, shape_dim=4,
                                              ngram_dim=4, ngram_buckets=64))
    folder = save_student(student.eval(), tok, tmp_path / "s", extra={"labels": LABELS, "max_length": 16})
    dev = write_conll(tmp_path / "dev.tsv", synth_sentences(30, 2))
    manifest = export_model(folder, tmp_path / "onnx", int8=True, dev_file=dev, int8_min_agreement=0.5)
    p = manifest["parity"]
    assert p["max_abs_diff"] <= p["tolerance"] and p["min_agreement"] == 1.0
    graph = onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph
    assert sorted(i.name for i in graph.input) == ["attention_mask", "input_ids"]  # no new runtime input
    assert manifest["dev"]["f1_int8"] is not None


def test_piece_trigrams_are_stable_hashes_of_the_pieces_text():
    grams = piece_ngram_buckets("\u2581Berlin", 1000)
    assert len(grams) == 5 and all(1 <= g <= 1000 for g in grams)  # <Be Ber erl rli lin
    assert grams == piece_ngram_buckets("Berlin", 1000, prefix="##")  # a WordPiece word start alike
    assert piece_ngram_buckets("lin", 1000) == [grams[-1]]  # a continuation has no start mark
    assert piece_ngram_buckets("\u2581", 1000) == piece_ngram_buckets("<", 1000)  # shorter than a trigram: one gram
    assert piece_ngram_buckets("aaaa", 1000) == piece_ngram_buckets("aaa", 1000)  # distinct grams only
    import zlib
    assert grams[0] == 1 + zlib.crc32(b"<Be") % 1000  # the same in every process


def test_every_piece_of_a_word_sees_the_words_trigrams(teacher):
    _, tokenizer, model, seen = teacher
    torch.manual_seed(0)
    student, tok = build_student("bilstm", model, tokenizer, seen, LABELS,
                                 BiLSTMConfig(embedding_dim=16, hidden_dim=8, ngram_dim=6, ngram_buckets=50))
    table = piece_ngrams(tok, 50, NGRAMS_PER_PIECE)
    assert student.piece_ngrams.tolist() == table and student.piece_start.tolist() == piece_starts(tok)
    assert not student.piece_start[tok.unk_token_id] and student.piece_start[tok.cls_token_id]
    assert all(not any(table[i]) for i in tok.all_special_ids)
    words = ["Karimonelato", "mo", "Karimonelato"]
    enc = tok([words], is_split_into_words=True, return_tensors="pt")
    word_ids = enc.word_ids(0)
    with torch.no_grad():
        feats = student.word_ngrams(enc["input_ids"])[0]  # (T, G)
    first = [t for t, w in enumerate(word_ids) if w == 0]
    assert len(first) > 1, "the test word must be cut into several pieces"
    for t in first:  # every piece of the word carries the word's mean, not its own piece's
        torch.testing.assert_close(feats[t], feats[first[0]])
    third = [t for t, w in enumerate(word_ids) if w == 2]
    torch.testing.assert_close(feats[third[0]], feats[first[0]])  # the same word, the same feature
    middle = [t for t, w in enumerate(word_ids) if w == 1]
    assert not torch.allclose(feats[middle[0]], feats[first[0]])
    specials = [t for t, w in enumerate(word_ids) if w is None]
    assert all(not feats[t].any() for t in specials)
    # the mean over all the trigrams of the word's pieces, by hand (the unknown piece has none)
    ids = enc["input_ids"][0]
    grams = [g for t in first for g in table[int(ids[t])] if g]
    assert tok.unk_token_id in ids[first].tolist() and grams
    torch.testing.assert_close(feats[first[0]], student.ngrams.weight[grams].mean(0).detach())
    # padding is a word of its own: a sentence gets the same scores alone and beside a longer one
    batch = tok([words, words + ["und", "Riga", "Berlin"]], is_split_into_words=True, padding=True,
                return_tensors="pt")
    am = batch["attention_mask"]
    student.eval()
    with torch.no_grad():
        alone = student(enc["input_ids"], enc["attention_mask"], enc["attention_mask"]).logits[0]
        padded = student(batch["input_ids"], am, am).logits[0, :alone.shape[0]]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_trigram_student_parameters():
    base = dict(vocab_size=40, num_labels=5, embedding_dim=8, hidden_dim=6, pad_id=1)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    grown = n(BiLSTMTagger(BiLSTMConfig(**base, ngram_dim=3, ngram_buckets=20))) - n(BiLSTMTagger(BiLSTMConfig(**base)))
    assert grown == 21 * 3 + 2 * 4 * 6 * 3  # the table (with its padding row) and three more LSTM inputs
    model = BiLSTMTagger(BiLSTMConfig(**base, ngram_dim=3, ngram_buckets=20))
    assert {id(p) for p in dict(model.param_groups())["embeddings"]} >= {id(model.ngrams.weight)}
    assert model.hidden_sizes[0] == 11

"""The torch-free runtime: imports without torch, tags every word of long texts, exact offsets, scores, valid IOB2, predict CLI."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from synth import synth_sentences, write_conll
from tiny import import_blocker, make_tiny_teacher, tiny_words
from xdistil_export import decode
from xdistil_export.runtime import Predictor, entities_from_tags, spans_from_tags
from xdistil_export.text import split_words, split_words_with_offsets

from xdistil.cli import main
from xdistil.data import readers
from xdistil.onnx_export import export_model
from xdistil.taggers import load_tagger, predict_tags

# Run first in a subprocess: any import of torch or transformers fails loudly.
BLOCK_TORCH = import_blocker("torch", "transformers", why="the runtime must not import it")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; a busy 2-core machine makes thread pools crawl
    root = tmp_path_factory.mktemp("runtime")
    teacher = make_tiny_teacher(root)  # random 2-layer BERT, windows of 128 pieces
    out = root / "teacher-onnx"
    export_model(teacher, out)
    yield teacher, out
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def predictor(export):
    return Predictor(export[1], threads=1)


def _text(n_words: int, seed: int) -> str:
    words = tiny_words(n_words, seed=seed)
    return " ".join(w + ("," if i % 7 == 3 else "") for i, w in enumerate(words))


def test_runtime_runs_with_torch_and_transformers_blocked(export, predictor, tmp_path):
    texts = [_text(12, 1), _text(40, 2), ""]
    (tmp_path / "in.txt").write_text("\n".join(texts[:2]) + "\n", encoding="utf-8")
    script = BLOCK_TORCH + textwrap.dedent(f"""
        import json
        from xdistil_export.runtime import Predictor
        from xdistil.cli import main

        p = Predictor({str(export[1])!r}, threads=1)
        result = {{"entities": p.predict({texts!r}), "tags": p.predict_words([["a", "b"], []])}}
        code = main(["predict", {str(export[1])!r}, {str(tmp_path / "in.txt")!r},
                     "--out", {str(tmp_path / "out.jsonl")!r}, "--threads", "1", "-q"])
        result["cli"] = code
        result["loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
        print(json.dumps(result))
    """)
    env = dict(os.environ, PYTHONPATH="")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["loaded"] == [] and got["cli"] == 0
    assert got["entities"] == predictor.predict(texts)
    assert got["tags"] == predictor.predict_words([["a", "b"], []])
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["entities"] for line in lines] == predictor.predict(texts[:2])


def test_long_text_every_word_is_tagged_as_in_training(export, predictor):
    text = _text(1000, 3)
    words = split_words(text)
    assert len(words) > 1000  # commas are words too
    tags = predictor.predict_words([words], batch_size=4)[0]
    assert len(tags) == len(words)
    # same windows and the same model as the PyTorch path
    assert tags == predict_tags(load_tagger(export[0]), [words], batch_size=4)[0]
    (annotated,) = predictor.annotate([text])
    assert annotated["words"] == words and annotated["tags"] == tags


def test_predictions_do_not_depend_on_batching(predictor):
    sents = [w for w, _ in synth_sentences(25, 4)] + [[], ["x"]]
    one = predictor.predict_words(sents, batch_size=1)
    assert predictor.predict_words(sents, batch_size=7) == one
    assert [len(t) for t in one] == [len(s) for s in sents]


def test_entity_offsets_slice_the_original_text(predictor):
    texts = [_text(30, s) + "  — «end»\tof text." for s in range(8)]
    found = 0
    for text, ents in zip(texts, predictor.predict(texts), strict=True):
        words, spans = split_words_with_offsets(text)
        for e in ents:
            assert text[e["start_char"] : e["end_char"]] == e["text"]
            # the Hugging Face pipeline's keys say the same thing
            assert (e["entity_group"], e["word"], e["start"], e["end"]) == (e["type"], e["text"], e["start_char"],
                                                                            e["end_char"])
            assert text[e["start"] : e["end"]] == e["word"] and 0 <= e["score"] <= 1
            assert e["start_char"] == spans[e["start_word"]][0] and e["end_char"] == spans[e["end_word"] - 1][1]
            assert e["type"] in ("PER", "LOC", "ORG")
            found += 1
    assert found > 0  # random weights still tag some entities


def test_pretokenized_input_offsets_point_into_the_joined_words(predictor):
    sents = [w for w, _ in synth_sentences(10, 5)]
    for words, ents in zip(sents, predictor.predict(sents), strict=True):
        joined = " ".join(words)
        for e in ents:
            assert joined[e["start_char"] : e["end_char"]] == e["text"] == " ".join(words[e["start_word"] : e["end_word"]])


def test_iob2_is_read_leniently():
    tags = ["I-PER", "I-PER", "O", "B-LOC", "I-ORG", "I-ORG", "B-PER", "B-PER", "I-PER", "O", "I-LOC"]
    assert spans_from_tags(tags) == [("PER", 0, 2), ("LOC", 3, 4), ("ORG", 4, 6), ("PER", 6, 7), ("PER", 7, 9),
                                     ("LOC", 10, 11)]
    text = "Ana  Lu went"
    words, offsets = split_words_with_offsets(text)
    (e,) = entities_from_tags(["B-PER", "I-PER", "O"], words, offsets, text)
    assert e == {"type": "PER", "text": "Ana  Lu", "start_word": 0, "end_word": 2, "start_char": 0, "end_char": 7,
                 "entity_group": "PER", "score": 1.0, "word": "Ana  Lu", "start": 0, "end": 7}
    (e,) = entities_from_tags(["O", "B-LOC", "I-LOC"], words, offsets, text, scores=[0.9, 0.5, 0.7])
    assert e["score"] == pytest.approx(0.6) and (e["start"], e["end"], e["word"]) == (5, 12, "Lu went")


def test_training_and_runtime_split_words_alike():
    assert readers.split_words is split_words
    text = "state-of-the-art U.S. 3.5 «Привет» ذهب أحمد."
    words, spans = split_words_with_offsets(text)
    assert words == split_words(text) and [text[a:b] for a, b in spans] == words


def test_predictor_input_errors(export, predictor, tmp_path):
    with pytest.raises(FileNotFoundError, match="not an export directory"):
        Predictor(tmp_path)
    with pytest.raises(FileNotFoundError, match="int8"):
        Predictor(export[1], precision="int8")
    with pytest.raises(ValueError, match="precision"):
        Predictor(export[1], precision="fp16")
    with pytest.raises(TypeError):
        predictor.predict(["a text", ["words"]])
    assert predictor.predict([]) == [] and predictor.predict([""]) == [[]]


def test_predict_cli_text_and_conll(export, predictor, tmp_path, capsys):
    texts = [_text(9, 6), "", _text(50, 7)]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(export[1]), str(src), "--out", str(out), "--batch-size", "2", "--threads", "1"]) == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in records] == texts  # one record per input line, blank ones included
    assert records == predictor.annotate(texts)

    sents = synth_sentences(6, 8)
    conll = write_conll(tmp_path / "in.conll", sents)
    assert main(["predict", str(export[1]), str(conll), "--format", "conll", "--output-format", "conll",
                 "--threads", "1", "-q"]) == 0
    blocks = capsys.readouterr().out.strip("\n").split("\n\n")
    rows = [[line.split("\t") for line in b.splitlines()] for b in blocks]
    words = [w for w, _ in sents]
    assert [[r[0] for r in b] for b in rows] == words
    assert [[r[1] for r in b] for b in rows] == predictor.predict_words(words)


# ---- decoding: scores and valid IOB2 --------------------------------------------------

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]


def _brute_force(logp: np.ndarray) -> tuple[float, list[int]]:
    best = (-np.inf, [])
    for path in itertools.product(range(logp.shape[1]), repeat=logp.shape[0]):
        if decode.is_valid(path, LABELS):
            best = max(best, (float(logp[np.arange(len(path)), path].sum()), list(path)))
    return best


def test_viterbi_finds_the_best_valid_path():
    rng = np.random.default_rng(0)
    fixed = 0
    for n in (1, 2, 3, 4):
        for _ in range(15):
            logits = rng.normal(size=(n, len(LABELS))) * 3
            logits[:, [2, 4, 6]] += 2  # make orphan I- tags likely
            logp = decode.log_softmax(logits)
            tags, probs = decode.decode(logits, LABELS)
            path = [LABELS.index(t) for t in tags]
            assert decode.is_valid(path, LABELS)
            best, _ = _brute_force(logp)
            assert logp[np.arange(n), path].sum() == pytest.approx(best)
            # each word's score is the softmax probability of the tag it got
            assert probs == pytest.approx(np.exp(logp[np.arange(n), path]).tolist())
            fixed += path != logp.argmax(-1).tolist()
    assert fixed > 10  # the argmax was often invalid, and decoding changed it


def test_argmax_is_kept_when_already_valid_and_unconstrained_is_argmax():
    logits = np.array([[0, 5, 0, 0, 0, 0, 0], [0, 0, 5, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0, 0.0]])
    assert decode.decode(logits, LABELS)[0] == ["B-PER", "I-PER", "O"]
    orphan = np.array([[5, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 5.0]])
    assert decode.decode(orphan, LABELS, constrained=False)[0] == ["O", "I-ORG"]
    assert decode.decode(orphan, LABELS)[0] in (["O", "O"], ["O", "B-ORG"], ["B-ORG", "I-ORG"])
    assert decode.decode(np.zeros((0, 7)), LABELS) == ([], [])


def test_scores_follow_the_logits_and_every_output_is_valid_iob2(predictor):
    sents = [w for w, _ in synth_sentences(40, 9)] + [tiny_words(300, seed=9)]
    logits = predictor.word_logits(sents)
    for words, lg, (tags, probs), ann in zip(sents, logits, predictor.tag_words(sents), predictor.annotate(sents),
                                             strict=True):
        assert ann["tags"] == tags and ann["scores"] == probs and len(probs) == len(words)
        assert decode.is_valid([predictor.labels.index(t) for t in tags], predictor.labels)
        softmax = np.exp(lg - lg.max(-1, keepdims=True))
        softmax /= softmax.sum(-1, keepdims=True)
        chosen = softmax[np.arange(len(tags)), [predictor.labels.index(t) for t in tags]]
        assert np.allclose(probs, chosen, atol=1e-6) and all(0 <= p <= 1 for p in probs)
        for e in ann["entities"]:
            assert e["score"] == pytest.approx(float(np.mean(probs[e["start_word"] : e["end_word"]])))


def test_predict_conll_output_passes_the_strict_reader(export, tmp_path):
    sents = synth_sentences(30, 10) + [(tiny_words(200, seed=10), ["O"] * 200)]
    conll = write_conll(tmp_path / "in.conll", sents)
    out = tmp_path / "out.conll"
    assert main(["predict", str(export[1]), str(conll), "--format", "conll", "--output-format", "conll",
                 "--out", str(out), "--threads", "1", "-q"]) == 0
    read = list(readers.read_conll(out, strict=True))  # raises on I-X after O / another type
    assert [s.words for s in read] == [w for w, _ in sents]


def test_evaluation_and_runtime_decode_alike(export, predictor):
    sents = [w for w, _ in synth_sentences(30, 11)]
    tagger = load_tagger(export[0])
    assert predict_tags(tagger, sents) == predictor.predict_words(sents)
    raw = predict_tags(tagger, sents, constrained=False)
    assert raw == [[predictor.labels[k] for k in lg.argmax(-1)] for lg in predictor.word_logits(sents)]


def test_batched_decoding_equals_one_sentence_at_a_time():
    rng = np.random.default_rng(1)
    sents = [rng.normal(size=(int(n), len(LABELS))) * 3 for n in rng.integers(0, 9, size=300)]
    together = decode.decode_all(sents, LABELS)
    assert together == [decode.decode(s, LABELS) for s in sents]
    for s, (tags, _) in zip(sents, together, strict=True):
        assert [LABELS[k] for k in decode.viterbi(decode.log_softmax(s), LABELS)] == tags


def test_predict_names_the_line_that_is_not_utf8(export, tmp_path, capsys):
    src = tmp_path / "bad.txt"
    src.write_bytes(b"fine text\r\nstill fine\nbad \xff byte\n")
    assert main(["predict", str(export[1]), str(src), "--threads", "1", "-q"]) == 2
    assert f"{src}:3: not UTF-8 text" in capsys.readouterr().err


def test_decoding_benchmark_on_an_export(export, tmp_path):
    from benchmarks import decoding

    dev = write_conll(tmp_path / "dev.tsv", synth_sentences(30, 12))
    assert decoding.main([str(export[1]), "--dev", f"xx={dev}", "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "decoding.json").read_text())
    row = result["languages"]["xx"]
    assert row["sentences"] == 30 and row["f1_change"] == pytest.approx(row["viterbi"]["f1"] - row["argmax"]["f1"])
    assert row["changed_sentences"] <= row["invalid_argmax_sentences"]  # only invalid paths can change

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
from xdistil.deployable import export_model
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


# ---- issue 24: line ends, tampered exports, zero-width joiners, load errors ------------------

EOLS = {"LF": "\n", "CRLF": "\r\n", "CR": "\r"}


@pytest.mark.parametrize("eol", EOLS)
@pytest.mark.parametrize("gz", [False, True])
def test_predict_tags_every_word_whatever_the_line_ends(export, predictor, tmp_path, capsys, eol, gz):
    """CR-only, CRLF and LF files (plain or gzipped), CoNLL and raw text: one tag per word."""
    import gzip

    sents = [w for w, _ in synth_sentences(5, 13)]
    nl = EOLS[eol]
    conll = "".join(nl.join(f"{w}\tO" for w in s) + nl + nl for s in sents)
    text = nl.join(" ".join(s) for s in sents) + nl
    for fmt, body, expect in (("conll", conll, sents), ("text", text, [split_words(" ".join(s)) for s in sents])):
        src = tmp_path / f"in.{fmt}{'.gz' if gz else ''}"
        data = ("\ufeff" + body).encode("utf-8")
        src.write_bytes(gzip.compress(data) if gz else data)
        assert main(["predict", str(export[1]), str(src), "--format", fmt, "--output-format", "conll", "-q",
                     "--threads", "1"]) == 0
        out = capsys.readouterr().out
        blocks = [b.splitlines() for b in out.strip("\n").split("\n\n")]
        assert [[line.split("\t")[0] for line in b] for b in blocks] == expect, (fmt, eol)
        assert [[line.split("\t")[1] for line in b] for b in blocks] == predictor.predict_words(expect)
        assert "\r" not in out


def test_runtime_cli_reads_cr_text_as_lines(export, predictor, tmp_path, capsys):
    from xdistil_export.cli import main as runtime_main

    texts = [_text(6, 21), _text(9, 22), "", _text(4, 23)]
    src = tmp_path / "cr.txt"
    src.write_bytes("\r".join(texts).encode("utf-8"))
    assert runtime_main(["predict", str(export[1]), "--precision", "fp32", str(src), "-q", "--threads", "1"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert records == predictor.annotate(texts)


def _tamper(export_dir, tmp_path, name):
    broken = tmp_path / name
    import shutil

    shutil.copytree(export_dir, broken)
    return broken


def test_tampered_exports_are_refused_at_load(export, tmp_path, capsys):
    manifest = json.loads((export[1] / "export_manifest.json").read_text())
    assert set(manifest["sha256"]) == {"model.onnx", "tokenizer.json"}
    # 200 flipped bytes inside the graph's weights: onnxruntime would still load and run it
    flipped = _tamper(export[1], tmp_path, "flipped")
    data = bytearray((flipped / "model.onnx").read_bytes())
    mid = len(data) // 2
    data[mid : mid + 200] = bytes(b ^ 0x55 for b in data[mid : mid + 200])
    (flipped / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.onnx: the file changed since export"):
        Predictor(flipped)
    # config.json's id2label disagreeing with the manifest (and so with what the graph was trained on)
    relabeled = _tamper(export[1], tmp_path, "relabeled")
    config = json.loads((relabeled / "config.json").read_text())
    config["id2label"]["1"], config["id2label"]["2"] = config["id2label"]["2"], config["id2label"]["1"]
    (relabeled / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json: id2label .* disagrees"):
        Predictor(relabeled)
    for broken in (flipped, relabeled):
        assert main(["predict", str(broken), "-q"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("xdistil: error: ") and len(err.splitlines()) == 1 and str(broken) in err


@pytest.mark.parametrize("what", ["no tokenizer", "bad tokenizer", "bad manifest", "manifest field", "bad graph"])
def test_damaged_exports_fail_in_one_line_naming_the_file(export, tmp_path, capsys, what):
    from xdistil_export.cli import main as runtime_main

    broken = _tamper(export[1], tmp_path, "broken")
    manifest = json.loads((broken / "export_manifest.json").read_text())
    manifest.pop("sha256")  # what an older export (or a hand-made folder) has: nothing to compare with
    (broken / "export_manifest.json").write_text(json.dumps(manifest))
    culprit = {"no tokenizer": "tokenizer.json", "bad tokenizer": "tokenizer.json", "bad manifest":
               "export_manifest.json", "manifest field": "export_manifest.json", "bad graph": "model.onnx"}[what]
    if what == "no tokenizer":
        (broken / "tokenizer.json").unlink()
    elif what == "bad tokenizer":
        (broken / "tokenizer.json").write_text('{"version": "1.0", "model": 3}')
    elif what == "bad manifest":
        (broken / "export_manifest.json").write_text('{"labels": ["O", ')
    elif what == "manifest field":
        (broken / "export_manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "specials"}))
    else:
        (broken / "model.onnx").write_bytes(b"not a graph" * 100)
    with pytest.raises((ValueError, FileNotFoundError), match=culprit.replace(".", r"\.")):
        Predictor(broken)
    for run, prog in ((main, "xdistil"), (runtime_main, "xdistil-runtime")):
        for cmd in (["predict", str(broken), "-q"], ["serve", str(broken), "--port", "1"]):
            assert run(cmd) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"{prog}: error: ") and len(err.splitlines()) == 1, err
            assert str(broken / culprit) in err and "Traceback" not in err


def test_predict_input_mistakes_get_one_line(export, tmp_path, capsys):
    from xdistil_export.cli import main as runtime_main

    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    cases = [(tmp_path, "is a directory"), (tmp_path / "none.txt", "no such file"),
             (tmp_path / "bad.gz", "bad.gz:1: corrupt or truncated gzip data")]
    for run, prog in ((main, "xdistil"), (runtime_main, "xdistil-runtime")):
        for path, words in cases:
            assert run(["predict", str(export[1]), str(path), "-q"]) == 2
            err = capsys.readouterr().err
            assert err.startswith(f"{prog}: error: ") and words in err and len(err.splitlines()) == 1, err


def test_zero_width_joiners_stay_inside_a_word(predictor):
    persian = "می\u200cخواهم"  # "I want": one word written with a zero-width non-joiner
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one emoji: man ZWJ woman ZWJ girl
    flag, thumbs = "\U0001f1e9\U0001f1ea", "\U0001f44d\U0001f3fd"  # regional indicators; a skin tone
    text = f"{persian} {family} {flag}{thumbs} a\u200db"
    assert split_words(text) == [persian, family, flag, thumbs, "a\u200db"]
    assert readers.split_words(text) == split_words(text)  # training cuts the same words
    (record,) = predictor.annotate([text])
    assert record["words"] == [persian, family, flag, thumbs, "a\u200db"] and len(record["tags"]) == 5


def test_batch_encoding_equals_the_reference_windows(export, predictor):
    """`encode_sentences` (one encode_batch, flat arrays, a word cache) = `encode_windows` per sentence."""
    from xdistil_export.windows import encode_sentences, encode_windows, word_pieces

    many = [w for w, _ in synth_sentences(60, 14)] + [tiny_words(400, seed=14), [], ["x" * 600], ["\x00"],
                                                       ["a", "\u200b", "b"], [], tiny_words(126, seed=15)]
    tok, unk = predictor.tokenizer, predictor.unk_id
    cache: dict = {}
    few = [["x" * 300, "a"], [], ["\x00", "b"], tiny_words(20, seed=17)]  # under SMALL_WORDS: the per-sentence path
    for (max_pieces, cls_id, sep_id), sents in itertools.product(
            ((predictor.max_pieces, predictor.cls_id, predictor.sep_id), (7, 0, None), (3, None, None), (126, 0, 2)),
            (many, few)):
        for _ in range(2):  # cold, then from the cache
            wb = encode_sentences(tok, sents, max_pieces, cls_id, sep_id, unk, cache=cache)
            ref = [(i, ew) for i, s in enumerate(sents)
                   for ew in encode_windows(word_pieces(tok, s, unk), max_pieces, cls_id, sep_id)]
            assert [wb.ids[a:b].tolist() for a, b in itertools.pairwise(wb.offsets)] == [ew.input_ids for _, ew in ref]
            assert wb.sent.tolist() == [i for i, _ in ref]
            kept = [ew.word_starts[ew.window.keep_start - ew.window.start : ew.window.keep_end - ew.window.start]
                    for _, ew in ref]
            assert wb.starts.tolist() == [p for k in kept for p in k]
            assert np.diff(wb.kept).tolist() == [len(k) for k in kept]
            assert wb.words.tolist() == list(range(sum(map(len, sents))))


def test_vectorised_entities_equal_the_per_sentence_reference(predictor):
    """Entities (spans, offsets, scores bit for bit) as `entities_from_tags` builds them, for
    pre-tokenized and raw input, including entities of 8+ words (numpy's pairwise sums)."""
    from xdistil_export.runtime import _segment_means

    rng = np.random.default_rng(3)
    x = rng.random(2000)
    starts = rng.integers(0, 1800, 400)
    ends = starts + rng.integers(1, 140, 400)
    means = [float(np.mean(x[s:e].tolist())) for s, e in zip(starts, ends, strict=True)]
    assert _segment_means(x, starts, ends).tolist() == means
    sents = [w for w, _ in synth_sentences(80, 16)] + [tiny_words(300, seed=16), []]
    for items in (sents, [" , ".join(s) for s in sents]):
        for r in predictor.annotate(items, batch_size=4):
            offsets = split_words_with_offsets(r["text"])[1] if "text" in r else None
            assert r["entities"] == entities_from_tags(r["tags"], r["words"], offsets, r.get("text"), r["scores"])
    # tags read leniently, as spans_from_tags: an I- after O opens an entity, types never merge
    labels = predictor.labels
    tags = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG", "B-PER", "O", "I-PER"]
    from xdistil_export.runtime import _Spans

    path = np.array([labels.index(t) for t in tags])
    sp = _Spans(labels, path, np.linspace(0.1, 1, len(tags)), np.array([4, 0, 6]))
    got = [(sp.types[t], int(s), int(e)) for t, s, e in zip(sp.type, sp.start, sp.end, strict=True)]
    want = [(t, s, e) for t, s, e in spans_from_tags(tags[:4])] + [(t, s + 4, e + 4) for t, s, e in
                                                                    spans_from_tags(tags[4:])]
    assert got == want


def test_runtime_benchmark_runs_briefly(export, tmp_path, shared_data, monkeypatch):
    """benchmarks/runtime.py end to end on the tiny export: rows in summary.json's schema, results.md."""
    from benchmarks import runtime as bench

    monkeypatch.setattr(bench, "DE_DEV", shared_data / "wikiann" / "de" / "dev.tsv.gz")
    monkeypatch.setattr(bench, "FR_DEV", shared_data / "wikiann" / "fr" / "dev.tsv.gz")
    out = tmp_path / "out"
    assert bench.main(["bench", str(export[1]), "--out", str(out), "--sentences", "6", "--repeats", "1",
                       "--no-spacy", "--no-sweeps", "--threads", "1"]) == 0
    rows = json.loads((out / "summary.json").read_text())["rows"]
    keys = {"model", "runtime", "precision", "input", "batch", "words_per_s", "sentences"}
    assert rows and all(set(r) == keys and r["runtime"] == "xdistil" and r["words_per_s"] > 0 for r in rows)
    assert {(r["input"], r["batch"]) for r in rows} == {(i, b) for i in ("words", "text") for b in (1, 32, 256)}
    md = (out / "results.md").read_text()
    assert "## Words per second" in md and "## Latency of one 20-word sentence" in md
    (out / "results.md").unlink()  # `render` makes the same page again from details.json
    assert bench.main(["render", str(out)]) == 0 and (out / "results.md").read_text() == md


def test_runtime_benchmark_cells_line(export, shared_data, monkeypatch, capsys):
    """`cells` (what `compare` runs in each version's process): the rows and the latency as one JSON line."""
    from benchmarks import runtime as bench

    monkeypatch.setattr(bench, "DE_DEV", shared_data / "wikiann" / "de" / "dev.tsv.gz")
    monkeypatch.setattr(bench, "FR_DEV", shared_data / "wikiann" / "fr" / "dev.tsv.gz")
    assert bench.main(["cells", str(export[1]), "--sentences", "4", "--threads", "1", "--batches", "1,32"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {(r["model"].rsplit("-", 1)[1], r["input"], r["batch"]) for r in got["rows"]} == \
        {(d, i, b) for d in ("de", "fr") for i in ("words", "text") for b in (1, 32)}
    assert 0 < got["latency"]["fp32_warm"]["p50_ms"] <= got["latency"]["fp32_warm"]["p95_ms"]

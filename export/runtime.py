"""Torch-free predictor over an export directory: onnxruntime + tokenizers + numpy.

An export directory (``xdistil export``) holds ``model.onnx`` (and ``model.int8.onnx``),
``tokenizer.json``, and ``export_manifest.json`` with the labels, the length limit and
the special-token ids. The ONNX graph maps ``input_ids`` / ``attention_mask`` (B, T)
int64 to ``logits`` (B, T, C); the *word mask* (one position per word, its first
sub-word) is computed here, by the same windowing rule as training
(`xdistil_export.windows`): long texts are cut into overlapping windows and every word
is predicted by exactly one of them, so no word is ever dropped.

Nothing here imports torch, transformers or xdistil (tests/test_torchfree.py checks it).

Tags are decoded under the IOB2 transition rules (`xdistil_export.decode`: Viterbi over
the word log-probabilities), so every output is valid IOB2; every word carries the
probability of its tag and every entity the mean of its words' probabilities. Entities
carry the Hugging Face token-classification pipeline's keys (``entity_group``,
``score``, ``word``, ``start``, ``end``) beside xdistil's word spans. `spans_from_tags`
still reads tags leniently (an ``I-X`` after ``O`` starts an entity, seqeval's default),
for tags that come from elsewhere.

Speed (issue 25; benchmarks/runtime.py): one call works on all its sentences at once --
each distinct word tokenized once (`xdistil_export.windows.piece_table`, remembered across
calls), windows laid out as flat arrays, batches gathered and logits scattered with
numpy, one softmax and validity check for all words, entities found and scored with array
operations -- so the onnxruntime graph is most of the time. Outputs are those of the
per-sentence reference (`encode_windows`, `decode`, `entities_from_tags`) exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TypedDict

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer
from xdistil_export.decode import decode_flat
from xdistil_export.text import split_words_with_offsets
from xdistil_export.windows import WindowBatch, encode_sentences, ranges

MANIFEST = "export_manifest.json"
TOKENIZER = "tokenizer.json"
CACHE_WORDS = 200_000  # distinct words whose pieces a Predictor remembers (about 30 MB)
EXPORT_CONFIG = "config.json"  # id2label / label2id, written by xdistil.cards.write_export_config
MODEL_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}


class Entity(TypedDict):
    type: str
    text: str
    start_word: int  # index of the first word
    end_word: int  # one past the last word
    start_char: int  # character offsets into the text: text[start_char:end_char]
    end_char: int
    # the same entity under the Hugging Face pipeline's keys (aggregation_strategy="first")
    entity_group: str  # == type
    score: float  # mean probability of its words' tags, in [0, 1]
    word: str  # == text
    start: int  # == start_char
    end: int  # == end_char


def spans_from_tags(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """``(type, start, end)`` word spans (end exclusive) from IOB2 tags, read leniently (module doc)."""
    spans: list[tuple[str, int, int]] = []
    typ, start = None, 0
    for i, tag in enumerate(tags):
        prefix, _, t = tag.partition("-")
        continues = prefix == "I" and t == typ
        if typ is not None and not continues:
            spans.append((typ, start, i))
            typ = None
        if prefix in ("B", "I") and t and not continues:
            typ, start = t, i
    if typ is not None:
        spans.append((typ, start, len(tags)))
    return spans


def entities_from_tags(
    tags: Sequence[str], words: Sequence[str], offsets: Sequence[tuple[int, int]] | None = None,
    text: str | None = None, scores: Sequence[float] | None = None,
) -> list[Entity]:
    """Entities with word spans, character offsets and scores (mean of ``scores`` over the words).

    With ``text`` and ``offsets`` (raw input), character offsets point into ``text``. For
    pre-tokenized input they point into ``" ".join(words)``. Without ``scores`` every
    word counts as certain (score 1.0).
    """
    if offsets is None or text is None:
        text = " ".join(words)
        offsets, pos = [], 0
        for w in words:
            offsets.append((pos, pos + len(w)))
            pos += len(w) + 1
    out: list[Entity] = []
    for typ, s, e in spans_from_tags(tags):
        a, b = offsets[s][0], offsets[e - 1][1]
        score = 1.0 if scores is None else float(np.mean(scores[s:e]))
        out.append(Entity(type=typ, text=text[a:b], start_word=s, end_word=e, start_char=a, end_char=b,
                          entity_group=typ, score=score, word=text[a:b], start=a, end=b))
    return out


def _segment_means(x: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``np.mean(x[s:e])`` of every segment, bit for bit, without a numpy call per segment.

    numpy sums a float64 array of fewer than 8 numbers left to right and longer ones (up
    to 128) in 8 interleaved partial sums; both are replayed here on all segments of one
    length at once, so entity scores equal those of `entities_from_tags`.
    """
    n = ends - starts
    out = np.empty(len(starts), dtype=np.float64)
    for L in np.unique(n).tolist():
        sel = np.flatnonzero(n == L)
        if L > 128:  # never seen in practice: numpy recurses there
            out[sel] = [np.mean(x[s:e]) for s, e in zip(starts[sel], ends[sel], strict=True)]
            continue
        M = x[starts[sel, None] + np.arange(L)]  # (k, L)
        if L < 8:
            acc = M[:, 0].copy()
            for j in range(1, L):
                acc += M[:, j]
        else:
            r = M[:, :8].copy()  # (k, 8)
            tail = L - L % 8  # the blocks of 8, then the rest one by one
            for j in range(8, tail, 8):
                r += M[:, j : j + 8]
            acc = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7]))
            for j in range(tail, L):
                acc += M[:, j]
        out[sel] = acc / L
    return out


@lru_cache(maxsize=32)
def _label_kinds(labels: tuple[str, ...]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Entity types (sorted), each label's type index (-1: not an entity tag) and whether it is an I- tag."""
    parts = [lab.partition("-") for lab in labels]
    types = sorted({t for p, _, t in parts if p in ("B", "I") and t})
    type_id = np.array([types.index(t) if p in ("B", "I") and t else -1 for p, _, t in parts], np.int64)
    return types, type_id, np.array([p == "I" for p, _, _ in parts], bool)


class _Spans:
    """Entity spans of all sentences at once, read leniently as `spans_from_tags` reads them.

    ``path`` (N,) label indices of all words laid end to end, sentences of ``lengths`` words:
    ``start``/``end`` (E,) word indices into ``path``, ``type`` (E,) into ``types``,
    ``sent`` (E,) the sentence, ``score`` (E,) the mean of ``probs`` over the words.
    """

    def __init__(self, labels: Sequence[str], path: np.ndarray, probs: np.ndarray, lengths: np.ndarray):
        self.types, type_id, is_i = _label_kinds(tuple(labels))
        N = len(path)
        typ = type_id[path] if N else np.zeros(0, np.int64)  # (N,)
        ent = typ >= 0
        cont = np.zeros(N, bool)  # (N,): the word continues the entity of the word before it
        cont[1:] = is_i[path[1:]] & ent[1:] & (typ[1:] == typ[:-1])
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        cont[bounds[:-1][lengths > 0]] = False  # no entity crosses a sentence start
        self.start = np.flatnonzero(ent & ~cont)
        stops = np.append(np.flatnonzero(~cont), N)  # where an open entity closes
        self.end = stops[np.searchsorted(stops, self.start, side="right")]
        self.type = typ[self.start]
        self.sent = np.searchsorted(bounds, self.start, side="right") - 1
        self.score = _segment_means(probs, self.start, self.end)
        self.bounds = bounds


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (the digests an export's manifest records, checked at load)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_digests(folder: str | os.PathLike, files: dict) -> dict[str, str]:
    """``{file name: SHA-256}`` of the manifest's ``files`` present in ``folder`` (for `MANIFEST` ``sha256``)."""
    return {name: file_sha256(Path(folder) / name) for name in files.values() if name and (Path(folder) / name).is_file()}


class Predictor:
    """Tags words or raw texts with an exported model; thread-safe (one shared ORT session).

    ``precision``: "fp32" (``model.onnx``), "int8" (``model.int8.onnx``) or "auto" (int8
    when the export has it). ``threads``: onnxruntime intra-op threads (None = its default,
    one per physical core). int8 uses dynamic quantization, whose activation scale is taken
    over a whole batch: a word's int8 tags can differ with the other windows it is batched
    with (rarely; fp32 does not depend on the batch).

    Everything that could make a deployment answer wrongly is refused at load, in one line
    naming the file: a manifest that is not JSON or lacks a field, a missing or unreadable
    ``tokenizer.json``, a model or tokenizer file whose SHA-256 differs from the one the
    manifest recorded at export (bytes changed since), a ``config.json`` whose id2label
    disagrees with the manifest's labels, a graph that does not run or gives another
    number of labels.
    """

    def __init__(self, path: str | os.PathLike, precision: str = "fp32", threads: int | None = None):
        self.path = Path(path)
        manifest_file = self.path / MANIFEST
        if not manifest_file.is_file():
            raise FileNotFoundError(f"{self.path}: not an export directory (no {MANIFEST})")
        try:
            self.manifest: dict = json.loads(manifest_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"{manifest_file}: not valid JSON ({e}); re-export the model") from None
        try:
            files = self.manifest.get("files") or {}
            if precision == "auto":
                precision = "int8" if files.get("model_int8") else "fp32"
            if precision not in MODEL_FILES:
                raise ValueError(f"precision must be 'fp32', 'int8' or 'auto', got {precision!r}")
            model_file = files.get("model" if precision == "fp32" else "model_int8")
            self.labels: list[str] = [str(x) for x in self.manifest["labels"]]
            self.max_length = int(self.manifest["max_length"])
            self.kind: str = str(self.manifest.get("kind", ""))
            sp = self.manifest["specials"]
            self.cls_id, self.sep_id = sp.get("cls_id"), sp.get("sep_id")
            self.pad_id, self.unk_id = int(sp["pad_id"]), int(sp["unk_id"])
            tokenizer_name = str(files.get("tokenizer", TOKENIZER))
        except (KeyError, TypeError, AttributeError) as e:  # a field missing or of the wrong kind
            raise ValueError(f"{manifest_file}: missing or invalid field {e}; re-export the model") from None
        if not model_file or not (self.path / model_file).is_file():
            raise FileNotFoundError(f"{self.path}: no {precision} model (export with --int8 for one)")
        self.precision = precision
        self.max_pieces = self.max_length - (self.cls_id is not None) - (self.sep_id is not None)
        if self.max_pieces < 2:
            raise ValueError(f"{manifest_file}: max_length {self.max_length} leaves no room for words")
        tokenizer_file = self.path / tokenizer_name
        if not tokenizer_file.is_file():
            raise FileNotFoundError(f"{tokenizer_file}: no such file (the export's tokenizer); re-export the model")
        self._check_digests(model_file, tokenizer_name)
        self._check_config()
        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as e:  # tokenizers raises a bare Exception for unreadable or invalid JSON
            raise ValueError(f"{tokenizer_file}: not a valid tokenizers file ({e}); re-export the model") from None
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        opts = ort.SessionOptions()
        # measured on this graph (benchmarks/results/runtime): one thread per core, no
        # inter-op pool (the graph is a chain), sequential execution
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(
                str(self.path / model_file), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime's own types (InvalidProtobuf, Fail, ...)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{self.path / model_file}: onnxruntime cannot load it ({first})") from None
        self._label_array = np.array(self.labels, dtype=object)
        self._word_pieces: dict[str, list[int]] = {}  # word -> its sub-word ids (see `_encode`)
        self._check_graph()

    def _check_digests(self, model_file: str, tokenizer_file: str) -> None:
        """The files must be those exported: their SHA-256 against the manifest's (exports since
        the digests were added; older ones have none to check)."""
        digests = self.manifest.get("sha256")
        if not isinstance(digests, dict):
            return
        for name in (model_file, tokenizer_file):
            want = digests.get(name)
            if want is not None and file_sha256(self.path / name) != want:
                raise ValueError(f"{self.path / name}: the file changed since export (its SHA-256 differs from the "
                                 f"one in {MANIFEST}); re-export the model")

    def _check_config(self) -> None:
        """``config.json`` (for code that reads HF-style configs) must name the same labels."""
        config_file = self.path / EXPORT_CONFIG
        if not config_file.is_file():
            return
        try:
            id2label = json.loads(config_file.read_text(encoding="utf-8")).get("id2label")
        except (UnicodeDecodeError, ValueError, AttributeError) as e:
            raise ValueError(f"{config_file}: not valid JSON ({e}); re-export the model") from None
        if id2label is None:
            return
        try:
            named = [str(id2label[str(i)]) for i in range(len(id2label))]
        except (KeyError, TypeError):
            named = None
        if named != self.labels:
            raise ValueError(f"{config_file}: id2label {id2label} disagrees with the labels in {MANIFEST} "
                             f"({self.labels}); re-export the model")

    def _check_graph(self) -> None:
        """Fail at load time, not per request, when the graph and the manifest's labels disagree."""
        ids = [i for i in (self.cls_id, self.unk_id, self.sep_id) if i is not None]
        try:
            logits = self.run(np.array([ids], dtype=np.int64), np.ones((1, len(ids)), dtype=np.int64))
        except Exception as e:  # onnxruntime raises its own types for wrong inputs / ids
            raise ValueError(f"{self.path}: the ONNX graph does not run on a 1-word input: {e}") from None
        if logits.ndim != 3 or logits.shape[-1] != len(self.labels):
            raise ValueError(f"{self.path}: the graph gives logits of shape {list(logits.shape)} but "
                             f"{MANIFEST} lists {len(self.labels)} labels")

    def __repr__(self) -> str:
        return f"Predictor({str(self.path)!r}, precision={self.precision!r}, kind={self.kind!r})"

    # ---- words -> logits -> tags -----------------------------------------------------

    def clear_cache(self) -> None:
        """Forget the words encoded so far (benchmarks time a cold start with it)."""
        self._word_pieces = {}

    def _encode(self, sentences: Sequence[Sequence[str]]) -> WindowBatch:
        """Windows of all sentences. Each distinct word is tokenized once and remembered (up
        to `CACHE_WORDS` words, then the memory starts over): text repeats its words, and a
        word's pieces do not depend on its neighbours (`xdistil_export.windows.piece_table`)."""
        if len(self._word_pieces) > CACHE_WORDS:
            self._word_pieces = {}
        try:
            return encode_sentences(self.tokenizer, sentences, self.max_pieces, self.cls_id, self.sep_id, self.unk_id,
                                    cache=self._word_pieces)
        except TypeError:  # the Rust tokenizer refuses strings it cannot encode as UTF-8
            for i, words in enumerate(sentences):
                bad = next((w for w in words if isinstance(w, str) and not _utf8(w)), None)
                if bad is not None:
                    raise ValueError(f"item {i}: not valid Unicode text (lone surrogate in {bad!r})") from None
            raise

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """The raw graph: (B, T) int64 ids and mask -> (B, T, C) float32 logits."""
        return self.session.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask})[0]

    def _flat_logits(self, sentences: Sequence[Sequence[str]], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, C) logits of every word (sentences end to end) and the sentence lengths (S,).

        All windows of the call are sorted by length (stable: ties keep the input order)
        and cut into batches of ``batch_size``: little padding, and the same batches
        whatever else the machine does, so int8 results repeat exactly.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
        out = np.zeros((int(lengths.sum()), len(self.labels)), dtype=np.float32)  # (N, C)
        if not len(out):
            return out, lengths
        wb = self._encode(sentences)
        win_len = wb.lengths  # (W,)
        kept_n = np.diff(wb.kept)  # (W,)
        order = np.argsort(win_len, kind="stable")
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            L = win_len[idx]  # (B,)
            filled = np.arange(int(L.max())) < L[:, None]  # (B, T), row-major = the windows one after another
            ids = np.full(filled.shape, self.pad_id, dtype=np.int64)  # (B, T)
            ids[filled] = wb.ids[ranges(wb.offsets[idx], L)]
            logits = self.run(ids, filled.astype(np.int64))  # (B, T, C)
            k = ranges(wb.kept[idx], kept_n[idx])  # the kept words of these windows
            out[wb.words[k]] = logits[np.repeat(np.arange(len(idx)), kept_n[idx]), wb.starts[k]]
        return out, lengths

    def word_logits(self, sentences: Sequence[Sequence[str]], batch_size: int = 32) -> list[np.ndarray]:
        """Per sentence, (n_words, C) logits of the first sub-word of every word.

        Windows of all sentences are sorted by length and batched (little padding), then
        scattered back, so the result follows the input order.
        """
        flat, lengths = self._flat_logits(sentences, batch_size)
        return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []

    def _decode(self, sentences, batch_size: int, constrained: bool = True):
        flat, lengths = self._flat_logits(sentences, batch_size)
        path, probs = decode_flat(flat, lengths, self.labels, constrained)
        return path, probs, lengths

    def tag_words(
        self, sentences: Sequence[Sequence[str]], batch_size: int = 32, constrained: bool = True
    ) -> list[tuple[list[str], list[float]]]:
        """Per sentence, ``(tags, probabilities)``: valid IOB2 tags (`xdistil_export.decode`)."""
        path, probs, lengths = self._decode(sentences, batch_size, constrained)
        tags, scores = self._label_array[path].tolist(), probs.tolist()
        bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
        return [(tags[lo:hi], scores[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]

    def predict_words(self, sentences: Sequence[Sequence[str]], batch_size: int = 32) -> list[list[str]]:
        """One IOB2 tag per word, per sentence."""
        return [tags for tags, _ in self.tag_words(sentences, batch_size)]

    # ---- texts -> entities -----------------------------------------------------------

    def annotate(self, items: Sequence[str] | Sequence[Sequence[str]], batch_size: int = 32) -> list[dict]:
        """Per item ``{"words", "tags", "scores", "entities"}`` (+ ``"text"`` first, for raw text).

        ``scores`` holds the probability of each word's tag.

        ``items`` are raw texts (split into words with `xdistil_export.text`) or
        pre-tokenized word lists; the two kinds cannot be mixed in one call.
        """
        kinds = {isinstance(x, str) for x in items}
        if len(kinds) > 1:
            raise TypeError("give either raw texts or word lists, not both")
        raw = kinds == {True}
        if raw:
            split = [split_words_with_offsets(t) for t in items]
            sentences = [words for words, _ in split]
        else:
            sentences = [list(x) for x in items]
            if not all(isinstance(w, str) for s in sentences for w in s):
                raise TypeError("word lists must hold strings")
        path, probs, lengths = self._decode(sentences, batch_size)
        tags, scores = self._label_array[path].tolist(), probs.tolist()
        sp = _Spans(self.labels, path, probs, lengths)
        bounds = sp.bounds.tolist()
        ents: list[list[Entity]] = [[] for _ in sentences]
        if len(sp.start):
            first = sp.bounds[sp.sent]  # (E,): the entity's sentence's first word
            s_word, e_word = (sp.start - first).tolist(), (sp.end - first).tolist()
            if raw:
                for i, s, e, t, sc in zip(sp.sent.tolist(), s_word, e_word, sp.type.tolist(), sp.score.tolist(),
                                          strict=True):
                    offsets = split[i][1]
                    a, b = offsets[s][0], offsets[e - 1][1]
                    text = items[i][a:b]
                    ents[i].append(_entity(sp.types[t], text, s, e, a, b, sc))
            else:
                # character offsets into " ".join(words): each word's start, from the word lengths
                flat_words = [w for s in sentences for w in s]
                wlen = np.fromiter(map(len, flat_words), dtype=np.int64, count=len(flat_words))
                pos = np.concatenate([[0], np.cumsum(wlen + 1)])  # (N + 1,)
                a_char = (pos[sp.start] - pos[first]).tolist()
                b_char = (pos[sp.end - 1] - pos[first] + wlen[sp.end - 1]).tolist()
                for i, s, e, t, sc, a, b in zip(sp.sent.tolist(), s_word, e_word, sp.type.tolist(),
                                                sp.score.tolist(), a_char, b_char, strict=True):
                    ents[i].append(_entity(sp.types[t], " ".join(sentences[i][s:e]), s, e, a, b, sc))
        out = []
        for i, words in enumerate(sentences):
            lo, hi = bounds[i], bounds[i + 1]
            if raw:
                out.append({"text": items[i], "words": words, "tags": tags[lo:hi], "scores": scores[lo:hi],
                            "entities": ents[i]})
            else:
                out.append({"words": words, "tags": tags[lo:hi], "scores": scores[lo:hi], "entities": ents[i]})
        return out

    def predict(self, texts: Sequence[str] | Sequence[Sequence[str]], batch_size: int = 32) -> list[list[Entity]]:
        """Entities of each raw text (or pre-tokenized word list), in input order."""
        return [a["entities"] for a in self.annotate(texts, batch_size)]


def _entity(typ: str, text: str, s: int, e: int, a: int, b: int, score: float) -> Entity:
    return Entity(type=typ, text=text, start_word=s, end_word=e, start_char=a, end_char=b,
                  entity_group=typ, score=score, word=text, start=a, end=b)

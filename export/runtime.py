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
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer
from xdistil_export.decode import decode_all
from xdistil_export.text import split_words_with_offsets
from xdistil_export.windows import encode_windows, word_pieces

MANIFEST = "export_manifest.json"
TOKENIZER = "tokenizer.json"
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


@dataclass(frozen=True)
class _Window:
    sent: int  # sentence index in the request
    input_ids: list[int]
    word_starts: list[int]  # first sub-word position of each kept word
    keep_start: int  # the kept words are keep_start .. keep_start + len(word_starts) - 1


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


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Predictor:
    """Tags words or raw texts with an exported model; thread-safe (one shared ORT session).

    ``precision``: "fp32" (``model.onnx``), "int8" (``model.int8.onnx``) or "auto" (int8
    when the export has it). ``threads``: onnxruntime intra-op threads (None = its default).
    """

    def __init__(self, path: str | os.PathLike, precision: str = "fp32", threads: int | None = None):
        self.path = Path(path)
        manifest_file = self.path / MANIFEST
        if not manifest_file.is_file():
            raise FileNotFoundError(f"{self.path}: not an export directory (no {MANIFEST})")
        self.manifest: dict = json.loads(manifest_file.read_text(encoding="utf-8"))
        files = self.manifest.get("files", {})
        if precision == "auto":
            precision = "int8" if files.get("model_int8") else "fp32"
        if precision not in MODEL_FILES:
            raise ValueError(f"precision must be 'fp32', 'int8' or 'auto', got {precision!r}")
        model_file = files.get("model" if precision == "fp32" else "model_int8")
        if not model_file or not (self.path / model_file).is_file():
            raise FileNotFoundError(f"{self.path}: no {precision} model (export with --int8 for one)")
        self.precision = precision
        self.labels: list[str] = list(self.manifest["labels"])
        self.max_length = int(self.manifest["max_length"])
        self.kind: str = self.manifest.get("kind", "")
        sp = self.manifest["specials"]
        self.cls_id, self.sep_id = sp.get("cls_id"), sp.get("sep_id")
        self.pad_id, self.unk_id = int(sp["pad_id"]), int(sp["unk_id"])
        self.max_pieces = self.max_length - (self.cls_id is not None) - (self.sep_id is not None)
        if self.max_pieces < 2:
            raise ValueError(f"max_length {self.max_length} leaves no room for words")
        self.tokenizer = Tokenizer.from_file(str(self.path / files.get("tokenizer", TOKENIZER)))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(self.path / model_file), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._check_graph()

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

    def _windows(self, sentences: Sequence[Sequence[str]]) -> list[_Window]:
        out = []
        for i, words in enumerate(sentences):
            try:
                pieces = word_pieces(self.tokenizer, list(words), self.unk_id)
            except TypeError:  # the Rust tokenizer refuses strings it cannot encode as UTF-8
                bad = next((w for w in words if isinstance(w, str) and not _utf8(w)), None)
                if bad is None:
                    raise
                raise ValueError(f"item {i}: not valid Unicode text (lone surrogate in {bad!r})") from None
            for ew in encode_windows(pieces, self.max_pieces, self.cls_id, self.sep_id):
                w = ew.window
                kept = ew.word_starts[w.keep_start - w.start : w.keep_end - w.start]
                out.append(_Window(i, ew.input_ids, kept, w.keep_start))
        return out

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """The raw graph: (B, T) int64 ids and mask -> (B, T, C) float32 logits."""
        return self.session.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask})[0]

    def word_logits(self, sentences: Sequence[Sequence[str]], batch_size: int = 32) -> list[np.ndarray]:
        """Per sentence, (n_words, C) logits of the first sub-word of every word.

        Windows of all sentences are sorted by length and batched (little padding), then
        scattered back, so the result follows the input order.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        C = len(self.labels)
        out = [np.zeros((len(words), C), dtype=np.float32) for words in sentences]
        windows = self._windows(sentences)
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
        for lo in range(0, len(order), batch_size):
            batch = [windows[i] for i in order[lo : lo + batch_size]]
            T = max(len(w.input_ids) for w in batch)
            ids = np.full((len(batch), T), self.pad_id, dtype=np.int64)  # (B, T)
            mask = np.zeros((len(batch), T), dtype=np.int64)  # (B, T)
            for b, w in enumerate(batch):
                ids[b, : len(w.input_ids)] = w.input_ids
                mask[b, : len(w.input_ids)] = 1
            logits = self.run(ids, mask)  # (B, T, C)
            for b, w in enumerate(batch):
                n = len(w.word_starts)
                out[w.sent][w.keep_start : w.keep_start + n] = logits[b, w.word_starts]
        return out

    def tag_words(
        self, sentences: Sequence[Sequence[str]], batch_size: int = 32, constrained: bool = True
    ) -> list[tuple[list[str], list[float]]]:
        """Per sentence, ``(tags, probabilities)``: valid IOB2 tags (`xdistil_export.decode`)."""
        return decode_all(self.word_logits(sentences, batch_size), self.labels, constrained)

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
        out = []
        for i, (words, (t, p)) in enumerate(zip(sentences, self.tag_words(sentences, batch_size), strict=True)):
            if raw:
                ents = entities_from_tags(t, words, split[i][1], items[i], p)
                out.append({"text": items[i], "words": words, "tags": t, "scores": p, "entities": ents})
            else:
                out.append({"words": words, "tags": t, "scores": p, "entities": entities_from_tags(t, words, scores=p)})
        return out

    def predict(self, texts: Sequence[str] | Sequence[Sequence[str]], batch_size: int = 32) -> list[list[Entity]]:
        """Entities of each raw text (or pre-tokenized word list), in input order."""
        return [a["entities"] for a in self.annotate(texts, batch_size)]

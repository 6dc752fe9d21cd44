"""Distillation batches from the labeled transfer set, built with array operations.

`TransferBatcher` turns rows of the labeled transfer set (`xdistil.labeling`) into a
`Batch`: the student's padded windows plus, for every scored word, its gold tag and each
teacher's hard tag, logits and hidden state. A row stores its per-word values flattened
(``t{k}_logits``: n_words x C, ``t{k}_h{L}``: n_words x H), so a batch is read as one Arrow
table whose list columns are one flat array plus row offsets; the scored words then pick
their rows with one fancy index per column (flat row = row offset + word), never a Python
loop over words, sentences' hidden states included. The sentences of a batch go through
the tokenizer in one ``encode_batch`` call (Rust); a sentence that fits one window (nearly
all) is windowed with array arithmetic; a longer one, or one with a word the tokenizer
turns into nothing, takes `WindowEncoder`'s own path, so every batch is exactly what the
word-by-word construction gives.

`TransferBatcher.iterate` builds the next batches in a background thread while the
model trains on the current one (Arrow, numpy and the tokenizer release the GIL).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch

from xdistil.data.align import WindowEncoder

IGNORE_INDEX = -100


@dataclass
class Batch:
    inputs: dict  # input_ids / attention_mask / word_mask (B, T)
    gold: torch.Tensor  # (N,) gold tag per scored word, -100 where none
    tags: torch.Tensor  # (K, N) teacher hard tags
    logits: torch.Tensor  # (K, N, C) teacher logits
    hidden: list[torch.Tensor]  # K tensors (N, D_k): the teacher layer the hidden loss targets

    def to(self, device) -> Batch:
        if torch.device(device).type == "cpu":
            return self
        return Batch({k: v.to(device) for k, v in self.inputs.items()}, self.gold.to(device), self.tags.to(device),
                     self.logits.to(device), [h.to(device) for h in self.hidden])


def _flat(table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, row offsets (R + 1,)) of a list column of an Arrow table."""
    import pyarrow.compute as pc

    col = table.column(name).combine_chunks()
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return col.flatten().to_numpy(zero_copy_only=False), offsets


class TransferBatcher:
    """Turns rows of the labeled transfer set into student windows + word-level targets."""

    def __init__(self, ds, tokenizer, max_length: int, teachers: list[int], n_labels: int, layer: int | None):
        """``teachers``: which of the set's teachers (column prefixes t0, t1, ...) to read."""
        self.enc = WindowEncoder(tokenizer, max_length)
        self.ids, self.K, self.C, self.layer = list(teachers), len(teachers), n_labels, layer
        self.val_index: list[int] = []
        base = ["words", "gold", *(f"t{k}_{c}" for k in self.ids for c in ("tags", "logits"))]
        self._rows = {False: ds.select_columns(base).with_format("arrow")}
        if layer is not None:
            self._rows[True] = ds.select_columns(base + [f"t{k}_h{layer}" for k in self.ids]).with_format("arrow")

    # ---- windows ---------------------------------------------------------------------------

    def _windows(self, words: list[list[str]]) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
        """Per window (sentences in order, each one's windows in order): its ids and the
        positions of its kept words' first pieces; and per window its sentence and first kept word."""
        sp, max_pieces = self.enc.specials, self.enc.max_pieces
        encs = self.enc.backend.encode_batch(words, is_pretokenized=True, add_special_tokens=False)
        n_tok = np.array([len(e.ids) for e in encs], np.int64)
        flat_ids = np.fromiter(chain.from_iterable(e.ids for e in encs), np.int64, int(n_tok.sum()))
        # word of every token (None -> NaN for a token of no word), made a word number in the batch
        wid = np.array(list(chain.from_iterable(e.word_ids for e in encs)), dtype=np.float64)
        n_words = np.array([len(w) for w in words], np.int64)
        word_off = np.concatenate([[0], np.cumsum(n_words)])
        tok_off = np.concatenate([[0], np.cumsum(n_tok)])
        tok_sent = np.repeat(np.arange(len(words)), n_tok)
        real = ~np.isnan(wid)
        counts = np.bincount(word_off[tok_sent[real]] + wid[real].astype(np.int64), minlength=int(word_off[-1]))

        def per_sentence(x: np.ndarray, off: np.ndarray) -> np.ndarray:  # sums of x within each sentence
            c = np.concatenate([[0], np.cumsum(x)])
            return c[off[1:]] - c[off[:-1]]

        # one window holds the whole sentence when every word has pieces and all of them fit
        simple = ((per_sentence(counts, word_off) <= max_pieces) & (per_sentence(counts == 0, word_off) == 0)
                  & (per_sentence(~real, tok_off) == 0))
        starts_all = np.concatenate([[0], np.cumsum(counts)])  # first piece of each word, batch-wide
        lead = int(sp.cls_id is not None)
        pre = [] if sp.cls_id is None else [sp.cls_id]
        post = [] if sp.sep_id is None else [sp.sep_id]
        ids, starts, sent, first = [], [], [], []
        for s in range(len(words)):
            if n_words[s] == 0:
                continue  # no word, no window (as WindowEncoder)
            if simple[s]:
                ids.append(np.concatenate([pre, flat_ids[tok_off[s] : tok_off[s + 1]], post]).astype(np.int64))
                lo, hi = word_off[s], word_off[s + 1]
                starts.append(lead + starts_all[lo:hi] - starts_all[lo])
                sent.append(s)
                first.append(0)
                continue
            for p in self.enc.encode([words[s]]):  # long sentence: the reference windowing
                ids.append(np.asarray(p.input_ids, np.int64))
                starts.append(np.asarray(p.word_starts, np.int64))
                sent.append(s)
                first.append(p.words.start)
        return ids, starts, np.array(sent, np.int64), np.array(first, np.int64)

    @staticmethod
    def _collate(ids: list[np.ndarray], starts: list[np.ndarray], pad_id: int) -> dict:
        lengths = np.array([len(x) for x in ids], np.int64)
        B, T = len(ids), int(lengths.max())
        filled = np.arange(T)[None, :] < lengths[:, None]  # (B, T), row-major = concatenation order
        input_ids = np.full((B, T), pad_id, np.int64)
        input_ids[filled] = np.concatenate(ids)
        n_kept = np.array([len(x) for x in starts], np.int64)
        word_mask = np.zeros((B, T), bool)
        word_mask[np.repeat(np.arange(B), n_kept), np.concatenate(starts)] = True
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(filled.astype(np.int64)),
                "word_mask": torch.from_numpy(word_mask)}

    # ---- batches ---------------------------------------------------------------------------

    def __call__(self, idx: Sequence[int], need_hidden: bool) -> Batch:
        if need_hidden and self.layer is None:
            raise ValueError("hidden states were asked for, but the batcher was built without a teacher layer")
        table = self._rows[bool(need_hidden)][list(idx)]
        words = table.column("words").to_pylist()
        ids, starts, win_sent, win_first = self._windows(words)
        inputs = self._collate(ids, starts, self.enc.specials.pad_id)
        # (sentence, word) of every scored word, in the row-major order of word_mask
        n_kept = np.array([len(x) for x in starts], np.int64)
        kept_off = np.concatenate([[0], np.cumsum(n_kept)])[:-1]
        sent = np.repeat(win_sent, n_kept)
        word = np.arange(int(n_kept.sum())) - np.repeat(kept_off, n_kept) + np.repeat(win_first, n_kept)
        gold_vals, gold_off = _flat(table, "gold")
        has_gold = (gold_off[1:] - gold_off[:-1])[sent] > 0
        gold = np.full(len(sent), IGNORE_INDEX, np.int64)
        gold[has_gold] = gold_vals[gold_off[sent[has_gold]] + word[has_gold]]
        _, word_off = _flat(table, "words")
        row = word_off[sent] + word  # flat word number of each scored word
        tags, logits, hidden = [], [], []
        for k in self.ids:
            tg, _ = _flat(table, f"t{k}_tags")
            tags.append(torch.from_numpy(tg[row].astype(np.int64)))
            lg, _ = _flat(table, f"t{k}_logits")
            logits.append(torch.from_numpy(lg.reshape(-1, self.C)[row].astype(np.float32)))
            if need_hidden:
                h, _ = _flat(table, f"t{k}_h{self.layer}")
                hidden.append(torch.from_numpy(h.reshape(int(word_off[-1]), -1)[row].astype(np.float32)))
        return Batch(inputs, torch.from_numpy(gold), torch.stack(tags), torch.stack(logits), hidden)

    def iterate(self, batches: Sequence[Sequence[int]], need_hidden: bool, ahead: int = 2) -> Iterator[Batch]:
        """The batches of ``batches`` (lists of row numbers) in order, each built in a background
        thread while the caller trains on the ones before (at most ``ahead`` waiting)."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xdistil-batches")
        try:
            pending = deque()
            todo = iter(batches)
            for bi in todo:
                pending.append(pool.submit(self, bi, need_hidden))
                if len(pending) >= ahead:
                    break
            while pending:
                batch = pending.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(pool.submit(self, nxt, need_hidden))
                yield batch
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

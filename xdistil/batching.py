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

Prefetching: `TransferBatcher.plan` announces an epoch's batches; each call for a planned
batch then starts building the next ones in a background thread while the model trains on
the current one (Arrow, numpy and the tokenizer release the GIL). A training loop needs
no change beyond announcing the batches (``batches = batcher.plan(batches, need_hidden)``);
`TransferBatcher.iterate` does both for a plain loop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch

from xdistil.data.align import IGNORE_INDEX, WindowEncoder


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
        self.ahead = 2  # batches built in advance (see `plan`)
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[tuple, Future] = {}  # (rows, need_hidden) -> the batch being built
        self._plan: list[list[int]] = []
        self._plan_hidden, self._last, self._where = False, None, {}
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

    def build(self, idx: Sequence[int], need_hidden: bool) -> Batch:
        """The batch of rows ``idx`` (in that order), built now in the calling thread."""
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

    # ---- prefetching ----------------------------------------------------------------------

    def plan(self, batches: Sequence[Sequence[int]], need_hidden: bool) -> Sequence[Sequence[int]]:
        """Announce the batches about to be asked for, in order; returns ``batches`` unchanged.

        From then on, every call for a planned batch starts building the next planned ones
        (``ahead`` of them) in a background thread. A training loop that takes every n-th
        batch (one of n processes) gets every n-th one prefetched: the step between the
        last two calls is the stride."""
        for fut in self._pending.values():
            fut.cancel()
        self._pending.clear()
        self._plan = [list(b) for b in batches]
        self._plan_hidden, self._last = bool(need_hidden), None
        self._where = {}
        for i, b in enumerate(self._plan):
            self._where.setdefault(tuple(b), i)
        return batches

    def __call__(self, idx: Sequence[int], need_hidden: bool) -> Batch:
        """The batch of rows ``idx``: prefetched when it was planned (`plan`), else built now."""
        key = (tuple(idx), bool(need_hidden))
        fut = self._pending.pop(key, None)
        batch = fut.result() if fut is not None else self.build(idx, need_hidden)
        j = self._where.get(key[0]) if key[1] == self._plan_hidden else None
        if j is not None:
            stride = j - self._last if self._last is not None and j > self._last else 1
            self._last = j
            for k in range(j + stride, min(j + stride * (self.ahead + 1), len(self._plan)), stride):
                nxt = (tuple(self._plan[k]), self._plan_hidden)
                if nxt not in self._pending:
                    if self._pool is None:
                        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xdistil-batches")
                    self._pending[nxt] = self._pool.submit(self.build, self._plan[k], self._plan_hidden)
            while len(self._pending) > 2 * self.ahead:  # planned batches that were skipped: drop the oldest
                self._pending.pop(next(iter(self._pending))).cancel()
        return batch

    def iterate(self, batches: Sequence[Sequence[int]], need_hidden: bool) -> Iterator[Batch]:
        """The batches of ``batches`` in order, each built in the background while the caller
        works on the ones before (`plan` + calls)."""
        self.plan(batches, need_hidden)
        for idx in batches:
            yield self(idx, need_hidden)

    def close(self) -> None:
        """Stop the background thread (it is started again when needed)."""
        for fut in self._pending.values():
            fut.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

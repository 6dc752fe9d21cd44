"""Words -> sub-word windows -> padded batches, with the standard NER alignment.

The first sub-word of each word carries its label; every other position gets -100
(ignored by the loss). Long sentences are windowed (``xdistil_export.windows``), so no
word is ever dropped: each word is scored in exactly one window (``word_mask``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from xdistil_export.windows import encode_windows, word_pieces

IGNORE_INDEX = -100
"""The Hugging Face "no label here" target: the loss leaves these positions out (the one definition)."""


@dataclass(frozen=True)
class Specials:
    cls_id: int | None
    sep_id: int | None
    pad_id: int
    unk_id: int

    @property
    def count(self) -> int:
        return (self.cls_id is not None) + (self.sep_id is not None)

    @classmethod
    def of(cls, tokenizer) -> Specials:
        cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        unk = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else pad
        return cls(cls_id, sep_id, pad, unk)


@dataclass
class Piece:
    """One window of one sentence, ready to batch."""

    sent: int  # sentence index
    input_ids: list[int]
    word_starts: list[int]  # first sub-word position of each *kept* word
    words: range  # indices (in the sentence) of the kept words


class WindowEncoder:
    """Turns word lists into windows for one tokenizer and length limit."""

    def __init__(self, tokenizer, max_length: int, overlap: int | None = None):
        self.backend = tokenizer.backend_tokenizer
        self.specials = Specials.of(tokenizer)
        self.max_pieces = max_length - self.specials.count
        if self.max_pieces < 2:
            raise ValueError(f"max_length {max_length} leaves no room for words")
        self.overlap = overlap

    def pieces(self, words: Sequence[str]) -> list[list[int]]:
        return word_pieces(self.backend, words, self.specials.unk_id)

    def encode(self, sentences: Sequence[Sequence[str]]) -> list[Piece]:
        out: list[Piece] = []
        sp = self.specials
        for i, words in enumerate(sentences):
            for ew in encode_windows(self.pieces(words), self.max_pieces, sp.cls_id, sp.sep_id, self.overlap):
                w = ew.window
                lo, hi = w.keep_start - w.start, w.keep_end - w.start
                out.append(Piece(i, ew.input_ids, ew.word_starts[lo:hi], range(w.keep_start, w.keep_end)))
        return out


def collate(pieces: Sequence[Piece], pad_id: int, word_labels: Sequence[Sequence[int]] | None = None) -> dict:
    """Pad windows into a batch.

    Returns input_ids/attention_mask/word_mask (B, T) and, when ``word_labels`` (per
    sentence, one id per word) is given, ``labels`` (B, T) with -100 off the word starts.
    """
    T = max(len(p.input_ids) for p in pieces)
    B = len(pieces)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    att = torch.zeros((B, T), dtype=torch.long)
    wmask = torch.zeros((B, T), dtype=torch.bool)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long) if word_labels is not None else None
    for b, p in enumerate(pieces):
        n = len(p.input_ids)
        ids[b, :n] = torch.tensor(p.input_ids)
        att[b, :n] = 1
        starts = torch.tensor(p.word_starts, dtype=torch.long)
        wmask[b, starts] = True
        if labels is not None:
            labels[b, starts] = torch.tensor([word_labels[p.sent][w] for w in p.words], dtype=torch.long)
    batch = {"input_ids": ids, "attention_mask": att, "word_mask": wmask}
    if labels is not None:
        batch["labels"] = labels
    return batch


def shuffled_length_batches(indices, lengths, batch_size: int, seed: int) -> list[list[int]]:
    """Training batches: shuffle, sort inside chunks of 50 batches by length (less padding),
    then shuffle the batches. Deterministic for a seed, so a resumed epoch sees the same order."""
    rng = random.Random(seed)
    order = list(indices)
    rng.shuffle(order)
    chunk = batch_size * 50
    out = []
    for i in range(0, len(order), chunk):
        part = sorted(order[i : i + chunk], key=lambda j: lengths[j])
        out += [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
    rng.shuffle(out)
    return out


def length_batches(pieces: Sequence[Piece], batch_size: int) -> list[list[int]]:
    """Indices grouped by similar length (less padding) for inference; order is restored later."""
    order = sorted(range(len(pieces)), key=lambda i: len(pieces[i].input_ids))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

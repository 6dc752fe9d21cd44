"""Words -> sub-word windows, shared by training, labeling, evaluation and the runtime.

Real sentences can be longer than a model's position limit. Instead of truncating
(which silently drops words), a sentence is cut into overlapping windows of whole
words; every word is *kept* (predicted) by exactly one window, the one in which it
sits farthest from an edge. A single word with more pieces than fit in a window is
cut to its first pieces: its first sub-word, which carries the label, always stays.

Pure Python + ``tokenizers``: no torch, so the ONNX runtime uses the very same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """Words [start, end) are encoded; words [keep_start, keep_end) are predicted here."""

    start: int
    end: int
    keep_start: int
    keep_end: int


@dataclass(frozen=True)
class EncodedWindow:
    window: Window
    input_ids: list[int]  # with the special tokens
    word_starts: list[int]  # position of the first sub-word of words start..end-1


def plan_windows(piece_counts: Sequence[int], max_pieces: int, overlap: int | None = None) -> list[Window]:
    """Cover all words with windows of at most ``max_pieces`` pieces (specials excluded).

    ``overlap`` is the number of pieces consecutive windows share (default a quarter of
    the window); the keep boundary sits in the middle of the overlap, so every kept word
    has context on both sides. The keep ranges partition ``range(len(piece_counts))``.
    """
    if max_pieces < 1:
        raise ValueError(f"max_pieces must be >= 1, got {max_pieces}")
    n = len(piece_counts)
    if n == 0:
        return []
    overlap = max_pieces // 4 if overlap is None else overlap
    counts = [min(max(int(c), 1), max_pieces) for c in piece_counts]
    spans: list[tuple[int, int]] = []
    start = 0
    while True:
        end, total = start, 0
        while end < n and total + counts[end] <= max_pieces:
            total += counts[end]
            end += 1
        spans.append((start, end))
        if end >= n:
            break
        nxt, shared = end, 0
        while nxt - 1 > start and shared + counts[nxt - 1] <= overlap:
            nxt -= 1
            shared += counts[nxt]
        start = nxt
    windows = []
    keep_start = 0
    for i, (s, e) in enumerate(spans):
        if i + 1 < len(spans):
            keep_end = max(keep_start, (spans[i + 1][0] + e) // 2)
        else:
            keep_end = n
        windows.append(Window(s, e, keep_start, keep_end))
        keep_start = keep_end
    return windows


def word_pieces(tokenizer, words: Sequence[str], unk_id: int) -> list[list[int]]:
    """Sub-word ids of each word with a ``tokenizers.Tokenizer``; never an empty word.

    A word the tokenizer turns into nothing (e.g. a lone control character) gets the
    unknown id, so that it still has a first sub-word and gets a prediction.
    """
    if not words:
        return []
    enc = tokenizer.encode(list(words), is_pretokenized=True, add_special_tokens=False)
    pieces: list[list[int]] = [[] for _ in words]
    for tok_id, w in zip(enc.ids, enc.word_ids, strict=True):
        if w is not None:
            pieces[w].append(tok_id)
    # SentencePiece tokenizers emit a bare "▁" piece before some words (e.g. digits or
    # punctuation); it is part of the word, kept so the model sees what it was trained on.
    return [p if p else [unk_id] for p in pieces]


def encode_windows(
    pieces: Sequence[Sequence[int]],
    max_pieces: int,
    cls_id: int | None,
    sep_id: int | None,
    overlap: int | None = None,
) -> list[EncodedWindow]:
    """Encode one sentence (pieces per word) into windows with special tokens around."""
    out = []
    for win in plan_windows([len(p) for p in pieces], max_pieces, overlap):
        ids: list[int] = [] if cls_id is None else [cls_id]
        starts = []
        for w in range(win.start, win.end):
            starts.append(len(ids))
            ids.extend(list(pieces[w])[:max_pieces])
        if sep_id is not None:
            ids.append(sep_id)
        out.append(EncodedWindow(win, ids, starts))
    return out

"""Words -> sub-word windows, shared by training, labeling, evaluation and the runtime.

Real sentences can be longer than a model's position limit. Instead of truncating
(which silently drops words), a sentence is cut into overlapping windows of whole
words; every word is *kept* (predicted) by exactly one window, the one in which it
sits farthest from an edge. A single word with more pieces than fit in a window is
cut to its first pieces: its first sub-word, which carries the label, always stays.

Pure Python + ``tokenizers`` + numpy: no torch, so the ONNX runtime uses the very same rule.
`encode_sentences` does the same for many sentences at once (one ``encode_batch`` call,
flat arrays); `encode_windows` per sentence stays the reference it must equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np


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


@dataclass(frozen=True)
class WindowBatch:
    """The windows of many sentences as flat arrays: sentences in order, each one's windows in order.

    Window ``w`` is ``ids[offsets[w]:offsets[w + 1]]`` (special tokens included) of sentence
    ``sent[w]``; it keeps (predicts) the words ``words[kept[w]:kept[w + 1]]`` (indices into
    all sentences' words laid end to end), whose first pieces sit at
    ``starts[kept[w]:kept[w + 1]]`` in the window. Every word is kept by exactly one window,
    and in order, so ``words`` is ``arange`` over all words.
    """

    ids: np.ndarray  # (P,) int64
    offsets: np.ndarray  # (W + 1,) int64
    sent: np.ndarray  # (W,) int64
    starts: np.ndarray  # (N,) int64: position of each kept word's first piece in its window
    words: np.ndarray  # (N,) int64
    kept: np.ndarray  # (W + 1,) int64

    @property
    def lengths(self) -> np.ndarray:  # (W,) pieces per window, specials included
        return np.diff(self.offsets)


def _cumsum0(x: np.ndarray) -> np.ndarray:
    """``[0, x0, x0 + x1, ...]`` as int64 (exclusive prefix sums plus the total)."""
    out = np.zeros(len(x) + 1, dtype=np.int64)
    np.cumsum(x, out=out[1:])
    return out


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + c) for s, c in zip(starts, counts)])``, without the loop."""
    total = int(counts.sum())
    return np.repeat(starts - _cumsum0(counts)[:-1], counts) + np.arange(total, dtype=np.int64)


CHUNK_WORDS = 512  # distinct words per tokenizer sequence in `piece_table`
SMALL_WORDS = 256  # `encode_sentences` up to this many words: per sentence, as `encode_windows`


def piece_table(tokenizer, words: Sequence[str], cache: dict | None = None) -> list[list[int]]:
    """Sub-word ids of many words at once, one list per word (shared between equal words: do not change them).

    Each distinct word is encoded once, the words not in ``cache`` as pre-tokenized sequences
    of `CHUNK_WORDS` words (one ``encode`` call, or one parallel ``encode_batch`` for more),
    and split by the encoding's word ids. That equals encoding each word inside its own
    sentence: ``tokenizers`` normalizes, pre-tokenizes and tokenizes every word of a
    pre-tokenized input on its own. Pieces of no word (``word_ids`` None) are dropped, as
    `word_pieces` drops them; a word may get none. ``cache`` (word -> ids) is read and
    filled; the caller bounds its size.
    """
    found: dict[str, list[int]] = {}
    missing = []
    for w in dict.fromkeys(words):
        ids = cache.get(w) if cache is not None else None
        if ids is None:
            missing.append(w)
        else:
            found[w] = ids
    if missing:
        chunks = [missing[i : i + CHUNK_WORDS] for i in range(0, len(missing), CHUNK_WORDS)]
        kw = {"is_pretokenized": True, "add_special_tokens": False}
        encs = tokenizer.encode_batch(chunks, **kw) if len(chunks) > 1 else [tokenizer.encode(chunks[0], **kw)]
        for chunk, e in zip(chunks, encs, strict=True):
            ids = e.ids
            wids = np.array([-1 if k is None else k for k in e.word_ids], dtype=np.int64)
            keep = wids >= 0
            if not keep.all():  # pieces of no word: dropped
                ids, wids = [i for i, k in zip(ids, keep.tolist(), strict=True) if k], wids[keep]
            bounds = np.searchsorted(wids, np.arange(len(chunk) + 1)).tolist()  # word ids ascend
            for k, w in enumerate(chunk):
                found[w] = ids[bounds[k] : bounds[k + 1]]
        if cache is not None:
            cache.update((w, found[w]) for w in missing)
    return [found[w] for w in words]


def encode_sentences(
    tokenizer,
    sentences: Sequence[Sequence[str]],
    max_pieces: int,
    cls_id: int | None,
    sep_id: int | None,
    unk_id: int,
    overlap: int | None = None,
    cache: dict | None = None,
) -> WindowBatch:
    """`word_pieces` + `encode_windows` for every sentence, the words encoded by `piece_table`.

    Equal to encoding each sentence on its own (tests/test_runtime.py): a sentence whose
    words all have pieces and fit in one window is laid out with array operations; any
    other one (longer than a window, a word without pieces) goes through `encode_windows`
    itself. A sentence without words has no window.
    """
    lead, n_special = int(cls_id is not None), int(cls_id is not None) + int(sep_id is not None)
    n_sent = len(sentences)
    per_word = piece_table(tokenizer, [w for s in sentences for w in s], cache)
    if len(per_word) <= SMALL_WORDS:  # a request of a few sentences: the reference, without array set-up costs
        return _from_windows(sentences, per_word, max_pieces, cls_id, sep_id, unk_id, overlap)
    n_words = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=n_sent)
    word_off = _cumsum0(n_words)
    N = int(word_off[-1])
    counts = np.fromiter(map(len, per_word), dtype=np.int64, count=N)
    flat_ids = np.fromiter(chain.from_iterable(per_word), dtype=np.int64, count=int(counts.sum()))
    piece_off = _cumsum0(counts)  # (N + 1,): word g's pieces are flat_ids[piece_off[g]:piece_off[g + 1]]
    n_tok = piece_off[word_off[1:]] - piece_off[word_off[:-1]]  # (S,) pieces per sentence
    per_sent = _cumsum0(counts == 0)
    no_piece = per_sent[word_off[1:]] - per_sent[word_off[:-1]]
    # one window holds the whole sentence when every word has pieces and all of them fit
    # (then plan_windows gives [0, n) and nothing is cut)
    simple = (n_tok <= max_pieces) & (no_piece == 0) & (n_words > 0)
    complex_ = np.flatnonzero(~simple & (n_words > 0))

    # the complex sentences' windows, by the reference rule
    extra: dict[int, list[EncodedWindow]] = {}
    for s in complex_.tolist():
        pieces = [flat_ids[piece_off[g] : piece_off[g + 1]].tolist() or [unk_id]
                  for g in range(word_off[s], word_off[s + 1])]
        extra[s] = encode_windows(pieces, max_pieces, cls_id, sep_id, overlap)

    n_win = simple.astype(np.int64)
    for s, ews in extra.items():
        n_win[s] = len(ews)
    win_off = _cumsum0(n_win)  # sentence s has windows win_off[s] .. win_off[s + 1] - 1
    W = int(win_off[-1])
    lengths = np.zeros(W, dtype=np.int64)
    kept_n = np.zeros(W, dtype=np.int64)
    first_win = win_off[:-1][simple]
    lengths[first_win] = n_tok[simple] + n_special
    kept_n[first_win] = n_words[simple]
    for s, ews in extra.items():
        for k, ew in enumerate(ews):
            lengths[win_off[s] + k] = len(ew.input_ids)
            kept_n[win_off[s] + k] = ew.window.keep_end - ew.window.keep_start
    offsets = _cumsum0(lengths)
    ids = np.zeros(int(offsets[-1]), dtype=np.int64)
    # simple windows: [cls] pieces [sep]
    starts_simple = offsets[first_win]
    if cls_id is not None:
        ids[starts_simple] = cls_id
    if sep_id is not None:
        ids[offsets[first_win + 1] - 1] = sep_id
    ids[ranges(starts_simple + lead, n_tok[simple])] = flat_ids[ranges(piece_off[word_off[:-1][simple]], n_tok[simple])]
    # first piece of each word inside its sentence (and so, after the lead special, in its window)
    starts = lead + piece_off[:-1] - np.repeat(piece_off[word_off[:-1]], n_words)
    for s, ews in extra.items():
        w0 = win_off[s]
        for k, ew in enumerate(ews):
            win = ew.window
            ids[offsets[w0 + k] : offsets[w0 + k + 1]] = ew.input_ids
            starts[word_off[s] + win.keep_start : word_off[s] + win.keep_end] = \
                ew.word_starts[win.keep_start - win.start : win.keep_end - win.start]
    sent = np.repeat(np.arange(n_sent, dtype=np.int64), n_win)
    return WindowBatch(ids, offsets, sent, starts, np.arange(N, dtype=np.int64), _cumsum0(kept_n))


def _from_windows(sentences, per_word, max_pieces, cls_id, sep_id, unk_id, overlap) -> WindowBatch:
    """`encode_sentences` for a few words: `encode_windows` per sentence, laid out as a `WindowBatch`."""
    ids: list[int] = []
    offsets, sent, starts, kept = [0], [], [], [0]
    g = 0
    for s, words in enumerate(sentences):
        pieces = [p or [unk_id] for p in per_word[g : g + len(words)]]
        g += len(words)
        for ew in encode_windows(pieces, max_pieces, cls_id, sep_id, overlap):
            win = ew.window
            ids += ew.input_ids
            offsets.append(len(ids))
            sent.append(s)
            starts += ew.word_starts[win.keep_start - win.start : win.keep_end - win.start]
            kept.append(len(starts))
    return WindowBatch(np.array(ids, dtype=np.int64), np.array(offsets, dtype=np.int64), np.array(sent, dtype=np.int64),
                       np.array(starts, dtype=np.int64), np.arange(g, dtype=np.int64), np.array(kept, dtype=np.int64))

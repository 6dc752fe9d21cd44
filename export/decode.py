"""Word logits -> IOB2 tags and their probabilities: Viterbi under the IOB2 transition rules.

Taking the argmax of every word separately can produce ``I-X`` after ``O`` or after
another type, which is not IOB2 (``xdistil data check --strict`` rejects it). Here the
tags of a sentence are the best path over the word log-probabilities under two rules:

- ``I-X`` may only follow ``B-X`` or ``I-X``;
- ``I-X`` may not open a sentence.

Every other tag (``O``, ``B-X``, any label without a ``B-``/``I-`` prefix) may follow
anything. When the argmax path already obeys the rules it *is* the best constrained
path, so Viterbi only runs on the (few) sentences that break them.

A word's score is the softmax probability of the tag it finally got, so scores are in
[0, 1] and follow the logits; an entity's score is the mean of its words' scores.

Pure numpy: the torch-free runtime and ``xdistil`` evaluation decode with this one module.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=32)
def transitions(labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(start_ok (C,), step_ok (C, C))`` booleans: may tag j open a sentence / follow tag i."""
    C = len(labels)
    start_ok = np.ones(C, dtype=bool)
    step_ok = np.ones((C, C), dtype=bool)
    for j, lab in enumerate(labels):
        if lab.startswith("I-"):
            start_ok[j] = False
            typ = lab[2:]
            step_ok[:, j] = [prev in (f"B-{typ}", f"I-{typ}") for prev in labels]
    return start_ok, step_ok


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def is_valid(path: Sequence[int], labels: Sequence[str]) -> bool:
    """Whether label indices ``path`` obey the IOB2 rules (module doc)."""
    start_ok, step_ok = transitions(tuple(labels))
    if len(path) == 0:
        return True
    p = np.asarray(path)
    return bool(start_ok[p[0]] and step_ok[p[:-1], p[1:]].all())


def viterbi(log_probs: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Best label indices (N,) under the IOB2 rules for one sentence's (N, C) word log-probabilities."""
    return viterbi_batch(log_probs[None], np.array([len(log_probs)]), labels)[0]


def viterbi_batch(log_probs: np.ndarray, lengths: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """`viterbi` for S right-padded sentences at once: (S, T, C) log-probabilities -> (S, T) indices.

    Positions past a sentence's length are ignored (and 0 in the result).
    """
    start_ok, step_ok = transitions(tuple(labels))
    S, T, C = log_probs.shape
    path = np.zeros((S, T), dtype=np.int64)
    if T == 0:
        return path
    rows = np.arange(S)
    penalty = np.where(step_ok, 0.0, -np.inf)  # (C, C): -inf on a forbidden i -> j
    score = np.where(start_ok, log_probs[:, 0], -np.inf)  # (S, C)
    back = np.zeros((S, T, C), dtype=np.int64)  # (S, T, C): best previous tag
    for t in range(1, T):
        cand = score[:, :, None] + penalty  # (S, C prev, C next)
        back[:, t] = cand.argmax(1)
        active = (t < lengths)[:, None]  # (S, 1): sentences still running
        score = np.where(active, cand.max(1) + log_probs[:, t], score)
    cur = score.argmax(1)  # (S,): the best last tag of each sentence
    last = np.maximum(lengths - 1, 0)
    path[rows, last] = cur
    for t in range(T - 1, 0, -1):
        active = t < lengths
        cur = np.where(active, back[rows, t, cur], cur)
        path[:, t - 1] = np.where(active, cur, path[:, t - 1])
    return path


def decode(logits: np.ndarray, labels: Sequence[str], constrained: bool = True) -> tuple[list[str], list[float]]:
    """Tags and per-word probabilities for one sentence's (N, C) word logits.

    ``constrained=False`` is the plain per-word argmax (kept to measure the difference).
    """
    return decode_all([logits], labels, constrained)[0]


def decode_all(
    logits: Sequence[np.ndarray], labels: Sequence[str], constrained: bool = True
) -> list[tuple[list[str], list[float]]]:
    """`decode` for every sentence, vectorised over all of them (one softmax, one validity check).

    Only the sentences whose argmax path breaks the rules go through `viterbi`; the result
    equals ``[decode(lg, labels, constrained) for lg in logits]``.
    """
    C = len(labels)
    lengths = np.array([len(lg) for lg in logits], dtype=np.int64)
    if lengths.sum() == 0:
        return [([], []) for _ in logits]
    flat = np.concatenate([np.asarray(lg).reshape(-1, C) for lg in logits])  # (N, C)
    path, probs = decode_flat(flat, lengths, labels, constrained)
    tags = np.array(list(labels), dtype=object)[path].tolist()
    probs = probs.tolist()
    bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    return [(tags[lo:hi], probs[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def decode_flat(
    logits: np.ndarray, lengths: np.ndarray, labels: Sequence[str], constrained: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """`decode_all` on the words of all sentences in one array: (N, C) logits, sentence
    ``lengths`` (S,) summing to N -> label indices (N,) and their probabilities (N,) float64."""
    labels = list(labels)
    C = len(labels)
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(logits) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    logp = log_softmax(np.asarray(logits).reshape(-1, C))  # (N, C)
    path = logp.argmax(-1)  # (N,)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    if constrained:
        start_ok, step_ok = transitions(tuple(labels))
        bad = np.zeros(len(path), dtype=bool)  # (N,): the word's tag may not follow the previous one
        bad[1:] = ~step_ok[path[:-1], path[1:]]
        firsts = bounds[:-1][lengths > 0]
        bad[firsts] = ~start_ok[path[firsts]]  # a sentence's first word follows nothing
        n_bad = np.concatenate([[0], np.cumsum(bad)])  # (N + 1,): bad words before each position
        broken = np.flatnonzero(n_bad[bounds[1:]] > n_bad[bounds[:-1]])  # sentences with a bad word
        broken = broken[np.argsort(lengths[broken], kind="stable")]  # similar lengths together: little padding
        for k in range(0, len(broken), 256):
            group = broken[k : k + 256]
            T = int(lengths[group[-1]])
            padded = np.zeros((len(group), T, C))  # (S, T, C)
            for j, i in enumerate(group):
                padded[j, : lengths[i]] = logp[bounds[i] : bounds[i + 1]]
            best = viterbi_batch(padded, lengths[group], labels)  # (S, T)
            for j, i in enumerate(group):
                path[bounds[i] : bounds[i + 1]] = best[j, : lengths[i]]
    probs = np.exp(logp[np.arange(len(path)), path])
    return path, probs

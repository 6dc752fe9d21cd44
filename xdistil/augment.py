"""Augmentation of transfer sentences: more varied text for the teacher to label.

A student distilled on WikiANN's title-style fragments loses far more than its teacher on
news and web text (issue 17). These operations make the unlabeled transfer text look less
like WikiANN, cheaply and without tags (the teacher labels the result like any other
transfer text, so no tag has to be carried through):

- ``recase``: all lower, all upper or title case (users' text is not always well cased);
- ``drop_words``: word dropout (noisy, elliptic text; names without their usual context);
- ``swap_spans``: an entity swap between two sentences (a run of capitalised words for a run
  of capitalised words), or a context swap (a lower-case word for a lower-case word) when
  one of them has no capitalised run: names in contexts they were not seen in;
- ``code_mix``: two sentences of different languages joined into one.

`augment` applies them to a stream at the rates of `Augmentation` with one seeded
``random.Random``: the same seed, key and input give the same output, on any machine
(``random.Random`` seeded with a string hashes it with SHA-512, not Python's salted hash).
Every rate defaults to 0, which leaves the text untouched.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

CASES = ("lower", "upper", "title")


def recase(words: list[str], mode: str) -> list[str]:
    """The words all lower case, all upper case, or each capitalised (``title``)."""
    if mode == "lower":
        return [w.lower() for w in words]
    if mode == "upper":
        return [w.upper() for w in words]
    if mode == "title":  # not str.title(), which capitalises after apostrophes ("Don'T")
        return [w[:1].upper() + w[1:].lower() for w in words]
    raise ValueError(f"unknown case {mode!r} (use {', '.join(CASES)})")


def drop_words(words: list[str], rate: float, rng: random.Random) -> list[str]:
    """Each word dropped with probability ``rate``; a sentence never loses all its words."""
    if rate <= 0 or not words:
        return list(words)
    keep = [w for w in words if rng.random() >= rate]
    return keep or [words[rng.randrange(len(words))]]


def _capitalised(w: str) -> bool:
    return w[:1].isupper()


def _context(w: str) -> bool:
    return w.isalpha() and w.islower()


def capitalised_spans(words: list[str]) -> list[tuple[int, int]]:
    """[start, end) of every maximal run of capitalised words: cheap stand-ins for entities."""
    spans, start = [], None
    for i, w in enumerate([*words, ""]):
        if _capitalised(w) and start is None:
            start = i
        elif not _capitalised(w) and start is not None:
            spans.append((start, i))
            start = None
    return spans


def swap_spans(a: list[str], b: list[str], rng: random.Random) -> tuple[list[str], list[str]]:
    """One capitalised run of ``a`` and one of ``b`` trade places (an entity swap); when either
    has none, one lower-case word of each (a context swap); unchanged when neither works."""
    sa, sb = capitalised_spans(a), capitalised_spans(b)
    if sa and sb:
        (i, j), (k, m) = rng.choice(sa), rng.choice(sb)
        return a[:i] + b[k:m] + a[j:], b[:k] + a[i:j] + b[m:]
    ca, cb = [i for i, w in enumerate(a) if _context(w)], [i for i, w in enumerate(b) if _context(w)]
    if ca and cb:
        i, k = rng.choice(ca), rng.choice(cb)
        a2, b2 = list(a), list(b)
        a2[i], b2[k] = b[k], a[i]
        return a2, b2
    return list(a), list(b)


def code_mix(a: list[str], b: list[str]) -> list[str]:
    """A sentence followed by one of another language."""
    return [*a, *b]


@dataclass(frozen=True)
class Augmentation:
    """The rates of each operation (0: off) and the seed; ``TransferConfig.augment_*``."""

    case: float = 0.0
    dropout: float = 0.0
    swap: float = 0.0
    code_mix: float = 0.0
    seed: int = 13

    @classmethod
    def from_transfer(cls, tc) -> Augmentation:
        return cls(tc.augment_case, tc.augment_dropout, tc.augment_swap, tc.augment_code_mix, tc.augment_seed)

    @property
    def active(self) -> bool:
        return any((self.case, self.dropout, self.swap, self.code_mix))


def augment(items: Iterable[tuple[Any, list[str]]], aug: Augmentation, key: str = "",
            partner: Iterator[list[str]] | None = None) -> Iterator[tuple[Any, list[str], list[str]]]:
    """``(item, words)`` pairs in, ``(item, new words, names of the operations applied)`` out,
    one for one and in order.

    Consecutive pairs of sentences may swap spans (``aug.swap``: the share of pairs); then
    each sentence, in this order, may be joined with the next sentence of ``partner``
    (another language's text; ``aug.code_mix``), lose words (``aug.dropout`` per word) and
    be re-cased (``aug.case``). ``key`` (e.g. the language) seeds the stream together with
    ``aug.seed``, so two languages do not get the same choices."""
    rng = random.Random(f"{aug.seed}:{key}")
    it = iter(items)
    for first in it:
        second = next(it, None)
        pair = [first] if second is None else [first, second]
        words = [list(w) for _, w in pair]
        ops: list[list[str]] = [[] for _ in pair]
        if second is not None and aug.swap and rng.random() < aug.swap:
            swapped = swap_spans(words[0], words[1], rng)
            for i in (0, 1):
                if swapped[i] != words[i]:
                    words[i] = swapped[i]
                    ops[i].append("swap")
        for i, (item, _) in enumerate(pair):
            w = words[i]
            if partner is not None and aug.code_mix and rng.random() < aug.code_mix:
                other = next(partner, None)
                if other:
                    w = code_mix(w, list(other))
                    ops[i].append("mix")
            if aug.dropout:
                dropped = drop_words(w, aug.dropout, rng)
                if len(dropped) < len(w):
                    ops[i].append("drop")
                w = dropped
            if aug.case and rng.random() < aug.case:
                mode = rng.choice(CASES)
                cased = recase(w, mode)
                if cased != w:
                    ops[i].append(mode)
                w = cased
            yield item, w, ops[i]

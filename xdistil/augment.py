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

Entity-aware augmentation (``transfer.augment_entities`` = k; Dai & Adel, "An Analysis of
Simple Data Augmentation for Named Entity Recognition", COLING 2020, arXiv 2010.11683) needs
the teacher's tags, so it runs after the original sentences are labeled (`xdistil.labeling`)
and the teacher labels its variants again, like any transfer text. Over one language's
teacher tags (teacher 0), `EntityBank` gathers every distinct mention of each entity type
and every distinct word of each tag; each of k - 1 variants of a sentence
(`entity_variant`, rates `EntityRates`) then

- replaces each mention (B-X I-X*) with another mention of type X (p = 0.5);
- replaces each other word with another word of the same tag (p = 0.1);
- shuffles the words of each segment between mentions (O words, p = 0.3; mentions stay);

and a variant that came out unchanged gets one change where the sentence and the bank allow
any. `augment_entities` streams the variants, none equal to its original or to any sentence
seen before (`words_key`), each seeded by the seed, the language, the sentence's position and
the variant's number: a pure function of the labeled rows, so a resumed labeling makes the
same ones.

The bank remembers where each mention and word came from (its *origin*: the key of the first
sentence that held it, none for a sentence always trained on), and each variant says which
other sentences it took from: distillation holds some sentences out of training, and a
variant of a trained sentence must not carry their text into training.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
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


# ---- entity-aware augmentation, relabeled by the teacher ----------------------------------

def words_key(words: Sequence[str]) -> bytes:
    """A sentence's identity for de-duplication: 8 bytes of blake2b over its words."""
    return hashlib.blake2b("\x1f".join(words).encode("utf-8"), digest_size=8).digest()


def entity_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """[start, end) and type of every mention in IOB2 ``tags``: B-X I-X*. A stray I-X (after O
    or after another type, as an argmax may give) opens a mention too."""
    spans: list[tuple[int, int, str]] = []
    start, typ = None, ""
    for i, t in enumerate([*tags, "O"]):
        if start is not None and t == f"I-{typ}":
            continue
        if start is not None:
            spans.append((start, i, typ))
            start = None
        if t != "O":
            start, typ = i, t.split("-", 1)[-1]
    return spans


def _segments(tags: Sequence[str]) -> list[tuple[int, int, str | None]]:
    """The sentence cut into its mentions (start, end, type) and the runs of O words between
    them (start, end, None), in order."""
    out: list[tuple[int, int, str | None]] = []
    at = 0
    for s, e, typ in entity_spans(tags):
        if s > at:
            out.append((at, s, None))
        out.append((s, e, typ))
        at = e
    if at < len(tags):
        out.append((at, len(tags), None))
    return out


class _Pool:
    """Distinct values in first-seen order, each with the origin it was first seen with; draws
    one other than a given value, uniformly."""

    def __init__(self):
        self.items: list = []
        self.index: dict = {}
        self.origins: list = []

    def add(self, x, origin=None) -> None:
        if x not in self.index:
            self.index[x] = len(self.items)
            self.items.append(x)
            self.origins.append(origin)

    def has_other(self, x) -> bool:
        return len(self.items) > (x in self.index)

    def other(self, x, rng: random.Random, took: list | None = None):
        """A value other than ``x`` (None: there is none); its origin, if any, appended to ``took``."""
        at = self.index.get(x)
        n = len(self.items) - (at is not None)
        if n <= 0:
            return None
        i = rng.randrange(n)
        i = i + 1 if at is not None and i >= at else i
        if took is not None and self.origins[i] is not None:
            took.append(self.origins[i])
        return self.items[i]


@dataclass
class EntityBank:
    """What one language's tagged sentences offer for replacement: the distinct mentions
    (tuples of words) of each entity type and the distinct words of each tag, each with the
    origin of the first sentence that held it."""

    mentions: dict[str, _Pool] = field(default_factory=dict)
    words: dict[str, _Pool] = field(default_factory=dict)

    def add(self, words: Sequence[str], tags: Sequence[str], origin=None) -> None:
        """Add a sentence's mentions and words; ``origin`` (e.g. its `words_key`; None: a
        sentence always trained on, whose text cannot leak) goes with those it holds first."""
        for s, e, typ in entity_spans(tags):
            self.mentions.setdefault(typ, _Pool()).add(tuple(words[s:e]), origin)
        for w, t in zip(words, tags, strict=True):
            self.words.setdefault(t, _Pool()).add(w, origin)

    def other_mention(self, typ: str, mention: Sequence[str], rng: random.Random,
                      took: list | None = None) -> list[str] | None:
        """Another mention of type ``typ`` (None: there is none); its origin appended to ``took``."""
        pool = self.mentions.get(typ)
        got = pool.other(tuple(mention), rng, took) if pool else None
        return None if got is None else list(got)

    def other_word(self, tag: str, word: str, rng: random.Random, took: list | None = None) -> str | None:
        """Another word of tag ``tag`` (None: there is none); its origin appended to ``took``."""
        pool = self.words.get(tag)
        return pool.other(word, rng, took) if pool else None


def entity_bank(tagged: Iterable[tuple[Sequence[str], Sequence[str]]]) -> EntityBank:
    """The bank of ``(words, tags)`` sentences."""
    bank = EntityBank()
    for words, tags in tagged:
        bank.add(words, tags)
    return bank


@dataclass(frozen=True)
class EntityRates:
    """The probabilities of `entity_variant`'s operations (fixed: not config fields)."""

    mention: float = 0.5
    """Each mention replaced with another mention of its type."""
    word: float = 0.1
    """Each word outside a replaced mention replaced with another word of its tag."""
    shuffle: float = 0.3
    """Each segment of O words between mentions (two words or more) shuffled."""


ENTITY_RATES = EntityRates()

ENTITY_AUG_VERSION = 2
"""What entity-augmented rows record: 1, the sentence they vary (``aug_of``); 2, also the other
sentences they took mentions or words from (``borrowed_from``). In the label fingerprint of a
set with k > 1 (`xdistil.run.fingerprints.transfer_fields`), so a set of version 1 is labeled again."""


def entity_variant(words: Sequence[str], tags: Sequence[str], bank: EntityBank, rng: random.Random,
                   rates: EntityRates = ENTITY_RATES, borrowed: set | None = None) -> list[str]:
    """One variant of a sentence tagged ``tags``: mentions replaced, words replaced and O
    segments shuffled at ``rates`` (mentions never move). When that changes nothing, one
    change is made where any can be: a mention replaced, else a word, else an O segment
    reordered; a sentence that allows none comes back as it is. ``borrowed``, when given,
    gains the bank's origin of every mention and word the variant took."""
    segments = _segments(tags)
    parts: list[list[str]] = []
    took: list = []
    for s, e, typ in segments:
        if typ is not None and rng.random() < rates.mention:
            mention = bank.other_mention(typ, words[s:e], rng, took)
            if mention is not None:
                parts.append(mention)
                continue
        part = [_other_word(bank, t, w, rng, took) if rng.random() < rates.word else w
                for w, t in zip(words[s:e], tags[s:e], strict=True)]
        if typ is None and len(part) > 1 and rng.random() < rates.shuffle:
            rng.shuffle(part)
        parts.append(part)
    out = [w for p in parts for w in p]
    if out == list(words):  # what it took (if anything) is not in it
        took = []
        out = _one_change(words, tags, segments, bank, rng, took)
    if borrowed is not None:
        borrowed.update(took)
    return out


def _other_word(bank: EntityBank, tag: str, word: str, rng: random.Random, took: list) -> str:
    """Another word of ``tag`` from the bank (its origin appended to ``took``), else ``word``."""
    got: list = []
    new = bank.other_word(tag, word, rng, got)
    if not new:
        return word
    took += got
    return new


def _one_change(words: Sequence[str], tags: Sequence[str], segments, bank: EntityBank,
                rng: random.Random, took: list) -> list[str]:
    out = list(words)
    mentions = [(s, e, typ) for s, e, typ in segments
                if typ is not None and bank.mentions.get(typ) and bank.mentions[typ].has_other(tuple(words[s:e]))]
    if mentions:
        s, e, typ = rng.choice(mentions)
        return out[:s] + bank.other_mention(typ, words[s:e], rng, took) + out[e:]
    replaceable = [i for i, (w, t) in enumerate(zip(words, tags, strict=True))
                   if bank.words.get(t) and bank.words[t].has_other(w)]
    if replaceable:
        i = rng.choice(replaceable)
        out[i] = bank.other_word(tags[i], words[i], rng, took)
        return out
    mixed = [(s, e) for s, e, typ in segments if typ is None and len(set(words[s:e])) > 1]
    if mixed:
        s, e = rng.choice(mixed)
        part = out[s:e]
        rng.shuffle(part)
        if part == out[s:e]:  # not all equal: a rotation by one differs
            part = part[1:] + part[:1]
        out[s:e] = part
    return out


def entity_variants(words: Sequence[str], tags: Sequence[str], bank: EntityBank, k: int, seed: int, key: str,
                    rates: EntityRates = ENTITY_RATES) -> list[tuple[list[str], set]]:
    """Up to ``k - 1`` distinct variants of a sentence, none equal to it, each with the bank's
    origins of what it took (`entity_variant`): variant v is drawn with
    ``random.Random(f"{seed}:entity:{key}:{v}")`` (``key``: the language and the sentence's
    position), so the same sentence, tags and bank give the same variants."""
    seen, out = {tuple(words)}, []
    for v in range(1, k):
        borrowed: set = set()
        w = entity_variant(words, tags, bank, random.Random(f"{seed}:entity:{key}:{v}"), rates, borrowed)
        if tuple(w) not in seen:
            seen.add(tuple(w))
            out.append((w, borrowed))
    return out


def augment_entities(rows: Iterable[tuple[Any, Sequence[str], Sequence[str]]], bank: EntityBank, k: int, seed: int,
                     key: str, seen: set[bytes], rates: EntityRates = ENTITY_RATES
                     ) -> Iterator[tuple[Any, list[str], set]]:
    """``(item, words, tags)`` in; ``(item, variant, origins)`` out: the `entity_variants` of
    every sentence (the i-th seeded with ``f"{key}:{i}"``), in order, except those whose
    `words_key` is in ``seen`` (the sentences of the set; it grows by the variants given);
    ``origins``: the bank's origins of the mentions and words the variant took."""
    for i, (item, words, tags) in enumerate(rows):
        for w, borrowed in entity_variants(words, tags, bank, k, seed, f"{key}:{i}", rates):
            h = words_key(w)
            if h not in seen:
                seen.add(h)
                yield item, w, borrowed

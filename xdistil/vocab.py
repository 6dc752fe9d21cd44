"""Student vocabulary: the teacher's word pieces that the data actually uses.

XtremeDistil (arXiv 2004.05686) gives the student the teacher's word-piece vocabulary
restricted to the pieces seen in the train + transfer data: the same segmentation as
the teacher (so the teacher's per-piece labels, logits and hidden states line up with
the student's positions one to one) at a fraction of the embedding table (XLM-R has
250k pieces; a few languages' data use a few tens of thousands).

`reduce_tokenizer` rewrites the teacher's ``tokenizer.json`` (normaliser,
pre-tokeniser, decoder untouched) keeping only those pieces, and renumbers every id
that points into the vocabulary. Why seen words keep the teacher's segmentation
exactly:

- **WordPiece** (greedy longest match first): at every step the teacher took the
  longest vocabulary piece matching at that position. The pieces it took are kept,
  and no longer piece can appear in a subset of the vocabulary, so every step makes
  the same choice; a word the teacher mapped to the unknown token still fails to match
  somewhere, so it still does.
- **Unigram** (Viterbi best-scoring path over a lattice of matching pieces): the
  reduced lattice of a seen word is the teacher's lattice minus the pieces that are
  gone, plus possibly new *unknown* nodes (the tokenizer adds one at a character
  position that no single-character piece covers). The teacher's best path uses only
  kept pieces and unknown nodes that exist in both lattices, so it is still there with
  the same score; every other path got no better, except those through a new unknown
  node. An unknown node scores ``min_score - 10`` where ``min_score`` is the lowest
  piece score in the vocabulary; we keep the teacher's lowest-scoring piece so that
  ``min_score`` (hence the unknown score) does not change, and the new unknown node
  then scores *below* the removed single-character piece it stands in for, so a path
  through it loses to the same path in the teacher's lattice, which lost to (or tied)
  the teacher's best. Hence the best path is unchanged (up to exact float ties between
  different segmentations, which Viterbi breaks by order of discovery).

Unseen words are still segmented, from the kept pieces only; to help them,
``keep_chars=True`` (default) also keeps the single-character pieces of every
character that occurs in a kept piece (for WordPiece both ``c`` and ``##c``), so a new
word made of seen characters falls back to characters rather than to the unknown token.

**The budget** (``student.max_vocab``). Every seen piece grows with languages and text
(at E=50, 20k pieces cost 1M parameters), so a cap keeps the most useful ones:
`count_pieces` counts the teacher's pieces per language, `select_pieces` keeps the
specials and single characters (`always_kept`), then every language's most frequent
pieces down to the same rank (half the budget by default, so a small language keeps its
common pieces), then the most frequent pieces overall. A word whose pieces were dropped
re-segments into kept pieces exactly as an unseen word does, never into the unknown
token. `student_vocabulary` puts it together and reports what the cap costs: pieces per
word against the teacher's, per language (stored in the student's meta).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerFast

_SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def seen_piece_ids(tokenizer, sentences: Iterable[list[str]], chunk_size: int = 4096) -> set[int]:
    """Ids of all pieces the tokenizer produces for pre-split sentences (specials not added).

    ``tokenizer`` is a Hugging Face fast tokenizer or a ``tokenizers.Tokenizer``.
    Sentences are lists of words, encoded in batches of ``chunk_size``.
    """
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # no offsets needed
    seen: set[int] = set()
    for chunk in _chunks((list(s) for s in sentences if len(s)), chunk_size):
        for enc in encode(chunk, is_pretokenized=True, add_special_tokens=False):
            seen.update(enc.ids)
    return seen


def reduce_tokenizer(
    teacher_tokenizer, seen_ids: Iterable[int], keep_chars: bool = True
) -> tuple[PreTrainedTokenizerFast, list[int]]:
    """A tokenizer over the special tokens + ``seen_ids`` (+ see ``keep_chars``).

    Returns ``(tokenizer, kept)`` where ``kept[new_id] == teacher_id`` (ascending, so the
    specials keep their relative order), e.g. ``teacher_embeddings[kept]`` gives the
    student's rows. Supports ``Unigram`` (SentencePiece: XLM-R, e5) and ``WordPiece``
    (BERT) models; raises ``NotImplementedError`` for others (BPE, WordLevel).
    """
    t = _Teacher.of(teacher_tokenizer)
    keep = {int(i) for i in seen_ids}
    bad = [i for i in keep if not 0 <= i < t.n_total]
    if bad:
        raise ValueError(f"seen ids outside the teacher vocabulary (size {t.n_total}): {sorted(bad)[:10]}")
    keep |= t.always_kept(teacher_tokenizer)
    if keep_chars:
        keep |= _char_pieces(t.pieces, keep, t.model)

    spec, model, kind, n_model = t.spec, t.model, t.kind, len(t.pieces)
    kept = sorted(keep)
    new_id = {old: new for new, old in enumerate(kept)}
    if kind == "Unigram":
        model["vocab"] = [model["vocab"][i] for i in kept if i < n_model]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    else:
        model["vocab"] = {t.pieces[i]: new_id[i] for i in kept if i < n_model}
    for tok in spec.get("added_tokens") or []:
        tok["id"] = new_id[tok["id"]]
    if spec.get("post_processor"):
        _remap_post_processor(spec["post_processor"], new_id)
    if spec.get("padding") and spec["padding"].get("pad_id") is not None:
        spec["padding"]["pad_id"] = new_id[spec["padding"]["pad_id"]]

    from tokenizers import Tokenizer

    reduced = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)), **_special_kwargs(teacher_tokenizer)
    )
    return reduced, kept


@dataclass
class _Teacher:
    """The teacher tokenizer's JSON spec (a private copy) and its model's pieces by id."""

    spec: dict
    model: dict
    kind: str
    pieces: list
    n_total: int  # ids incl. added tokens beyond the model's vocabulary

    @classmethod
    def of(cls, teacher_tokenizer) -> _Teacher:
        backend = getattr(teacher_tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise TypeError("reduce_tokenizer needs a fast (tokenizers-backed) teacher tokenizer")
        spec = json.loads(backend.to_str())
        model = spec["model"]
        kind = model["type"]
        if kind == "Unigram":
            pieces = [p for p, _ in model["vocab"]]
        elif kind == "WordPiece":
            pieces = [None] * len(model["vocab"])
            for piece, i in model["vocab"].items():
                pieces[i] = piece
        else:
            raise NotImplementedError(
                f"vocabulary reduction supports Unigram and WordPiece tokenizers, not {kind}: "
                "for BPE, removing pieces can change how seen words are merged"
            )
        added = spec.get("added_tokens") or []
        n_total = max([len(pieces)] + [t["id"] + 1 for t in added])
        return cls(spec, model, kind, pieces, n_total)

    def always_kept(self, teacher_tokenizer) -> set[int]:
        """Added and special tokens, the unknown piece and (Unigram) the lowest-scoring piece."""
        keep = {t["id"] for t in self.spec.get("added_tokens") or []}
        keep.update(i for i in teacher_tokenizer.all_special_ids if i is not None)
        model = self.model
        if self.kind == "Unigram":
            if model.get("unk_id") is not None:
                keep.add(model["unk_id"])
            # The lowest score fixes the unknown-node score (module docstring): keep it.
            keep.add(min(range(len(self.pieces)), key=lambda i: model["vocab"][i][1]))
        elif model.get("unk_token") in model["vocab"]:
            keep.add(model["vocab"][model["unk_token"]])
        return keep


# ---- the vocabulary budget (student.max_vocab) ------------------------------------------


@dataclass
class PieceCounts:
    """How often the data uses each teacher piece, per language (`count_pieces`).

    Iterating it yields the seen piece ids, so it stands in for ``seen_ids`` anywhere.
    ``sample`` keeps the first sentences of every language: coverage (pieces per word) is
    measured on them, so its cost does not grow with the transfer set.
    """

    counts: dict[str, np.ndarray]  # language -> (V_teacher,) occurrences of each piece id
    words: dict[str, int]  # language -> words counted
    sample: dict[str, list[list[str]]]  # language -> up to sample_size sentences
    teacher_segmentation: dict[str, tuple[int, int, int]]  # language -> (words, pieces, unk words) of the sample

    def total(self) -> np.ndarray:  # (V_teacher,)
        return np.sum(list(self.counts.values()), axis=0)

    def seen(self) -> set[int]:
        return {int(i) for i in np.flatnonzero(self.total())}

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self.seen()))


def count_pieces(
    tokenizer,
    sentences: Iterable[Sequence[str]],
    langs: Iterable[str] | None = None,
    sample_size: int = 1000,
    chunk_size: int = 4096,
) -> PieceCounts:
    """Piece occurrences per language over pre-split sentences (``langs`` runs beside them;
    None: one language ``"all"``). Encoded like `seen_piece_ids`, whole sentences in batches."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    V = backend.get_vocab_size(with_added_tokens=True)
    counts: dict[str, np.ndarray] = {}
    words: dict[str, int] = {}
    sample: dict[str, list[list[str]]] = {}
    pairs = zip(langs, sentences, strict=True) if langs is not None else (("all", s) for s in sentences)
    for chunk in _chunks(((str(lang), list(s)) for lang, s in pairs if len(s)), chunk_size):
        encs = encode([s for _, s in chunk], is_pretokenized=True, add_special_tokens=False)
        by_lang: dict[str, list[list[int]]] = {}
        for (lang, s), enc in zip(chunk, encs, strict=True):
            by_lang.setdefault(lang, []).append(enc.ids)
            words[lang] = words.get(lang, 0) + len(s)
            if len(kept := sample.setdefault(lang, [])) < sample_size:
                kept.append(s)
        for lang, ids in by_lang.items():
            flat = np.fromiter((i for row in ids for i in row), dtype=np.int64)
            counts[lang] = counts.get(lang, np.zeros(V, dtype=np.int64)) + np.bincount(flat, minlength=V)
    unk = getattr(tokenizer, "unk_token_id", None)
    seg = {lang: _segmentation(backend, unk, sents) for lang, sents in sample.items()}
    return PieceCounts(counts, words, sample, seg)


def always_kept(teacher_tokenizer, seen_ids: Iterable[int]) -> set[int]:
    """The pieces a capped vocabulary keeps whatever the budget: specials (as `reduce_tokenizer`)
    and the single-character pieces (WordPiece: ``c`` and ``##c``) of every character of
    ``seen_ids``, the fallback that keeps re-segmented words off the unknown token."""
    t = _Teacher.of(teacher_tokenizer)
    base = t.always_kept(teacher_tokenizer)
    # the characters of the specials too: `reduce_tokenizer` keeps those of every kept piece
    return base | _char_pieces(t.pieces, {int(i) for i in seen_ids} | base, t.model)


def select_pieces(teacher_tokenizer, counts: PieceCounts, max_vocab: int, language_share: float = 0.5) -> set[int]:
    """At most ``max_vocab`` teacher ids (everything a student vocabulary holds) to keep.

    Always kept, out of the budget: the specials (`reduce_tokenizer`) and the
    single-character pieces of every character the data uses, so a word whose pieces are
    dropped re-segments into shorter kept pieces and, at worst, characters, never into the
    unknown token. The rest of the budget: ``language_share`` of it goes to every language
    alike, each keeping its own most frequent pieces down to the same rank (so a small
    language keeps its common pieces however large the others are); the remainder goes to
    the most frequent pieces over all the data.
    """
    forced = always_kept(teacher_tokenizer, counts.seen())
    budget = max_vocab - len(forced)
    if budget < 0:
        raise ValueError(f"student.max_vocab {max_vocab} is below the {len(forced)} special and single-character "
                         "pieces the data needs")
    if not 0.0 <= language_share <= 1.0:
        raise ValueError(f"language_share must be in [0, 1], got {language_share}")

    def ranked(c: np.ndarray) -> list[int]:  # seen pieces by count (ties: lower id first), not forced
        order = np.lexsort((np.arange(len(c)), -c))
        return [int(i) for i in order[: int((c > 0).sum())] if int(i) not in forced]

    chosen: set[int] = set()
    per_lang = [ranked(c) for c in counts.counts.values()]
    share = int(budget * language_share)
    for rank in range(max((len(r) for r in per_lang), default=0)):
        step = {r[rank] for r in per_lang if rank < len(r)} - chosen
        if len(chosen) + len(step) > share:
            break  # every language keeps its pieces down to the same rank
        chosen |= step
    for i in ranked(counts.total()):
        if len(chosen) >= budget:
            break
        chosen.add(i)
    return forced | chosen


def student_vocabulary(
    teacher_tokenizer, seen: Iterable[int] | PieceCounts, max_vocab: int | None = None
) -> tuple[PreTrainedTokenizerFast, list[int], dict | None]:
    """The student's tokenizer, ``kept`` (as `reduce_tokenizer`) and, when ``seen`` is a
    `PieceCounts`, its report (the ``vocab`` entry of ``xdistil_student.json``):

    ``{teacher_size, seen, size, max_vocab, occurrences_kept, languages: {lang: {words,
    sample_words, occurrences_kept, teacher_pieces_per_word, student_pieces_per_word,
    teacher_unk_words, student_unk_words}}}``; pieces per word are measured on the sample.
    """
    if max_vocab is not None and not isinstance(seen, PieceCounts):
        raise TypeError("student.max_vocab needs piece counts (xdistil.vocab.count_pieces), not bare ids")
    ids = select_pieces(teacher_tokenizer, seen, max_vocab) if max_vocab is not None else seen
    tokenizer, kept = reduce_tokenizer(teacher_tokenizer, ids)
    if max_vocab is not None and len(kept) > max_vocab:  # select_pieces' promise, checked
        raise RuntimeError(f"{len(kept)} pieces kept for max_vocab {max_vocab}")
    if not isinstance(seen, PieceCounts):
        return tokenizer, kept, None
    mask = np.zeros(len(seen.total()), dtype=bool)
    mask[kept] = True

    def kept_share(c: np.ndarray) -> float:
        return round(float(c[mask].sum() / max(c.sum(), 1)), 6)

    langs = {}
    for lang, c in seen.counts.items():
        t_words, t_pieces, t_unk = seen.teacher_segmentation[lang]
        _, s_pieces, s_unk = _segmentation(tokenizer.backend_tokenizer, tokenizer.unk_token_id, seen.sample[lang])
        langs[lang] = {"words": seen.words[lang], "sample_words": t_words, "occurrences_kept": kept_share(c),
                       "teacher_pieces_per_word": round(t_pieces / max(t_words, 1), 4),
                       "student_pieces_per_word": round(s_pieces / max(t_words, 1), 4),
                       "teacher_unk_words": t_unk, "student_unk_words": s_unk}
    report = {"teacher_size": len(teacher_tokenizer), "seen": len(seen.seen()), "size": len(kept),
              "max_vocab": max_vocab, "occurrences_kept": kept_share(seen.total()), "languages": langs}
    return tokenizer, kept, report


# ---- word shape of a piece (student.shape_dim) -------------------------------------------

SHAPES = ("empty", "lower", "title", "upper", "mixed", "uncased", "digit", "punct")
"""Shape of a piece's text (word-start marker removed): no text left | lower-case letters |
first letter upper, the rest not | two or more letters, all upper | other casings | letters
of a script without case | digits (no letters) | nothing alphanumeric."""


def piece_shape(piece: str, prefix: str = "", marker: str = "\u2581") -> int:
    """Shape class of one piece: ``1 + start * len(SHAPES) + SHAPES.index(shape)`` where
    ``start`` says the piece begins a word (SentencePiece ``\u2581`` marker, or a WordPiece
    piece without the ``prefix`` ``##``); 0 is kept for the special tokens (`piece_shapes`)."""
    start, text = _piece_text(piece, prefix, marker)
    letters = [c for c in text if c.isalpha()]
    cased = [c for c in letters if c.islower() or c.isupper()]
    if not text:
        shape = "empty"
    elif letters and not cased:
        shape = "uncased"
    elif cased and all(c.islower() for c in cased):
        shape = "lower"
    elif cased and cased[0].isupper() and letters[0] is cased[0] and not any(c.isupper() for c in cased[1:]):
        shape = "title"
    elif len(cased) > 1 and all(c.isupper() for c in cased):
        shape = "upper"
    elif cased:
        shape = "mixed"
    elif any(c.isdigit() for c in text):
        shape = "digit"
    else:
        shape = "punct"
    return 1 + int(start) * len(SHAPES) + SHAPES.index(shape)


def _piece_text(piece: str, prefix: str, marker: str) -> tuple[bool, str]:
    """(whether the piece begins a word, its text without the word-start marker or the
    WordPiece continuation ``prefix``)."""
    if prefix:
        start = not piece.startswith(prefix)
        return start, piece if start else piece[len(prefix):]
    start = piece.startswith(marker)
    return start, piece[len(marker):] if start else piece


N_SHAPES = 17
"""Classes `piece_shape` gives: 0 special, then 2 (word start, continuation) x 8 shapes."""


def piece_shapes(tokenizer) -> list[int]:
    """`piece_shape` of every id of a (reduced) fast tokenizer, 0 for its special tokens: the
    fixed lookup a student's shape embedding reads (``len(tokenizer)`` entries)."""
    return _per_piece(tokenizer, piece_shape, 0)


def _per_piece(tokenizer, f: Callable[[str, str], Any], special_value: Any) -> list:
    """``f(piece, WordPiece continuation prefix or "")`` for every id of a fast tokenizer,
    ``special_value`` for its special tokens (and ids without a piece)."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    model = json.loads(backend.to_str())["model"]
    prefix = (model.get("continuing_subword_prefix") or "") if model.get("type") == "WordPiece" else ""
    special = {i for i in getattr(tokenizer, "all_special_ids", []) if i is not None}
    pieces = (backend.id_to_token(i) for i in range(len(tokenizer)))
    return [special_value if i in special or piece is None else f(piece, prefix) for i, piece in enumerate(pieces)]


# ---- hashed character n-grams of a piece (student.ngram_dim) -------------------------------

NGRAM = 3
"""Length of the character n-grams `piece_ngrams` hashes."""


def piece_ngram_buckets(piece: str, buckets: int, prefix: str = "", marker: str = "\u2581") -> list[int]:
    """Hash buckets (1..``buckets``; 0 is padding) of the distinct character trigrams of one
    piece's text, a word start marked ``<`` (so ``▁Berlin`` gives ``<Be``, ``Ber`` ... ``lin``);
    a text shorter than a trigram is one gram. CRC-32, so the buckets are the same in every
    process and on every machine."""
    start, text = _piece_text(piece, prefix, marker)
    text = ("<" if start else "") + text
    if not text:
        return []
    grams = dict.fromkeys(text[i:i + NGRAM] for i in range(max(len(text) - NGRAM + 1, 1)))
    return [1 + zlib.crc32(g.encode("utf-8")) % buckets for g in grams]


def piece_ngrams(tokenizer, buckets: int, per_piece: int) -> list[list[int]]:
    """`piece_ngram_buckets` of every id of a (reduced) fast tokenizer, cut or padded with 0 to
    ``per_piece`` entries; none for its special tokens: the fixed lookup a student's n-gram
    embedding reads (``len(tokenizer)`` rows)."""
    rows = _per_piece(tokenizer, lambda piece, prefix: piece_ngram_buckets(piece, buckets, prefix)[:per_piece], [])
    return [ids + [0] * (per_piece - len(ids)) for ids in rows]


def piece_starts(tokenizer) -> list[bool]:
    """Whether each id of a (reduced) fast tokenizer begins a word: a piece with the word-start
    marker (a WordPiece piece without the continuation prefix), or a special token other than
    the unknown piece, which stands for characters inside a word as often as for a whole word
    (after the bare marker piece, for SentencePiece)."""
    shapes = piece_shapes(tokenizer)
    unk = getattr(tokenizer, "unk_token_id", None)
    return [(s == 0 and i != unk) or s > len(SHAPES) for i, s in enumerate(shapes)]


def _segmentation(backend, unk: int | None, sentences: list[list[str]]) -> tuple[int, int, int]:
    """(words, pieces, words holding the unknown piece) over pre-split sentences; a word the
    tokenizer turns into nothing counts as one unknown piece, as training windows give it one."""
    n_words = n_pieces = n_unk = 0
    encs = backend.encode_batch(sentences, is_pretokenized=True, add_special_tokens=False) if sentences else []
    for words, enc in zip(sentences, encs, strict=True):  # (encode_batch_fast gives no word ids)
        empty = len(words) - len({w for w in enc.word_ids if w is not None})
        n_words += len(words)
        n_pieces += len(enc.ids) + empty
        n_unk += len({w for w, i in zip(enc.word_ids, enc.ids, strict=True) if i == unk and w is not None}) + empty
    return n_words, n_pieces, n_unk


def _char_pieces(pieces: list, keep: set[int], model: dict) -> set[int]:
    """Ids of the single-character pieces for every character of the kept pieces."""
    index = {p: i for i, p in enumerate(pieces)}
    prefix = model.get("continuing_subword_prefix") or ""
    chars: set[str] = set()
    for i in keep:
        if i < len(pieces):
            p = pieces[i]
            chars.update(p[len(prefix) :] if prefix and p.startswith(prefix) else p)
    out = set()
    for c in chars:
        for form in (c, prefix + c) if prefix else (c,):
            if form in index:
                out.add(index[form])
    return out


def _remap_post_processor(pp: dict, new_id: dict[int, int]) -> None:
    """Renumber the special-token ids a post-processor inserts (in place)."""
    kind = pp.get("type")
    if kind == "TemplateProcessing":
        for tok in pp.get("special_tokens", {}).values():
            tok["ids"] = [new_id[i] for i in tok["ids"]]
    elif kind in ("RobertaProcessing", "BertProcessing"):
        for key in ("sep", "cls"):
            content, old = pp[key]
            pp[key] = [content, new_id[old]]
    elif kind == "Sequence":
        for sub in pp.get("processors", []):
            _remap_post_processor(sub, new_id)
    # ByteLevel and others hold no ids.


def _special_kwargs(tok) -> dict:
    kwargs = {name: getattr(tok, name) for name in _SPECIAL_NAMES if getattr(tok, name, None) is not None}
    extra = getattr(tok, "extra_special_tokens", None)
    if extra:
        kwargs["extra_special_tokens"] = list(extra)
    for name in ("model_max_length", "padding_side", "truncation_side"):
        if hasattr(tok, name):
            kwargs[name] = getattr(tok, name)
    return kwargs


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk

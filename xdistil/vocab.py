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
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice

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
    n_model = len(pieces)
    added = spec.get("added_tokens") or []
    n_total = max([n_model] + [t["id"] + 1 for t in added])

    keep = {int(i) for i in seen_ids}
    bad = [i for i in keep if not 0 <= i < n_total]
    if bad:
        raise ValueError(f"seen ids outside the teacher vocabulary (size {n_total}): {sorted(bad)[:10]}")
    keep.update(t["id"] for t in added)
    keep.update(i for i in teacher_tokenizer.all_special_ids if i is not None)
    if kind == "Unigram":
        if model.get("unk_id") is not None:
            keep.add(model["unk_id"])
        # The lowest score fixes the unknown-node score (module docstring): keep it.
        keep.add(min(range(n_model), key=lambda i: model["vocab"][i][1]))
    elif model.get("unk_token") in model["vocab"]:
        keep.add(model["vocab"][model["unk_token"]])
    if keep_chars:
        keep |= _char_pieces(pieces, keep, model)

    kept = sorted(keep)
    new_id = {old: new for new, old in enumerate(kept)}
    if kind == "Unigram":
        model["vocab"] = [model["vocab"][i] for i in kept if i < n_model]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    else:
        model["vocab"] = {pieces[i]: new_id[i] for i in kept if i < n_model}
    for tok in added:
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

"""The unlabeled transfer set of one language, streamed and de-duplicated.

Order (deterministic, so chunked labeling can resume): the gold budget (kept with its
tags, split "labeled"), the selection slice ("val"), then transfer-only text: train
beyond the budget with tags stripped, token files, raw sentence files, user files and
Hugging Face datasets. A sentence seen before (same words) is skipped. Distillation holds
some transfer-only sentences out of training to select the student on (`selection_rows`).

Levers for text closer to real documents (issue 17; all off by default, which leaves the
set exactly as it was):

- ``transfer.extra_sources``: another corpus's train text of the language (UNER, news NER),
  tags stripped, mixed one for one with the text above (so ``transfer.limit`` keeps a
  share for each); never a dev or test split, which the benchmarks evaluate on;
- ``transfer.concat``: consecutive fragments (train beyond the budget, token files) joined
  into longer sequences, up to ``concat_max_words`` words;
- ``transfer.augment_*``: re-casing, word dropout, entity/context swaps and code-mixing
  with the next language of the run (`xdistil.augment`), applied last, in place.

``transfer.augment_entities`` (k > 1) adds variants of these rows after they are labeled
(`xdistil.labeling`: mentions and words replaced by the teacher's tags, k - 1 a sentence),
marked ``<source>+entity-aug`` with ``aug_of`` naming their original; `selection_rows` is
given original rows only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from xdistil_languages import get_language, load_registry

from xdistil.augment import Augmentation, augment, words_key
from xdistil.config import RunConfig
from xdistil.data.readers import DataError, Sentence, load_hf_dataset, read_file
from xdistil.data.roots import resolve_data_root
from xdistil.data.sources import budget_split, labeled_sentences, unlabeled_format, unlabeled_paths
from xdistil.digests import file_digest


@dataclass
class TransferRow:
    words: list[str]
    lang: str
    split: str  # labeled | val | transfer
    gold: list[str] | None
    source: str
    aug_of: str | None = None  # an entity-augmented row: the hex `words_key` of the sentence it varies
    borrowed_from: list[str] | None = None  # and those of the other sentences it took mentions or words from


_key = words_key


def transfer_languages(cfg: RunConfig) -> list[str]:
    """The languages of the transfer set: data.languages, then the transfer-only transfer.languages."""
    return [*cfg.data.languages, *(lang for lang in cfg.transfer.languages if lang not in cfg.data.languages)]


def iter_transfer(cfg: RunConfig, lang: str) -> Iterator[TransferRow]:
    # a transfer-only language (transfer.languages) has no labeled file to read: transfer text alone
    train, val = budget_split(lang, cfg.data) if lang in cfg.data.languages else ([], [])
    seen: set[bytes] = set()
    for split, sents in (("labeled", train), ("val", val)):
        for s in sents:
            seen.add(_key(s.words))
            yield TransferRow(s.words, lang, split, s.tags, s.where)
    rows = _transfer_only(cfg, lang, seen)
    aug = Augmentation.from_transfer(cfg.transfer)
    if not aug.active:
        yield from rows
        return
    langs = list(cfg.data.languages)
    partner = None
    if aug.code_mix and len(langs) > 1 and lang in langs:
        other = langs[(langs.index(lang) + 1) % len(langs)]
        partner = (r.words for r in _transfer_only(cfg, other, set()))
    for row, words, ops in augment(((r, r.words) for r in rows), aug, key=lang, partner=partner):
        if ops:
            row = TransferRow(words, row.lang, row.split, None, f"{row.source}+{'+'.join(ops)}")
        yield row


def _transfer_only(cfg: RunConfig, lang: str, seen: set[bytes]) -> Iterator[TransferRow]:
    """The transfer-only rows of ``lang`` (before augmentation), skipping what ``seen`` holds."""
    tc = cfg.transfer

    def fresh(sents: Iterable[Sentence]) -> Iterator[Sentence]:
        for s in sents:
            k = _key(s.words)
            if s.words and k not in seen:
                seen.add(k)
                yield s

    def tagged(sents: Iterable[Sentence], source: str) -> Iterator[tuple[Sentence, str]]:
        return ((s, source) for s in sents)

    main: list[Iterator[tuple[Sentence, str]]] = []
    if "train_rest" in tc.sources and lang in cfg.data.languages:
        rest = labeled_sentences(lang, "train", cfg.data)[cfg.data.labeled_budget :]
        main.append(tagged(join_fragments(fresh(rest), tc.concat, tc.concat_max_words), "train_rest"))
    for path, fmt in unlabeled_paths(lang, cfg.data):
        kind = "raw" if fmt == "raw" else "unlabeled"
        if kind in tc.sources or str(path) in cfg.data.files.get(lang, {}).get("unlabeled", []):
            sents = fresh(read_file(path, fmt))
            if fmt == "tokens":  # fragments (WikiANN tokens); raw files hold whole sentences
                sents = join_fragments(sents, tc.concat, tc.concat_max_words)
            main.append(tagged(sents, str(path)))
    for h in tc.hf:
        if h.get("lang", lang) == lang:
            main.append(tagged(fresh(load_hf_dataset(h["name"], h.get("config"), h.get("split", "train"))),
                               h["name"]))
    stream = itertools.chain.from_iterable(main)
    extra = [tagged(fresh(read_file(p, unlabeled_format(p))), str(p)) for p in extra_source_paths(cfg, lang)]
    if extra:
        stream = _alternate(stream, itertools.chain.from_iterable(extra))
    for s, source in itertools.islice(stream, tc.limit):
        yield TransferRow(s.words, lang, "transfer", None, s.where or source)


_END = object()


def _alternate(a: Iterator, b: Iterator) -> Iterator:
    """a0, b0, a1, b1, ...; when one runs out, the rest of the other."""
    for x, y in itertools.zip_longest(a, b, fillvalue=_END):
        if x is not _END:
            yield x
        if y is not _END:
            yield y


def join_fragments(sents: Iterable[Sentence], k: int, max_words: int) -> Iterator[Sentence]:
    """Consecutive sentences joined ``k`` at a time into one, as long as the joined sequence
    stays within ``max_words`` words; a sentence longer than that stays whole, alone (words
    are never cut). ``k == 1`` passes the sentences through unchanged."""
    if k <= 1:
        yield from sents
        return
    group: list[Sentence] = []
    n = 0
    for s in sents:
        if group and (len(group) == k or n + len(s.words) > max_words):
            yield _joined(group)
            group, n = [], 0
        group.append(s)
        n += len(s.words)
    if group:
        yield _joined(group)


def _joined(group: list[Sentence]) -> Sentence:
    if len(group) == 1:
        return group[0]
    return Sentence([w for s in group for w in s.words], None, group[0].where)


SELECTION_SHARE = 0.25
"""At most this share of a language's transfer-only sentences is held out for selection."""


def selection_rows(rows_by_lang: dict[str, Sequence[int]], size: int) -> dict[str, list[int]]:
    """The transfer sentences held out of training to select the student on (``distill.select``
    teacher): ``size`` in all, an equal share per language, each language's share evenly spaced
    over its rows (so over its sources: the rows are in source order), at most
    `SELECTION_SHARE` of them. ``rows_by_lang``: each language's transfer-only row numbers.

    Deterministic and the same for every seed: seeds are compared on one slice."""
    share = math.ceil(size / max(len(rows_by_lang), 1))
    out = {}
    for lang, rows in rows_by_lang.items():
        k = min(share, int(len(rows) * SELECTION_SHARE))
        # the middle of each of k equal blocks: spread over the whole list, never a row twice
        out[lang] = [rows[(2 * i + 1) * len(rows) // (2 * k)] for i in range(k)]
    return out


EVAL_SPLITS = ("dev", "test")


def extra_source_paths(cfg: RunConfig, lang: str) -> list[Path]:
    """The files behind ``transfer.extra_sources[lang]``, checked: each exists and is no
    dev or test split (of the registry, of any language, or a user's dev/test file)."""
    names = cfg.transfer.extra_sources.get(lang, [])
    if not names:
        return []
    root = resolve_data_root(cfg.data.root)
    where = f"transfer.extra_sources.{lang}"
    language = get_language(lang)
    datasets = {s.name: s.kind for s in language.sources if s.kind == "labeled"}
    datasets |= {s.name: s.kind for s in language.sources if s.kind == "unlabeled" and s.name not in datasets}
    held_out: set[Path] = set()
    if root is not None:
        for other in load_registry().values():
            held_out |= {s.resolve(root).resolve() for s in other.sources if s.split in EVAL_SPLITS}
    for files in cfg.data.files.values():
        held_out |= {Path(f).resolve() for split in EVAL_SPLITS for f in files.get(split, [])}
    out = []
    for name in names:
        if name in datasets:
            split = "train" if datasets[name] == "labeled" else "unlabeled"
            path = language.find(split, kind=datasets[name], data_root=root, source=name) if root else None
            if path is None:
                raise DataError(where, None, f"{name!r}: no {name} {split} file of {lang} under the data root "
                                             f"({root or 'none found'})")
        else:
            # a file: absolute, under the data root, or a registry path without its extension (uner/pt/train)
            stems = {s.path.split(".")[0]: s.resolve(root) for s in language.sources} if root else {}
            path = Path(name)
            if not path.is_absolute() and root is not None and (root / path).exists():
                path = root / path
            path = stems.get(name, path)
            if not path.is_file():
                raise DataError(where, None, f"{name!r}: neither a dataset of {lang} in the registry "
                                             f"({', '.join(sorted(datasets)) or 'none'}) nor a file")
        # "dev.tsv.gz", "test.conll": named like a held-out split, wherever it lies
        if path.resolve() in held_out or path.name.split(".")[0].lower() in EVAL_SPLITS:
            raise DataError(where, None, f"{name!r} ({path}) is a dev or test split: only train text may be "
                                         f"transfer text")
        out.append(path)
    return out


def data_files(cfg: RunConfig, split: str) -> dict[str, list[str]]:
    """Per language, the local files a step reads for ``split`` ("train", "dev" or
    "unlabeled"), resolved exactly as the readers resolve them; "hub:<dataset>" where a
    labeled split comes from the hub."""
    root = resolve_data_root(cfg.data.root)
    out: dict[str, list[str]] = {}
    for lang in transfer_languages(cfg) if split == "unlabeled" else cfg.data.languages:
        if split == "unlabeled":  # every file the transfer text is read from
            out[lang] = [str(p) for p, _ in unlabeled_paths(lang, cfg.data)]
            out[lang] += [str(p) for p in extra_source_paths(cfg, lang)]
            continue
        user = cfg.data.files.get(lang, {}).get(split)
        if user:
            out[lang] = [str(p) for p in user]
            continue
        language = get_language(lang)
        path = language.find(split, kind="labeled", data_root=root) if root else None
        out[lang] = [str(path)] if path is not None else [f"hub:{language.hub.dataset}/{language.hub.config}"]
    return out


def data_digests(cfg: RunConfig, splits: tuple[str, ...]) -> dict[str, str]:
    """``{"<split>:<lang>:<file name>": sha256}`` of every local data file behind ``splits``:
    a step's fingerprint follows the files' bytes, not where the data root happens to be."""
    out = {}
    for split in splits:
        for lang, files in data_files(cfg, split).items():
            for i, f in enumerate(files):
                key = f"{split}:{lang}:{Path(f).name}"
                key = key if key not in out else f"{key}#{i}"
                out[key] = f if f.startswith("hub:") else file_digest(f)
    return out

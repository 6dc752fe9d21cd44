"""Per-language data: user files, then files under the data root (registry), then the hub."""

from __future__ import annotations

import logging
from pathlib import Path

from xdistil_languages import get_language

from xdistil.config import DataConfig
from xdistil.data.readers import Sentence, load_hf_dataset, read_file, sniff_format
from xdistil.data.roots import resolve_data_root

log = logging.getLogger(__name__)

HUB_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


def _read_all(paths, fmt, cfg: DataConfig, tag_map, limit=None) -> list[Sentence]:
    out: list[Sentence] = []
    for path in paths:
        f = fmt or sniff_format(path)
        kw = {"limit": None if limit is None else limit - len(out)}
        if f == "conll":
            kw = {"label_types": cfg.label_types, "tag_map": tag_map, "strict": cfg.strict}
        for s in read_file(path, f, **kw):
            out.append(s)
            if limit is not None and len(out) >= limit:
                return out
    return out


def _local_labeled(lang: str, split: str, cfg: DataConfig) -> list[Path] | None:
    """The local labeled files of a language and split (user files, then the data root's), or None."""
    user = cfg.files.get(lang, {}).get(split)
    if user:
        return [Path(p) for p in user]
    root = resolve_data_root(cfg.root)
    path = get_language(lang).find(split, kind="labeled", data_root=root) if root else None
    return [path] if path is not None else None


def labeled_sentences(lang: str, split: str, cfg: DataConfig, limit: int | None = None) -> list[Sentence]:
    """Gold sentences of one language and split ("train", "dev", "test").

    Local files are always read as CoNLL (a labeled role never falls back to raw text), so
    a malformed file fails with its file:line instead of later, in training.
    """
    language = get_language(lang)
    tag_map = language.overrides.get("tag_map")
    paths = _local_labeled(lang, split, cfg)
    if paths is not None:
        return _read_all(paths, "conll", cfg, tag_map, limit)
    if not language.in_registry:  # no hub dataset to fall back to
        raise FileNotFoundError(f"language {lang!r} is not in the registry: pass its {split} file "
                                f"(data.files.{lang}.{split} or --{'dev' if split == 'dev' else 'train'})")
    root = resolve_data_root(cfg.root)
    log.warning("%s/%s: no local file under %s; loading %s from the hub", lang, split, root, language.hub.dataset)
    sents = list(load_hf_dataset(language.hub.dataset, language.hub.config, HUB_SPLITS.get(split, split),
                                 limit=limit))
    return sents


def validate_labeled(cfg: DataConfig) -> dict[str, int]:
    """Read every local labeled file a teacher run uses (each language's train budget and
    dev split) before anything trains; returns the tag counts over all of them.

    A bad file raises its `DataError` (file:line) now, not after the teacher has trained.
    Splits with no local file are left to the hub loader (they are not downloaded here).
    """
    tags: dict[str, int] = {}
    for lang in cfg.languages:
        for split, limit in (("train", cfg.labeled_budget), ("dev", cfg.dev_limit)):
            paths = _local_labeled(lang, split, cfg)
            if paths is None:
                if split == "train" and not get_language(lang).in_registry:
                    raise FileNotFoundError(f"language {lang!r} is not in the registry: pass its files "
                                            f"(data.files.{lang}.train or --train)")
                continue
            tag_map = get_language(lang).overrides.get("tag_map")
            for sent in _read_all(paths, "conll", cfg, tag_map, limit):
                for t in sent.tags or ():
                    tags[t] = tags.get(t, 0) + 1
    return tags


def budget_split(lang: str, cfg: DataConfig) -> tuple[list[Sentence], list[Sentence]]:
    """(train, selection) gold sentences: the head of train, with the last ``val_size`` held out."""
    budget = labeled_sentences(lang, "train", cfg, limit=cfg.labeled_budget)
    if cfg.val_size < len(budget) < cfg.labeled_budget:
        log.warning("%s: data.labeled_budget is %d but train has %d sentences: using all %d (%d to train, "
                    "the last %d for selection)", lang, cfg.labeled_budget, len(budget), len(budget),
                    len(budget) - cfg.val_size, cfg.val_size)
    if len(budget) <= cfg.val_size:
        raise ValueError(f"{lang}: only {len(budget)} training sentences, need more than val_size={cfg.val_size}")
    cut = len(budget) - cfg.val_size
    return budget[:cut], budget[cut:]


def dev_sentences(lang: str, cfg: DataConfig) -> list[Sentence]:
    return labeled_sentences(lang, "dev", cfg, limit=cfg.dev_limit)


def unlabeled_format(path: str | Path) -> str:
    """How an unlabeled file is read, as its first lines look: a column file's first column
    ("tokens"; tags, if any, are ignored), a token-per-line file, or raw text (a sentence a line)."""
    fmt = sniff_format(path)
    return "tokens" if fmt == "conll" else fmt


def unlabeled_paths(lang: str, cfg: DataConfig) -> list[tuple[Path, str]]:
    """Local unlabeled files (path, format) for a language: user files first, then the registry's."""
    user = cfg.files.get(lang, {}).get("unlabeled", [])
    out = [(Path(p), unlabeled_format(p)) for p in user]
    root = resolve_data_root(cfg.root)
    if root is not None:
        for src, path in get_language(lang).local_sources(root):
            if src.kind == "unlabeled":
                out.append((path, src.format))
    return out

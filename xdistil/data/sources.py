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


def labeled_sentences(lang: str, split: str, cfg: DataConfig, limit: int | None = None) -> list[Sentence]:
    """Gold sentences of one language and split ("train", "dev", "test")."""
    language = get_language(lang)
    tag_map = language.overrides.get("tag_map")
    user = cfg.files.get(lang, {}).get(split)
    if user:
        return _read_all(user, None, cfg, tag_map, limit)
    root = resolve_data_root(cfg.root)
    path = language.find(split, kind="labeled", data_root=root) if root else None
    if path is not None:
        return _read_all([path], "conll", cfg, tag_map, limit)
    if not language.in_registry and not cfg.files.get(lang):
        raise FileNotFoundError(f"language {lang!r} is not in the registry: pass its files "
                                f"(data.files.{lang}.{split} or --train/--dev)")
    log.warning("%s/%s: no local file under %s; loading %s from the hub", lang, split, root, language.hub.dataset)
    sents = list(load_hf_dataset(language.hub.dataset, language.hub.config, HUB_SPLITS.get(split, split),
                                 limit=limit))
    return sents


def budget_split(lang: str, cfg: DataConfig) -> tuple[list[Sentence], list[Sentence]]:
    """(train, selection) gold sentences: the head of train, with the last ``val_size`` held out."""
    budget = labeled_sentences(lang, "train", cfg, limit=cfg.labeled_budget)
    if len(budget) <= cfg.val_size:
        raise ValueError(f"{lang}: only {len(budget)} training sentences, need more than val_size={cfg.val_size}")
    cut = len(budget) - cfg.val_size
    return budget[:cut], budget[cut:]


def dev_sentences(lang: str, cfg: DataConfig) -> list[Sentence]:
    return labeled_sentences(lang, "dev", cfg, limit=cfg.dev_limit)


def unlabeled_paths(lang: str, cfg: DataConfig) -> list[tuple[Path, str]]:
    """Local unlabeled files (path, format) for a language: user files first, then the registry's."""
    user = cfg.files.get(lang, {}).get("unlabeled", [])
    out = [(Path(p), sniff_format(p)) for p in user]
    root = resolve_data_root(cfg.root)
    if root is not None:
        for src, path in get_language(lang).local_sources(root):
            if src.kind == "unlabeled":
                out.append((path, src.format))
    return out

"""The unlabeled transfer set of one language, streamed and de-duplicated.

Order (deterministic, so chunked labeling can resume): the gold budget (kept with its
tags, split "labeled"), the selection slice ("val"), then transfer-only text: train
beyond the budget with tags stripped, token files, raw sentence files, user files and
Hugging Face datasets. A sentence seen before (same words) is skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from xdistil.config import RunConfig
from xdistil.data.readers import Sentence, load_hf_dataset, read_file
from xdistil.data.sources import budget_split, labeled_sentences, unlabeled_paths


@dataclass
class TransferRow:
    words: list[str]
    lang: str
    split: str  # labeled | val | transfer
    gold: list[str] | None
    source: str


def _key(words: list[str]) -> bytes:
    return hashlib.blake2b("\x1f".join(words).encode("utf-8"), digest_size=8).digest()


def iter_transfer(cfg: RunConfig, lang: str) -> Iterator[TransferRow]:
    tc = cfg.transfer
    train, val = budget_split(lang, cfg.data)
    seen: set[bytes] = set()
    for split, sents in (("labeled", train), ("val", val)):
        for s in sents:
            seen.add(_key(s.words))
            yield TransferRow(s.words, lang, split, s.tags, s.where)

    def fresh(sents: Iterator[Sentence], source: str) -> Iterator[Sentence]:
        for s in sents:
            k = _key(s.words)
            if s.words and k not in seen:
                seen.add(k)
                yield s

    count = 0
    streams: list[tuple[str, Iterator[Sentence]]] = []
    if "train_rest" in tc.sources:
        rest = labeled_sentences(lang, "train", cfg.data)[cfg.data.labeled_budget :]
        streams.append(("train_rest", iter(rest)))
    for path, fmt in unlabeled_paths(lang, cfg.data):
        kind = "raw" if fmt == "raw" else "unlabeled"
        if kind in tc.sources or str(path) in cfg.data.files.get(lang, {}).get("unlabeled", []):
            streams.append((str(path), read_file(path, fmt)))
    for h in tc.hf:
        if h.get("lang", lang) == lang:
            streams.append((h["name"], load_hf_dataset(h["name"], h.get("config"), h.get("split", "train"))))
    for source, stream in streams:
        for s in fresh(stream, source):
            if tc.limit is not None and count >= tc.limit:
                return
            count += 1
            yield TransferRow(s.words, lang, "transfer", None, s.where or source)


def data_files(cfg: RunConfig, split: str) -> dict[str, list[str]]:
    """Per language, the local files a step reads for ``split`` ("train", "dev" or
    "unlabeled"), resolved exactly as the readers resolve them; "hub:<dataset>" where a
    labeled split comes from the hub."""
    from xdistil_languages import get_language

    from xdistil.data.roots import resolve_data_root

    root = resolve_data_root(cfg.data.root)
    out: dict[str, list[str]] = {}
    for lang in cfg.data.languages:
        if split == "unlabeled":
            out[lang] = [str(p) for p, _ in unlabeled_paths(lang, cfg.data)]
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
    from pathlib import Path

    from xdistil.fingerprint import file_digest

    out = {}
    for split in splits:
        for lang, files in data_files(cfg, split).items():
            for i, f in enumerate(files):
                key = f"{split}:{lang}:{Path(f).name}"
                key = key if key not in out else f"{key}#{i}"
                out[key] = f if f.startswith("hub:") else file_digest(f)
    return out

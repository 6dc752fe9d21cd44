"""A small synthetic NER language ("xx") that a tiny teacher can learn in seconds."""

from __future__ import annotations

import random
from pathlib import Path

from tiny import tiny_words

NAMES = {"PER": ["karimone", "latoqu"], "LOC": ["stanorbe", "quisbela"], "ORG": ["zéçàду", "думира"]}


def synth_sentences(n: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    rng = random.Random(seed)
    names = {w for ws in NAMES.values() for w in ws}
    filler = [w for w in tiny_words(200, seed=3) if w not in names]
    out = []
    for _ in range(n):
        words, tags = [], []
        for _ in range(rng.randint(3, 10)):
            if rng.random() < 0.25 and (not tags or tags[-1] == "O"):  # entities never touch
                typ = rng.choice(list(NAMES))
                span = [rng.choice(NAMES[typ]) for _ in range(rng.randint(1, 2))]
                words += span
                tags += ["B-" + typ] + ["I-" + typ] * (len(span) - 1)
            else:
                words.append(rng.choice(filler))
                tags.append("O")
        out.append((words, tags))
    return out


def write_conll(path: Path, sents, with_tags: bool = True) -> Path:
    lines = []
    for words, tags in sents:
        lines += [f"{w}\t{t}" if with_tags else w for w, t in zip(words, tags, strict=True)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def synth_files(tmp_path: Path, n_train=300, n_dev=60, n_unlabeled=120) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return {"xx": {
        "train": [str(write_conll(tmp_path / "train.tsv", synth_sentences(n_train, 1)))],
        "dev": [str(write_conll(tmp_path / "dev.tsv", synth_sentences(n_dev, 2)))],
        "unlabeled": [str(write_conll(tmp_path / "unlabeled.tokens", synth_sentences(n_unlabeled, 3), False))],
    }}

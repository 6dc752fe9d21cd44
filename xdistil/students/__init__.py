"""Students: building them from a teacher, saving and loading them.

One file per architecture, each registering itself (`xdistil.students.registry`), e.g.
`bilstm` (XtremeDistil's BiLSTM tagger) and `transformer` (a shallower copy of the
teacher); `registry.names()` lists them all. Every student satisfies
`registry.Student`: it returns a `TaggerOutput`, exposes ``param_groups()`` (top-down,
for gradual unfreezing), ``hidden_sizes`` and ``vocab_size``, and saves / loads itself.
The functions here dispatch through the registry and never name an architecture.

A student folder holds ``model.safetensors`` (never pickle), ``xdistil_student.json``
(``{arch, config, labels, extra, vocab}``; ``vocab`` is the `xdistil.vocab.student_vocabulary`
report: size, budget and pieces per word against the teacher's, per language) and the
reduced tokenizer. A Transformer student's folder is also a plain HF model folder.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from xdistil_export.atomic import atomic_dir, write_json

from xdistil import __version__
from xdistil.students import registry
from xdistil.students.registry import Student

if TYPE_CHECKING:
    from torch import nn

# Names from the architecture files, imported on first use: listing the architectures
# (config validation) must not import torch.
_LAZY = {
    "BiLSTMConfig": "bilstm",
    "BiLSTMTagger": "bilstm",
    "TransformerStudentConfig": "transformer",
    "TransformerTagger": "transformer",
    "build_transformer_student": "transformer",
    "evenly_spaced_layers": "transformer",
    "svd_embeddings": "_common",
    "WEIGHTS_FILE": "_common",
}

__all__ = [
    *_LAZY,
    "ParameterCount",
    "Student",
    "build_student",
    "config_from",
    "count_parameters",
    "is_student_dir",
    "load_student",
    "registry",
    "save_student",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


META_FILE = "xdistil_student.json"


def config_from(run) -> object:
    """The architecture config of ``run.arch`` built from the run's `xdistil.config.StudentConfig`."""
    return registry.get(run.arch).config_from(run)


def build_student(
    arch: str,
    teacher_model,
    teacher_tokenizer,
    seen_ids: Iterable[int],
    labels: Sequence[str],
    cfg=None,
    max_vocab: int | None = None,
) -> tuple[nn.Module, object]:
    """A fresh student over the teacher's pieces seen in the data, and its reduced tokenizer.

    ``seen_ids``: piece ids, or an `xdistil.vocab.PieceCounts` (`count_pieces`), which is
    needed for ``max_vocab`` and adds the vocabulary report to the student's meta.
    ``cfg``: the architecture's config (default: its defaults); the vocabulary size and
    label count are filled in from the reduced tokenizer and ``labels``.
    """
    from xdistil.vocab import student_vocabulary

    cls = registry.get(arch)
    cfg = cfg if cfg is not None else cls.Config()
    if not isinstance(cfg, cls.Config):
        raise TypeError(f"arch {arch!r} needs a {cls.Config.__name__}, got {type(cfg).__name__}")
    tokenizer, kept, report = student_vocabulary(teacher_tokenizer, seen_ids, max_vocab)
    if len(tokenizer) != len(kept):
        raise ValueError(f"reduced tokenizer has {len(tokenizer)} ids for {len(kept)} kept pieces")
    student = cls.build(teacher_model, tokenizer, kept, cfg, labels)
    student.vocab_report = report
    return student, tokenizer


class ParameterCount(NamedTuple):
    total: int
    trainable: int


def count_parameters(model: nn.Module) -> ParameterCount:
    """Parameters (each shared tensor once; buffers excluded), all and trainable."""
    params = list(model.parameters())  # deduplicated by nn.Module
    return ParameterCount(
        total=sum(p.numel() for p in params), trainable=sum(p.numel() for p in params if p.requires_grad)
    )


def save_student(model: nn.Module, tokenizer, out_dir: str | Path, extra: dict | None = None) -> Path:
    """Write a student folder atomically: built in a temporary folder, then renamed."""
    arch = registry.arch_of(model)
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        config = model.save(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {
            "arch": arch,
            "config": config,
            "labels": list(model.labels),
            "extra": extra or {},
            "vocab": getattr(model, "vocab_report", None),
            "xdistil_version": __version__,
        }
        write_json(tmp / META_FILE, meta)
        from xdistil.cards import write_card  # the folder's model card, README.md (owned by xdistil/cards.py)

        write_card(tmp, params=count_parameters(model).total)
    return out


def load_student(path: str | Path) -> tuple[nn.Module, object, list[str], dict]:
    """``(tagger, tokenizer, labels, meta)`` from a folder written by `save_student` (eval mode, CPU)."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not is_student_dir(path):
        raise FileNotFoundError(f"{path} is not a student folder (no {META_FILE})")
    meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    try:
        cls = registry.get(meta["arch"])
    except ValueError as e:
        raise ValueError(f"{path / META_FILE}: {e}") from None
    tagger = cls.load(path, meta["config"], meta["labels"])
    tagger.vocab_report = meta.get("vocab")  # kept when the student is trained on and saved again
    tokenizer = AutoTokenizer.from_pretrained(path)
    return tagger.eval(), tokenizer, list(meta["labels"]), meta


def is_student_dir(path: str | Path) -> bool:
    return (Path(path) / META_FILE).is_file()

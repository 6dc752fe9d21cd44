"""Students: building them from a teacher, saving and loading them.

Two architectures, one file each: `bilstm` (XtremeDistil's BiLSTM tagger) and
`transformer` (a shallower copy of the teacher). Both return a `TaggerOutput` and
expose ``param_groups()`` (top-down, for gradual unfreezing) and ``hidden_size(i)``.

A student folder holds ``model.safetensors`` (never pickle), ``xdistil_student.json``
(``{arch, config, labels, extra}``) and the reduced tokenizer. A Transformer student's
folder is also a plain HF model folder (``config.json`` beside the weights).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from xdistil_export.atomic import replace_dir

from xdistil import __version__
from xdistil.students.bilstm import BiLSTMConfig, BiLSTMTagger
from xdistil.students.transformer import (
    TransformerStudentConfig,
    TransformerTagger,
    build_transformer_student,
    evenly_spaced_layers,
)
from xdistil.vocab import reduce_tokenizer

__all__ = [
    "BiLSTMConfig",
    "BiLSTMTagger",
    "ParameterCount",
    "TransformerStudentConfig",
    "TransformerTagger",
    "build_student",
    "build_transformer_student",
    "count_parameters",
    "evenly_spaced_layers",
    "is_student_dir",
    "load_student",
    "save_student",
    "svd_embeddings",
]

META_FILE = "xdistil_student.json"
WEIGHTS_FILE = "model.safetensors"


def build_student(
    arch: str,
    teacher_model,
    teacher_tokenizer,
    seen_ids: Iterable[int],
    labels: Sequence[str],
    cfg: BiLSTMConfig | TransformerStudentConfig | None = None,
) -> tuple[BiLSTMTagger | TransformerTagger, object]:
    """A fresh student over the teacher's pieces seen in the data, and its reduced tokenizer.

    For ``arch="bilstm"``, ``cfg.vocab_size / num_labels / pad_id`` are filled in from the
    reduced tokenizer and ``labels``; with ``cfg.embedding_init="svd"`` the embeddings are
    `svd_embeddings` of the teacher's rows for the kept pieces.
    """
    tokenizer, kept = reduce_tokenizer(teacher_tokenizer, seen_ids)
    if len(tokenizer) != len(kept):
        raise ValueError(f"reduced tokenizer has {len(tokenizer)} ids for {len(kept)} kept pieces")
    if arch == "bilstm":
        cfg = cfg if cfg is not None else BiLSTMConfig()
        if not isinstance(cfg, BiLSTMConfig):
            raise TypeError(f"arch 'bilstm' needs a BiLSTMConfig, got {type(cfg).__name__}")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        cfg = replace(cfg, vocab_size=len(kept), num_labels=len(labels), pad_id=pad_id)
        tagger = BiLSTMTagger(cfg, labels=labels)
        if cfg.embedding_init == "svd":
            table = teacher_model.get_input_embeddings().weight  # (V_teacher, D)
            teacher_rows = table.index_select(0, torch.as_tensor(kept, device=table.device))  # (V, D)
            with torch.no_grad():
                tagger.embeddings.weight.copy_(svd_embeddings(teacher_rows, cfg.embedding_dim))
                tagger.embeddings.weight[cfg.pad_id].zero_()
        return tagger, tokenizer
    if arch == "transformer":
        cfg = cfg if cfg is not None else TransformerStudentConfig()
        if not isinstance(cfg, TransformerStudentConfig):
            raise TypeError(f"arch 'transformer' needs a TransformerStudentConfig, got {type(cfg).__name__}")
        return TransformerTagger(
            build_transformer_student(teacher_model, tokenizer, kept, cfg, labels)
        ), tokenizer
    raise ValueError(f"unknown student arch {arch!r} (bilstm | transformer)")


@torch.no_grad()
def svd_embeddings(rows: torch.Tensor, dim: int, std: float = 1.0) -> torch.Tensor:
    """Reduce teacher embedding rows (V, D) to (V, dim) by a truncated SVD (PCA).

    The rows are centred first (teacher embedding tables share a large common direction
    that carries no information about which piece is which), so ``U[:, :dim] * S[:dim]``
    are the coordinates of every piece on the top ``dim`` principal directions: by
    Eckart-Young, the rank-``dim`` matrix whose inner products (and distances) best match
    the centred teacher rows'. The result is rescaled to element std ``std`` (1.0 matches
    ``nn.Embedding``'s own N(0, 1) init, i.e. the ``"random"`` alternative), which keeps the
    geometry and gives the LSTM inputs of the usual scale. If ``dim`` exceeds the rank
    (min(V, D)), the extra columns are zero.
    """
    x = rows.detach().to("cpu", torch.float32)  # (V, D)
    x = x - x.mean(dim=0, keepdim=True)
    U, S, _ = torch.linalg.svd(x, full_matrices=False)  # (V, r), (r,)
    k = min(dim, S.numel())
    out = torch.zeros(x.shape[0], dim)  # (V, dim)
    out[:, :k] = U[:, :k] * S[:k]
    scale = out.std()
    return out * (std / scale) if scale > 0 else out


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
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        if isinstance(model, TransformerTagger):
            arch = "transformer"
            model.save_pretrained(tmp)  # config.json + model.safetensors
            config = json.loads(model.config.to_json_string())
        elif isinstance(model, BiLSTMTagger):
            from safetensors.torch import save_file

            arch = "bilstm"
            state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
            save_file(state, tmp / WEIGHTS_FILE, metadata={"format": "pt"})
            config = asdict(model.config)
        else:
            raise TypeError(f"not a student: {type(model).__name__}")
        tokenizer.save_pretrained(tmp)
        meta = {
            "arch": arch,
            "config": config,
            "labels": list(model.labels),
            "extra": extra or {},
            "xdistil_version": __version__,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_student(path: str | Path) -> tuple[nn.Module, object, list[str], dict]:
    """``(tagger, tokenizer, labels, meta)`` from a folder written by `save_student` (eval mode, CPU)."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not is_student_dir(path):
        raise FileNotFoundError(f"{path} is not a student folder (no {META_FILE})")
    meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    if meta["arch"] == "bilstm":
        from safetensors.torch import load_file

        tagger = BiLSTMTagger(BiLSTMConfig(**meta["config"]), labels=meta["labels"])
        tagger.load_state_dict(load_file(path / WEIGHTS_FILE))
    elif meta["arch"] == "transformer":
        tagger = TransformerTagger.from_pretrained(path)
    else:
        raise ValueError(f"unknown student arch {meta['arch']!r} in {path / META_FILE}")
    tokenizer = AutoTokenizer.from_pretrained(path)
    return tagger.eval(), tokenizer, list(meta["labels"]), meta


def is_student_dir(path: str | Path) -> bool:
    return (Path(path) / META_FILE).is_file()

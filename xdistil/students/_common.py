"""Pieces shared by the students that own their embedding table (BiLSTM, CNN): the SVD
initialisation from the teacher and saving / loading a plain state dict as safetensors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

WEIGHTS_FILE = "model.safetensors"


@torch.no_grad()
def centred_svd(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, U, S, Vh)``: the rows (V, D) as fp32 on the CPU, centred, and their thin SVD.

    One thread: the reductions inside mean/SVD are split by thread count, and a student
    rebuilt in another process (a resume, a rerun with other --threads) must start from
    bitwise the same embeddings."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = rows.detach().to("cpu", torch.float32)  # (V, D)
        x = x - x.mean(dim=0, keepdim=True)
        U, S, Vh = torch.linalg.svd(x, full_matrices=False)  # (V, r), (r,), (r, D)
    finally:
        torch.set_num_threads(threads)
    return x, U, S, Vh


@torch.no_grad()
def svd_embeddings(rows: torch.Tensor, dim: int, std: float = 1.0) -> torch.Tensor:
    """Reduce teacher embedding rows (V, D) to (V, dim) by a truncated SVD (PCA).

    The rows are centred first (teacher embedding tables share a large common direction
    that carries no information about which piece is which), so ``U[:, :dim] * S[:dim]``
    are the coordinates of every piece on the top ``dim`` principal directions: by
    Eckart-Young, the rank-``dim`` matrix whose inner products (and distances) best match
    the centred teacher rows'. The result is rescaled to element std ``std`` (1.0 matches
    ``nn.Embedding``'s own N(0, 1) init, i.e. the ``"random"`` alternative), which keeps the
    geometry and gives the next layer inputs of the usual scale. If ``dim`` exceeds the
    rank (min(V, D)), the extra columns are zero.
    """
    x, U, S, _ = centred_svd(rows)
    k = min(dim, S.numel())
    out = torch.zeros(x.shape[0], dim)  # (V, dim)
    out[:, :k] = U[:, :k] * S[:k]
    scale = out.std()
    return out * (std / scale) if scale > 0 else out


def check_config(cfg, positive: Sequence[str]) -> None:
    """The checks every embedding-table student config shares: sizes >= 1 (``vocab_size`` and
    ``num_labels`` may still be None), ``positive`` fields >= 1, dropout in [0, 1), a padding
    id inside the vocabulary and a known ``embedding_init``."""
    for name in ("vocab_size", "num_labels"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.vocab_size is not None and not 0 <= cfg.pad_id < cfg.vocab_size:
        raise ValueError(f"pad_id {cfg.pad_id} outside the vocabulary of {cfg.vocab_size}")
    if cfg.embedding_init not in ("svd", "random"):
        raise ValueError(f"embedding_init must be 'svd' or 'random', got {cfg.embedding_init!r}")


def sized_config(cfg, tokenizer, kept: Sequence[int], labels: Sequence[str]):
    """``cfg`` with ``vocab_size / num_labels / pad_id`` taken from the reduced tokenizer and labels."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return replace(cfg, vocab_size=len(kept), num_labels=len(labels), pad_id=pad_id)


@torch.no_grad()
def init_embeddings(table: nn.Embedding, teacher_model: nn.Module, kept: Sequence[int], pad_id: int) -> None:
    """Fill ``table`` with `svd_embeddings` of the teacher's rows for the kept pieces; pad row zero."""
    teacher = teacher_model.get_input_embeddings().weight  # (V_teacher, D)
    rows = teacher.index_select(0, torch.as_tensor(list(kept), device=teacher.device))  # (V, D)
    table.weight.copy_(svd_embeddings(rows, table.embedding_dim))
    table.weight[pad_id].zero_()


class StateDictStudent:
    """Mixin: a student saved as its state dict (safetensors) plus its dataclass config.

    The class needs ``Config`` (the dataclass), ``__init__(config, labels)`` and an
    ``embeddings`` table."""

    @property
    def vocab_size(self) -> int:
        return int(self.embeddings.num_embeddings)

    def _set_config(self, config, labels: Sequence[str] | None) -> None:
        """Check and keep ``config`` (sized: vocab_size, num_labels) and the label names."""
        name = type(config).__name__
        if config.vocab_size is None or config.num_labels is None:
            raise ValueError(f"{name}.vocab_size and num_labels must be set (build_student does it)")
        if labels is not None and len(labels) != config.num_labels:
            raise ValueError(f"{len(labels)} labels for num_labels={config.num_labels}")
        self.config = config
        self.labels = tuple(labels) if labels is not None else tuple(str(i) for i in range(config.num_labels))

    def hidden_size(self, layer_index: int) -> int:
        return self.hidden_sizes[layer_index]

    @classmethod
    def build(cls, teacher_model, tokenizer, kept, cfg, labels):
        """Sized to the reduced vocabulary; ``embedding_init="svd"``: the teacher's rows, SVD-reduced."""
        cfg = sized_config(cfg, tokenizer, kept, labels)
        tagger = cls(cfg, labels=labels)
        if cfg.embedding_init == "svd":
            init_embeddings(tagger.embeddings, teacher_model, kept, cfg.pad_id)
        return tagger

    def save(self, folder: Path) -> dict:
        from safetensors.torch import save_file

        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        save_file(state, Path(folder) / WEIGHTS_FILE, metadata={"format": "pt"})
        return asdict(self.config)

    @classmethod
    def load(cls, folder: Path, config: dict, labels: Sequence[str]):
        from safetensors.torch import load_file

        model = cls(cls.Config(**config), labels=labels)
        model.load_state_dict(load_file(Path(folder) / WEIGHTS_FILE))
        return model

"""Distillation losses as plain tensor functions (TextBrewer style), one teacher or many.

Shapes: ``...`` is any leading shape (usually ``(B, T)``), ``C`` tags, ``D`` hidden width,
``K >= 1`` teachers. Teacher tensors always carry the leading ``K`` axis, so one teacher
is simply ``K = 1`` (``x.unsqueeze(0)``): there is no separate single-teacher code path.

Every loss takes a bool ``mask`` of shape ``...``: positions where it is False contribute
nothing, the result is the mean over the True positions, and an empty mask gives a zero
that still carries a (zero) gradient, so a batch without scored positions is harmless.
Per-teacher terms are combined as ``sum_k weights[k] * loss_k`` (default ``1 / K`` each);
`teacher_weights` gives MT-BERT's weights (arXiv 2106.01023): a teacher that fits the gold
labels better (lower task loss) counts more. Everything is computed in float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def hard_ce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on gold (or teacher-argmax) tags.

    logits (..., C), targets (...) long, mask (...) bool -> scalar. Positions with a
    negative target (-100, the HF "ignore" label) are left out as if masked.
    """
    mask = _mask(mask, logits) & (targets.to(logits.device) >= 0)  # (...)
    s = logits[mask].float()  # (N, C)
    if s.shape[0] == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(s, targets.to(logits.device)[mask].long())


def soft_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
    kind: str = "kl",
    temperature: float = 1.0,
) -> torch.Tensor:
    """Match the teachers' tag scores.

    student_logits (..., C), teacher_logits (K, ..., C), mask (...), weights (K,) -> scalar.
    ``kind="kl"``: KL(teacher_T || student_T) * T^2 with softmax at temperature T, summed
    over tags (Hinton et al.; the T^2 keeps gradient size independent of T).
    ``kind="mse"``: mean squared error of the raw logits, mean over tags too (XtremeDistil
    stage 2; ``temperature`` is ignored).
    """
    _check_teacher_shape(student_logits, teacher_logits)
    mask = _mask(mask, student_logits)
    s = student_logits[mask].float()  # (N, C)
    t = teacher_logits[:, mask].float()  # (K, N, C)
    if s.shape[0] == 0:
        return student_logits.sum() * 0.0
    if kind == "kl":
        log_p_s = F.log_softmax(s / temperature, dim=-1)  # (N, C)
        log_p_t = F.log_softmax(t / temperature, dim=-1)  # (K, N, C)
        per_teacher = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean(-1) * temperature**2  # (K,)
    elif kind == "mse":
        per_teacher = (s - t).pow(2).mean(dim=(-2, -1))  # (K,)
    else:
        raise ValueError(f"soft_loss kind must be 'kl' or 'mse', got {kind!r}")
    return _combine(per_teacher, weights)


def hidden_loss(
    student_proj: torch.Tensor | Sequence[torch.Tensor],
    teacher_hidden: torch.Tensor | Sequence[torch.Tensor],
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
    kind: str = "mse",
) -> torch.Tensor:
    """Match intermediate representations, each teacher through its own projection.

    student_proj: the student state projected into each teacher's space (`Projection`),
    K tensors (..., D_k) as a list, or one (K, ..., D) tensor when all D_k are equal.
    teacher_hidden: the teachers' chosen layers, the same shapes. mask (...), weights (K,).
    ``kind``: ``"mse"`` (mean over positions and features; XtremeDistil stage 1, MT-BERT's
    hidden loss), ``"cosine"`` (1 - cosine similarity per position) or ``"kl"``
    (KL(softmax(teacher) || softmax(student)) over the feature axis).
    """
    if len(student_proj) != len(teacher_hidden):
        raise ValueError(f"{len(student_proj)} student projections for {len(teacher_hidden)} teachers")
    terms = []
    for s_k, t_k in zip(student_proj, teacher_hidden, strict=True):
        if s_k.shape != t_k.shape:
            raise ValueError(f"projected student {tuple(s_k.shape)} vs teacher {tuple(t_k.shape)}")
        m = _mask(mask, s_k)
        s = s_k[m].float()  # (N, D_k)
        t = t_k[m].float()  # (N, D_k)
        if s.shape[0] == 0:
            terms.append(s_k.sum() * 0.0)
        elif kind == "mse":
            terms.append((s - t).pow(2).mean())
        elif kind == "cosine":
            terms.append((1.0 - F.cosine_similarity(s, t, dim=-1)).mean())
        elif kind == "kl":
            log_p_s, log_p_t = F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1)  # (N, D_k)
            terms.append((log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean())
        else:
            raise ValueError(f"hidden_loss kind must be 'mse', 'cosine' or 'kl', got {kind!r}")
    return _combine(torch.stack(terms), weights)  # (K,) -> scalar


class Projection(nn.Module):
    """Student state -> teacher layer width: Linear + GELU (XtremeDistil stage 1)."""

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.linear = nn.Linear(student_dim, teacher_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.linear(x))  # (..., student_dim) -> (..., teacher_dim)


def teacher_weights(task_losses: torch.Tensor, mode: str = "mtbert") -> torch.Tensor:
    """Per-teacher weights (K,) summing to 1, from their task losses (K,); detached.

    ``"mtbert"``: w_k proportional to 1 / (1 + L_k) (MT-BERT: the better a teacher fits the
    gold labels, the more it counts); ``"uniform"``: 1 / K; ``"best"``: all weight on the
    teacher with the smallest loss.
    """
    losses = task_losses.detach().float()  # (K,)
    if losses.dim() != 1 or losses.numel() == 0:
        raise ValueError(f"task_losses must have shape (K,), got {tuple(task_losses.shape)}")
    if mode == "mtbert":
        w = 1.0 / (1.0 + losses)
        return w / w.sum()
    if mode == "uniform":
        return torch.full_like(losses, 1.0 / losses.numel())
    if mode == "best":
        return F.one_hot(losses.argmin(), losses.numel()).to(losses.dtype)
    raise ValueError(f"teacher weighting mode must be 'mtbert', 'uniform' or 'best', got {mode!r}")


def per_teacher_task_loss(
    teacher_logits: torch.Tensor, gold: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of each teacher against the gold tags.

    teacher_logits (K, ..., C), gold (...) long, mask (...) -> (K,). Negative gold tags
    are left out; an empty mask gives zeros.
    """
    K, C = teacher_logits.shape[0], teacher_logits.shape[-1]
    if teacher_logits.shape[1:-1] != gold.shape:
        raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} vs gold {tuple(gold.shape)}")
    gold = gold.to(teacher_logits.device)
    mask = _mask(mask, teacher_logits[0]) & (gold >= 0)  # (...)
    t = teacher_logits[:, mask].float()  # (K, N, C)
    N = t.shape[1]
    if N == 0:
        return teacher_logits.sum(dim=tuple(range(1, teacher_logits.dim()))) * 0.0
    g = gold[mask].long().expand(K, N)  # (K, N)
    return F.cross_entropy(t.reshape(K * N, C), g.reshape(K * N), reduction="none").view(K, N).mean(-1)


def _mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The bool mask for ``x`` (..., D) on its device; its shape must be ``x.shape[:-1]``."""
    if tuple(mask.shape) != tuple(x.shape[:-1]):
        raise ValueError(
            f"mask {tuple(mask.shape)} does not match tensor {tuple(x.shape)} without its last dim"
        )
    return mask.to(device=x.device, dtype=torch.bool)


def _check_teacher_shape(student: torch.Tensor, teacher: torch.Tensor) -> None:
    if teacher.dim() != student.dim() + 1 or teacher.shape[1:] != student.shape:
        raise ValueError(
            f"teacher tensor {tuple(teacher.shape)} must be (K, *{tuple(student.shape)}): add the K axis"
        )


def _combine(per_teacher: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """sum_k w_k * loss_k with w = 1/K by default. per_teacher (K,), weights (K,) -> scalar."""
    K = per_teacher.shape[0]
    if weights is None:
        return per_teacher.mean()
    weights = torch.as_tensor(weights, dtype=per_teacher.dtype, device=per_teacher.device)
    if weights.shape != (K,):
        raise ValueError(f"weights must have shape ({K},), got {tuple(weights.shape)}")
    return (weights * per_teacher).sum()

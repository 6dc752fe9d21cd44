"""Losses against hand computations; masking; one teacher vs many."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xdistil.losses import (
    Projection,
    hard_ce,
    hidden_loss,
    per_teacher_task_loss,
    soft_loss,
    teacher_weights,
)

B, T, C, D = 2, 5, 4, 6


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(B, T, C, generator=g, requires_grad=True)
    teachers = torch.randn(3, B, T, C, generator=g)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 0, 0]], dtype=torch.bool)
    gold = torch.randint(0, C, (B, T), generator=g)
    return student, teachers, mask, gold


def test_hard_ce_is_the_mean_cross_entropy_over_masked_positions(batch):
    student, _, mask, gold = batch
    expected = (
        -sum(F.log_softmax(student[b, t], -1)[gold[b, t]] for b, t in mask.nonzero().tolist()) / mask.sum()
    )
    assert torch.allclose(hard_ce(student, gold, mask), expected)
    ignored = gold.clone()
    ignored[~mask] = -100  # masked-out targets may be anything
    ignored[0, 0] = -100  # a -100 inside the mask is left out too
    sub = mask.clone()
    sub[0, 0] = False
    assert torch.allclose(hard_ce(student, ignored, mask), hard_ce(student, gold, sub))


def test_kl_with_temperature_matches_the_formula(batch):
    student, teachers, mask, _ = batch
    Tmp = 2.0
    t, s = teachers[0][mask], student[mask]  # (N, C)
    p_t = torch.softmax(t / Tmp, -1)
    manual = (p_t * (torch.log(p_t) - torch.log(torch.softmax(s / Tmp, -1)))).sum(-1).mean() * Tmp**2
    got = soft_loss(student, teachers[:1], mask, kind="kl", temperature=Tmp)
    assert torch.allclose(got, manual, atol=1e-6)
    kl_div = F.kl_div(F.log_softmax(s / Tmp, -1), F.softmax(t / Tmp, -1), reduction="batchmean")
    assert torch.allclose(got, 4 * kl_div, atol=1e-6)  # the T^2 = 4 factor


def test_mse_on_raw_logits(batch):
    student, teachers, mask, _ = batch
    manual = ((student[mask] - teachers[0][mask]) ** 2).mean()
    got = soft_loss(student, teachers[:1], mask, kind="mse", temperature=5.0)  # no temperature for MSE
    assert torch.allclose(got, manual)


@pytest.mark.parametrize("kind", ["kl", "mse"])
def test_masked_positions_do_not_change_the_value(batch, kind):
    student, teachers, mask, _ = batch
    before = soft_loss(student, teachers, mask, kind=kind)
    noisy_s = torch.where(mask[..., None], student, student + 100.0)
    noisy_t = torch.where(mask[..., None], teachers, -teachers * 7)
    assert torch.allclose(soft_loss(noisy_s, noisy_t, mask, kind=kind), before)


@pytest.mark.parametrize("kind", ["kl", "mse"])
def test_many_teachers_is_the_weighted_sum_of_single_teacher_losses(batch, kind):
    student, teachers, mask, _ = batch
    w = torch.tensor([0.5, 0.3, 0.2])
    singles = torch.stack([soft_loss(student, teachers[k : k + 1], mask, kind=kind) for k in range(3)])
    assert torch.allclose(soft_loss(student, teachers, mask, w, kind=kind), (w * singles).sum())
    assert torch.allclose(soft_loss(student, teachers, mask, kind=kind), singles.mean())  # default 1/K


def test_gradients_reach_only_masked_positions(batch):
    student, teachers, mask, gold = batch
    loss = soft_loss(student, teachers, mask) + hard_ce(student, gold, mask)
    loss.backward()
    grad_norm = student.grad.norm(dim=-1)  # (B, T)
    assert (grad_norm[mask] > 0).all() and (grad_norm[~mask] == 0).all()


def test_empty_mask_gives_zero_with_grad(batch):
    student, teachers, _, gold = batch
    empty = torch.zeros(B, T, dtype=torch.bool)
    proj = torch.randn(1, B, T, D, requires_grad=True)
    losses = [
        hard_ce(student, gold, empty),
        soft_loss(student, teachers, empty),
        hidden_loss(proj, torch.randn(1, B, T, D), empty),
    ]
    for loss in losses:
        assert loss.item() == 0.0 and loss.requires_grad
    sum(losses).backward()
    assert (student.grad == 0).all() and (proj.grad == 0).all()
    assert torch.equal(per_teacher_task_loss(teachers, gold, empty), torch.zeros(3))


def test_shape_errors_are_explicit(batch):
    student, teachers, mask, _ = batch
    with pytest.raises(ValueError, match="K axis"):
        soft_loss(student, teachers[0], mask)
    with pytest.raises(ValueError, match="mask"):
        soft_loss(student, teachers, mask[:, :3])
    with pytest.raises(ValueError, match="weights"):
        soft_loss(student, teachers, mask, torch.ones(2))


def test_hidden_loss_kinds_by_hand():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(B, T, D, generator=g), torch.randn(B, T, D, generator=g)
    mask = torch.rand(B, T, generator=g) > 0.3
    sm, tm = s[mask], t[mask]
    assert torch.allclose(hidden_loss([s], [t], mask, kind="mse"), ((sm - tm) ** 2).mean())
    cos = (sm * tm).sum(-1) / (sm.norm(dim=-1) * tm.norm(dim=-1))
    assert torch.allclose(hidden_loss([s], [t], mask, kind="cosine"), (1 - cos).mean(), atol=1e-6)
    p_t = torch.softmax(tm, -1)
    kl = (p_t * (p_t.log() - torch.log_softmax(sm, -1))).sum(-1).mean()
    assert torch.allclose(hidden_loss([s], [t], mask, kind="kl"), kl, atol=1e-6)


def test_hidden_loss_per_teacher_widths_and_weights():
    g = torch.Generator().manual_seed(2)
    mask = torch.rand(B, T, generator=g) > 0.3
    widths = [6, 10]  # teachers of different widths: one projection each
    s = [torch.randn(B, T, d, generator=g) for d in widths]
    t = [torch.randn(B, T, d, generator=g) for d in widths]
    w = torch.tensor([0.7, 0.3])
    singles = [hidden_loss([s[k]], [t[k]], mask) for k in range(2)]
    assert torch.allclose(hidden_loss(s, t, mask, w), w[0] * singles[0] + w[1] * singles[1])
    same = [torch.randn(B, T, D, generator=g) for _ in range(2)]
    tgt = [torch.randn(B, T, D, generator=g) for _ in range(2)]
    assert torch.allclose(
        hidden_loss(torch.stack(same), torch.stack(tgt), mask), hidden_loss(same, tgt, mask)
    )
    with pytest.raises(ValueError, match="teachers"):
        hidden_loss(s, t[:1], mask)


def test_projection_is_linear_then_gelu():
    proj = Projection(5, 8)
    x = torch.randn(B, T, 5)
    y = proj(x)
    assert y.shape == (B, T, 8)
    assert torch.allclose(y, F.gelu(x @ proj.linear.weight.T + proj.linear.bias))


def test_teacher_weights():
    losses = torch.tensor([0.2, 1.5, 0.7], requires_grad=True)
    w = teacher_weights(losses)
    expected = torch.tensor([1 / 1.2, 1 / 2.5, 1 / 1.7])
    assert torch.allclose(w, expected / expected.sum())
    assert w.sum().item() == pytest.approx(1.0) and not w.requires_grad
    assert w.argsort().tolist() == losses.argsort(descending=True).tolist()  # lower loss, larger weight
    assert torch.allclose(teacher_weights(losses, "uniform"), torch.full((3,), 1 / 3))
    assert teacher_weights(losses, "best").tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        teacher_weights(losses, "nope")


def test_per_teacher_task_loss_and_weighting(batch):
    _, teachers, mask, gold = batch
    good = F.one_hot(gold, C).float() * 10.0  # a teacher that nails the gold tags
    stacked = torch.cat([teachers, good[None]])  # (4, B, T, C)
    got = per_teacher_task_loss(stacked, gold, mask)
    for k in range(4):
        assert torch.allclose(got[k], F.cross_entropy(stacked[k][mask], gold[mask]))
    assert got.argmin().item() == 3 and teacher_weights(got).argmax().item() == 3
    assert got[3].item() < 1e-3 and not math.isnan(got.sum().item())

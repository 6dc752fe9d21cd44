"""The loss terms a distillation stage can weigh, found by name (TextBrewer's ``MATCH_LOSS_MAP``).

`TERMS` is the one list: `xdistil.config` validates ``StageSpec.losses`` against it and
generates the ``--help`` text from it, and `xdistil.stages` computes a stage's loss as
``sum(weight * TERMS[name].compute(inputs))``. Adding a term is one entry here (and a tensor
function in `xdistil.losses` when the term needs a new one).

Importing this module does not import torch: the config layer and ``--help`` read `TERMS`
before the CLI sets its thread settings, which must happen before torch starts. The tensor
work lives in `xdistil.losses`, imported on the first computation.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TermInputs:
    """What one batch offers a loss term; N scored words, C tags, K teachers, D_k widths."""

    logits: Any
    """The student's word logits (N, C)."""
    gold: Any
    """Gold tag ids (N,), -100 where a word has none."""
    teacher_logits: Any
    """The teachers' word logits (K, N, C)."""
    weights: Any
    """Per-teacher weights (K,) (MT-BERT: lower task loss, more weight; 1/K when uniform)."""
    soft_kind: str
    temperature: float
    hidden_kind: str
    """The hidden loss: mse | kl | cosine (`MatchSpec.loss`)."""
    projections: Callable[[], list]
    """The student's state projected onto each teacher's layer: K x (N, D_k), computed on demand."""
    teacher_hidden: Any
    """The teachers' matched layer: K x (N, D_k)."""


@dataclass(frozen=True)
class LossTerm:
    doc: str
    """One line for --help and the docs."""
    compute: Callable[[TermInputs], Any]
    """TermInputs -> a scalar tensor (mean over the scored words)."""


def _losses():
    return importlib.import_module("xdistil.losses")  # torch, on first use only (see the module doc)


def _scored(x: TermInputs):
    return x.logits.new_ones(x.logits.shape[0], dtype=bool)  # (N,) every word the batch scores


def _gold(x: TermInputs):
    return _losses().hard_ce(x.logits, x.gold.clamp(min=0), x.gold != -100)  # -100: IGNORE_INDEX


def _hard(x: TermInputs):
    # several teachers vote through their weighted probabilities
    target = (x.weights[:, None, None] * x.teacher_logits.softmax(-1)).sum(0).argmax(-1)  # (N,)
    return _losses().hard_ce(x.logits, target, _scored(x))


def _soft(x: TermInputs):
    return _losses().soft_loss(x.logits, x.teacher_logits, _scored(x), x.weights, x.soft_kind, x.temperature)


def _hidden(x: TermInputs):
    return _losses().hidden_loss(x.projections(), x.teacher_hidden, _scored(x), x.weights, x.hidden_kind)


TERMS: dict[str, LossTerm] = {
    "gold": LossTerm("cross-entropy on the gold tags (words without one are left out)", _gold),
    "hard": LossTerm("cross-entropy on the teachers' tags (several teachers vote by weight)", _hard),
    "soft": LossTerm("the teachers' logits: mse (XtremeDistil) or kl with temperature (stage soft_kind)", _soft),
    "hidden": LossTerm("the projected student state against a teacher layer (distill.match)", _hidden),
}

OUTPUT_TERMS = ("gold", "hard", "soft")
"""Terms that train the output layer: a stage with one of them selects on F1."""


def help_text() -> str:
    """``name: doc`` for every term, for the config field's --help."""
    return "; ".join(f"{name}: {term.doc}" for name, term in TERMS.items())

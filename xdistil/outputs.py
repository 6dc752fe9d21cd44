"""The one typed output through which every model (teacher or student) meets the losses.

An *adaptor* in the TextBrewer sense: teachers (any Hugging Face token classifier) and
students (BiLSTM, small Transformer) all return a `TaggerOutput`, so losses, stages and
evaluation never depend on an architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TaggerOutput:
    """Sub-word level outputs plus the word mask that picks one position per word.

    logits:        (B, T, C) tag scores per sub-word position.
    hidden_states: tuple of (B, T, H_l) tensors, one per layer the model exposes
                   (index 0 = embeddings output, as in Hugging Face models).
    word_mask:     (B, T) bool, True at the first sub-word of every word that is
                   scored in this window (the standard token-classification convention).
    """

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...]
    word_mask: torch.Tensor

    def words(self, x: torch.Tensor) -> torch.Tensor:
        """Gather a (B, T, D) tensor at the word positions -> (N_words, D), row-major order."""
        return x[self.word_mask]

    @property
    def word_logits(self) -> torch.Tensor:  # (N_words, C)
        return self.words(self.logits)

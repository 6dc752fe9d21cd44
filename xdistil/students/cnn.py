"""Iterated dilated CNN tagger student, after ID-CNN (Strubell, Verga, Belanger & McCallum,
"Fast and Accurate Entity Recognition with Iterated Dilated Convolutions", EMNLP 2017,
arXiv 1702.02098).

word pieces -> embedding (E, SVD-initialised from the teacher's embeddings like the
BiLSTM's) -> dropout -> 1D convolution to H channels -> a *block* of dilated 1D
convolutions (kernel k, dilations 1, 2, 4, ...: the context doubles with every layer)
applied ``iterations`` times with the same weights -> dropout -> linear tag scores per
word piece. One block of kernel 3 sees 1 + 2 * (1 + 1 + 2 + 4) = 17 pieces; every
iteration widens that without new parameters. Unlike a recurrent student all positions
are computed at once, which is what makes ID-CNN fast on long inputs.

Padding: every convolution input is zeroed at padding positions, and a convolution pads
its borders with zeros too, so the scores of a sentence are the same alone or in a
padded batch (and in the exported ONNX graph: plain Conv / Relu / Mul, no special ops).
``hidden_states`` are the embeddings and the output of every iteration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from xdistil.outputs import TaggerOutput
from xdistil.students._common import StateDictStudent, check_config
from xdistil.students.registry import register


@dataclass
class CNNConfig:
    vocab_size: int | None = None  # rows of the embedding table; None = set by build_student
    num_labels: int | None = None  # tags; None = set by build_student from the label list
    embedding_dim: int = 50  # E
    hidden_dim: int = 200  # H: channels of every convolution
    kernel_size: int = 3  # odd, so a convolution is centred on its position
    dilations: tuple[int, ...] = (1, 2, 4)  # one convolution per entry, in the block
    iterations: int = 1  # times the block is applied (shared weights); student.num_layers
    dropout: float = 0.2  # on the embeddings, before every convolution and before the classifier
    pad_id: int = 0  # padding id of the (reduced) tokenizer; its embedding row stays zero
    embedding_init: str = "svd"  # "svd" (teacher embeddings, reduced) | "random"; used by build_student

    def __post_init__(self):
        self.dilations = tuple(int(d) for d in self.dilations)  # a list when read back from JSON
        check_config(self, ("embedding_dim", "hidden_dim", "iterations"))
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}")
        if not self.dilations or min(self.dilations) < 1:
            raise ValueError(f"dilations must be positive integers, got {self.dilations}")


def _conv(c_in: int, c_out: int, kernel_size: int, dilation: int) -> nn.Conv1d:
    # "same" length: (k - 1) * dilation / 2 zeros on each side
    return nn.Conv1d(c_in, c_out, kernel_size, dilation=dilation, padding=(kernel_size - 1) // 2 * dilation)


@register("cnn")
class CNNTagger(StateDictStudent, nn.Module):
    Config = CNNConfig

    def __init__(self, config: CNNConfig, labels: Sequence[str] | None = None):
        super().__init__()
        self._set_config(config, labels)
        E, H, k = config.embedding_dim, config.hidden_dim, config.kernel_size
        self.embeddings = nn.Embedding(config.vocab_size, E, padding_idx=config.pad_id)
        self.dropout = nn.Dropout(config.dropout)
        self.input_conv = _conv(E, H, k, 1)
        self.block = nn.ModuleList([_conv(H, H, k, d) for d in config.dilations])
        self.classifier = nn.Linear(H, config.num_labels)

    @classmethod
    def config_from(cls, run) -> CNNConfig:
        return CNNConfig(embedding_dim=run.embedding_dim, hidden_dim=run.hidden_dim, iterations=run.num_layers,
                         dropout=run.dropout, embedding_init=run.embedding_init)

    @staticmethod
    def describe(run: Mapping) -> str:
        return (f"E={run['embedding_dim']}, H={run['hidden_dim']}, dilated block x{run['num_layers']}")

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        """Width of each entry of ``TaggerOutput.hidden_states``: embeddings, then every iteration."""
        return (self.config.embedding_dim,) + (self.config.hidden_dim,) * self.config.iterations

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_mask: torch.Tensor
    ) -> TaggerOutput:
        emb = self.embeddings(input_ids)  # (B, T, E)
        keep = attention_mask.unsqueeze(1).to(emb.dtype)  # (B, 1, T): zero at padding
        x = self.dropout(emb).transpose(1, 2) * keep  # (B, E, T): channels first for Conv1d
        x = torch.relu(self.input_conv(x)) * keep  # (B, H, T)
        hidden = [emb]
        for _ in range(self.config.iterations):
            for conv in self.block:  # the same weights in every iteration
                x = torch.relu(conv(self.dropout(x))) * keep  # (B, H, T)
            hidden.append(x.transpose(1, 2))  # (B, T, H)
        logits = self.classifier(self.dropout(hidden[-1]))  # (B, T, C)
        return TaggerOutput(logits=logits, hidden_states=tuple(hidden), word_mask=word_mask.bool())

    def param_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """Parameters top-down, the order in which gradual unfreezing releases them."""
        return [
            ("output", list(self.classifier.parameters())),
            ("encoder", [*self.input_conv.parameters(), *self.block.parameters()]),
            ("embeddings", list(self.embeddings.parameters())),
        ]

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

Two options, both off in `CNNConfig` (a saved student without them loads as it was):

- ``shape_dim``: the BiLSTM's word-shape embedding (casing, digits, punctuation, word start;
  `xdistil.vocab.piece_shapes`) joined to every piece's, looked up from the piece id through
  a fixed buffer (one more Gather in ONNX, no new graph input).
- ``residual``: every dilated convolution adds its input to its output (x + relu(conv(x))),
  so a block applied several times still trains; the input convolution stays plain.

**Convolutions as matrix products** (issue 35). A convolution of kernel k and dilation d
is computed channels-last as one matrix product: the k shifted copies of the (zero-padded)
input are joined along the channels, (B, T, k*C_in), and multiplied by the kernel laid
out as (k*C_in, C_out) -- the same numbers as ``nn.Conv1d`` with the same weights (the
parameters stay ``Conv1d`` modules, so the state dict is unchanged). The exported graph then
holds Pad / Slice / Concat / MatMul instead of Conv: onnxruntime's dynamic int8 quantization
turns those MatMuls into VNNI-backed integer products, where a quantized Conv becomes a
ConvInteger that ran the student 3.7-5.6x *slower* than fp32 (benchmarks/results/latency/cnn).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from xdistil.outputs import TaggerOutput
from xdistil.students._common import StateDictStudent, check_config
from xdistil.students.registry import register
from xdistil.vocab import N_SHAPES, piece_shapes


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
    shape_dim: int = 0  # width of the word-shape embedding joined to each piece's (0 = none)
    residual: bool = False  # dilated convolutions add their input to their output

    def __post_init__(self):
        self.dilations = tuple(int(d) for d in self.dilations)  # a list when read back from JSON
        check_config(self, ("embedding_dim", "hidden_dim", "iterations"))
        if self.shape_dim < 0:
            raise ValueError(f"shape_dim must be >= 0, got {self.shape_dim}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}")
        if not self.dilations or min(self.dilations) < 1:
            raise ValueError(f"dilations must be positive integers, got {self.dilations}")


def _conv(c_in: int, c_out: int, kernel_size: int, dilation: int) -> nn.Conv1d:
    # "same" length: (k - 1) * dilation / 2 zeros on each side
    return nn.Conv1d(c_in, c_out, kernel_size, dilation=dilation, padding=(kernel_size - 1) // 2 * dilation)


def conv_last(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """``conv`` applied to the channels-last ``x`` (B, T, C_in) -> (B, T, C_out) as one matrix
    product over the k shifted copies of the zero-padded input (see the module doc); equal to
    ``conv(x.transpose(1, 2)).transpose(1, 2)``."""
    k, d, p = conv.kernel_size[0], conv.dilation[0], conv.padding[0]
    T = x.shape[1]
    padded = nn.functional.pad(x, (0, 0, p, p))  # (B, T + 2p, C_in): zeros before and after
    cols = torch.cat([padded[:, j * d: j * d + T] for j in range(k)], dim=-1) if k > 1 else padded
    # weight (C_out, C_in, k) -> (C_out, k * C_in) with column j * C_in + i = weight[:, i, j]
    weight = conv.weight.permute(0, 2, 1).reshape(conv.out_channels, -1)
    return nn.functional.linear(cols, weight, conv.bias)


@register("cnn")
class CNNTagger(StateDictStudent, nn.Module):
    Config = CNNConfig

    def __init__(self, config: CNNConfig, labels: Sequence[str] | None = None):
        super().__init__()
        self._set_config(config, labels)
        E, H, k = config.embedding_dim, config.hidden_dim, config.kernel_size
        self.embeddings = nn.Embedding(config.vocab_size, E, padding_idx=config.pad_id)
        self.shapes = None
        if config.shape_dim:
            self.shapes = nn.Embedding(N_SHAPES, config.shape_dim)
            # piece id -> shape class, filled by `build` from the vocabulary (saved in the state dict)
            self.register_buffer("piece_shape", torch.zeros(config.vocab_size, dtype=torch.long))
        self.dropout = nn.Dropout(config.dropout)
        self.input_conv = _conv(E + config.shape_dim, H, k, 1)
        self.block = nn.ModuleList([_conv(H, H, k, d) for d in config.dilations])
        self.classifier = nn.Linear(H, config.num_labels)

    @classmethod
    def config_from(cls, run) -> CNNConfig:
        return CNNConfig(embedding_dim=run.embedding_dim, hidden_dim=run.hidden_dim, iterations=run.num_layers,
                         dropout=run.dropout, embedding_init=run.embedding_init, shape_dim=run.shape_dim,
                         residual=run.residual)

    @classmethod
    def build(cls, teacher_model, tokenizer, kept, cfg, labels):
        """As `StateDictStudent.build`, plus the piece -> shape lookup from the reduced vocabulary."""
        tagger = super().build(teacher_model, tokenizer, kept, cfg, labels)
        if tagger.shapes is not None:
            tagger.piece_shape.copy_(torch.as_tensor(piece_shapes(tokenizer), dtype=torch.long))
        return tagger

    @staticmethod
    def describe(run: Mapping) -> str:
        S = run.get("shape_dim") or 0
        return (f"E={run['embedding_dim']}" + (f" + shape {S}" if S else "") + f", H={run['hidden_dim']}, "
                + ("residual " if run.get("residual") else "") + f"dilated block x{run['num_layers']}")

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        """Width of each entry of ``TaggerOutput.hidden_states``: embeddings, then every iteration."""
        return (self.config.embedding_dim + self.config.shape_dim,) + (self.config.hidden_dim,) * self.config.iterations

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_mask: torch.Tensor
    ) -> TaggerOutput:
        emb = self.embeddings(input_ids)  # (B, T, E)
        if self.shapes is not None:
            emb = torch.cat([emb, self.shapes(self.piece_shape[input_ids])], dim=-1)  # (B, T, E + S)
        keep = attention_mask.unsqueeze(-1).to(emb.dtype)  # (B, T, 1): zero at padding
        x = self.dropout(emb) * keep  # (B, T, E + S), channels last throughout
        x = torch.relu(conv_last(x, self.input_conv)) * keep  # (B, T, H)
        hidden = [emb]
        for _ in range(self.config.iterations):
            for conv in self.block:  # the same weights in every iteration
                y = torch.relu(conv_last(self.dropout(x), conv))
                x = (x + y if self.config.residual else y) * keep  # (B, T, H)
            hidden.append(x)
        logits = self.classifier(self.dropout(hidden[-1]))  # (B, T, C)
        return TaggerOutput(logits=logits, hidden_states=tuple(hidden), word_mask=word_mask.bool())

    def param_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """Parameters top-down, the order in which gradual unfreezing releases them."""
        return [
            ("output", list(self.classifier.parameters())),
            ("encoder", [*self.input_conv.parameters(), *self.block.parameters()]),
            ("embeddings", [*self.embeddings.parameters(),
                            *(self.shapes.parameters() if self.shapes is not None else ())]),
        ]

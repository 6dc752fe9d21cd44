"""BiLSTM tagger student, after XtremeDistil (Mukherjee & Hassan Awadallah, ACL 2020,
arXiv 2004.05686) and its precursor arXiv 1910.01769.

word pieces -> embedding (E, initialised from the SVD-reduced teacher embeddings by
`xdistil.students.build_student`) -> dropout -> BiLSTM (H per direction) -> dropout ->
linear tag scores per word piece. The paper's best small student is E=50, H=200
(about 5.1M parameters with mBERT's vocabulary, 35x smaller than the teacher).

Three levers on the input side, all keeping the exported graph's inputs (piece ids,
attention mask) unchanged (issue 23). Here all three are off (0), so a saved student without
them loads as it was; the run config (`xdistil.config.StudentConfig`) turns ``shape_dim`` on
(16) by default:

- ``factor_dim`` (ALBERT, Lan et al. 2020, arXiv 1909.11942): a factorized table, V x e
  pieces then a linear e -> E, so more pieces fit a parameter budget. The table is the
  top-e SVD of the teacher's rows and the projection starts as the identity on them (the
  same start as the top-E SVD, cut to e directions).
- ``shape_dim``: a word-shape embedding beside each piece (casing, digits, punctuation,
  word start or continuation; `xdistil.vocab.piece_shapes`), looked up through a fixed
  piece-id -> shape buffer built from the vocabulary, so a name made of pieces the student
  never saw as a name still looks like one. It costs ``N_SHAPES x shape_dim`` parameters;
  in ONNX it is one more Gather on a constant.
- ``ngram_dim``: hashed character trigrams (fastText-style buckets, ``ngram_buckets`` of
  them; `xdistil.vocab.piece_ngrams`) of every piece, looked up through a fixed piece-id ->
  buckets buffer, averaged over all the pieces of its word, so each piece sees its whole
  word's spelling however finely the capped vocabulary cut it (the words
  are found in the graph: a word starts at a piece with the word-start marker). It costs
  ``(ngram_buckets + 1) x ngram_dim`` parameters; in ONNX a Gather, a CumSum and a small
  (T x T) MatMul per window.

The student sees exactly the teacher's word pieces (same tokenizer, reduced vocabulary),
so its positions line up one to one with the teacher's logits and hidden states and the
same word mask picks one position per word. Padding never reaches the backward direction:
a sentence gets the same scores alone or in a batch. Padding must be on the right
(``attention_mask`` a run of ones then zeros).

Speed: a *packed* sequence keeps PyTorch's CPU LSTM off oneDNN (its native loop runs a
fwd+bwd step of the demo's 2-layer student 2x slower, and bf16 does not help it at all).
So `BiLSTMTagger.forward` runs each direction of each layer as one unidirectional LSTM
call on the padded batch (oneDNN), with the backward direction fed each sentence
reversed *within its length* (padding stays on the right, after the sentence): the same
numbers as the packed module to float rounding, 2x faster in fp32 and about 4x in bf16
(docs/speed.md, "The BiLSTM on oneDNN"). The weights stay those of the one ``nn.LSTM`` (state dict,
save/load, ONNX unchanged).

ONNX: the forward exports (packed: `BiLSTMTagger.packed`) with
``torch.onnx.export(..., dynamo=False)`` and dynamic batch / sequence axes; the packing becomes the ONNX LSTM's ``sequence_lens`` input, so
the exported graph keeps the padding invariance (checked in tests/test_students.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from xdistil.outputs import TaggerOutput
from xdistil.students._common import StateDictStudent, check_config
from xdistil.students.registry import register
from xdistil.vocab import N_SHAPES, piece_ngrams, piece_shapes, piece_starts

NGRAMS_PER_PIECE = 12  # trigram buckets kept per piece (`xdistil.vocab.piece_ngrams`)


@dataclass
class BiLSTMConfig:
    vocab_size: int | None = None  # rows of the embedding table; None = set by build_student
    num_labels: int | None = None  # tags; None = set by build_student from the label list
    embedding_dim: int = 50  # E; the paper's small student uses 50 (300 for the large one)
    hidden_dim: int = 200  # H per direction; the BiLSTM output is 2H wide
    num_layers: int = 1  # stacked BiLSTM layers
    dropout: float = 0.2  # after the embeddings, between LSTM layers, before the classifier
    pad_id: int = 0  # padding id of the (reduced) tokenizer; its embedding row stays zero
    embedding_init: str = "svd"  # "svd" (teacher embeddings, reduced) | "random"; used by build_student
    factor_dim: int = 0  # e of a factorized table V x e -> linear -> E (ALBERT); 0 = a plain V x E table
    shape_dim: int = 0  # width of the word-shape embedding joined to each piece's (0 = none)
    ngram_dim: int = 0  # width of the word's hashed character trigram embedding (0 = none)
    ngram_buckets: int = 4096  # hash buckets of the trigram embedding (used when ngram_dim > 0)
    locked_dropout: bool = False  # one dropout mask per sentence and feature, shared by its positions

    def __post_init__(self):
        check_config(self, ("embedding_dim", "hidden_dim", "num_layers", "ngram_buckets"))
        for name in ("factor_dim", "shape_dim", "ngram_dim"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def input_dim(self) -> int:
        """Width of what the BiLSTM reads: the piece embedding plus the shape and n-gram embeddings."""
        return self.embedding_dim + self.shape_dim + self.ngram_dim


@register("bilstm")
class BiLSTMTagger(StateDictStudent, nn.Module):
    Config = BiLSTMConfig

    def __init__(self, config: BiLSTMConfig, labels: Sequence[str] | None = None):
        super().__init__()
        self._set_config(config, labels)
        E, H, e, S = config.embedding_dim, config.hidden_dim, config.factor_dim, config.shape_dim
        self.embeddings = nn.Embedding(config.vocab_size, e or E, padding_idx=config.pad_id)
        self.projection = None
        if e:  # factorized: (V, e) table, then e -> E, starting as the identity on the e columns
            self.projection = nn.Linear(e, E, bias=False)
            with torch.no_grad():
                self.projection.weight.copy_(torch.eye(E, e))
        self.shapes = self.ngrams = None
        if S:
            self.shapes = nn.Embedding(N_SHAPES, S)
            # piece id -> shape class, filled by `build` from the vocabulary (saved in the state dict)
            self.register_buffer("piece_shape", torch.zeros(config.vocab_size, dtype=torch.long))
        if config.ngram_dim:
            self.ngrams = nn.Embedding(config.ngram_buckets + 1, config.ngram_dim, padding_idx=0)
            # piece id -> trigram buckets, and whether the piece begins a word; filled by `build`
            self.register_buffer("piece_ngrams", torch.zeros(config.vocab_size, NGRAMS_PER_PIECE, dtype=torch.long))
            self.register_buffer("piece_start", torch.ones(config.vocab_size, dtype=torch.bool))
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            config.input_dim,
            H,
            num_layers=config.num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.classifier = nn.Linear(2 * H, config.num_labels)

    @classmethod
    def config_from(cls, run) -> BiLSTMConfig:
        return BiLSTMConfig(embedding_dim=run.embedding_dim, hidden_dim=run.hidden_dim, num_layers=run.num_layers,
                            dropout=run.dropout, embedding_init=run.embedding_init,
                            factor_dim=run.factor_dim, shape_dim=run.shape_dim, ngram_dim=run.ngram_dim,
                            ngram_buckets=run.ngram_buckets, locked_dropout=run.locked_dropout)

    @classmethod
    def build(cls, teacher_model, tokenizer, kept, cfg, labels):
        """As `StateDictStudent.build`, plus the piece -> shape and piece -> trigram lookups from
        the reduced vocabulary."""
        tagger = super().build(teacher_model, tokenizer, kept, cfg, labels)
        if tagger.shapes is not None:
            tagger.piece_shape.copy_(torch.as_tensor(piece_shapes(tokenizer), dtype=torch.long))
        if tagger.ngrams is not None:
            table = piece_ngrams(tokenizer, tagger.config.ngram_buckets, NGRAMS_PER_PIECE)
            tagger.piece_ngrams.copy_(torch.as_tensor(table, dtype=torch.long))
            tagger.piece_start.copy_(torch.as_tensor(piece_starts(tokenizer), dtype=torch.bool))
        return tagger

    @staticmethod
    def describe(run: Mapping) -> str:
        e, S, G = run.get("factor_dim") or 0, run.get("shape_dim") or 0, run.get("ngram_dim") or 0
        return (f"E={run['embedding_dim']}" + (f" (factorized, e={e})" if e else "") + (f" + shape {S}" if S else "")
                + (f" + trigrams {G}" if G else "")
                + f", H={run['hidden_dim']}, {run['num_layers']} layer(s)")

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        """Width of each entry of ``TaggerOutput.hidden_states``: (embeddings, BiLSTM output)."""
        return (self.config.input_dim, 2 * self.config.hidden_dim)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_mask: torch.Tensor
    ) -> TaggerOutput:
        emb = self.embeddings(input_ids)  # (B, T, e or E)
        if self.projection is not None:
            emb = self.projection(emb)  # (B, T, E)
        if self.shapes is not None:
            emb = torch.cat([emb, self.shapes(self.piece_shape[input_ids])], dim=-1)  # (B, T, E + S)
        if self.ngrams is not None:
            emb = torch.cat([emb, self.word_ngrams(input_ids)], dim=-1)  # (B, T, E + S + G)
        x = self.drop(emb)  # (B, T, input_dim)
        exporting = torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()
        h = (self.packed if exporting else self.by_direction)(x, attention_mask)  # (B, T, 2H), zeros at padding
        logits = self.classifier(self.drop(h))  # (B, T, C)
        return TaggerOutput(logits=logits, hidden_states=(emb, h), word_mask=word_mask.bool())

    def drop(self, x: torch.Tensor, p: float | None = None) -> torch.Tensor:
        """Dropout of the (B, T, D) ``x`` while training (``p``: default the config's): an element
        mask, or with ``locked_dropout`` one mask per sentence and feature that every position
        shares (variational dropout for RNNs, Gal & Ghahramani 2016; AWD-LSTM's locked dropout).
        That draws T times fewer random numbers: on 2 CPU cores torch's element masks took about
        10 % of a demo fit (a (64, 40, 400) mask about 10 ms, its LSTM step a few ms)."""
        p = self.dropout.p if p is None else p
        if not (self.config.locked_dropout and self.training and p > 0):
            return nn.functional.dropout(x, p, self.training)  # what nn.Dropout does
        keep = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - p)
        return x * keep / (1 - p)

    def word_ngrams(self, input_ids: torch.Tensor) -> torch.Tensor:
        """At every piece, the mean embedding of all the trigrams of its word's pieces (a word: a
        piece that `xdistil.vocab.piece_starts` marks and the pieces after it up to the next
        such piece); specials and padding are words of their own, without trigrams (zero). (B, T, G)"""
        buckets = self.piece_ngrams[input_ids]  # (B, T, K)
        sums = self.ngrams(buckets).sum(2)  # (B, T, G): padding bucket 0 is a zero row
        counts = (buckets > 0).sum(-1, keepdim=True).to(sums.dtype)  # (B, T, 1)
        word = self.piece_start[input_ids].long().cumsum(1)  # (B, T): word number within the window
        same = (word[:, :, None] == word[:, None, :]).to(sums.dtype)  # (B, T, T)
        return (same @ sums) / (same @ counts).clamp(min=1)

    def packed(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The BiLSTM over packed sequences (the exported graph: ONNX LSTM with sequence_lens)."""
        # lengths live on the CPU for packing; an all-padding row gets length 1 (scores ignored)
        lengths = attention_mask.sum(dim=1).clamp(min=1).to("cpu", torch.int64)  # (B,)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]

    def by_direction(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The BiLSTM as one unidirectional LSTM call per direction and layer on the padded
        batch (oneDNN on CPU; see the module doc), with ``self.lstm``'s weights."""
        lstm, T = self.lstm, x.shape[1]
        lengths = attention_mask.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
        pos = torch.arange(T, device=x.device)[None, :]
        valid = pos < lengths  # (B, T)
        # position t of a sentence reversed within its length (padding stays where it is)
        rev = torch.where(valid, lengths - 1 - pos, pos)[..., None]  # (B, T, 1)
        h = x
        for layer in range(lstm.num_layers):
            if layer:
                h = self.drop(h, lstm.dropout)  # as nn.LSTM between layers
            fwd = _one_direction(h, lstm, f"_l{layer}", self.training)
            bwd = _one_direction(h.gather(1, rev.expand(-1, -1, h.shape[2])), lstm, f"_l{layer}_reverse",
                                 self.training)
            h = torch.cat([fwd, bwd.gather(1, rev.expand(-1, -1, bwd.shape[2]))], dim=-1)
        return h * valid[..., None].to(h.dtype)  # zeros at padding, as pad_packed_sequence

    def param_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """Parameters top-down, the order in which gradual unfreezing releases them."""
        return [
            ("output", list(self.classifier.parameters())),
            ("encoder", list(self.lstm.parameters())),
            ("embeddings", [*self.embeddings.parameters(),
                            *(self.projection.parameters() if self.projection is not None else ()),
                            *(self.shapes.parameters() if self.shapes is not None else ()),
                            *(self.ngrams.parameters() if self.ngrams is not None else ())]),
        ]


def _one_direction(x: torch.Tensor, lstm: nn.LSTM, suffix: str, training: bool) -> torch.Tensor:
    """One direction of one layer of ``lstm`` (weights ``*{suffix}``) over the batch-first ``x``:
    the op behind ``nn.LSTM.forward`` on unpacked input (oneDNN on CPU)."""
    weights = [getattr(lstm, f"{name}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    h0 = x.new_zeros(1, x.shape[0], lstm.hidden_size)
    # (input, (h0, c0), weights, has_biases, num_layers, dropout, train, bidirectional, batch_first)
    return torch._VF.lstm(x, (h0, h0), weights, True, 1, 0.0, training, False, True)[0]

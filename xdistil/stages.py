"""Stages are data; this is the one training loop that runs them (torchdistill style).

A stage is a `StageSpec`: a weighted sum of losses (gold / hard / soft / hidden), the
data it runs on, and whether it unfreezes gradually. With gradual unfreezing (the
biggest single gain in XtremeDistil, Table 3) a stage runs one *step* per parameter
group, top-down: output -> projection -> encoder -> embeddings, step j training groups
0..j. Each step trains with early stopping on the selection slice and ends by restoring
its best weights. After every step the run is checkpointed, so an interrupted run
resumes at the last finished step; after every stage the student is saved on its own.

    distill/
      progress.json               finished steps
      checkpoint/                 weights after the last finished step
      stage1-hard/ stage2-soft/   a complete student after each stage
      final -> last stage         (a copy of the last stage's student)

Under ``accelerate launch`` it is data-parallel (DDP): every process trains on its share
of each epoch's batches, the selection metric is computed by the main process and
broadcast (so all processes stop early together), and only the main process writes.
The transfer set stays memory-mapped; only row lengths and split row numbers are in memory.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from xdistil_export.atomic import replace_dir

from xdistil import losses as L
from xdistil.config import RunConfig, StageSpec, save_json, to_dict
from xdistil.data.align import WindowEncoder, collate, shuffled_length_batches
from xdistil.memory import PeakMemory
from xdistil.outputs import TaggerOutput

log = logging.getLogger(__name__)


@dataclass
class Batch:
    inputs: dict  # input_ids / attention_mask / word_mask (B, T)
    gold: torch.Tensor  # (N,) gold tag per scored word, -100 where none
    tags: torch.Tensor  # (K, N) teacher hard tags
    logits: torch.Tensor  # (K, N, C) teacher logits
    hidden: list[torch.Tensor]  # K tensors (N, D_k): the teacher layer the hidden loss targets

    def to(self, device) -> Batch:
        if torch.device(device).type == "cpu":
            return self
        return Batch({k: v.to(device) for k, v in self.inputs.items()}, self.gold.to(device), self.tags.to(device),
                     self.logits.to(device), [h.to(device) for h in self.hidden])


class TransferBatcher:
    """Turns rows of the labeled transfer set into student windows + word-level targets."""

    def __init__(self, ds, tokenizer, max_length: int, teachers: list[int], n_labels: int, layer: int | None):
        """``teachers``: which of the set's teachers (column prefixes t0, t1, ...) to read."""
        self.ds = ds.with_format("numpy")
        self.enc = WindowEncoder(tokenizer, max_length)
        self.ids, self.K, self.C, self.layer = list(teachers), len(teachers), n_labels, layer

    def __call__(self, idx: list[int], need_hidden: bool) -> Batch:
        rows = self.ds[list(idx)]
        words = [list(w) for w in rows["words"]]
        pieces = self.enc.encode(words)
        inputs = collate(pieces, self.enc.specials.pad_id)
        # (sentence, word) of every scored word, in the row-major order of word_mask
        sent = np.concatenate([np.full(len(p.words), p.sent) for p in pieces])
        word = np.concatenate([np.arange(p.words.start, p.words.stop) for p in pieces])
        gold = torch.full((len(sent),), L.IGNORE_INDEX, dtype=torch.long)
        for j, (s, w) in enumerate(zip(sent, word, strict=True)):
            g = rows["gold"][s]
            if len(g):
                gold[j] = int(g[w])
        tags, logits, hidden = [], [], []
        for k in self.ids:
            lg = [np.asarray(x, dtype=np.float32).reshape(-1, self.C) for x in rows[f"t{k}_logits"]]
            logits.append(torch.from_numpy(np.stack([lg[s][w] for s, w in zip(sent, word, strict=True)])))
            tg = rows[f"t{k}_tags"]
            tags.append(torch.tensor([int(tg[s][w]) for s, w in zip(sent, word, strict=True)]))
            if need_hidden:
                hs = [np.asarray(x, dtype=np.float32).reshape(len(words[i]), -1)
                      for i, x in enumerate(rows[f"t{k}_h{self.layer}"])]
                hidden.append(torch.from_numpy(np.stack([hs[s][w] for s, w in zip(sent, word, strict=True)])))
        return Batch(inputs, gold, torch.stack(tags), torch.stack(logits), hidden)




class Distiller(nn.Module):
    """The student plus one hidden-state projection per teacher (MT-BERT / XtremeDistil)."""

    def __init__(self, student: nn.Module, student_dim: int, teacher_dims: list[int]):
        super().__init__()
        self.student = student
        self.projections = nn.ModuleList([L.Projection(student_dim, d) for d in teacher_dims])

    def forward(self, inputs: dict, student_layer: int | None = None, with_logits: bool = True):
        """(word logits (N, C), projections of student layer ``student_layer`` per teacher or None).

        Training runs through here so that a DDP wrapper sees the forward; it returns only
        what the loss uses (logits detached when ``with_logits`` is False)."""
        out = self.student(**inputs)
        logits = out.word_logits if with_logits else out.word_logits.detach()
        if student_layer is None:
            return logits, None
        state = out.words(out.hidden_states[student_layer])  # (N, H_student)
        return logits, [p(state) for p in self.projections]  # K x (N, D_k)

    def groups(self, spec: StageSpec) -> list[tuple[str, list[nn.Parameter]]]:
        """Top-down unfreezing order for this stage: output, projection, encoder, embeddings."""
        student = self.student.param_groups()
        out = [g for g in student if g[0] == "output"] if spec.selects_on_f1 else []
        if "hidden" in spec.losses:
            out.append(("projection", list(self.projections.parameters())))
        out += [g for g in student if g[0] != "output"]
        return out


def stage_loss(d: Distiller, spec: StageSpec, out: TaggerOutput, b: Batch, student_layer: int,
               weighting: str, proj: list[torch.Tensor] | None = None,
               fallback: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """The stage's weighted loss on one batch; every loss sees only scored words.

    ``out``: the student's output, or its word logits (N, C) as `Distiller.forward` returns
    them; ``proj``: the projections from `Distiller.forward` (computed here when None).
    Teacher weights (MT-BERT): from the teachers' task losses on this batch's gold words
    when it has any, else ``fallback`` (the weights from the selection slice, see
    `validation_weights`), else uniform."""
    logits = out if isinstance(out, torch.Tensor) else out.word_logits  # (N, C)
    mask = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
    gold_mask = b.gold != L.IGNORE_INDEX
    if gold_mask.any():
        task = L.per_teacher_task_loss(b.logits, b.gold.clamp(min=0), gold_mask)  # (K,)
        weights = L.teacher_weights(task, weighting)
    elif fallback is not None:
        weights = fallback.to(b.logits.device)
    else:
        weights = torch.full((b.logits.shape[0],), 1.0 / b.logits.shape[0], device=b.logits.device)
    parts = {}
    for name in spec.losses:
        if name == "gold":
            parts[name] = L.hard_ce(logits, b.gold.clamp(min=0), gold_mask)
        elif name == "hard":
            # several teachers vote through their weighted logits
            target = (weights[:, None, None] * b.logits.softmax(-1)).sum(0).argmax(-1)  # (N,)
            parts[name] = L.hard_ce(logits, target, mask)
        elif name == "soft":
            parts[name] = L.soft_loss(logits, b.logits, mask, weights, spec.soft_kind, spec.temperature)
        elif name == "hidden":
            if proj is None:
                state = out.words(out.hidden_states[student_layer])  # (N, H_student)
                proj = [p(state) for p in d.projections]  # K x (N, D_k)
            parts[name] = L.hidden_loss(proj, b.hidden, mask, weights, spec.hidden_kind)
    total = sum(spec.losses[k] * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def validation_weights(ds, rows: list[int], teachers: list[int], n_labels: int,
                       weighting: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-teacher task loss (K,), teacher weights (K,)) on the selection slice's gold words,
    read straight from the stored tags and logits: the weights of batches without gold
    labels (most of the transfer set)."""
    val = ds.select_columns(["gold", *(f"t{k}_logits" for k in teachers)]).with_format("numpy")[list(rows)]
    gold = torch.from_numpy(np.concatenate(val["gold"]).astype(np.int64))  # (N,)
    logits = torch.stack([torch.from_numpy(np.concatenate(val[f"t{k}_logits"]).astype(np.float32))
                          .view(-1, n_labels) for k in teachers])  # (K, N, C)
    losses = L.per_teacher_task_loss(logits, gold, torch.ones_like(gold, dtype=torch.bool))
    return losses, L.teacher_weights(losses, weighting)


def _student_tagger(student, tokenizer, labels, max_length):
    from xdistil.taggers import Tagger
    from xdistil.teachers import OnDevice

    device = next(student.parameters()).device
    return Tagger(OnDevice(student, device, ()), tokenizer, list(labels), max_length, "student")


def select_metric(d: Distiller, spec: StageSpec, val_rows, tokenizer, labels, cfg: RunConfig,
                  batcher: TransferBatcher, fallback: torch.Tensor | None = None) -> float:
    """Higher is better: average per-language F1, or minus the hidden loss for hidden-only stages."""
    from xdistil.evaluate import score
    from xdistil.taggers import predict_tags

    d.eval()
    device = next(d.parameters()).device
    with torch.no_grad():
        if spec.selects_on_f1:
            tagger = _student_tagger(d.student, tokenizer, labels, cfg.student.max_length)
            by_lang: dict[str, tuple[list, list]] = {}
            for words, gold, lang in val_rows:
                by_lang.setdefault(lang, ([], []))
                by_lang[lang][0].append(words)
                by_lang[lang][1].append(gold)
            f1s = []
            for ws, gs in by_lang.values():
                pred = predict_tags(tagger, ws, cfg.distill.eval_batch_size)
                f1s.append(score(gs, pred)["f1"])
            return sum(f1s) / len(f1s)
        total, n = 0.0, 0
        for chunk in range(0, len(batcher.val_index), 64):
            b = batcher(batcher.val_index[chunk : chunk + 64], need_hidden=True).to(device)
            out = d.student(**b.inputs)
            _, parts = stage_loss(d, spec, out, b, cfg.student.student_layer, cfg.distill.teacher_weighting,
                                  fallback=fallback)
            total += parts["hidden"] * len(b.gold)
            n += len(b.gold)
        return -total / max(n, 1)


def distill(cfg: RunConfig, transfer_dir: str | Path, teacher_dir: str | Path, out_dir: str | Path,
            progress: bool = True) -> list[Path]:
    """Run every stage of ``cfg.distill``; returns the student directory saved after each stage."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list
    from tqdm.auto import tqdm

    from xdistil.labeling import load_transfer, scan_transfer
    from xdistil.students import build_student, count_parameters, load_student, save_student
    from xdistil.taggers import load_tagger
    from xdistil.teachers import check_launch, pad_to_multiple
    from xdistil.vocab import seen_piece_ids

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages = cfg.distill.resolved_stages()
    progress_path = out / "progress.json"
    done = json.loads(progress_path.read_text()) if progress_path.exists() else {"steps": [], "stages": []}
    stage_dirs = [out / f"stage{i + 1}-{s.name}" for i, s in enumerate(stages)]
    if len(done["stages"]) == len(stages):
        return stage_dirs

    # find_unused_parameters: a step may train parameters its loss does not reach (e.g. the
    # layers above student.student_layer in a hidden-only stage); DDP must not wait for them
    accelerator = Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    main, world, device = accelerator.is_main_process, accelerator.num_processes, accelerator.device
    check_launch(world)
    torch.manual_seed(cfg.distill.seed)
    ds, manifest = load_transfer(transfer_dir, langs=cfg.data.languages)
    labels = manifest["labels"]
    n_stored = len(manifest["teachers"])
    ids = list(range(n_stored)) if cfg.distill.teachers is None else list(cfg.distill.teachers)
    if not ids or any(not 0 <= k < n_stored for k in ids):
        raise ValueError(f"distill.teachers {cfg.distill.teachers}: the transfer set has teachers 0..{n_stored - 1}")
    K = len(ids)
    layer = cfg.distill.teacher_layer
    needs_hidden = any("hidden" in s.losses for s in stages)
    if needs_hidden and layer not in manifest["layers"]:
        raise ValueError(f"distill.teacher_layer {layer} was not stored; the transfer set has {manifest['layers']}")

    if cfg.distill.init_from:
        student, tokenizer, init_labels, _ = load_student(cfg.distill.init_from)
        if list(init_labels) != list(labels):
            raise ValueError(f"distill.init_from {cfg.distill.init_from} predicts {init_labels}, "
                             f"the transfer set has {labels}")
    else:
        # the student's vocabulary and initial embeddings: from the first teacher it learns from
        teacher = load_tagger(_teacher_path(manifest, ids[0], teacher_dir))
        seen = seen_piece_ids(teacher.tokenizer, _iter_words(ds))
        student, tokenizer = _build(cfg, build_student, teacher, seen, labels)
        del teacher
    with torch.no_grad():
        probe = tokenizer(["x"], is_split_into_words=True, return_tensors="pt")
        o = student(probe["input_ids"], probe["attention_mask"], torch.zeros_like(probe["input_ids"], dtype=torch.bool))
        student_dim = o.hidden_states[cfg.student.student_layer].shape[-1]
    d = Distiller(student, student_dim, [manifest["hidden_sizes"][k] for k in ids] if needs_hidden else [])
    ckpt = out / "checkpoint"
    if (ckpt / "distiller.safetensors").exists():
        d.load_state_dict(load_file(str(ckpt / "distiller.safetensors")))
        log.info("resuming distillation after %d finished steps", len(done["steps"]))
    d.to(device)

    # streamed from the memory-mapped set: a length and a row number per row, no rows
    lengths, split_rows = scan_transfer(ds)
    index = {
        "transfer": sorted(split_rows.get("labeled", []) + split_rows.get("transfer", [])),
        "labeled": split_rows.get("labeled", []),
    }
    val_index = split_rows.get("val", [])
    batcher = TransferBatcher(ds, tokenizer, cfg.student.max_length, ids, len(labels),
                              layer if needs_hidden else None)
    batcher.val_index = val_index
    val_rows = [(list(r["words"]), [labels[t] for t in r["gold"]], r["lang"])
                for r in (ds[i] for i in val_index)]
    if not val_rows:
        raise ValueError("the transfer set has no selection slice (data.val_size = 0); early stopping needs one")
    params = count_parameters(student)
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {"stages": []}
    val_task, fallback = validation_weights(ds, val_index, ids, len(labels), cfg.distill.teacher_weighting)
    metrics["teachers"] = {"weighting": cfg.distill.teacher_weighting, "ids": ids,
                           "paths": [manifest["teachers"][k]["path"] for k in ids],
                           "selection_task_loss": [round(float(x), 4) for x in val_task],
                           "weights_without_gold": [round(float(x), 4) for x in fallback]}
    if K > 1 and main:
        log.info("teacher task loss on the selection slice %s -> weights %s (%s)",
                 metrics["teachers"]["selection_task_loss"], metrics["teachers"]["weights_without_gold"],
                 cfg.distill.teacher_weighting)

    def selection(spec: StageSpec) -> float:
        # the main process scores the selection slice and tells the others, so every
        # process takes the same early-stopping and best-weights decisions
        value = [select_metric(d, spec, val_rows, tokenizer, labels, cfg, batcher, fallback) if main else None]
        return broadcast_object_list(value, from_process=0)[0]

    for si, spec in enumerate(stages):
        if spec.name in done["stages"] and si < len(done["stages"]):
            continue
        groups = d.groups(spec)
        n_steps = len(groups) if spec.unfreeze else 1
        stage_log = {"stage": spec.name, "steps": []}
        for step in range(n_steps):
            key = f"{si}:{step}"
            if key in done["steps"]:
                continue
            active = groups[: step + 1] if spec.unfreeze else groups
            for p in d.parameters():
                p.requires_grad_(False)
            trainable = [p for _, ps in active for p in ps]
            for p in trainable:
                p.requires_grad_(True)
            opt = torch.optim.Adam(trainable, lr=spec.lr)
            # DDP fixes the parameters it all-reduces (those requiring grad) when it wraps a
            # module, and unfreezing changes them from step to step: so every step wraps the
            # plain Distiller anew (one process: prepare returns it unwrapped) and the
            # previous wrapper is dropped at the end of the step (free_memory)
            d.__dict__.pop("_is_accelerate_prepared", None)
            ddp, opt = accelerator.prepare(d, opt)
            mem = PeakMemory().start()
            best = selection(spec)
            best_state, bad, t0, tokens = copy.deepcopy(d.state_dict()), 0, time.time(), 0
            idx = index[spec.data]
            n_epochs = max(1, math.ceil(spec.epochs))
            desc = f"{spec.name} [{'+'.join(n for n, _ in active)}]"
            history = []
            hidden_layer = cfg.student.student_layer if "hidden" in spec.losses else None
            for epoch in range(n_epochs):
                ddp.train()
                batches = shuffled_length_batches(idx, lengths, spec.batch_size, cfg.distill.seed * 1000 + si * 100 + step * 10 + epoch)
                if spec.epochs < 1:
                    batches = batches[: max(1, int(len(batches) * spec.epochs))]
                # every process takes its share, as many batches each (DDP syncs every backward)
                batches = pad_to_multiple(batches, world)[accelerator.process_index :: world]
                if cfg.distill.max_steps_per_epoch:
                    batches = batches[: cfg.distill.max_steps_per_epoch]
                bar = tqdm(batches, desc=f"{desc} ep{epoch + 1}", unit="batch", disable=not (progress and main),
                           leave=False)
                run_loss, loss_sum = 0.0, 0.0
                for bi in bar:
                    b = batcher(bi, need_hidden="hidden" in spec.losses).to(device)
                    # only what the loss uses leaves the forward (logits detached when unused),
                    # so DDP's unused-parameter search sees exactly the parameters trained
                    wl, proj = ddp(b.inputs, hidden_layer, spec.selects_on_f1)
                    loss, _ = stage_loss(d, spec, wl, b, cfg.student.student_layer, cfg.distill.teacher_weighting,
                                         proj, fallback)
                    opt.zero_grad(set_to_none=True)
                    accelerator.backward(loss)
                    accelerator.clip_grad_norm_(trainable, 5.0)
                    opt.step()
                    tokens += int(b.inputs["attention_mask"].sum())
                    loss_sum += loss.item()
                    run_loss = 0.9 * run_loss + 0.1 * loss.item() if run_loss else loss.item()
                    bar.set_postfix(loss=f"{run_loss:.4f}", tok_s=f"{tokens / (time.time() - t0):.0f}")
                # mean training loss of the epoch over all processes
                total = accelerator.reduce(torch.tensor([loss_sum, len(batches)], dtype=torch.float64,
                                                        device=device), reduction="sum")
                mean_loss = float(total[0] / total[1].clamp(min=1))
                metric = selection(spec)
                history.append({"epoch": epoch + 1, "loss": run_loss, "mean_loss": mean_loss, "select": metric})
                if main:
                    log.info("%s epoch %d: loss %.4f, selection %s %.3f", desc, epoch + 1, mean_loss,
                             "F1" if spec.selects_on_f1 else "-hidden loss", metric)
                if metric > best:
                    best, best_state, bad = metric, copy.deepcopy(d.state_dict()), 0
                else:
                    bad += 1
                    if bad >= spec.patience:
                        break
            d.load_state_dict(best_state)  # restore the best checkpoint of this step
            mem.stop()
            tokens = int(accelerator.reduce(torch.tensor([tokens], dtype=torch.float64, device=device),
                                            reduction="sum")[0])
            del ddp, opt
            accelerator.free_memory()
            stage_log["steps"].append({"groups": [n for n, _ in active], "best_select": best, "history": history,
                                       "seconds": round(time.time() - t0, 1),
                                       "tokens_per_s": round(tokens / max(time.time() - t0, 1e-9), 1),
                                       "processes": world, "peak_rss_mb": mem.peak_mb,
                                       "memory_scope": mem.scope})
            done["steps"].append(key)
            if main:
                _save_ckpt(d, ckpt)
                save_json(done, progress_path)
        if stage_log["steps"]:
            metrics["stages"].append(stage_log)
        done["stages"].append(spec.name)
        if main:
            save_student(d.student, tokenizer, stage_dirs[si],
                         {"labels": labels, "max_length": cfg.student.max_length, "stage": spec.name,
                          "stages_so_far": [s.name for s in stages[: si + 1]], "params": params._asdict(),
                          "config": to_dict(cfg.student), "distill": to_dict(cfg.distill)})
            save_json(done, progress_path)
            save_json(metrics, metrics_path)
    accelerator.wait_for_everyone()  # every student is on disk before any process reads one
    return stage_dirs


def _teacher_path(manifest: dict, k: int, given: str | Path) -> Path:
    """Teacher k of the transfer set: the k-th folder behind ``given`` (a teacher, or a
    co-finetuned group), else the folder the set recorded for it."""
    from xdistil.teachers import teacher_dirs

    dirs = teacher_dirs(given)
    return dirs[k] if k < len(dirs) else Path(manifest["teachers"][k]["path"])


def _iter_words(ds, batch_size: int = 1000):
    """The ``words`` column row by row, read in batches from the memory-mapped set."""
    for batch in ds.select_columns(["words"]).iter(batch_size=batch_size):
        yield from batch["words"]


def _build(cfg: RunConfig, build_student, teacher, seen, labels):
    from xdistil.students import BiLSTMConfig, TransformerStudentConfig

    sc = cfg.student
    if sc.arch == "bilstm":
        scfg = BiLSTMConfig(vocab_size=1, num_labels=len(labels), embedding_dim=sc.embedding_dim,
                            hidden_dim=sc.hidden_dim, num_layers=sc.num_layers, dropout=sc.dropout,
                            embedding_init=sc.embedding_init)
    else:
        scfg = TransformerStudentConfig(num_layers=sc.transformer_layers, teacher_layers=sc.teacher_layers,
                                        init=sc.transformer_init)
    hf_model = teacher.module.model  # HFTagger -> the HF model
    return build_student(sc.arch, hf_model, teacher.tokenizer, seen, labels, scfg)


def _save_ckpt(d: nn.Module, ckpt: Path) -> None:
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in d.state_dict().items()}
    save_file(state, str(tmp / "distiller.safetensors"))
    replace_dir(tmp, ckpt)

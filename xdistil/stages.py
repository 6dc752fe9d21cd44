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
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from xdistil import losses as L
from xdistil.config import RunConfig, StageSpec, save_json, to_dict
from xdistil.data.align import WindowEncoder, collate
from xdistil.outputs import TaggerOutput

log = logging.getLogger(__name__)


@dataclass
class Batch:
    inputs: dict  # input_ids / attention_mask / word_mask (B, T)
    gold: torch.Tensor  # (N,) gold tag per scored word, -100 where none
    tags: torch.Tensor  # (K, N) teacher hard tags
    logits: torch.Tensor  # (K, N, C) teacher logits
    hidden: list[torch.Tensor]  # K tensors (N, D_k): the teacher layer the hidden loss targets


class TransferBatcher:
    """Turns rows of the labeled transfer set into student windows + word-level targets."""

    def __init__(self, ds, tokenizer, max_length: int, n_teachers: int, n_labels: int, layer: int | None):
        self.ds = ds.with_format("numpy")
        self.enc = WindowEncoder(tokenizer, max_length)
        self.K, self.C, self.layer = n_teachers, n_labels, layer
        self.has_hidden = layer is not None and f"t0_h{layer}" in ds.column_names

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
        for k in range(self.K):
            lg = [np.asarray(x, dtype=np.float32).reshape(-1, self.C) for x in rows[f"t{k}_logits"]]
            logits.append(torch.from_numpy(np.stack([lg[s][w] for s, w in zip(sent, word, strict=True)])))
            tg = rows[f"t{k}_tags"]
            tags.append(torch.tensor([int(tg[s][w]) for s, w in zip(sent, word, strict=True)]))
            if need_hidden:
                hs = [np.asarray(x, dtype=np.float32).reshape(len(words[i]), -1)
                      for i, x in enumerate(rows[f"t{k}_h{self.layer}"])]
                hidden.append(torch.from_numpy(np.stack([hs[s][w] for s, w in zip(sent, word, strict=True)])))
        return Batch(inputs, gold, torch.stack(tags), torch.stack(logits), hidden)


def _batches(indices: list[int], lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    order = list(indices)
    rng.shuffle(order)
    chunk = batch_size * 50
    out = []
    for i in range(0, len(order), chunk):
        part = sorted(order[i : i + chunk], key=lambda j: lengths[j])
        out += [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
    rng.shuffle(out)
    return out


class Distiller(nn.Module):
    """The student plus one hidden-state projection per teacher (MT-BERT / XtremeDistil)."""

    def __init__(self, student: nn.Module, student_dim: int, teacher_dims: list[int]):
        super().__init__()
        self.student = student
        self.projections = nn.ModuleList([L.Projection(student_dim, d) for d in teacher_dims])

    def groups(self, spec: StageSpec) -> list[tuple[str, list[nn.Parameter]]]:
        """Top-down unfreezing order for this stage: output, projection, encoder, embeddings."""
        student = self.student.param_groups()
        out = [g for g in student if g[0] == "output"] if spec.selects_on_f1 else []
        if "hidden" in spec.losses:
            out.append(("projection", list(self.projections.parameters())))
        out += [g for g in student if g[0] != "output"]
        return out


def stage_loss(d: Distiller, spec: StageSpec, out: TaggerOutput, b: Batch, student_layer: int,
               weighting: str) -> tuple[torch.Tensor, dict]:
    """The stage's weighted loss on one batch; every loss sees only scored words."""
    logits = out.word_logits  # (N, C)
    mask = torch.ones(logits.shape[0], dtype=torch.bool)
    gold_mask = b.gold != L.IGNORE_INDEX
    if gold_mask.any():
        task = L.per_teacher_task_loss(b.logits, b.gold.clamp(min=0), gold_mask)  # (K,)
        weights = L.teacher_weights(task, weighting)
    else:
        weights = torch.full((b.logits.shape[0],), 1.0 / b.logits.shape[0])
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
            state = out.words(out.hidden_states[student_layer])  # (N, H_student)
            proj = [p(state) for p in d.projections]  # K x (N, D_k)
            parts[name] = L.hidden_loss(proj, b.hidden, mask, weights, spec.hidden_kind)
    total = sum(spec.losses[k] * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def _student_tagger(student, tokenizer, labels, max_length):
    from xdistil.taggers import Tagger

    return Tagger(student, tokenizer, list(labels), max_length, "student")


def select_metric(d: Distiller, spec: StageSpec, val_rows, tokenizer, labels, cfg: RunConfig,
                  batcher: TransferBatcher) -> float:
    """Higher is better: average per-language F1, or minus the hidden loss for hidden-only stages."""
    from xdistil.evaluate import score
    from xdistil.taggers import predict_tags

    d.eval()
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
            b = batcher(batcher.val_index[chunk : chunk + 64], need_hidden=True)
            out = d.student(**b.inputs)
            _, parts = stage_loss(d, spec, out, b, cfg.student.student_layer, cfg.distill.teacher_weighting)
            total += parts["hidden"] * len(b.gold)
            n += len(b.gold)
        return -total / max(n, 1)


def distill(cfg: RunConfig, transfer_dir: str | Path, teacher_dir: str | Path, out_dir: str | Path,
            progress: bool = True) -> list[Path]:
    """Run every stage of ``cfg.distill``; returns the student directory saved after each stage."""
    from tqdm.auto import tqdm

    from xdistil.labeling import load_transfer
    from xdistil.students import build_student, count_parameters, load_student, save_student
    from xdistil.taggers import load_tagger
    from xdistil.vocab import seen_piece_ids

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages = cfg.distill.resolved_stages()
    progress_path = out / "progress.json"
    done = json.loads(progress_path.read_text()) if progress_path.exists() else {"steps": [], "stages": []}
    stage_dirs = [out / f"stage{i + 1}-{s.name}" for i, s in enumerate(stages)]
    if len(done["stages"]) == len(stages):
        return stage_dirs

    torch.manual_seed(cfg.distill.seed)
    ds, manifest = load_transfer(transfer_dir, langs=cfg.data.languages)
    labels = manifest["labels"]
    K = len(manifest["teachers"])
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
        teacher = load_tagger(teacher_dir)
        all_words = (list(w) for w in ds["words"])
        seen = seen_piece_ids(teacher.tokenizer, all_words)
        student, tokenizer = _build(cfg, build_student, teacher, seen, labels)
        del teacher
    with torch.no_grad():
        probe = tokenizer(["x"], is_split_into_words=True, return_tensors="pt")
        o = student(probe["input_ids"], probe["attention_mask"], torch.zeros_like(probe["input_ids"], dtype=torch.bool))
        student_dim = o.hidden_states[cfg.student.student_layer].shape[-1]
    d = Distiller(student, student_dim, manifest["hidden_sizes"] if needs_hidden else [])
    ckpt = out / "checkpoint"
    if (ckpt / "distiller.safetensors").exists():
        d.load_state_dict(load_file(str(ckpt / "distiller.safetensors")))
        log.info("resuming distillation after %d finished steps", len(done["steps"]))

    splits = ds["split"]
    lengths = [len(w) for w in ds["words"]]
    index = {
        "transfer": [i for i, s in enumerate(splits) if s in ("labeled", "transfer")],
        "labeled": [i for i, s in enumerate(splits) if s == "labeled"],
    }
    val_index = [i for i, s in enumerate(splits) if s == "val"]
    batcher = TransferBatcher(ds, tokenizer, cfg.student.max_length, K, len(labels),
                              layer if needs_hidden else None)
    batcher.val_index = val_index
    val_rows = [(list(ds[i]["words"]), [labels[t] for t in ds[i]["gold"]], ds[i]["lang"]) for i in val_index]
    if not val_rows:
        raise ValueError("the transfer set has no selection slice (data.val_size = 0); early stopping needs one")
    params = count_parameters(student)
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {"stages": []}

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
            best = select_metric(d, spec, val_rows, tokenizer, labels, cfg, batcher)
            best_state, bad, t0, tokens = copy.deepcopy(d.state_dict()), 0, time.time(), 0
            idx = index[spec.data]
            n_epochs = max(1, math.ceil(spec.epochs))
            desc = f"{spec.name} [{'+'.join(n for n, _ in active)}]"
            history = []
            for epoch in range(n_epochs):
                d.train()
                batches = _batches(idx, lengths, spec.batch_size, cfg.distill.seed * 1000 + si * 100 + step * 10 + epoch)
                if spec.epochs < 1:
                    batches = batches[: max(1, int(len(batches) * spec.epochs))]
                if cfg.distill.max_steps_per_epoch:
                    batches = batches[: cfg.distill.max_steps_per_epoch]
                bar = tqdm(batches, desc=f"{desc} ep{epoch + 1}", unit="batch", disable=not progress, leave=False)
                run_loss = 0.0
                for bi in bar:
                    b = batcher(bi, need_hidden="hidden" in spec.losses)
                    o = d.student(**b.inputs)
                    loss, _ = stage_loss(d, spec, o, b, cfg.student.student_layer, cfg.distill.teacher_weighting)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(trainable, 5.0)
                    opt.step()
                    tokens += int(b.inputs["attention_mask"].sum())
                    run_loss = 0.9 * run_loss + 0.1 * loss.item() if run_loss else loss.item()
                    bar.set_postfix(loss=f"{run_loss:.4f}", tok_s=f"{tokens / (time.time() - t0):.0f}")
                metric = select_metric(d, spec, val_rows, tokenizer, labels, cfg, batcher)
                history.append({"epoch": epoch + 1, "loss": run_loss, "select": metric})
                log.info("%s epoch %d: loss %.4f, selection %s %.3f", desc, epoch + 1, run_loss,
                         "F1" if spec.selects_on_f1 else "-hidden loss", metric)
                if metric > best:
                    best, best_state, bad = metric, copy.deepcopy(d.state_dict()), 0
                else:
                    bad += 1
                    if bad >= spec.patience:
                        break
            d.load_state_dict(best_state)  # restore the best checkpoint of this step
            stage_log["steps"].append({"groups": [n for n, _ in active], "best_select": best, "history": history,
                                       "seconds": round(time.time() - t0, 1),
                                       "tokens_per_s": round(tokens / max(time.time() - t0, 1e-9), 1)})
            _save_ckpt(d, ckpt)
            done["steps"].append(key)
            save_json(done, progress_path)
        if stage_log["steps"]:
            metrics["stages"].append(stage_log)
        save_student(d.student, tokenizer, stage_dirs[si],
                     {"labels": labels, "max_length": cfg.student.max_length, "stage": spec.name,
                      "stages_so_far": [s.name for s in stages[: si + 1]], "params": params._asdict(),
                      "config": to_dict(cfg.student), "distill": to_dict(cfg.distill)})
        done["stages"].append(spec.name)
        save_json(done, progress_path)
        save_json(metrics, metrics_path)
    return stage_dirs


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
    save_file({k: v.contiguous() for k, v in d.state_dict().items()}, str(tmp / "distiller.safetensors"))
    shutil.rmtree(ckpt, ignore_errors=True)
    tmp.replace(ckpt)

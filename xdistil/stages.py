"""Stages are data; `distill` advances through them, each phase trained by `xdistil.fit.fit`.

A stage is a `StageSpec`: a weighted sum of losses (gold / hard / soft / hidden), the
data it runs on, and whether it unfreezes gradually. With gradual unfreezing (the
biggest single gain in XtremeDistil, Table 3) a stage runs one *phase* per parameter
group, top-down: output -> projection -> encoder -> embeddings, phase j training groups
0..j. Each phase is one `fit`: early stopping on the selection slice, its best weights
restored at the end, checkpoints from which a killed run resumes exactly. The hidden
loss follows one `MatchSpec` (teacher layer, student layer, loss kind): distill.match,
or a stage's own overrides.

Selection (``distill.select``, `select_signal`). With ``teacher`` (the default), a stage that
learns from the teachers selects on the student's agreement with them on ``select_size``
transfer sentences held out of training (`xdistil.data.transfer.selection_rows`; original
sentences only, and neither their entity-augmented variants nor the variants that took a
mention or a word from them are trained on): entity F1
against the teachers' tags, or the hidden loss for a hidden-only stage. Thousands of such
sentences cost nothing but labeling, where the gold slice has ``data.val_size`` a language:
on 100 a language a 0.1-point difference once decided between 92 and 98 % retention. The
gold slice's F1 is logged beside it (``gold_f1`` in each epoch's history); ``gold`` selects
on it as before. A stage trained on gold alone selects on gold: the teacher-free baseline
must not see the teacher. A stage (and each unfreezing phase) keeps its own best weights
unless the weights it started from score more than ``distill.keep_margin`` F1 points higher
(`fit.Job.start_margin`): what the slice cannot resolve never throws a stage away.

    distill/
      progress.json               finished phases and stages (a record; the checkpoint decides)
      metrics.json                every stage's phases' logs, across resumes (`DISTILL_LOG`)
      checkpoint/                 the fit checkpoint of the current (or last finished) phase
      stage1-hard/ stage2-soft/   a complete student after each stage, with its fingerprint
      xdistil_files.json          what xdistil wrote here, named before it is written (`xdistil_export.atomic`)

Every stage's folder and the checkpoint carry a fingerprint (`xdistil.digests`): the
stage spec, its matching spec, the student config, the transfer set's and the teachers'
digests and the previous stage's digest. A rerun with another stage list reuses the
leading stages that are the same and recomputes from the first one that differs (or,
with ``resume_only``, refuses in one line naming what differs).

Under ``accelerate launch`` it is data-parallel (DDP): every process trains on its share
of each epoch's batches, the selection metric is computed by the main process and
broadcast (so all processes stop early together), and only the main process writes.
The transfer set stays memory-mapped; only row lengths and split row numbers are in memory.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from xdistil_export.atomic import expect, recorded, remove_own, seal, write_json
from xdistil_export.decode import decode_all, log_softmax

from xdistil import digests
from xdistil import losses as L
from xdistil.augment import words_key
from xdistil.batching import Batch, TransferBatcher
from xdistil.config import MatchSpec, RunConfig, StageSpec, to_dict
from xdistil.data.align import IGNORE_INDEX, shuffled_length_batches
from xdistil.data.transfer import selection_rows, transfer_languages
from xdistil.evaluate import score, selection_average
from xdistil.fit import Job, check_launch, fit, load_checkpoint, make_accelerator, read_state
from xdistil.labeling import BORROWED_FROM, load_transfer, scan_transfer
from xdistil.memory import PeakMemory
from xdistil.models import OnDevice, teacher_dirs
from xdistil.objective import TERMS, TermInputs
from xdistil.outputs import TaggerOutput
from xdistil.run import fingerprints
from xdistil.run.fingerprints import student_precision
from xdistil.run.layout import DISTILL_LOG
from xdistil.students import build_student, config_from, count_parameters, load_student, save_student
from xdistil.taggers import Tagger, load_tagger, predict_tags
from xdistil.vocab import count_pieces

log = logging.getLogger(__name__)

PROJECTIONS = "projections.safetensors"
"""Beside a stage's student: the hidden-loss projections, so a later stage can start from it."""


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


def stage_loss(d: Distiller, spec: StageSpec, out: TaggerOutput | torch.Tensor, b: Batch, match: MatchSpec,
               weighting: str, proj: list[torch.Tensor] | None = None,
               fallback: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """The stage's weighted loss on one batch; every loss sees only scored words.

    ``out``: the student's output, or its word logits (N, C) as `Distiller.forward` returns
    them; ``proj``: the projections from `Distiller.forward` (computed here when None);
    ``match``: the stage's matching spec (student layer, hidden loss kind).
    Teacher weights (MT-BERT): from the teachers' task losses on this batch's gold words
    when it has any, else ``fallback`` (the weights from the selection slice, see
    `validation_weights`), else uniform."""
    logits = out if isinstance(out, torch.Tensor) else out.word_logits  # (N, C)
    gold_mask = b.gold != IGNORE_INDEX
    if gold_mask.any():
        task = L.per_teacher_task_loss(b.logits, b.gold.clamp(min=0), gold_mask)  # (K,)
        weights = L.teacher_weights(task, weighting)
    elif fallback is not None:
        weights = fallback.to(b.logits.device)
    else:
        weights = torch.full((b.logits.shape[0],), 1.0 / b.logits.shape[0], device=b.logits.device)
    def projections() -> list[torch.Tensor]:
        if proj is not None:
            return proj
        state = out.words(out.hidden_states[match.student_layer])  # (N, H_student)
        return [p(state) for p in d.projections]  # K x (N, D_k)

    inputs = TermInputs(logits=logits, gold=b.gold, teacher_logits=b.logits, weights=weights,
                        soft_kind=spec.soft_kind, temperature=spec.temperature, hidden_kind=match.loss,
                        projections=projections, teacher_hidden=b.hidden)
    parts = {name: TERMS[name].compute(inputs) for name in spec.losses}
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
    device = next(student.parameters()).device
    return Tagger(OnDevice(student, device, ()), tokenizer, list(labels), max_length, "student")


def select_signal(cfg: RunConfig, spec: StageSpec) -> str:
    """What stage ``spec`` selects on: ``teacher`` (the held-out transfer sentences) or ``gold``
    (the gold slice). ``distill.select`` decides, except that a stage learning from gold alone
    always selects on gold, so that a teacher-free student never sees a teacher."""
    return "teacher" if cfg.distill.select == "teacher" and set(spec.losses) - {"gold"} else "gold"


def slice_f1(student: nn.Module, rows, tokenizer, labels, cfg: RunConfig) -> float:
    """The student's average per-language entity F1 on ``rows`` of (words, reference tags, language)."""
    tagger = _student_tagger(student, tokenizer, labels, cfg.student.max_length)
    by_lang: dict[str, tuple[list, list]] = {}
    for words, ref, lang in rows:
        by_lang.setdefault(lang, ([], []))
        by_lang[lang][0].append(words)
        by_lang[lang][1].append(ref)
    scores = {lang: score(gs, predict_tags(tagger, ws, cfg.distill.eval_batch_size))
              for lang, (ws, gs) in by_lang.items()}
    return selection_average(scores)  # languages without a reference entity left out


def select_metric(d: Distiller, spec: StageSpec, val_rows, tokenizer, labels, cfg: RunConfig,
                  batcher: TransferBatcher, fallback: torch.Tensor | None = None) -> float:
    """Higher is better: average per-language F1 on ``val_rows`` (words, reference tags, language),
    or minus the hidden loss on ``batcher.val_index`` for hidden-only stages."""
    d.eval()
    device = next(d.parameters()).device
    with torch.no_grad():
        if spec.selects_on_f1:
            return slice_f1(d.student, val_rows, tokenizer, labels, cfg)
        match = cfg.distill.match_for(spec)
        total, n = 0.0, 0
        for chunk in range(0, len(batcher.val_index), 64):
            b = batcher(batcher.val_index[chunk : chunk + 64], need_hidden=True).to(device)
            out = d.student(**b.inputs)
            _, parts = stage_loss(d, spec, out, b, match, cfg.distill.teacher_weighting, fallback=fallback)
            total += parts["hidden"] * len(b.gold)
            n += len(b.gold)
        return -total / max(n, 1)


# ---- distill: the stages in order, each phase one `fit` ------------------------------------

@dataclass
class _Run:
    """What every phase of one distillation shares."""

    cfg: RunConfig
    stages: list[StageSpec]
    fps: list[dict]
    dirs: list[Path]
    out: Path
    accelerator: object
    d: Distiller
    tokenizer: object
    labels: list[str]
    ids: list[int]
    ds: object
    lengths: list[int]
    index: dict[str, list[int]]
    val_rows: list
    """The gold slice: (words, gold tags, language)."""
    select_rows: list
    """The held-out transfer sentences: (words, the teachers' tags, language); empty under select gold."""
    val_task: torch.Tensor
    """Each teacher's task loss on the selection slice (K,)."""
    fallback: torch.Tensor
    """The teacher weights of batches without gold words, from ``val_task``."""
    batchers: dict

    def batcher(self, layer: int | None) -> TransferBatcher:
        if layer not in self.batchers:
            b = TransferBatcher(self.ds, self.tokenizer, self.cfg.student.max_length, self.ids, len(self.labels),
                                layer)
            # the rows a hidden-only stage's loss selects on
            b.val_index = self.index["select"] if self.select_rows else self.index["val"]
            self.batchers[layer] = b
        return self.batchers[layer]


def distill(cfg: RunConfig, transfer_dir: str | Path, teacher_dir: str | Path, out_dir: str | Path,
            progress: bool = True, resume_only: bool = False) -> list[Path]:
    """Run every stage of ``cfg.distill``; the student folder saved after each stage, in order.

    Leading stages whose folders carry this run's fingerprints are reused; a killed run
    resumes exactly from its checkpoint; work built from other inputs is recomputed from the
    first stage that differs, or refused (`digests.StaleOutput`) with ``resume_only``."""
    out = Path(out_dir)
    stages = cfg.distill.resolved_stages()
    dirs = [out / f"stage{i + 1}-{s.name}" for i, s in enumerate(stages)]

    ds, manifest = load_transfer(transfer_dir, langs=transfer_languages(cfg))
    ids = _teacher_ids(cfg, manifest)
    fps = fingerprints.stages(cfg, stages, transfer_dir, [_teacher_path(manifest, k, teacher_dir) for k in ids])
    first = _reusable(dirs, fps)
    if first == len(stages):
        log.info("distill: reusing the %d stages in %s (built from the same inputs)", first, out)
        return dirs

    accelerator = make_accelerator(find_unused_parameters=True)
    check_launch(accelerator.num_processes)
    torch.manual_seed(cfg.distill.seed)
    d, tokenizer = _build_distiller(cfg, stages, ds, manifest, ids, teacher_dir)
    run = _setup(cfg, stages, fps, dirs, out, accelerator, d, tokenizer, manifest, ids, ds)
    phases_of = [len(d.groups(s)) if s.unfreeze else 1 for s in stages]
    first_phase = _resume(run, first, phases_of, resume_only)
    d.to(accelerator.device)

    metrics = _read_json(out / DISTILL_LOG, {"stages": []})
    # the logs of what is kept: the reused stages, and the finished phases of the one resumed
    metrics["stages"] = [e if e["index"] < first else {**e, "phases": _phases(e)[:first_phase]}
                         for e in metrics["stages"] if e.get("index", len(stages)) <= first
                         and e.get("fingerprint") == fps[e["index"]]["digest"]]
    metrics["teachers"] = _teacher_record(run, manifest)
    metrics["selection"] = _selection_record(run)
    done = {"stages": [s.name for s in stages[:first]], "fingerprints": [fp["digest"] for fp in fps[:first]],
            "phases": [f"{i}:{j}" for i in range(first + 1) for j in range(phases_of[i] if i < first else first_phase)]}
    for si in range(first, len(stages)):
        spec = stages[si]
        entry = next((e for e in metrics["stages"] if e["index"] == si), None)
        if entry is None:
            entry = {"index": si, "stage": spec.name, "fingerprint": fps[si]["digest"], "phases": []}
            metrics["stages"].append(entry)
        groups = d.groups(spec)
        for phase in range(first_phase if si == first else 0, phases_of[si]):
            active = groups[: phase + 1] if spec.unfreeze else groups
            entry["phases"] = _phases(entry)[:phase] + [_run_phase(run, si, phase, active, progress)]
            entry.pop("steps", None)  # the name of a release before (a resumed log)
            done["phases"] = [k for k in done["phases"] if k != f"{si}:{phase}"] + [f"{si}:{phase}"]
            if accelerator.is_main_process:
                write_json(out / DISTILL_LOG, metrics)
                write_json(out / "progress.json", done)
        if accelerator.is_main_process:
            _save_stage(run, si)
        done["stages"].append(spec.name)
        done["fingerprints"].append(fps[si]["digest"])
        if accelerator.is_main_process:
            write_json(out / "progress.json", done)
    for b in run.batchers.values():
        b.close()  # the prefetching thread
    accelerator.wait_for_everyone()  # every student is on disk before any process reads one
    missing = [str(p) for p in dirs if not (p / digests.FILE).exists()]
    if missing:
        raise RuntimeError(f"distill: the stages ran but {', '.join(missing)} was not written")
    return dirs


def _reusable(dirs: list[Path], fps: list[dict]) -> int:
    """How many leading stages are on disk with this run's fingerprints."""
    n = 0
    while n < len(dirs) and digests.same(digests.read(dirs[n]), fps[n]):
        n += 1
    return n


def _tag(state) -> tuple[int, int] | None:
    try:
        si, phase = state.tag.split(":")
        return int(si), int(phase)
    except (AttributeError, ValueError):
        return None


def _phases(entry: dict) -> list[dict]:
    """A stage's phase logs in the distillation log (``steps`` in logs of releases before)."""
    return entry.get("phases", entry.get("steps", []))


def _resume(run: _Run, first: int, phases_of: list[int], resume_only: bool) -> int:
    """Where stage ``first`` starts (its first phase to run), with the weights it starts from
    loaded: from the checkpoint when it belongs to this run, else from the previous stage's
    folder. Stale work (stage folders or a checkpoint from other inputs) is deleted, or
    refused with ``resume_only``."""
    ckpt = run.out / "checkpoint"
    state = read_state(ckpt)
    tag, digest = _tag(state), ((state.fingerprint or {}).get("digest") if state else None)
    if tag and tag[0] == first and digest == run.fps[first]["digest"]:
        return tag[1]  # the fit of that phase resumes it (or finds it finished)
    if tag and first > 0 and tag == (first - 1, phases_of[first - 1] - 1) and state.finished \
            and digest == run.fps[first - 1]["digest"]:
        load_checkpoint(ckpt, run.accelerator, run.d)  # the end of the previous stage, RNG included
        return 0
    # stage folders past the reused ones (of this stage list or an earlier one), the checkpoint;
    # only those the folder's record names: a user's copy of a stage is not ours to delete
    named = recorded(run.out)
    stale = sorted(p for p in run.out.glob("stage[0-9]*-*") if p.is_dir() and p not in run.dirs[:first]
                   and p.name in named) + ([ckpt] if state else [])
    if stale and resume_only:
        if run.dirs[first].exists():
            where, old, new = run.dirs[first], digests.read(run.dirs[first]), run.fps[first]
        else:
            where, old = ckpt, state.fingerprint
            new = run.fps[min(tag[0], len(run.fps) - 1)] if tag else run.fps[first]
        raise digests.StaleOutput(digests.stale_message(where, old, new))
    if stale:
        log.info("distill: recomputing from stage %d (%s): %s built from other inputs", first + 1,
                 run.stages[first].name, ", ".join(p.name for p in stale))
    run.accelerator.wait_for_everyone()  # every process has read the folders before they go
    if run.accelerator.is_main_process:
        for p in stale:  # a stage where the folder's record names it; the checkpoint by its own record
            remove_own(p, within=None if p == ckpt else run.out)
    run.accelerator.wait_for_everyone()
    if first > 0:
        _load_stage(run.d, run.dirs[first - 1])
    return 0


def _run_phase(run: _Run, si: int, phase: int, active: list, progress: bool) -> dict:
    """One unfreezing phase of stage ``si`` (groups ``active``) as one `fit`; its log."""
    from accelerate.utils import broadcast_object_list


    cfg, d, spec = run.cfg, run.d, run.stages[si]
    match = cfg.distill.match_for(spec)
    device, main = run.accelerator.device, run.accelerator.is_main_process
    for p in d.parameters():
        p.requires_grad_(False)
    trainable = [p for _, ps in active for p in ps]
    for p in trainable:
        p.requires_grad_(True)
    uses_hidden = "hidden" in spec.losses
    batcher = run.batcher(match.teacher_layer if uses_hidden else None)
    hidden_layer = match.student_layer if uses_hidden else None
    rows, seed = run.index[spec.data], cfg.distill.seed * 1000 + si * 100 + phase * 10
    signal = select_signal(cfg, spec)
    slice_rows = run.select_rows if signal == "teacher" else run.val_rows
    report = signal == "teacher" and spec.selects_on_f1  # the gold slice's F1 beside, as a report

    def loss(model, batch: list[int]):
        b = batcher(batch, need_hidden=uses_hidden).to(device)
        # only what the loss uses leaves the forward (logits detached when unused), so DDP's
        # unused-parameter search sees exactly the parameters trained
        logits, proj = model(b.inputs, hidden_layer, spec.selects_on_f1)
        total, _ = stage_loss(d, spec, logits, b, match, cfg.distill.teacher_weighting, proj, run.fallback)
        return total, int(b.inputs["attention_mask"].sum())

    def select() -> tuple[float, dict]:
        # the main process scores the selection slice and tells the others, so every
        # process takes the same early-stopping and best-weights decisions
        got: list = [None, {}]
        if main:
            got[0] = select_metric(d, spec, slice_rows, run.tokenizer, run.labels, cfg, batcher, run.fallback)
            if report:
                got[1] = {"gold_f1": slice_f1(d.student, run.val_rows, run.tokenizer, run.labels, cfg)}
        value, extra = broadcast_object_list(got, from_process=0)
        return value, extra

    names = [n for n, _ in active]
    job = Job(module=d, optimizer=torch.optim.Adam(trainable, lr=spec.lr),
              batches=lambda epoch: shuffled_length_batches(rows, run.lengths, spec.batch_size, seed + epoch),
              loss=loss, select=select, epoch_batches=lambda batches: batcher.plan(batches, uses_hidden),
              epochs=spec.epochs, max_steps_per_epoch=cfg.distill.max_steps_per_epoch,
              patience=spec.patience, min_epochs=spec.min_epochs, select_start=True, clip=5.0,
              checkpoint_every=cfg.distill.checkpoint_every,
              # keep_margin is in F1 points: a hidden-only stage's loss keeps the plain rule
              start_margin=cfg.distill.keep_margin if spec.selects_on_f1 else 0.0,
              average=spec.average, desc=f"{spec.name} [{'+'.join(names)}]")
    mem = PeakMemory().start()
    state = fit(job, run.accelerator, checkpoint=run.out / "checkpoint", tag=f"{si}:{phase}",
                fingerprint=run.fps[si], precision=student_precision(cfg),
                work="bilstm" if cfg.student.arch == "bilstm" else "encoder", progress=progress)
    mem.stop()
    what = f"{signal} F1" if spec.selects_on_f1 else "-hidden loss"
    for h in state.history:
        if main:
            log.info("%s epoch %d: loss %.4f, selection %s %.3f%s", job.desc, h["epoch"], h["mean_loss"], what,
                     h["select"], f" (gold F1 {h['gold_f1']:.3f})" if "gold_f1" in h else "")
    return {"groups": names, "select": signal, "start_select": state.start_score,
            "best_select": state.best_score, "best_epoch": state.best_epoch,
            "history": state.history, "steps": state.global_step, "seconds": round(state.seconds, 1),
            "select_s": round(state.select_seconds, 1),
            "tokens_per_s": round(state.tokens / max(state.seconds, 1e-9), 1), "processes": state.processes,
            "peak_rss_mb": mem.peak_mb, "memory_scope": mem.scope}


def _save_stage(run: _Run, si: int) -> None:
    """The student after stage ``si``, its projections, and last its fingerprint (a folder
    without one is unfinished)."""
    cfg, spec, folder = run.cfg, run.stages[si], run.dirs[si]
    expect(run.out, [folder.name])  # named before it is written: the record says what is xdistil's
    save_student(run.d.student, run.tokenizer, folder,
                 {"labels": run.labels, "max_length": cfg.student.max_length, "stage": spec.name,
                  "stages_so_far": [s.name for s in run.stages[: si + 1]],
                  "params": count_parameters(run.d.student)._asdict(), "config": to_dict(cfg.student),
                  "distill": to_dict(cfg.distill), "fingerprint": run.fps[si]["digest"]})
    expect(folder, [PROJECTIONS, digests.FILE])  # beside the student, named in its record first
    if len(run.d.projections):
        save_file({k: v.detach().cpu().contiguous() for k, v in run.d.projections.state_dict().items()},
                  str(folder / PROJECTIONS))
    digests.write(folder, run.fps[si])
    seal(folder)


def _load_stage(d: Distiller, folder: Path) -> None:
    """Start from a finished stage's student (and its projections)."""
    student = load_student(folder)[0]
    d.student.load_state_dict(student.state_dict())
    if len(d.projections) and (folder / PROJECTIONS).exists():
        d.projections.load_state_dict(load_file(str(folder / PROJECTIONS)))


def _teacher_ids(cfg: RunConfig, manifest: dict) -> list[int]:
    n_stored = len(manifest["teachers"])
    ids = list(range(n_stored)) if cfg.distill.teachers is None else list(cfg.distill.teachers)
    if not ids or any(not 0 <= k < n_stored for k in ids):
        raise ValueError(f"distill.teachers {cfg.distill.teachers}: the transfer set has teachers 0..{n_stored - 1}")
    return ids


def _build_distiller(cfg: RunConfig, stages: list[StageSpec], ds, manifest: dict, ids: list[int],
                     teacher_dir) -> tuple[Distiller, object]:
    """A new student (or distill.init_from's) and one projection per teacher for the hidden loss."""
    labels = manifest["labels"]
    if cfg.distill.init_from:
        student, tokenizer, init_labels, _ = load_student(cfg.distill.init_from)
        if list(init_labels) != list(labels):
            raise ValueError(f"distill.init_from {cfg.distill.init_from} predicts {init_labels}, "
                             f"the transfer set has {labels}")
    else:
        # the student's vocabulary and initial embeddings: from the first teacher it learns from
        teacher = load_tagger(_teacher_path(manifest, ids[0], teacher_dir))
        seen = count_pieces(teacher.tokenizer, _iter_words(ds), ds["lang"])  # per language, for student.max_vocab
        student, tokenizer = _build(cfg, build_student, teacher, seen, labels)
        del teacher
    widths = set()
    for spec in stages:
        if "hidden" in spec.losses:
            match = cfg.distill.match_for(spec)
            if match.teacher_layer not in manifest["layers"]:
                raise ValueError(f"stage {spec.name!r}: match.teacher_layer {match.teacher_layer} was not stored; "
                                 f"the transfer set has layers {manifest['layers']} (transfer.layers)")
            widths.add(student.hidden_size(match.student_layer))
    if len(widths) > 1:
        raise ValueError(f"the stages match student layers of different widths {sorted(widths)}: one projection "
                         "per teacher needs one width (match.student_layer)")
    teacher_dims = [manifest["hidden_sizes"][k] for k in ids] if widths else []
    width = widths.pop() if widths else student.hidden_size(cfg.distill.match.student_layer)
    return Distiller(student, width, teacher_dims), tokenizer


def _setup(cfg, stages, fps, dirs, out, accelerator, d, tokenizer, manifest, ids, ds) -> _Run:
    """Row lengths and split row numbers (streamed: no rows in memory), the gold slice, and
    under select teacher the held-out transfer sentences, taken out of the training rows."""
    labels = manifest["labels"]
    lengths, split_rows = scan_transfer(ds)
    val_rows = [(list(r["words"]), [labels[t] for t in r["gold"]], r["lang"])
                for r in (ds[i] for i in split_rows.get("val", []))]
    if not val_rows:
        raise ValueError("the transfer set has no selection slice (data.val_size = 0); early stopping needs one")
    val_task, fallback = validation_weights(ds, split_rows["val"], ids, len(labels),
                                            cfg.distill.teacher_weighting)
    held: list[int] = []
    variants: list[int] = []  # entity-augmented rows made from or taking from held-out sentences: not trained on
    if any(select_signal(cfg, s) == "teacher" for s in stages):
        held, variants = held_out(ds, split_rows, cfg.distill.select_size)
    trained = set(split_rows.get("labeled", []) + split_rows.get("transfer", [])) - set(held) - set(variants)
    index = {"transfer": sorted(trained),
             "labeled": split_rows.get("labeled", []), "val": split_rows["val"], "select": held}
    select_rows = []
    if held:
        words = ds.select_columns(["words", "lang"])[held]
        tags = teacher_tags(ds, held, ids, labels, fallback)
        select_rows = list(zip(map(list, words["words"]), tags, words["lang"], strict=True))
    return _Run(cfg, stages, fps, dirs, out, accelerator, d, tokenizer, labels, ids, ds, lengths, index, val_rows,
                select_rows, val_task, fallback, {})


def held_out(ds, split_rows: dict[str, list[int]], size: int) -> tuple[list[int], list[int]]:
    """The transfer rows that selection on the teacher's tags holds out of training (drawn from
    original sentences only), and the entity-augmented rows made from them or that took a
    mention or a word from them (not trained on either: they carry held-out text): what a
    distillation never trains on. ``split_rows`` as `labeling.scan_transfer` gives it."""
    augmented = _augmented(ds)
    held = _held_out(ds, [r for r in split_rows.get("transfer", []) if not augmented[r]], size)
    return held, _variants_of(ds, held)


def _held_out(ds, transfer_rows: list[int], size: int) -> list[int]:
    """The transfer-only rows held out for selection (`selection_rows`), sorted; one line
    when there are none to hold out."""
    langs = _row_languages(ds)
    by_lang: dict[str, list[int]] = {}
    for r in transfer_rows:
        by_lang.setdefault(str(langs[r]), []).append(r)
    held = sorted(r for rows in selection_rows(by_lang, size).values() for r in rows)
    if not held:
        raise ValueError(f"distill.select teacher: the transfer set has too few transfer-only sentences "
                         f"({len(transfer_rows)}) to hold any out for selection; use distill.select gold")
    return held


def _augmented(ds, batch_size: int = 10_000) -> np.ndarray:
    """Whether each row is an entity-augmented variant (``aug_of`` set; `xdistil.labeling.entity_rows`):
    all False for a set without them."""
    import pyarrow.compute as pc

    if "aug_of" not in ds.column_names:
        return np.zeros(len(ds), dtype=bool)
    parts = [pc.not_equal(t["aug_of"], "").to_numpy(zero_copy_only=False)
             for t in ds.select_columns(["aug_of"]).with_format("arrow").iter(batch_size=batch_size)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


_SAID_NO_BORROWED: set[str] = set()
"""The transfer sets already warned of lacking ``borrowed_from``: once a set a process."""


def _variants_of(ds, rows: list[int], batch_size: int = 10_000) -> list[int]:
    """The entity-augmented rows made from ``rows`` (``aug_of`` one of their keys) or that took
    a mention or a word from them (``borrowed_from`` holds one), of their language. A set
    labeled before rows recorded ``borrowed_from``: the rows made from them alone, and a warning
    (once) that the set needs a relabel for the rest."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not rows or "aug_of" not in ds.column_names:
        return []
    borrowed = BORROWED_FROM in ds.column_names
    if not borrowed:
        _say_no_borrowed(ds)
    picked = ds.select_columns(["words", "lang"])[rows]
    keys = pa.array(sorted({f"{lang}:{words_key(w).hex()}"
                            for w, lang in zip(picked["words"], picked["lang"], strict=True)}))
    columns = ["lang", "aug_of", *([BORROWED_FROM] if borrowed else [])]
    out, start = [], 0
    for t in ds.select_columns(columns).with_format("arrow").iter(batch_size=batch_size):
        hit = pc.is_in(pc.binary_join_element_wise(t["lang"], t["aug_of"], ":"), value_set=keys)
        hit = np.array(hit.to_numpy(zero_copy_only=False), dtype=bool)
        if borrowed:
            lists = t[BORROWED_FROM].combine_chunks()
            parent = pc.list_parent_indices(lists)  # each borrowed key's row in the batch
            took = pc.binary_join_element_wise(pc.take(t["lang"], parent),
                                               pc.list_flatten(lists).cast(pa.string()), ":")
            leaks = pc.is_in(took, value_set=keys).to_numpy(zero_copy_only=False)
            hit[parent.to_numpy(zero_copy_only=False)[leaks]] = True
        out += (np.flatnonzero(hit) + start).tolist()
        start += t.num_rows
    return out


def _say_no_borrowed(ds) -> None:
    where = sorted({str(Path(f["filename"]).parents[2]) for f in ds.cache_files}) or ["the transfer set"]
    if where[0] not in _SAID_NO_BORROWED:
        _SAID_NO_BORROWED.add(where[0])
        log.warning("%s was labeled before entity-augmented rows recorded what they took from (no %s column): "
                    "variants of trained sentences may carry held-out text into training; relabel it "
                    "('xdistil label') for the leak check", where[0], BORROWED_FROM)


def _row_languages(ds, batch_size: int = 10_000) -> np.ndarray:
    """Every row's language, read from the memory-mapped set in Arrow batches."""
    parts = [t["lang"].to_numpy(zero_copy_only=False)
             for t in ds.select_columns(["lang"]).with_format("arrow").iter(batch_size=batch_size)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=object)


def teacher_tags(ds, rows: list[int], teachers: list[int], labels: list[str], weights: torch.Tensor
                 ) -> list[list[str]]:
    """The teachers' tags of ``rows``, the reference the student is selected against: the
    word probabilities of the teachers, weighted by ``weights`` (those of batches without gold
    words, which the ``hard`` loss votes with on these rows; one teacher: its own), decoded to
    valid IOB2 as the student's predictions and the teacher's dev scores are."""
    cols = ds.select_columns([f"t{k}_logits" for k in teachers]).with_format("numpy")[list(rows)]
    n_labels, out = len(labels), []
    for i in range(len(rows)):
        probs = sum(float(w) * np.exp(log_softmax(cols[f"t{k}_logits"][i].reshape(-1, n_labels)))
                    for k, w in zip(teachers, weights, strict=True))  # (n_words, C)
        out.append(np.log(np.maximum(probs, 1e-30)))
    return [tags for tags, _ in decode_all(out, labels)]


def _teacher_record(run: _Run, manifest: dict) -> dict:
    cfg, ids = run.cfg, run.ids
    rec = {"weighting": cfg.distill.teacher_weighting, "ids": ids,
           "paths": [manifest["teachers"][k]["path"] for k in ids],
           "selection_task_loss": [round(float(x), 4) for x in run.val_task],
           "weights_without_gold": [round(float(x), 4) for x in run.fallback]}
    if len(ids) > 1:
        log.info("teacher task loss on the selection slice %s -> weights %s (%s)", rec["selection_task_loss"],
                 rec["weights_without_gold"], cfg.distill.teacher_weighting)
    return rec


def _selection_record(run: _Run) -> dict:
    """What the stages selected on: the signal, the margin, the sentences of each slice a language."""
    rec = {"select": run.cfg.distill.select, "keep_margin": run.cfg.distill.keep_margin,
           "gold_sentences": dict(Counter(r[2] for r in run.val_rows)),
           "held_out_sentences": dict(Counter(r[2] for r in run.select_rows))}
    if run.select_rows:
        log.info("selection: the teachers' tags on %d held-out transfer sentences (%s); gold F1 as a report",
                 len(run.select_rows), ", ".join(f"{k} {v}" for k, v in rec["held_out_sentences"].items()))
    return rec


def _read_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def _teacher_path(manifest: dict, k: int, given: str | Path) -> Path:
    """Teacher k of the transfer set: the k-th folder behind ``given`` (a teacher, or a
    co-finetuned group), else the folder the set recorded for it."""
    dirs = teacher_dirs(given)
    return dirs[k] if k < len(dirs) else Path(manifest["teachers"][k]["path"])


def _iter_words(ds, batch_size: int = 1000):
    """The ``words`` column row by row, read in batches from the memory-mapped set."""
    for batch in ds.select_columns(["words"]).iter(batch_size=batch_size):
        yield from batch["words"]


def _build(cfg: RunConfig, build_student, teacher, seen, labels):
    hf_model = teacher.module.model  # HFTagger -> the HF model
    return build_student(cfg.student.arch, hf_model, teacher.tokenizer, seen, labels, config_from(cfg.student),
                         max_vocab=cfg.student.max_vocab)

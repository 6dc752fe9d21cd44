"""The one training loop: teacher fine-tuning and every distillation step call `fit`.

A `Job` says what is trained (a module, its optimizer), on which batches (a function of
the epoch, the same on every process), with which loss, and how the selection slice
scores it. `fit` runs it (nanoGPT / litgpt style, one flat loop):

- length: ``epochs`` (fractions allowed) but at least ``min_steps`` optimizer steps;
- selection after every epoch, early stopping after ``patience`` epochs without a better
  score, and the best weights restored at the end (restore-best); the starting weights may
  compete too, handicapped by a margin (``Job.select_start``, ``Job.start_margin``);
- a checkpoint every ``checkpoint_every`` steps and at every epoch end, from which a new
  process continues *exactly*: weights, best weights, optimizer and scheduler, the RNG
  states of torch (CPU and CUDA), numpy and python -- per process under a launcher -- and
  the position in the batch order (epoch and batch index; the order is a function of the
  epoch, so the position is all that is needed);
- data-parallel under ``accelerate launch``: every process trains on its share of each
  epoch's batches (padded so that all take as many steps), through `Accelerator.prepare`;
- the forward pass under the run's precision (`xdistil.precision`: torch.autocast, plus
  loss scaling for fp16; the master weights stay fp32). Not accelerate's
  ``mixed_precision``: that is fixed once per process (``AcceleratorState``), and one
  process may fine-tune a teacher in one precision and distil in another;
- optional weight averaging (``Job.average``): an exponential moving average of the
  trained weights, with a warm-up, is what selection scores and what the fit keeps, while
  training goes on from the raw weights (Polyak averaging; SWAD, Cha et al. 2021, reports
  averaged weights holding up better outside the training domain);
- a tqdm progress bar on the main process.

One checkpoint format, one folder::

    checkpoint/
      state.json           FitState: tag, position, best score, history, fingerprint
      rng.json             RNG states, one entry per process
      weights.safetensors  the module's current weights (``Job.state_keys`` of them)
      best.safetensors     the best weights so far
      average.safetensors  the moving average of the trained weights (``Job.average`` only)
      optimizer.pt         optimizer, scheduler and fp16 loss-scaler state (torch.save; read with
                           weights_only=True)

A checkpoint belongs to one fit (its ``tag``) and one set of inputs (its ``fingerprint``):
`fit` resumes only from a checkpoint with both the same, and starts afresh otherwise.

Fault injection (tests, and anyone checking resume by hand) goes through xdistil's own
seam, never through a library's internals: `before_step` hooks are called before every
optimizer step of every fit in the process, and ``$XDISTIL_KILL_AT_STEP=N`` kills the
process (SIGKILL, as a crash would) before its N-th optimizer step, counted over all fits.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from xdistil_export.atomic import expect, remove_own, replace_dir, write_json

from xdistil import precision as P

log = logging.getLogger(__name__)

STATE, RNG, WEIGHTS, BEST, OPTIMIZER = "state.json", "rng.json", "weights.safetensors", "best.safetensors", \
    "optimizer.pt"
AVERAGE = "average.safetensors"


_SAID_AUTO: set[str] = set()


@dataclass
class Job:
    """What `fit` trains, and how."""

    module: nn.Module
    """Trained in place (not wrapped); its trainable parameters are those with requires_grad."""
    optimizer: torch.optim.Optimizer
    batches: Callable[[int], list[list[int]]]
    """epoch -> that epoch's batches of row numbers, the same on every process (fit shards them)."""
    loss: Callable[[nn.Module, list[int]], tuple[torch.Tensor, int]]
    """(the prepared module, one batch) -> (loss, tokens in the batch)."""
    select: Callable[[], tuple[float, dict]]
    """The selection slice's score (higher is better; the same on every process) and what to log."""
    epoch_batches: Callable[[list[list[int]]], Any] | None = None
    """Told the batches this process is about to train on, in order (e.g. to prefetch them)."""
    epochs: float = 1.0
    min_steps: int = 0
    """At least this many optimizer steps (more epochs when an epoch is short)."""
    max_steps_per_epoch: int | None = None
    patience: int | None = None
    """Stop after this many epochs without a better score (None: never early)."""
    min_epochs: int = 0
    """Early stopping may end the fit only after this many epochs (its best weights are still
    the ones kept): a step whose learning rate restarts dips before it climbs."""
    select_start: bool = False
    """The starting weights are a candidate too (a distillation step may make things worse)."""
    start_margin: float = 0.0
    """With ``select_start``: the starting weights compete this much below their score, so an
    epoch within the margin of them still replaces them (and resets patience). A difference
    the selection slice cannot resolve then never throws a stage's progress away; 0: the
    starting weights win ties and every epoch that does not beat them counts against patience."""
    clip: float | None = 1.0
    scheduler: Callable[[torch.optim.Optimizer, int], Any] | None = None
    """(optimizer, total steps) -> an LR scheduler stepped once per optimizer step."""
    checkpoint_every: int = 0
    """Optimizer steps between checkpoints inside an epoch (0: at epoch ends only)."""
    state_keys: set[str] | None = None
    """Which entries of the module's state dict a checkpoint holds (None: all of them)."""
    desc: str = "train"
    average: float = 0.0
    """Decay of the moving average of the trainable weights that selection scores and the fit
    keeps (0: off, the raw weights). Step t uses min(average, (1 + t) / (10 + t)), so the first
    steps are not drowned by the starting weights."""


@dataclass
class FitState:
    """Where a fit stands; the JSON part of a checkpoint."""

    tag: str = ""
    epoch: int = 0
    """Epochs finished."""
    step_in_epoch: int = 0
    """Batches of the current epoch done (on this process's share)."""
    global_step: int = 0
    best_score: float | None = None
    best_epoch: int = -1
    """Epoch (1-based) whose weights are best; 0: the starting weights."""
    start_score: float | None = None
    """The starting weights' score (``Job.select_start``), without ``Job.start_margin``."""
    bad_epochs: int = 0
    finished: bool = False
    loss_sum: float = 0.0
    """Sum of this process's batch losses in the current epoch (so a resumed epoch logs the same mean)."""
    batches_done: int = 0
    run_loss: float = 0.0
    """Running (exponential) mean of the training loss, shown by the progress bar and logged."""
    processes: int = 1
    tokens: int = 0
    """Tokens trained on, over all processes and every invocation."""
    seconds: float = 0.0
    """Training time over every invocation, every selection evaluation included (the epochs' and the
    starting weights' score before the first epoch)."""
    select_seconds: float = 0.0
    """Of which selection evaluations."""
    history: list[dict] = field(default_factory=list)
    fingerprint: dict | None = None


def make_accelerator(find_unused_parameters: bool = False):
    """The `Accelerator` of a fit. ``find_unused_parameters``: a step may train parameters its
    loss does not reach (layers above the matched student layer in a hidden-only stage); DDP
    must not wait for them."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    kwargs = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    return Accelerator(kwargs_handlers=kwargs)


# ---- RNG states (JSON: torch's byte tensors as base64) ----------------------------------

def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": _b64(torch.get_rng_state())}
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state["numpy"] = [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = _b64(torch.cuda.get_rng_state())
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss_np = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss_np))
    torch.set_rng_state(_unb64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(_unb64(state["cuda"]))


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


# ---- the checkpoint folder ---------------------------------------------------------------

def read_state(folder: str | Path) -> FitState | None:
    """The FitState of a checkpoint folder (None: no checkpoint there)."""
    try:
        return FitState(**json.loads((Path(folder) / STATE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _weights(module: nn.Module, accelerator, prepared, keys: set[str] | None) -> dict[str, torch.Tensor]:
    # get_state_dict gathers sharded (FSDP / ZeRO-3) weights; called by every process
    full = accelerator.get_state_dict(prepared) if prepared is not None else module.state_dict()
    prefix = "inner."  # the `_Shell` around the module
    full = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in full.items()}
    return {k: v.detach().cpu().clone().contiguous() for k, v in full.items() if keys is None or k in keys}


def save_checkpoint(folder: str | Path, accelerator, module: nn.Module, state: FitState, *, prepared=None,
                    best: dict | None = None, optimizer=None, scheduler=None, scaler=None,
                    keys: set[str] | None = None, average: dict | None = None) -> None:
    """Write the checkpoint (every process calls it; only the main one writes). Atomic: a
    kill leaves the previous checkpoint or this one, never a mix."""
    from accelerate.utils import gather_object

    weights = _weights(module, accelerator, prepared, keys)
    rngs = gather_object([rng_state()])  # every process's, in process order
    if not accelerator.is_main_process:
        return
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    remove_own(tmp)  # one a kill left half-written: its record names what it holds
    expect(tmp, [WEIGHTS, BEST, AVERAGE, OPTIMIZER, RNG, STATE])  # named ahead: provably ours if killed
    save_file(weights, str(tmp / WEIGHTS))
    if best is not None:
        save_file(best, str(tmp / BEST))
    if average is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in average.items()}, str(tmp / AVERAGE))
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "scaler": scaler.state_dict() if scaler is not None else None}, tmp / OPTIMIZER)
    write_json(tmp / RNG, rngs)
    write_json(tmp / STATE, asdict(state))
    replace_dir(tmp, folder)


def load_checkpoint(folder: str | Path, accelerator, module: nn.Module) -> FitState:
    """Load a checkpoint's weights into ``module`` and this process's RNG states; its FitState."""
    folder = Path(folder)
    state = read_state(folder)
    if state is None:
        raise FileNotFoundError(f"{folder}: no checkpoint ({STATE} missing or unreadable)")
    result = module.load_state_dict(load_file(str(folder / WEIGHTS)), strict=False)
    if result.unexpected_keys:
        raise ValueError(f"checkpoint {folder} does not match the model: {result.unexpected_keys[:5]}")
    rngs = json.loads((folder / RNG).read_text())
    # a launcher with another process count: each process takes the state of its rank, or the first
    set_rng_state(rngs[accelerator.process_index] if accelerator.process_index < len(rngs) else rngs[0])
    return state


class _Shell(nn.Module):
    """A fresh wrapper per fit, so that `Accelerator.prepare` wraps the module anew: DDP fixes
    the parameters it all-reduces when it wraps, and gradual unfreezing changes them."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs)


def pad_to_multiple(batches: list, world: int) -> list:
    """Repeat the first batches until each of ``world`` processes gets as many (as DistributedSampler does)."""
    if not batches or world <= 1:
        return batches
    out = list(batches)
    while len(out) % world:
        out.append(batches[len(out) % len(batches)])
    return out


# ---- fault injection -----------------------------------------------------------------------

KILL_ENV = "XDISTIL_KILL_AT_STEP"
"""Test-only: SIGKILL this process before its N-th optimizer step (counted over every fit)."""

StepHook = Callable[[str, "FitState"], None]
"""(the job's ``desc``, its state before the step) -> None; raising stops the fit there."""

_hooks: list[StepHook] = []
_steps_in_process = 0


@contextmanager
def before_step(hook: StepHook) -> Iterator[None]:
    """Call ``hook`` before every optimizer step of every fit while the block runs.

    The seam tests use to interrupt training at a chosen step (raise from the hook), so that
    no test steers control flow by patching torch, accelerate or transformers."""
    _hooks.append(hook)
    try:
        yield
    finally:
        _hooks.remove(hook)


def _before_step(job: Job, state: FitState) -> None:
    global _steps_in_process
    _steps_in_process += 1
    kill_at = os.environ.get(KILL_ENV)
    if kill_at and _steps_in_process == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)
    for hook in list(_hooks):
        hook(job.desc, state)


# ---- weight averaging ---------------------------------------------------------------------

def _averaged(module: nn.Module) -> dict[str, torch.Tensor]:
    """A starting average: fp32 copies of the module's trainable floating-point weights."""
    return {n: p.detach().float().clone() for n, p in module.named_parameters()
            if p.requires_grad and p.is_floating_point()}


Pairs = list[tuple[nn.Parameter, torch.Tensor]]
"""(a weight, its average), matched by name once per fit."""


def _pairs(module: nn.Module, average: dict[str, torch.Tensor] | None) -> Pairs:
    return [(p, average[n]) for n, p in module.named_parameters() if n in average] if average else []


@torch.no_grad()
def _update_average(pairs: Pairs, decay: float, step: int) -> None:
    """``average <- d * average + (1 - d) * weights`` after optimizer step ``step`` (1-based),
    with d = min(decay, (1 + step) / (10 + step))."""
    d = min(decay, (1 + step) / (10 + step))
    for p, a in pairs:
        a.mul_(d).add_(p.detach().float(), alpha=1 - d)


@contextmanager
def _swapped_in(pairs: Pairs) -> Iterator[None]:
    """The averaged weights in the module for the block, the raw ones back after it (none: as is)."""
    raw = [p.detach().clone() for p, _ in pairs]
    with torch.no_grad():
        for p, a in pairs:
            p.copy_(a)
    try:
        yield
    finally:
        with torch.no_grad():
            for (p, _), r in zip(pairs, raw, strict=True):
                p.copy_(r)


# ---- the loop ------------------------------------------------------------------------------

def fit(job: Job, accelerator, *, checkpoint: str | Path | None = None, tag: str = "",
        fingerprint: dict | None = None, precision: str = "fp32", work: str = "encoder",
        progress: bool = True) -> FitState:
    """Train ``job`` to the end; the module holds its best weights afterwards.

    ``precision``: auto | fp32 | bf16 | fp16 (`xdistil.precision.resolve` on this process's device;
    ``work``, encoder | bilstm, is what ``auto`` times on a CPU to choose).

    ``checkpoint``: the folder to checkpoint into and resume from (None: none). A checkpoint
    there with this ``tag`` and ``fingerprint`` is resumed; a finished one is returned as it
    is (weights loaded); any other is ignored and overwritten."""
    from tqdm.auto import tqdm


    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    module, opt = job.module, job.optimizer
    trainable = [p for p in module.parameters() if p.requires_grad]
    steps_per_epoch = math.ceil(len(job.batches(0)) / world)
    if job.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, job.max_steps_per_epoch)
    steps_per_epoch = max(steps_per_epoch, 1)
    total_steps = max(math.ceil(steps_per_epoch * job.epochs), job.min_steps)
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    scheduler = job.scheduler(opt, total_steps) if job.scheduler is not None else None

    fp_digest = (fingerprint or {}).get("digest")
    old = read_state(checkpoint) if checkpoint is not None else None
    resume = old is not None and old.tag == tag and (old.fingerprint or {}).get("digest") == fp_digest
    if resume and old.finished:
        return load_checkpoint(checkpoint, accelerator, module)
    model, opt = accelerator.prepare(_Shell(module), opt)
    choice = P.choice_record(precision, accelerator.device, work)
    resolved = choice["resolved"]
    if main and precision == "auto" and work not in _SAID_AUTO:  # once a process: what auto measured
        _SAID_AUTO.add(work)
        cal = choice.get("calibration") or {}
        log.info("precision auto -> %s for %s%s", resolved, work,
                 f" (bf16 ran {cal['bf16_speedup']:.2f}x the speed of fp32 here, {P.cache_file()})" if cal else "")
    scaler = P.grad_scaler(resolved, accelerator.device)  # fp16 only
    best: dict | None = None
    average = _averaged(module) if job.average else None
    if resume:
        state = load_checkpoint(checkpoint, accelerator, module)
        if (Path(checkpoint) / BEST).exists():
            best = load_file(str(Path(checkpoint) / BEST))
        if average is not None and (Path(checkpoint) / AVERAGE).exists():
            average = {k: v.to(accelerator.device) for k, v in load_file(str(Path(checkpoint) / AVERAGE)).items()}
        _load_optimizer(Path(checkpoint) / OPTIMIZER, opt, scheduler, scaler)
        if state.processes != world:
            log.warning("%s: checkpoint written by %d processes, resumed by %d: the batch shares differ",
                        job.desc, state.processes, world)
        accelerator.print(f"{job.desc}: resuming at epoch {state.epoch + 1} batch {state.step_in_epoch} "
                          f"(step {state.global_step} of {total_steps}) from {checkpoint}")
    else:
        if old is not None and main:
            # the previous step's checkpoint is the normal case (debug); other inputs are news
            (log.debug if old.tag != tag else log.info)(
                "%s: ignoring the checkpoint in %s (%s)", job.desc, checkpoint,
                "another fit" if old.tag != tag else "built from other inputs")
        state = FitState(tag=tag, processes=world, fingerprint=fingerprint)
        if job.select_start:
            module.eval()
            t_sel = time.time()
            score, extra_log = job.select()
            spent = time.time() - t_sel
            state.select_seconds += spent
            state.seconds += spent  # a fit's seconds hold every selection it ran
            # the start competes ``start_margin`` below its score (Job.start_margin)
            state.start_score, state.best_score, state.best_epoch = score, score - job.start_margin, 0
            best = _weights(module, accelerator, model, job.state_keys)

    pairs = _pairs(module, average)

    def save(finished: bool = False) -> None:
        if checkpoint is not None:
            save_checkpoint(checkpoint, accelerator, module, state, prepared=model, best=best,
                            optimizer=None if finished else opt, scheduler=None if finished else scheduler,
                            scaler=scaler, keys=job.state_keys, average=None if finished else average)

    bar = tqdm(total=total_steps, initial=state.global_step, desc=job.desc, unit="step",
               disable=not (progress and main), leave=False)
    t0, tokens = time.time(), 0
    while state.epoch < n_epochs and state.global_step < total_steps:
        model.train()
        # every process takes its share, as many batches each (DDP syncs every backward)
        batches = pad_to_multiple(job.batches(state.epoch), world)[rank::world][:steps_per_epoch]
        if job.epoch_batches is not None:
            job.epoch_batches(batches[state.step_in_epoch :])
        for b in range(state.step_in_epoch, len(batches)):
            if state.global_step >= total_steps:
                break
            _before_step(job, state)
            value, n_tokens = _update(job, model, batches[b], accelerator, opt, scheduler, scaler, trainable,
                                      resolved)
            state.global_step += 1
            if pairs:
                _update_average(pairs, job.average, state.global_step)
            state.step_in_epoch = b + 1
            tokens += n_tokens
            state.loss_sum, state.batches_done = state.loss_sum + value, state.batches_done + 1
            state.run_loss = 0.9 * state.run_loss + 0.1 * value if state.run_loss else value
            bar.update(1)
            bar.set_postfix(loss=f"{state.run_loss:.4f}", tok_s=f"{tokens / max(time.time() - t0, 1e-9):.0f}")
            if job.checkpoint_every and state.global_step % job.checkpoint_every == 0:
                _account(state, accelerator, tokens, t0)
                t0, tokens = time.time(), 0
                save()
        with _swapped_in(pairs):  # selection scores (and keeps) the averaged weights
            if _end_epoch(job, state, accelerator, model):  # a new best epoch
                best = _weights(module, accelerator, model, job.state_keys)
        _account(state, accelerator, tokens, t0)
        t0, tokens = time.time(), 0
        if job.patience is not None and state.bad_epochs >= job.patience and state.epoch >= job.min_epochs:
            break
        save()
    bar.close()
    if best is not None:
        module.load_state_dict(best, strict=False)  # restore the best weights
    if state.best_epoch == 0 and state.start_score is not None:
        state.best_score = state.start_score  # the kept weights' own score, not the handicapped one
    state.finished = True
    save(finished=True)
    accelerator.free_memory()  # drop the wrappers; the next fit prepares anew
    return state


def _load_optimizer(path: Path, opt, scheduler, scaler) -> None:
    """The optimizer, scheduler and fp16 loss-scaler states of a checkpoint (when it has them)."""
    if not path.exists():
        return
    extra = torch.load(path, weights_only=True)
    opt.load_state_dict(extra["optimizer"])
    if scheduler is not None and extra["scheduler"] is not None:
        scheduler.load_state_dict(extra["scheduler"])
    if scaler is not None and extra.get("scaler") is not None:
        scaler.load_state_dict(extra["scaler"])


def _update(job: Job, model, batch: list[int], accelerator, opt, scheduler, scaler, trainable, resolved: str
            ) -> tuple[float, int]:
    """One optimizer update on ``batch``: forward under the precision, backward, clip, step;
    (the loss, tokens in the batch)."""
    with P.autocast(resolved, accelerator.device):
        loss, n_tokens = job.loss(model, batch)
    accelerator.backward(scaler.scale(loss) if scaler is not None else loss)
    if scaler is not None:
        scaler.unscale_(opt.optimizer)  # clip the true gradients
    if job.clip:
        accelerator.clip_grad_norm_(trainable, job.clip)  # FSDP-aware
    if scaler is not None:
        scaler.step(opt.optimizer)  # skipped when fp16 overflowed
        scaler.update()
    else:
        opt.step()
    if scheduler is not None:
        scheduler.step()
    opt.zero_grad(set_to_none=True)
    return loss.item(), n_tokens


def _end_epoch(job: Job, state: FitState, accelerator, model) -> bool:
    """Select on the epoch's weights and log it in ``state.history``; True for a new best epoch."""
    # mean training loss of the epoch over all processes
    total = accelerator.reduce(torch.tensor([state.loss_sum, state.batches_done], dtype=torch.float64,
                                            device=accelerator.device), reduction="sum")
    model.eval()
    t_sel = time.time()
    score, extra_log = job.select()
    state.select_seconds += time.time() - t_sel
    state.epoch, state.step_in_epoch, state.loss_sum, state.batches_done = state.epoch + 1, 0, 0.0, 0
    state.history.append({"epoch": state.epoch, "step": state.global_step, "loss": state.run_loss,
                          "mean_loss": float(total[0] / total[1].clamp(min=1)), "select": score, **extra_log})
    if state.best_score is None or score > state.best_score:
        state.best_score, state.best_epoch, state.bad_epochs = score, state.epoch, 0
        return True
    state.bad_epochs += 1
    return False


def _account(state: FitState, accelerator, tokens: int, t0: float) -> None:
    """Add this stretch's tokens (all processes) and seconds to the state."""
    total = accelerator.reduce(torch.tensor([tokens], dtype=torch.float64, device=accelerator.device),
                               reduction="sum")
    state.tokens += int(total[0])
    state.seconds = round(state.seconds + time.time() - t0, 3)


def check_launch(num_processes: int) -> None:
    """Fail loudly when a launcher started several processes that accelerate runs each alone.

    That happens on a machine without GPUs unless ``ACCELERATE_USE_CPU=1`` is set (accelerate
    then uses gloo); each process would otherwise redo, and overwrite, the whole job.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and num_processes != launched:
        raise RuntimeError(f"launched as {launched} processes but accelerate sees {num_processes}: on a machine "
                           "without GPUs set ACCELERATE_USE_CPU=1 for multi-process runs")

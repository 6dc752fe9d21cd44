"""Training-side throughput benchmark: fp32 against bf16 on the demo's data (issue 14).

    python -m benchmarks.throughput                 # the demo's data, e5-small: < 15 min on 2 quiet cores
    python -m benchmarks.throughput --quick         # a tiny random teacher: seconds (the numbers mean nothing)

Both precisions are measured in one run, one after the other, with the same seed and data
(each precision's pipeline steps in a child process, since accelerate keeps one mixed
precision per process; the timings below in the main process):

- **quality**: the pipeline's own steps (teacher fine-tuning, labeling the transfer set,
  distillation, dev evaluation) on a smaller demo (`FULL.overrides`: the demo's teacher,
  a smaller transfer set, the full distillation stages), once with ``precision: fp32`` and once with
  ``precision: bf16``; the dev F1 of the teacher and of the final student each produces.
  Labeling's sentences/s end to end and for the teacher's bare forward pass come from that
  run's labeling manifest.
- **teacher**: ``teacher_steps`` fine-tuning steps of the teacher as the pipeline builds it
  (fresh head, frozen embedding table, the config's batch size and length): forward under
  the precision's autocast, backward, clipping, optimizer step.
- **distill-hard / distill-soft / distill-intermediate**: ``distill_batches`` training batches
  of each stage kind on the fp32 run's transfer set and final student, every parameter
  trainable (the costliest unfreezing step), batches built and prefetched by `xdistil.batching`.

Each is timed on a pass over its batches after ``warm_passes`` untimed passes over the same
ones (bf16 kernels are built per input shape on first use; an epoch amortises that).

Tokens are real (unpadded) word pieces. Every measurement is stored in
``<run>/measurements.json`` as it finishes and every pipeline step is resumable, so rerunning
the same command after an interruption redoes only what is missing (``--fresh`` starts
over). Writes ``summary.json`` (issue 14's schema; the label rows also carry the bare
forward pass as ``forward_sentences_per_s``) and ``results.md`` (rendered with
`xdistil.report`'s blocks) into ``--results``. Run it on a quiet machine: other work on the
cores distorts every figure (the load average is recorded before and after).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from xdistil_export.atomic import expect, remove_own

from benchmarks import preamble
from benchmarks.timing import REPO, settings

log = logging.getLogger("benchmarks.throughput")

# `--fresh` deletes the working folder only when its record names everything in it: each name
# below is named there (`expect`) before it is written, the steps' folders carry their own.
PRECISIONS = ("fp32", "bf16")
PACKED = "distill-soft-packed"  # the soft stage with the previous release's packed-sequence BiLSTM
DISTILL_STEPS = {"distill-hard": ("hard", False), "distill-soft": ("soft", False),
                 "distill-intermediate": ("intermediate", False), PACKED: ("soft", True)}  # -> (stage kind, packed)
SEED = 13
CHILD_CONFIG, CHILD_RESULT = "bench-config.json", "quality.json"  # a quality run's input and output


@dataclass(frozen=True)
class Settings:
    teacher_steps: int  # timed fine-tuning steps of the teacher, per precision
    distill_batches: int  # timed training batches per stage kind and precision
    warm_passes: int  # untimed passes over the timed batches first (see `_train_steps`)
    overrides: dict = field(default_factory=dict)  # config sections -> values for the quality runs


SETTINGS = settings("throughput")  # benchmarks/configs/timing-throughput.yaml
FULL, QUICK = Settings(**SETTINGS["full"]), Settings(**SETTINGS["quick"])
TARGETS = SETTINGS["targets"]  # issue 14's


# ---- configs -------------------------------------------------------------------------------


def with_overrides(cfg, overrides: dict, **top):
    """``cfg`` with some fields of its sections (and top-level ``top``) replaced, validated again."""
    from xdistil.config import RunConfig, apply_overrides, from_dict, to_dict

    return from_dict(RunConfig, apply_overrides(to_dict(cfg), {**overrides, **top}))


def tiny_teacher(cfg, dest: Path) -> Path:
    """A 2-layer, 32-wide random BERT token classifier with a Unigram tokenizer trained on the
    config's labeled sentences: the --quick teacher (built once, reused)."""
    if (dest / "config.json").exists():
        return dest
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForTokenClassification, PreTrainedTokenizerFast
    from xdistil_export.atomic import atomic_dir

    from xdistil import DEFAULT_LABELS
    from xdistil.data.sources import budget_split

    words = [s.words for lang in cfg.data.languages for s in budget_split(lang, cfg.data)[0]]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator([" ".join(w) for w in words], trainers.UnigramTrainer(
        vocab_size=800, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>", cls_token="<s>", sep_token="</s>", model_max_length=128)
    labels = list(cfg.data.labels or DEFAULT_LABELS)
    torch.manual_seed(SEED)
    model = BertForTokenClassification(BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id,
        id2label=dict(enumerate(labels)), label2id={lab: i for i, lab in enumerate(labels)}))
    expect(dest.parent, [dest.name])
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return dest


# ---- measurements --------------------------------------------------------------------------


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _rate(tokens: int, sentences: int, seconds: float) -> dict:
    return {"tokens_per_s": round(tokens / seconds, 1), "sentences_per_s": round(sentences / seconds, 2),
            "seconds": round(seconds, 3)}


def quality_run(cfg, precision: str, out: Path, progress: bool) -> dict:
    """The pipeline's steps at ``precision`` (a run folder ``out``, `xdistil.runner`): dev F1 of
    teacher and final student, labeling speed."""
    from xdistil.data.align import WindowEncoder
    from xdistil.evaluate import DevScorer
    from xdistil.labeling import load_transfer
    from xdistil.run import RunDir
    from xdistil.run.layout import read_transfer_manifest
    from xdistil.runner import Runner
    from xdistil.taggers import load_tagger

    cfg = with_overrides(cfg, {}, precision=precision)
    got = Runner(cfg, RunDir(out), progress=progress).run()
    teacher, transfer, student = got.teacher, got.transfer, got.student
    score = DevScorer(cfg, progress, cache=out / "scores.json")
    f1 = {"teacher": score("teacher", teacher)["f1_avg"], "student": score(student.name, student)["f1_avg"]}
    manifest = read_transfer_manifest(transfer)
    tp = manifest.get("throughput", {})
    # tokens per labeled sentence: the teacher's windows of the transfer set, specials included
    ds, _ = load_transfer(transfer)
    tagger = load_tagger(teacher)
    words = [list(w) for w in ds.select_columns(["words"]).with_format("arrow")[:]["words"].to_pylist()]
    pieces = WindowEncoder(tagger.tokenizer, tagger.max_length).encode(words)
    per_sentence = sum(len(p.input_ids) for p in pieces) / max(len(words), 1)
    label, forward = tp.get("label_sentences_per_s"), tp.get("forward_sentences_per_s")
    return {"f1": f1, "label": {"sentences_per_s": label, "forward_sentences_per_s": forward,
                                "tokens_per_s": round(label * per_sentence, 1) if label else None,
                                "sentences": tp.get("sentences_labeled_this_run")},
            "applied": manifest.get("precision"), "teacher_dir": str(teacher), "transfer_dir": str(transfer),
            "student_dir": str(student), "final_stage": student.name}


def quality_in_child(cfg, precision: str, out: Path, progress: bool) -> dict:
    """`quality_run` in a fresh Python process. accelerate's state is one per process and keeps
    the first ``mixed_precision`` it was given, so each precision's pipeline gets its own process
    (as it would for a user: one run, one precision)."""
    import subprocess

    from xdistil_export.atomic import write_json

    from xdistil.config import to_dict
    from xdistil.run import RunDir

    run = RunDir(out)
    expect(out, [CHILD_CONFIG, CHILD_RESULT, "scores.json", *(p.name for p in (run.teacher, run.transfer, run.distill))])
    write_json(out / CHILD_CONFIG, to_dict(cfg))
    cmd = [sys.executable, "-m", "benchmarks.throughput", "--quality-step", str(out.resolve()), precision]
    subprocess.run(cmd + ([] if progress else ["--quiet"]), cwd=REPO, check=True)
    return json.loads((out / CHILD_RESULT).read_text())


def _take(order: list, n: int) -> list:
    """The first ``n`` batches of ``order``, cycling when it is shorter."""
    return (order * (1 + n // max(len(order), 1)))[:n]


def _train_steps(params, opt, precision: str, device, forward, batches, warm_passes: int, clip: float) -> dict:
    """Train on ``batches`` ``warm_passes`` times untimed, then once timed: the rate of that pass.

    ``forward(batch) -> (loss, tokens, sentences)`` runs under the precision's autocast; then
    backward (scaled for fp16), clipping, optimizer step. Warming up on the very batches that
    are timed matters for bf16: oneDNN builds its kernels per input shape on first use, which an
    epoch amortises over its many batches of repeating lengths and a short timing would not."""
    import torch

    from xdistil import precision as P

    scaler = P.grad_scaler(precision, device)
    for _ in range(warm_passes + 1):  # every pass is timed; the last one counts
        _sync(device)
        t0, tokens, sentences = time.perf_counter(), 0, 0
        for batch in batches():
            with P.autocast(precision, device):
                loss, n_tok, n_sent = forward(batch)
            (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, clip)  # as the pipeline's loops
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
            tokens, sentences = tokens + n_tok, sentences + n_sent
        _sync(device)
        rate = _rate(tokens, sentences, time.perf_counter() - t0)
    return rate


def time_teacher(cfg, precision: str, labels: list[str], s: Settings) -> dict:
    """Fine-tuning steps of a fresh teacher (as `train_teacher` builds it) at ``precision``."""
    import torch

    from xdistil.data.align import WindowEncoder, collate, shuffled_length_batches
    from xdistil.data.sources import budget_split
    from xdistil.teachers import load_teacher

    tc, device = cfg.teacher, _device()
    torch.manual_seed(SEED)
    model, tokenizer = load_teacher(tc.model_names()[0], labels)
    if tc.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    model.to(device).train()
    label_id = {lab: i for i, lab in enumerate(labels)}
    train = [x for lang in cfg.data.languages for x in budget_split(lang, cfg.data)[0]]
    enc = WindowEncoder(tokenizer, tc.max_length)
    pieces = enc.encode([x.words for x in train])
    tags = [[label_id.get(t, 0) for t in x.tags] for x in train]
    order = shuffled_length_batches(range(len(pieces)), [len(p.input_ids) for p in pieces], tc.batch_size, SEED)
    batches = _take(order, s.teacher_steps)
    trainable = [p for p in model.parameters() if p.requires_grad]

    def forward(idx):
        b = {k: v.to(device) for k, v in collate([pieces[j] for j in idx], enc.specials.pad_id, tags).items()}
        loss = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
        return loss, int(b["attention_mask"].sum()), len(idx)

    opt = torch.optim.AdamW(trainable, lr=tc.lr, weight_decay=tc.weight_decay)
    return _train_steps(trainable, opt, precision, device, forward, lambda: batches, s.warm_passes, 1.0)


def _stage_spec(cfg, kind: str):
    """The config's stage of this kind (by name), else the shorthand stage of that name."""
    from xdistil.config import STAGE_SHORTHANDS, StageSpec, from_dict

    for spec in cfg.distill.resolved_stages():
        if spec.name == kind:
            return spec
    return from_dict(StageSpec, dict(STAGE_SHORTHANDS[kind]), f"stage {kind}")


def time_distill(cfg, precision: str, kind: str, transfer_dir: Path, student_dir: Path, s: Settings,
                 packed: bool = False) -> dict:
    """Training batches of one stage kind at ``precision``: all parameters trainable, batches
    built (and prefetched) by `xdistil.batching` inside the timing. ``packed``: a BiLSTM student
    runs its packed-sequence path (`BiLSTMTagger.packed`, the forward of the previous release)
    instead of the per-direction oneDNN calls: the before/after of the same batches."""
    import torch

    from xdistil.batching import TransferBatcher
    from xdistil.data.align import shuffled_length_batches
    from xdistil.labeling import load_transfer, scan_transfer
    from xdistil.stages import Distiller, stage_loss
    from xdistil.students import load_student

    device = _device()
    spec = _stage_spec(cfg, kind)
    match = cfg.distill.match_for(spec)  # student layer, teacher layer, hidden loss of this stage
    hidden = "hidden" in spec.losses
    ds, manifest = load_transfer(transfer_dir)
    torch.manual_seed(SEED)
    student, tokenizer, labels, _ = load_student(student_dir)
    if packed:
        if not hasattr(student, "packed"):
            return {}
        student.by_direction = student.packed  # this instance only
    with torch.no_grad():
        probe = tokenizer(["x"], is_split_into_words=True, return_tensors="pt")
        out = student(probe["input_ids"], probe["attention_mask"], torch.zeros_like(probe["input_ids"], dtype=torch.bool))
        student_dim = out.hidden_states[match.student_layer].shape[-1]
    d = Distiller(student, student_dim, [manifest["hidden_sizes"][0]] if hidden else []).to(device).train()
    for p in d.parameters():
        p.requires_grad_(True)
    lengths, rows = scan_transfer(ds)
    index = sorted(rows.get("labeled", []) + rows.get("transfer", []))
    batches = _take(shuffled_length_batches(index, lengths, spec.batch_size, SEED), s.distill_batches)
    batcher = TransferBatcher(ds, tokenizer, cfg.student.max_length, [0], len(labels),
                              match.teacher_layer if hidden else None)

    def forward(pair):
        idx, b = pair
        b = b.to(device)
        wl, proj = d(b.inputs, match.student_layer if hidden else None, spec.selects_on_f1)
        loss, _ = stage_loss(d, spec, wl, b, match, cfg.distill.teacher_weighting, proj, None)
        return loss, int(b.inputs["attention_mask"].sum()), len(idx)

    opt = torch.optim.Adam(d.parameters(), lr=spec.lr)
    try:
        def pairs():
            return zip(batches, batcher.iterate(batches, need_hidden=hidden), strict=True)

        return _train_steps(list(d.parameters()), opt, precision, device, forward, pairs, s.warm_passes, 5.0)
    finally:
        batcher.close()


# ---- the run -------------------------------------------------------------------------------


def machine_record(command: str, load_start: list | None) -> dict:
    import torch

    from xdistil import precision as P
    from xdistil.provenance import load_average, machine, versions

    return {**machine(torch.get_num_threads()), "device": str(_device()), "bf16_native": P.cpu_has_bf16(),
            "auto_resolves_to": P.resolve("auto", _device()), "loadavg_start": load_start,
            "loadavg_end": load_average(), "versions": versions(), "command": command,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run(cfg, run_dir: Path, results: Path, settings: Settings = FULL, precisions=PRECISIONS,
        teacher: str | None = None, command: str | None = None, progress: bool = True) -> dict:
    """Measure everything ``measurements.json`` in ``run_dir`` lacks; write ``results``; return the summary.

    ``cfg``: the base config (the demo's); ``settings.overrides`` shorten it for the quality runs.
    ``teacher``: replaces ``cfg.teacher.model`` (e.g. a tiny model for --quick)."""
    from xdistil_export.atomic import write_json, write_text

    from xdistil.provenance import load_average
    from xdistil.taggers import load_tagger

    load_start = load_average()
    expect(run_dir, ["measurements.json", *precisions])
    cfg = with_overrides(cfg, settings.overrides)
    if teacher:
        cfg = with_overrides(cfg, {"teacher": {"model": teacher, "models": []}})
    done_path = run_dir / "measurements.json"
    done = json.loads(done_path.read_text()) if done_path.exists() else {}

    def measure(key: str, fn):
        if key not in done:
            log.info("measuring %s", key)
            done[key] = fn()
            write_json(done_path, done)
        return done[key]

    quality = {p: measure(f"quality/{p}", lambda p=p: quality_in_child(cfg, p, run_dir / p, progress))
               for p in precisions}
    ref = quality[precisions[0]]
    labels = load_tagger(ref["teacher_dir"]).labels
    for p in precisions:
        measure(f"teacher/{p}", lambda p=p: time_teacher(cfg, p, labels, settings))
    for step, (kind, packed) in DISTILL_STEPS.items():
        for p in precisions:
            measure(f"{step}/{p}", lambda p=p, kind=kind, packed=packed: time_distill(
                cfg, p, kind, Path(ref["transfer_dir"]), Path(ref["student_dir"]), settings, packed))

    throughput = []
    for step in ("teacher", "label", *DISTILL_STEPS):
        for p in precisions:
            m = quality[p]["label"] if step == "label" else done[f"{step}/{p}"]
            if not m:
                continue  # not a BiLSTM student: no packed path
            row = {"step": step, "precision": p, "tokens_per_s": m["tokens_per_s"], "sentences_per_s": m["sentences_per_s"]}
            if step == "label":
                row["forward_sentences_per_s"] = m["forward_sentences_per_s"]
            throughput.append(row)
    summary = {
        "throughput": throughput,
        "quality": [{"precision": p, "model": model, "f1_avg": quality[p]["f1"][model]}
                    for model in ("teacher", "student") for p in precisions],
        "machine": machine_record(command or "python -m benchmarks.throughput", load_start),
    }
    notes = [f"`precision: {p}` was run but labeling recorded {quality[p]['applied']!r}" for p in precisions
             if quality[p]["applied"] not in (None, p)]
    if results.parent.resolve() == run_dir.resolve():  # --quick: the results live in the working folder
        expect(run_dir, [results.name])
    expect(results, ["summary.json", "results.md"])
    write_json(results / "summary.json", summary)
    write_text(results / "results.md", markdown(summary, cfg, settings, notes))
    return summary


# ---- report --------------------------------------------------------------------------------


def _by(summary: dict) -> tuple[dict, dict]:
    tp = {(r["step"], r["precision"]): r for r in summary["throughput"]}
    q = {(r["model"], r["precision"]): r["f1_avg"] for r in summary["quality"]}
    return tp, q


def verdicts(summary: dict) -> list[tuple[str, str, str]]:
    """(target, measured, met?) for issue 14's targets that this benchmark measures."""
    tp, q = _by(summary)
    t = TARGETS

    def rate(step: str, precision: str, key: str = "tokens_per_s") -> float | None:
        return tp.get((step, precision), {}).get(key)

    def ratio(a, b) -> float | None:
        return a / b if a and b else None

    def verdict(target: str, x: float | None, fmt: str, met) -> tuple[str, str, str]:
        return (target, "–", "–") if x is None else (target, fmt.format(x), "yes" if met(x) else "no")

    out = [verdict(f"bf16 >= {t['speedup']}x fp32: {what}",
                   ratio(rate(step, "bf16", "sentences_per_s"), rate(step, "fp32", "sentences_per_s")), "{:.2f}x",
                   lambda r: r >= t["speedup"])
           for step, what in (("teacher", "teacher fine-tuning"), ("label", "labeling, end to end"))]
    for model in ("teacher", "student"):
        a, b = q.get((model, "bf16")), q.get((model, "fp32"))
        out.append(verdict(f"bf16 F1 within {t['f1_gap']} of fp32: {model}", None if a is None or b is None else a - b,
                           "{:+.2f}", lambda gap: abs(gap) <= t["f1_gap"]))
    out += [verdict(f"intermediate >= {t['intermediate_vs_soft']:.0%} of soft tokens/s ({p})",
                    ratio(rate("distill-intermediate", p), rate("distill-soft", p)), "{:.0%}",
                    lambda r: r >= t["intermediate_vs_soft"]) for p in PRECISIONS]
    out += [verdict(f"soft tokens/s ({p}) >= {t['soft_vs_before']:.0f}x the previous release's (packed BiLSTM, fp32)",
                    ratio(rate("distill-soft", p), rate(PACKED, "fp32")), "{:.2f}x",
                    lambda r: r >= t["soft_vs_before"]) for p in PRECISIONS]
    return out


def markdown(summary: dict, cfg, settings: Settings, notes: list[str] = ()) -> str:
    from xdistil.report import Heading, Para, Table, to_markdown

    tp, q = _by(summary)
    precisions = list(dict.fromkeys(r["precision"] for r in summary["throughput"]))
    steps = list(dict.fromkeys(r["step"] for r in summary["throughput"]))

    def num(x, nd=1):
        return "–" if x is None else f"{x:,.{nd}f}"

    rows = []
    for step in steps:
        cells = [step]
        for key in ("tokens_per_s", "sentences_per_s"):
            vals = [tp.get((step, p), {}).get(key) for p in precisions]
            cells += [num(v) for v in vals]
        a, b = (tp.get((step, p), {}).get("sentences_per_s") for p in ("bf16", "fp32"))
        cells.append(f"{a / b:.2f}x" if a and b else "–")
        rows.append(cells)
    head = (["step"] + [f"tokens/s {p}" for p in precisions] + [f"sentences/s {p}" for p in precisions]
            + ["bf16 / fp32"])
    fwd = [[p, num(tp.get(("label", p), {}).get("sentences_per_s")),
            num(tp.get(("label", p), {}).get("forward_sentences_per_s"))] for p in precisions]
    qual = [[model] + [num(q.get((model, p)), 2) for p in precisions]
            + ([f"{q[(model, 'bf16')] - q[(model, 'fp32')]:+.2f}"] if (model, "bf16") in q and (model, "fp32") in q
               else ["–"]) for model in ("teacher", "student")]
    m = summary["machine"]
    blocks = [
        Heading(1, "Training-side throughput: fp32 against bf16"),
        Para(f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs, {m['threads']} threads, device {m['device']}; "
             f"native bf16: {'yes' if m['bf16_native'] else 'no'} (`precision: auto` resolves to "
             f"{m['auto_resolves_to']}). Load average before / after: {m['loadavg_start']} / {m['loadavg_end']}."),
        Para(f"Command: `{m['command']}` ({m['time']}). Data: {', '.join(cfg.data.languages)}, "
             f"labeled budget {cfg.data.labeled_budget}/language, transfer limit {cfg.transfer.limit}/language, "
             f"dev first {cfg.data.dev_limit}; teacher `{cfg.teacher.model_names()[0]}`."),
        Heading(2, "Throughput"),
        Para(f"Teacher: {settings.teacher_steps} fine-tuning steps; distillation: {settings.distill_batches} "
             "training batches per stage kind, every parameter trainable, batches built and prefetched by "
             f"`xdistil.batching`; each timed after {settings.warm_passes} untimed pass(es) over the same batches. "
             "Labeling: the quality run's labeling of its transfer set. Tokens are real word pieces. "
             f"`{PACKED}`: the same soft-stage batches with the BiLSTM's packed-sequence forward of the previous "
             "release (`BiLSTMTagger.packed`), which keeps PyTorch's CPU LSTM off oneDNN; the pipeline now runs "
             "each direction as one oneDNN call (`BiLSTMTagger.by_direction`)."),
        Table(head, rows, set(range(1, len(head)))),
        Heading(3, "Labeling: end to end against the bare forward pass"),
        Table(["precision", "end to end (sent/s)", "forward alone (sent/s)"], fwd, {1, 2}),
        Heading(2, "Quality (dev F1, same seed)"),
        Para("Each precision fine-tunes its own teacher, labels its own transfer set and distils its own student "
             "(the demo's four stages in full, on 600 transfer sentences a language). Evaluation runs in fp32 on the saved fp32 weights."),
        Table(["model"] + [f"F1 {p}" for p in precisions] + ["bf16 − fp32"], qual, set(range(1, len(precisions) + 2))),
        Heading(2, "Targets (issue 14)"),
        Table(["target", "measured", "met"], [list(v) for v in verdicts(summary)]),
        *[Para(f"**Note:** {n}.") for n in notes],
    ]
    return to_markdown(blocks)


def main(argv=None) -> int:
    p = preamble.parser(__doc__)
    p.add_argument("--config", default="demo", help="base config: a YAML file or a preset name (default: demo)")
    p.add_argument("--run", type=Path, default=None, help="working folder (default runs/throughput[-quick])")
    p.add_argument("--results", type=Path, default=None,
                   help="where summary.json / results.md go (default benchmarks/results/throughput; "
                        "--quick: <run>/results)")
    p.add_argument("--quick", action="store_true", help="a tiny random teacher and a few steps: seconds")
    p.add_argument("--fresh", action="store_true", help="forget earlier measurements in the working folder")
    p.add_argument("--quality-step", nargs=2, metavar=("OUT", "PRECISION"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from xdistil.threads import configure

    configure()  # before torch is imported: threads from the usable CPUs, passive OpenMP waiting
    command = preamble.start("throughput", argv, quiet=args.quiet)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight loading / shard writing bars, once per model
    from xdistil.config import ConfigError, RunConfig, from_dict, load_yaml

    if args.quality_step:  # one precision's quality run, in its own process (`quality_in_child`)
        from xdistil_export.atomic import write_json

        out, precision = Path(args.quality_step[0]), args.quality_step[1]
        cfg = from_dict(RunConfig, json.loads((out / CHILD_CONFIG).read_text()))
        write_json(out / CHILD_RESULT, quality_run(cfg, precision, out, progress=not args.quiet))
        return 0
    try:
        cfg = from_dict(RunConfig, load_yaml(args.config))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_dir = args.run or Path("runs/throughput-quick" if args.quick else "runs/throughput")
    results = args.results or (run_dir / "results" if args.quick else Path("benchmarks/results/throughput"))
    if args.fresh:
        remove_own(run_dir)  # refused when the folder holds anything its record does not name
    settings = QUICK if args.quick else FULL
    teacher = None
    if args.quick:
        cfg = with_overrides(cfg, settings.overrides)
        teacher = str(tiny_teacher(cfg, run_dir / "tiny-teacher"))
    summary = run(cfg, run_dir, results, settings, teacher=teacher, command=command, progress=not args.quiet)
    print((results / "results.md").read_text(encoding="utf-8"))
    return 0 if summary["throughput"] else 1


if __name__ == "__main__":
    sys.exit(main())

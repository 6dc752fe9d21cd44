"""Latency benchmark: teachers and students in PyTorch and onnxruntime, side by side on this CPU.

    python -m benchmarks.latency --teacher runs/bench/teacher --bilstm DIR --transformer DIR \
        --out benchmarks/results/latency

Every model is timed in one process with the same inputs and thread count: batch latency
(batch 32 x 32 pieces, batch 256 x 32) and online latency (batch 1 x 32). Teachers run
in PyTorch and ONNX Runtime fp32 (``--teacher-int8`` adds int8); students in PyTorch,
ORT fp32 and ORT int8. Beside the real teacher, two teachers shaped like the reference
models are timed: ``mbert-base`` (bert-base-multilingual-cased) and ``xlmr-base``
(xlm-roberta-base), built from their public configs (``benchmarks/configs/timing-latency.yaml``,
with the targets) with random weights -- the same shapes, so the same cost (inputs are
random in-vocabulary ids; cost does not depend on values). XtremeDistil's speedups (51x
batch, 16x online) were measured against mBERT-base.

What is timed: the module's forward under ``torch.inference_mode()`` (PyTorch) and
``InferenceSession.run`` (ORT) on fixed random ids of shape (batch, seq) with a full
attention mask; no tokenization. Each cell: warm-up calls, then calls until at least
``min_repeats`` are done and ``cell_seconds`` have passed (at most ``max_repeats``);
the median is reported. A call that takes longer than ``cell_seconds`` needs only one
warm-up call, so the expensive cells (mBERT-shaped, batch 256) cost ``1 + min_repeats``
calls. The timing, the ORT sessions and the exports are `xdistil.bench`'s: the same code
``xdistil bench`` times a run's teacher and student with. ``--rounds``: every model's cells
that many times, in interleaved rounds (`benchmarks.timing`); the median of the rounds' medians
is reported.

Writes into ``--out``: ``latency.json`` (a `xdistil.results.Latency`: provenance, settings,
models, every `LatencyCell` with its spread, the `Speedup` rows, targets), ``latency.md``
and the ``latency`` list (plus a ``latency_report``) merged into ``summary.json``, keeping
its other keys. Whether a model folder is a student, and of which kind, comes from the
student registry (`xdistil.students.registry`). Exports go to ``--exports`` (default
``runs/latency/exports``; several GB for the shaped teachers, so not beside the committed
results) and are reused when already there."""

from __future__ import annotations

import gc
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
from xdistil_export.atomic import write_json

from benchmarks import preamble
from benchmarks.timing import interleave, merge_json, now, settings
from xdistil.bench import ensure_export, file_mb, onnx_files, ort_session, time_cell, torch_call
from xdistil.provenance import load_average, provenance, usable_cpus
from xdistil.report import Heading, Para, Table, ms, times, write_page
from xdistil.results import Latency, LatencyCell, Provenance, Speedup, speedups

log = logging.getLogger("benchmarks.latency")

BATCHES = ((1, 32), (32, 32), (256, 32))  # (batch, seq): online, batch 32 (the paper's), large batch
QUICK = {"batches": ((1, 32), (32, 32)), "warmup": 1, "min_repeats": 2, "max_repeats": 3, "cell_seconds": 0.0}
LOW_ID = 5  # random ids start here: clear of the usual special / padding ids
SHAPED_TOLERANCE = 1e-3  # max |ORT fp32 - torch| logits of a shaped teacher's export
SHAPED_MANIFEST = "shaped_export.json"
SETTINGS = settings("latency")  # the reference-shaped teachers, the targets
SHAPES: dict[str, dict] = SETTINGS["shapes"]
REFERENCE = SETTINGS["reference"]
TARGETS, TARGET_CELL = SETTINGS["targets"], SETTINGS["target_cell"]


def shaped_config(name: str, labels: Sequence[str] | None = None):
    """A transformers config with the shape of a reference teacher (`SHAPES`) and a 7-tag head."""
    from transformers import AutoConfig

    from xdistil import DEFAULT_LABELS

    labels = list(labels or DEFAULT_LABELS)
    return AutoConfig.for_model(SHAPES[name]["model_type"], **SHAPES[name]["fields"], id2label=dict(enumerate(labels)),
                                label2id={lab: i for i, lab in enumerate(labels)})


@dataclass
class Subject:
    """One model to time: its ONNX files and its cells."""

    name: str
    kind: str  # "hf" | "shaped" | a student arch of `xdistil.students.registry`
    role: str  # "teacher" | "student"
    params: int
    vocab_size: int
    onnx: dict[str, Path]  # precision -> file
    cells: list[tuple[str, str]]  # (runtime, precision)
    info: dict = field(default_factory=dict)


def _cells(int8: bool) -> list[tuple[str, str]]:
    return [("torch", "fp32"), ("ort", "fp32")] + ([("ort", "int8")] if int8 else [])


# ---- timing ----------------------------------------------------------------------------


def _inputs(vocab_size: int, batch: int, seq: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, batch, seq])
    low = min(LOW_ID, vocab_size - 1)
    ids = rng.integers(low, vocab_size, size=(batch, seq), dtype=np.int64)  # (B, T)
    return ids, np.ones((batch, seq), dtype=np.int64)  # (B, T) full attention mask


def _time_subject(subj: Subject, module, batches, threads: int, seed: int, timing: dict) -> list[LatencyCell]:
    """All cells of one model, runtime by runtime (one thread pool busy at a time)."""
    import torch

    out = []
    for runtime, precision in subj.cells:
        session = ort_session(subj.onnx[precision], threads) if runtime == "ort" else None
        for batch, seq in batches:
            ids, mask = _inputs(subj.vocab_size, batch, seq, seed)
            if session is None:  # the export's contract: logits need no real word mask
                ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
                call = torch_call(module.eval(), ids, mask, mask.bool())
            else:
                call = partial(session.run, ["logits"], {"input_ids": ids, "attention_mask": mask})
            t = time_cell(call, **timing)
            log.info("%-12s %-5s %-4s batch %4d x %d: median %9.2f ms (%d runs, min %.2f, max %.2f)", subj.name,
                     runtime, precision, batch, seq, t["median_ms"], t["repeats"], t["min_ms"], t["max_ms"])
            out.append(LatencyCell(subj.name, subj.role, runtime, precision, batch, seq, kind=subj.kind, **t))
        del session  # its thread pool goes before the next runtime's starts
        gc.collect()
    return out


# ---- models and their exports ------------------------------------------------------------


def _shape_key(config) -> dict:
    keys = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "max_position_embeddings", "type_vocab_size", "pad_token_id", "num_labels")
    return {k: getattr(config, k, None) for k in keys}


def _build_shaped(config, seed: int):
    """A random HF token classifier of ``config``'s shape, wrapped as a tagger (eval mode)."""
    import torch
    from transformers import AutoModelForTokenClassification

    from xdistil.taggers import HFTagger

    torch.manual_seed(seed)
    return HFTagger(AutoModelForTokenClassification.from_config(config)).eval()


def ensure_shaped_export(name: str, config, module, dest: Path, int8: bool, opset: int, seed: int,
                         threads: int) -> tuple[dict, bool]:
    """Export a shaped teacher (no tokenizer, so not `export_model`) with the same graph and checks.

    The graph is `export_model`'s: ``LogitsOnly`` over the tagger, traced on a padded
    batch, dynamic batch / sequence axes checked, int8 by the same dynamic quantization.
    Parity: ORT fp32 against PyTorch on one random batch (max abs logits difference).
    """
    import torch
    from xdistil_export.runtime import MODEL_FILES

    from xdistil.deployable import LogitsOnly, export_graph, quantize_int8

    key = _shape_key(config)
    manifest_file = dest / SHAPED_MANIFEST
    if manifest_file.is_file():
        m = json.loads(manifest_file.read_text(encoding="utf-8"))
        if m.get("shape") == key and m.get("seed") == seed and (not int8 or m["files"].get("model_int8")):
            log.info("reusing export %s", dest)
            return m, True
    log.info("exporting %s-shaped teacher -> %s (int8: %s)", name, dest, int8)
    dest.mkdir(parents=True, exist_ok=True)
    manifest_file.unlink(missing_ok=True)  # written last: its presence means the files are complete
    wrapper = LogitsOnly(module).eval()
    ids, mask = (torch.from_numpy(a) for a in _inputs(config.vocab_size, 2, 16, seed))
    mask[1, 8:] = 0  # trace on a padded batch, as export_model does
    export_graph(wrapper, (ids, mask), dest / MODEL_FILES["fp32"], opset)
    ids, mask = _inputs(config.vocab_size, 3, 12, seed + 1)
    with torch.inference_mode():
        expected = wrapper(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()  # (B, T, C)
    got = ort_session(dest / MODEL_FILES["fp32"], threads).run(
        ["logits"], {"input_ids": ids, "attention_mask": mask})[0]
    diff = float(np.abs(got - expected).max())
    if diff > SHAPED_TOLERANCE:
        raise RuntimeError(f"{name}: ONNX logits differ from PyTorch by {diff:.2e} (> {SHAPED_TOLERANCE})")
    files = {"model": MODEL_FILES["fp32"], "model_int8": None}
    if int8:
        quantize_int8(dest / MODEL_FILES["fp32"], dest / MODEL_FILES["int8"])
        files["model_int8"] = MODEL_FILES["int8"]
    m = {"format": "xdistil-latency-shaped-export", "name": name, "shape": key, "seed": seed, "opset": opset,
         "files": files, "parity_max_abs_diff": diff, "weights": "random (cost depends on shapes, not values)",
         "created": now()}
    write_json(manifest_file, m)
    return m, False


def _role_and_vocab(tagger) -> tuple[str, int]:
    """("student", its vocabulary) for a registered student arch (the `Student` protocol's
    ``vocab_size``), else ("teacher", the HF model's input embedding rows)."""
    from xdistil.students import registry

    if tagger.kind in registry.names():
        return "student", int(tagger.module.vocab_size)
    return "teacher", int(tagger.module.model.get_input_embeddings().num_embeddings)


# ---- the run ---------------------------------------------------------------------------


def run(
    models: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    batches: Sequence[tuple[int, int]] = BATCHES,
    *,
    warmup: int = 2,
    min_repeats: int = 3,
    max_repeats: int = 100,
    cell_seconds: float = 1.0,
    threads: int | None = None,
    shapes: Sequence[str] | Mapping[str, object] = tuple(SHAPES),
    teacher_int8: bool = False,
    exports_dir: str | os.PathLike | None = None,
    reference: str = REFERENCE,
    export_kwargs: dict | None = None,
    opset: int = 17,
    seed: int = 0,
    command: str | None = None,
    rounds: int = 1,
) -> dict:
    """Time every model side by side; write ``latency.json``, ``latency.md``, ``summary.json``.

    ``models``: name -> model folder (teacher, student or any HF token classifier; a
    teacher is a folder that loads as kind "hf"). ``shapes``: names from `SHAPES`, or
    name -> transformers config (tests pass tiny ones). ``reference``: the model (timed in
    PyTorch fp32) the targets are measured against. ``threads``: torch and ORT intra-op
    threads (default: all usable cores). ``export_kwargs`` go to `export_model`.
    Returns the `Latency` record written to ``latency.json``.
    """
    import torch

    out = Path(out_dir)
    exports = Path(exports_dir) if exports_dir is not None else out / "exports"
    threads = int(threads or usable_cpus())
    batches = [(int(b), int(s)) for b, s in batches]
    shape_configs = {n: shaped_config(n) for n in shapes} if not isinstance(shapes, Mapping) else dict(shapes)
    if set(shape_configs) & set(models):
        raise ValueError(f"model names clash with shaped teachers: {sorted(set(shape_configs) & set(models))}")
    timing = {"warmup": warmup, "min_repeats": min_repeats, "max_repeats": max_repeats, "cell_seconds": cell_seconds}
    prov = Provenance(**provenance(command, threads), measured_by="benchmarks.latency")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    sources = {**models, **shape_configs}  # name -> model folder, or the config of a shaped teacher
    try:  # every model in turn each round, the order rotating (`benchmarks.timing.interleave`)
        per_model = interleave({name: partial(_time_model, name, source, exports, batches, threads, seed, timing,
                                              teacher_int8, dict(export_kwargs or {}), opset)
                                for name, source in sources.items()}, max(1, rounds))
    finally:
        torch.set_num_threads(before)
    subjects = [got[0][0] for got in per_model.values()]  # the first round's: whether each export was reused
    per_round = [[c for got in per_model.values() for c in got[r][1]] for r in range(max(1, rounds))]
    results = merge_rounds(per_round)
    teachers = [s.name for s in subjects if s.role == "teacher"]
    references = ([reference] if reference in teachers else []) + [t for t in teachers if t != reference
                                                                   and t not in shape_configs]
    students = [s for s in subjects if s.role == "student"]
    rows = speedups(results, references, [s.name for s in students])
    record = {"batches": [list(b) for b in batches], "threads": threads, **timing, "seed": seed,
              "inputs": "random in-vocabulary ids (batch, seq), full attention mask; no tokenization",
              "torch": "module(input_ids, attention_mask, word_mask) under torch.inference_mode()",
              "ort": "InferenceSession.run, CPUExecutionProvider, intra_op threads = threads, inter_op 1",
              "reference": reference, "rounds": len(per_round),
              "round_medians_ms": round_medians(per_round) if len(per_round) > 1 else None,
              "wall_s": round(time.perf_counter() - started, 1),
              "loadavg_start": prov.loadavg, "loadavg_end": load_average()}
    report = Latency(prov, record,
                     [{"name": s.name, "kind": s.kind, "role": s.role, "params": s.params, "vocab_size": s.vocab_size,
                       "onnx_mb": {p: file_mb(f) for p, f in s.onnx.items()}, **s.info} for s in subjects],
                     results, rows,
                     targets(rows, [s.name for s in students if s.kind == TARGET_CELL["kind"]], reference))
    write_outputs(report, out)
    return report


def _time_model(name: str, source, exports: Path, batches, threads: int, seed: int, timing: dict,
                teacher_int8: bool, export_kwargs: dict, opset: int) -> tuple[Subject, list[LatencyCell]]:
    """Every cell of one model: a model folder, or the transformers config of a shaped teacher
    (its export made on the first call, reused after)."""
    from xdistil.taggers import load_tagger

    gc.collect()  # the previous model's memory goes before this one loads
    if not isinstance(source, str | os.PathLike):
        module = _build_shaped(source, seed)
        manifest, reused = ensure_shaped_export(name, source, module, exports / name, teacher_int8, opset, seed,
                                                threads)
        subj = Subject(name, "shaped", "teacher", sum(p.numel() for p in module.parameters()), int(source.vocab_size),
                       onnx_files(exports / name, manifest["files"]), _cells(teacher_int8),
                       {"shape": _shape_key(source), "weights": "random", "export": str(exports / name),
                        "export_reused": reused,
                        "attn_implementation": getattr(module.model.config, "_attn_implementation", None),
                        "parity_max_abs_diff": manifest["parity_max_abs_diff"]})
        return subj, _time_subject(subj, module, batches, threads, seed, timing)
    tagger = load_tagger(Path(source))
    role, vocab = _role_and_vocab(tagger)
    int8 = role == "student" or teacher_int8
    manifest, reused = ensure_export(Path(source), exports / name, int8, export_kwargs)
    subj = Subject(name, tagger.kind, role, tagger.param_count(), vocab, onnx_files(exports / name, manifest["files"]),
                   _cells(int8), {"source": str(source), "export": str(exports / name), "export_reused": reused})
    return subj, _time_subject(subj, tagger.module, batches, threads, seed, timing)


def _cell_key(c: LatencyCell) -> tuple:
    return c.model, c.runtime, c.precision, c.batch, c.seq


def round_medians(per_round: list[list[LatencyCell]]) -> dict[str, list[float]]:
    """``"model runtime precision batch seq"`` -> each round's median ms (the spread the merge hides)."""
    out: dict[str, list[float]] = {}
    for cells in per_round:
        for c in cells:
            out.setdefault(" ".join(map(str, _cell_key(c))), []).append(round(c.median_ms, 4))
    return out


def merge_rounds(per_round: list[list[LatencyCell]]) -> list[LatencyCell]:
    """One cell per (model, runtime, precision, batch, seq): the median of the rounds' medians,
    the extremes over all calls, the calls of all rounds."""
    if len(per_round) == 1:
        return per_round[0]
    out = []
    for first in per_round[0]:
        same = [c for cells in per_round for c in cells if _cell_key(c) == _cell_key(first)]
        out.append(replace(first, median_ms=statistics.median(c.median_ms for c in same),
                           min_ms=min(c.min_ms for c in same), max_ms=max(c.max_ms for c in same),
                           mean_ms=statistics.fmean(c.mean_ms for c in same),
                           repeats=sum(c.repeats for c in same), warmup=sum(c.warmup for c in same)))
    return out


def targets(speedup_rows: Sequence[Speedup], target_models: Sequence[str], reference: str) -> list[dict]:
    """The 150x / 50x targets (and XtremeDistil's 51x / 16x) for each int8 BiLSTM student in ORT."""
    out = []
    for model in target_models:
        for t in TARGETS:
            row = next((s for s in speedup_rows if s.model == model and s.reference == reference
                        and s.runtime == TARGET_CELL["runtime"] and s.precision == TARGET_CELL["precision"]
                        and (s.batch, s.seq) == (t["batch"], t["seq"])), None)
            x = None if row is None else row.speedup
            out.append({**t, "model": model, "runtime": TARGET_CELL["runtime"], "precision": TARGET_CELL["precision"],
                        "reference": f"{reference} torch fp32", "speedup": x,
                        "met": None if x is None else bool(x >= t["target"]),
                        "beats_xtremedistil": None if x is None else bool(x >= t["xtremedistil"])})
    return out


# ---- outputs ---------------------------------------------------------------------------

SUMMARY_KEYS = ("model", "runtime", "precision", "batch", "seq", "median_ms")


def write_outputs(report: Latency, out: Path) -> None:
    """``latency.json``, ``latency.md``, and ``summary.json`` with its ``latency`` list replaced.

    The list is replaced, not appended to: its cells must come from one run (one machine
    state) to be compared. Every other key of ``summary.json`` is kept.
    """
    report.write(out / "latency.json")
    keys = ("model", "runtime", "precision", "batch", "seq", "reference", "speedup")
    merge_json(out / "summary.json", {
        "latency": [{k: getattr(c, k) for k in SUMMARY_KEYS} for c in report.cells],
        "latency_report": {"file": "latency.json", "machine": report.provenance.machine, "settings": report.settings,
                           "targets": report.targets,
                           "speedups": [{k: v for k, v in asdict(s).items() if k in keys} for s in report.speedups]}})
    write_page(blocks(report), out, name="latency")


def blocks(report: Latency) -> list:
    """``latency.md``: every cell, the speedups over each reference, the targets."""
    p, st = report.provenance, report.settings
    m, v = p.machine or {}, p.versions or {}
    batches = [tuple(b) for b in st["batches"]]
    cell = {(*c.key, c.batch, c.seq): c for c in report.cells}
    rows = []
    for mod in report.models:
        for runtime, precision in sorted({(c.runtime, c.precision) for c in report.cells if c.model == mod["name"]},
                                         key=lambda c: (c[0] != "torch", c)):
            vals = [cell.get((mod["name"], runtime, precision, b, s)) for b, s in batches]
            rows.append([mod["name"], mod["kind"], _params(mod["params"]), runtime, precision,
                         *[ms(c.median_ms) if c else "-" for c in vals]])
    out = [Heading(1, "Latency"), Para(f"Command: `{p.command}`"),
           Para(f"Machine: {m.get('cpu')}, {m.get('usable_cpus')} usable cores; intra-op threads: {st['threads']}, "
                f"the same for PyTorch and ONNX Runtime; torch {v.get('torch')}, onnxruntime {v.get('onnxruntime')}, "
                f"transformers {v.get('transformers')}. Load average at start {_load(st.get('loadavg_start'))}, at "
                f"end {_load(st.get('loadavg_end'))} (other work on the machine inflates every number)."),
           Para(f"Median ms per call over random in-vocabulary ids with a full mask (no tokenization); "
                f"{st['warmup']} warm-up call(s), then at least {st['min_repeats']} and at most {st['max_repeats']} "
                f"calls or {st['cell_seconds']} s per cell. Shaped teachers have random weights with the public "
                f"configs' shapes. Whole run: {st['wall_s']} s."),
           Table(["model", "kind", "params", "runtime", "precision", *[f"batch {b} x {s}" for b, s in batches]], rows,
                 {2, *range(5, 5 + len(batches))})]
    refs = list(dict.fromkeys(s.reference for s in report.speedups))
    if refs:
        order = sorted(batches, key=lambda b: (b[0] != 32, b))  # batch 32 first: the paper's setting
        cols = [(ref, b) for ref in refs for b in order]
        speed = {(s.model, s.runtime, s.precision, s.reference, s.batch, s.seq): s.speedup for s in report.speedups}
        keys = dict.fromkeys((s.model, s.runtime, s.precision) for s in report.speedups)
        out += [Heading(2, "Speedups of the students over the teachers in PyTorch (fp32)"),
                Table(["student", "runtime", "precision", *[f"vs {r} torch, batch {b}" for r, (b, _) in cols]],
                      [[*k, *["-" if (x := speed.get((*k, r, b, s))) is None else times(x) for r, (b, s) in cols]]
                       for k in keys], set(range(3, 3 + len(cols))))]
    out.append(Heading(2, "Targets (int8 BiLSTM student in ORT over the mBERT-shaped teacher in PyTorch)"))
    if not report.targets:
        return out + [Para("No int8 BiLSTM student was timed: targets not evaluated.")]
    rows = []
    for t in report.targets:
        met = "not measured" if t["met"] is None else ("**met**" if t["met"] else "**not met**")
        rows.append([t["model"], f"{t['name']} (batch {t['batch']} x {t['seq']})",
                     "not measured" if t["speedup"] is None else times(t["speedup"]), f"{t['target']:.0f}x", met,
                     f"{t['xtremedistil']:.0f}x", t["xtremedistil_setting"]])
    return out + [Table(["student", "setting", "speedup", "target", "met", "XtremeDistil", "XtremeDistil setting"],
                        rows, {2, 3, 5}),
                  Para("XtremeDistil's 51x batch speedup was measured on a GPU and its 16x online speedup on a CPU, "
                       "both against mBERT-base in PyTorch; the numbers here are all on this machine's CPU.")]


def _params(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _load(avg) -> str:
    return "n/a" if not avg else "/".join(f"{a:.2f}" for a in avg)


# ---- CLI -------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = preamble.parser(__doc__, quiet=False)
    p.add_argument("--teacher", help="the real teacher's folder (timed in torch and ORT)")
    p.add_argument("--bilstm", help="BiLSTM student folder")
    p.add_argument("--transformer", help="Transformer student folder")
    p.add_argument("--model", action="append", default=[], metavar="NAME=DIR",
                   help="another student or teacher folder to time under NAME (repeatable)")
    p.add_argument("--out", default="benchmarks/results/latency", help="latency.json / latency.md / summary.json")
    p.add_argument("--exports", default="runs/latency/exports", help="ONNX exports (reused when already there)")
    p.add_argument("--threads", type=int, help="torch and ORT intra-op threads (default: all usable cores)")
    p.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES),
                   help="reference-shaped teachers to time (default: all; none with an empty list)")
    p.add_argument("--teacher-int8", action="store_true", help="also time the teachers in ORT int8")
    p.add_argument("--quick", action="store_true", help="smoke test: few repeats, no batch 256")
    p.add_argument("--rounds", type=int, default=1,
                   help="time every cell this many times, round after round, and report the median of the "
                        "rounds' medians (interleaved: the machine's slow minutes spread over all cells)")
    p.add_argument("--int8-min-agreement", type=float, default=0.9,
                   help="int8 exports are timed if their tags agree with PyTorch on this share of words "
                        "(the agreement is recorded in the export manifest; `xdistil export` itself uses 0.98)")
    args = p.parse_args(argv)
    command = preamble.start("latency", argv)
    models = {n: d for n, d in (("teacher", args.teacher), ("bilstm", args.bilstm),
                                ("transformer", args.transformer)) if d}
    for spec in args.model:
        name, _, path = spec.partition("=")
        if not name or not path:
            p.error(f"--model {spec!r}: write NAME=DIR")
        models[name] = path
    if not models and not args.shapes:
        p.error("nothing to time: give --teacher / --bilstm / --transformer or --shapes")
    kwargs = dict(QUICK) if args.quick else {}
    run(models, args.out, threads=args.threads, shapes=args.shapes, teacher_int8=args.teacher_int8,
        exports_dir=args.exports, command=command, export_kwargs={"int8_min_agreement": args.int8_min_agreement},
        rounds=args.rounds, **kwargs)
    print((Path(args.out) / "latency.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

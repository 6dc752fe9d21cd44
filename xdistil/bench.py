"""``xdistil bench``: the benchmark suite of one run directory, written to ``RUN_DIR/bench.json``.

What the run measured while it worked is read from its files, not measured again:

- quality: dev F1 per language of the teacher and of every stage's student
  (``metrics.json``; a model the run did not evaluate is evaluated here) and the share of
  the teacher's F1 each student keeps; parameters and compression;
- labeling throughput, end to end against the teacher's bare forward pass, and the peak
  memory of labeling (``transfer/manifest.json``);
- distillation throughput in tokens/s per stage and unfreezing step, and the peak memory
  of training (``distill/metrics.json``).

Latencies can only be compared when measured side by side, so they are measured here, in
one process with one thread count: the teacher in PyTorch (with ``teacher_ort`` also in
ONNX Runtime fp32) and the final student in PyTorch, ORT fp32 and ORT int8, at every batch
size, on the CPU. Inputs are real dev sentences: each model's own windows of at most
``seq`` word pieces, padded to ``seq`` (a fixed shape, so batch sizes compare). Each cell:
warm-up calls, then timed calls until ``min_repeats`` are done and ``cell_seconds`` have
passed (at most ``max_repeats``); the median is kept. A call longer than ``cell_seconds``
needs one warm-up only, so the big batches cost ``1 + min_repeats`` calls.

Every section carries its provenance (machine, library versions, command line): the
bench's own for what it measures, the run's record of the step for what it copies
(``xdistil run`` keeps one per step in ``metrics.json``; older runs lack it and say so).

`time_cell`, `ort_session` and `ensure_export` are also what ``benchmarks/latency.py``
times the reference-shaped teachers with.
"""

from __future__ import annotations

import gc
import json
import logging
import re
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from itertools import zip_longest
from pathlib import Path

from xdistil.config import RunConfig, from_dict, save_json, to_dict
from xdistil.provenance import load_average, provenance, usable_cpus

log = logging.getLogger(__name__)

BENCH_FILE = "bench.json"
FORMAT = "xdistil-bench"
EXPORTS = "bench-exports"  # inside the run directory; reused while the model is unchanged
BATCH_SIZES = (1, 32, 256)  # online, XtremeDistil's batch, a large offline batch
SEQ = 32  # word pieces per row, specials included: XtremeDistil's maximum sequence length
TIMING = {"warmup": 2, "min_repeats": 5, "max_repeats": 200, "cell_seconds": 1.0}
QUICK = {"warmup": 1, "min_repeats": 2, "max_repeats": 3, "cell_seconds": 0.0}
INT8_MIN_AGREEMENT = 0.98  # the floor of `xdistil export --int8`
NOT_RECORDED = "not recorded by this run (made before xdistil recorded it; rerun the step to record it)"
_STAGE_DIR = re.compile(r"stage(\d+)-")


# ---- timing (shared with benchmarks/latency.py) -------------------------------------------


def time_cell(fn: Callable[[], object], warmup: int, min_repeats: int, max_repeats: int,
              cell_seconds: float) -> dict:
    """Warm up, then time ``fn`` until ``min_repeats`` calls and ``cell_seconds`` (at most ``max_repeats``)."""
    warm = 0
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        warm += 1
        if time.perf_counter() - t0 > cell_seconds:  # a long call: one warm-up is enough
            break
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max(1, max_repeats) and (
        len(times) < max(1, min_repeats) or time.perf_counter() - start < cell_seconds
    ):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    ms = [1e3 * t for t in times]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms),
            "mean_ms": statistics.fmean(ms), "repeats": len(ms), "warmup": warm}


def torch_call(module, input_ids, attention_mask, word_mask) -> Callable[[], object]:
    """One forward of ``module`` on fixed inputs, as timed: no autograd, logits out."""
    import torch

    def call():
        with torch.inference_mode():
            return module(input_ids, attention_mask, word_mask).logits  # (B, T, C)

    return call


def ort_session(path: Path, threads: int):
    """A CPU session with ``threads`` intra-op threads, the same count PyTorch gets."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _newest_mtime(folder: Path) -> float:
    return max((p.stat().st_mtime for p in folder.rglob("*") if p.is_file()), default=0.0)


def ensure_export(model_dir: Path, dest: Path, int8: bool, export_kwargs: dict) -> tuple[dict, bool]:
    """`export_model` into ``dest`` unless an export of the same, unchanged source is already there.

    Returns the export manifest and whether it was reused.
    """
    from xdistil_export.onnx_export import export_model
    from xdistil_export.runtime import MANIFEST

    manifest_file = dest / MANIFEST
    if manifest_file.is_file():
        m = json.loads(manifest_file.read_text(encoding="utf-8"))
        same_source = m.get("source") == str(Path(model_dir).resolve())
        fresh = _newest_mtime(Path(model_dir)) <= manifest_file.stat().st_mtime
        if same_source and fresh and (not int8 or m.get("files", {}).get("model_int8")):
            log.info("reusing export %s", dest)
            return m, True
    log.info("exporting %s -> %s (int8: %s)", model_dir, dest, int8)
    return export_model(model_dir, dest, int8=int8, **export_kwargs), False


def onnx_files(folder: Path, files: dict) -> dict[str, Path]:
    """precision -> model file of an export folder (from its manifest's ``files``)."""
    out = {"fp32": folder / files["model"]}
    if files.get("model_int8"):
        out["int8"] = folder / files["model_int8"]
    return out


def file_mb(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 2)


# ---- the run directory ------------------------------------------------------------------


def load_run(run_dir: Path) -> tuple[RunConfig, dict]:
    """The resolved config and ``metrics.json`` of a run, or a clear error."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such directory")
    if not (run_dir / "metrics.json").is_file() or not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not an xdistil run directory (no metrics.json); "
                                f"run 'xdistil run --config FILE --out {run_dir}' first")
    cfg = from_dict(RunConfig, json.loads((run_dir / "config.json").read_text(encoding="utf-8")))
    return cfg, json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


def student_dirs(run_dir: Path) -> list[Path]:
    """The run's stage students (``distill/stageN-NAME``) in stage order; the last is the final one."""
    from xdistil.taggers import STUDENT_MARKER

    root = run_dir / "distill"
    found = [(int(m.group(1)), p) for p in (root.iterdir() if root.is_dir() else [])
             if (m := _STAGE_DIR.match(p.name)) and (p / STUDENT_MARKER).is_file()]
    return [p for _, p in sorted(found)]


def teacher_dir(run_dir: Path, metrics: dict) -> Path:
    """The teacher the run's "% of the teacher" refers to.

    ``RUN_DIR/teacher`` is the teacher itself, or, for teachers co-finetuned together, a
    group folder whose reference member ``metrics.json`` names.
    """
    member = metrics.get("teacher", {}).get("member")
    root = run_dir / "teacher"
    return root / member if member and (root / member).is_dir() else root


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _run_provenance(metrics: dict, step: str, versions: dict | None = None) -> dict:
    """The record ``xdistil run`` kept for ``step``; for older runs, what is known (library versions)."""
    rec = metrics.get("provenance", {}).get(step)
    if rec:
        return {**rec, "measured_by": f"xdistil run ({step} step)"}
    return {"machine": None, "versions": versions, "command": None, "measured_by": f"xdistil run ({step} step)",
            "note": NOT_RECORDED}


# ---- sections ---------------------------------------------------------------------------


def _evaluation(cfg: RunConfig) -> str:
    return "dev " + (f"(first {cfg.data.dev_limit} sentences per language)" if cfg.data.dev_limit else "(whole file)")


def protocol(cfg: RunConfig, manifest: dict | None) -> dict:
    """What the figures were measured on: budget, transfer set, evaluation split, models."""
    counts = (manifest or {}).get("counts", {})
    return {
        "languages": list(cfg.data.languages),
        "labeled_budget": cfg.data.labeled_budget,
        "selection_slice": cfg.data.val_size,
        "transfer": {"sources": list(cfg.transfer.sources), "limit_per_language": cfg.transfer.limit,
                     "counts": counts,
                     "unlabeled_sentences": sum(c.get("transfer", 0) for c in counts.values()),
                     "sentences": sum(sum(c.values()) for c in counts.values())},
        "evaluation": _evaluation(cfg),
        "metric": "seqeval entity F1, IOB2 strict",
        "teacher": cfg.teacher.model,
        "student": to_dict(cfg.student),
        "stages": [s.name for s in cfg.distill.resolved_stages()],
    }


def quality(run_dir: Path, cfg: RunConfig, metrics: dict, students: list[Path], progress: bool) -> dict:
    """F1 per language of the teacher and every stage's student, and the share of the teacher's kept.

    Models the run did not evaluate (``steps`` without ``evaluate``, or an interrupted
    run) are evaluated here on the same dev sets.
    """
    from xdistil.pipeline import DevScorer

    score = DevScorer(cfg, progress)

    def scores(path: Path, stored: dict | None) -> tuple[dict, str]:
        if stored is not None:
            return stored, "xdistil run"
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: missing; the run is incomplete (rerun 'xdistil run')")
        log.info("evaluating %s (not in metrics.json)", path)
        return score(str(path), path), "xdistil bench"

    teacher, by = scores(teacher_dir(run_dir, metrics), metrics.get("teacher"))
    langs = list(teacher["dev"])

    def row(name: str, role: str, m: dict, by: str, stage: int | None) -> dict:
        f1 = {lang: m["dev"][lang]["f1"] for lang in langs}
        kept = {lang: 100 * f1[lang] / teacher["dev"][lang]["f1"] if teacher["dev"][lang]["f1"] else None
                for lang in langs}
        return {"name": name, "role": role, "stage": stage, "path": m.get("path"), "params": m["params"],
                "f1": f1, "f1_avg": m["f1_avg"], "retained_pct": kept,
                "retained_avg_pct": 100 * m["f1_avg"] / teacher["f1_avg"] if teacher["f1_avg"] else None,
                "evaluated_by": by}

    rows = [row("teacher", "teacher", teacher, by, None)]
    stored = metrics.get("students", {})
    for i, d in enumerate(students, 1):
        m, by = scores(d, stored.get(d.name))
        rows.append(row(d.name, "student", m, by, i))
    return {"languages": langs, "evaluation": _evaluation(cfg),
            "metric": "seqeval entity F1 (%), IOB2 strict", "models": rows,
            "final": students[-1].name if students else None,
            "provenance": _run_provenance(metrics, "evaluate")}


def size(rows: Sequence[dict]) -> dict:
    """Parameters and compression (teacher parameters / student parameters) of every model."""
    teacher = rows[0]["params"]
    return {"teacher_params": teacher,
            "models": [{"name": r["name"], "role": r["role"], "params": r["params"],
                        "compression": teacher / r["params"]} for r in rows],
            "exports": {}}


def labeling(m: dict | None, metrics: dict) -> dict:
    """Labeling throughput from the transfer set's manifest ``m``: end to end against the bare forward pass."""
    if m is None:
        return {"source": None, "note": "no transfer/manifest.json in the run directory"}
    tp = m.get("throughput", {})
    return {"source": "transfer/manifest.json",
            "sentences": tp.get("sentences_labeled_this_run"), "words": tp.get("words_labeled_this_run"),
            "processes": tp.get("processes", 1),
            "label_sentences_per_s": tp.get("label_sentences_per_s"),
            "forward_sentences_per_s": tp.get("forward_sentences_per_s"),
            "overhead": tp.get("overhead"),
            "batch_size": m.get("config", {}).get("batch_size"), "layers": m.get("layers"),
            "teachers": [{"path": t.get("path"), "params": t.get("params")} for t in m.get("teachers", [])],
            "what": "end to end: reading, windowing, teacher forward, writing Arrow chunks; forward: the "
                    "teacher's forward pass alone; overhead: end-to-end time / forward time",
            "provenance": _run_provenance(metrics, "label", m.get("versions"))}


def distillation(run_dir: Path, metrics: dict, students: Sequence[Path]) -> dict:
    """Tokens/s per stage and unfreezing step from ``distill/metrics.json``."""
    log_ = _read_json(run_dir / "distill" / "metrics.json")
    if log_ is None:
        return {"source": None, "stages": [], "note": "no distill/metrics.json in the run directory"}
    pending = list(students)
    stages = []
    for st in log_.get("stages", []):
        # stage logs come in stage order; a student folder is named stageN-<stage name>
        while pending and pending[0].name.split("-", 1)[-1] != st["stage"]:
            pending.pop(0)
        student = pending.pop(0).name if pending else None
        steps = [{"groups": s.get("groups"), "seconds": s.get("seconds"), "tokens_per_s": s.get("tokens_per_s"),
                  "epochs": len(s.get("history", [])), "best_select": s.get("best_select"),
                  "processes": s.get("processes", 1), "peak_rss_mb": s.get("peak_rss_mb"),
                  "memory_scope": s.get("memory_scope")} for s in st.get("steps", [])]
        seconds = sum(s["seconds"] or 0 for s in steps)
        tokens = sum((s["seconds"] or 0) * (s["tokens_per_s"] or 0) for s in steps)
        stages.append({"stage": st["stage"], "student": student, "seconds": round(seconds, 1),
                       "tokens": round(tokens), "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
                       "epochs": sum(s["epochs"] for s in steps), "steps": steps})
    seconds = sum(s["seconds"] for s in stages)
    tokens = sum(s["tokens"] for s in stages)
    return {"source": "distill/metrics.json", "stages": stages, "seconds": round(seconds, 1),
            "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
            "what": "optimizer steps over the transfer set (forward, losses, backward, update) plus the "
                    "selection-slice scoring after every epoch; tokens are real word pieces",
            "provenance": _run_provenance(metrics, "distill")}


def memory(manifest: dict | None, metrics: dict, distill: dict) -> dict:
    """Peak resident memory of labeling and of training, as `xdistil.memory.PeakMemory` recorded it."""
    m = manifest or {}
    tp = m.get("throughput", {})
    per = tp.get("per_process") or [{}]
    lab = {"peak_rss_mb": tp.get("peak_rss_mb"), "scope": per[0].get("memory_scope"),
           "source": "transfer/manifest.json", "provenance": _run_provenance(metrics, "label", m.get("versions"))}
    steps = [s for st in distill.get("stages", []) for s in st["steps"] if s["peak_rss_mb"] is not None]
    train = {"peak_rss_mb": max((s["peak_rss_mb"] for s in steps), default=None),
             "scope": steps[0]["memory_scope"] if steps else None,
             "per_stage": [{"stage": st["stage"], "student": st["student"],
                            "peak_rss_mb": max((s["peak_rss_mb"] for s in st["steps"] if s["peak_rss_mb"] is not None),
                                               default=None)} for st in distill.get("stages", [])],
             "source": "distill/metrics.json", "provenance": _run_provenance(metrics, "distill")}
    for part in (lab, train):
        if part["peak_rss_mb"] is None:
            part["note"] = NOT_RECORDED
    return {"labeling": lab, "training": train,
            "what": "peak resident set size (MB); scope 'step': the high-water mark reset when the work "
                    "started, so it excludes what ran before in the same process; 'process': the "
                    "process-wide peak"}


# ---- latency ----------------------------------------------------------------------------


def _sentences(cfg: RunConfig, rows: int) -> list[list[str]]:
    """The first ``rows`` dev sentences, languages interleaved, so every batch mixes them."""
    from xdistil.pipeline import dev_sets

    dev = dev_sets(cfg)
    mixed = [s.words for group in zip_longest(*dev.values()) for s in group if s is not None and s.words]
    if not mixed:
        raise ValueError("no dev sentences to time the models on")
    return mixed[:rows]


def _inputs(tagger, sentences: Sequence[Sequence[str]], rows: int, seq: int):
    """(rows, seq) input ids, attention mask and word mask: the model's own windows, padded to ``seq``."""
    import torch

    from xdistil.data.align import WindowEncoder

    enc = WindowEncoder(tagger.tokenizer, min(seq, tagger.max_length))
    pieces = enc.encode(sentences)
    ids = torch.full((rows, seq), enc.specials.pad_id, dtype=torch.long)  # (R, T)
    mask = torch.zeros((rows, seq), dtype=torch.long)  # (R, T)
    word_mask = torch.zeros((rows, seq), dtype=torch.bool)  # (R, T)
    for r in range(rows):  # fewer windows than rows: cycle through them
        p = pieces[r % len(pieces)]
        ids[r, : len(p.input_ids)] = torch.tensor(p.input_ids)
        mask[r, : len(p.input_ids)] = 1
        word_mask[r, p.word_starts] = True
    return ids, mask, word_mask


def _cell(model: str, role: str, runtime: str, precision: str, batch: int, seq: int, t: dict) -> dict:
    log.debug("%-20s %-5s %-4s batch %4d x %d: median %9.2f ms (%d runs)", model, runtime, precision, batch, seq,
             t["median_ms"], t["repeats"])
    return {"model": model, "role": role, "runtime": runtime, "precision": precision, "batch": batch, "seq": seq,
            **t, "ms_per_sentence": t["median_ms"] / batch, "sentences_per_s": 1e3 * batch / t["median_ms"]}


def _time_model(name: str, role: str, tagger, onnx: dict[str, Path], cells: Sequence[tuple[str, str]],
                batches: Sequence[int], inputs, seq: int, threads: int, timing: dict, bar) -> list[dict]:
    """Every (runtime, precision) cell of one model at every batch size, one runtime at a time."""
    ids, mask, word_mask = inputs
    out = []
    for runtime, precision in cells:
        session = ort_session(onnx[precision], threads) if runtime == "ort" else None
        for b in batches:
            if session is None:
                call = torch_call(tagger.module.eval(), ids[:b], mask[:b], word_mask[:b])
            else:
                call = partial(session.run, ["logits"], {"input_ids": ids[:b].numpy(),
                                                         "attention_mask": mask[:b].numpy()})
            out.append(_cell(name, role, runtime, precision, b, seq, time_cell(call, **timing)))
            bar.update()
        del session  # its thread pool goes before the next runtime's starts
    return out


def speedups(results: Sequence[dict], reference: str = "teacher") -> list[dict]:
    """Every student cell against the teacher in PyTorch fp32 at the same batch size."""
    base = {r["batch"]: r["median_ms"] for r in results
            if (r["model"], r["runtime"], r["precision"]) == (reference, "torch", "fp32")}
    return [{"model": r["model"], "runtime": r["runtime"], "precision": r["precision"], "batch": r["batch"],
             "reference": reference, "reference_runtime": "torch", "reference_precision": "fp32",
             "reference_ms": base[r["batch"]], "median_ms": r["median_ms"], "speedup": base[r["batch"]] / r["median_ms"]}
            for r in results if r["role"] == "student" and r["batch"] in base]


def latency(run_dir: Path, cfg: RunConfig, teacher: Path, final: Path, batches: Sequence[int], seq: int, threads: int,
            timing: dict, int8: bool, int8_min_agreement: float, teacher_ort: bool, prov: dict,
            progress: bool) -> tuple[dict, dict]:
    """Time the teacher and the final student side by side; returns the section and the export sizes."""
    import torch
    from tqdm.auto import tqdm
    from xdistil_export.onnx_export import ExportParityError

    from xdistil.taggers import load_tagger

    exports = run_dir / EXPORTS
    sentences = _sentences(cfg, max(batches))
    subjects = [("teacher", "teacher", teacher, [("torch", "fp32")] + ([("ort", "fp32")] if teacher_ort
                                                                                  else [])),
                (final.name, "student", final, [("torch", "fp32"), ("ort", "fp32")] + ([("ort", "int8")] if int8
                                                                                      else []))]
    started, results, models, sizes = time.perf_counter(), [], [], {}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    bar = tqdm(total=sum(len(c) for *_, c in subjects) * len(batches), desc="bench latency", unit="cell",
               disable=not progress)
    try:
        for name, role, path, cells in subjects:
            onnx, info = {}, {}
            if any(rt == "ort" for rt, _ in cells):
                q8 = any(p == "int8" for _, p in cells)
                try:
                    manifest, reused = ensure_export(path, exports / name, q8,
                                                     {"int8_min_agreement": int8_min_agreement})
                except ExportParityError as e:
                    raise RuntimeError(f"{e}\nexport of {path} failed its check: rerun with --no-int8, or accept "
                                       f"the int8 model with a lower --int8-min-agreement") from None
                onnx = onnx_files(exports / name, manifest["files"])
                sizes[name] = {p: file_mb(f) for p, f in onnx.items()}
                info = {"export": str(exports / name), "export_reused": reused, "onnx_mb": sizes[name]}
                if manifest.get("int8"):
                    info["int8_tag_agreement"] = manifest["int8"]["parity"]["min_agreement"]
            tagger = load_tagger(path)
            inputs = _inputs(tagger, sentences, max(batches), seq)
            models.append({"name": name, "role": role, "kind": tagger.kind, "params": tagger.param_count(),
                           "cells": [list(c) for c in cells],
                           "mean_real_pieces": round(float(inputs[1].sum()) / max(batches), 2), **info})
            results += _time_model(name, role, tagger, onnx, cells, batches, inputs, seq, threads, timing, bar)
            del tagger, inputs
            gc.collect()
    finally:
        bar.close()
        torch.set_num_threads(before)
    settings = {"batch_sizes": list(batches), "seq": seq, "threads": threads, **timing, "device": "cpu",
                "inputs": f"the first {max(batches)} dev sentences (languages interleaved), each model's own "
                          f"windows of at most {seq} word pieces padded to {seq}; batch B takes the first B rows",
                "torch": "module(input_ids, attention_mask, word_mask) under torch.inference_mode()",
                "ort": "InferenceSession.run, CPUExecutionProvider, intra-op threads = threads, inter-op 1",
                "statistic": "median ms per call after warm-up", "wall_s": round(time.perf_counter() - started, 1),
                "loadavg_end": load_average()}
    section = {"settings": settings, "models": models, "results": results, "speedups": speedups(results),
               "provenance": prov}
    return section, sizes


# ---- the suite --------------------------------------------------------------------------


def run_bench(
    run_dir: str | Path,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    repeats: int | None = None,
    int8: bool = True,
    threads: int | None = None,
    quick: bool = False,
    *,
    seq: int = SEQ,
    teacher_ort: bool = False,
    int8_min_agreement: float = INT8_MIN_AGREEMENT,
    command: str | None = None,
    progress: bool = True,
) -> dict:
    """Run the suite on ``run_dir`` and write ``run_dir/bench.json`` atomically; returns its content.

    ``repeats``: timed calls per latency cell at least (default 5, 2 with ``quick``).
    ``threads``: PyTorch and ONNX Runtime intra-op threads (default: every usable core).
    ``quick``: one warm-up call and 2-3 timed calls per cell, for smoke tests.
    ``int8_min_agreement``: the int8 export must agree with PyTorch on this share of tags.
    """
    run = Path(run_dir)
    cfg, metrics = load_run(run)
    students = student_dirs(run)
    if not students:
        raise FileNotFoundError(f"{run}/distill has no students; run 'xdistil run' to the distill step first")
    batches = sorted({int(b) for b in batch_sizes})
    if not batches or batches[0] < 1 or seq < 8:
        raise ValueError(f"batch sizes must be >= 1 and seq >= 8 (got {batch_sizes}, {seq})")
    timing = dict(QUICK if quick else TIMING)
    if repeats is not None:
        if repeats < 1:
            raise ValueError("--repeats must be >= 1")
        timing["min_repeats"], timing["max_repeats"] = repeats, max(repeats, timing["max_repeats"])
    threads = int(threads or usable_cpus())
    prov = provenance(command, threads)

    manifest = _read_json(run / "transfer" / "manifest.json")
    qual = quality(run, cfg, metrics, students, progress)
    sizes = size(qual["models"])
    distill = distillation(run, metrics, students)
    lat, exports = latency(run, cfg, teacher_dir(run, metrics), students[-1], batches, seq, threads, timing, int8, int8_min_agreement,
                           teacher_ort, prov, progress)
    sizes["exports"] = exports
    bench = {
        "format": FORMAT, "format_version": 1, "run_dir": str(run.resolve()),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "provenance": prov,
        "protocol": protocol(cfg, manifest),
        "quality": qual,
        "size": sizes,
        "latency": lat,
        "labeling": labeling(manifest, metrics),
        "distillation": distill,
        "memory": memory(manifest, metrics, distill),
    }
    save_json(bench, run / BENCH_FILE)
    return bench


def format_summary(bench: dict) -> str:
    """A few lines for the terminal: the final student's quality, size and speed."""
    q = bench["quality"]
    teacher = q["models"][0]
    final = next(m for m in q["models"] if m["name"] == q["final"])
    comp = next(m["compression"] for m in bench["size"]["models"] if m["name"] == final["name"])
    kept = final["retained_avg_pct"]
    lines = [f"final student {final['name']}: dev F1 {final['f1_avg']:.2f}"
             + (f" = {kept:.1f}% of" if kept is not None else " against") +
             f" the teacher's {teacher['f1_avg']:.2f}, {comp:.1f}x fewer parameters"]
    lat = bench["latency"]
    batches = lat["settings"]["batch_sizes"]
    lines.append(f"{'median ms per call (seq ' + str(lat['settings']['seq']) + ')':<40}"
                 + "".join(f"{'batch ' + str(b):>12}" for b in batches))
    cell = {(r["model"], r["runtime"], r["precision"], r["batch"]): r["median_ms"] for r in lat["results"]}
    for key in dict.fromkeys((r["model"], r["runtime"], r["precision"]) for r in lat["results"]):
        lines.append(f"{' '.join(key):<40}" + "".join(f"{cell.get((*key, b), float('nan')):>12.2f}" for b in batches))
    best = {}
    for s in lat["speedups"]:
        if s["batch"] not in best or s["speedup"] > best[s["batch"]]["speedup"]:
            best[s["batch"]] = s
    if best:
        lines.append("fastest student vs teacher PyTorch: " + ", ".join(
            f"{s['speedup']:.1f}x at batch {b} ({s['runtime']} {s['precision']})" for b, s in sorted(best.items())))
    return "\n".join(lines)

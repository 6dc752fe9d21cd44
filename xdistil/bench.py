"""``xdistil bench``: the benchmark suite of one run directory, written to ``RUN_DIR/bench.json``.

``bench.json`` is a `xdistil.results.Bench` record composed of the records a run wrote
and of what is measured here. Read from the run's files, not measured again:

- quality: the `Summary` of the teacher and every stage's student (``metrics.json``; a
  model the run did not evaluate is evaluated here), each row with its stage and folder;
- labeling throughput (``transfer/manifest.json``) and one `PhaseLog` per distillation
  step (``distill/metrics.json``), with the peak memory each recorded.

Measured here, side by side in one process with one thread count, on the CPU:

- latency: the teacher in PyTorch (with ``teacher_ort`` also ONNX Runtime fp32) and the
  final student in PyTorch, ORT fp32 and ORT int8, at every batch size. Inputs are real
  dev sentences: each model's own windows of at most ``seq`` word pieces, padded to
  ``seq`` (a fixed shape, so batch sizes compare). Each cell: warm-up calls, then timed
  calls until ``min_repeats`` are done and ``cell_seconds`` have passed (at most
  ``max_repeats``); the median is kept;
- end to end: words/s of the torch-free runtime (``xdistil_export.runtime.Predictor`` on
  the student's int8 and fp32 exports) tagging raw dev text -- tokenisation, windows,
  ONNX Runtime and decoding included -- beside the teacher through the Hugging Face
  token-classification pipeline on the same text.

Every section carries its provenance (machine, library versions, command line): the
bench's own for what it measures, the run's record of the step for what it copies.
`time_cell`, `ort_session` and `ensure_export` also serve ``benchmarks/latency.py``.
"""

from __future__ import annotations

import gc
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from itertools import zip_longest
from pathlib import Path

from xdistil_export.atomic import write_json

from xdistil.config import RunConfig, from_dict
from xdistil.evaluate import DevScorer
from xdistil.pipeline import summary
from xdistil.provenance import load_average, provenance, usable_cpus
from xdistil.results import (
    Bench,
    LatencyCell,
    ModelScores,
    PhaseLog,
    Provenance,
    Summary,
    Throughput,
    phase_logs,
    speedups,
    stage_of,
)
from xdistil.run import RunDir, RunRecord, fingerprints

log = logging.getLogger(__name__)

BATCH_SIZES = (1, 32, 256)  # online, XtremeDistil's batch, a large offline batch
SEQ = 32  # word pieces per row, specials included: XtremeDistil's maximum sequence length
TIMING = {"warmup": 2, "min_repeats": 5, "max_repeats": 200, "cell_seconds": 1.0}
QUICK = {"warmup": 1, "min_repeats": 2, "max_repeats": 3, "cell_seconds": 0.0}
TEXT_ROWS = 1000  # dev sentences tagged end to end (QUICK: 32)
INT8_MIN_AGREEMENT = 0.98  # the floor of `xdistil export --int8`
NOT_RECORDED = "not recorded by this run (made before xdistil recorded it; rerun the step to record it)"


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
    from xdistil_export.runtime import MANIFEST

    from xdistil.deployable import export_model

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


def load_run(run: RunDir) -> tuple[RunConfig, RunRecord]:
    """The resolved config and the record (``metrics.json``, `RunRecord`) of a run, or a clear error."""
    if not run.root.is_dir():
        raise FileNotFoundError(f"{run.root}: no such directory")
    if not run.is_run():
        raise FileNotFoundError(f"{run.root} is not an xdistil run directory (no metrics.json); "
                                f"run 'xdistil run --config FILE --out {run.root}' first")
    cfg = from_dict(RunConfig, json.loads(run.config.read_text(encoding="utf-8")))
    return cfg, RunRecord.read(run.metrics)


def student_dirs(run: RunDir) -> list[tuple[int, str, Path]]:
    """(stage index, stage name, folder) of the run's stage students, in stage order; the last is the final one.

    The index and name are what each stage saved in its student's metadata."""
    root = run.distill
    found = [(*stage_of(p), p) for p in (sorted(root.iterdir()) if root.is_dir() else [])]
    return sorted((i, name, p) for i, name, p in found if i is not None)


def teacher_dir(run: RunDir, record: RunRecord) -> Path:
    """The teacher the run's "% of the teacher" refers to.

    ``RUN_DIR/teacher`` is the teacher itself, or, for teachers co-finetuned together, a
    group folder whose reference member ``metrics.json`` names.
    """
    member = (record.teacher or {}).get("member")
    root = run.teacher
    return root / member if member and (root / member).is_dir() else root


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _run_provenance(record: RunRecord, step: str, versions: dict | None = None) -> Provenance:
    """The record ``xdistil run`` kept for ``step``; for older runs, what is known (library versions)."""
    rec = record.provenance.get(step)
    by = f"xdistil run ({step} step)"
    return Provenance(**{**rec, "measured_by": by}) if rec else Provenance(versions=versions, measured_by=by,
                                                                          note=NOT_RECORDED)


# ---- sections ---------------------------------------------------------------------------


def quality(run: RunDir, cfg: RunConfig, record: RunRecord, students: list[tuple[int, str, Path]],
            progress: bool) -> Summary:
    """The run's `Summary`: the teacher and every stage's student, with its stage and folder.

    Models the run did not evaluate (``steps`` without ``evaluate``, or an interrupted
    run) are evaluated here on the same dev sets.
    """
    base = summary(record, cfg)
    score = DevScorer(cfg, progress)
    tpath = teacher_dir(run, record)
    if record.teacher is not None:
        teacher = base.teacher
    else:
        if not tpath.is_dir():
            raise FileNotFoundError(f"{tpath}: missing; the run is incomplete (rerun 'xdistil run')")
        log.info("evaluating %s (not in metrics.json)", tpath)
        teacher = ModelScores.from_eval("teacher", "teacher", score("teacher", tpath), arch=cfg.teacher.model,
                                        evaluated_by="xdistil bench")
    rows = [teacher]
    for index, stage, folder in students:
        if folder.name in record.students:
            rows.append(base.model(folder.name))
        else:
            log.info("evaluating %s (not in metrics.json)", folder)
            rows.append(ModelScores.from_eval(folder.name, "student", score(folder.name, folder),
                                              arch=cfg.student.arch, stage=index, stage_name=stage,
                                              evaluated_by="xdistil bench"))
    return Summary(base.protocol, rows, reference=teacher.name, headline=students[-1][2].name if students else None,
                   timings=base.timings, provenance={"evaluate": _run_provenance(record, "evaluate")})


def labeling(m: dict | None) -> Throughput | None:
    """Labeling throughput from the transfer set's manifest ``m``: end to end against the bare forward pass."""
    if m is None:
        return None
    tp = m.get("throughput", {})
    per = tp.get("per_process") or [{}]
    return Throughput("labeling", "end to end: reading, windowing, teacher forward, writing Arrow chunks; forward: "
                      "the teacher's forward pass alone; overhead: end-to-end time / forward time",
                      sentences=tp.get("sentences_labeled_this_run"), words=tp.get("words_labeled_this_run"),
                      sentences_per_s=tp.get("label_sentences_per_s"),
                      runtime=", ".join(m.get("engines") or ["torch"]),  # the engine(s) `transfer.engine` ran
                      extra={"forward_sentences_per_s": tp.get("forward_sentences_per_s"),
                             "overhead": tp.get("overhead"), "processes": tp.get("processes", 1),
                             "batch_size": m.get("config", {}).get("batch_size"), "layers": m.get("layers"),
                             "peak_rss_mb": tp.get("peak_rss_mb"), "memory_scope": per[0].get("memory_scope"),
                             "source": "transfer/manifest.json"})


def distillation(run: RunDir, students: list[tuple[int, str, Path]]) -> list[PhaseLog]:
    """One `PhaseLog` per unfreezing phase from ``distill/metrics.json``, paired with its stage's student."""
    stage_log = _read_json(run.distill_log) or {}
    return phase_logs(stage_log.get("stages", []), [(i, name, p.name) for i, name, p in students])


def memory(lab: Throughput | None, phases: Sequence[PhaseLog]) -> dict:
    """Peak resident memory of labeling and of training, as `xdistil.memory.PeakMemory` recorded it."""
    measured = [s for s in phases if s.peak_rss_mb is not None]
    per_stage: dict[str, float] = {}
    for s in measured:
        per_stage[s.student or s.stage] = max(per_stage.get(s.student or s.stage, 0.0), s.peak_rss_mb)
    lab_mb = lab.extra.get("peak_rss_mb") if lab else None
    return {"labeling": {"peak_rss_mb": lab_mb, "scope": lab.extra.get("memory_scope") if lab else None,
                         **({} if lab_mb else {"note": NOT_RECORDED})},
            "training": {"peak_rss_mb": max(per_stage.values(), default=None),
                         "scope": measured[0].memory_scope if measured else None, "per_stage": per_stage,
                         **({} if measured else {"note": NOT_RECORDED})},
            "what": "peak resident set size (MB); scope 'step': the high-water mark reset when the work "
                    "started, so it excludes what ran before in the same process; 'process': the "
                    "process-wide peak"}


# ---- latency ----------------------------------------------------------------------------
def _sentences(cfg: RunConfig, rows: int) -> list[list[str]]:
    """The first ``rows`` dev sentences, languages interleaved, so every batch mixes them."""
    from xdistil.evaluate import dev_sets

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


def _time_model(name: str, role: str, kind: str, tagger, onnx: dict[str, Path], cells: Sequence[tuple[str, str]],
                batches: Sequence[int], inputs, seq: int, threads: int, timing: dict, bar) -> list[LatencyCell]:
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
            out.append(LatencyCell(name, role, runtime, precision, b, seq, kind=kind, **time_cell(call, **timing)))
            bar.update()
        del session  # its thread pool goes before the next runtime's starts
    return out


def latency(run: RunDir, sentences: list[list[str]], teacher: Path, final: Path, batches: Sequence[int], seq: int,
            threads: int, timing: dict, int8: bool, int8_min_agreement: float, teacher_ort: bool,
            progress: bool) -> tuple[list[LatencyCell], list[dict], dict, dict]:
    """Time the teacher and the final student side by side: (cells, models, settings, export sizes)."""
    import torch
    from tqdm.auto import tqdm

    from xdistil.taggers import load_tagger

    exports = run.bench_exports
    subjects = [("teacher", "teacher", teacher, [("torch", "fp32")] + ([("ort", "fp32")] if teacher_ort else [])),
                (final.name, "student", final,
                 [("torch", "fp32"), ("ort", "fp32")] + ([("ort", "int8")] if int8 else []))]
    started, cells, models, sizes = time.perf_counter(), [], [], {}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    bar = tqdm(total=sum(len(c) for *_, c in subjects) * len(batches), desc="bench latency", unit="cell",
               disable=not progress)
    try:
        for name, role, path, todo in subjects:
            onnx, info = {}, {}
            if any(rt == "ort" for rt, _ in todo):
                manifest, reused = export(path, exports / name, any(p == "int8" for _, p in todo),
                                          int8_min_agreement)
                onnx = onnx_files(exports / name, manifest["files"])
                sizes[name] = {p: file_mb(f) for p, f in onnx.items()}
                info = {"export": str(exports / name), "export_reused": reused, "onnx_mb": sizes[name]}
                if manifest.get("int8"):
                    info["int8_tag_agreement"] = manifest["int8"]["parity"]["min_agreement"]
            tagger = load_tagger(path)
            inputs = _inputs(tagger, sentences, max(batches), seq)
            models.append({"name": name, "role": role, "kind": tagger.kind, "params": tagger.param_count(),
                           "cells": [list(c) for c in todo],
                           "mean_real_pieces": round(float(inputs[1].sum()) / max(batches), 2), **info})
            cells += _time_model(name, role, tagger.kind, tagger, onnx, todo, batches, inputs, seq, threads, timing,
                                 bar)
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
    return cells, models, settings, sizes


def export(model_dir: Path, dest: Path, int8: bool, int8_min_agreement: float) -> tuple[dict, bool]:
    """`ensure_export` with a one-line error when the int8 model fails its agreement check."""
    from xdistil.deployable import ExportParityError

    try:
        return ensure_export(model_dir, dest, int8, {"int8_min_agreement": int8_min_agreement})
    except ExportParityError as e:
        raise RuntimeError(f"{e}\nexport of {model_dir} failed its check: rerun with --no-int8, or accept "
                           f"the int8 model with a lower --int8-min-agreement") from None


def end_to_end(sentences: list[list[str]], teacher: Path, export_dir: Path, student: str, precisions: Sequence[str],
               threads: int, batch_size: int = 32) -> list[Throughput]:
    """Words/s tagging raw dev text: the runtime's `Predictor` on the student's exports, and the
    teacher through the Hugging Face token-classification pipeline, on the same texts.

    Each is warmed up on a few texts, then timed once over all of them."""
    import torch
    from transformers import pipeline
    from xdistil_export.runtime import Predictor

    texts = [" ".join(words) for words in sentences]
    words = sum(len(w) for w in sentences)

    def measure(name: str, runtime: str, what: str, call: Callable[[list[str]], object]) -> Throughput:
        call(texts[:batch_size])
        t0 = time.perf_counter()
        call(texts)
        dt = time.perf_counter() - t0
        return Throughput(name, what, len(texts), words, dt, round(len(texts) / dt, 1),
                          round(words / dt, 1), runtime, {"batch_size": batch_size, "threads": threads})

    out = []
    for precision in precisions:
        pred = Predictor(export_dir, precision=precision, threads=threads)
        out.append(measure(student, f"onnx-{precision}", "xdistil_export.runtime.Predictor.predict on raw text: "
                           "tokenisation, windows, ONNX Runtime, decoding",
                           partial(pred.predict, batch_size=batch_size)))
        del pred
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        pipe = pipeline("token-classification", model=str(teacher), aggregation_strategy="simple", device="cpu")
        out.append(measure("teacher", "torch", "transformers pipeline('token-classification', "
                           "aggregation_strategy='simple') on the same raw text",
                           partial(pipe, batch_size=batch_size)))
    finally:
        torch.set_num_threads(before)
    return out


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
    text_rows: int | None = None,
    command: str | None = None,
    progress: bool = True,
) -> Bench:
    """Run the suite on ``run_dir`` and write ``run_dir/bench.json`` atomically; returns its record.

    ``repeats``: timed calls per latency cell at least (default 5, 2 with ``quick``).
    ``threads``: PyTorch and ONNX Runtime intra-op threads (default: every usable core).
    ``quick``: one warm-up call and 2-3 timed calls per cell, for smoke tests.
    ``int8_min_agreement``: the int8 export must agree with PyTorch on this share of tags.
    ``text_rows``: dev sentences tagged end to end (default `TEXT_ROWS`, 32 with ``quick``).
    """
    run = RunDir(run_dir)
    cfg, record = load_run(run)
    students = student_dirs(run)
    if not students:
        raise FileNotFoundError(f"{run.distill} has no students; run 'xdistil run' to the distill step first")
    batches = sorted({int(b) for b in batch_sizes})
    if not batches or batches[0] < 1 or seq < 8:
        raise ValueError(f"batch sizes must be >= 1 and seq >= 8 (got {batch_sizes}, {seq})")
    timing = dict(QUICK if quick else TIMING)
    if repeats is not None:
        if repeats < 1:
            raise ValueError("--repeats must be >= 1")
        timing["min_repeats"], timing["max_repeats"] = repeats, max(repeats, timing["max_repeats"])
    threads = int(threads or usable_cpus())
    prov = Provenance(**provenance(command, threads), measured_by="xdistil bench")

    manifest = _read_json(run.transfer_manifest)
    qual = quality(run, cfg, record, students, progress)
    phases = distillation(run, students)
    lab = labeling(manifest)
    teacher, final = teacher_dir(run, record), students[-1][2]
    rows = text_rows if text_rows is not None else 32 if quick else TEXT_ROWS
    sentences = _sentences(cfg, max(max(batches), rows))
    cells, models, settings, exports = latency(run, sentences, teacher, final, batches, seq, threads, timing, int8,
                                               int8_min_agreement, teacher_ort, progress)
    e2e = end_to_end(sentences[:rows], teacher, run.bench_exports / final.name, final.name,
                     ["int8", "fp32"] if int8 else ["fp32"], threads)
    bench = Bench(run_dir=str(run.root.resolve()), created=datetime.now(UTC).isoformat(timespec="seconds"),
                  provenance=prov, quality=qual, cells=cells,
                  speedups=speedups(cells, ["teacher"]), latency_settings=settings, latency_models=models,
                  exports=exports, phases=phases, labeling=lab, end_to_end=e2e, memory=memory(lab, phases),
                  sections={"quality": _run_provenance(record, "evaluate"),
                            "labeling": _run_provenance(record, "label", (manifest or {}).get("versions")),
                            "distillation": _run_provenance(record, "distill"), "latency": prov})
    bench.write(run.bench)
    # what these figures were measured on, beside them (a rerun after any step changed
    # shows a different digest; `xdistil.digests.diff` names what)
    options = {"batch_sizes": batches, "seq": seq, "timing": timing, "threads": threads, "int8": int8,
               "teacher_ort": teacher_ort, "text_rows": rows}
    write_json(run.bench_fingerprint, fingerprints.bench(teacher, [d for *_, d in students], run.transfer, options))
    return bench


def format_summary(bench: Bench) -> str:
    """A few lines for the terminal: the final student's quality, size and speed."""
    q = bench.quality
    teacher, final = q.teacher, q.final
    kept = final.retained(teacher)
    lines = [f"final student {final.name}: dev F1 {final.f1_avg:.2f}"
             + (f" = {kept:.1f}% of" if kept is not None else " against") +
             f" the teacher's {teacher.f1_avg:.2f}, {teacher.params / final.params:.1f}x fewer parameters"]
    batches = bench.latency_settings["batch_sizes"]
    lines.append(f"{'median ms per call (seq ' + str(bench.latency_settings['seq']) + ')':<40}"
                 + "".join(f"{'batch ' + str(b):>12}" for b in batches))
    cell = {(*c.key, c.batch): c.median_ms for c in bench.cells}
    for key in dict.fromkeys(c.key for c in bench.cells):
        lines.append(f"{' '.join(key):<40}" + "".join(f"{cell[(*key, b)]:>12.2f}" if (*key, b) in cell
                                                      else f"{'-':>12}" for b in batches))
    best: dict[int, object] = {}
    for s in bench.speedups:
        if s.batch not in best or s.speedup > best[s.batch].speedup:
            best[s.batch] = s
    if best:
        lines.append("fastest student vs teacher PyTorch: " + ", ".join(
            f"{s.speedup:.1f}x at batch {b} ({s.runtime} {s.precision})" for b, s in sorted(best.items())))
    if bench.end_to_end:
        lines.append("end to end on raw dev text: " + ", ".join(
            f"{t.name} {t.runtime} {t.words_per_s:,.0f} words/s" for t in bench.end_to_end))
    return "\n".join(lines)

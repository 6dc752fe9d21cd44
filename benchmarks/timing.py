"""What the timing benchmarks (runtime, throughput, latency, serve, decoding, labeling) share,
written once: interleaved rounds, per-call latency, onnxruntime sessions, the spaCy peer,
the words they read, their settings files and how they write results.

**Interleaved rounds** (`interleave`): every round calls each cell once, the order rotating
by one cell from round to round. On a shared machine a slow spell then costs every cell one
pass instead of one cell all of its passes, and no cell always runs first or after the same
neighbour. Each benchmark says which figure of its rounds it reports (the best, the median).
"""

from __future__ import annotations

import gzip
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("XDISTIL_DATA", REPO.parent / "shared" / "data"))
CONFIGS = REPO / "benchmarks" / "configs"
SPACY_PIPES = ["tok2vec", "ner"]  # the spaCy peer runs only what tagging entities needs

K = TypeVar("K")
R = TypeVar("R")


def settings(name: str) -> dict:
    """``benchmarks/configs/timing-NAME.yaml``: a benchmark's grids and settings, as data."""
    import yaml

    return yaml.safe_load((CONFIGS / f"timing-{name}.yaml").read_text(encoding="utf-8"))


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---- timing ---------------------------------------------------------------------------------


def timed(fn: Callable[..., R], *args, **kwargs) -> tuple[float, R]:
    """(seconds, result) of one call of ``fn``."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Best of ``repeats`` timed calls after one untimed one (seconds)."""
    fn()
    return min(timed(fn)[0] for _ in range(repeats))


def interleave(cells: Mapping[K, Callable[[], R]], rounds: int, warmup: int = 0, first: int = 0,
               upto: Callable[[K], int | None] | None = None) -> dict[K, list[R]]:
    """What each cell's call returned in each of ``rounds`` rounds, after ``warmup`` untimed
    rounds (module doc). Round ``r`` starts at cell ``first + r``; ``upto(cell)``: at most
    that many rounds of that cell (None: every round)."""
    keys = list(cells)
    out: dict[K, list[R]] = {k: [] for k in keys}
    for r in range(warmup + rounds):
        i = (first + r) % len(keys)
        for k in keys[i:] + keys[:i]:
            limit = upto(k) if upto else None
            if limit is not None and r >= warmup + limit:
                continue
            value = cells[k]()
            if r >= warmup:
                out[k].append(value)
    return out


def call_ms(fn: Callable[[], object], calls: int, setup: Callable[[], object] | None = None) -> list[float]:
    """Milliseconds of each of ``calls`` calls of ``fn``, ``setup`` (untimed) before each."""
    out = []
    for _ in range(calls):
        if setup is not None:
            setup()
        out.append(1e3 * timed(fn)[0])
    return out


def quantiles(ms: Sequence[float], digits: int | None = None) -> dict[str, float]:
    """p50 / p95 of per-call milliseconds (rounded to ``digits`` when given)."""
    import numpy as np

    q = {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}
    return q if digits is None else {k: round(v, digits) for k, v in q.items()}


def ort_session(path: Path, threads: int = 2, config: Mapping[str, str] | None = None, **options):
    """An onnxruntime CPU session with ``threads`` intra-op threads and one inter-op thread
    (onnxruntime's defaults otherwise, as the runtime's `Predictor`). ``options``: other
    ``SessionOptions`` attributes, enum values by name (``execution_mode: ORT_PARALLEL``);
    ``config``: session config entries."""
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads = threads, 1
    for name, value in options.items():
        if isinstance(value, str) and value.startswith("ORT_"):
            value = next(getattr(e, value) for e in (ort.ExecutionMode, ort.GraphOptimizationLevel)
                         if hasattr(e, value))
        setattr(o, name, value)
    for key, value in (config or {}).items():
        o.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


# ---- inputs and peers -----------------------------------------------------------------------


def read_words(path: Path, limit: int) -> list[list[str]]:
    """The first ``limit`` sentences of a CoNLL file (gzip), as word lists."""
    from xdistil_export.text import iter_conll_words

    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for words in iter_conll_words(f):
            if len(out) >= limit:
                break
            out.append(words)
    return out


def spacy_peer(models: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """spaCy's pipelines ``models`` with only `SPACY_PIPES` enabled: ({name: nlp} of those
    installed, {name: why not} of the others). ImportError when spaCy itself is not installed."""
    import spacy

    loaded, missing = {}, {}
    for model in models:
        try:
            loaded[model] = spacy.load(model, enable=SPACY_PIPES)
        except OSError as e:  # not installed (not every model is on every package index)
            missing[model] = str(e).splitlines()[0]
    return loaded, missing


def spacy_calls(nlp, words: list[list[str]], n_process: int = 1) -> dict[str, Callable[[], list]]:
    """``nlp.pipe`` over the word lists (as pre-built ``Doc`` objects: spaCy's tokenizer skipped)
    and over the same words joined by spaces (raw text), by input kind."""
    from spacy.tokens import Doc

    texts = [" ".join(w) for w in words]
    return {"words": lambda: list(nlp.pipe((Doc(nlp.vocab, words=w) for w in words), n_process=n_process)),
            "text": lambda: list(nlp.pipe(texts, n_process=n_process))}


# ---- results --------------------------------------------------------------------------------


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def merge_json(path: Path, updates: Mapping[str, Any]) -> dict:
    """``path`` (a summary.json other benchmarks write too) with the keys of ``updates``
    replaced and every other key kept."""
    from xdistil_export.atomic import write_json

    summary = read_json(path) if path.is_file() else {}
    summary.update(updates)
    write_json(path, summary)
    return summary


def show(out: str | Path | None, stem: str, result: dict, md: str) -> None:
    """Print ``md``; write ``STEM.json`` and ``STEM.md`` into ``out`` when given."""
    from xdistil_export.atomic import write_json, write_text

    print(md)
    if out is not None:
        write_json(Path(out) / f"{stem}.json", result)
        write_text(Path(out) / f"{stem}.md", md)

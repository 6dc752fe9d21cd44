"""Label the transfer set once with one or more teachers; cache it on disk in chunks.

For every word (its first sub-word) and every teacher k the chunk stores the hard tag
(``t{k}_tags``), the logits (``t{k}_logits``, flattened n_words x C) and the hidden
states of the chosen layers (``t{k}_h{L}``, flattened n_words x H). Chunks are HF
``datasets`` (Arrow) directories written atomically; a rerun skips the chunks that are
done, so an interrupted run loses at most one chunk. Memory is bounded by one chunk.

    transfer/
      chunks/<lang>-00000/ ...   one Arrow dataset per chunk
      manifest.json              written last: teachers, layers, counts, versions, speed
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xdistil.config import RunConfig, save_json, to_dict
from xdistil.data.transfer import TransferRow, iter_transfer

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


class TimedModule(nn.Module):
    """Wraps a module and accumulates the wall time of its forward passes."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.seconds = inner, 0.0

    def forward(self, *args, **kwargs):
        t = time.perf_counter()
        out = self.inner(*args, **kwargs)
        self.seconds += time.perf_counter() - t
        return out


def versions() -> dict:
    import datasets
    import transformers

    import xdistil

    return {"xdistil": xdistil.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "datasets": datasets.__version__, "python": platform.python_version()}


def _chunk_rows(rows, size):
    buf: list[TransferRow] = []
    for r in rows:
        buf.append(r)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


def label_chunk(teachers, rows: list[TransferRow], labels: list[str], layers: list[int], batch_size: int,
                hidden_dtype: str) -> dict:
    from xdistil.taggers import word_logits

    label_id = {lab: i for i, lab in enumerate(labels)}
    cols: dict[str, list] = {
        "words": [r.words for r in rows],
        "lang": [r.lang for r in rows],
        "split": [r.split for r in rows],
        "source": [r.source for r in rows],
        "gold": [[label_id[t] for t in r.gold] if r.gold else [] for r in rows],
    }
    hdt = np.float16 if hidden_dtype == "float16" else np.float32
    for k, t in enumerate(teachers):
        logits, hidden = word_logits(t, [r.words for r in rows], batch_size, hidden_layers=tuple(layers))
        cols[f"t{k}_tags"] = [lg.argmax(-1).tolist() for lg in logits]
        cols[f"t{k}_logits"] = [lg.numpy().astype(np.float32).reshape(-1) for lg in logits]
        for layer in layers:
            cols[f"t{k}_h{layer}"] = [h.numpy().astype(hdt).reshape(-1) for h in hidden[layer]]
    return cols


def label_transfer(cfg: RunConfig, teacher_dirs: list[str | Path], out_dir: str | Path,
                   progress: bool = True) -> Path:
    """Label every language's transfer set with the teachers; resumable and chunked."""
    import datasets
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from xdistil.taggers import load_tagger

    out = Path(out_dir)
    if (out / MANIFEST).exists():
        log.info("transfer set already labeled: %s", out)
        return out
    datasets.disable_progress_bars()  # one bar of ours instead of one per chunk
    state = PartialState()
    tc = cfg.transfer
    teachers = [load_tagger(d) for d in teacher_dirs]
    for d, t in zip(teacher_dirs, teachers, strict=True):
        if t.labels != cfg.data.labels:
            raise ValueError(f"teacher {d} predicts {t.labels}, the config's labels are {cfg.data.labels}")
        n_layers = getattr(getattr(t.module, "model", None), "config", None)
        n_layers = getattr(n_layers, "num_hidden_layers", None)
        if n_layers is not None and any(not 0 <= layer <= n_layers for layer in tc.layers):
            raise ValueError(f"transfer.layers {tc.layers}: teacher {d} has layers 0..{n_layers}")
        t.module = TimedModule(t.module)
    chunks_dir = out / "chunks"
    chunks_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    words_total, sents_labeled, wall = 0, 0, 0.0
    bar = tqdm(desc="label", unit="sent", disable=not (progress and state.is_main_process))
    for lang in cfg.data.languages:
        counts[lang] = {}
        for i, rows in enumerate(_chunk_rows(iter_transfer(cfg, lang), tc.chunk_size)):
            for r in rows:
                counts[lang][r.split] = counts[lang].get(r.split, 0) + 1
            name = f"{lang}-{i:05d}"
            if (chunks_dir / name).exists() or i % state.num_processes != state.process_index:
                bar.update(len(rows))
                continue
            t0 = time.perf_counter()
            with torch.no_grad():
                cols = label_chunk(teachers, rows, cfg.data.labels, tc.layers, tc.batch_size, tc.hidden_dtype)
            tmp = chunks_dir / (name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            datasets.Dataset.from_dict(cols).save_to_disk(str(tmp))
            tmp.replace(chunks_dir / name)
            wall += time.perf_counter() - t0
            sents_labeled += len(rows)
            words_total += sum(len(r.words) for r in rows)
            bar.update(len(rows))
            bar.set_postfix(sent_s=f"{sents_labeled / max(wall, 1e-9):.0f}")
    bar.close()
    state.wait_for_everyone()
    forward_s = sum(t.module.seconds for t in teachers)
    if state.is_main_process:
        manifest = {
            "teachers": [{"path": str(d), "labels": t.labels, "max_length": t.max_length,
                          "params": t.param_count()} for d, t in zip(teacher_dirs, teachers, strict=True)],
            "labels": cfg.data.labels,
            "layers": tc.layers,
            "hidden_sizes": [_hidden_size(t) for t in teachers],
            "counts": counts,
            "chunks": sorted(p.name for p in chunks_dir.iterdir() if not p.name.endswith(".tmp")),
            "hidden_dtype": tc.hidden_dtype,
            "throughput": {
                "sentences_labeled_this_run": sents_labeled,
                "words_labeled_this_run": words_total,
                "label_sentences_per_s": round(sents_labeled / wall, 1) if wall else None,
                "forward_sentences_per_s": round(sents_labeled / forward_s, 1) if forward_s else None,
                "overhead": round(wall / forward_s, 3) if forward_s else None,
            },
            "config": to_dict(cfg.transfer),
            "versions": versions(),
        }
        save_json(manifest, out / MANIFEST)
        tp = manifest["throughput"]
        if sents_labeled:
            print(f"labeled {sents_labeled} sentences: {tp['label_sentences_per_s']} sent/s end-to-end, "
                  f"teacher forward alone {tp['forward_sentences_per_s']} sent/s (x{tp['overhead']} overhead)")
    return out


def _hidden_size(tagger) -> int | None:
    cfg = getattr(getattr(tagger.module, "inner", tagger.module), "model", None)
    return getattr(getattr(cfg, "config", None), "hidden_size", None)


def load_transfer(path: str | Path, splits: tuple[str, ...] | None = None, langs: list[str] | None = None):
    """The labeled transfer set as one memory-mapped ``datasets.Dataset`` (+ its manifest)."""
    import datasets

    path = Path(path)
    manifest = json.loads((path / MANIFEST).read_text())
    parts = [datasets.load_from_disk(str(path / "chunks" / c)) for c in manifest["chunks"]
             if langs is None or c.rsplit("-", 1)[0] in langs]
    ds = datasets.concatenate_datasets(parts)
    if splits is not None:
        keep = [i for i, s in enumerate(ds["split"]) if s in splits]
        ds = ds.select(keep)
    return ds, manifest

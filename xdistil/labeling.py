"""Label the transfer set once with one or more teachers; cache it on disk in chunks.

For every word (its first sub-word) and every teacher k the chunk stores the hard tag
(``t{k}_tags``), the logits (``t{k}_logits``, flattened n_words x C) and the hidden
states of the chosen layers (``t{k}_h{L}``, flattened n_words x H). Chunks are HF
``datasets`` (Arrow) directories written atomically; a rerun skips the chunks that are
done, so an interrupted run loses at most one chunk. Memory is bounded by one chunk.

Every chunk carries what it was labeled from and a checksum of each of its files
(``xdistil_chunk.json``, copied into the manifest). A rerun keeps a chunk only when it was
labeled from the same inputs (`xdistil.run.fingerprints.label`: teachers, transfer config, data files)
and its bytes are intact; any other chunk is labeled again, so teachers are never mixed
and a damaged chunk is repaired. Opening the set (`load_transfer`) verifies every chunk
and names a broken one in one line.

Under ``accelerate launch`` every process reads the same rows and labels every N-th chunk
(chunk g, counted over all languages, goes to process g % N) on its own device; the main
process lists the chunks of all processes into the manifest after a barrier. Readers
memory-map the chunks (`load_transfer`), so a transfer set never has to fit in memory.

    transfer/
      chunks/<lang>-00000/ ...   one Arrow dataset per chunk
      chunks/<lang>-00000/xdistil_chunk.json   its fingerprint digest, engines and file checksums
      chunks/<lang>-aug-00000/ ...  entity-augmented variants (transfer.augment_entities > 1)
      xdistil_files.json         every chunk named before it is written (`xdistil_export.atomic`)
      manifest.json              written last: teachers, layers, counts, chunks + checksums,
                                 fingerprint digest, engines, versions, speed

With ``transfer.augment_entities`` k > 1, once every language's rows are labeled (after a
barrier: every process reads the tags of every chunk) each language gets up to k - 1 variants
of each of its transfer rows (`xdistil.augment.augment_entities`: teacher 0's mentions and
words swapped, the words between mentions shuffled), labeled like any row into chunks
``<lang>-aug-00000`` ... after all the originals. Every chunk of such a set has an ``aug_of``
column (the original's `xdistil.augment.words_key` in hex; "" on an original row) and a
``borrowed_from`` column (the keys, sorted, of the other transfer rows of the language whose
mentions or words the variant took: for each value, the first row that held it; none for a
value a labeled row holds, always trained on; [] on an original row), which distillation
reads to keep out of training the variants of its held-out sentences and the variants that
took from them. The variants are a pure function of the labeled rows and
``transfer.augment_seed``: a rerun reuses them.

Each teacher runs on the engine ``transfer.engine`` resolves to (`xdistil.engines`: torch, or
the teacher exported to onnxruntime in fp32 or int8; ``auto`` measures which is fastest here
and still agrees with torch fp32), resolved once before the first chunk (by the main process,
for all of them); a chunk labeled by another engine is labeled again, so engines never mix.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from xdistil_export.atomic import atomic_dir, expect, unproven, write_json

from xdistil import digests as fpr
from xdistil import engines
from xdistil.augment import ENTITY_RATES, EntityBank, augment_entities, words_key
from xdistil.config import RunConfig, to_dict
from xdistil.data.transfer import (
    TransferRow,
    iter_transfer,
    transfer_languages,
)
from xdistil.fit import check_launch
from xdistil.memory import PeakMemory
from xdistil.models import OnDevice
from xdistil.precision import autocast, choice_record
from xdistil.provenance import versions
from xdistil.run import fingerprints
from xdistil.taggers import load_tagger, word_logits
from xdistil.tagsets import for_teachers

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
CHUNK_RECORD = "xdistil_chunk.json"
AUGMENTED = "-aug"
"""Chunks of entity-augmented rows are named ``<lang>-aug-00000``."""
ENTITY_AUG = "entity-aug"
"""What an entity-augmented row's ``source`` ends with (``<original source>+entity-aug``)."""
BORROWED_FROM = "borrowed_from"
"""The column of the keys of the other rows an entity-augmented row took mentions or words from."""


class TransferSetError(ValueError):
    """A transfer set on disk is incomplete or damaged (the message names the chunk)."""


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


def _checksums(folder: Path) -> dict[str, str]:
    return {f.name: fpr.file_digest(f) for f in sorted(folder.iterdir()) if f.is_file() and f.name != CHUNK_RECORD}


def _chunk_problem(folder: Path, files: dict[str, str] | None) -> str | None:
    """Why the chunk ``folder`` cannot be trusted (None: it matches its checksums)."""
    if not folder.is_dir():
        return "is missing"
    if not files:
        return "has no checksums"
    for name, digest in files.items():
        f = folder / name
        if not f.is_file():
            return f"lacks {name}"
        if fpr.file_digest(f) != digest:
            return f"{name} is damaged (checksum mismatch)"
    return None


def _chunk_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / CHUNK_RECORD).read_text())
    except (OSError, ValueError):
        return None


def _reusable(chunk: Path, digest: str, used: list[str]) -> bool:
    """A chunk on disk is kept only when labeled from the same inputs, by the same engines
    (``used``, one per teacher; a chunk from before engines: torch), and intact."""
    rec = _chunk_record(chunk)
    return (rec is not None and rec.get("fingerprint") == digest
            and (rec.get("engines") or ["torch"] * len(used)) == used
            and _chunk_problem(chunk, rec.get("files")) is None)


def _probe_sentences(cfg: RunConfig, n: int = engines.PROBE_SENTENCES) -> list[list[str]]:
    """The first transfer sentences of every language, in turn: what ``auto`` measures on."""
    langs = transfer_languages(cfg)
    per = -(-n // len(langs))
    return [r.words for lang in langs for r in itertools.islice(iter_transfer(cfg, lang), per)][:n]


def _rows_up_to(cfg: RunConfig, n: int) -> int:
    """How many rows the transfer set has before augmentation, counted up to ``n`` (reading stops there)."""
    rows = (r for lang in transfer_languages(cfg) for r in iter_transfer(cfg, lang))
    return sum(1 for _ in itertools.islice(rows, n))


def _resolve_engines(cfg: RunConfig, teachers, state, precision: str) -> list[dict]:
    """Each teacher's `engines.resolve` record, decided once by the main process (which
    exports the graphs into the cache) and given to every process."""
    tc = cfg.transfer
    if tc.engine == "torch":
        return [engines.resolve(t, "torch", tc.layers, [], tc.batch_size, precision) for t in teachers]
    if tc.engine == "auto" and (n := _rows_up_to(cfg, engines.AUTO_MIN_SENTENCES)) < engines.AUTO_MIN_SENTENCES:
        why = (f"{n} transfer sentences: labeling them in torch takes less than probing the engines "
               f"(auto probes from {engines.AUTO_MIN_SENTENCES})")
        return [{"asked": "auto", "resolved": "torch", "reason": why} for _ in teachers]
    records: list[dict] | str | None = None
    if state.is_main_process:
        try:
            sample = _probe_sentences(cfg)
            records = [engines.resolve(t, tc.engine, tc.layers, sample, tc.batch_size, precision, state.device)
                       for t in teachers]
        except engines.EngineError as e:
            if state.num_processes == 1:
                raise
            records = str(e)  # said to the others too, so that none waits for the main process forever
    if state.num_processes > 1:  # a collective: the others wait here until the graphs exist
        from accelerate.utils import broadcast_object_list

        records = broadcast_object_list([records])[0]
    if isinstance(records, str):
        raise engines.EngineError(records)
    return records


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
                hidden_dtype: str, precision: str = "fp32", device="cpu") -> dict:
    """The chunk's columns. ``precision`` (resolved, `xdistil.precision`): the teachers' forward
    pass runs under its autocast on ``device``; what is stored keeps its dtypes (fp32 logits,
    ``hidden_dtype`` hidden states)."""
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
        with autocast(precision, device):
            logits, hidden = word_logits(t, [r.words for r in rows], batch_size, hidden_layers=tuple(layers))
        cols[f"t{k}_tags"] = [lg.argmax(-1).tolist() for lg in logits]
        cols[f"t{k}_logits"] = [lg.numpy().astype(np.float32).reshape(-1) for lg in logits]
        for layer in layers:
            cols[f"t{k}_h{layer}"] = [h.numpy().astype(hdt).reshape(-1) for h in hidden[layer]]
    return cols


def _counted(rows: Iterable[TransferRow], counts: dict[str, int],
             kind: Callable[[TransferRow], str] = lambda r: r.split) -> Iterator[TransferRow]:
    """The rows, each counted in ``counts`` under its ``kind`` (default: its split) as it passes."""
    for r in rows:
        counts[kind(r)] = counts.get(kind(r), 0) + 1
        yield r


@dataclass
class _ChunkWriter:
    """Labels streams of rows into chunks ``<prefix>-00000`` ... under ``out/chunks``: this
    process's share (chunk g, counted over every stream, goes to process g % N), except the
    chunks on disk labeled from the same inputs (`_reusable`); tallies what it labeled."""

    out: Path
    cfg: RunConfig
    teachers: list
    used: list[str]  # the engine of each teacher
    digest: str  # the set's fingerprint digest
    precision: str
    state: Any  # accelerate's PartialState
    bar: Any
    mark_augmented: bool = False  # every chunk gets ``aug_of`` and ``borrowed_from`` (transfer.augment_entities > 1)
    names: list[str] = field(default_factory=list)  # every chunk of the set, in order (whoever labels it)
    g: int = -1
    sentences: int = 0
    words: int = 0
    wall: float = 0.0

    def write(self, prefix: str, rows: Iterable[TransferRow]) -> list[str]:
        """Label ``rows`` into chunks named ``prefix``-i; their names."""
        import datasets

        tc, chunks_dir, mine = self.cfg.transfer, self.out / "chunks", []
        for i, chunk in enumerate(_chunk_rows(rows, tc.chunk_size)):
            self.g += 1
            name = f"{prefix}-{i:05d}"
            mine.append(name)
            if (self.g % self.state.num_processes != self.state.process_index
                    or _reusable(chunks_dir / name, self.digest, self.used)):
                self.bar.update(len(chunk))
                continue
            t0 = time.perf_counter()
            with torch.no_grad():
                cols = label_chunk(self.teachers, chunk, self.cfg.data.labels, tc.layers, tc.batch_size,
                                   tc.hidden_dtype, self.precision, self.state.device)
            if self.mark_augmented:
                cols["aug_of"] = [r.aug_of or "" for r in chunk]
                cols[BORROWED_FROM] = [r.borrowed_from or [] for r in chunk]
            expect(self.out, [f"chunks/{name}"])  # named in the set's record before it is written
            with atomic_dir(chunks_dir / name) as tmp:  # a killed run leaves no half chunk
                datasets.Dataset.from_dict(cols).save_to_disk(str(tmp))
                write_json(tmp / CHUNK_RECORD, {"fingerprint": self.digest, "rows": len(chunk), "engines": self.used,
                                                "files": _checksums(tmp)})
            self.wall += time.perf_counter() - t0
            self.sentences += len(chunk)
            self.words += sum(len(r.words) for r in chunk)
            self.bar.update(len(chunk))
            self.bar.set_postfix(sent_s=f"{self.sentences / max(self.wall, 1e-9):.0f}")
        self.names += mine
        return mine


def entity_rows(cfg: RunConfig, lang: str, chunks: list[Path]) -> Iterator[TransferRow]:
    """The entity-augmented rows of ``lang`` (``transfer.augment_entities`` = k), read from its
    labeled ``chunks``: the bank of teacher 0's mentions and words over the rows a student
    trains on (labeled and transfer; never the gold selection slice, "val"), then up to k - 1
    variants of each transfer row, none equal to any sentence of the language, marked
    ``<source>+entity-aug`` with ``aug_of`` the original's key and ``borrowed_from`` the keys
    of the other transfer rows whose mentions or words it took (each value's first row; a
    value of a labeled row, which every student trains on, names none)."""
    import datasets

    labels = cfg.data.labels

    def tagged() -> Iterator[tuple[list[str], str, str, list[str]]]:
        for c in chunks:  # in Arrow batches: memory holds the bank, never the rows
            ds = datasets.load_from_disk(str(c)).select_columns(["words", "split", "source", "t0_tags"])
            for b in ds.iter(batch_size=1000):
                for words, split, source, tags in zip(b["words"], b["split"], b["source"], b["t0_tags"], strict=True):
                    yield words, split, source, [labels[t] for t in tags]

    bank, seen = EntityBank(), set()
    for words, split, _, tags in tagged():
        key = words_key(words)
        seen.add(key)
        if split != "val":  # a transfer row may be held out of training: its values keep its key
            bank.add(words, tags, key if split == "transfer" else None)
    originals = (((words, source), words, tags) for words, split, source, tags in tagged() if split == "transfer")
    tc = cfg.transfer
    for (words, source), variant, took in augment_entities(originals, bank, tc.augment_entities, tc.augment_seed,
                                                           lang, seen):
        own = words_key(words)
        yield TransferRow(variant, lang, "transfer", None, f"{source}+{ENTITY_AUG}", aug_of=own.hex(),
                          borrowed_from=sorted(k.hex() for k in took - {own}))


def chunk_language(name: str) -> str:
    """The language of a chunk: ``de-00003`` and ``de-aug-00000`` are both ``de``'s."""
    return name.rsplit("-", 1)[0].removesuffix(AUGMENTED)


def label_transfer(cfg: RunConfig, teacher_dirs: list[str | Path], out_dir: str | Path,
                   progress: bool = True, fingerprint: dict | None = None) -> Path:
    """Label every language's transfer set with the teachers; resumable and chunked.

    ``fingerprint``: what the set is built from (default `xdistil.run.fingerprints.label`). A finished
    set from the same inputs is returned as it is; chunks labeled from other inputs, or
    damaged, are labeled again."""
    import datasets
    from accelerate import PartialState
    from accelerate.utils import gather_object, parse_flag_from_env
    from tqdm.auto import tqdm


    out = Path(out_dir)
    # Accelerator() reads ACCELERATE_USE_CPU itself; PartialState needs it said (gloo on CPU)
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    check_launch(state.num_processes)
    cfg = for_teachers(cfg, teacher_dirs)  # the labels the teachers predict (data.labels may be unset)
    fp = fingerprint or fingerprints.label(cfg, teacher_dirs)
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        if json.loads(manifest_path.read_text()).get("fingerprint") == fp["digest"]:
            if (problem := verify_transfer(out)) is None:
                log.info("transfer set already labeled: %s", out)
                return out
            if state.is_main_process:
                log.warning("%s; relabeling it", problem)
        state.wait_for_everyone()  # every process has read the old manifest
        if state.is_main_process:  # from other inputs, or damaged: it no longer describes the chunks
            manifest_path.unlink()
    datasets.disable_progress_bars()  # one bar of ours instead of one per chunk
    tc = cfg.transfer
    teachers = [load_tagger(d) for d in teacher_dirs]
    for d, t in zip(teacher_dirs, teachers, strict=True):
        if t.labels != cfg.data.labels:
            raise ValueError(f"teacher {d} predicts {t.labels}, the config's labels are {cfg.data.labels}")
        n_layers = getattr(getattr(t.module, "model", None), "config", None)
        n_layers = getattr(n_layers, "num_hidden_layers", None)
        if n_layers is not None and any(not 0 <= layer <= n_layers for layer in tc.layers):
            raise ValueError(f"transfer.layers {tc.layers}: teacher {d} has layers 0..{n_layers}")
    facts = [{"params": t.param_count(), "hidden_size": _hidden_size(t)} for t in teachers]  # before any engine
    choice = choice_record(cfg.precision, state.device)  # resolved once; ``auto`` says what it measured
    precision = choice["resolved"]
    engine_choice = _resolve_engines(cfg, teachers, state, precision)
    used = [c["resolved"] for c in engine_choice]
    for t, engine in zip(teachers, used, strict=True):
        if engine == "torch":
            t.module = TimedModule(OnDevice(t.module.to(state.device), state.device, tuple(tc.layers)))
        else:  # the torch module is let go: the graph holds the weights
            t.module = TimedModule(engines.module(t, engine, tc.layers))
    chunks_dir = out / "chunks"
    chunks_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    bar = tqdm(desc="label", unit="sent", disable=not (progress and state.is_main_process))
    writer = _ChunkWriter(out, cfg, teachers, used, fp["digest"], precision, state, bar,
                          mark_augmented=tc.augment_entities > 1)
    mem = PeakMemory().start()  # peak memory of the labeling itself, not of loading the teachers
    originals: dict[str, list[str]] = {}
    for lang in transfer_languages(cfg):
        counts[lang] = {}
        originals[lang] = writer.write(lang, _counted(iter_transfer(cfg, lang), counts[lang]))
    if tc.augment_entities > 1:
        state.wait_for_everyone()  # every original chunk is on disk: the variants read their tags
        for lang in transfer_languages(cfg):
            counts[lang]["augmented"] = 0
            rows = entity_rows(cfg, lang, [chunks_dir / n for n in originals[lang]])
            writer.write(lang + AUGMENTED, _counted(rows, counts[lang], lambda r: "augmented"))
    names, sents_labeled, words_total, wall = writer.names, writer.sentences, writer.words, writer.wall
    bar.close()
    mem.stop()
    forward_s = sum(t.module.seconds for t in teachers)
    # every process's own figures, gathered (a collective: all processes get here)
    per_process = gather_object([{"sentences": sents_labeled, "words": words_total, "wall_s": wall,
                                  "forward_s": forward_s, "peak_rss_mb": mem.peak_mb, "memory_scope": mem.scope}])
    state.wait_for_everyone()  # every chunk is on disk
    if state.is_main_process:
        # chunks not of this set (of an earlier, longer set) and temp folders of a killed run
        # go, so the folder holds what the manifest lists; what no record names stays
        for p in chunks_dir.iterdir():
            if p.name not in names and not unproven(p, within=out):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        manifest = _manifest(cfg, teacher_dirs, teachers, facts, counts, names, chunks_dir, fp, precision,
                             per_process, state.num_processes, choice, engine_choice)
        write_json(out / MANIFEST, manifest)
        tp = manifest["throughput"]
        sents_all = tp["sentences_labeled_this_run"]
        if sents_all:
            print(f"labeled {sents_all} sentences ({', '.join(used)}): {tp['label_sentences_per_s']} sent/s end-to-end, "
                  f"teacher forward alone {tp['forward_sentences_per_s']} sent/s (x{tp['overhead']} overhead)"
                  + (f", {state.num_processes} processes" if state.num_processes > 1 else ""))
    state.wait_for_everyone()  # no process reads the transfer set before its manifest exists
    return out


def _manifest(cfg: RunConfig, teacher_dirs, teachers, facts: list[dict], counts: dict, names: list[str],
              chunks_dir: Path, fp: dict, precision: str, per_process: list[dict], processes: int,
              choice: dict | None = None, engine_choice: list[dict] | None = None) -> dict:
    """The transfer set's manifest: teachers, labels, layers, counts, chunks and their checksums,
    the engines that labeled it and the labeling throughput over every process. ``facts``: each
    teacher's params and hidden size, read before an engine took its module's place."""
    tc = cfg.transfer
    records = {n: _chunk_record(chunks_dir / n) or {} for n in names}
    sents_all = sum(p["sentences"] for p in per_process)
    # processes run side by side: the run took as long as its slowest process
    wall_max = max(p["wall_s"] for p in per_process)
    fwd_max = max(p["forward_s"] for p in per_process)
    wall_sum, fwd_sum = sum(p["wall_s"] for p in per_process), sum(p["forward_s"] for p in per_process)
    manifest = {
        "teachers": [{"path": str(d), "labels": t.labels, "max_length": t.max_length,
                      "params": f["params"]} for d, t, f in zip(teacher_dirs, teachers, facts, strict=True)],
        "labels": cfg.data.labels,
        "layers": tc.layers,
        "hidden_sizes": [f["hidden_size"] for f in facts],
        "counts": counts,
        "chunks": names,
        "checksums": {n: r.get("files") for n, r in records.items()},
        "fingerprint": fp["digest"],
        "hidden_dtype": tc.hidden_dtype,
        "precision": precision,  # the forward pass of the teachers torch runs (`xdistil.precision`)
        "precision_choice": choice,  # what ``auto`` measured, where it did
        "engines": [c["resolved"] for c in engine_choice or []],  # one per teacher (`xdistil.engines`)
        "engine_choice": engine_choice,  # what was asked, and what ``auto`` measured or an explicit one checked
        "throughput": {
            "processes": processes,
            "sentences_labeled_this_run": sents_all,
            "words_labeled_this_run": sum(p["words"] for p in per_process),
            "label_sentences_per_s": round(sents_all / wall_max, 1) if wall_max else None,
            "forward_sentences_per_s": round(sents_all / fwd_max, 1) if fwd_max else None,
            "overhead": round(wall_sum / fwd_sum, 3) if fwd_sum else None,
            "peak_rss_mb": max(p["peak_rss_mb"] for p in per_process),
            "per_process": [{**p, "wall_s": round(p["wall_s"], 3), "forward_s": round(p["forward_s"], 3)}
                            for p in per_process],
        },
        "config": to_dict(cfg.transfer),
        "versions": versions(),
    }
    if tc.augment_entities > 1:  # the rates are code, not config: said where the rows are
        manifest["entity_augmentation"] = {"k": tc.augment_entities, "seed": tc.augment_seed,
                                           "rates": asdict(ENTITY_RATES), "bank_teacher": 0}
    return manifest


def _hidden_size(tagger) -> int | None:
    cfg = getattr(tagger.module, "model", None)  # a Hugging Face teacher (`xdistil.taggers.HFTagger`)
    return getattr(getattr(cfg, "config", None), "hidden_size", None)


def verify_transfer(path: str | Path, langs: list[str] | None = None) -> str | None:
    """One line naming the first missing or damaged chunk of a finished set (None: all intact)."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        return f"{path / MANIFEST} is unreadable ({e.__class__.__name__})"
    sums = manifest.get("checksums")
    if sums is None:  # a set written before chunks carried checksums: nothing to check against
        log.warning("%s has no chunk checksums; its chunks are not verified", path)
        return None
    for c in manifest["chunks"]:
        if langs is None or chunk_language(c) in langs:
            if problem := _chunk_problem(path / "chunks" / c, sums.get(c)):
                return f"transfer chunk {path / 'chunks' / c} {problem}"
    return None


def load_transfer(path: str | Path, splits: tuple[str, ...] | None = None, langs: list[str] | None = None,
                  verify: bool = True):
    """The labeled transfer set as one memory-mapped ``datasets.Dataset`` (+ its manifest).

    ``verify``: check every chunk against the manifest's checksums first; a missing or
    damaged chunk raises `TransferSetError` naming it (rerun ``xdistil label`` to repair)."""
    import datasets

    path = Path(path)
    if not (path / MANIFEST).exists():
        raise TransferSetError(f"{path} is not a finished transfer set (no {MANIFEST}); run 'xdistil label' first")
    if verify and (problem := verify_transfer(path, langs)):
        raise TransferSetError(f"{problem}; rerun 'xdistil label' with the same arguments to relabel it")
    manifest = json.loads((path / MANIFEST).read_text())
    parts = []
    for c in manifest["chunks"]:
        if langs is None or chunk_language(c) in langs:
            try:
                parts.append(datasets.load_from_disk(str(path / "chunks" / c)))
            except (OSError, ValueError) as e:  # a set without checksums: still name the chunk
                raise TransferSetError(f"transfer chunk {path / 'chunks' / c} cannot be read "
                                       f"({e.__class__.__name__}); rerun 'xdistil label' to relabel it") from None
    ds = datasets.concatenate_datasets(parts)
    if splits is not None:
        _, rows = scan_transfer(ds)
        ds = ds.select(sorted(i for s in splits for i in rows.get(s, [])))
    return ds, manifest


def scan_transfer(ds, batch_size: int = 10_000) -> tuple[np.ndarray, dict[str, list[int]]]:
    """Words per row and the row numbers of every split, read from the memory-mapped set in
    Arrow batches: memory grows by a few integers a row, never by the rows themselves."""
    import pyarrow.compute as pc

    lengths, rows, start = [], {}, 0
    for t in ds.select_columns(["words", "split"]).with_format("arrow").iter(batch_size=batch_size):
        lengths.append(pc.list_value_length(t["words"]).to_numpy(zero_copy_only=False).astype(np.int64))
        split = t["split"].to_numpy(zero_copy_only=False)
        for name in np.unique(split):
            rows.setdefault(str(name), []).extend((np.flatnonzero(split == name) + start).tolist())
        start += t.num_rows
    return (np.concatenate(lengths) if lengths else np.zeros(0, np.int64)), rows

"""One grid runner for every benchmark that distils variants: groups x variants x seeds, as data.

A grid is a YAML file (``benchmarks/configs/``): the base run config, then the grid's own keys::

    groups:            # name -> one teacher each, and its tests (default: one group, "all")
      in:
        domain: in     # in | out: the domain of its tests (a test can say its own)
        control: true  # optional: reported, never steers a choice
        config: {...}  # overrides of the base for this group (languages, data, ...)
        tests:         # per language (default: dev); dev | test (the language's own split),
          lv: [dev, test, newsner/lv/extra.conll,   # a CoNLL file under the data root,
               {split: dev, start: 500, stop: 1000, name: test, domain: in}]   # or a slice of a split
    variants:          # name -> overrides of the group's config, plus the grid's own keys:
      shape: {student: {shape_dim: 16}}
      b256: {every_stage: {batch_size: 256}}   # changes to every distillation stage
      3x-steps: {transfer: {limit: 9000}, steps_of: 1x}   # every stage's epochs scaled so that the
                       # student takes as many optimizer steps as variant 1x (transfer rows / rows)
      big: {groups: {in: {student: {max_vocab: 9000}}}}    # overrides for one group only
      long: {steps_of: 3x, seeds: [13, 14]}   # a costly variant on fewer of the grid's seeds
      3x-wall: {transfer: {limit: 9000}, wall_of: 1x}   # every stage's epochs scaled so that labeling
                       # + distillation take variant 1x's CPU seconds (its own labeling measured first)
      cnn: {student: {arch: cnn}, about: "ID-CNN"}   # about: what it is, in words (for tables)
    seeds: [13, 14, 15]   # distill.seed of every variant (cells ``VARIANT-sSEED``); default: the config's
    default_variants: [...]; default_groups: [...]
    reuse: [runs/selection]   # other runs whose finished steps with the same fingerprints are linked in
    views: {NAME: {kind: VIEW, variants: [...], seeds: [...], group: in, results: DIR, page: NAME}}   # benchmarks.demo_grid's
    tag_map: {OTH: O}; test_limit: 300; ...   # how tests are read; other keys are the benchmark's own

Every cell (group, variant, seed) is one run folder ``RUN/GROUP/CELL`` built by the step
runner (`xdistil.runner`): the cells of a group share one teacher, and the cells with the same
transfer section one transfer set, linked from the first cell that built them (nothing is
trained or labeled twice). Scores are cached beside the models (``scores.json`` per group), and
``done.json`` records every finished cell, so a grid runs in pieces and resumes after an
interruption. The benchmark modules (`benchmarks.sentences`, `benchmarks.cross_domain`, ...)
keep only their tables, plots and targets.

A run folder does not outlive the session that made it, so a grid can also *carry* its finished
cells in a committed file (`Carry`: ``benchmarks/results/cells/GRID.json.gz`` for
`benchmarks.demo_grid`), by CPU (`xdistil.cpuinfo.cpu_id`) and group: a later session on the same
kind of CPU takes them instead of distilling them again, when the variant's config is the one
recorded and the teacher it builds scores exactly as the recorded one did (every test sentence's
entity counts), so that its cells are only ever compared with cells of the same teacher.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from xdistil_export.atomic import atomic_dir, expect, write_bytes, write_json

from xdistil.config import RunConfig, apply_overrides, from_dict, load_yaml, to_dict
from xdistil.provenance import provenance
from xdistil.run import RunDir
from xdistil.run.layout import read_distill_log, read_transfer_manifest

log = logging.getLogger(__name__)

GRID_KEYS = ("groups", "variants", "seeds", "default_variants", "default_groups", "reuse", "views")
VARIANT_KEYS = ("every_stage", "steps_of", "wall_of", "groups", "seed_of", "seeds", "about")
"""A variant's keys that are the grid's, not config overrides."""
BUDGET_KEYS = ("steps_of", "wall_of")  # a variant that takes its budget from another
SPLITS = ("dev", "test")

# --quick: tiny models, a few sentences (the tiny teacher has 2 layers: layer 2 is stored);
# applied last, so that no variant makes the quick run long.
QUICK = {
    "data": {"labeled_budget": 60, "val_size": 20, "dev_limit": 30},
    "teacher": {"epochs": 1, "batch_size": 8, "max_length": 32, "freeze_embeddings": False, "min_steps": 80,
                "lr": 3e-3, "head_lr": 1e-2, "min_selection_f1": 0.0},
    "transfer": {"limit": 30, "batch_size": 16, "chunk_size": 100, "layers": [2]},
    "student": {"embedding_dim": 8, "hidden_dim": 16, "num_layers": 1, "max_length": 32, "max_vocab": None},
    "distill": {"max_steps_per_epoch": 2, "match": {"teacher_layer": 2}, "select_size": 20},
}
QUICK_TEST_LIMIT = 30


def tiny_teacher(cfg, dest: Path) -> Path:
    """A 2-layer, 32-wide random BERT token classifier with a Unigram tokenizer trained on the
    config's labeled sentences: the --quick teacher (built once, reused)."""
    if (dest / "config.json").exists():
        return dest
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForTokenClassification, PreTrainedTokenizerFast

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
    torch.manual_seed(13)
    model = BertForTokenClassification(BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id,
        id2label=dict(enumerate(labels)), label2id={lab: i for i, lab in enumerate(labels)}))
    expect(dest.parent, [dest.name])
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return dest


@dataclass
class Grid:
    """A grid file, read: the base run config (raw), groups, variants, seeds and the other keys."""

    raw: dict
    groups: dict[str, dict]
    variants: dict[str, dict]
    seeds: list[int | None]
    keys: dict
    source: str = ""

    @classmethod
    def load(cls, config: str | Path | dict, own: tuple[str, ...] = ()) -> Grid:
        """``own``: the benchmark's keys besides the grid's (kept in ``keys``, out of the run config)."""
        raw = copy.deepcopy(dict(config)) if isinstance(config, dict) else load_yaml(config)
        keys = {k: raw.pop(k) for k in (*GRID_KEYS, *own, "tag_map", "test_limit", "notes", "min_entities",
                                        "steer_min_teacher_f1") if k in raw}
        base = raw.pop("base", None)
        if base is not None:  # a preset or config file under the grid's own keys
            raw = apply_overrides(load_yaml(base), raw)
        groups = keys.pop("groups", None) or {"all": {"domain": "in"}}
        variants = keys.pop("variants", None)
        if not variants:
            raise ValueError(f"{config}: a grid needs variants (name -> config overrides)")
        for name, g in groups.items():
            if g.get("domain", "in") not in ("in", "out"):
                raise ValueError(f"{config}: group {name!r}: domain must be 'in' or 'out'")
        for name, v in variants.items():
            given = [k for k in BUDGET_KEYS if (v or {}).get(k)]
            if len(given) > 1:
                raise ValueError(f"{config}: variant {name!r}: steps_of or wall_of, not both")
            for key in given:
                if v[key] not in variants:
                    raise ValueError(f"{config}: variant {name!r}: {key} {v[key]!r} is not a variant")
        return cls(raw, groups, {n: v or {} for n, v in variants.items()}, list(keys.pop("seeds", None) or [None]),
                   keys, str(config) if not isinstance(config, dict) else "")

    def names(self, variants: list[str] | None, groups: list[str] | None) -> tuple[list[str], list[str]]:
        names = variants or self.keys.get("default_variants") or list(self.variants)
        gnames = groups or self.keys.get("default_groups") or list(self.groups)
        for kind, asked, known in (("variant", names, self.variants), ("group", gnames, self.groups)):
            if unknown := [n for n in asked if n not in known]:
                raise ValueError(f"unknown {kind}(s) {unknown}: the grid has {', '.join(known)}")
        return names, gnames

    def config(self, group: str, variant: str | None = None, seed: int | None = None,
               quick: dict | None = None, scale: float | None = None) -> RunConfig:
        """The base config, the group's config, the variant's overrides (its ``groups`` entry
        for this group last, its ``every_stage`` changes on every stage), the seed, the
        ``steps_of`` / ``wall_of`` epochs ``scale``, then the --quick overrides; validated."""
        v = self.variants[variant] if variant else {}
        merged = apply_overrides(self.raw, self.groups[group].get("config") or {})
        merged = apply_overrides(merged, {k: x for k, x in v.items() if k not in VARIANT_KEYS})
        merged = apply_overrides(merged, (v.get("groups") or {}).get(group) or {})
        stages = merged.get("distill", {}).get("stages")
        if v.get("every_stage") or scale is not None:
            if not isinstance(stages, list):
                raise ValueError(f"variant {variant!r}: every_stage, steps_of and wall_of need the stages as a list")
            merged["distill"]["stages"] = [_stage(s, v.get("every_stage") or {}, scale) for s in stages]
        if seed is not None:
            merged = apply_overrides(merged, {"distill": {"seed": seed}})
        return from_dict(RunConfig, apply_overrides(merged, quick) if quick else merged)

    def cells(self, names: list[str], seeds: list[int] | None = None) -> list[tuple[str, str, int | None]]:
        """(cell name, variant, seed) in run order (``seeds``: these of the grid's): a variant
        that others take their budget from (``steps_of``, ``wall_of``) first."""
        order = sorted(names, key=lambda n: 0 if any(self.budget(m)[1] == n for m in names) else 1)
        return [(cell_name(n, s), n, s) for s in (seeds or self.seeds) for n in order
                if s in (self.variants[n].get("seeds") or [s])]

    def budget(self, variant: str) -> tuple[str, str | None]:
        """("steps", X) under ``steps_of: X``, ("wall", X) under ``wall_of: X``, else ("epochs", None)."""
        v = self.variants[variant]
        return next(((k.removesuffix("_of"), v[k]) for k in BUDGET_KEYS if v.get(k)), ("epochs", None))

    def tests(self, cfg: RunConfig, group: str, label_types: set[str]) -> dict[str, dict[str, dict]]:
        """Per language: test name -> {"domain", "sentences"} (see the module doc)."""
        from xdistil_languages import get_language

        from xdistil.data.readers import read_conll
        from xdistil.data.roots import resolve_data_root
        from xdistil.data.sources import labeled_sentences

        g, root, limit = self.groups[group], resolve_data_root(cfg.data.root), self.keys.get("test_limit")
        out: dict[str, dict[str, dict]] = {}
        for lang in cfg.data.languages:
            for entry in (g.get("tests") or {}).get(lang, ["dev"]):
                spec = entry if isinstance(entry, dict) else {"split": entry} if entry in SPLITS else {"file": entry}
                domain = spec.get("domain", g.get("domain", "in"))
                if "split" in spec:
                    start = spec.get("start", 0)  # test_limit: at most that many sentences from the start
                    stop = min((x for x in (spec.get("stop"), None if limit is None else start + limit)
                                if x is not None), default=None)
                    sents = labeled_sentences(lang, spec["split"], cfg.data, limit=stop)[start:]
                    files = cfg.data.files.get(lang, {}).get(spec["split"])
                    path = Path(files[0]) if files else get_language(lang).find(spec["split"], data_root=root)
                    name = spec.get("name") or (short_name(path, root) if path is not None else f"{lang}/{spec['split']}")
                else:
                    tag_map = {**get_language(lang).tag_map, **(self.keys.get("tag_map") or {})}
                    f = spec["file"]
                    path = Path(f) if Path(f).is_absolute() or root is None else root / f
                    sents = read_conll(path, label_types=label_types, tag_map=tag_map, limit=limit)
                    name = spec.get("name") or short_name(path, root)
                out.setdefault(lang, {})[name] = {"domain": domain, "sentences": sents}
        return out

    def flat_tests(self, cfg: RunConfig, group: str, label_types: set[str]) -> dict[str, dict]:
        """`tests` by ``LANG:TEST``, the keys of the scores."""
        return {f"{lang}:{n}": t for lang, ts in self.tests(cfg, group, label_types).items() for n, t in ts.items()}


def cell_name(variant: str, seed: int | None) -> str:
    return variant if seed is None else f"{variant}-s{seed}"


def _stage(stage: dict, change: dict, scale: float | None) -> dict:
    s = {**stage, **change}
    if scale is not None:
        s["epochs"] = round(s.get("epochs", 2.0) * scale, 4)
        if s.get("min_epochs"):
            s["min_epochs"] = max(1, math.floor(s["min_epochs"] * scale))
    return s


def short_name(path: str | Path, root: Path | None) -> str:
    """A test's name: its path under the data root without the extension (``uner/en/test``)."""
    if str(path).startswith("hub:"):
        return str(path)
    p = Path(path).resolve()
    rel = p.relative_to(root.resolve()).as_posix() if root is not None and p.is_relative_to(root.resolve()) \
        else p.name
    parent, _, leaf = rel.rpartition("/")
    return (parent + "/" if parent else "") + leaf.split(".")[0]


# ---- scores, cached beside the models they were measured on -----------------------------------


class Scores:
    """seqeval scores of saved models on named tests, with each sentence's entity counts (for
    `bootstrap`); ``cache`` (JSON) keeps them by model and test, each with the digest of the
    model folder and of the test's sentences, so a rerun scores only what changed."""

    def __init__(self, cache: Path, batch_size: int = 64, progress: bool = False):
        self.path, self.batch_size, self.progress = cache, batch_size, progress
        self.data: dict = json.loads(cache.read_text()) if cache.exists() else {}

    @staticmethod
    def _digest(model_dir: Path, sents: list) -> str:
        from xdistil import digests

        body = json.dumps([digests.folder_digest(model_dir), [[s.words, s.tags] for s in sents]])
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def __call__(self, name: str, model_dir: Path, tests: dict[str, list]) -> dict[str, dict]:
        from xdistil.evaluate import evaluate_tagger
        from xdistil.taggers import load_tagger

        out, tagger = {}, None
        for test, sents in tests.items():
            key, digest = f"{name}|{test}", self._digest(model_dir, sents)
            hit = self.data.get(key)
            if hit is None or hit["digest"] != digest or "counts" not in hit["score"]:
                tagger = tagger or load_tagger(model_dir)
                score = evaluate_tagger(tagger, sents, self.batch_size, self.progress, counts=True)
                self.data[key] = hit = {"digest": digest, "params": tagger.param_count(), "score": score}
                write_json(self.path, self.data)
            out[test] = {**hit["score"], "params": hit["params"]}
        return out


def _f1(c: np.ndarray) -> np.ndarray:
    """Micro F1 (%) from summed [tp, fp, fn] along the last axis (0 where there is nothing)."""
    tp, fp, fn = c[..., 0], c[..., 1], c[..., 2]
    den = 2 * tp + fp + fn
    return np.where(den > 0, 200 * tp / np.maximum(den, 1), 0.0)


def interval(d: dict | None) -> str:
    """A `bootstrap` result as a table cell: "+1.30 [+0.29, +2.35] *" (* where it excludes 0), "–" for none."""
    if not d:
        return "–"
    return f"{d['diff']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]" + (" *" if d["excludes_0"] else "")


def bootstrap(tests: dict[str, tuple[list, list[list], list[list]]], samples: int = 1000, seed: int = 0,
              level: float = 0.95) -> dict:
    """A paired bootstrap over test sentences of the difference in average retention between
    two variants, in points: ``tests`` maps a test to (the teacher's per-sentence counts, the
    counts of each seed of variant A, of each seed of B). Every sample draws each test's
    sentences with replacement, once for all models; retention = F1 / the teacher's F1 on that
    sample, averaged over the seeds of a variant and then over the tests. Returns the
    difference on the tests as they are and its ``level`` interval; a lever counts when the
    interval excludes 0."""
    rng = np.random.default_rng(seed)
    diffs = np.zeros(samples)
    point = 0.0
    for teacher, a, b in tests.values():
        t, a, b = np.asarray(teacher), np.asarray(a), np.asarray(b)  # (S, 3), (seeds, S, 3)
        idx = rng.integers(0, len(t), size=(samples, len(t)))
        ft = _f1(t[idx].sum(1))  # (samples,)
        fa = _f1(a[:, idx].sum(2)).mean(0)  # (samples,)
        fb = _f1(b[:, idx].sum(2)).mean(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            diffs += np.where(ft > 0, 100 * (fa - fb) / ft, 0.0)
        t0 = _f1(t.sum(0))
        point += 100 * (_f1(a.sum(1)).mean() - _f1(b.sum(1)).mean()) / t0 if t0 > 0 else 0.0
    n = len(tests)
    lo, hi = np.quantile(diffs / n, [(1 - level) / 2, (1 + level) / 2])
    return {"diff": round(float(point / n), 2), "low": round(float(lo), 2), "high": round(float(hi), 2),
            "excludes_0": bool(lo > 0 or hi < 0), "samples": samples}


# ---- cells carried from one session to the next ---------------------------------------------


class Carry:
    """A grid's finished cells in one file (gzipped JSON, committed beside the results), by CPU
    (`xdistil.cpuinfo.cpu_id`) and group: the teacher's scores, the tests' domains and every
    cell's record as ``done.json`` has it, with the digest of its variant's config (`cell_digest`).

    `grid.run` takes a group's recorded cells that its run folder lacks (`take`), and records
    every cell it finishes on this CPU (`save`). Cells are taken only on the CPU they were built
    on (timings, and the last bits of a result, follow the CPU's kernels), only where the
    variant's config is still the recorded one, and only with the teacher that scored them:
    where the run builds anything, its teacher is built and scored first, and the recorded cells
    are taken only if it finds exactly the entities the recorded one found on every test sentence.
    A code change that the config does not show is not seen: rebuild with ``--no-carry``."""

    FORMAT = 1

    def __init__(self, path: Path, cpu: str | None = None):
        from xdistil.cpuinfo import cpu_id

        self.path, self.cpu = Path(path), cpu or cpu_id()
        self.data = json.loads(gzip.decompress(self.path.read_bytes())) if self.path.is_file() else \
            {"format": self.FORMAT, "cpus": {}}
        if self.data.get("format") != self.FORMAT:
            raise ValueError(f"{self.path}: carried cells of format {self.data.get('format')!r}, "
                             f"this grid reads {self.FORMAT}")

    def group(self, group: str) -> dict | None:
        """This CPU's record of ``group`` (teacher scores, domains, cells), or None."""
        return self.data["cpus"].get(self.cpu, {}).get(group)

    def offered(self, group: str, wanted: dict[str, str]) -> dict[str, dict]:
        """The recorded cells among ``wanted`` (cell -> its config digest) whose digest matches."""
        rec = self.group(group)
        return {c: r for c, r in (rec or {}).get("variants", {}).items() if c in wanted and r.get("config") == wanted[c]}

    def take(self, group: str, entry: dict, wanted: dict[str, str], teacher: dict | None) -> list[str]:
        """Copy into ``entry`` (done.json's group) the `offered` cells among ``wanted`` that it
        lacks; ``teacher``: the scores of the teacher this run built (None where it builds
        nothing), which must be the recorded teacher's. Returns the cells taken."""
        rec = self.group(group)
        cells = {c: r for c, r in self.offered(group, wanted).items() if c not in entry["variants"]}
        stale = sorted(c for c in (rec or {}).get("variants", {}) if c in wanted and c not in entry["variants"]
                       and c not in cells)
        if stale:
            log.warning("%s: %s recorded under another config of the variant: built again", self.path,
                        ", ".join(stale))
        if not cells:
            return []
        if teacher is not None and not same_teacher(teacher, rec["teacher"]):
            log.warning("%s: the teacher built here does not find the entities the recorded one found (group %s): "
                        "its %d recorded cells are not taken", self.path, group, len(rec["variants"]))
            return []
        for key in ("languages", "teacher", "teacher_s", "domains"):
            if key in rec:
                entry.setdefault(key, rec[key])
        entry["variants"].update({c: {**r, "carried": str(self.path)} for c, r in cells.items()})
        return sorted(cells)

    def save(self, group: str, entry: dict) -> None:
        """Record ``entry``'s cells that were built on this CPU (with their config digest); a
        record of another teacher is replaced, not mixed."""
        mine = {c: {k: v for k, v in r.items() if k != "carried"} for c, r in entry["variants"].items()
                if r.get("cpu") == self.cpu and "config" in r}
        if not mine or "teacher" not in entry:
            return
        old = self.group(group)
        kept = old["variants"] if old and same_teacher(old["teacher"], entry["teacher"]) else {}
        self.data["cpus"].setdefault(self.cpu, {})[group] = {
            **{k: entry[k] for k in ("languages", "teacher", "teacher_s", "domains") if k in entry},
            "variants": {**kept, **mine}}
        body = json.dumps(self.data, separators=(",", ":")).encode()  # in order: the scores keep their tests
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(self.path, gzip.compress(body, mtime=0))


CARRY_DIR = Path("benchmarks/results/cells")
"""Where the benchmarks carry each grid's finished cells, one file a grid (``GRID.json.gz``)."""


def carry_arguments(p) -> None:
    """A benchmark's ``--carry`` and ``--no-carry`` (read back by `carry_of`)."""
    p.add_argument("--carry", type=Path, help="the file of finished cells carried from session to session "
                   f"(default: {CARRY_DIR}/GRID.json.gz, GRID the --config file's name; none under --quick): the "
                   "cells recorded there on this kind of CPU, of the same config and teacher, are taken instead "
                   "of distilled again, and every cell finished here is recorded (commit it)")
    p.add_argument("--no-carry", action="store_true", help="neither take nor record carried cells")


def carry_of(args, config: str | Path) -> Carry | None:
    """The `Carry` that ``--carry`` / ``--no-carry`` / ``--quick`` ask for."""
    if args.no_carry:
        return None
    path = args.carry or (None if args.quick else CARRY_DIR / f"{Path(config).name.split('.')[0]}.json.gz")
    return Carry(path) if path else None


def same_teacher(a: dict, b: dict) -> bool:
    """Whether two teachers' scores (test -> seqeval score with per-sentence ``counts``) are
    those of one teacher: the same tests, and on every sentence the same entity counts."""
    return a.keys() == b.keys() and all(a[k].get("counts") is not None and a[k].get("counts") == b[k].get("counts")
                                        for k in a)


def cell_digest(grid: Grid, group: str, variant: str, seed: int | None, quick: bool) -> str:
    """What a cell is, as a digest: its variant's config in its group (before any budget's
    scaling, which follows from another cell), and whether it is a --quick cell."""
    body = json.dumps({"config": to_dict(grid.config(group, variant, seed)), "quick": quick}, sort_keys=True,
                      default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


# ---- the run ---------------------------------------------------------------------------------


def run(grid: Grid, run_dir: Path, variants: list[str] | None = None, groups: list[str] | None = None,
        quick: bool = False, progress: bool = True, command: str = "", reuse: list[Path] = (),
        seeds: list[int] | None = None, carry: Carry | None = None) -> dict:
    """Build and score every cell of ``groups`` x ``variants`` x seeds not yet in
    ``run_dir/done.json`` (nor in ``carry``, where it is given: see `Carry`); returns it (per
    group: the teacher's scores, the tests' domains, and per cell its scores, seconds, transfer
    rows, stages and student)."""
    from xdistil.runner import Runner, outputs

    names, gnames = grid.names(variants, groups)
    run_dir.mkdir(parents=True, exist_ok=True)
    if quick:
        grid = copy.copy(grid)
        grid.keys = {**grid.keys, "test_limit": QUICK_TEST_LIMIT}
    done_path = run_dir / "done.json"
    done = json.loads(done_path.read_text()) if done_path.exists() else {}
    if command and command not in done.setdefault("commands", []):  # every piece that built these results
        done["commands"].append(command)
    done["provenance"] = provenance(command)
    shared = [*(Path(p) for p in grid.keys.get("reuse") or []), *reuse]
    for g in gnames:
        gdir = run_dir / g
        gdir.mkdir(exist_ok=True)
        quick_over = None
        if quick:
            tiny = tiny_teacher(grid.config(g, quick=QUICK), gdir / "tiny-teacher")
            quick_over = apply_overrides(QUICK, {"teacher": {"model": str(tiny)}})
        base = grid.config(g, quick=quick_over)
        entry = done.setdefault(g, {"variants": {}})
        entry["languages"] = base.data.languages
        scored = _GroupTests(grid, g, base, gdir, entry, progress)
        plan = grid.cells(names, seeds)
        digests = {cell: cell_digest(grid, g, name, seed, quick) for cell, name, seed in plan}
        for cell, name, seed in plan:  # cells recorded before the carry: what it needs, while their folders are here
            if (old := entry["variants"].get(cell)) is not None and "cpu" not in old and (gdir / cell).is_dir():
                o = outputs(gdir / cell)
                old.update(_carried_fields(digests[cell], read_transfer_manifest(o.transfer),
                                           read_distill_log(o.student), grid.config(g, name, seed, quick_over)))
        if carry is not None:
            def build_teacher(cell: str, name: str, seed: int | None, g=g, gdir=gdir, over=quick_over) -> Path:
                runner = Runner(grid.config(g, name, seed, over), RunDir(gdir / cell), reuse=[gdir, *shared],
                                progress=progress)
                return runner.run(only=("teacher",)).teacher

            _take_carried(carry, g, entry, plan, digests, scored, build_teacher)
            write_json(done_path, done)
        for cell, name, seed in plan:
            if (old := entry["variants"].get(cell)) is not None:
                if any("counts" not in x for x in old["scores"].values()):  # scored before sentence counts
                    o = outputs(gdir / cell)
                    score, flat = scored(o.teacher)
                    old["scores"] = score(cell, o.student, flat)
                    write_json(done_path, done)
                continue
            t0 = time.time()
            cfg = grid.config(g, name, seed, quick_over)
            if (cfg.data, cfg.teacher) != (base.data, base.teacher):  # one teacher, one set of tests per group
                raise ValueError(f"variant {name!r}: a variant may not change the data or teacher sections")
            runner = Runner(cfg, RunDir(gdir / cell), reuse=[gdir, *shared], progress=progress)
            budget, of = grid.budget(name)
            if of:  # the epochs that give the other's optimizer steps, or its CPU seconds
                got = runner.run(only=("teacher", "label"))
                other = entry["variants"].get(cell_name(of, seed))
                if other is None:
                    raise ValueError(f"variant {name!r} takes its {budget} budget from {of!r}: run that too")
                if "trained_rows" not in other:  # a record from before the carry kept it
                    theirs = outputs(gdir / cell_name(of, seed)).transfer
                    other = {**other, "trained_rows": trained_rows(read_transfer_manifest(theirs),
                                                                   grid.config(g, of, seed, quick_over))}
                manifest = read_transfer_manifest(got.transfer)
                scale = budget_scale(name, budget, other, manifest, trained_rows(manifest, cfg))
                runner.cfg = cfg = grid.config(g, name, seed, quick_over, scale=scale)
                got = runner.run(only=("distill",))  # the teacher and transfer set as just built
            else:
                got = runner.run()
            score, flat = scored(got.teacher)
            manifest = read_transfer_manifest(got.transfer)
            rows = per_language(manifest)
            log = read_distill_log(got.student)
            entry["variants"][cell] = {
                "variant": name, "seed": seed if seed is not None else cfg.distill.seed,
                "scores": score(cell, got.student, flat),
                "label_s": label_seconds(manifest),
                "distill_s": round(sum(ph["seconds"] for st in log["stages"] for ph in st["phases"]), 1),
                "wall_s": round(time.time() - t0, 1),
                "transfer_rows": sum(rows.values()),
                "transfer_per_language": rows,
                "stages": [{"stage": st["stage"], "steps": sum(ph["steps"] for ph in st["phases"]),
                            "batch_size": s.batch_size, "seconds": round(sum(ph["seconds"] for ph in st["phases"]), 1),
                            "select_s": round(sum(ph.get("select_s") or 0 for ph in st["phases"]), 1)}
                           for st, s in zip(log["stages"], cfg.distill.resolved_stages(), strict=False)],
                "vocab": _vocab(got.student), "student": to_dict(cfg.student), "student_path": str(got.student),
                **_carried_fields(digests[cell], manifest, log, cfg),
            }
            write_json(done_path, done)
            if carry is not None:
                carry.save(g, entry)
        write_json(done_path, done)
        if carry is not None:  # the records made before the carry, too
            carry.save(g, entry)
    return done


def _carried_fields(digest: str, manifest: dict, log: dict, cfg: RunConfig) -> dict:
    """What a cell's record needs to stand without its folder (`Carry`): the CPU it was built
    on, its config's digest, the rows it trained on an epoch (its transfer ``manifest``: a
    budget taken from it) and its distillation ``log`` (the selection and throughput views read it)."""
    from xdistil.cpuinfo import cpu_id

    return {"cpu": cpu_id(), "config": digest, "trained_rows": trained_rows(manifest, cfg), "log": log}


def _take_carried(carry: Carry, group: str, entry: dict, plan: list[tuple[str, str, int | None]],
                  digests: dict[str, str], scored, build_teacher) -> None:
    """Take ``carry``'s cells of ``plan`` that ``entry`` lacks. Where cells are left to build
    and this run folder has built none yet, its teacher is built and scored first, and cells
    carried into it before are dropped when it is not the teacher that scored them."""
    ours = [c for c, r in entry["variants"].items() if not r.get("carried")]
    carried = [c for c, r in entry["variants"].items() if r.get("carried")]
    lacking = [(c, n, s) for c, n, s in plan if c not in entry["variants"]]
    offered = carry.offered(group, {c: digests[c] for c, _, _ in lacking})
    to_build = [x for x in lacking if x[0] not in offered]
    if not offered and not carried:
        return
    teacher = None
    if ours:
        teacher = entry["teacher"]
    elif to_build:
        recorded = entry.get("teacher")
        scored(build_teacher(*to_build[0]))  # sets entry["teacher"] to this run's
        teacher = entry["teacher"]
        if carried and not same_teacher(teacher, recorded):
            log.warning("the teacher built here does not find the entities of the one that scored the carried "
                        "cells %s: they are built again", ", ".join(carried))
            for c in carried:
                del entry["variants"][c]
    taken = carry.take(group, entry, {c: digests[c] for c, _, _ in lacking}, teacher)
    if taken:
        log.info("taken from %s (built on this CPU in an earlier session): %s", carry.path, ", ".join(taken))


class _GroupTests:
    """A group's tests and the teacher's scores on them, made the first time a cell needs them."""

    def __init__(self, grid: Grid, group: str, base: RunConfig, gdir: Path, entry: dict, progress: bool):
        self.grid, self.group, self.base, self.gdir, self.entry, self.progress = grid, group, base, gdir, entry, progress
        self.made: tuple[Scores, dict] | None = None

    def __call__(self, teacher: Path) -> tuple[Scores, dict]:
        from xdistil.taggers import load_tagger

        if self.made is None:
            labels = load_tagger(teacher).labels
            tests = self.grid.flat_tests(self.base, self.group, {lab[2:] for lab in labels if lab != "O"})
            flat = {key: t["sentences"] for key, t in tests.items()}
            self.entry["domains"] = {key: t["domain"] for key, t in tests.items()}
            score = Scores(self.gdir / "scores.json", self.base.teacher.eval_batch_size, self.progress)
            self.entry["teacher"] = score("teacher", teacher, flat)
            self.entry["teacher_s"] = _teacher_seconds(teacher)
            self.made = (score, flat)
        return self.made


def label_seconds(manifest: dict) -> float | None:
    """The labeling seconds of a transfer set's rows, at the sentences/s its manifest measured."""
    rate = (manifest.get("throughput") or {}).get("label_sentences_per_s")
    return round(sum(per_language(manifest).values()) / rate, 1) if rate else None


def trained_rows(manifest: dict, cfg: RunConfig) -> int:
    """The rows a student of ``cfg`` trains on an epoch of the transfer set ``manifest``: its
    labeled, transfer and augmented rows, less the transfer sentences that selection on the
    teacher's tags holds out (drawn by ``xdistil.data.transfer.selection_rows``, as distillation
    draws them). The augmented variants of held-out sentences, also left out of training, are
    counted: a few in a thousand rows."""
    from xdistil.data.transfer import selection_rows
    from xdistil.stages import select_signal

    counts = manifest["counts"]
    total = sum(c.get("labeled", 0) + c.get("transfer", 0) + c.get("augmented", 0) for c in counts.values())
    if any(select_signal(cfg, s) == "teacher" for s in cfg.distill.resolved_stages()):
        held = selection_rows({lang: range(c["transfer"]) for lang, c in counts.items() if c.get("transfer")},
                              cfg.distill.select_size)
        total -= sum(map(len, held.values()))
    return total


def budget_scale(name: str, budget: str, other: dict, manifest: dict, rows: int) -> float:
    """The factor on every stage's epochs that gives variant ``name`` (its transfer set's
    ``manifest``, ``rows`` trained on an epoch: `trained_rows`) the ``other`` cell's budget
    (its ``trained_rows`` beside its record): its optimizer steps (``steps``: the epochs times
    rows / rows), or its labeling + distillation seconds (``wall``: the seconds left after this
    transfer set's own labeling, at the other's distillation rows a second).

    The cells of the committed step- and wall-budget pages before this counted transfer rows
    only (no labeled rows, no selection slice): they took about 0.9 of the other's steps."""
    if budget == "steps":
        return other["trained_rows"] / rows
    label_s = label_seconds(manifest)
    if label_s is None or other["label_s"] is None:
        raise ValueError(f"variant {name!r}: a wall budget needs the labeling seconds of both transfer sets")
    total = other["label_s"] + other["distill_s"]
    if label_s >= total:
        raise ValueError(f"variant {name!r}: labeling its transfer set alone takes {label_s:.0f} s, "
                         f"the whole budget is {total:.0f} s")
    return (total - label_s) / other["distill_s"] * other["trained_rows"] / rows


def per_language(transfer: Path | dict) -> dict[str, int]:
    """Per language, the rows a student trains on per epoch: the transfer set's transfer rows
    (augmented ones included), from its manifest (or the manifest itself)."""
    manifest = transfer if isinstance(transfer, dict) else read_transfer_manifest(transfer)
    return {lang: c.get("transfer", 0) + c.get("augmented", 0) for lang, c in manifest["counts"].items()}


def _teacher_seconds(teacher: Path) -> float | None:
    info = teacher / "xdistil_teacher.json"
    return json.loads(info.read_text()).get("seconds") if info.exists() else None


def _vocab(student: Path) -> dict | None:
    v = json.loads((student / "xdistil_student.json").read_text()).get("vocab")
    if not v:
        return None
    return {"size": v["size"], "max_vocab": v["max_vocab"],
            "pieces_per_word": {lang: [x["teacher_pieces_per_word"], x["student_pieces_per_word"]]
                                for lang, x in v["languages"].items()}}


def rows(grid: Grid, done: dict) -> list[dict]:
    """One row per (group, cell, language, test): teacher and student F1, retention, domain."""
    out = []
    for g in (g for g in grid.groups if g in done):
        entry = done[g]
        for cell, v in entry["variants"].items():
            for key, s in v["scores"].items():
                lang, test = key.split(":", 1)
                t = entry["teacher"][key]
                out.append({"group": g, "cell": cell, "variant": v.get("variant", cell), "seed": v.get("seed"),
                            "language": lang, "test": test, "domain": entry.get("domains", {}).get(key, "in"),
                            "teacher_f1": round(float(t["f1"]), 2), "student_f1": round(float(s["f1"]), 2),
                            "retention": ratio(s["f1"], t["f1"])})
    return out


def ratio(s: float | None, t: float | None) -> float | None:
    return round(float(s / t), 4) if s is not None and t else None  # float: seqeval's are numpy's



"""Cross-domain benchmark (issue 17): does a student trained on WikiANN hold up on news and web text?

    python -m benchmarks.cross_domain [--variants baseline uner-text augment] \
        [--config benchmarks/configs/cross_domain.yaml] [--run runs/cross-domain] \
        [--results benchmarks/results/cross-domain] [--quick] [-q]

One teacher is fine-tuned on WikiANN (the config's languages, e.g. en and pt); every variant
labels its transfer set with it and distils a student. Variants are lever settings of the
toolkit, each a config override (`xdistil.config.apply_overrides`) of the config's base:
``transfer.extra_sources`` (another corpus's train text as unlabeled transfer text),
``transfer.concat`` (fragments joined into longer sequences), ``transfer.augment_*``
(`xdistil.augment`) and longer soft-target stages. The teacher and each variant's final
student are scored in domain (WikiANN dev) and out of domain (the config's
``out_of_domain`` files: UNER en/pt dev and test, OTH -> O), per language and entity type.

Every step goes through `xdistil.steps`, so a rerun reuses what is built from the same
inputs (the teacher is shared by all variants, a transfer set by the variants with the same
transfer section) and scores are cached beside the models they were measured on.
``--quick`` runs the same on a tiny random teacher and student (seconds; numbers mean
nothing): the test of this script.

Writes ``summary.json``::

    {"retention": [{"model", "language", "in_domain_test", "out_of_domain_test",
                    "in_domain", "out_of_domain"}],      # fractions of the teacher's F1
     "scores": [...], "per_type": [...], "targets": {...}, "protocol": {...}, ...}

and ``results.md`` (the report's block renderer).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

from xdistil_export.atomic import write_json

from benchmarks import preamble
from xdistil.config import RunConfig, apply_overrides, from_dict, load_yaml, to_dict
from xdistil.report import Heading, Para, Table, num, pct, write_page

FORMAT = "xdistil-cross-domain/1"
BENCH_KEYS = ("variants", "default_variants", "out_of_domain", "tag_map", "ood_limit")
# Issue 17's targets: out-of-domain retention >= 90 %, in-domain retention not lower than the
# baseline's, ORG out of domain >= 80 % of the teacher's ORG F1.
TARGET_OUT, TARGET_ORG = 0.90, 0.80

# --quick: tiny models, a few sentences; applied after a variant's overrides so that no
# variant makes the quick run long (the tiny teacher has 2 layers: layer 2 is stored).
QUICK = {
    "data": {"labeled_budget": 60, "val_size": 20, "dev_limit": 30},
    "teacher": {"epochs": 1, "batch_size": 8, "max_length": 32, "freeze_embeddings": False, "min_steps": 80,
                "lr": 3e-3, "head_lr": 1e-2, "min_selection_f1": 0.0},
    "transfer": {"limit": 30, "batch_size": 16, "chunk_size": 100, "layers": [2]},
    "student": {"embedding_dim": 8, "hidden_dim": 16, "num_layers": 1, "max_length": 32},
    "distill": {"max_steps_per_epoch": 2, "match": {"teacher_layer": 2}},
}
QUICK_OOD_LIMIT = 30


# ---- configs and tests ----------------------------------------------------------------------


def load(config: str | Path | dict) -> tuple[dict, dict]:
    """(the base run config as a raw mapping, the benchmark's own keys)."""
    raw = dict(config) if isinstance(config, dict) else load_yaml(config)
    bench = {k: raw.pop(k) for k in BENCH_KEYS if k in raw}
    if not bench.get("variants"):
        raise ValueError("cross-domain config: no variants (a mapping of name -> config overrides)")
    return raw, bench


def variant_cfg(raw: dict, overrides: dict, quick: dict | None = None) -> RunConfig:
    """The base config with a variant's overrides (then the --quick ones) applied, validated."""
    merged = apply_overrides(raw, overrides or {})
    return from_dict(RunConfig, apply_overrides(merged, quick) if quick else merged)


def short_name(path: str | Path, root: Path | None) -> str:
    """A test's name: its path under the data root without the extension (``uner/en/test``)."""
    if str(path).startswith("hub:"):
        return str(path)
    p = Path(path).resolve()
    rel = p.relative_to(root.resolve()).as_posix() if root is not None and p.is_relative_to(root.resolve()) \
        else p.name
    parent, _, leaf = rel.rpartition("/")
    return (parent + "/" if parent else "") + leaf.split(".")[0]


def in_domain_tests(cfg: RunConfig) -> dict[str, tuple[str, list]]:
    """Per language: (name, gold sentences) of the in-domain test, the run's dev split."""
    from xdistil.data.roots import resolve_data_root
    from xdistil.data.sources import dev_sentences
    from xdistil.data.transfer import data_files

    root, files = resolve_data_root(cfg.data.root), data_files(cfg, "dev")
    return {lang: (short_name(files[lang][0], root), dev_sentences(lang, cfg.data)) for lang in cfg.data.languages}


def out_of_domain_tests(cfg: RunConfig, bench: dict, label_types: set[str]) -> dict[str, dict[str, tuple[Path, list]]]:
    """Per language: name -> (file, gold sentences), tags mapped by the language's and the
    benchmark's ``tag_map`` (UNER's OTH -> O) onto ``label_types``."""
    from xdistil_languages import get_language

    from xdistil.data.readers import read_conll
    from xdistil.data.roots import resolve_data_root

    root = resolve_data_root(cfg.data.root)
    out: dict[str, dict[str, tuple[Path, list]]] = {}
    for lang in cfg.data.languages:
        tag_map = {**get_language(lang).tag_map, **(bench.get("tag_map") or {})}
        for f in (bench.get("out_of_domain") or {}).get(lang, []):
            path = Path(f) if Path(f).is_absolute() or root is None else root / f
            sents = read_conll(path, label_types=label_types, tag_map=tag_map, limit=bench.get("ood_limit"))
            out.setdefault(lang, {})[short_name(path, root)] = (path, sents)
    return out


# ---- scores, cached beside the models they were measured on -----------------------------------


class Scores:
    """seqeval scores of saved models on named tests; ``cache`` (JSON) keeps them by model and
    test, each with the digest of the model folder and of the test's sentences, so a rerun
    scores only what changed."""

    def __init__(self, cache: Path, batch_size: int = 64, progress: bool = False):
        self.path, self.batch_size, self.progress = cache, batch_size, progress
        self.data: dict = json.loads(cache.read_text()) if cache.exists() else {}

    @staticmethod
    def _digest(model_dir: Path, sents: list) -> str:
        from xdistil import fingerprint

        body = json.dumps([fingerprint.folder_digest(model_dir), [[s.words, s.tags] for s in sents]])
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def __call__(self, name: str, model_dir: Path, tests: dict[str, list]) -> dict[str, dict]:
        from xdistil.evaluate import evaluate_tagger
        from xdistil.taggers import load_tagger

        out, tagger = {}, None
        for test, sents in tests.items():
            key, digest = f"{name}|{test}", self._digest(model_dir, sents)
            hit = self.data.get(key)
            if hit is None or hit["digest"] != digest:
                tagger = tagger or load_tagger(model_dir)
                score = evaluate_tagger(tagger, sents, self.batch_size, self.progress)
                self.data[key] = hit = {"digest": digest, "params": tagger.param_count(), "score": score}
                write_json(self.path, self.data)
            out[test] = {**hit["score"], "params": hit["params"]}
        return out


# ---- the run ---------------------------------------------------------------------------------


def transfer_owner(variants: dict, raw: dict, quick: dict | None) -> dict[str, str]:
    """Variant -> the variant whose transfer set it uses: the first (in the config's order)
    with the same transfer section, so variants that differ only in distillation share one."""
    owner, seen = {}, {}
    for name, over in variants.items():
        key = json.dumps(to_dict(variant_cfg(raw, over, quick).transfer), sort_keys=True)
        owner[name] = seen.setdefault(key, name)
    return owner


def _seconds(run_dir: Path) -> float | None:
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        return None
    return round(sum(step["seconds"] for st in json.loads(metrics.read_text())["stages"] for step in st["phases"]), 1)


def run(config: str | Path | dict, run_dir: Path, results: Path, variants: list[str] | None = None,
        quick: bool = False, progress: bool = True, command: str | None = None) -> dict:
    from xdistil import steps
    from xdistil.provenance import provenance
    from xdistil.taggers import load_tagger

    raw, bench = load(config)
    names = variants or bench.get("default_variants") or list(bench["variants"])
    unknown = [n for n in names if n not in bench["variants"]]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}: the config has {', '.join(bench['variants'])}")
    run_dir.mkdir(parents=True, exist_ok=True)
    quick_over = None
    if quick:
        from benchmarks.throughput import tiny_teacher

        tiny = tiny_teacher(variant_cfg(raw, {}, QUICK), run_dir / "tiny-teacher")
        quick_over = apply_overrides(QUICK, {"teacher": {"model": str(tiny)}})
        bench = {**bench, "ood_limit": QUICK_OOD_LIMIT}
    base = variant_cfg(raw, {}, quick_over)
    timings: dict[str, float | None] = {}

    t0 = time.time()
    teacher = steps.teacher(base, run_dir / "teacher", progress=progress)
    info = teacher / "xdistil_teacher.json"
    timings["teacher_s"] = json.loads(info.read_text()).get("seconds") if info.exists() else round(time.time() - t0, 1)
    labels = load_tagger(teacher).labels
    types = {lab[2:] for lab in labels if lab != "O"}
    in_dom = in_domain_tests(base)
    ood = out_of_domain_tests(base, bench, types)
    tests = {lang: {in_dom[lang][0]: in_dom[lang][1], **{n: s for n, (_, s) in ood.get(lang, {}).items()}}
             for lang in base.data.languages}
    flat = {f"{lang}:{n}": s for lang, ts in tests.items() for n, s in ts.items()}
    score = Scores(run_dir / "scores.json", base.teacher.eval_batch_size, progress)
    scored = {"teacher": score("teacher", teacher, flat)}

    owner = transfer_owner(bench["variants"], raw, quick_over)
    students: dict[str, Path] = {}
    for name in names:
        cfg = variant_cfg(raw, bench["variants"][name], quick_over)
        if (cfg.data, cfg.teacher) != (base.data, base.teacher):  # one teacher, one set of tests for all
            raise ValueError(f"variant {name!r}: a variant may not change the data or teacher sections")
        transfer = steps.label(cfg, [teacher], run_dir / f"transfer-{owner[name]}", progress=progress)
        if owner[name] == name:  # as the (possibly earlier) labeling recorded it
            tp = json.loads((transfer / "manifest.json").read_text())["throughput"]
            rate = tp.get("label_sentences_per_s")
            timings[f"label {name}_s"] = round(tp["sentences_labeled_this_run"] / rate, 1) if rate else None
        out = run_dir / f"distill-{name}"
        students[name] = steps.distill_stages(cfg, transfer, teacher, out, progress=progress)[-1]
        timings[f"distill {name}_s"] = _seconds(out)
        scored[name] = score(name, students[name], flat)

    summary = build(base, bench, names, scored, in_dom, ood, timings,
                    provenance(command or shlex.join(["python", "-m", "benchmarks.cross_domain", *sys.argv[1:]])))
    write_json(results / "summary.json", summary)
    write_page(blocks(summary), results)
    return summary


def _ratio(s: float | None, t: float | None) -> float | None:
    return round(float(s / t), 4) if s is not None and t else None  # float: seqeval's are numpy's


def build(cfg: RunConfig, bench: dict, names: list[str], scored: dict, in_dom: dict, ood: dict, timings: dict,
          prov: dict) -> dict:
    """summary.json from the scores: retention per (variant, language, out-of-domain test),
    every score, both retentions per entity type, the targets."""
    retention, scores, per_type = [], [], []
    for model, by_test in scored.items():
        for key, s in by_test.items():
            lang, test = key.split(":", 1)
            scores.append({"model": model, "role": "teacher" if model == "teacher" else "student", "language": lang,
                           "test": test, "domain": "in" if test == in_dom[lang][0] else "out",
                           **{k: s[k] for k in ("f1", "precision", "recall", "support", "sentences", "params")},
                           "per_type": s["per_type"]})
    teacher = scored["teacher"]
    for name in names:
        for lang in cfg.data.languages:
            ind = f"{lang}:{in_dom[lang][0]}"
            for test in ood.get(lang, {}):
                key = f"{lang}:{test}"
                retention.append({"model": name, "language": lang, "in_domain_test": in_dom[lang][0],
                                  "out_of_domain_test": test,
                                  "in_domain": _ratio(scored[name][ind]["f1"], teacher[ind]["f1"]),
                                  "out_of_domain": _ratio(scored[name][key]["f1"], teacher[key]["f1"])})
                t_in, t_out = teacher[ind]["per_type"], teacher[key]["per_type"]
                s_in, s_out = scored[name][ind]["per_type"], scored[name][key]["per_type"]
                for typ in sorted(set(t_in) | set(t_out)):
                    f1 = {k: round(d.get(typ, {}).get("f1", 0.0), 2) for k, d in
                          (("teacher_in", t_in), ("student_in", s_in), ("teacher_out", t_out), ("student_out", s_out))}
                    per_type.append({"model": name, "language": lang, "in_domain_test": in_dom[lang][0],
                                     "out_of_domain_test": test, "type": typ, **f1,
                                     "in_domain": _ratio(f1["student_in"], f1["teacher_in"]),
                                     "out_of_domain": _ratio(f1["student_out"], f1["teacher_out"]),
                                     "entities_out": t_out.get(typ, {}).get("support", 0)})
    targets = {}
    base_in = {(r["language"], r["out_of_domain_test"]): r["in_domain"] for r in retention if r["model"] == names[0]}

    def low(xs):  # the lowest known retention (None: no teacher F1 to compare with)
        xs = [x for x in xs if x is not None]
        return min(xs) if xs else None

    for name in names:
        rows = [r for r in retention if r["model"] == name]
        out_min = low(r["out_of_domain"] for r in rows)
        org_min = low(p["out_of_domain"] for p in per_type if p["model"] == name and p["type"] == "ORG")
        ins = [(r["in_domain"], base_in.get((r["language"], r["out_of_domain_test"]))) for r in rows]
        ins = [(a, b) for a, b in ins if a is not None and b is not None]
        targets[name] = {
            "out_of_domain_min": out_min, "out_of_domain_met": None if out_min is None else out_min >= TARGET_OUT,
            "in_domain_not_lower_than": names[0],
            "in_domain_met": all(a >= b - 1e-9 for a, b in ins) if ins else None,
            "org_out_of_domain_min": org_min, "org_met": None if org_min is None else org_min >= TARGET_ORG,
        }
    protocol = {
        "languages": cfg.data.languages, "labeled_budget": cfg.data.labeled_budget,
        "selection_slice": cfg.data.val_size, "transfer_limit_per_language": cfg.transfer.limit,
        "in_domain": {lang: f"{in_dom[lang][0]}" + (f" (first {cfg.data.dev_limit})" if cfg.data.dev_limit else "")
                      for lang in cfg.data.languages},
        "out_of_domain": {lang: {t: str(p) for t, (p, _) in tests.items()} for lang, tests in ood.items()},
        "ood_limit": bench.get("ood_limit"), "tag_map": bench.get("tag_map"),
        "metric": "seqeval entity F1, IOB2 strict; retention = student F1 / teacher F1 on the same test",
        "teacher": cfg.teacher.model, "student": to_dict(cfg.student),
    }
    return {"format": FORMAT, "retention": retention, "scores": scores, "per_type": per_type,
            "targets": {"out_of_domain": TARGET_OUT, "org_out_of_domain": TARGET_ORG, "variants": targets},
            "variants": {n: bench["variants"][n] for n in names}, "protocol": protocol, "timings": timings,
            "provenance": prov}


def blocks(s: dict) -> list:
    """``results.md``: the two retentions side by side, per entity type, the targets."""
    f1 = {(r["model"], r["language"], r["test"]): r["f1"] for r in s["scores"]}
    rows = []
    for r in s["retention"]:
        m, lang, i, o = r["model"], r["language"], r["in_domain_test"], r["out_of_domain_test"]
        rows.append([m, lang, o, num(f1[("teacher", lang, i)]), num(f1[(m, lang, i)]), pct(_pc(r["in_domain"])),
                     num(f1[("teacher", lang, o)]), num(f1[(m, lang, o)]), pct(_pc(r["out_of_domain"]))])
    types = [[q["model"], q["language"], q["out_of_domain_test"], q["type"], str(q["entities_out"]),
              num(q["teacher_in"]), num(q["student_in"]), pct(_pc(q["in_domain"])), num(q["teacher_out"]),
              num(q["student_out"]), pct(_pc(q["out_of_domain"]))] for q in s["per_type"]]
    t = s["targets"]

    def met(x):
        return "–" if x is None else ("yes" if x else "**no**")

    verdicts = [[n, pct(_pc(v["out_of_domain_min"])), met(v["out_of_domain_met"]), met(v["in_domain_met"]),
                 pct(_pc(v["org_out_of_domain_min"])), met(v["org_met"])] for n, v in t["variants"].items()]
    p = s["protocol"]
    return [
        Heading(1, "Cross-domain benchmark (issue 17)"),
        Para(f"Command: `{s['provenance']['command']}`"),
        Para(f"Trained on the in-domain data of {', '.join(p['languages'])} ({p['labeled_budget']} labeled sentences a language, "
             f"the last {p['selection_slice']} for selection; {p['transfer_limit_per_language']} transfer "
             f"sentences a language); teacher `{p['teacher']}`. In domain: "
             + ", ".join(f"{lang} {v}" for lang, v in p["in_domain"].items())
             + f"; out of domain: {', '.join(t for ts in p['out_of_domain'].values() for t in ts)} "
             f"(tags mapped {json.dumps(p['tag_map'])}). {p['metric']}. The student is each variant's final one."),
        Para("Variants (config overrides of the base): "
             + "; ".join(f"**{n}** `{json.dumps(o)}`" for n, o in s["variants"].items())),
        Heading(2, "Retention in domain and out of domain"),
        Table(["variant", "lang", "out-of-domain test", "teacher in", "student in", "kept in", "teacher out",
               "student out", "kept out"], rows, set(range(3, 9))),
        Heading(2, "Targets"),
        Para(f"Out-of-domain retention >= {t['out_of_domain']:.0%} on every test; in-domain retention not lower "
             f"than the first variant's; ORG out of domain >= {t['org_out_of_domain']:.0%} of the teacher's ORG F1."),
        Table(["variant", "min kept out", "out >= target", "in not lower", "min ORG kept out", "ORG >= target"],
              verdicts, {1, 4}),
        Heading(2, "Per entity type"),
        Table(["variant", "lang", "out-of-domain test", "type", "entities out", "teacher in", "student in",
               "kept in", "teacher out", "student out", "kept out"], types, set(range(4, 11))),
        Para("Seconds: " + json.dumps(s["timings"])),
    ]


def _pc(x: float | None) -> float | None:
    return None if x is None else 100 * x


def main(argv=None) -> int:
    p = preamble.parser(__doc__)
    p.add_argument("--config", default="benchmarks/configs/cross_domain.yaml")
    p.add_argument("--run", default="runs/cross-domain", help="working directory (teacher, transfer sets, students)")
    p.add_argument("--results", default="benchmarks/results/cross-domain", help="where summary.json/results.md go")
    p.add_argument("--variants", nargs="*", help="which variants (default: the config's default_variants)")
    p.add_argument("--quick", action="store_true", help="tiny random models, a few sentences: a smoke test")
    args = p.parse_args(argv)
    command = preamble.start("cross_domain", argv)
    run_dir, results = Path(args.run), Path(args.results)
    if args.quick and args.run == p.get_default("run"):
        run_dir = run_dir.with_name(run_dir.name + "-quick")
    if args.quick and args.results == p.get_default("results"):
        results = Path("runs/cross-domain-quick/results")  # never over the committed results
    run(args.config, run_dir, results, args.variants, args.quick, not args.quiet, command)
    print((results / "results.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

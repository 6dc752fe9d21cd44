"""Staged-distillation benchmark: teacher, gold-only BiLSTM, staged students, XtremeDistil
preset and a small Transformer, all on one teacher and one labeled transfer set.

    python -m benchmarks.staged --config benchmarks/configs/staged.yaml \
        --run runs/bench --results benchmarks/results/staged

Every step is resumable (rerun the same command after an interruption). Writes
``summary.json`` (protocol + one entry per model) and ``results.md`` (generated from it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
from pathlib import Path

from xdistil.config import RunConfig, from_dict, load_yaml, save_json, to_dict

# Variants: a gold-only BiLSTM (no teacher), the staged BiLSTM (hard -> +soft -> +intermediate),
# the staged BiLSTM trained further on soft targets, the XtremeDistil order, and a small
# Transformer. Their stage lists live in the config.
VARIANTS = ["bilstm-gold-only", "bilstm-staged", "bilstm-staged-long", "bilstm2-staged-long", "bilstm-xtremedistil",
            "transformer"]


def variant_cfg(base: RunConfig, overrides: dict) -> RunConfig:
    raw = to_dict(base)
    for section, values in overrides.items():
        raw[section].update(values)
    return from_dict(RunConfig, raw)


def run(config: str, run_dir: Path, results: Path, only: list[str] | None, progress: bool) -> dict:
    from xdistil.labeling import label_transfer
    from xdistil.pipeline import DevScorer
    from xdistil.stages import distill
    from xdistil.teachers import train_teacher

    raw = load_yaml(config)
    variant_overrides = raw.pop("variants", {})
    base = from_dict(RunConfig, raw)
    run_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    teacher = train_teacher(base, run_dir / "teacher", progress)
    # the training time recorded by the (possibly earlier) run that trained it
    timings["teacher_s"] = json.loads((teacher / "xdistil_teacher.json").read_text())["seconds"]
    transfer = label_transfer(base, [teacher], run_dir / "transfer", progress)
    tp = json.loads((transfer / "manifest.json").read_text())["throughput"]
    timings["label_s"] = round(tp["sentences_labeled_this_run"] / tp["label_sentences_per_s"], 1) \
        if tp["label_sentences_per_s"] else None
    evaluate = DevScorer(base, progress, cache=run_dir / "eval_cache.json")

    models = []
    t = evaluate("teacher", teacher)
    models.append({"name": "teacher", "role": "teacher", "arch": base.teacher.model, "params": t["params"],
                   "f1": {k: v["f1"] for k, v in t["dev"].items()}, "f1_avg": t["f1_avg"]})
    stage_logs = {}
    for name in VARIANTS:
        if only and name not in only:
            continue
        cfg = variant_cfg(base, variant_overrides.get(name, {}))
        dirs = distill(cfg, transfer, teacher, run_dir / f"distill-{name}", progress)
        stage_logs[name] = json.loads((run_dir / f"distill-{name}" / "metrics.json").read_text())
        # training time as recorded by the steps themselves (reruns reuse finished steps)
        timings[f"{name}_s"] = round(sum(step["seconds"] for st in stage_logs[name]["stages"]
                                         for step in st["steps"]), 1)
        for d in dirs:
            m = evaluate(f"{name}/{d.name}", d)
            models.append({"name": f"{name}/{d.name}", "role": "student", "arch": cfg.student.arch,
                           "params": m["params"], "f1": {k: v["f1"] for k, v in m["dev"].items()},
                           "f1_avg": m["f1_avg"], "compression": t["params"] / m["params"],
                           "retained_pct": 100 * m["f1_avg"] / t["f1_avg"],
                           "stages": [s.name for s in cfg.distill.resolved_stages()][: dirs.index(d) + 1],
                           "student": dataclasses.asdict(cfg.student),
                           "distill": to_dict(cfg.distill)})
    manifest = json.loads((transfer / "manifest.json").read_text())
    summary = {
        "protocol": {
            "languages": base.data.languages, "labeled_budget": base.data.labeled_budget,
            "selection_slice": f"last {base.data.val_size} sentences of the budget",
            "transfer": {"sources": base.transfer.sources, "limit_per_language": base.transfer.limit,
                         "counts": manifest["counts"]},
            "evaluation": "dev" + (f" (first {base.data.dev_limit})" if base.data.dev_limit else " (whole file)"),
            "metric": "seqeval entity F1, IOB2 strict", "data": "../shared/data/wikiann",
        },
        "models": models,
        "timings": timings,
        "labeling_throughput": manifest["throughput"],
        "stage_logs": stage_logs,
        "teacher_training": json.loads((teacher / "xdistil_teacher.json").read_text())["history"],
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "command": "python -m benchmarks.staged " + " ".join(sys.argv[1:]),
        "config": to_dict(base),
    }
    results.mkdir(parents=True, exist_ok=True)
    save_json(summary, results / "summary.json")
    (results / "results.md").write_text(markdown(summary), encoding="utf-8")
    print(markdown(summary))
    return summary


def markdown(summary: dict) -> str:
    langs = summary["protocol"]["languages"]
    teacher = next(m for m in summary["models"] if m["role"] == "teacher")
    lines = ["# Staged distillation benchmark", "",
             f"Command: `{summary['command']}`", "",
             "Protocol: " + json.dumps({k: v for k, v in summary["protocol"].items() if k != "transfer"}), "",
             "Transfer set per language: " + ", ".join(
                 f"{lang}: {sum(c.values())} sentences ({c.get('transfer', 0)} transfer-only)"
                 for lang, c in summary["protocol"]["transfer"]["counts"].items()), "",
             "| model | params | compression | " + " | ".join(langs) + " | avg | % of teacher |",
             "|---|---:|---:|" + "---:|" * len(langs) + "---:|---:|"]
    for m in summary["models"]:
        comp = teacher["params"] / m["params"]
        keep = 100 * m["f1_avg"] / teacher["f1_avg"]
        lines.append(f"| {m['name']} | {m['params'] / 1e6:.2f}M | {comp:.1f}x | "
                     + " | ".join(f"{m['f1'][lang]:.2f}" for lang in langs)
                     + f" | {m['f1_avg']:.2f} | {keep:.1f}% |")
    lines += ["", "Timings (seconds, 2 CPU cores): " + json.dumps(summary["timings"]), "",
              "Rows `NAME/stageK-X` are the student of variant NAME after its K-th stage "
              "(the staged preset: hard -> +soft -> +intermediate), so each stage's gain or loss is visible.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="benchmarks/configs/staged.yaml")
    p.add_argument("--run", default="runs/bench", help="working directory (models, transfer set)")
    p.add_argument("--results", default="benchmarks/results/staged", help="where summary.json/results.md go")
    p.add_argument("--only", nargs="*", help="only these variants: " + ", ".join(VARIANTS))
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    run(args.config, Path(args.run), Path(args.results), args.only, not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())

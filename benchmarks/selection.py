"""Model selection over seeds: the demo recipe's final retention with each selection method.

    python -m benchmarks.selection [--seeds 13 14 15] [--methods gold teacher] [--run runs/selection]

One teacher and one transfer set (the demo's, fine-tuned and labeled once in ``--run``), then
for every method and seed one `xdistil distill` of the demo recipe that differs only in
``distill.select`` and ``distill.seed``. Each final student is scored on two disjoint slices of
the WikiANN dev files, which are all this data has with gold tags: *dev* = the first 500
sentences a language (what the demo reports and the recipe may be tuned on) and *test* =
sentences 500-999 (never looked at while choosing). Retention = student / teacher average F1
on the same slice. The spread over seeds (max - min of the final retention) is what the
lottery of issue 33 is about: with selection on 100 gold sentences a language it was 5.5
points.

Writes the ``selection`` list of ``benchmarks/results/transfer-size/summary.json`` (other
keys kept) and ``selection.md`` beside it. Every distillation is its own process and is
reused when finished, so an interrupted run resumes.
"""

from __future__ import annotations

import gzip
import json
import statistics
import time
from pathlib import Path

from xdistil_export.atomic import write_json, write_text

from benchmarks import preamble

LANGS = ("de", "ar", "hi")
SLICES = {"dev": (0, 500), "test": (500, 1000)}
RESULTS = Path(__file__).resolve().parent / "results" / "transfer-size"
# What each method changes in the demo preset (xdistil/presets/demo.yaml):
# gold: the selection of the releases before issue 33 (100 gold sentences a language; a stage
#   kept only if it beats the one before; soft-long stopped by patience 2 from its first epoch);
# teacher-margin: agreement with the teacher on held-out transfer sentences, a stage kept unless
#   the one before is 0.5 F1 better, but still patience from the first epoch;
# teacher: the preset (teacher-margin, and the long stage runs all its epochs: min_epochs).
METHODS = {"gold": {"select": "gold", "keep_margin": 0.0, "min_epochs": 0},
           "teacher-margin": {"select": "teacher", "min_epochs": 0},
           "teacher": {}}


def method_config(method: str, out: Path) -> Path:
    """The demo preset with ``method``'s changes, written to ``out`` (a config file for --config)."""
    import yaml

    from xdistil.config import load_yaml

    raw = load_yaml("demo")
    change = dict(METHODS[method])
    if "min_epochs" in change:
        for st in raw["distill"]["stages"]:
            st["min_epochs"] = change["min_epochs"]
        del change["min_epochs"]
    raw["distill"].update(change)
    write_text(out, yaml.safe_dump(raw, sort_keys=False))
    return out



def slices(data: Path, out: Path) -> dict[str, list[Path]]:
    """The dev and test slices of each language's dev file, written once as CoNLL."""
    files: dict[str, list[Path]] = {name: [] for name in SLICES}
    for lang in LANGS:
        sents = gzip.open(data / "wikiann" / lang / "dev.tsv.gz", "rt", encoding="utf-8").read().strip().split("\n\n")
        for name, (a, b) in SLICES.items():
            path = out / f"{lang}.{name}.tsv"
            if not path.is_file():
                write_text(path, "\n\n".join(sents[a:b]) + "\n")
            files[name].append(path)
    return files


def scores(model: Path, files: dict[str, list[Path]]) -> dict[str, dict[str, float]]:
    """Slice -> language -> F1 (and "avg")."""
    out = {}
    for name, paths in files.items():
        res = json.loads(preamble.xdistil("-q", "evaluate", str(model), *map(str, paths), "--json"))
        f1 = {lang: res[str(p)]["f1"] for lang, p in zip(LANGS, paths, strict=True)}
        out[name] = {**f1, "avg": statistics.fmean(f1.values())}
    return out


def final_stage(out: Path) -> Path:
    stages = sorted((p for sub in ("students", "distill") for p in (out / sub).glob("stage[0-9]*-*")
                     if (p / "xdistil_student.json").is_file()), key=lambda p: int(p.name[5:].split("-")[0]))
    if not stages:
        raise SystemExit(f"{out}: no stage folders")
    return stages[-1]


def main(argv=None) -> int:
    p = preamble.parser(__doc__)
    p.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--run", type=Path, default=Path("runs/selection"))
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--precision", default="fp32", help="of all steps (fp32: what the lottery was measured in)")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    command = preamble.start("selection", argv, args.quiet)
    run = args.run
    common = ["--config", "demo", "--set", f"precision={args.precision}"]
    teacher, transfer = run / "teacher", run / "transfer"
    t0 = time.perf_counter()
    preamble.xdistil("-q", "teacher", "train", *common, "--no-eval", "--out", str(teacher))
    preamble.xdistil("-q", "label", *common, "--teacher-dir", str(teacher), "--out", str(transfer))
    prep_s = time.perf_counter() - t0
    files = slices(args.data, run / "eval")
    done_file = run / "rows.json"
    state = json.loads(done_file.read_text()) if done_file.is_file() else {"rows": []}
    if "teacher" not in state:
        state["teacher"] = scores(teacher, files)
        write_json(done_file, state)
    for seed in args.seeds:
        for method in args.methods:
            if any(r["method"] == method and r["seed"] == seed for r in state["rows"]):
                continue
            out = run / f"{method}-{seed}"
            start = time.perf_counter()
            cfg = method_config(method, run / f"{method}.yaml")
            preamble.xdistil("-q", "distill", "--config", str(cfg), "--set", f"precision={args.precision}",
                     "--seed", str(seed), "--no-eval",
                     "--teacher-dir", str(teacher), "--transfer", str(transfer), "--out", str(out))
            seconds = time.perf_counter() - start
            student = final_stage(out)
            f1 = scores(student, files)
            stages = json.loads((student.parent / "metrics.json").read_text())["stages"]
            last = stages[-1]["phases"][-1]
            train_s = sum(ph["seconds"] for st in stages for ph in st["phases"])
            state["rows"].append({"method": method, "seed": seed, "student": student.name, "f1": f1,
                                  "distill_s": round(train_s, 1), "wall_s": round(seconds, 1),
                                  "last_stage_epochs": len(last["history"]),
                                  "last_stage_kept_start": last["best_epoch"] == 0})
            write_json(done_file, state)
            print(f"{method} seed {seed}: dev {f1['dev']['avg']:.2f} test {f1['test']['avg']:.2f} "
                  f"({student.name}, {seconds:.0f} s)", flush=True)
    teacher_f1 = state["teacher"]
    selection = [{"method": r["method"], "seed": r["seed"], "final": r["student"],
                  **{f"retention_{s}": r["f1"][s]["avg"] / teacher_f1[s]["avg"] for s in SLICES},
                  "retention": r["f1"]["test"]["avg"] / teacher_f1["test"]["avg"],
                  "student_f1": {s: r["f1"][s] for s in SLICES}, "distill_s": r["distill_s"],
                  "last_stage_epochs": r.get("last_stage_epochs"), "last_stage_kept_start": r.get("last_stage_kept_start")}
                 for r in state["rows"]]
    args.results.mkdir(parents=True, exist_ok=True)
    summary_path = args.results / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    from xdistil.provenance import machine as _machine
    from xdistil.provenance import usable_cpus

    def machine() -> dict:  # the distillations ran in child processes on every usable core
        return _machine(usable_cpus())
    summary.setdefault("rows", [])
    summary.update({"selection": selection,
                    "selection_protocol": {"teacher_f1": teacher_f1, "slices": {k: list(v) for k, v in SLICES.items()},
                                           "precision": args.precision, "machine": machine(), "command": command,
                                           "teacher_and_label_s": round(prep_s, 1)}})
    for key in ("labeling", "peer"):
        summary.setdefault(key, [])
    write_json(summary_path, summary)
    write_text(args.results / "selection.md", markdown(selection, teacher_f1, command, machine()))
    print(markdown(selection, teacher_f1, command, machine()))
    return 0


def markdown(selection: list[dict], teacher_f1: dict, command: str, machine: dict) -> str:
    lines = [f"# Model selection over seeds (the demo recipe, {machine['cpu']}, {machine['threads']} threads)", "",
             f"Teacher average F1: dev {teacher_f1['dev']['avg']:.2f}, test {teacher_f1['test']['avg']:.2f} "
             "(dev = WikiANN dev sentences 0-499 a language, test = 500-999; de ar hi).", "",
             "| method | seed | last stage: epochs run, weights kept | dev F1 | dev retention | test F1 | test retention "
             "| training s |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in selection:
        kept = "the stage before's" if r["last_stage_kept_start"] else "its own best"
        lines.append(f"| {r['method']} | {r['seed']} | {r['last_stage_epochs']}, {kept} | {r['student_f1']['dev']['avg']:.2f} | "
                     f"{100 * r['retention_dev']:.1f} % | {r['student_f1']['test']['avg']:.2f} | "
                     f"{100 * r['retention_test']:.1f} % | {r['distill_s']:.0f} |")
    lines += ["", "| method | seeds | dev mean | dev spread | test mean | test spread |", "|---|---:|---:|---:|---:|---:|"]
    for m in dict.fromkeys(r["method"] for r in selection):
        rs = [r for r in selection if r["method"] == m]
        d, t = [100 * r["retention_dev"] for r in rs], [100 * r["retention_test"] for r in rs]
        lines.append(f"| {m} | {len(rs)} | {statistics.fmean(d):.1f} % | {max(d) - min(d):.1f} | "
                     f"{statistics.fmean(t):.1f} % | {max(t) - min(t):.1f} |")
    lines += ["", "Spread = max - min of the final retention over the seeds, in points (target: <= 1). "
              "Training s: the optimizer's time summed over the stages (selection evaluations included), "
              "measured with one job on the 2 cores.", "",
              f"Reproduce: `{command}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

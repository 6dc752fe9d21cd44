"""Distillation throughput against F1 (issue 33, step 1): the grid in benchmarks/configs/distill_speed.yaml.

    python -m benchmarks.distill_speed [--demo runs/demo] [--run runs/distill-speed] [--variants b64 b256]

Every (variant, seed) is one `xdistil distill` of the base preset with the variant's changes,
from the `make demo` run's teacher and transfer set; the final student is scored on the
dev/test slices of `benchmarks.selection`. Throughput per stage from the stage's fit log:
sentences trained (optimizer steps x the stage's batch size) per second of the fit, with the
selection evaluations' seconds beside it. Distillations run one at a time (child processes)
and are reused when finished, so an interrupted run resumes. Writes ``summary.json`` and
``results.md`` to ``--out``.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import yaml
from xdistil_export.atomic import write_json, write_text

from benchmarks import preamble
from benchmarks.selection import final_stage, scores, slices

CONFIG = Path(__file__).resolve().parent / "configs" / "distill_speed.yaml"
RESULTS = Path(__file__).resolve().parent / "results" / "distill-speed"


def variant_config(grid: dict, name: str) -> dict:
    """The base preset with variant ``name``'s changes (a raw config)."""
    from xdistil.config import apply_overrides, load_yaml

    change = grid["variants"][name] or {}
    raw = load_yaml(grid["base"])
    for stage in raw["distill"]["stages"]:
        stage.update(change.get("every_stage", {}))
    return apply_overrides(raw, {"distill": change.get("distill", {})})


def throughput(student: Path, raw: dict) -> list[dict]:
    """Per stage: sentences trained, seconds (selection included) and selection seconds, from the fit logs."""
    from xdistil.run.layout import DISTILL_LOG

    batch = {st["name"]: st["batch_size"] for st in raw["distill"]["stages"]}
    out = []
    for st in json.loads((student.parent / DISTILL_LOG).read_text())["stages"]:
        secs = sum(ph["seconds"] for ph in st["phases"])
        out.append({"stage": st["stage"], "sentences": sum(ph["steps"] for ph in st["phases"]) * batch[st["stage"]],
                    "seconds": round(secs, 1), "select_s": round(sum(ph.get("select_s") or 0 for ph in st["phases"]), 1)})
    return out


def main(argv=None) -> int:
    p = preamble.parser(__doc__)
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--demo", type=Path, default=Path("runs/demo"), help="a `make demo` run (teacher, transfer set)")
    p.add_argument("--run", type=Path, default=Path("runs/distill-speed"))
    p.add_argument("--variants", nargs="+", help="only these (default: the grid's default_variants, else all)")
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    command = preamble.start("distill_speed", argv, args.quiet)
    grid = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    names = args.variants or grid.get("default_variants") or list(grid["variants"])
    files = slices(args.data, args.run / "eval")
    state_file = args.run / "rows.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {"rows": []}
    if "teacher" not in state:
        state["teacher"] = scores(args.demo / "teacher", files)
        write_json(state_file, state)
    for seed in grid["seeds"]:
        for name in names:
            if any(r["variant"] == name and r["seed"] == seed for r in state["rows"]):
                continue
            raw = variant_config(grid, name)
            cfg = args.run / f"{name}.yaml"
            write_text(cfg, yaml.safe_dump(raw, sort_keys=False))
            out = args.run / f"{name}-{seed}"
            t0 = time.perf_counter()
            preamble.xdistil("-q", "distill", "--config", str(cfg), "--seed", str(seed), "--no-eval", "--teacher-dir",
                             str(args.demo / "teacher"), "--transfer", str(args.demo / "transfer"), "--out", str(out))
            student = final_stage(out)
            state["rows"].append({"variant": name, "seed": seed, "f1": scores(student, files),
                                  "stages": throughput(student, raw), "wall_s": round(time.perf_counter() - t0, 1)})
            write_json(state_file, state)
    from xdistil.provenance import machine

    summary = summarise(state, names, grid, machine(), command)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "summary.json", summary)
    write_text(args.out / "results.md", markdown(summary))
    print(markdown(summary))
    return 0


def summarise(state: dict, names: list[str], grid: dict, machine: dict, command: str) -> dict:
    teacher = state["teacher"]
    variants = []
    for name in names:
        rows = [r for r in state["rows"] if r["variant"] == name]
        if not rows:
            continue
        sents = [sum(s["sentences"] for s in r["stages"]) for r in rows]
        secs = [sum(s["seconds"] for s in r["stages"]) for r in rows]
        sel = [sum(s["select_s"] for s in r["stages"]) for r in rows]
        ret = {sl: [r["f1"][sl]["avg"] / teacher[sl]["avg"] for r in rows] for sl in ("dev", "test")}
        variants.append({"variant": name, "changes": grid["variants"][name] or {}, "seeds": [r["seed"] for r in rows],
                         "sentences_per_s": round(statistics.fmean(n / s for n, s in zip(sents, secs, strict=True)), 1),
                         "train_sentences_per_s": round(statistics.fmean(
                             n / (s - x) for n, s, x in zip(sents, secs, sel, strict=True)), 1),
                         "select_share": round(statistics.fmean(x / s for x, s in zip(sel, secs, strict=True)), 3),
                         "fit_s": round(statistics.fmean(secs), 1),
                         "retention_dev": round(statistics.fmean(ret["dev"]), 4),
                         "retention_test": round(statistics.fmean(ret["test"]), 4),
                         "retention_dev_by_seed": [round(x, 4) for x in ret["dev"]],
                         "retention_test_by_seed": [round(x, 4) for x in ret["test"]],
                         "stages": {r["seed"]: r["stages"] for r in rows}})
    return {"variants": variants, "teacher_f1": teacher, "base": grid["base"], "machine": machine, "command": command}


def markdown(s: dict) -> str:
    m = s["machine"]
    lines = [f"# Distillation throughput ({m['cpu']}, {m['threads']} threads)", "", f"Command: `{s['command']}`", "",
             f"The {s['base']} recipe from the `make demo` run's teacher and transfer set; teacher average F1 dev "
             f"{s['teacher_f1']['dev']['avg']:.2f}, test {s['teacher_f1']['test']['avg']:.2f} (de ar hi).", "",
             "| variant | changes | seeds | sentences/s (fit) | without selection | selection share | fit s | "
             "dev retention (by seed) | test retention (by seed) |", "|---|---|---|---:|---:|---:|---:|---|---|"]
    base = s["variants"][0] if s["variants"] else None
    for v in s["variants"]:
        speed = f"{v['sentences_per_s']:.0f}" + (f" ({v['sentences_per_s'] / base['sentences_per_s']:.2f}x)"
                                                  if base and v is not base else "")
        lines.append(f"| {v['variant']} | `{json.dumps(v['changes'])}` | {', '.join(map(str, v['seeds']))} | {speed} | "
                     f"{v['train_sentences_per_s']:.0f} | {100 * v['select_share']:.1f} % | {v['fit_s']:.0f} | "
                     f"{100 * v['retention_dev']:.1f} % ({', '.join(f'{100 * x:.1f}' for x in v['retention_dev_by_seed'])}) | "
                     f"{100 * v['retention_test']:.1f} % ({', '.join(f'{100 * x:.1f}' for x in v['retention_test_by_seed'])}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())

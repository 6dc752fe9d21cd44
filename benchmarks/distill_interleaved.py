"""Distillation throughput side by side: the demo grid's variants' fits interleaved in one process.

    python -m benchmarks.distill_interleaved [--variants demo h128-bf16 ...] [--steps 150] [--rounds 2]

The grid's distill-speed views time each cell alone, but a view's cells may come from runs
hours apart on a shared machine, where the same cell's seconds moved by 10 %. Here every
variant's fit runs in turn, ``--rounds`` times (A B C A B C ...), on the grid's teacher and
transfer set (seed 13, built by ``python -m benchmarks.demo_grid distill-speed-bf16`` first),
every stage one epoch of ``--steps`` batches of 64 sentences (the same sentences at another
batch size), so each ratio to the first variant is measured side by side. Speed only: the
retention of each variant is the view's, over 3 seeds at the recipe's epochs.
Results: ``interleaved.json`` and ``interleaved.md`` in ``--results``.
"""

from __future__ import annotations

import shutil
import statistics
import sys
from pathlib import Path

from xdistil_export.atomic import write_json, write_text

from benchmarks import grid, preamble
from xdistil.provenance import cpu_name, machine, usable_cpus

CONFIG = Path(__file__).resolve().parent / "configs" / "demo_grid.yaml"


def short_config(g: grid.Grid, variant: str, seed: int, steps: int):
    """The variant's config with every stage one epoch of ``steps`` batches of 64 sentences
    (as many sentences at its own batch size)."""
    from xdistil.config import RunConfig, from_dict, to_dict

    d = to_dict(g.config("control", variant, seed))
    d["distill"]["stages"] = [dict(s, epochs=1, min_epochs=0) for s in d["distill"]["stages"]]
    d["distill"]["max_steps_per_epoch"] = max(1, steps * 64 // d["distill"]["stages"][0]["batch_size"])
    return from_dict(RunConfig, d)


def fit_rate(cfg, out: Path, reuse: Path) -> dict:
    """Distil ``cfg`` into ``out`` (afresh; the teacher and transfer set linked from ``reuse``):
    its training sentences, the fits' seconds and sentences/s."""
    from xdistil.run.layout import RunDir, read_distill_log
    from xdistil.runner import Runner

    shutil.rmtree(out, ignore_errors=True)
    got = Runner(cfg, RunDir(out), reuse=[reuse], progress=False).run(only=("teacher", "label", "distill"))
    log = read_distill_log(got.student)
    sizes = [s.batch_size for s in cfg.distill.resolved_stages()]
    sents = sum(sum(ph["steps"] for ph in st["phases"]) * b for st, b in zip(log["stages"], sizes, strict=True))
    secs = sum(ph["seconds"] for st in log["stages"] for ph in st["phases"])
    return {"sentences": sents, "seconds": round(secs, 1), "sentences_per_s": round(sents / secs, 1)}


def page(summary: dict) -> str:
    m, first = summary["machine"], summary["variants"][0]["variant"]
    lines = [f"# Distillation throughput, interleaved ({cpu_name(m)}, {m['threads']} threads)", "",
             f"Command: `{summary['command']}`", "",
             f"Every stage one epoch of {summary['steps']} batches of 64 sentences (seed 13), the variants' fits in "
             f"turn, {summary['rounds']} rounds. Speed only: each variant's retention is on the distill-speed page "
             "beside this one.", "",
             "| variant | sentences/s by round | mean | vs " + first + " |", "|---|---|---:|---:|"]
    for v in summary["variants"]:
        by_round = ", ".join(f"{r['sentences_per_s']:.0f}" for r in v["rounds"])
        lines.append(f"| {v['variant']} | {by_round} | "
                     f"{v['sentences_per_s']:.0f} | {v['ratio']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = preamble.parser(__doc__)
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--run", type=Path, default=Path("runs/demo-grid"), help="the grid's run (its control cells)")
    p.add_argument("--variants", nargs="+", default=["demo", "h128-bf16", "h128-b128-bf16-locked"])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--results", type=Path, default=Path("benchmarks/results/distill-speed/bf16"))
    args = p.parse_args(argv)
    command = preamble.start("distill_interleaved", argv, args.quiet)
    g = grid.Grid.load(args.config)
    cells = args.run / "control"
    if not any(cells.glob("*/transfer")):
        p.error(f"{cells} holds no grid cell to take the teacher and transfer set from: "
                "run python -m benchmarks.demo_grid distill-speed-bf16 first")
    rounds: dict[str, list[dict]] = {v: [] for v in args.variants}
    for r in range(args.rounds):
        for v in args.variants:
            got = fit_rate(short_config(g, v, args.seed, args.steps), args.run / "interleaved" / v, cells)
            rounds[v].append(got)
            print(f"round {r + 1} {v}: {got['sentences_per_s']:.0f} sentences/s", flush=True)
    mean = {v: statistics.fmean(x["sentences_per_s"] for x in rs) for v, rs in rounds.items()}
    variants = [{"variant": v, "rounds": rs, "sentences_per_s": round(mean[v], 1),
                 "ratio": round(mean[v] / mean[args.variants[0]], 3)} for v, rs in rounds.items()]
    summary = {"variants": variants, "steps": args.steps, "rounds": args.rounds, "seed": args.seed,
               "machine": machine(usable_cpus()), "command": command}
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / "interleaved.json", summary)
    text = page(summary)
    write_text(args.results / "interleaved.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

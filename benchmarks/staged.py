"""Staged-distillation benchmark: teacher, gold-only BiLSTM, staged students, XtremeDistil
preset and a small Transformer, all on one teacher and one labeled transfer set.

    python -m benchmarks.staged --config benchmarks/configs/staged.yaml \
        --run runs/bench --results benchmarks/results/staged

``--run`` is the base config's run folder (its teacher and transfer set, no students); each
variant is a run folder of its own inside it (``--run/VARIANT``, `xdistil.runner`), the teacher
and transfer set linked in from the base run, so they are trained and labeled once. Every step
is resumable (rerun the same command after an interruption). Writes ``summary.json`` (a
`xdistil.results.Summary`: protocol + one scored row per model, each student with its variant,
stage and folder) and ``results.md`` (rendered from it by the report's block renderer;
``xdistil report`` reads the same file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks import preamble
from xdistil.config import RunConfig, apply_overrides, from_dict, load_yaml, to_dict
from xdistil.provenance import provenance
from xdistil.report import Heading, Para, Table, num, params, pct, times, write_page
from xdistil.results import ModelScores, Provenance, Summary, stage_of
from xdistil.run import RunDir
from xdistil.run.layout import read_distill_log, read_transfer_manifest


def variant_cfg(base: RunConfig, overrides: dict) -> RunConfig:
    """The base config with a variant's sections merged in (`xdistil.config.apply_overrides`)."""
    return from_dict(RunConfig, apply_overrides(to_dict(base), overrides))


def run(config: str, run_dir: Path, results: Path, only: list[str] | None, progress: bool) -> dict:
    from xdistil.evaluate import DevScorer
    from xdistil.models import DONE_MARKER
    from xdistil.runner import Runner

    raw = load_yaml(config)
    variant_overrides = raw.pop("variants", {})
    if unknown := set(only or ()) - set(variant_overrides):
        raise ValueError(f"unknown variant(s) {sorted(unknown)}: the config has {', '.join(variant_overrides)}")
    base = from_dict(RunConfig, raw)
    got = Runner(base, RunDir(run_dir), progress=progress).run(only=("teacher", "label"))
    teacher, transfer = got.teacher, got.transfer
    manifest = read_transfer_manifest(transfer)
    tp = manifest["throughput"]
    trained = json.loads((teacher / DONE_MARKER).read_text())
    # the times recorded by the (possibly earlier) invocations that trained and labeled
    timings = {"teacher_s": trained["seconds"],
               "label_s": round(tp["sentences_labeled_this_run"] / tp["label_sentences_per_s"], 1)
               if tp["label_sentences_per_s"] else None}
    evaluate = DevScorer(base, progress, cache=run_dir / "eval_cache.json")

    t = evaluate("teacher", teacher)
    models = [ModelScores.from_eval("teacher", "teacher", t, arch=base.teacher.model, evaluated_by="benchmarks.staged")]
    stage_logs = {}
    for name, overrides in variant_overrides.items():  # in the config's order (a variant may start from one before)
        if only and name not in only:
            continue
        cfg = variant_cfg(base, overrides)
        students = Runner(cfg, RunDir(run_dir / name), reuse=[run_dir], progress=progress).run().students
        stage_logs[name] = read_distill_log(students[-1])
        # training time as recorded by the steps themselves (reruns reuse finished steps)
        timings[f"{name}_s"] = round(sum(step["seconds"] for st in stage_logs[name]["stages"]
                                         for step in st["phases"]), 1)
        for d in students:
            index, stage = stage_of(d)
            models.append(ModelScores.from_eval(
                f"{name}/{d.name}", "student", evaluate(f"{name}/{d.name}", d), arch=cfg.student.arch, stage=index,
                stage_name=stage, group=name, evaluated_by="benchmarks.staged",
                extra={"student": to_dict(cfg.student), "distill": to_dict(cfg.distill)}))
    protocol = {
        "languages": base.data.languages, "labeled_budget": base.data.labeled_budget,
        "selection_slice": f"last {base.data.val_size} sentences of the budget",
        "transfer": {"sources": base.transfer.sources, "limit_per_language": base.transfer.limit,
                     "counts": manifest["counts"]},
        "evaluation": "dev" + (f" (first {base.data.dev_limit})" if base.data.dev_limit else " (whole file)"),
        "metric": "seqeval entity F1, IOB2 strict", "data": "../shared/data/wikiann", "teacher": base.teacher.model,
    }
    command = "python -m benchmarks.staged " + " ".join(sys.argv[1:])
    summary = Summary(protocol, models, reference="teacher", title="Staged distillation benchmark", timings=timings,
                      provenance={"run": Provenance(**provenance(command))},
                      extra={"labeling_throughput": tp, "stage_logs": stage_logs,
                             "teacher_training": trained["history"],
                             "config": to_dict(base)})
    summary.write(results / "summary.json")
    write_page(blocks(summary), results)
    print((results / "results.md").read_text())
    return summary


def blocks(s: Summary) -> list:
    """``results.md``: the protocol, one row per model (F1 per language, % of the teacher), timings."""
    langs, t = s.languages, s.teacher
    counts = s.protocol["transfer"].get("counts", {})
    return [
        Heading(1, s.title or "Staged distillation benchmark"),
        Para(f"Command: `{s.provenance['run'].command}`"),
        Para("Protocol: " + json.dumps({k: v for k, v in s.protocol.items() if k != "transfer"})),
        Para("Transfer set per language: " + ", ".join(f"{lang}: {sum(c.values())} sentences "
                                                       f"({c.get('transfer', 0)} transfer-only)"
                                                       for lang, c in counts.items())),
        Table(["model", "params", "compression", *langs, "avg", "% of teacher"],
              [[m.name, params(m.params), times(t.params / m.params), *[num(m.f1[lang]) for lang in langs],
                num(m.f1_avg), pct(m.retained(t))] for m in s.models], set(range(1, len(langs) + 5))),
        Para("Timings (seconds, 2 CPU cores): " + json.dumps(s.timings)),
        Para("Rows `NAME/stageK-X` are the student of variant NAME after its K-th stage "
             "(the staged preset: hard -> +soft -> +intermediate), so each stage's gain or loss is visible."),
    ]


def main(argv=None) -> int:
    p = preamble.parser(__doc__)
    p.add_argument("--config", default="benchmarks/configs/staged.yaml")
    p.add_argument("--run", default="runs/bench", help="working directory (models, transfer set)")
    p.add_argument("--results", default="benchmarks/results/staged", help="where summary.json/results.md go")
    p.add_argument("--only", nargs="*", help="only these of the config's variants (default: all, in its order)")
    args = p.parse_args(argv)
    preamble.start("staged", argv)
    run(args.config, Path(args.run), Path(args.results), args.only, not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())

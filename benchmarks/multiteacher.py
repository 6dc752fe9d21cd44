"""Multi-teacher (MT-BERT) benchmark: single-teacher students against multi-teacher
students (uniform and MT-BERT weights), with teachers fine-tuned apart or co-finetuned.

    python -m benchmarks.multiteacher --config benchmarks/configs/multiteacher.yaml \
        --run runs/mt --results benchmarks/results/multiteacher

Steps, each resumable (rerun the same command after an interruption), each through the step
runner (`xdistil.runner`) into a run folder:

1. ``apart/<name>/teacher``: every teacher of the config fine-tuned alone (its own seed);
2. ``co/teacher``: the same teachers co-finetuned with one shared head (`xdistil.teachers.CoTeachers`);
3. ``apart/transfer``, ``co/transfer``: the transfer set labeled once by each group
   (every teacher's tags, logits and hidden layer per word);
4. per group, ``GROUP/<student>/distill``: every student of the config's ``variants`` (one per
   teacher, ``distill.teachers: [k]``; two of all teachers, ``teacher_weighting`` uniform /
   mtbert; one of the e5 teachers only), same student and stages throughout;
5. dev F1 of every teacher and student; ``summary.json`` (a `xdistil.results.Summary`, one
   row per model named ``GROUP/NAME``, its group in ``group``) and ``results.md`` (rendered
   by the report's block renderer).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks import preamble
from xdistil.config import RunConfig, apply_overrides, from_dict, load_yaml, to_dict
from xdistil.provenance import provenance
from xdistil.report import Heading, Para, Table, num, write_page
from xdistil.results import ModelScores, Provenance, Summary
from xdistil.run import RunDir
from xdistil.run.layout import read_distill_log, read_transfer_manifest

GROUPS = ("apart", "co")


def _cfg(base: dict, overrides: dict) -> RunConfig:
    return from_dict(RunConfig, apply_overrides(base, overrides))


def run(config: str, run_dir: Path, results: Path, progress: bool) -> dict:
    from xdistil.evaluate import DevScorer
    from xdistil.models import DONE_MARKER, GROUP_MARKER
    from xdistil.runner import Runner

    raw = load_yaml(config)
    teachers, variants = raw.pop("teachers"), raw.pop("variants")
    base = from_dict(RunConfig, raw)
    run_dir.mkdir(parents=True, exist_ok=True)
    evaluate = DevScorer(base, progress, cache=run_dir / "eval_cache.json")

    # 1-2. teachers: apart (one run each) and co-finetuned (one run for all)
    dirs: dict[str, list[Path]] = {"apart": [], "co": []}
    seconds: dict[str, float] = {}
    for t in teachers:
        d = Runner(_cfg(raw, {"teacher": {"model": t["model"], "seed": t["seed"]}}), RunDir(run_dir / "apart" / t["name"]),
                   progress=progress).run(only=("teacher",)).teacher
        dirs["apart"].append(d)
        seconds[f"teacher {t['name']}"] = json.loads((d / DONE_MARKER).read_text())["seconds"]
    co = RunDir(run_dir / "co")
    dirs["co"] = Runner(_cfg(raw, {"teacher": {"models": [t["model"] for t in teachers],
                                                        "seed": teachers[0]["seed"]}}),
                        co, progress=progress).run(only=("teacher",)).teachers
    seconds["teachers co-finetuned"] = json.loads((co.teacher / GROUP_MARKER).read_text())["seconds"]

    models, logs = [], {}
    for group in GROUPS:
        for t, d in zip(teachers, dirs[group], strict=True):
            models.append(ModelScores.from_eval(f"{group}/teacher {t['name']}", "teacher",
                                                evaluate(f"{group}/teacher/{t['name']}", d), arch=t["model"],
                                                group=group, evaluated_by="benchmarks.multiteacher"))
    # 3. one transfer set per group, labeled by all its teachers
    for group in GROUPS:
        transfer = Runner(base, RunDir(run_dir / group), given={"teacher": dirs[group]},
                          progress=progress).run(only=("label",)).transfer
        tp = read_transfer_manifest(transfer)["throughput"]
        if tp.get("label_sentences_per_s"):
            seconds[f"label {group}"] = round(tp["sentences_labeled_this_run"] / tp["label_sentences_per_s"], 1)
        # 4. students
        for name, over in variants.items():
            student = Runner(_cfg(raw, over), RunDir(run_dir / group / name.replace(" ", "-")),
                             given={"teacher": dirs[group], "label": transfer}, progress=progress
                             ).run(only=("distill",)).student
            metrics = read_distill_log(student)
            train_s = round(sum(step["seconds"] for st in metrics["stages"] for step in st["phases"]), 1)
            logs[f"{group}/{name}"] = {"teachers": metrics.get("teachers"), "stages": metrics["stages"]}
            models.append(ModelScores.from_eval(
                f"{group}/{name}", "student", evaluate(f"{group}/{name}", student), arch=base.student.arch,
                group=group, evaluated_by="benchmarks.multiteacher",
                extra={"train_s": train_s, "teacher_weights_without_gold":
                       (metrics.get("teachers") or {}).get("weights_without_gold")}))
    protocol = {"languages": base.data.languages, "labeled_budget": base.data.labeled_budget,
                "selection_slice": base.data.val_size, "transfer_limit_per_language": base.transfer.limit,
                "evaluation": f"dev, first {base.data.dev_limit} sentences per language",
                "metric": "seqeval entity F1, IOB2 strict", "teachers": teachers,
                "student": to_dict(base.student), "stages": to_dict(base.distill)["stages"]}
    command = "python -m benchmarks.multiteacher " + " ".join(sys.argv[1:])
    best = max((m for m in models if m.role == "teacher"), key=lambda m: m.f1_avg)
    summary = Summary(protocol, models, reference=best.name, title="Multi-teacher (MT-BERT) benchmark",
                      timings=seconds, provenance={"run": Provenance(**provenance(command))},
                      extra={"verdict": verdict(models), "logs": logs})
    summary.write(results / "summary.json")
    write_page(blocks(summary), results)
    print((results / "results.md").read_text())
    return summary


def _short(m: ModelScores) -> str:
    return m.name.split("/", 1)[1]


def verdict(models: list[ModelScores]) -> dict:
    """Does a multi-teacher student beat the best single-teacher student (average F1)? Overall
    and within each teacher group; and MT-BERT weights against uniform ones."""
    students = [m for m in models if m.role == "student"]

    def best(group: str | None, prefix: str) -> ModelScores:
        return max((m for m in students if _short(m).startswith(prefix) and group in (None, m.group)),
                   key=lambda m: m.f1_avg)

    out = {}
    for group in (None, *GROUPS):
        single, multi = best(group, "single"), best(group, "multi")
        out[group or "overall"] = {
            "best_single": single.name, "best_single_f1": single.f1_avg,
            "best_multi": multi.name, "best_multi_f1": multi.f1_avg,
            "multi_minus_single": round(multi.f1_avg - single.f1_avg, 2),
            "multi_beats_single": multi.f1_avg > single.f1_avg}
    f1 = {m.name: m.f1_avg for m in students}
    out["mtbert_minus_uniform"] = {g: round(f1[f"{g}/multi mtbert"] - f1[f"{g}/multi uniform"], 2) for g in GROUPS}
    return out


def _seed_spread(models: list[ModelScores]) -> float:
    """Largest gap between the e5 single-teacher students of one group (same recipe, other seed)."""
    gaps = []
    for g in GROUPS:
        f = [m.f1_avg for m in models if m.group == g and _short(m).startswith("single e5")]
        if len(f) > 1:
            gaps.append(max(f) - min(f))
    return max(gaps, default=0.0)


def blocks(s: Summary) -> list:
    """``results.md``: protocol, teachers, the verdict, one row per model, seconds."""
    langs, v, p = s.languages, s.extra["verdict"], s.protocol
    verdicts = " ".join(
        f"{'Overall' if g == 'overall' else f'Within *{g}*'}: best multi-teacher student "
        f"{v[g]['best_multi']} {v[g]['best_multi_f1']:.2f} vs best single-teacher student "
        f"{v[g]['best_single']} {v[g]['best_single_f1']:.2f} "
        + (f"(**better by {v[g]['multi_minus_single']:.2f}**)." if v[g]["multi_beats_single"] else
           f"(**not better: {v[g]['multi_minus_single']:+.2f}**).") for g in ("overall", *GROUPS))
    rows = []
    for m in s.models:
        w = m.extra.get("teacher_weights_without_gold")
        rows.append([m.group or "", _short(m), *[num(m.f1[lang]) for lang in langs], num(m.f1_avg),
                     str(m.extra.get("train_s", "")), " / ".join(f"{x:.2f}" for x in w) if w and len(w) > 1 else ""])
    return [
        Heading(1, s.title or "Multi-teacher (MT-BERT) benchmark"),
        Para(f"Command: `{s.provenance['run'].command}`"),
        Para("Protocol: " + json.dumps({k: p[k] for k in ("languages", "labeled_budget", "selection_slice",
                                                          "transfer_limit_per_language", "evaluation", "metric")})),
        Para("Teachers: " + ", ".join(f"{t['name']} = {t['model']} (seed {t['seed']})" for t in p["teachers"])
             + ". *apart*: each fine-tuned alone; *co*: co-finetuned with one shared head. Every student is the "
               "same 2-layer BiLSTM with the same stages; *single X* learns from teacher X only, *multi* from "
               "all teachers with uniform or MT-BERT (1/(1+task loss)) weights, *multi mtbert e5 only* from the two "
               "e5 teachers with MT-BERT weights."),
        Para(f"**Verdict** (average dev F1): {verdicts} MT-BERT weights minus uniform weights (all three teachers): "
             + ", ".join(f"{g} {d:+.2f}" for g, d in v["mtbert_minus_uniform"].items()) + ". "
             "The two single-teacher students of the two e5 seeds differ by up to "
             f"{_seed_spread(s.models):.2f} F1, a measure of the noise in these single runs."),
        Table(["teachers", "model", *langs, "avg", "train s", "weights w/o gold"], rows,
              set(range(2, len(langs) + 4))),
        Para("Seconds (2 CPU cores): " + json.dumps(s.timings)),
        Para("`train s`: the student's distillation time as recorded by its stages. `weights w/o gold`: the "
             "teacher weights applied to batches without gold words, from each teacher's task loss on the "
             "selection slice (batches with gold words weight the teachers by their loss on those words)."),
    ]


def main(argv=None) -> int:
    p = preamble.parser(__doc__)
    p.add_argument("--config", default="benchmarks/configs/multiteacher.yaml")
    p.add_argument("--run", default="runs/mt", help="working directory (teachers, transfer sets, students)")
    p.add_argument("--results", default="benchmarks/results/multiteacher", help="where summary.json/results.md go")
    args = p.parse_args(argv)
    preamble.start("multiteacher", argv)
    run(args.config, Path(args.run), Path(args.results), not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())

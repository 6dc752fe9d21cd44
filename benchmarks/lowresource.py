"""Low-resource mode (issue 15): the 41-language run with 100 labeled sentences per language.

    python -m benchmarks.lowresource            # the languages41 preset at a budget of 100 (20 for selection)
    python -m benchmarks.lowresource --quick    # tiny random models, 3 languages: seconds

One teacher is fine-tuned on 100 sentences a language (`teacher.min_steps` keeps its training
long enough on so few); then two students of the same size, on the same teacher and transfer set:

- ``gold-only``: the gold sentences alone, no transfer set (the baseline of no distillation);
- ``distilled``: the preset's stages over the transfer set (rest of train, unlabeled tokens, Tatoeba).

The report gives, per language, how much of the teacher's F1 each keeps and how much of the
gap between the gold-only student and the teacher the transfer set recovers
(``(distilled - gold-only) / (teacher - gold-only)``; XtremeDistil Table 6: 97.1 % of mBERT).
A teacher whose selection F1 is near zero stops the run with one line
(`xdistil.teachers.WeakTeacher`, ``teacher.min_selection_f1``) instead of being distilled.
Every step is resumable. Writes ``summary.json`` (`xdistil.results.Summary`) and ``results.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks import preamble
from benchmarks.languages41 import PRESET, load_config, quick_config, with_overrides
from xdistil.config import RunConfig, apply_overrides, from_dict, to_dict
from xdistil.run import RunDir

RESULTS = Path("benchmarks/results/41-languages-lowresource")
BUDGET, SELECTION = 100, 20
GOLD_ONLY = {"distill": {"stages": "gold-only", "init_from": None}}


def lowresource_config(cfg: RunConfig, budget: int = BUDGET, selection: int = SELECTION) -> RunConfig:
    return with_overrides(cfg, {"data": {"labeled_budget": budget, "val_size": selection}})


def recovered(teacher: float | None, gold: float | None, distilled: float | None) -> float | None:
    """% of the gap from the gold-only student to the teacher that distillation closes (None: no gap)."""
    if None in (teacher, gold, distilled) or teacher - gold <= 0:
        return None
    return 100 * (distilled - gold) / (teacher - gold)


def run(cfg: RunConfig, run_dir: str | Path, results: str | Path = RESULTS, *, progress: bool = True,
        command: str | None = None):
    """Teacher + distilled student (`pipeline.run`), the gold-only student on the same inputs; the Summary.

    Raises `xdistil.teachers.WeakTeacher` (before any labeling) when the teacher is too weak."""
    import dataclasses

    from xdistil import digests, pipeline
    from xdistil.evaluate import DevScorer
    from xdistil.provenance import provenance
    from xdistil.report import write_page
    from xdistil.results import ModelScores, Provenance
    from xdistil.runner import Runner

    run_dir, results = Path(run_dir), Path(results)
    base = RunDir(run_dir / "run")
    s = pipeline.summary(pipeline.run(cfg, base.root, progress=progress, command=command), cfg)
    distilled = s.final
    # the same teacher and transfer set, given: only the student's stages differ
    gold_dir = Runner(with_overrides(cfg, GOLD_ONLY), RunDir(run_dir / "gold-only"),
                      given={"teacher": base.teacher, "label": base.transfer}, progress=progress
                      ).run(only=("distill",)).student
    score = DevScorer(cfg, progress, cache=run_dir / "gold-only-scores.json")
    key = f"gold-only@{digests.folder_digest(gold_dir)}"  # a recomputed student is scored again
    gold = ModelScores.from_eval("gold-only", "student", score(key, gold_dir), arch=cfg.student.arch, group="gold-only",
                                 evaluated_by="benchmarks.lowresource")
    t = s.teacher
    per_language = {lang: {"teacher": t.f1[lang], "gold_only": gold.f1[lang], "distilled": distilled.f1[lang],
                           "retained_gold_only": gold.retained(t, lang), "retained_distilled": distilled.retained(t, lang),
                           "recovered": recovered(t.f1[lang], gold.f1[lang], distilled.f1[lang])}
                    for lang in s.languages}
    s = dataclasses.replace(
        s, models=[*s.models, gold], title=f"Low-resource mode: {cfg.data.labeled_budget} labeled sentences per "
                                            f"language", headline=distilled.name,
        provenance={**s.provenance, "benchmark": Provenance(**provenance(command))},
        extra={"per_language": per_language,
               "recovered_avg": recovered(t.f1_avg, gold.f1_avg, distilled.f1_avg),
               "reference": "XtremeDistil Table 6: student 77.26 vs mBERT 79.54 F1 (97.1 %), 7.2M transfer sentences"})
    results.mkdir(parents=True, exist_ok=True)
    s.write(results / "summary.json")
    write_page(blocks(s), results)
    return s


def blocks(s) -> list:
    from xdistil.report import Heading, Para, Table, num, pct

    t, d, g = s.teacher, s.model(s.headline), s.model("gold-only")
    e = s.extra
    order = sorted(s.languages, key=lambda lang: d.retained(t, lang) or 0.0)
    rows = [[lang, num(t.f1[lang]), num(g.f1[lang]), num(d.f1[lang]), pct(g.retained(t, lang)),
             pct(d.retained(t, lang)), pct(e["per_language"][lang]["recovered"])] for lang in order]
    rows.append(["**average**", num(t.f1_avg), num(g.f1_avg), num(d.f1_avg), pct(g.retained(t)), pct(d.retained(t)),
                 pct(e["recovered_avg"])])
    return [
        Heading(1, s.title),
        Para(f"Command: `{s.provenance['benchmark'].command}`"),
        Para(f"Teacher, gold-only student (no transfer set) and distilled student `{d.name}` (same architecture "
             f"and size), dev F1 per language. \"recovered\": the share of the gap between the gold-only student "
             f"and the teacher that the transfer set closes. Reference: {e['reference']}."),
        Table(["language", "teacher", "gold-only", "distilled", "gold-only % of teacher", "distilled % of teacher",
               "recovered"], rows, set(range(1, 7))),
        Para("Timings (seconds): " + str(s.timings)),
    ]


def main(argv=None) -> int:
    p = preamble.parser(__doc__)
    p.add_argument("--config", default=str(PRESET), help="default: xdistil/presets/languages41.yaml")
    p.add_argument("--languages", nargs="+", help="only these languages (default: the config's)")
    p.add_argument("--budget", type=int, default=BUDGET, help=f"labeled sentences per language (default {BUDGET})")
    p.add_argument("--selection", type=int, default=SELECTION, help="of which held out for selection")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set teacher.min_steps=600 (repeatable)")
    p.add_argument("--run", type=Path, default=None, help="working folder (default runs/lowresource[-quick])")
    p.add_argument("--results", type=Path, default=None, help=f"default {RESULTS} (--quick: <run>/results)")
    p.add_argument("--quick", action="store_true", help="tiny random models over a few languages: seconds")
    args = p.parse_args(argv)
    command = preamble.start("lowresource", argv, quiet=True)  # it reports through its results and progress bars
    from xdistil.config import ConfigError
    from xdistil.teachers import WeakTeacher

    run_dir = args.run or Path("runs/lowresource-quick" if args.quick else "runs/lowresource")
    results = args.results or (run_dir / "results" if args.quick else RESULTS)
    try:
        cfg = load_config(args.config, args.languages)
        if args.quick:
            cfg = quick_config(cfg, run_dir, args.languages)
        cfg = lowresource_config(cfg, args.budget, args.selection)
        cfg = from_dict(RunConfig, apply_overrides(to_dict(cfg), args.overrides))
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        run(cfg, run_dir, results, progress=not args.quiet, command=command)
    except WeakTeacher as e:  # the clear stop: nothing is labeled or distilled from it
        print(f"error: {e}", file=sys.stderr)
        return 1
    print((results / "results.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

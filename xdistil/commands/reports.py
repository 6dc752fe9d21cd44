"""``xdistil bench`` and ``xdistil report``: figures of a finished run."""

from __future__ import annotations

from xdistil.commands._util import need_dir, out_folder, quiet_transformers


def cmd_bench(args) -> int:
    from xdistil.bench import format_summary, run_bench
    from xdistil.provenance import command_line
    from xdistil.run import RunDir

    command = command_line(args.argv)
    if args.config:  # the run first (each finished step is skipped), then its benchmark
        from xdistil.config import load_config
        from xdistil.pipeline import run

        run(load_config(args.config), out_folder(args.run_dir, "RUN_DIR"), progress=not args.quiet, command=command)
    else:
        need_dir(args.run_dir, "RUN_DIR")
    quiet_transformers()
    bench = run_bench(args.run_dir, args.batch_sizes, args.repeats, int8=not args.no_int8, threads=args.threads,
                      quick=args.quick, seq=args.seq, teacher_ort=args.teacher_ort,
                      int8_min_agreement=args.int8_min_agreement, command=command, progress=not args.quiet)
    print(format_summary(bench))
    print(f"benchmark written to {RunDir(args.run_dir).bench}")
    return 0


def cmd_report(args) -> int:
    from xdistil.report import write_report

    for r in args.runs:
        need_dir(r, "RUN_DIR")
    out = write_report(args.runs, out_folder(args.out), target=args.target)
    print(f"report written to {out['markdown']} and {out['html']} ({len(out['plots'])} plots)")
    return 0


def add_bench(sub) -> None:
    """The ``bench`` command."""
    s = sub.add_parser(
        "bench", help="benchmark a run directory: quality, size, latency, throughput, memory -> bench.json",
        description="Benchmark a run directory (from 'xdistil run') and write RUN_DIR/bench.json: dev F1 per "
                    "language of the teacher and every stage's student with the share of the teacher's F1 kept; "
                    "parameters and compression; latency of the teacher (PyTorch) and the final student (PyTorch, "
                    "ONNX Runtime fp32 and int8) at each batch size, medians after warm-up, side by side in one "
                    "process on the CPU; labeling throughput against the teacher's bare forward pass; "
                    "distillation tokens/s per stage; peak memory of labeling and training. Every section "
                    "records the machine, the library versions and the command line. Student exports go to "
                    "RUN_DIR/bench-exports/ and are reused while the student is unchanged.",
        epilog="Quality, throughput and memory come from the run's own files (a model the run did not evaluate "
               "is evaluated here); only latency is measured here, so it depends on this machine and on what "
               "else runs on it.")
    s.add_argument("run_dir", metavar="RUN_DIR", help="run directory (config.json, metrics.json, teacher/, "
                                                       "transfer/, distill/)")
    s.add_argument("--config", help="run (or resume) 'xdistil run' with this config into RUN_DIR first")
    s.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 256], metavar="N",
                   help="batch sizes to time (default: 1 32 256)")
    s.add_argument("--seq", type=int, default=32, help="word pieces per row, specials included (default 32)")
    s.add_argument("--repeats", type=int, help="timed calls per cell, at least (default 5; 2 with --quick); "
                                               "cells faster than a second get more, up to 200")
    s.add_argument("--threads", type=int, help="PyTorch and ONNX Runtime intra-op threads (default: all usable cores)")
    s.add_argument("--no-int8", action="store_true", help="skip the int8 export and its timings")
    s.add_argument("--int8-min-agreement", type=float, default=0.98,
                   help="the int8 student's tags must agree with PyTorch on this share of words (default 0.98)")
    s.add_argument("--teacher-ort", action="store_true",
                   help="also export the teacher and time it in ONNX Runtime fp32 (as large as the teacher)")
    s.add_argument("--quick", action="store_true", help="smoke test: one warm-up and 2-3 timed calls per cell")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_bench)


def add_report(sub) -> None:
    """The ``report`` command."""
    s = sub.add_parser(
        "report", help="Markdown + HTML report with plots from benchmarked runs",
        description="Write report.md and report.html (the same content), PNG plots (F1 kept per language, F1 "
                    "against parameters, latency against batch size, F1 after each stage) and a copy of each "
                    "bench.json into --out. Opens with a verdict per run (share of the teacher's F1 kept against "
                    "the target, compression, speedup), states the protocol and sets the figures beside "
                    "XtremeDistil's published ones.",
        epilog="A directory with only a summary.json ('xdistil run' or benchmarks/staged.py) adds its quality "
               "figures. Example: xdistil report runs/demo --out benchmarks/results/demo")
    s.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directory with bench.json (from 'xdistil "
                                                              "bench'), or a directory with a summary.json")
    s.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (created if missing); a file there that xdistil did not write is never "
                        "overwritten (report.files.json lists what the report wrote)")
    s.add_argument("--target", type=float, default=95.0,
                   help="%% of the teacher's F1 the student must keep to pass (default 95)")
    s.set_defaults(func=cmd_report)

"""The ``xdistil`` command line: the parser assembled from the command groups in
`xdistil.commands` (one small module each), and `main`, which sets the threads before torch
is imported, runs a command and turns every expected error into one line,
``xdistil: error: ...``, exit status 2 (the runtime's error path, `xdistil_export.cli.run_command`).
"""

from __future__ import annotations

import argparse
import logging
import sys

from xdistil_export.cli import run_command

from xdistil import __version__
from xdistil.commands import deploy, info, reports, train
from xdistil.commands._util import (
    Parser,
    UsageError,
    error_line,
    expected_errors,
    options_anywhere,
    quiet_transformers,
)

__all__ = ["UsageError", "build_parser", "main"]

COMMANDS = (
    info.add_languages,
    info.add_config,
    info.add_data,
    train.add_teacher,
    train.add_label,
    train.add_distill,
    deploy.add_evaluate,
    deploy.add_export,
    deploy.add_predict_serve,
    reports.add_bench,
    reports.add_report,
    train.add_run,
)
"""The commands in the order --help lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The ``xdistil`` parser: global options, then every command of `COMMANDS`."""
    p = Parser(
        prog="xdistil",
        description="Distil multilingual NER teachers into small, fast students (XtremeDistil, MT-BERT).",
        epilog="Run 'xdistil COMMAND --help' for the options of a command.",
    )
    p.add_argument("--version", action="version", version=f"xdistil {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, and the full traceback of an error "
                                                                 "(before or after the command)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars (before or after the command)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for add in COMMANDS:
        add(sub)
    options_anywhere(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded beside the figures it produces
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command not in ("predict", "serve"):  # torch-free; onnxruntime has its own --threads
        from xdistil.threads import configure

        # before torch is imported: OpenMP reads its wait policy once, at start; the
        # loaded-machine warning only where the command computes for a while
        configure(warn=args.command in ("teacher", "label", "distill", "run", "bench"))
    if args.command == "export":  # the commands that check their paths first quiet it after the checks
        quiet_transformers()
    # the runtime's error path (`xdistil_export.cli.run_command`) with xdistil's errors
    return run_command(args.func, args, prog="xdistil", expected=expected_errors, line=error_line,
                       interrupted="interrupted; rerun the same command to resume")


if __name__ == "__main__":
    sys.exit(main())

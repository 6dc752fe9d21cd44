"""What every benchmark's command line shares, written once: the parser (its module doc as
help, ``-q``), logging, and the command that reproduces a result (recorded beside it)."""

from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
import sys

NOISY = ("httpx", "urllib3", "filelock", "datasets", "transformers")


def parser(doc: str | None, quiet: bool = True) -> argparse.ArgumentParser:
    """An argument parser showing ``doc`` as written; with ``-q/--quiet`` (no progress bars) unless told not."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if quiet:
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars; warnings only in the log")
    return p


def start(module: str, argv: list[str] | None, quiet: bool = False) -> str:
    """Set up logging (timestamps; third-party chatter at WARNING) and return the command line
    that reproduces this run: ``python -m benchmarks.<module> ARGS``."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    return shlex.join(["python", "-m", f"benchmarks.{module}", *(sys.argv[1:] if argv is None else argv)])


def xdistil(*args: str) -> str:
    """Run one ``xdistil`` command in its own process (fresh threads and memory, as a user runs it);
    its standard output, or one error with the end of its standard error."""
    cmd = [sys.executable, "-m", "xdistil.cli", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{shlex.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return done.stdout

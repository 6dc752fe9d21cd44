"""What every command shares: the parser class (one-line errors, options anywhere),
path checks, and the one-line report of an expected error."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xdistil_export import cli as runtime_cli

# the one parser of xdistil and xdistil-runtime (one-line errors, options after positionals)
from xdistil_export.cli import Parser  # noqa: F401


class UsageError(Exception):
    """A wrong command line (a missing path, a missing choice): one line, exit status 2."""


OUT_RULE = ("A new or empty folder, or this command's earlier output (a changed output is rebuilt beside it and "
            "swapped in when complete); a folder holding anything else is refused, never emptied.")


def add_resume_only(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume-only", action="store_true",
                   help="refuse (one line naming what changed) instead of recomputing a finished or half-finished "
                        "output whose inputs changed; unchanged outputs are still reused or resumed")


def need_file(path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"{what} {path}: no such file")
    if p.is_dir():
        raise UsageError(f"{what} {path}: is a directory, expected a file")
    return p


def need_dir(path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"{what} {path}: no such directory")
    if not p.is_dir():
        raise UsageError(f"{what} {path}: is a file, expected a directory")
    return p


def out_folder(path, what: str = "--out") -> Path:
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UsageError(f"{what} {path}: is a file, expected a directory")
    return p


def language_choices(root) -> str:
    """Registry languages with labeled train data under the data root, for error messages."""
    from xdistil_languages import load_registry

    here = [c for c, lang in load_registry().items() if root is not None and lang.find("train", data_root=root)]
    where = f"with labeled data under {root}: {', '.join(here)}" if here else "none has labeled data here"
    return f"registry languages {where} (see 'xdistil languages'); any other code with --train LANG=FILE"


def quiet_transformers() -> None:
    """transformers' own bars (weights loading, shard writing) and logs drown ours. Called once
    a command's up-front checks passed: importing transformers takes a second or more, and a
    mistake must be reported sooner."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def expected_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a wrong input (a path, a file, a config value, a changed step), not a
    bug: `main` reports them in one line. Library errors are looked up only where the command
    has already imported the library (``predict`` stays free of torch)."""
    import zlib

    import yaml
    from pydantic import ValidationError

    from xdistil.config import ConfigError
    from xdistil.data.readers import DataError
    from xdistil.digests import StaleOutput

    errors: list[type[BaseException]] = [UsageError, ConfigError, DataError, StaleOutput, ValidationError, OSError,
                                         ValueError, RuntimeError, EOFError, zlib.error, yaml.YAMLError]
    if "safetensors" in sys.modules:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    if "onnx" in sys.modules:
        from google.protobuf.message import DecodeError
        from onnx.checker import ValidationError as OnnxValidationError

        errors += [OnnxValidationError, DecodeError]
    if "onnxruntime" in sys.modules:
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        errors += [v for v in vars(ort_errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    return tuple(errors)


def error_line(e: BaseException) -> str:
    """One line for an expected error: pydantic's report condensed, else the runtime's line
    (`xdistil_export.cli.error_line`: ``PATH: reason`` for OS errors)."""
    from pydantic import ValidationError

    from xdistil.config import describe

    return describe(e) if isinstance(e, ValidationError) else runtime_cli.error_line(e)


def leaves(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of the commands (``xdistil teacher train``, not ``xdistil teacher``)."""
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [p]
    children = {id(c): c for a in subs for c in a.choices.values()}.values()
    return [leaf for c in children for leaf in leaves(c)]


def options_anywhere(p: argparse.ArgumentParser) -> None:
    """``-v`` (and ``-q``, where a command has it) work before and after the command: each
    command parses them too, without a default of its own that would hide the one given
    before the command (a subparser's defaults overwrite the main parser's values)."""
    for leaf in leaves(p):
        if "-v" not in leaf._option_string_actions:
            leaf.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                              help="debug logging, and the full traceback of an error")
        for action in leaf._actions:
            if action.dest in ("verbose", "quiet"):
                action.default = argparse.SUPPRESS

"""``xdistil-runtime predict|serve``: the torch-free commands, shared with ``xdistil predict|serve``.

The runtime distribution installs this as its console script; ``xdistil`` adds the same
subcommands (`add_commands`) with the same `Parser` and runs them through the same error
path (`run_command`), so both accept the same lines and fail the same way: one line
``PROG: error: ...`` naming the file, exit 2; quiet exit 141 when the reader of the output
goes away (``| head``); never a traceback unless ``-v``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from itertools import chain, islice


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and options after positionals (``predict DIR --precision int8 FILE``)."""

    _in_intermixed = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.set_defaults(_parser=self)  # the innermost command's parser wins: its errors name it

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def parse_args(self, args=None, namespace=None):
        ns, extra = self.parse_known_args(args, namespace)
        if extra:
            import difflib

            leaf = getattr(ns, "_parser", self)
            known = [o for a in leaf._actions for o in a.option_strings if a.help != argparse.SUPPRESS]
            close = difflib.get_close_matches(extra[0].split("=")[0], known, n=1, cutoff=0.75)
            leaf.error(f"unrecognized arguments: {' '.join(extra)}" + (f"; did you mean {close[0]}?" if close else ""))
        return ns

    def parse_known_args(self, args=None, namespace=None):
        # argparse cannot intermix with subparsers; each leaf command parses intermixed
        if self._subparsers is not None or self._in_intermixed:
            return super().parse_known_args(args, namespace)
        self._in_intermixed = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._in_intermixed = False


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="DIR", help="export directory (from 'xdistil export')")
    p.add_argument("--precision", choices=["fp32", "int8", "auto"], default="fp32",
                   help="model file to run (auto: int8 when exported). int8 is dynamically quantized per "
                        "onnxruntime call, so its scores (rarely its tags) depend on what is batched together; "
                        "fp32 does not")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: its own choice)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="windows per onnxruntime call (default 32, the fastest measured; with int8 a word's "
                        "score, rarely its tag, can change with the windows batched with it)")
    p.add_argument("-v", "--verbose", action="store_true", help="the full traceback of an error")


def add_predict_args(p: argparse.ArgumentParser) -> None:
    add_runtime_args(p)
    p.add_argument("file", nargs="?", metavar="FILE|-", help="input file, UTF-8, gzipped or not (default: stdin)")
    p.add_argument("--format", choices=["text", "conll"], default="text", help="input format")
    p.add_argument("--output-format", choices=["jsonl", "conll"], default="jsonl",
                   help="jsonl: one record per input (words, tags, scores, entities); conll: word<TAB>tag")
    p.add_argument("--out", metavar="FILE", help="output file (default: stdout)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_serve_args(p: argparse.ArgumentParser) -> None:
    add_runtime_args(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000, help="larger request bodies get 413")
    p.add_argument("--max-texts", type=int, default=256, help="texts per request")
    p.add_argument("--max-chars", type=int, default=10_000, help="characters per text")
    p.add_argument("--no-batching", dest="micro_batching", action="store_false",
                   help="run every request on its own (default: batch concurrent requests together; with "
                        "int8, a text's answer then depends on the requests batched with it)")
    p.add_argument("--batch-wait-ms", type=float, default=2.0,
                   help="how long a request waits for others to share its batch (default 2 ms)")
    p.add_argument("--request-timeout", type=float, default=5.0,
                   help="seconds a client has to send a whole request; slower or idle connections are closed")


def run_predict(args: argparse.Namespace) -> int:
    """Tag text lines or CoNLL words into JSONL (`Predictor.annotate` records) or CoNLL."""
    from xdistil_export.runtime import Predictor
    from xdistil_export.text import iter_conll_words, looks_like_conll, read_lines

    stdin = args.file in (None, "-")
    if not stdin and not os.path.isfile(args.file):  # before loading the model: a typo fails at once
        what = "is a directory, expected a text file" if os.path.isdir(args.file) else "no such file"
        raise FileNotFoundError(f"{args.file}: {what}")
    predictor = Predictor(args.model, precision=args.precision, threads=args.threads)
    name = "stdin" if stdin else args.file
    lines = read_lines(None if stdin else args.file)  # the one line reader: gzip, BOM, LF / CRLF / CR
    dst = None
    try:
        head = list(islice(lines, 20))  # looked at before the output opens: a wrong format leaves no file
        if args.format == "text" and looks_like_conll(head):  # else every word and tag would be a "text"
            raise ValueError(f"{name}: looks like CoNLL (word<TAB>tag on each line), not one text per line: "
                             "add --format conll")
        items = chain(head, lines)
        if args.format == "conll":
            items = iter_conll_words(items, name)
        dst = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
        with _progress(disable=getattr(args, "quiet", False) or stdin) as bar:
            while chunk := list(islice(items, 8 * args.batch_size)):  # stream: big files never sit in memory
                for r in predictor.annotate(chunk, batch_size=args.batch_size):
                    if args.output_format == "conll":
                        dst.write("".join(f"{w}\t{t}\n" for w, t in zip(r["words"], r["tags"], strict=True)) + "\n")
                    else:
                        dst.write(json.dumps(r, ensure_ascii=False) + "\n")
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        lines.close()
        if args.out and dst is not None:
            dst.close()
    return 0


def run_serve(args: argparse.Namespace) -> int:
    try:
        from xdistil_export.serve import serve
    except ImportError as e:
        raise ImportError(f"serving needs fastapi and uvicorn ({e}): pip install 'xdistil-runtime[serve]'") from None

    serve(args.model, host=args.host, port=args.port, precision=args.precision, threads=args.threads,
          request_timeout=args.request_timeout, max_body_bytes=args.max_body_bytes, max_texts=args.max_texts,
          max_chars=args.max_chars, batch_size=args.batch_size, micro_batching=args.micro_batching,
          batch_wait_ms=args.batch_wait_ms)
    return 0


def _progress(disable: bool):
    """A tqdm bar when tqdm is installed (it is optional in the runtime distribution)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return nullcontext(None)
    return tqdm(unit="sent", desc="predict", disable=disable)


def add_commands(sub, predict=None, serve=None) -> None:
    """Add the ``predict`` and ``serve`` subcommands to ``sub`` (an argparse subparsers
    object): ``xdistil-runtime`` and ``xdistil`` share them; ``predict``/``serve`` are the
    functions the parsed arguments go to (default: `run_predict` / `run_serve`)."""
    s = sub.add_parser("predict", help="tag text or CoNLL with an export directory (no torch)",
                       description="Read text lines (one text per line) or CoNLL (first column), write JSONL "
                                   "(words, tags, scores, entities with word spans, character offsets and "
                                   "scores) or CoNLL.")
    add_predict_args(s)
    s.set_defaults(func=predict or run_predict)
    s = sub.add_parser("serve", help="serve an export directory over HTTP (no torch; needs FastAPI + uvicorn)",
                       description="POST /predict with a JSON list of texts, {\"texts\": [...]} or "
                                   "{\"inputs\": text | [texts]}; GET /health; OpenAPI at /docs.")
    add_serve_args(s)
    s.set_defaults(func=serve or run_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="xdistil-runtime", description="Run an exported xdistil NER model (no torch).")
    add_commands(parser.add_subparsers(dest="command", required=True, parser_class=Parser))
    return parser


# ---- the one error path ------------------------------------------------------------------


def expected_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a wrong input (a path, a file, a model folder), not a bug."""
    import zlib

    errors: list[type[BaseException]] = [OSError, ValueError, ImportError, EOFError, zlib.error]
    if "onnxruntime" in sys.modules:
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        errors += [v for v in vars(ort_errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    return tuple(errors)


NAMED_LIBRARIES = ("safetensors", "onnx", "onnxruntime", "google", "zlib")
"""Libraries whose errors say too little alone: their one line starts with the error's type."""


def error_line(e: BaseException) -> str:
    """One line for an expected error; ``PATH: reason`` for OS errors."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.filename}: {e.strerror}" + (f" ({e.filename2})" if e.filename2 else "")
    else:
        text = str(e).strip() or type(e).__name__
        if type(e).__module__.split(".")[0] in NAMED_LIBRARIES:
            text = f"{type(e).__name__}: {text}"  # a library's terse error: say whose
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def quiet_stdout() -> None:
    """After the reader of our stdout went away (``... | head``): point stdout at /dev/null so
    the interpreter's final flush does not complain again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced (tests) or already closed
        pass


def run_command(func, args: argparse.Namespace, prog: str = "xdistil-runtime", *,
                expected: Callable[[], tuple[type[BaseException], ...]] = expected_errors,
                line: Callable[[BaseException], str] = error_line, interrupted: str | None = None) -> int:
    """Run a command function the way both CLIs do: expected errors as one line and exit 2,
    a closed output pipe as a quiet 141, Ctrl+C as 130 (saying ``interrupted``, when given);
    ``args.verbose``: re-raise instead. ``expected`` and ``line``: the errors that are the
    user's, and their one line (``xdistil`` passes its own, which know its config errors)."""
    try:
        code = func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:  # the reader stopped early, as `head` does: stop quietly like a Unix filter
        quiet_stdout()
        return 141
    except KeyboardInterrupt:
        if interrupted:
            print(interrupted, file=sys.stderr)
        return 130
    except Exception as e:
        if getattr(args, "verbose", False) or not isinstance(e, expected()):
            raise
        print(f"{prog}: error: {line(e)}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())

"""``xdistil-runtime predict|serve``: the torch-free commands, shared with ``xdistil predict|serve``.

The runtime distribution installs this as its console script; ``xdistil`` adds the same
arguments to its own subcommands and calls the same functions, so both behave alike.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from itertools import islice


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="DIR", help="export directory (from 'xdistil export')")
    p.add_argument("--precision", choices=["fp32", "int8", "auto"], default="fp32",
                   help="model file to run (auto: int8 when exported)")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: its own choice)")
    p.add_argument("--batch-size", type=int, default=32, help="windows per onnxruntime call")


def add_predict_args(p: argparse.ArgumentParser) -> None:
    add_runtime_args(p)
    p.add_argument("file", nargs="?", metavar="FILE|-", help="input file (default: stdin)")
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
                   help="run every request on its own (default: batch concurrent requests together)")
    p.add_argument("--batch-wait-ms", type=float, default=2.0,
                   help="how long a request waits for others to share its batch (default 2 ms)")
    p.add_argument("--request-timeout", type=float, default=5.0,
                   help="seconds a client has to send a whole request; slower or idle connections are closed")


def run_predict(args: argparse.Namespace) -> int:
    """Tag text lines or CoNLL words into JSONL (`Predictor.annotate` records) or CoNLL."""
    from xdistil_export.runtime import Predictor
    from xdistil_export.text import iter_conll_words, iter_text_lines

    predictor = Predictor(args.model, precision=args.precision, threads=args.threads)
    stdin = args.file in (None, "-")
    src = sys.stdin.buffer if stdin else open(args.file, "rb")  # decoded per line: errors name their line
    dst = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    def lines():
        for n, raw in enumerate(src, 1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{'stdin' if stdin else args.file}:{n}: not UTF-8 text ({e.reason})") from None

    try:
        items = iter_conll_words(lines()) if args.format == "conll" else iter_text_lines(lines())
        with _progress(disable=args.quiet or stdin) as bar:
            while chunk := list(islice(items, 8 * args.batch_size)):  # stream: big files never sit in memory
                for r in predictor.annotate(chunk, batch_size=args.batch_size):
                    if args.output_format == "conll":
                        dst.write("".join(f"{w}\t{t}\n" for w, t in zip(r["words"], r["tags"], strict=True)) + "\n")
                    else:
                        dst.write(json.dumps(r, ensure_ascii=False) + "\n")
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if not stdin:
            src.close()
        if args.out:
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
    parser = argparse.ArgumentParser(prog="xdistil-runtime",
                                     description="Run an exported xdistil NER model (no torch).")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

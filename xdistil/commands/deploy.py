"""``xdistil evaluate``, ``export``, ``predict`` and ``serve``: a model after training."""

from __future__ import annotations

import json
from pathlib import Path

from xdistil.commands._util import OUT_RULE, UsageError, need_dir, need_file, out_folder, quiet_transformers


def check_dev_data(langs: list[str], data_root) -> None:
    """Each language has local labeled dev data, or the hub is reachable: said at once, offline."""
    from xdistil_languages import get_language

    from xdistil.data.roots import hub_offline_reason, resolve_data_root

    root = resolve_data_root(data_root)
    missing = [lang for lang in langs if root is None or get_language(lang).find("dev", data_root=root) is None]
    if not missing:
        return
    where = f"under {root}" if root else "(no data root: set --data-root or $XDISTIL_DATA)"
    outside = [lang for lang in missing if not get_language(lang).in_registry]
    if outside:
        raise UsageError(f"--lang {', '.join(outside)}: not in the registry and no labeled dev data {where}: "
                         "pass labeled CoNLL FILE(s)")
    why = hub_offline_reason(("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if why:
        # bs ca cs mk sl sq on the project's machines: registry languages without any labeled file
        bare = root is not None and all(get_language(lang).find("train", data_root=root) is None for lang in missing)
        raise UsageError(f"--lang {', '.join(missing)}: no labeled dev data {where}"
                         f"{' (no labeled data here: no train file either)' if bare else ''}, and {why}: pass "
                         "labeled CoNLL FILE(s) or --data-root DIR, or connect")


def cmd_evaluate(args) -> int:
    from xdistil.config import DataConfig
    from xdistil.data.readers import read_conll
    from xdistil.data.sources import dev_sentences
    from xdistil.evaluate import evaluate_tagger, format_scores
    from xdistil.tagsets import types_of

    need_dir(args.model, "MODEL")
    for f in args.files:
        need_file(f, "FILE")
    if not args.files:
        if not args.lang:
            raise UsageError("give labeled FILE(s) or --lang XX (evaluates on that language's dev split)")
        check_dev_data(args.lang, args.data_root)
    quiet_transformers()
    from xdistil.taggers import load_model_any

    tagger = load_model_any(args.model)
    labels = getattr(tagger, "labels", None)
    types = set(types_of(labels)) if labels else None
    results = {}
    if args.files:
        for f in args.files:
            sents = read_conll(f, label_types=None if args.any_labels else types, strict=args.strict,
                               limit=args.limit)
            results[f] = evaluate_tagger(tagger, sents, args.batch_size, not args.quiet)
    else:
        dc = DataConfig(languages=args.lang, root=args.data_root, dev_limit=args.limit,
                        labels=list(labels) if labels else DataConfig().labels, strict=args.strict)
        for lang in args.lang:
            results[lang] = evaluate_tagger(tagger, dev_sentences(lang, dc), args.batch_size, not args.quiet)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, m in results.items():
            print(format_scores(name, m))
    return 0


def cmd_export(args) -> int:
    from xdistil_export.runtime import MANIFEST

    from xdistil import steps

    model, out_dir = need_dir(args.model, "MODEL"), out_folder(args.out)
    dev = str(need_file(args.dev, "--dev")) if args.dev else None
    # through the step layer: an export of the same model with the same options is reused; a
    # failed export leaves the previous one as it was
    extra = {} if args.int8_min_agreement is None else {"int8_min_agreement": args.int8_min_agreement}
    out = steps.export(model, out_dir, int8=args.int8, opset=args.opset, dev_file=dev, tolerance=args.tolerance,
                       **extra)
    m = json.loads((Path(out) / MANIFEST).read_text(encoding="utf-8"))
    p = m["parity"]
    print(f"exported {m['kind']} model to {args.out} (opset {m['opset']}); parity: max abs diff "
          f"{p['max_abs_diff']:.2e} over {p['windows']} windows, batch sizes {p['batch_sizes']}")
    if m["int8"]:
        q = m["int8"]["parity"]
        print(f"int8: {m['int8']['size_bytes'] / 1e6:.2f} MB (fp32 {m['int8']['fp32_size_bytes'] / 1e6:.2f} MB), "
              f"tags agree with PyTorch on {100 * q['min_agreement']:.2f}% of words")
    if m["dev"]:
        d = m["dev"]
        line = f"dev F1 ({d['sentences']} sentences): fp32 {d['f1_fp32']:.2f}"
        if "f1_int8" in d:
            line += f", int8 {d['f1_int8']:.2f} ({d['f1_delta']:+.2f})"
        print(line)
    return 0


def cmd_predict(args) -> int:
    """Torch-free: the runtime's own command and error path (`xdistil_export.cli`, also
    ``xdistil-runtime predict``), its errors under the name ``xdistil``."""
    from xdistil_export.cli import run_command, run_predict

    return run_command(run_predict, args, prog="xdistil")


def cmd_serve(args) -> int:
    from xdistil_export.cli import run_command, run_serve

    return run_command(run_serve, args, prog="xdistil")


def add_evaluate(sub) -> None:
    """The ``evaluate`` command."""
    s = sub.add_parser("evaluate", help="entity-level F1/P/R (seqeval, IOB2) of any saved model",
                       description="Evaluate a teacher, student or export directory on CoNLL files, or on a "
                                   "language's dev split with --lang.")
    s.add_argument("model", metavar="MODEL", help="model directory (teacher, student or ONNX export)")
    s.add_argument("files", nargs="*", metavar="FILE", help="labeled CoNLL files")
    s.add_argument("--lang", action="append", metavar="XX",
                   help="evaluate on this language's dev split under the data root (repeatable)")
    s.add_argument("--data-root", metavar="DIR",
                   help="local data root for --lang (default: $XDISTIL_DATA, else ../shared/data, else the hub)")
    s.add_argument("--limit", type=int, help="first N sentences only")
    s.add_argument("--batch-size", type=int, default=64, help="sentences per forward pass (default 64)")
    s.add_argument("--any-labels", action="store_true", help="do not check tags against the model's labels")
    s.add_argument("--strict", action="store_true",
                   help="an I- tag that does not continue an entity is an error (default: repaired to B-, "
                        "with a warning)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_evaluate)


def add_export(sub) -> None:
    """The ``export`` command."""
    s = sub.add_parser("export", help="export a model to ONNX (+ int8), checked against PyTorch",
                       description="Export a teacher, student or HF token classifier to a self-contained ONNX "
                                   "directory (model, tokenizer.json, labels, manifest). onnxruntime outputs are "
                                   "compared with PyTorch on sentences of several lengths and batch sizes; the "
                                   "export fails if they differ by more than --tolerance.",
                       epilog="The fast student (the deployment frontier, docs/deployment.md): distil it with "
                              "'xdistil distill|run ... --student-preset fast', then export that student with --int8.")
    s.add_argument("model", metavar="MODEL", help="teacher or student directory")
    s.add_argument("--out", required=True, help="export directory: replaced atomically, only once the new export "
                                                "passed its checks. " + OUT_RULE)
    s.add_argument("--int8", action="store_true",
                   help="also write a dynamically quantized int8 model (one activation scale per onnxruntime call: "
                        "its scores, rarely its tags, depend on the windows batched together; see docs/deployment.md)")
    s.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    s.add_argument("--dev", metavar="FILE", help="CoNLL dev file: record the F1 of the export(s)")
    s.add_argument("--tolerance", type=float, default=1e-3, help="max abs logit difference allowed (fp32)")
    s.add_argument("--int8-min-agreement", type=float, metavar="SHARE",
                   help="with --int8: the share of words whose int8 tags must agree with PyTorch (default 0.98; "
                        "an untrained or barely trained model's near-tied tags need less)")
    s.set_defaults(func=cmd_export)


def add_predict_serve(sub) -> None:
    """The ``predict and serve`` commands."""
    from xdistil_export.cli import add_commands

    add_commands(sub, predict=cmd_predict, serve=cmd_serve)  # the runtime's own commands

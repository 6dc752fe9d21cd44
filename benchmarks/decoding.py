"""Constrained (IOB2 Viterbi) vs argmax decoding: the F1 change on real dev text.

    python -m benchmarks.decoding runs/demo/distill/stage3-gold --lang de ar hi \
        --out benchmarks/results/decoding

The model (student, teacher or any token classifier; ONNX export dirs too) runs once
per dev file; its word logits are decoded twice by `xdistil_export.decode`, the one
decoder of the runtime and of evaluation: per-word argmax, and Viterbi under the IOB2
transition rules (``I-X`` only after ``B-X``/``I-X``). Per language: F1, precision and
recall (seqeval, strict IOB2 as ``xdistil evaluate``) both ways, the change, and how many
sentences' argmax tags were invalid IOB2 (only those can change). Dev files come from
``--lang`` (the language registry under the data root, as a run finds them) or
``--dev LANG=FILE``.

Writes ``decoding.json`` and ``decoding.md`` into ``--out`` (default: print only).
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np
from xdistil_export.decode import decode_all, is_valid

from benchmarks import preamble, timing


def dev_files(langs: list[str], pairs: list[str], data_root: str | None) -> dict[str, Path]:
    files: dict[str, Path] = {}
    if langs:
        from xdistil_languages import get_language

        from xdistil.data.roots import resolve_data_root

        root = resolve_data_root(data_root)
        for lang in langs:
            path = get_language(lang).find("dev", kind="labeled", data_root=root) if root else None
            if path is None:
                raise FileNotFoundError(f"no local dev file for {lang!r} (give it with --dev {lang}=FILE)")
            files[lang] = Path(path)
    for pair in pairs:
        lang, sep, path = pair.partition("=")
        if not sep:
            raise ValueError(f"--dev wants LANG=FILE, got {pair!r}")
        files[lang] = Path(path)
    if not files:
        raise ValueError("no dev files: give --lang or --dev")
    return files


def _logits(model, sentences, batch_size: int) -> list[np.ndarray]:
    if hasattr(model, "word_logits") and not hasattr(model, "module"):  # an ONNX export (runtime Predictor)
        return model.word_logits(sentences, batch_size)
    from xdistil.taggers import word_logits

    logits, _ = word_logits(model, sentences, batch_size)
    return [lg.numpy() for lg in logits]


def run(model_dir: str, files: dict[str, Path], batch_size: int = 64, limit: int | None = None,
        command: str = "python -m benchmarks.decoding") -> dict:
    from xdistil.data.readers import read_conll
    from xdistil.evaluate import score
    from xdistil.taggers import load_model_any

    model = load_model_any(model_dir)
    labels = list(model.labels)
    types = {lab[2:] for lab in labels if lab != "O"}
    rows = {}
    for lang, path in files.items():
        sents = read_conll(path, label_types=types, limit=limit)
        gold = [s.tags for s in sents]
        seconds, logits = timing.timed(_logits, model, [s.words for s in sents], batch_size)
        argmax = [t for t, _ in decode_all(logits, labels, constrained=False)]
        decode_s, viterbi = timing.timed(lambda logits=logits: [t for t, _ in decode_all(logits, labels)])
        a, v = score(gold, argmax), score(gold, viterbi)
        invalid = sum(not is_valid([labels.index(x) for x in tags], labels) for tags in argmax)
        rows[lang] = {
            "file": str(path), "sentences": len(sents), "words": sum(len(s.words) for s in sents),
            "argmax": {k: a[k] for k in ("f1", "precision", "recall")},
            "viterbi": {k: v[k] for k in ("f1", "precision", "recall")},
            "f1_change": v["f1"] - a["f1"],
            "invalid_argmax_sentences": invalid,
            "changed_sentences": sum(x != y for x, y in zip(argmax, viterbi, strict=True)),
            "model_seconds": round(seconds, 3), "viterbi_seconds": round(decode_s, 4),
        }
    mean = {k: float(np.mean([r[k]["f1"] for r in rows.values()])) for k in ("argmax", "viterbi")}
    return {"model": str(model_dir), "labels": labels, "languages": rows,
            "mean_f1": mean, "mean_f1_change": mean["viterbi"] - mean["argmax"],
            "command": command,
            "python": platform.python_version()}


def markdown(result: dict) -> str:
    lines = [f"# Constrained vs argmax decoding: `{Path(result['model']).name}`", "",
             "| language | sentences | argmax F1 | Viterbi F1 | change | invalid argmax sentences |",
             "|---|---:|---:|---:|---:|---:|"]
    for lang, r in result["languages"].items():
        lines.append(f"| {lang} | {r['sentences']} | {r['argmax']['f1']:.2f} | {r['viterbi']['f1']:.2f} | "
                     f"{r['f1_change']:+.2f} | {r['invalid_argmax_sentences']} |")
    m = result["mean_f1"]
    lines += [f"| mean | | {m['argmax']:.2f} | {m['viterbi']:.2f} | {result['mean_f1_change']:+.2f} | |", "",
              f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = preamble.parser(__doc__, quiet=False)
    p.add_argument("model", help="student, teacher or export directory")
    p.add_argument("--lang", nargs="*", default=[], help="languages whose registry dev files to use")
    p.add_argument("--dev", nargs="*", default=[], metavar="LANG=FILE", help="dev files (CoNLL)")
    p.add_argument("--data-root", help="data root (default: $XDISTIL_DATA or ../shared/data)")
    p.add_argument("--limit", type=int, help="first N sentences of each file")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", help="folder for decoding.json and decoding.md")
    args = p.parse_args(argv)
    command = preamble.start("decoding", argv)
    result = run(args.model, dev_files(args.lang, args.dev, args.data_root), args.batch_size, args.limit, command)
    timing.show(args.out, "decoding", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``xdistil languages``, ``xdistil data check`` and ``xdistil config show``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from xdistil import __version__
from xdistil.commands._util import need_file
from xdistil.commands.flags import add_config_flags, add_student_preset, raw_config


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
    from xdistil.data.readers import FileStats, read_file, sniff_format

    # any IOB2 entity type is valid data (a user's own label set); --labels restricts it
    from xdistil.tagsets import types_of

    types = set(types_of(args.labels)) if args.labels and not args.any_labels else None
    for f in args.files:
        need_file(f, "FILE")
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


def cmd_config_show(args) -> int:
    from xdistil_export.atomic import write_text

    from xdistil.config import ConfigError, RunConfig, from_dict, to_commented_yaml

    cfg = from_dict(RunConfig, raw_config(args, source=args.source))
    text = (f"# xdistil {__version__}: the complete config resolved from {args.source or 'the defaults'}, each\n"
            f"# field with its one-line doc. Edit it and pass it back: xdistil run --config FILE --out DIR\n\n"
            + to_commented_yaml(cfg))
    if args.out:
        if Path(args.out).is_dir():
            raise ConfigError(f"--out {args.out}: is a directory, expected a file")
        write_text(args.out, text)
        print(f"config written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def add_languages(sub) -> None:
    """The ``languages`` command."""
    s = sub.add_parser("languages", help="list the 41-language registry and the data available here",
                       description="Show code, name, script, labeled/unlabeled sources under the data root, "
                                   "the hub fallback and per-language overrides.")
    s.add_argument("codes", nargs="*", help="only these languages")
    s.add_argument("--data-root", help="local data root (default: $XDISTIL_DATA or ../shared/data)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_languages)


def add_config(sub) -> None:
    """The ``config`` command."""
    s = sub.add_parser("config", help="print the complete resolved config, documented: a file to start from")
    csub = s.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = csub.add_parser("show", help="the complete config as YAML with each field's doc as a comment",
                        description="Print the complete config resolved from a preset or YAML file (default: the "
                                    "built-in defaults) with any flags on top, as YAML with each field's one-line "
                                    "doc as a comment above it. It loads back to the same config: save it, edit "
                                    "it, pass it to --config.",
                        epilog="Example: xdistil config show demo --student.hidden_dim 100 > my.yaml")
    c.add_argument("source", nargs="?", metavar="PRESET|FILE", help="a bundled preset (demo) or a YAML file")
    c.add_argument("--out", metavar="FILE", help="write it to FILE instead of stdout")
    add_student_preset(c)
    c.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="any config field by its dotted key (repeatable)")
    add_config_flags(c, ["data", "teacher", "transfer", "student", "distill"], steps=True, aliases=False)
    c.set_defaults(func=cmd_config_show)


def add_data(sub) -> None:
    """The ``data`` command."""
    s = sub.add_parser("data", help="inspect and validate data files")
    dsub = s.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    c = dsub.add_parser("check", help="count sentences/tokens/tags and validate files",
                        description="Validate CoNLL/IOB2, token-per-line or raw-sentence files (gz or plain). "
                                    "Errors name the file and line.")
    c.add_argument("files", nargs="+", metavar="FILE", help="files to check (.gz allowed)")
    c.add_argument("--format", choices=["auto", "conll", "tokens", "raw"], default="auto",
                   help="read every file as this format (default auto: detected per file)")
    c.add_argument("--labels", nargs="+", help="allowed tags, e.g. O B-PER I-PER (default: any IOB2 entity type)")
    c.add_argument("--any-labels", action="store_true", help="accept any IOB2 entity type (the default; "
                   "overrides --labels)")
    c.add_argument("--strict", action="store_true", help="I- after O is an error, not repaired")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=cmd_data_check)

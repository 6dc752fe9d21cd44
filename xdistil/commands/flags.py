"""Config flags generated from the config dataclasses, and the config of a command.

Every config field is ``--section.field`` (``--student.hidden_dim``, ``--distill.stages``)
with the field's docstring as its help; a config file or preset with the flags on top goes
through the one override function, `xdistil.config.apply_overrides`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import types
import typing
from pathlib import Path

from xdistil.commands._util import UsageError, language_choices, need_dir, need_file, quiet_transformers

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


class SetField(argparse.Action):
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


def flag_kind(t) -> tuple[str, list[str] | None, str]:
    """(scalar | bool | list, choices, metavar) of a field type; dataclass fields are sections."""
    while typing.get_origin(t) is typing.Annotated:
        t = typing.get_args(t)[0]
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        if len(args) != 1:  # e.g. distill.stages: a preset name, a comma list or a YAML list
            return "scalar", None, "VALUE"
        return flag_kind(args[0])
    if typing.get_origin(t) is typing.Literal:
        choices = [str(a) for a in typing.get_args(t)]
        return "scalar", choices, "{" + "|".join(choices) + "}"
    if t is bool:
        return "bool", None, "BOOL"
    if typing.get_origin(t) is list:
        return "list", None, flag_kind(typing.get_args(t)[0])[2] + "[,...]" if typing.get_args(t) else "LIST"
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
        kind, choices, metavar = flag_kind(t)
        default = defaults
        for part in key.split("."):
            default = getattr(default, part)
        shown = ",".join(map(str, default)) or "[]" if isinstance(default, list) else default
        help_ = field_doc(cls, name).replace("%", "%%") + f" (default: {'none' if default is None else shown})"
        opts = [f"--{key}"] + (ALIASES.get(key, []) if aliases else [])
        common = {"action": SetField, "keys": [key], "dest": "overrides", "default": argparse.SUPPRESS}
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


def add_common_config_args(p: argparse.ArgumentParser, seeds: list[str], student: bool = False) -> None:
    g = p.add_argument_group("config file and data files")
    g.add_argument("--config", metavar="FILE|PRESET",
                   help="YAML config file or bundled preset (e.g. 'demo'; see 'xdistil config show'); the flags "
                        "override it")
    if student:
        add_student_preset(g)
    g.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="any config field by its dotted key, e.g. --set distill.stages=hard,soft (repeatable)")
    g.add_argument("--train", action="append", metavar="[LANG=]FILE",
                   help="your own labeled CoNLL train file (data.files.LANG.train); repeatable")
    g.add_argument("--dev", action="append", metavar="[LANG=]FILE",
                   help="your own labeled CoNLL dev file (data.files.LANG.dev); repeatable")
    if seeds:
        g.add_argument("--seed", action=SetField, keys=seeds, dest="overrides", default=argparse.SUPPRESS, metavar="INT",
                       help=f"random seed of every step here (sets {' and '.join(seeds)}; the dotted flag sets one)")


def add_student_preset(g) -> None:
    from xdistil.config import student_preset_names

    g.add_argument("--student-preset", metavar="NAME", choices=student_preset_names(),
                   help=f"a bundled student shape laid over --config ({', '.join(student_preset_names())}: "
                        "xdistil/presets/students/; 'fast' is the deployment frontier's fast student, "
                        "docs/deployment.md); the flags override it")


def files_by_language(values, langs, split) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for v in values or []:
        if "=" in v and not Path(v).exists():
            lang, path = v.split("=", 1)
        elif len(langs) == 1:
            lang, path = langs[0], v
        else:
            how = "with several languages" if langs else "name its language:"
            raise UsageError(f"--{split} {v}: {how} write LANG=FILE (or give one --lang)")
        need_file(path, f"--{split}")
        out.setdefault(lang, {}).setdefault(split, []).append(path)
    return out


def teacher_record(teacher_dir) -> dict | None:
    """The config a fine-tuned teacher was trained with (its xdistil_teacher.json), if any."""
    from xdistil.models import DONE_MARKER, GROUP_MARKER

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
    """``base`` < the config file or preset (``source``, else --config) < the student preset
    (--student-preset) < the flags < --set, merged by the one override function, not yet validated."""
    from xdistil.config import apply_overrides, load_yaml, student_preset

    source = source or getattr(args, "config", None)
    raw = apply_overrides(base or {}, load_yaml(source) if source else {})
    if getattr(args, "student_preset", None):
        raw = apply_overrides(raw, student_preset(args.student_preset))
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
        for lang, d in files_by_language(getattr(args, split, None), langs, split).items():
            files.setdefault(lang, {}).update(d)
    if not langs and files:
        data["languages"] = list(files)  # --train sw=FILE names its language
    cfg = from_dict(RunConfig, raw)
    if not langs and not files and need_languages:  # no silent de/ar/hi
        raise UsageError(f"no language given: pass --lang XX (repeatable) or data.languages in --config; "
                         f"{language_choices(resolve_data_root(cfg.data.root))}")
    if record:
        log = logging.getLogger("xdistil")
        log.info("labeled data (as recorded with the teacher unless set here): %s, budget %d, selection slice %d",
                 ",".join(cfg.data.languages), cfg.data.labeled_budget, cfg.data.val_size)
        for k in ("labeled_budget", "val_size"):
            if k in recorded and recorded[k] != getattr(cfg.data, k):
                log.warning("data.%s %s differs from the %s the teacher was trained with: the transfer set and "
                            "the selection slice may then hold its training sentences", k, getattr(cfg.data, k),
                            recorded[k])
    check_config_paths(cfg)
    quiet_transformers()
    return cfg


def check_config_paths(cfg) -> None:
    """Paths inside the config, checked before any step starts."""
    if cfg.data.root:
        need_dir(cfg.data.root, "data.root")
    for lang, splits in cfg.data.files.items():
        for split, paths in splits.items():
            for path in paths:
                need_file(path, f"data.files.{lang}.{split}")
    if cfg.distill.init_from:
        need_dir(cfg.distill.init_from, "distill.init_from")


def teacher_folders(cfg) -> list[Path]:
    """The fine-tuned teacher folders of label/distill (a co-finetuned group counts as its members)."""
    if not cfg.transfer.teachers:
        raise UsageError("give --teacher-dir DIR (a fine-tuned teacher from 'xdistil teacher train')")
    dirs = [need_dir(t, "--teacher-dir") for t in cfg.transfer.teachers]  # before torch is imported

    from xdistil.models import teacher_dirs

    out = []
    for t, d in zip(cfg.transfer.teachers, dirs, strict=True):
        if not (d / "config.json").is_file() and not teacher_record(d):
            raise UsageError(f"--teacher-dir {t}: not a fine-tuned teacher folder (no config.json); to fine-tune "
                             "a model first: xdistil teacher train --teacher MODEL --out DIR")
        out += teacher_dirs(d)
    return out


def add_teacher_dir_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("teachers")
    g.add_argument("--teacher-dir", action=SetField, keys=["transfer.teachers"], kind="list", metavar="DIR",
                   dest="overrides", default=argparse.SUPPRESS,
                   help="fine-tuned teacher folder (from 'xdistil teacher train', or your own HF token-classification "
                        "folder); repeat for several teachers (MT-BERT). A co-finetuned group folder counts as all "
                        "its members. Its recorded languages, labeled budget and selection slice are used unless "
                        "set here. Config key transfer.teachers")
    g.add_argument("--teacher", action=SetField, keys=["transfer.teachers"], kind="list", metavar="DIR",
                   dest="overrides", default=argparse.SUPPRESS,
                   warn="DIR is the old spelling of --teacher-dir DIR (--teacher names a model to fine-tune on "
                        "'teacher train' and 'run')",
                   help="old spelling of --teacher-dir")


def with_teachers(args):
    """The config of label/distill and the teacher folders; the labeled data recorded with the
    first teacher is the default (budget, selection slice, languages)."""
    from xdistil.config import RunConfig, from_dict

    # the teacher folders come from the flags or from transfer.teachers of --config
    probe = from_dict(RunConfig, raw_config(args))  # config mistakes (a stage typo) first, then the paths
    teachers = teacher_folders(probe)
    cfg = build_config(args, teacher_dir=teachers[0])
    cfg.transfer.teachers = [str(d) for d in teachers]
    return cfg, teachers

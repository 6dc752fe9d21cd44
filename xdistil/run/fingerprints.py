"""Every step's fingerprint, composed in one place: what a step's output was built from.

`xdistil.digests` is the mechanism (digest, read, write, diff); this module says, for
each step, which config fields and which inputs go in. The steps (`xdistil.steps`), the
fit checkpoints, the distillation stages, the run's scores and `xdistil bench` all call
these functions, so a field that changes what a step writes is named once.

    teacher(cfg)                       the teacher step (checkpoint=True: its fit checkpoint)
    label(cfg, teacher_dirs)           the transfer set
    distill(cfg, transfer, teacher)    the distillation step as a whole
    stages(cfg, specs, transfer, ...)  each distillation stage, chained by the previous digest
    evaluate(cfg, model_dir)           a model's dev scores
    export(model_dir, options)         an ONNX export
    bench(inputs, options)             `xdistil bench`'s figures

Digests are stable across releases as long as these compositions are: changing one makes
every existing output of that step (and every later step) count as built from other inputs.
"""

from __future__ import annotations

from pathlib import Path

from xdistil import digests
from xdistil.augment import ENTITY_AUG_VERSION, Augmentation
from xdistil.config import RunConfig, StageSpec, to_dict
from xdistil.data.transfer import data_digests

DATA_FIELDS = ("languages", "labeled_budget", "val_size", "labels", "strict")
"""The data settings that change what a teacher learns from and what a transfer set holds."""
NOT_OUTPUT = ("eval_batch_size", "checkpoint_every", "min_selection_f1")
"""Settings that change how a step runs or reports, not what it writes."""


# The levers' keys, by the switch that makes them matter (issue 17's options, off by default).
_LEVERS = {"extra_sources": ("extra_sources",), "concat": ("concat", "concat_max_words"),
           "augment": ("augment_case", "augment_dropout", "augment_swap", "augment_code_mix", "augment_seed"),
           "languages": ("languages",)}  # transfer-only languages


# Transfer keys added after sets were labeled, with the value that labels as before: left out
# of the fingerprint at that value. Another engine's numbers differ in the last digits (int8:
# more), so it is in the digest: the engine asked for (``auto`` as the word, like `precision`).
# augment_entities > 1 adds rows (and reads augment_seed: the augment lever counts as on), which
# record what they took from since version 2 (`ENTITY_AUG_VERSION`, held only when k > 1).
_TRANSFER_SINCE = {"engine": "torch", "augment_entities": 1}


def transfer_fields(tc) -> dict:
    """The transfer config as a labeling fingerprint should hold it: what changes the stored
    set, without the teacher list and batch size (`label` reads those
    elsewhere), and without a lever that is off, so that a set labeled before the levers
    existed keeps its digest (likewise a key of `_TRANSFER_SINCE` at its old value)."""
    out = {k: v for k, v in to_dict(tc).items() if k not in ("teachers", "batch_size")}
    off = {"extra_sources": not tc.extra_sources, "concat": tc.concat == 1,
           "augment": not Augmentation.from_transfer(tc).active and tc.augment_entities == 1,
           "languages": not tc.languages}
    for lever, keys in _LEVERS.items():
        if off[lever]:
            for k in keys:
                out.pop(k)
    if tc.augment_entities > 1:
        out["entity_aug_version"] = ENTITY_AUG_VERSION
    return _since(out, _TRANSFER_SINCE)


# Student keys added after runs were made, with the value that keeps the student as it was:
# left out of the fingerprint at that value, so an upgrade does not rebuild finished students.
_STUDENT_SINCE = {"transformer_width": None, "ngram_dim": 0, "ngram_buckets": 4096, "residual": False,
                  "locked_dropout": False}


# Keys only some students read: another student holds them at the value they had before each
# became a default, so a default change does not rebuild students it does not touch. The CNN
# reads shape_dim since issue 35 (a CNN fingerprinted before holds 0 and is rebuilt: it changed).
_READ_BY = {"factor_dim": ("bilstm",), "shape_dim": ("bilstm", "cnn"), "ngram_dim": ("bilstm",),
            "ngram_buckets": ("bilstm",), "residual": ("cnn",), "locked_dropout": ("bilstm",)}
_UNREAD = {"factor_dim": 0, "shape_dim": 0, "ngram_dim": 0, "ngram_buckets": 4096, "residual": False,
           "locked_dropout": False}


def student_fields(sc) -> dict:
    """The student config as a distillation fingerprint holds it (see `_STUDENT_SINCE` and
    `_READ_BY`)."""
    fields = to_dict(sc)
    for key, archs in _READ_BY.items():
        if fields.get("arch") not in archs:
            fields[key] = _UNREAD[key]
    return _since(fields, _STUDENT_SINCE)


# Stage keys added later, likewise (`stage_fields`).
_STAGE_SINCE = {"average": 0.0, "min_epochs": 0}


def stage_fields(spec: StageSpec) -> dict:
    """A stage spec as the fingerprints hold it (see `_STAGE_SINCE`)."""
    return _since(to_dict(spec), _STAGE_SINCE)


# Distillation keys added later, likewise: at the values that select as before (the gold
# slice, the starting weights winning ties) they are left out; select_size only matters under
# select teacher (as a lever that is off, `transfer_fields`).
_DISTILL_SINCE = {"select": "gold", "keep_margin": 0.0, "precision": None}
SELECTION_FIELDS = ("select", "select_size", "keep_margin")
"""The distillation settings that decide which weights a stage keeps (every stage's fingerprint)."""


def distill_fields(dc) -> dict:
    """The distill config, without its stages, as the fingerprints hold it (see `_DISTILL_SINCE`)."""
    fields = {k: v for k, v in to_dict(dc).items() if k not in ("stages", *NOT_OUTPUT)}
    if fields.get("select") != "teacher":
        fields.pop("select_size", None)
    return _since(fields, _DISTILL_SINCE)


def _since(fields: dict, since: dict) -> dict:
    return {k: v for k, v in fields.items() if k not in since or v != since[k]}


def _data(cfg: RunConfig) -> dict:
    return {k: getattr(cfg.data, k) for k in DATA_FIELDS}


def _model_input(name: str) -> str:
    """A pretrained model named by the config: a local folder by its files, else its name."""
    return digests.folder_digest(name) if Path(name).is_dir() else name


def _precision(cfg: RunConfig, default: str | None = "fp32") -> str | None:
    return getattr(cfg, "precision", default)


def student_precision(cfg) -> str:
    """The precision distillation trains in: the config's (``auto``: bf16 where the hardware
    has it natively and, on a CPU, a calibration of a BiLSTM step found it faster,
    `xdistil.precision.resolve`), for every student. The BiLSTM distilled in
    fp32 under ``auto`` until issue 23 measured bf16 at full size on 2 CPU cores
    (benchmarks/results/sentences, variant bf16): 1.3x faster distillation and the same
    retention (out of domain 83.9 / 78.6 % dev / test against 82.6 / 77.0 %, WikiANN control
    90.9 % against 90.2 %). ``precision: fp32`` reproduces the results made before;
    ``distill.precision`` sets the students' alone (the teacher and labeling keep the run's)."""
    return getattr(getattr(cfg, "distill", None), "precision", None) or getattr(cfg, "precision", "fp32")


def teacher(cfg: RunConfig, checkpoint: bool = False) -> dict:
    """The teacher step's fingerprint; with ``checkpoint`` its fit checkpoint's, which also
    holds the precision (a checkpoint of another precision is not resumed; the finished
    teacher is the same model either way)."""
    tc = to_dict(cfg.teacher)
    if checkpoint:
        fields = {"teacher": {k: v for k, v in tc.items() if k not in NOT_OUTPUT},
                  "models": cfg.teacher.model_names(), "precision": _precision(cfg), "data": _data(cfg)}
        return digests.make("teacher-checkpoint", fields, data_digests(cfg, ("train",)))
    names = cfg.teacher.model_names()
    t = {k: v for k, v in tc.items() if k not in ("model", "models", *NOT_OUTPUT)}
    fields = {"teacher": {**t, "models": names}, "data": _data(cfg)}
    inputs = {**{f"model{k}": _model_input(n) for k, n in enumerate(names)}, **data_digests(cfg, ("train",))}
    return digests.make("teacher", fields, inputs)


def label(cfg: RunConfig, teacher_dirs: list[str | Path]) -> dict:
    """What a transfer set is built from: the teachers (their fingerprints), the transfer
    config (but not the batch size, which changes only speed), the data config, the
    precision of the teachers' forward pass and the bytes of every data file read."""
    fields = {"transfer": transfer_fields(cfg.transfer), "data": _data(cfg), "precision": _precision(cfg, None)}
    inputs = {**{f"teacher{k}": digests.folder_digest(d) for k, d in enumerate(teacher_dirs)},
              **data_digests(cfg, ("train", "unlabeled"))}
    return digests.make("label", fields, inputs)


def _languages(cfg: RunConfig) -> dict:
    # the transfer-only languages a student learns from (absent when none: older digests hold)
    return {"languages": list(cfg.data.languages),
            **({"transfer_languages": list(cfg.transfer.languages)} if cfg.transfer.languages else {})}


def _init_from(cfg: RunConfig) -> dict:
    return {"init_from": digests.folder_digest(cfg.distill.init_from)} if cfg.distill.init_from else {}


def distill(cfg: RunConfig, transfer_dir: str | Path, teacher_dir: str | Path) -> dict:
    """The distillation step as a whole (its stages are fingerprinted one by one by `stages`)."""
    fields = {"student": student_fields(cfg.student),
              "distill": {**distill_fields(cfg.distill),
                          "stages": [stage_fields(s) for s in cfg.distill.resolved_stages()]},
              "data": _languages(cfg)}
    inputs = {"transfer": digests.folder_digest(transfer_dir), "teacher": digests.folder_digest(teacher_dir),
              **_init_from(cfg)}
    return digests.make("distill", fields, inputs)


def transfer_input(folder: str | Path, manifest: str = "manifest.json") -> str:
    """A transfer set's digest; a folder from before fingerprints: the digest of its manifest's bytes."""
    got = digests.digest_of(folder)
    if got is None and (Path(folder) / manifest).exists():
        got = "manifest:" + digests.file_digest(Path(folder) / manifest)
    return got or digests.folder_digest(folder)


def stages(cfg: RunConfig, specs: list[StageSpec], transfer_dir: str | Path, teacher_paths: list[Path]) -> list[dict]:
    """One fingerprint per stage: its spec and matching spec, the student config, the
    distillation settings that change weights (`SELECTION_FIELDS` among them), the inputs'
    digests and the previous stage's digest (so a change in stage i makes every later stage
    differ too)."""
    lang = _languages(cfg)
    selection = {k: v for k, v in distill_fields(cfg.distill).items() if k in SELECTION_FIELDS}
    common = {"student": student_fields(cfg.student), "seed": cfg.distill.seed, "weighting": cfg.distill.teacher_weighting,
              "teachers": cfg.distill.teachers, "max_steps_per_epoch": cfg.distill.max_steps_per_epoch,
              "languages": lang["languages"], "precision": student_precision(cfg), **selection,
              **({"transfer_languages": lang["transfer_languages"]} if "transfer_languages" in lang else {})}
    inputs = {"transfer": transfer_input(transfer_dir),
              **{f"teacher{k}": digests.folder_digest(p) for k, p in enumerate(teacher_paths)}, **_init_from(cfg)}
    out, previous = [], None
    for spec in specs:
        fp = digests.make("distill-stage", {"stage": stage_fields(spec), "match": to_dict(cfg.distill.match_for(spec)),
                                                **common}, {**inputs, "previous": previous})
        out.append(fp)
        previous = fp["digest"]
    return out


def evaluate(cfg: RunConfig, model_dir: str | Path) -> str | None:
    """The digest of a model's dev scores: the model's files, the dev files' bytes, the
    languages, the dev limit and the labels (None: no model there)."""
    path = Path(model_dir)
    if not path.is_dir():
        return None
    fields = {"languages": cfg.data.languages, "dev_limit": cfg.data.dev_limit, "labels": cfg.data.labels}
    inputs = {"model": digests.folder_digest(path), **data_digests(cfg, ("dev",))}
    return digests.make("evaluate", fields, inputs)["digest"]


def export(model_dir: str | Path, options: dict) -> dict:
    """An ONNX export: the model's files, the export options (`deployable.export_model`'s
    keyword arguments), the dev file's bytes and the parity sentences."""
    fields = {k: v for k, v in options.items() if k not in ("dev_file", "parity_sentences")}
    inputs = {"model": digests.folder_digest(model_dir)}
    if options.get("dev_file"):
        inputs["dev_file"] = digests.file_digest(options["dev_file"])
    if options.get("parity_sentences") is not None:
        inputs["parity_sentences"] = digests.make("parity", {"s": options["parity_sentences"]})["digest"]
    return digests.make("export", fields, inputs)


def bench(teacher_dir: Path, student_dirs: list[Path], transfer_dir: Path | None, options: dict) -> dict:
    """What `xdistil bench`'s figures were measured on: the models' and transfer set's files, the options."""
    inputs = {"teacher": digests.folder_digest(teacher_dir),
              **{f"student:{d.name}": digests.folder_digest(d) for d in student_dirs}}
    if transfer_dir is not None and transfer_dir.is_dir():
        inputs["transfer"] = digests.folder_digest(transfer_dir)
    return digests.make("bench", options, inputs)

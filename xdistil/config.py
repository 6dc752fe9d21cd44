"""Typed configuration: the single source of truth.

YAML files and CLI flags only fill these dataclasses; the resolved config is saved next
to every model a run writes. Unknown keys are errors (a typo must not be ignored).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from xdistil import DEFAULT_LABELS


class ConfigError(ValueError):
    pass


@dataclass
class DataConfig:
    languages: list[str] = field(default_factory=lambda: ["de", "ar", "hi"])
    """Language codes; registry languages find their files under the data root."""
    root: str | None = None
    """Local data root ($XDISTIL_DATA wins; default ../shared/data when present, else the hub)."""
    labeled_budget: int = 2000
    """Gold sentences per language taken from the head of train (includes the selection slice)."""
    val_size: int = 200
    """Sentences at the end of the budget held out for model selection / early stopping."""
    dev_limit: int | None = None
    """Evaluate on the first N dev sentences per language (None: the whole dev file)."""
    labels: list[str] = field(default_factory=lambda: list(DEFAULT_LABELS))
    files: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """Per language, user files by split: {"sw": {"train": [...], "dev": [...], "unlabeled": [...]}}."""
    strict: bool = False
    """Raise on repairable IOB problems instead of fixing them with a warning."""

    def __post_init__(self):
        if not self.languages:
            raise ConfigError("data.languages is empty")
        if self.labeled_budget < 1:
            raise ConfigError("data.labeled_budget must be >= 1")
        if not 0 <= self.val_size < self.labeled_budget:
            raise ConfigError("data.val_size must be in [0, labeled_budget)")
        if "O" not in self.labels:
            raise ConfigError("data.labels must contain 'O'")

    @property
    def label_types(self) -> set[str]:
        return {lab[2:] for lab in self.labels if lab != "O"}


@dataclass
class TeacherConfig:
    model: str = "e5-small"
    """Hub id, local path, or 'e5-small' (the bundled offline encoder, prepared on first use)."""
    models: list[str] = field(default_factory=list)
    """Several teachers (hub ids / paths / 'e5-small'), co-finetuned with one shared head
    (MT-BERT); when given, it replaces ``model``. Tokenizers and hidden sizes may differ."""
    max_length: int = 128
    """Sub-words per window (specials included); longer sentences are windowed, not cut."""
    epochs: float = 2.0
    batch_size: int = 16
    lr: float = 5e-5
    head_lr: float = 1e-3
    """Learning rate of the freshly initialised classification head."""
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    freeze_embeddings: bool = True
    """Freeze the word-embedding table (most of a multilingual model's parameters)."""
    checkpoint_every: int = 50
    """Optimizer steps between resumable checkpoints."""
    seed: int = 13
    eval_batch_size: int = 64

    def __post_init__(self):
        if self.epochs <= 0 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("teacher: epochs, batch_size and lr must be positive")
        if self.max_length < 8:
            raise ConfigError("teacher.max_length must be >= 8")
        if isinstance(self.models, str):
            self.models = [self.models]

    def model_names(self) -> list[str]:
        return list(self.models) or [self.model]


@dataclass
class TransferConfig:
    """The unlabeled transfer set: what goes in, and what the teacher writes for each word."""

    sources: list[str] = field(default_factory=lambda: ["train_rest", "unlabeled", "raw"])
    """Local sources per language: train_rest (train beyond the budget, tags stripped),
    unlabeled (token files) and raw (sentence files), plus data.files.<lang>.unlabeled."""
    hf: list[dict] = field(default_factory=list)
    """Extra Hugging Face datasets: [{name, config, split, lang}] (``tokens`` column)."""
    limit: int | None = None
    """At most this many transfer sentences per language (None: everything available)."""
    layers: list[int] = field(default_factory=lambda: [6])
    """Teacher hidden layers stored per word (0 = embeddings, 12 = last of a 12-layer model)."""
    chunk_size: int = 1000
    """Sentences per written chunk (the unit of resumption)."""
    batch_size: int = 64
    hidden_dtype: str = "float16"
    teachers: list[str] = field(default_factory=list)
    """Fine-tuned teacher folders that label the set (a co-finetuned group folder counts
    as all its members); ``--teacher DIR`` on the command line replaces it."""

    def __post_init__(self):
        bad = set(self.sources) - {"train_rest", "unlabeled", "raw"}
        if bad:
            raise ConfigError(f"transfer.sources: unknown {sorted(bad)} (train_rest, unlabeled, raw)")
        if self.hidden_dtype not in ("float16", "float32"):
            raise ConfigError("transfer.hidden_dtype must be float16 or float32")


LOSS_KINDS = ("gold", "hard", "soft", "hidden")


@dataclass
class StageSpec:
    """One distillation stage: a weighted sum of losses, trained with optional gradual unfreezing."""

    name: str
    losses: dict[str, float]
    """Loss weights; keys: gold (CE on gold tags), hard (CE on teacher tags), soft (teacher
    logits), hidden (projected student state vs a teacher layer)."""
    data: str = "transfer"
    """transfer: every transfer sentence (teacher targets); labeled: the gold budget only."""
    epochs: float = 2.0
    """Epochs per unfreezing step (or for the whole stage when unfreeze is off)."""
    lr: float = 2e-3
    batch_size: int = 32
    unfreeze: bool = True
    """Gradual top-down unfreezing: output -> projection -> encoder -> embeddings, one group per step."""
    patience: int = 1
    """Early stopping: epochs without improvement on the selection slice before stopping a step."""
    soft_kind: str = "mse"
    temperature: float = 1.0
    hidden_kind: str = "mse"

    def __post_init__(self):
        if not self.losses or set(self.losses) - set(LOSS_KINDS):
            raise ConfigError(f"stage {self.name!r}: losses must be a non-empty mapping over {LOSS_KINDS}")
        if self.data not in ("transfer", "labeled"):
            raise ConfigError(f"stage {self.name!r}: data must be transfer or labeled")
        if self.data == "labeled" and set(self.losses) - {"gold", "hard", "soft", "hidden"}:
            raise ConfigError(f"stage {self.name!r}: unknown losses")
        if self.soft_kind not in ("mse", "kl") or self.hidden_kind not in ("mse", "kl", "cosine"):
            raise ConfigError(f"stage {self.name!r}: soft_kind mse|kl, hidden_kind mse|kl|cosine")
        if self.epochs <= 0 or self.lr <= 0 or self.batch_size < 1:
            raise ConfigError(f"stage {self.name!r}: epochs, lr and batch_size must be positive")

    @property
    def selects_on_f1(self) -> bool:
        """Stages that train the output layer select on F1; a hidden-only stage on its loss."""
        return bool(set(self.losses) & {"gold", "hard", "soft"})


STAGE_PRESETS: dict[str, list[dict]] = {
    # The design card's order: hard labels, then soft logits, then intermediate representations.
    "staged": [
        {"name": "hard", "losses": {"hard": 1.0, "gold": 1.0}},
        {"name": "soft", "losses": {"soft": 1.0, "gold": 1.0}},
        {"name": "intermediate", "losses": {"soft": 1.0, "hidden": 1.0, "gold": 1.0}},
    ],
    # XtremeDistil (Mukherjee & Hassan Awadallah 2020): representation, then logits, then gold CE.
    "xtremedistil": [
        {"name": "intermediate", "losses": {"hidden": 1.0}},
        {"name": "logits", "losses": {"soft": 1.0}},
        {"name": "gold", "losses": {"gold": 1.0}, "data": "labeled"},
    ],
    # No teacher at all: the baseline a student must beat.
    "gold-only": [{"name": "gold", "losses": {"gold": 1.0}, "data": "labeled", "unfreeze": False, "epochs": 20,
                   "patience": 3}],
}

# Single stages by name, for `--stages hard,soft,intermediate` style lists.
STAGE_SHORTHANDS: dict[str, dict] = {
    "gold": {"name": "gold", "losses": {"gold": 1.0}, "data": "labeled"},
    "hard": STAGE_PRESETS["staged"][0],
    "soft": STAGE_PRESETS["staged"][1],
    "logits": {"name": "logits", "losses": {"soft": 1.0}},
    "intermediate": STAGE_PRESETS["staged"][2],
    "hidden": {"name": "hidden", "losses": {"hidden": 1.0}},
}


def parse_stages(text: str) -> str | list[dict]:
    """A preset name (``xtremedistil``) or a comma list of stage names (``hard,soft``)."""
    if text in STAGE_PRESETS:
        return text
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in STAGE_SHORTHANDS]
    if unknown or not names:
        raise ConfigError(f"--stages {text!r}: use a preset ({', '.join(STAGE_PRESETS)}) or a comma list of "
                          f"{', '.join(STAGE_SHORTHANDS)}")
    return [dict(STAGE_SHORTHANDS[n]) for n in names]


@dataclass
class StudentConfig:
    arch: str = "bilstm"
    """bilstm | transformer"""
    embedding_dim: int = 50
    hidden_dim: int = 200
    num_layers: int = 1
    dropout: float = 0.2
    embedding_init: str = "svd"
    """svd (of the teacher's word-piece embeddings, XtremeDistil Table 7) | random"""
    transformer_layers: int = 4
    transformer_init: str = "teacher"
    """teacher (copy chosen teacher layers) | random"""
    teacher_layers: list[int] | None = None
    max_length: int = 128
    student_layer: int = -1
    """Which student hidden state meets the teacher layer in the hidden loss (-1 = last)."""

    def __post_init__(self):
        if self.arch not in ("bilstm", "transformer"):
            raise ConfigError("student.arch must be bilstm or transformer")
        if self.embedding_init not in ("svd", "random") or self.transformer_init not in ("teacher", "random"):
            raise ConfigError("student.embedding_init svd|random, student.transformer_init teacher|random")


@dataclass
class DistillConfig:
    stages: list[StageSpec] | str = "staged"
    """A preset name (staged, xtremedistil, gold-only) or a list of stage specs."""
    teacher_layer: int = 6
    """Teacher layer the hidden loss targets (must be one of transfer.layers)."""
    init_from: str | None = None
    """Continue from a saved student directory instead of building a new one (same labels)."""
    teacher_weighting: str = "mtbert"
    """How several teachers are weighted: mtbert (1/(1+task loss)), uniform, best."""
    teachers: list[int] | None = None
    """Which of the transfer set's teachers to learn from, by position (default: all);
    e.g. [1] distils a single-teacher student from a set labeled by several."""
    seed: int = 13
    eval_batch_size: int = 128
    max_steps_per_epoch: int | None = None
    """Cap on optimizer steps per epoch (for quick runs and tests)."""

    def resolved_stages(self) -> list[StageSpec]:
        if isinstance(self.stages, str):
            if self.stages not in STAGE_PRESETS:
                raise ConfigError(f"unknown stage preset {self.stages!r}: {sorted(STAGE_PRESETS)}")
            return [StageSpec(**d) for d in STAGE_PRESETS[self.stages]]
        return [s if isinstance(s, StageSpec) else from_dict(StageSpec, s, "distill.stages[]") for s in self.stages]


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    steps: list[str] = field(default_factory=lambda: ["teacher", "label", "distill", "evaluate"])
    """Pipeline steps `xdistil run` performs, in order."""


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {}
    for k, v in data.items():
        t = hints[k]
        if dataclasses.is_dataclass(t):
            kwargs[k] = _build(t, v, f"{where}.{k}")
        else:
            kwargs[k] = v
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def from_dict(cls, data: dict, where: str = "config"):
    return _build(cls, data, where)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


PRESETS = Path(__file__).parent / "presets"


def load_yaml(path_or_name: str | Path) -> dict:
    """Read a YAML config file, or a bundled preset by name (e.g. ``demo``)."""
    p = Path(path_or_name)
    if not p.exists() and (PRESETS / f"{path_or_name}.yaml").exists():
        p = PRESETS / f"{path_or_name}.yaml"
    if not p.exists():
        names = ", ".join(sorted(q.stem for q in PRESETS.glob("*.yaml")))
        raise ConfigError(f"config {path_or_name!r} not found (a file, or a preset: {names})")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return data


def save_json(obj, path: Path) -> None:
    """Atomic JSON write (temp file + rename): an interruption never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)

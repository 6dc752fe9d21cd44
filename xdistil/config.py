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


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    extra: dict = field(default_factory=dict)
    """Sections a later step reads (kept as given so configs stay forward compatible)."""


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

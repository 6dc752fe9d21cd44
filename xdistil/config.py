"""Typed configuration: the single source of truth.

YAML files, presets and CLI flags only fill these dataclasses; the resolved config is
saved next to every model a run writes. The classes are pydantic dataclasses: types are
checked (and obvious strings converted: ``lr: 1e-3``, ``epochs: "2"``) when a config is
read, unknown keys are errors (a typo must not be ignored), and every error is one line
naming the dotted key (``teacher.lr: ...``). The docstring under each field is its help
text: the CLI's generated ``--section.field`` flags and ``xdistil config show`` print it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from xdistil.objective import OUTPUT_TERMS, TERMS
from xdistil.objective import help_text as loss_help
from xdistil.students import registry as _student_registry


class ConfigError(ValueError):
    """A wrong config key or value; the message is one line that names the dotted key."""


def _as_list(v):
    """A bare string is a comma list (``de`` or ``de,ar``), never its letters; a number is one item."""
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    if isinstance(v, int | float) and not isinstance(v, bool):
        return [v]
    return v


def _positive(obj, *names: str, where: str = "") -> None:
    """Finite and > 0: NaN passes a bare ``x <= 0`` check (every comparison with it is False)."""
    for n in names:
        v = getattr(obj, n)
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ConfigError(f"{where}{n} must be positive (a finite number > 0), got {v!r}")


def _non_negative(obj, *names: str, where: str = "") -> None:
    for n in names:
        v = getattr(obj, n)
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"{where}{n} must be a finite number >= 0, got {v!r}")


def _fraction(obj, *names: str, below_one: bool = False) -> None:
    for n in names:
        v = getattr(obj, n)
        if not (0.0 <= v < 1.0 if below_one else 0.0 <= v <= 1.0):  # False for NaN
            raise ConfigError(f"{n} must be in [0, {'1)' if below_one else '1]'}, got {v!r}")


def _layers(name: str, layers) -> None:
    if layers is not None and any(x < 0 for x in layers):
        raise ConfigError(f"{name} must be >= 0 (0 = the first), got {layers}")


StrList = Annotated[list[str], BeforeValidator(_as_list)]
IntList = Annotated[list[int], BeforeValidator(_as_list)]

# extra="forbid": unknown keys are errors; use_attribute_docstrings: the docstring under a
# field becomes its description (help text of the generated flags, comments of `config show`).
_SCHEMA = ConfigDict(extra="forbid", use_attribute_docstrings=True)


@dataclass(config=_SCHEMA)
class DataConfig:
    languages: StrList = field(default_factory=lambda: ["de", "ar", "hi"])
    """Language codes; registry languages find their files under the data root."""
    root: str | None = None
    """Local data root ($XDISTIL_DATA wins; default ../shared/data when present, else the hub)."""
    labeled_budget: int = 2000
    """Gold sentences per language taken from the head of train (includes the selection slice)."""
    val_size: int = 200
    """Sentences at the end of the budget held out for model selection / early stopping."""
    dev_limit: int | None = None
    """Evaluate on the first N dev sentences per language (None: the whole dev file)."""
    labels: StrList | None = None
    """The tag set (IOB2: O plus B-/I- of every entity type). Unset: the teacher's own labels when it has a
    token-classification head, else the tags in the labeled files; data types the teacher lacks get new head
    rows (logged)."""
    files: dict[str, dict[str, StrList]] = field(default_factory=dict)
    """Per language, user files by split: {"sw": {"train": [...], "dev": [...], "unlabeled": [...]}}."""
    strict: bool = False
    """Raise on repairable IOB problems instead of fixing them with a warning."""

    def __post_init__(self):
        if not self.languages:
            raise ConfigError("languages is empty")
        if self.labeled_budget < 1:
            raise ConfigError("labeled_budget must be >= 1")
        if not 0 <= self.val_size < self.labeled_budget:
            raise ConfigError(f"val_size must be in [0, labeled_budget={self.labeled_budget})")
        _positive(self, "dev_limit")
        if self.labels is not None and "O" not in self.labels:
            raise ConfigError("labels must contain 'O'")

    @property
    def label_types(self) -> set[str] | None:
        """Entity types of an explicit label list; None (any IOB2 type) while labels are unset."""
        return None if self.labels is None else {lab[2:] for lab in self.labels if lab != "O"}


@dataclass(config=_SCHEMA)
class TeacherConfig:
    model: str = "e5-small"
    """Hub id, local path, or 'e5-small' (the bundled offline encoder, prepared on first use)."""
    models: StrList = field(default_factory=list)
    """Several teachers (hub ids / paths / 'e5-small'), co-finetuned with one shared head
    (MT-BERT); when given, it replaces ``model``. Tokenizers and hidden sizes may differ."""
    max_length: int = 128
    """Sub-words per window (specials included); longer sentences are windowed, not cut."""
    epochs: float = 2.0
    """Fine-tuning epochs (fractions allowed)."""
    batch_size: int = 16
    """Fine-tuning batch size (sentences)."""
    lr: float = 5e-5
    """Learning rate of the encoder."""
    head_lr: float = 1e-3
    """Learning rate of the freshly initialised classification head."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_ratio: float = 0.1
    """Share of the optimizer steps spent warming the learning rate up linearly."""
    freeze_embeddings: bool = True
    """Freeze the word-embedding table (most of a multilingual model's parameters)."""
    checkpoint_every: int = 50
    """Optimizer steps between resumable checkpoints."""
    min_steps: int = 300
    """Train at least this many optimizer steps (more epochs on small budgets: 100 sentences a language
    over 3 languages is 15 steps an epoch); 0: exactly ``epochs``."""
    min_selection_f1: float = 1.0
    """Stop with a one-line error instead of labeling with a teacher whose best selection F1 is below this."""
    seed: int = 13
    """Random seed of fine-tuning (head init, batch order, dropout)."""
    eval_batch_size: int = 64
    """Batch size when the teacher tags the selection slice."""

    def __post_init__(self):
        _positive(self, "epochs", "batch_size", "lr", "head_lr", "eval_batch_size")
        _non_negative(self, "weight_decay", "checkpoint_every", "min_steps")
        _fraction(self, "warmup_ratio")
        if not math.isfinite(self.min_selection_f1):
            raise ConfigError(f"min_selection_f1 must be a finite number, got {self.min_selection_f1!r}")
        if self.max_length < 8:
            raise ConfigError("max_length must be >= 8")

    def model_names(self) -> list[str]:
        return list(self.models) or [self.model]


TRANSFER_SOURCES = ("train_rest", "unlabeled", "raw")


@dataclass(config=_SCHEMA)
class TransferConfig:
    """The unlabeled transfer set: what goes in, and what the teacher writes for each word."""

    sources: StrList = field(default_factory=lambda: list(TRANSFER_SOURCES))
    """Local sources per language: train_rest (train beyond the budget, tags stripped),
    unlabeled (token files) and raw (sentence files), plus data.files.<lang>.unlabeled."""
    hf: list[dict] = field(default_factory=list)
    """Extra Hugging Face datasets: [{name, config, split, lang}] (``tokens`` column)."""
    limit: int | None = None
    """At most this many transfer sentences per language (None: everything available)."""
    layers: IntList = field(default_factory=lambda: [6])
    """Teacher hidden layers stored per word (0 = embeddings, 12 = last of a 12-layer model)."""
    chunk_size: int = 1000
    """Sentences per written chunk (the unit of resumption)."""
    batch_size: int = 64
    """Sentences per teacher forward pass while labeling."""
    hidden_dtype: Literal["float16", "float32"] = "float16"
    """Storage type of the teacher hidden states (float16 halves the disk)."""
    teachers: StrList = field(default_factory=list)
    """Fine-tuned teacher folders that label the set (a co-finetuned group folder counts
    as all its members); ``--teacher-dir DIR`` on the command line replaces it."""
    extra_sources: dict[str, StrList] = field(default_factory=dict)
    """Per language, more unlabeled text from other corpora, tags stripped, mixed one for one
    with the rest: a dataset of the language's registry entry (a labeled one's train split,
    {pt: [uner]}; an unlabeled one's file, {en: [tatoeba]}) or a file (under the data root, or
    absolute; column, token-per-line or raw sentence-per-line text, as its first lines look); a
    dev or test split is refused."""
    concat: int = 1
    """Join up to this many consecutive fragments (train beyond the budget, token files) into
    one transfer sequence (1: off); transfer.limit counts the joined sequences."""
    concat_max_words: int = 64
    """Word limit of a joined sequence (a fragment longer than it stays whole, alone)."""
    augment_case: float = 0.0
    """Share of transfer sentences re-cased: all lower, all upper or title case (xdistil.augment)."""
    augment_dropout: float = 0.0
    """Per-word probability of dropping a word of a transfer sentence (one word always stays)."""
    augment_swap: float = 0.0
    """Share of pairs of consecutive transfer sentences that swap a capitalised span (entity)
    or, lacking one, a lower-case word (context)."""
    augment_code_mix: float = 0.0
    """Share of transfer sentences joined with a transfer sentence of the next run language."""
    augment_seed: int = 13
    """Seed of the augmentations: the same seed and text give the same transfer set."""
    augment_entities: int = 1
    """Entity-aware augmentation, k: after labeling, k - 1 variants of every transfer sentence
    (mentions swapped for others of their type, words for others of their tag, the words
    between mentions shuffled; xdistil.augment), labeled by the teachers too (1: off; 3: three
    times the transfer sentences, less duplicates)."""
    languages: StrList = field(default_factory=list)
    """Transfer-only languages (no labeled data, e.g. bs ca cs mk sl sq here): their unlabeled text joins
    the transfer set, labeled zero-shot by the teacher; no labeled file is read for them, no dev F1."""
    engine: Literal["torch", "ort", "ort-int8", "auto"] = "auto"
    """How the teachers run while labeling: auto (the default: the fastest of the three below on
    this machine whose word tags agree with torch fp32 on >= 99 % of a probe's words, measured
    once and cached per CPU, versions, threads and teacher; torch for a set under 2,000
    sentences); torch (the teacher module, in `precision`); ort / ort-int8 (the teacher exported
    to ONNX once, its outputs the logits and the transfer.layers only, run by onnxruntime on the
    CPU in fp32 / dynamic int8). xdistil.engines."""

    def __post_init__(self):
        bad = set(self.sources) - set(TRANSFER_SOURCES)
        if bad:
            raise ConfigError(f"sources: unknown {sorted(bad)} (use {', '.join(TRANSFER_SOURCES)})")
        if self.concat < 1 or self.concat_max_words < 1:
            raise ConfigError("concat and concat_max_words must be >= 1")
        _positive(self, "limit", "chunk_size", "batch_size")
        _layers("layers", self.layers)
        _fraction(self, "augment_case", "augment_dropout", "augment_swap", "augment_code_mix")
        if self.augment_entities < 1:
            raise ConfigError(f"augment_entities must be >= 1 (1: off, k: k - 1 variants a sentence), "
                              f"got {self.augment_entities!r}")




LossName = Literal[tuple(TERMS)]


@dataclass(config=_SCHEMA)
class MatchSpec:
    """The hidden loss in one place: which student state meets which teacher layer, and how."""

    teacher_layer: int = 6
    """Teacher layer the hidden loss targets (one of transfer.layers; 0 = embeddings)."""
    student_layer: int = -1
    """Student hidden state projected onto it (index into the student's hidden states; -1 = last)."""
    loss: Literal["mse", "kl", "cosine"] = "mse"
    """mse (XtremeDistil stage 1, MT-BERT) | cosine (1 - cosine similarity) | kl (over the features)."""

    def __post_init__(self):
        if self.teacher_layer < 0:
            raise ConfigError(f"teacher_layer must be >= 0 (0 = embeddings), got {self.teacher_layer}")


@dataclass(config=_SCHEMA)
class StageSpec:
    """One distillation stage: a weighted sum of losses, trained with optional gradual unfreezing."""

    name: str
    """Stage name (the student folder is stageN-NAME)."""
    losses: Annotated[dict[LossName, float], Field(description=f"Loss weights by term: {loss_help()}.")]
    data: Literal["transfer", "labeled"] = "transfer"
    """transfer: every transfer sentence (teacher targets); labeled: the gold budget only."""
    epochs: float = 2.0
    """Epochs per unfreezing step (or for the whole stage when unfreeze is off)."""
    lr: float = 2e-3
    """Learning rate of the stage."""
    batch_size: int = 32
    """Sentences per optimizer step."""
    unfreeze: bool = True
    """Gradual top-down unfreezing: output -> projection -> encoder -> embeddings, one group per step."""
    patience: int = 1
    """Early stopping: epochs without improvement on the selection slice before stopping a step."""
    min_epochs: int = 0
    """Epochs a step runs before early stopping may end it (the best epoch is still the one kept).
    A long stage's first epochs dip before they climb: the demo's soft-long with patience 2 and
    no minimum stopped in the dip on 2 of 3 seeds and kept 92-94 % of its teacher where the
    seed that ran on kept 97 % (benchmarks/results/transfer-size/selection.md)."""
    soft_kind: Literal["mse", "kl"] = "mse"
    """Soft loss on the teacher logits: mse (XtremeDistil) or kl (with temperature)."""
    temperature: float = 1.0
    """Softmax temperature of the kl soft loss."""
    match: dict[Literal["teacher_layer", "student_layer", "loss"], int | str] | None = None
    """This stage's overrides of distill.match, e.g. {loss: cosine} (None: distill.match as it is)."""
    average: float = 0.0
    """Weight averaging: the decay of a moving average of the student's weights over the
    stage's steps (0: off; e.g. 0.99, about the last 100 steps). Selection scores, and the
    stage keeps, the averaged weights; training goes on from the raw ones."""

    def __post_init__(self):
        if not self.losses:
            raise ConfigError(f"stage {self.name!r}: losses must be a non-empty mapping over {', '.join(TERMS)}")
        where = f"stage {self.name!r}: "
        _positive(self, "epochs", "lr", "batch_size", "temperature", where=where)
        _non_negative(self, "patience", "min_epochs", where=where)
        if not 0 <= self.average < 1:
            raise ConfigError(f"{where}average must be a decay in [0, 1) (0: off), got {self.average}")
        weights = list(self.losses.values())
        if not all(math.isfinite(w) and w >= 0 for w in weights) or not any(w > 0 for w in weights):
            raise ConfigError(f"{where}loss weights must be finite numbers >= 0, one of them positive, "
                              f"got {dict(self.losses)}")

    @property
    def selects_on_f1(self) -> bool:
        """Stages that train the output layer select on F1; a hidden-only stage on its loss."""
        return bool(set(self.losses) & set(OUTPUT_TERMS))


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
        raise ConfigError(f"{text!r}: use a preset ({', '.join(STAGE_PRESETS)}) or a comma list of "
                          f"{', '.join(STAGE_SHORTHANDS)}")
    return [dict(STAGE_SHORTHANDS[n]) for n in names]


def _stages_in(v):
    """Stages as a preset name, a comma list of shorthands, or a list whose items may be shorthand names."""
    if isinstance(v, str):
        return parse_stages(v)
    if isinstance(v, list):
        return [parse_stages(s)[0] if isinstance(s, str) and s in STAGE_SHORTHANDS else s for s in v]
    return v


# The two shapes of distill.stages; the tags pick the branch so an error names only that one.
_STAGE_TAGS = ("preset", "list")
Stages = Annotated[
    Annotated[str, Tag("preset")] | Annotated[list[StageSpec], Tag("list")],
    Discriminator(lambda v: "preset" if isinstance(v, str) else "list"),
    BeforeValidator(_stages_in),
]


# Student architectures are the files of xdistil/students, listed by the registry without
# importing them (no torch): validation and the CLI's choices follow from this type.
StudentArch = Literal[tuple(_student_registry.names())]


@dataclass(config=_SCHEMA)
class StudentConfig:
    arch: StudentArch = "bilstm"
    """Student architecture: one file of xdistil/students each (xdistil.students.registry)."""
    embedding_dim: int = 50
    """Word-piece embedding width (bilstm, cnn; SVD-reduced from the teacher's table)."""
    hidden_dim: int = 200
    """Hidden width: bilstm per direction, cnn channels."""
    num_layers: int = 1
    """Depth: bilstm layers, cnn iterations of its dilated block."""
    dropout: float = 0.2
    """Dropout between the student's layers."""
    embedding_init: Literal["svd", "random"] = "svd"
    """svd (of the teacher's word-piece embeddings, XtremeDistil Table 7) | random"""
    transformer_layers: int = 4
    """Transformer student: number of layers."""
    transformer_init: Literal["teacher", "random"] = "teacher"
    """teacher (copy chosen teacher layers) | random"""
    teacher_layers: IntList | None = None
    """Transformer student: which teacher layers to copy (default: evenly spaced)."""
    transformer_width: int | None = None
    """Transformer student: hidden width (None = the teacher's; heads = width // 64, FFN scaled
    alike). A narrower student cannot copy the teacher's layers: with transformer_init teacher
    its word, position and type embeddings start from the teacher's projected onto their top
    principal directions (as the BiLSTM's SVD init), its layers at random."""
    max_length: int = 128
    """Sub-words per window of the student (specials included)."""
    max_vocab: int | None = None
    """Cap on the student's vocabulary (specials and single characters included): the most
    frequent pieces, every language guaranteed a share; None keeps every piece the data uses."""
    factor_dim: int = 0
    """bilstm: factorized embeddings (ALBERT): a V x factor_dim table then a linear map to
    embedding_dim, so more pieces fit the budget; 0 = a plain V x embedding_dim table."""
    shape_dim: int = 16
    """bilstm, cnn: width of a word-shape embedding (casing, digits, punctuation, word start) joined to
    every piece's, looked up from the piece id (no new model input); 0 = off. The default 16
    keeps more of the teacher on text unlike the labeled data (UNER en/pt, trained on WikiANN:
    87.9 % against 78.1 % of the teacher's test F1 over 4 seeds, `benchmarks/sentences.py`) for
    +1.5 % parameters; set 0 for the student as it was before."""
    ngram_dim: int = 0
    """bilstm: width of a hashed character-trigram embedding joined to every piece's: the trigrams
    of each piece, averaged over the pieces of its word, so a word the capped vocabulary cuts
    into many small pieces is still seen whole (looked up from the piece ids, no new model
    input); 0 = off."""
    ngram_buckets: int = 4096
    """bilstm: hash buckets of the trigram embedding (ngram_buckets x ngram_dim parameters)."""
    residual: bool = False
    """cnn: every dilated convolution adds its input to its output, so a block applied
    num_layers times still trains (xdistil/students/cnn.py)."""
    locked_dropout: bool = False
    """bilstm: one dropout mask per sentence and feature, shared by all its positions (variational
    / locked dropout), instead of one per element: the same rate, T times fewer random draws,
    which on a CPU cost about a tenth of a fit (xdistil/students/bilstm.py, ``drop``)."""

    def __post_init__(self):
        if self.max_vocab is not None and self.max_vocab < 1:
            raise ConfigError(f"max_vocab must be >= 1, got {self.max_vocab}")
        _non_negative(self, "factor_dim", "shape_dim", "ngram_dim")
        _positive(self, "embedding_dim", "hidden_dim", "num_layers", "transformer_layers", "transformer_width",
                  "ngram_buckets")
        _fraction(self, "dropout", below_one=True)
        _layers("teacher_layers", self.teacher_layers)
        if self.max_length < 8:
            raise ConfigError("max_length must be >= 8")


@dataclass(config=_SCHEMA)
class DistillConfig:
    stages: Stages = "staged"
    """A preset name (staged, xtremedistil, gold-only), a comma list of stage names
    (hard,soft,intermediate,logits,hidden,gold) or a list of stage specs."""
    match: MatchSpec = field(default_factory=MatchSpec)
    """The hidden loss: teacher layer, student layer and loss kind (a stage may override it)."""
    init_from: str | None = None
    """Continue from a saved student directory instead of building a new one (same labels)."""
    teacher_weighting: Literal["mtbert", "uniform", "best"] = "mtbert"
    """How several teachers are weighted: mtbert (1/(1+task loss)), uniform, best."""
    teachers: IntList | None = None
    """Which of the transfer set's teachers to learn from, by position (default: all);
    e.g. [1] distils a single-teacher student from a set labeled by several."""
    seed: int = 13
    """Random seed of the student (init, batch order, dropout)."""
    eval_batch_size: int = 128
    """Batch size when the student tags the selection slice."""
    max_steps_per_epoch: int | None = None
    """Cap on optimizer steps per epoch (for quick runs and tests)."""
    checkpoint_every: int = 200
    """Optimizer steps between resumable checkpoints inside a step (0: at epoch ends only)."""
    select: Literal["teacher", "gold"] = "teacher"
    """What early stopping and the kept weights follow: teacher (the student's entity F1 against the
    teachers' tags on select_size transfer sentences held out of training; a hidden-only stage its
    loss there; a stage trained on gold alone still selects on gold) | gold (F1 on the data.val_size
    gold sentences a language, as before: 100 a language decided once between 92 and 98 % of the
    teacher). The gold F1 is logged either way."""
    select_size: int = 2000
    """select teacher: transfer sentences held out for selection, in all, spread evenly over the
    languages (at most a quarter of a language's transfer-only sentences), never trained on."""
    keep_margin: float = 0.5
    """A stage (and each unfreezing phase) keeps its own best weights unless the weights it started
    from score more than this many F1 points higher on the selection slice; 0: as before (the
    starting weights win ties and every epoch not above them counts against patience)."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] | None = None
    """The precision the students train in, where it differs from the run's ``precision`` (the
    default, None: the run's): e.g. a teacher fine-tuned and labeled in fp32 and a BiLSTM distilled
    in bf16, which an AVX-512 BF16 CPU may run faster than the teacher's encoder layers."""

    def __post_init__(self):
        _positive(self, "eval_batch_size", "max_steps_per_epoch", "select_size")
        _non_negative(self, "checkpoint_every", "keep_margin")
        _layers("teachers", self.teachers)  # positions in the transfer set, 0 first
        for spec in self.resolved_stages():
            self.match_for(spec)

    def match_for(self, spec: StageSpec) -> MatchSpec:
        """The matching spec of one stage: distill.match with the stage's overrides."""
        if not spec.match:
            return self.match
        try:
            return TypeAdapter(MatchSpec).validate_python({**dataclasses.asdict(self.match), **spec.match})
        except ValidationError as e:
            raise ConfigError(f"stage {spec.name!r} match: {e.errors()[0]['msg']}") from None

    def resolved_stages(self) -> list[StageSpec]:
        if isinstance(self.stages, str):
            return [StageSpec(**d) for d in STAGE_PRESETS[self.stages]]
        # items set in code after validation may still be plain mappings
        return [s if isinstance(s, StageSpec) else from_dict(StageSpec, s, "distill.stages[]") for s in self.stages]


STEPS = ("teacher", "label", "distill", "evaluate")


@dataclass(config=_SCHEMA)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    """Labeled data: languages, budget, files."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    """Teacher fine-tuning."""
    transfer: TransferConfig = field(default_factory=TransferConfig)
    """The transfer set the teachers label."""
    student: StudentConfig = field(default_factory=StudentConfig)
    """Student architecture."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """Distillation stages."""
    steps: list[Literal["teacher", "label", "distill", "evaluate"]] = field(default_factory=lambda: list(STEPS))
    """Pipeline steps `xdistil run` performs, in order."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Teacher fine-tuning, labeling and distillation: auto (bf16 where the CPU/GPU has it natively, fp16 on
    older CUDA, else fp32) | fp32 | bf16 | fp16. Weights and saved models stay fp32 (`xdistil.precision`)."""


# ---- reading, errors, overrides ---------------------------------------------------------


@functools.cache
def _adapter(cls) -> TypeAdapter:
    return TypeAdapter(cls)


def from_dict(cls, data, where: str = ""):
    """Validate ``data`` (a plain mapping, e.g. from YAML) into the dataclass ``cls``.

    Raises ConfigError with one line naming the dotted key; ``where`` prefixes it."""
    try:
        return _adapter(cls).validate_python(data)
    except ValidationError as e:
        raise ConfigError(describe(e, cls, where)) from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _unwrap(t):
    """The dataclass (or list/dict of one) inside Annotated / Optional / Union wrappers."""
    while typing.get_origin(t) is Annotated:
        t = typing.get_args(t)[0]
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        for a in typing.get_args(t):
            a = _unwrap(a)
            if dataclasses.is_dataclass(a) or typing.get_origin(a) in (list, dict):
                return a
    return t


def _class_at(cls, loc: Sequence) -> type | None:
    """The dataclass reached by following the error location ``loc`` from ``cls``."""
    t = cls
    for part in loc:
        t = _unwrap(t)
        if part in _STAGE_TAGS:
            continue
        if isinstance(part, int) and typing.get_origin(t) is list:
            t = typing.get_args(t)[0]
        elif dataclasses.is_dataclass(t) and isinstance(part, str):
            t = typing.get_type_hints(t, include_extras=True).get(part)
        else:
            return None
    t = _unwrap(t)
    return t if dataclasses.is_dataclass(t) else None


def _dotted(loc: Sequence, where: str = "") -> str:
    out = where
    for part in loc:
        if part in _STAGE_TAGS or part == "[key]":  # pydantic's markers, not keys
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "config"


def describe(e: ValidationError, cls=None, where: str = "") -> str:
    """One line for a pydantic ValidationError: ``teacher.lr: input should be a valid number (got 'x')``."""
    msgs: list[str] = []
    unknown: dict[tuple, list[str]] = {}
    for err in e.errors():
        loc = tuple(err["loc"])
        if err["type"] == "unexpected_keyword_argument":
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
            continue
        if err["type"] == "value_error" and "error" in err.get("ctx", {}):
            msg = str(err["ctx"]["error"])
        elif err["type"] in ("missing_argument", "missing"):
            msg = "missing (required)"
        else:
            got = err.get("input")
            msg = err["msg"][0].lower() + err["msg"][1:] + f" (got {got!r:.60})"
            if isinstance(got, bool):
                msg += "; YAML reads yes/no/on/off as booleans: quote the value"
        msgs.append(f"{_dotted(loc, where)}: {msg}")
    for parent, keys in unknown.items():
        known = _class_at(cls, parent) if cls is not None else None
        hint = f"; known: {sorted(f.name for f in dataclasses.fields(known))}" if known else ""
        msgs.insert(0, f"{_dotted(parent, where)}: unknown key(s) {sorted(keys)}{hint}")
    more = f" (and {len(msgs) - 2} more)" if len(msgs) > 2 else ""
    return "; ".join(msgs[:2]) + more


def parse_value(text: str):
    """A command-line value: YAML/JSON flow literals (``[de, ar]``, ``{gold: 1}``) and ``null`` are
    parsed, anything else stays a string for validation to convert (``no`` stays the string
    'no', so a Norwegian language code is not read as False; ``false`` for a bool still works)."""
    s = text.strip()
    if s.startswith(("[", "{")) or s in ("null", "~"):
        try:
            return yaml.safe_load(s)
        except yaml.YAMLError as e:
            raise ConfigError(f"{text!r}: not a valid YAML/JSON literal ({str(e).splitlines()[0]})") from None
    return text


def apply_overrides(data: Mapping, overrides: Mapping[str, Any] | Sequence[str]) -> dict:
    """``data`` (a raw config mapping) with ``overrides`` applied; ``data`` is not changed.

    The one override mechanism of the CLI flags, presets and benchmark variants:
    - a mapping of dotted keys to values, ``{"teacher.lr": 1e-4}``, or of sections to
      mappings, ``{"student": {"num_layers": 2}}`` (merged into the section, not replacing it);
    - a sequence of ``"a.b=value"`` strings, the value read by :func:`parse_value`.
    A mapping value merges into a mapping already there; anything else replaces the value.
    Validation (types, unknown keys) happens when the result goes through :func:`from_dict`."""
    out = _merge({}, data)
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = []
        for item in overrides:
            key, sep, value = str(item).partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"override {item!r}: write KEY=VALUE, e.g. teacher.lr=1e-4")
            items.append((key.strip(), parse_value(value)))
    for key, value in items:
        *parents, leaf = str(key).split(".")
        node = out
        for i, p in enumerate(parents):
            if not isinstance(node.get(p), dict):
                if p in node and node[p] is not None:
                    raise ConfigError(f"{'.'.join(parents[:i + 1])}: is not a section, cannot set {key}")
                node[p] = {}
            node = node[p]
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
            node[leaf] = _merge(node[leaf], value)
        else:
            node[leaf] = _merge({}, value) if isinstance(value, Mapping) else value
    return out


def _merge(base: dict, extra: Mapping) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = _merge({}, v) if isinstance(v, Mapping) else v
    return out


PRESETS = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    return sorted(q.stem for q in PRESETS.glob("*.yaml"))


def load_yaml(path_or_name: str | Path) -> dict:
    """Read a YAML config file, or a bundled preset by name (e.g. ``demo``)."""
    p = Path(path_or_name)
    if not p.exists() and (PRESETS / f"{path_or_name}.yaml").exists():
        p = PRESETS / f"{path_or_name}.yaml"
    if not p.exists():
        raise ConfigError(f"config {str(path_or_name)!r} not found (a file, or a preset: {', '.join(preset_names())})")
    if p.is_dir():
        raise ConfigError(f"config {p}: is a directory, not a YAML file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a UTF-8 text file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return data


STUDENT_PRESETS = PRESETS / "students"
"""Student shapes (``--student-preset NAME``): a ``student:`` section, and a ``distill:`` one where the
shape needs its own recipe, laid over any config (`student_preset`)."""


def student_preset_names() -> list[str]:
    return sorted(q.stem for q in STUDENT_PRESETS.glob("*.yaml"))


def student_preset(name: str) -> dict:
    """The bundled student preset ``name`` (xdistil/presets/students/NAME.yaml) as a raw config."""
    path = STUDENT_PRESETS / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"--student-preset {name!r}: no such student preset (known: {', '.join(student_preset_names())})")
    return load_yaml(path)


def load_config(path_or_name: str | Path | None = None,
                overrides: Mapping[str, Any] | Sequence[str] = ()) -> RunConfig:
    """A YAML file or preset (or the defaults), with overrides on top, validated."""
    raw = load_yaml(path_or_name) if path_or_name else {}
    return from_dict(RunConfig, apply_overrides(raw, overrides))


def save_json(obj, path: Path) -> None:
    """Atomic JSON write: an interruption never leaves half a file."""
    from xdistil_export.atomic import write_json

    write_json(path, obj)


# ---- documentation of the fields (CLI help, `xdistil config show`) ---------------------


def field_doc(cls, name: str) -> str:
    """The docstring under field ``name`` of ``cls``, on one line."""
    info = getattr(cls, "__pydantic_fields__", {}).get(name)
    return " ".join((info.description or "").split()) if info is not None else ""


def _yaml_value(v) -> str:
    text = yaml.safe_dump(v, default_flow_style=True, allow_unicode=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def to_commented_yaml(cfg, indent: int = 0) -> str:
    """The whole config as YAML with each field's one-line doc as a comment above it: a
    file to start from. It reads back (:func:`from_dict`) to the same config."""
    pad = " " * indent
    lines: list[str] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        doc = field_doc(type(cfg), f.name)
        if doc:
            lines.append(f"{pad}# {doc}")
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:")
            lines.append(to_commented_yaml(value, indent + 2))
            lines.append("")
        elif isinstance(value, list) and value and all(dataclasses.is_dataclass(v) for v in value):
            lines.append(f"{pad}{f.name}:")
            for i, item in enumerate(value):
                body = to_commented_yaml(item, indent + 4).splitlines()
                if i:  # the field docs once, on the first item
                    body = [line for line in body if not line.lstrip().startswith("#")]
                first = next(k for k, line in enumerate(body) if not line.lstrip().startswith("#"))
                body[first] = f"{pad}  - " + body[first].lstrip()
                lines.extend(body)
        else:
            if isinstance(value, str) and f.name == "stages" and value in STAGE_PRESETS:
                lines.append(f"{pad}# preset {value} = " + ", ".join(s["name"] for s in STAGE_PRESETS[value]))
            lines.append(f"{pad}{f.name}: {_yaml_value(value)}")
    return "\n".join(lines).rstrip() + "\n" if indent == 0 else "\n".join(lines).rstrip("\n")

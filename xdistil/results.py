"""Typed records: what a run produces, written once and read by bench, report and the benchmarks.

Every record is a frozen dataclass. A file holds one top-level record whose JSON carries
``"format": "xdistil-<kind>/<version>"``; nested records are plain objects inside it.
Reading checks the format first, so a file of another kind or an older version fails
with one line (``RecordError``) instead of a KeyError deep inside a renderer.

    scores = ModelScores.from_eval("stage2-soft", "student", evaluate_dev(...), stage=2, stage_name="soft")
    Summary(protocol, [teacher, scores]).write(run_dir / "summary.json")
    Summary.read(run_dir / "summary.json").models[1].f1_avg

Validation on read is pydantic's (``TypeAdapter`` over the dataclasses): types, nested
records and missing fields, with the path of the first bad value in the message.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from xdistil_export.atomic import write_json

from xdistil.students import META_FILE

PREFIX = "xdistil-"


class RecordError(ValueError):
    """A file that is not the record it should be (kind, version or content): one line."""


def format_of(data: Any) -> str | None:
    return data.get("format") if isinstance(data, dict) else None


@dataclass(frozen=True)
class Record:
    KIND: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    @classmethod
    def format(cls) -> str:
        return f"{PREFIX}{cls.KIND}/{cls.VERSION}"

    def to_dict(self) -> dict:
        return {"format": self.format(), **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: Any, where: str = "record"):
        from pydantic import TypeAdapter, ValidationError

        fmt = format_of(data)
        if fmt != cls.format():
            raise RecordError(f"{where}: format {fmt!r}, expected {cls.format()!r}"
                              + ("; rerun the step that wrote it" if fmt and fmt.startswith(PREFIX) else ""))
        body = {k: v for k, v in data.items() if k != "format"}
        try:
            return TypeAdapter(cls).validate_python(body)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise RecordError(f"{where}: not a valid {cls.format()} record: {loc}: {err['msg']}") from None

    @classmethod
    def from_json(cls, text: str, where: str = "record"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise RecordError(f"{where}: not JSON (line {e.lineno}: {e.msg})") from None
        return cls.from_dict(data, where)

    def write(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: str | Path):
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such file")
        return cls.from_json(p.read_text(encoding="utf-8"), str(p))


# ---- scores -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TypeScores:
    """Entity-level F1 / precision / recall (%) of one entity type, with its gold count."""

    f1: float
    precision: float | None = None
    recall: float | None = None
    entities: int | None = None


@dataclass(frozen=True)
class LangScores:
    """One language's dev scores: micro F1 / P / R (%), per entity type, gold entities, sentences.

    Older results kept only F1; their other fields are None (never made up)."""

    f1: float
    precision: float | None = None
    recall: float | None = None
    entities: int | None = None
    sentences: int | None = None
    per_type: dict[str, TypeScores] = field(default_factory=dict)

    @classmethod
    def from_score(cls, s: dict) -> LangScores:
        """From `xdistil.evaluate.score`'s dict."""
        return cls(s["f1"], s.get("precision"), s.get("recall"), s.get("support"), s.get("sentences"),
                   {t: TypeScores(v["f1"], v.get("precision"), v.get("recall"), v.get("support"))
                    for t, v in s.get("per_type", {}).items()})


@dataclass(frozen=True)
class ModelScores:
    """A model's dev scores per language, what it is and where it lies.

    ``stage`` / ``stage_name`` / ``folder`` pair a student with its distillation stage;
    ``group`` names the sequence of stages (a benchmark variant) or the teacher group.
    ``runtime``: "torch" | "onnx-fp32" | "onnx-int8".
    """

    name: str
    role: Literal["teacher", "student"]
    params: int
    languages: dict[str, LangScores]
    arch: str | None = None
    runtime: str = "torch"
    stage: int | None = None
    stage_name: str | None = None
    folder: str | None = None
    group: str | None = None
    evaluated_by: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_eval(cls, name: str, role: str, result: dict, **kw) -> ModelScores:
        """The one constructor from `xdistil.evaluate.evaluate_dev`'s result (params, dev per language)."""
        kw.setdefault("folder", result.get("path"))
        return cls(name, role, result["params"], {k: LangScores.from_score(v) for k, v in result["dev"].items()},
                   **kw)

    @property
    def f1(self) -> dict[str, float]:
        return {lang: s.f1 for lang, s in self.languages.items()}

    @property
    def f1_avg(self) -> float:
        # sum / len, as `evaluate_dev` averages: the same float to the last digit
        return sum(self.f1.values()) / len(self.languages) if self.languages else 0.0

    def retained(self, teacher: ModelScores, lang: str | None = None) -> float | None:
        """% of ``teacher``'s F1 this model keeps (average, or one language); None when the teacher has 0."""
        t = teacher.f1_avg if lang is None else teacher.f1.get(lang)
        s = self.f1_avg if lang is None else self.f1.get(lang)
        return 100 * s / t if t and s is not None else None


def stage_of(folder: str | Path) -> tuple[int | None, str | None]:
    """(stage index from 1, stage name) of a student folder, from the metadata its stage saved."""
    meta = Path(folder) / META_FILE
    if not meta.is_file():
        return None, None
    extra = json.loads(meta.read_text(encoding="utf-8")).get("extra", {})
    so_far = extra.get("stages_so_far")
    return (len(so_far) if so_far else None), extra.get("stage")


# ---- what a step measured -----------------------------------------------------------------


@dataclass(frozen=True)
class Provenance:
    """Where a figure was measured (`xdistil.provenance.provenance` makes one)."""

    machine: dict[str, Any] | None = None
    versions: dict[str, str | None] | None = None
    command: str | None = None
    time: str | None = None
    loadavg: list[float] | None = None
    measured_by: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class PhaseLog:
    """One unfreezing phase of one distillation stage, and the student folder that stage wrote."""

    stage: str
    stage_index: int
    student: str | None
    groups: list[str]
    seconds: float | None
    tokens_per_s: float | None
    epochs: int
    best_select: float | None = None
    sentences_per_s: float | None = None
    processes: int = 1
    peak_rss_mb: float | None = None
    memory_scope: str | None = None
    select_s: float | None = None
    """Of ``seconds``, the selection evaluations (fits logged before issue 33: None)."""

    @property
    def tokens(self) -> float:
        return (self.seconds or 0) * (self.tokens_per_s or 0)


def phase_logs(stage_logs: list[dict], students: list[tuple[int | None, str | None, str]]) -> list[PhaseLog]:
    """`PhaseLog`s from ``distill/metrics.json``'s ``stages``; ``students``: (index, name, folder) per stage.

    A stage log names its stage; the student folder of the same stage name (in stage
    order) is its output. Stages resumed from a finished earlier run may have no log.
    """
    pending = list(students)
    out = []
    for st in stage_logs:
        while pending and pending[0][1] != st["stage"]:
            pending.pop(0)
        index, _, folder = pending.pop(0) if pending else (None, None, None)
        for s in st.get("phases", st.get("steps", [])):  # "steps": logs of releases before
            out.append(PhaseLog(st["stage"], index or 0, folder, list(s.get("groups") or []), s.get("seconds"),
                               s.get("tokens_per_s"), len(s.get("history", [])), s.get("best_select"),
                               s.get("sentences_per_s"), s.get("processes", 1), s.get("peak_rss_mb"),
                               s.get("memory_scope"), s.get("select_s")))
    return out


@dataclass(frozen=True)
class Throughput:
    """Items per second of one piece of work (labeling, a runtime tagging text end to end)."""

    name: str
    what: str
    sentences: int | None = None
    words: int | None = None
    seconds: float | None = None
    sentences_per_s: float | None = None
    words_per_s: float | None = None
    runtime: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ---- latency ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyCell:
    """Median ms per call of one model in one runtime and precision at one (batch, seq)."""

    model: str
    role: str
    runtime: str  # "torch" | "ort"
    precision: str  # "fp32" | "int8"
    batch: int
    seq: int
    median_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float
    repeats: int
    warmup: int
    kind: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return self.model, self.runtime, self.precision

    @property
    def sentences_per_s(self) -> float:
        return 1e3 * self.batch / self.median_ms


@dataclass(frozen=True)
class Speedup:
    """A student cell against a reference model's PyTorch fp32 cell at the same (batch, seq)."""

    model: str
    runtime: str
    precision: str
    batch: int
    seq: int
    reference: str
    reference_ms: float
    median_ms: float
    speedup: float
    reference_runtime: str = "torch"
    reference_precision: str = "fp32"


def speedups(cells: list[LatencyCell], references: list[str] | None = None,
             students: list[str] | None = None) -> list[Speedup]:
    """Every student cell over each reference (default: every teacher) in PyTorch fp32, same (batch, seq)."""
    refs = references if references is not None else list(dict.fromkeys(c.model for c in cells
                                                                         if c.role == "teacher"))
    base = {(c.model, c.batch, c.seq): c.median_ms for c in cells if (c.runtime, c.precision) == ("torch", "fp32")}
    out = []
    for ref in refs:
        for c in cells:
            ms = base.get((ref, c.batch, c.seq))
            if ms is None or (c.model not in students if students is not None else c.role != "student"):
                continue
            out.append(Speedup(c.model, c.runtime, c.precision, c.batch, c.seq, ref, ms, c.median_ms, ms / c.median_ms))
    return out


# ---- files --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary(Record):
    """``summary.json``: a run's (or a benchmark's) protocol and one scored row per model.

    ``reference``: the teacher "% of the teacher" is against (default: the first teacher);
    ``headline``: the student a verdict is about (default: the best one)."""

    KIND: ClassVar[str] = "summary"
    protocol: dict[str, Any]
    models: list[ModelScores]
    reference: str | None = None
    headline: str | None = None
    title: str | None = None
    timings: dict[str, float | None] = field(default_factory=dict)
    provenance: dict[str, Provenance] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The record, each model row also with its ``f1`` per language and ``f1_avg`` for readers
        of plain JSON (derived, so ignored on reading)."""
        out = super().to_dict()
        for row, m in zip(out["models"], self.models, strict=True):
            row["f1"], row["f1_avg"] = m.f1, m.f1_avg
        return out

    @property
    def languages(self) -> list[str]:
        return list(self.protocol.get("languages") or (self.models[0].languages if self.models else []))

    @property
    def teacher(self) -> ModelScores:
        teachers = [m for m in self.models if m.role == "teacher"]
        if not teachers:
            raise RecordError("the summary has no teacher")
        return next((m for m in teachers if m.name == self.reference), teachers[0])

    @property
    def students(self) -> list[ModelScores]:
        return [m for m in self.models if m.role == "student"]

    def model(self, name: str) -> ModelScores:
        return next(m for m in self.models if m.name == name)

    @property
    def final(self) -> ModelScores | None:
        """The headline student, else the best one."""
        if self.headline:
            return self.model(self.headline)
        return max(self.students, key=lambda m: m.f1_avg, default=None)


@dataclass(frozen=True)
class Bench(Record):
    """``bench.json`` (``xdistil bench``): quality, latency, throughput and memory of one run."""

    KIND: ClassVar[str] = "bench"
    VERSION: ClassVar[int] = 3  # 3: ``steps`` (unfreezing) became ``phases``
    run_dir: str
    created: str
    provenance: Provenance
    quality: Summary
    cells: list[LatencyCell]
    speedups: list[Speedup]
    latency_settings: dict[str, Any]
    latency_models: list[dict[str, Any]]
    exports: dict[str, dict[str, float]] = field(default_factory=dict)
    phases: list[PhaseLog] = field(default_factory=list)
    labeling: Throughput | None = None
    end_to_end: list[Throughput] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, Provenance] = field(default_factory=dict)  # quality / labeling / distillation


@dataclass(frozen=True)
class Latency(Record):
    """``latency.json`` (``benchmarks/latency.py``): every cell side by side on one machine."""

    KIND: ClassVar[str] = "latency"
    provenance: Provenance
    settings: dict[str, Any]
    models: list[dict[str, Any]]
    cells: list[LatencyCell]
    speedups: list[Speedup]
    targets: list[dict[str, Any]] = field(default_factory=list)


KINDS: dict[str, type[Record]] = {c.format(): c for c in (Summary, Bench, Latency)}


def read(path: str | Path) -> Record:
    """Any record file, by its format key."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RecordError(f"{p}: not JSON (line {e.lineno}: {e.msg})") from None
    fmt = format_of(data)
    cls = KINDS.get(fmt)
    if cls is None:
        old = fmt is None or str(fmt).startswith(PREFIX)
        raise RecordError(f"{p}: format {fmt!r} is not one of {', '.join(KINDS)}"
                          + ("; an older xdistil wrote it: rerun the step or benchmark that made it" if old else ""))
    return cls.from_dict(data, str(p))

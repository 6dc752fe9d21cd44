"""`RunRecord`: what ``metrics.json`` of a run holds, typed and versioned.

The record describes only what is on disk (`xdistil.pipeline.run` keeps it so):

- ``fingerprints``: per step, the digest of the output the record describes;
- ``timings`` and ``provenance``: per step, the seconds and the machine, versions and
  command of the invocation that built that output (gone when the output is rebuilt
  elsewhere or reused from a run the record does not describe);
- ``teacher``: the reference teacher's dev scores (`xdistil.evaluate.evaluate_dev`'s
  shape plus the ``fingerprint`` of the model and dev files they were measured on; with
  co-finetuned teachers the best member, named by ``member``);
- ``teachers``: every co-finetuned member's scores (empty for one teacher);
- ``students``: every stage's student's scores, by folder name.

It is not the distillation step's own log (``distill/metrics.json``, `RunDir.distill_log`).
A file from before the record had a format (no ``"format"`` key) reads as version 1.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from xdistil_export.atomic import write_json

from xdistil import digests
from xdistil.provenance import provenance
from xdistil.results import RecordError
from xdistil.run.layout import RunDir

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class RunRecord:
    FORMAT: ClassVar[str] = "xdistil-run-metrics/1"

    timings: dict[str, float] = field(default_factory=dict)
    """``<step>_s``: seconds the invocation that built the step's output took."""
    provenance: dict[str, dict] = field(default_factory=dict)
    """step -> machine, library versions and command line (`xdistil.provenance`)."""
    fingerprints: dict[str, str | None] = field(default_factory=dict)
    """step -> digest of the output the record describes."""
    teacher: dict[str, Any] | None = None
    """The reference teacher's dev scores (+ ``fingerprint``; + ``member`` for a group)."""
    teachers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Co-finetuned members' dev scores by folder name (empty for one teacher)."""
    students: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each stage's student's dev scores by folder name."""

    def to_dict(self) -> dict:
        out = {"format": self.FORMAT, **asdict(self)}
        if out["teacher"] is None:
            del out["teacher"]
        if not out["teachers"]:
            del out["teachers"]
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "metrics.json") -> RunRecord:
        from pydantic import TypeAdapter, ValidationError

        if not isinstance(data, dict):
            raise RecordError(f"{where}: not a run record (a JSON object expected)")
        fmt = data.get("format", cls.FORMAT)  # before the format key: version 1
        if fmt != cls.FORMAT:
            raise RecordError(f"{where}: format {fmt!r}, expected {cls.FORMAT!r}; rerun 'xdistil run' on the folder")
        body = {k: v for k, v in data.items() if k != "format"}
        try:
            return TypeAdapter(cls).validate_python(body)
        except ValidationError as e:
            err = e.errors()[0]
            raise RecordError(f"{where}: not a valid {cls.FORMAT} record: "
                              f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None

    @classmethod
    def read(cls, path: str | Path) -> RunRecord:
        """The record at ``path``; an empty one when there is none yet."""
        p = Path(path)
        if not p.exists():
            return cls()
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise RecordError(f"{p}: not JSON (line {e.lineno}: {e.msg})") from None
        return cls.from_dict(data, str(p))

    def write(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    def forget_step(self, step: str) -> None:
        """Drop what the record says of how ``step``'s output was built."""
        self.timings.pop(f"{step}_s", None)
        self.provenance.pop(step, None)


class Recorder:
    """The step layer's bookkeeping for one invocation of a run: each step is timed and its
    provenance kept only while the output it describes is on disk (`step`), and the record
    is written after every change, by the main process only (under ``accelerate launch``
    every process runs the steps).

    Opening it drops ``config.json`` and ``summary.json`` when the config changed, so that an
    interruption never leaves a record of models that are gone (``resume_only``: nothing is
    replaced; a changed step is refused instead)."""

    def __init__(self, run_dir: RunDir, config: dict, command: str | None, main: bool, resume_only: bool = False):
        self.dir, self.config, self.command, self.main = run_dir, config, command, main
        if main and not resume_only and run_dir.config.exists() and \
                json.loads(run_dir.config.read_text(encoding="utf-8")) != config:
            log.info("%s differs from the current config: the steps it changes are recomputed", run_dir.config)
            run_dir.config.unlink()
            run_dir.summary.unlink(missing_ok=True)
        self.record = RunRecord.read(run_dir.metrics)

    def write(self) -> None:
        if self.main:
            self.record.write(self.dir.metrics)

    def step(self, name: str, out: Path, fn: Callable[[], T]) -> T:
        """Run the step ``fn`` (which writes ``out``); record its time and provenance when this
        invocation built (or finished) the output, forget them when it reused an output the
        record does not describe."""
        before, t0 = digests.digest_of(out), time.time()
        result = fn()
        after = digests.digest_of(out)
        if before != after:
            self.record.timings[f"{name}_s"] = round(time.time() - t0, 1)
            self.record.provenance[name] = provenance(self.command)
        elif after != self.record.fingerprints.get(name):
            self.record.forget_step(name)
        self.record.fingerprints[name] = after
        self.write()
        return result

    def finish(self, summary: dict) -> None:
        """The run's config and summary, written from what the steps left on disk."""
        if self.main:
            self.write()
            write_json(self.dir.config, self.config)
            write_json(self.dir.summary, summary)

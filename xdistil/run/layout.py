"""`RunDir`: every path of a run folder, joined in one place.

    run_dir/
      xdistil_run.json   marks the folder as a run directory (written first)
      config.json        the resolved config
      teacher/           fine-tuned teacher (HF folder + xdistil_teacher.json), or a
                         co-finetuned group (one folder per member + xdistil_teachers.json)
      transfer/          the transfer set (Arrow chunks + manifest.json)
      distill/           one student folder per stage (stage1-hard/, ...) + distill/metrics.json
                         (the distillation log: every stage's phases)
      metrics.json       the run's record (`xdistil.run.RunRecord`)
      summary.json       the machine-readable summary (`xdistil.results.Summary`)
      run.log            the log of every invocation
      bench.json         `xdistil bench`'s record, beside bench.fingerprint.json and bench-exports/
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from xdistil.models import teacher_dirs

RUN_MARKER = "xdistil_run.json"
BENCH_NAME = "bench.json"
SUMMARY_NAME = "summary.json"
TRANSFER_MANIFEST = "manifest.json"
"""A transfer set's manifest: its languages, counts, teachers and labeling throughput (`xdistil.labeling`)."""
DISTILL_LOG = "metrics.json"
"""The distillation step's own log, in its folder: every stage and its phases (`xdistil.stages`)."""


@dataclass(frozen=True)
class RunDir:
    """The paths of one run folder. Constructing it touches nothing on disk."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    # the run's own files
    @property
    def marker(self) -> Path:
        return self.root / RUN_MARKER

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        """The run's record, `RunRecord` (not the distillation log, `distill_log`)."""
        return self.root / "metrics.json"

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY_NAME

    @property
    def log(self) -> Path:
        return self.root / "run.log"

    # the steps' outputs
    @property
    def teacher(self) -> Path:
        return self.root / "teacher"

    @property
    def transfer(self) -> Path:
        return self.root / "transfer"

    @property
    def transfer_manifest(self) -> Path:
        return self.transfer / TRANSFER_MANIFEST

    @property
    def distill(self) -> Path:
        return self.root / "distill"

    @property
    def distill_log(self) -> Path:
        """The distillation step's own log: every stage and its phases (`xdistil.stages`)."""
        return self.distill / DISTILL_LOG

    def teachers(self) -> list[Path]:
        """The teacher folders: ``teacher/`` itself, or the members of a co-finetuned group."""
        return teacher_dirs(self.teacher)

    # xdistil bench
    @property
    def bench(self) -> Path:
        return self.root / BENCH_NAME

    @property
    def bench_fingerprint(self) -> Path:
        """What ``bench.json`` was measured on."""
        return self.root / "bench.fingerprint.json"

    @property
    def bench_exports(self) -> Path:
        """ONNX exports `xdistil bench` times; reused while the model is unchanged."""
        return self.root / "bench-exports"

    def is_run(self) -> bool:
        """A finished or begun run: its record and config are there."""
        return self.metrics.is_file() and self.config.is_file()

    # the entries a run writes at its top level: anything else in the folder is the user's
    ENTRIES = ("teacher", "transfer", "distill", "config.json", "metrics.json", SUMMARY_NAME, "run.log",
               RUN_MARKER, BENCH_NAME, "bench.fingerprint.json", "bench-exports")


def read_transfer_manifest(transfer_dir: str | Path) -> dict:
    """The manifest of the transfer set in ``transfer_dir``."""
    return json.loads((Path(transfer_dir) / TRANSFER_MANIFEST).read_text(encoding="utf-8"))


def read_distill_log(distill_dir: str | Path) -> dict:
    """The distillation log in ``distill_dir`` (a distill step's folder, or a student's stage
    folder inside it): every stage and its phases."""
    d = Path(distill_dir)
    log = d / DISTILL_LOG if (d / DISTILL_LOG).is_file() else d.parent / DISTILL_LOG
    return json.loads(log.read_text(encoding="utf-8"))

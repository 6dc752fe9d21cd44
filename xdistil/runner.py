"""The steps of a run as values, and the one runner that executes a plan of them.

    step      folder in RunDir   needs            fingerprint                 runs
    teacher   teacher/           -                run.fingerprints.teacher    steps.teacher
    label     transfer/          teacher          run.fingerprints.label      steps.label
    distill   distill/           teacher, label   run.fingerprints.distill    steps.distill_stages

`Runner` executes a plan of them into one `RunDir`: the whole run (`xdistil run`) or a
subset (``only=("distill",)``: the ``teacher``, ``label`` and ``distill`` commands). A step's
output can also be

- given: a folder made elsewhere (``--teacher-dir``, ``--transfer``), used as it is;
- another folder for this one step (``folders``: ``xdistil teacher train --out`` writes the
  teacher folder itself, not a run folder);
- reused from other runs (``reuse``): where a finished output of the same step with the same
  fingerprint is found there, it is linked into this run's folder (hard links, so it costs no
  disk and no time; xdistil never writes into a finished output, it replaces files whole)
  instead of being computed again. Two benchmark variants that share a teacher and a transfer
  set train one teacher and label once.

Every step decides by itself whether its folder is reused, resumed or rebuilt (`xdistil.steps`);
with a `Recorder` each step's time and provenance go into the run's record.

To add a step: one `Step` in `STEPS` (its folder a `RunDir` property) and its function in
`xdistil.steps`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from xdistil import digests, steps
from xdistil.config import RunConfig
from xdistil.models import teacher_dirs
from xdistil.run import RunDir, fingerprints
from xdistil.run.record import Recorder
from xdistil.tagsets import for_teachers


@dataclass
class Outputs:
    """What the steps of a plan produced or were given: the teacher folders, the transfer set,
    the students (one per stage, in order)."""

    teachers: list[Path] = field(default_factory=list)
    transfer: Path | None = None
    students: list[Path] = field(default_factory=list)

    @property
    def teacher(self) -> Path | None:
        """The first teacher (the students' vocabulary and initialisation come from it)."""
        return self.teachers[0] if self.teachers else None

    @property
    def student(self) -> Path | None:
        """The final stage's student."""
        return self.students[-1] if self.students else None


@dataclass(frozen=True)
class Options:
    progress: bool = True
    resume_only: bool = False


@dataclass(frozen=True)
class Step:
    """One step of a run, declared once."""

    name: str
    folder: str
    """Its output folder: the name of a `RunDir` property."""
    needs: tuple[str, ...]
    """The steps whose outputs it reads (run before it; outside a plan, read from their folders)."""
    fingerprint: Callable[[RunConfig, Outputs], dict]
    """What its output is built from (before it runs: reuse from other runs is decided on it)."""
    run: Callable[[RunConfig, Outputs, Path, Options], Outputs]
    """Build its output into the folder; the outputs with its own filled in."""
    legacy: tuple[str, ...] = ()
    """Older names of its folder, still read (``xdistil distill`` wrote ``students/``)."""

    def finished(self, folder: Path) -> bool:
        """``folder`` holds a finished output of this step (a fingerprint, and the step's files)."""
        return digests.read(folder) is not None and _FINISHED[self.name](folder)


def _teacher_fp(cfg: RunConfig, got: Outputs) -> dict:
    return fingerprints.teacher(cfg)


def _label_fp(cfg: RunConfig, got: Outputs) -> dict:
    return fingerprints.label(for_teachers(cfg, got.teachers), got.teachers)


def _distill_fp(cfg: RunConfig, got: Outputs) -> dict:
    return fingerprints.distill(cfg, got.transfer, got.teacher)


def _teacher(cfg: RunConfig, got: Outputs, out: Path, o: Options) -> Outputs:
    return replace(got, teachers=teacher_dirs(steps.teacher(cfg, out, progress=o.progress, resume_only=o.resume_only)))


def _label(cfg: RunConfig, got: Outputs, out: Path, o: Options) -> Outputs:
    return replace(got, transfer=steps.label(cfg, got.teachers, out, progress=o.progress, resume_only=o.resume_only))


def _distill(cfg: RunConfig, got: Outputs, out: Path, o: Options) -> Outputs:
    return replace(got, students=steps.distill_stages(cfg, got.transfer, got.teacher, out, progress=o.progress,
                                                    resume_only=o.resume_only))


STEPS: dict[str, Step] = {s.name: s for s in (
    Step("teacher", "teacher", (), _teacher_fp, _teacher),
    Step("label", "transfer", ("teacher",), _label_fp, _label),
    Step("distill", "distill", ("teacher", "label"), _distill_fp, _distill, legacy=("students",)),
)}
_FINISHED: dict[str, Callable[[Path], bool]] = {
    "teacher": steps.TEACHER.marker,
    "label": steps.LABEL.marker,
    "distill": lambda o: bool(steps.students(o)) and all(p.is_dir() for p in steps.students(o)),
}


def _found(step: Step, got: Outputs, folder: Path) -> Outputs:
    """The outputs with ``step``'s read from its finished ``folder`` (not run now)."""
    if step.name == "teacher":
        return replace(got, teachers=teacher_dirs(folder))
    if step.name == "label":
        return replace(got, transfer=folder)
    return replace(got, students=steps.students(folder))


class Runner:
    """Runs a plan of `STEPS` for one config into one `RunDir`.

    ``given``: step -> an output made elsewhere (a teacher folder or a list of them, a transfer
    set), used as it is and never written. ``folders``: step -> the folder it writes instead of
    its `RunDir` one. ``reuse``: folders of other runs (or folders holding runs) in which a
    finished output of a step with the same fingerprint is linked in rather than recomputed.
    ``recorder``: the run's record, which times each step and keeps its provenance."""

    def __init__(self, cfg: RunConfig, run_dir: RunDir | str | Path, *, given: dict[str, Path | list[Path]] | None = None,
                 folders: dict[str, Path] | None = None, reuse: Sequence[str | Path] = (),
                 recorder: Recorder | None = None, progress: bool = True, resume_only: bool = False):
        self.cfg = cfg
        self.dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.given = dict(given or {})
        self.folders = dict(folders or {})
        self.reuse = [Path(p) for p in reuse]
        self.recorder = recorder
        self.options = Options(progress, resume_only)

    def folder(self, name: str) -> Path:
        """Where step ``name`` writes (or wrote, for a folder of an older layout still there)."""
        if name in self.folders:
            return Path(self.folders[name])
        step = STEPS[name]
        own = getattr(self.dir, step.folder)
        for old in step.legacy:  # an older layout is read, and written on, where it is the only one
            legacy = self.dir.root / old
            if not own.exists() and any((legacy / f).exists() for f in steps.FINGERPRINTS):
                return legacy
        return own

    def run(self, only: Iterable[str] | None = None) -> Outputs:
        """Each step of ``only`` (default: every step) in order; a step outside it (and not given)
        is read from its folder as an earlier invocation left it. Returns the outputs."""
        plan = [n for n in STEPS if only is None or n in set(only)]
        got = Outputs()
        for name, step in STEPS.items():
            if name in self.given:
                got = self._given(name, got)
            elif name in plan:  # a missing input is refused by the step itself, in one line
                got = self._step(step, got)
            else:
                got = self._on_disk(step, got)
        return got

    def _given(self, name: str, got: Outputs) -> Outputs:
        value = self.given[name]
        if name == "teacher":
            dirs = value if isinstance(value, list) else [value]
            return replace(got, teachers=[d for t in dirs for d in teacher_dirs(t)])
        return _found(STEPS[name], got, Path(value))

    def _on_disk(self, step: Step, got: Outputs) -> Outputs:
        folder = self.folder(step.name)
        if step.name == "teacher" and not folder.exists():  # later steps refuse it, in one line
            return replace(got, teachers=[folder])
        return _found(step, got, folder)

    def _step(self, step: Step, got: Outputs) -> Outputs:
        out = self.folder(step.name)
        if self.reuse and not _holds(out):
            self._link_from_other_runs(step, got, out)
        run = partial(step.run, self.cfg, got, out, self.options)
        return run() if self.recorder is None else self.recorder.step(step.name, out, run)

    def _link_from_other_runs(self, step: Step, got: Outputs, out: Path) -> None:
        fp = step.fingerprint(self.cfg, got)
        for candidate in _candidates(self.reuse, step):
            if candidate.resolve() != out.resolve() and digests.same(digests.read(candidate), fp) \
                    and step.finished(candidate):
                link_tree(candidate, out)
                print(f"{step.name}: linked {candidate} into {out} (built from the same inputs)", flush=True)
                return


def _holds(out: Path) -> bool:
    return out.exists() and any(out.iterdir()) if out.is_dir() else out.exists()


def _candidates(roots: list[Path], step: Step) -> Iterable[Path]:
    """A step's folders in ``roots``: in each root as a run folder, and in its subfolders."""
    names = (step.folder, *step.legacy)
    for root in roots:
        for run in (root, *(sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else ())):
            for n in names:
                if (run / n / digests.FILE).is_file():
                    yield run / n


def link_tree(src: Path, dst: Path) -> None:
    """A copy of the folder ``src`` at ``dst`` made of hard links (real copies where the file
    system has none). Safe because every xdistil write replaces a file whole (`xdistil_export.atomic`):
    no file of a finished output is ever written into, so the two folders never change each other."""
    tmp = dst.with_name(f".{dst.name}.xdistil-link")
    shutil.rmtree(tmp, ignore_errors=True)

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, tmp, copy_function=link, symlinks=True)
    if dst.is_dir():
        dst.rmdir()  # empty (checked by the caller)
    os.replace(tmp, dst)


def outputs(run_dir: RunDir | str | Path) -> Outputs:
    """What the run folder ``run_dir`` holds, step by step (nothing is run): its teachers,
    transfer set and students, in its own layout or an older one."""
    return Runner(None, run_dir).run(only=())

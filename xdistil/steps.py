"""The steps of a run, one function each, between the CLI / pipeline and the code doing the work.

    step      implementation               its output
    teacher   teachers.train_teacher       a fine-tuned teacher folder (or a co-finetuned group)
    label     labeling.label_transfer      a transfer set (Arrow chunks + manifest.json)
    distill   stages.distill               one student folder per stage; returns the last one
    export    deployable.export_model     an ONNX export folder

Every step writes a fingerprint beside its output (`xdistil.digests`): the resolved
config fields the step depends on, the fingerprints of its inputs (teacher folders, the
transfer set, the data files' bytes) and the xdistil version. On a rerun:

- the same fingerprint: the output is reused, and the step says so in one line;
- another fingerprint (or finished work without one): the output is discarded and
  recomputed -- and since every later step's fingerprint holds this one's digest, every
  later step is recomputed too; with ``resume_only`` the step refuses instead
  (`digests.StaleOutput`, one line naming the fields that differ);
- half-finished work (tagged with its fingerprint when the step started) is resumed only
  when it was begun from the same inputs; otherwise it is discarded (or refused), never mixed.

What may be deleted, and when (issues 24 and 27):

- a finished output is never deleted before its replacement is complete: a step whose inputs
  changed builds the new output in a hidden sibling (``.NAME.xdistil-next``, resumable
  there), and only when it is complete and its checks passed is it swapped in; a failed
  step leaves the previous output exactly as it was;
- xdistil deletes or replaces only what a record names (`xdistil_export.atomic`, the one place
  with that rule): a step names ahead what it writes into its folder (`Kind.writes`, and the
  code writing stage folders, chunks and teacher files names those), and seals the folder's
  record when it finishes. A new or empty ``out`` is built in place; anything else -- a file,
  a folder of other things, an output inside which (at any depth) foreign files were put, an
  output from an xdistil that wrote no records -- is refused in one line
  (`xdistil_export.atomic.NotOurs`) naming what is there, before any work starts;
- a swap a crash interrupted is finished or undone before a step looks at its folder
  (`xdistil_export.atomic.repair_under`).

Under ``accelerate launch`` every process calls the step (they are data-parallel); every
process takes the same decision, only the main one deletes or writes, between barriers.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xdistil_export.atomic import (
    NotOurs,
    check_own,
    expect,
    not_ours,
    read_record,
    recorded,
    remove_own,
    repair_under,
    replace_dir,
    seal,
    unproven,
    write_json,
)

from xdistil import digests, labeling, stages, teachers
from xdistil.cards import write_card
from xdistil.config import RunConfig
from xdistil.deployable import export_model
from xdistil.models import teacher_dirs
from xdistil.models import teacher_dirs as expand
from xdistil.run import fingerprints
from xdistil.run.layout import DISTILL_LOG
from xdistil.tagsets import for_teachers

NEXT = ".{}.xdistil-next"
"""The hidden sibling in which a step builds the output that replaces a finished one."""
FINGERPRINTS = (digests.FILE, digests.FILE_STARTED)


@dataclass(frozen=True)
class Kind:
    """What one step leaves in its folder."""

    marker: Callable[[Path], bool]
    """A folder without a fingerprint is still this step's output (written by an older
    xdistil) when this holds: its marker files are there."""
    writes: tuple[str, ...]
    """The names the step writes into its folder, named in its record before it starts (the
    names only known later -- stage folders, chunks, a teacher's files -- are named by the
    code that writes them)."""
    clone: bool = False
    """Build the replacement from a copy of the old output (the step reuses parts of it)."""
    builds_aside: bool = False
    """The implementation builds the whole folder aside and swaps it in itself (export)."""


TEACHER = Kind(lambda o: (o / "xdistil_teacher.json").is_file() or (o / "xdistil_teachers.json").is_file(),
               ("xdistil_teacher.json", "xdistil_teachers.json", "checkpoint", "checkpoint.tmp", "best"))
LABEL = Kind(lambda o: (o / "manifest.json").is_file() and (o / "chunks").is_dir(), ("manifest.json", "chunks"))
DISTILL = Kind(lambda o: (o / "progress.json").is_file(),
               ("progress.json", DISTILL_LOG, "checkpoint", "checkpoint.tmp"), clone=True)
EXPORT_MANIFEST = "export_manifest.json"  # == xdistil_export.runtime.MANIFEST (that module imports onnxruntime)
EXPORT = Kind(lambda o: (o / EXPORT_MANIFEST).is_file(), (), builds_aside=True)  # sealed whole by the export


def _state():
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # Accelerator() reads ACCELERATE_USE_CPU itself; PartialState needs it said (gloo on CPU)
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def _say(line: str) -> None:
    if _state().is_main_process:
        print(line, flush=True)


def _is_file(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: is a file, expected a directory (pass another --out)")


def _holds_work(out: Path, kind: Kind) -> bool:
    return any((out / f).exists() for f in FINGERPRINTS) or (out.is_dir() and kind.marker(out))


def next_dir(out: Path) -> Path:
    """Where a step builds the output that replaces the finished ``out``."""
    out = out.absolute()
    return out.with_name(NEXT.format(out.name))


def claim(out: str | Path, parts: tuple[str, ...], marker: str | None = None) -> Path:
    """Before a command writes its steps' outputs into the folder ``out`` (a run directory,
    distill's --out): ``out`` must be new, empty, or hold xdistil's work already (``marker``,
    or a step folder among ``parts`` with a fingerprint). A file, or a folder of other
    things, is refused in one line; with ``marker`` the folder is marked as xdistil's. The
    folder itself is never deleted, so what else it holds is left alone; its record names the
    step folders (and the marker), so that only they are ever taken for xdistil's."""
    out = Path(out)
    _is_file(out)
    names = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    steps = [out / p for p in parts] + [next_dir(out / p) for p in parts]
    ours = (marker is not None and (out / marker).is_file()) or \
        any((d / f).exists() for d in steps for f in FINGERPRINTS)
    if names and not ours:
        raise not_ours(out, names, empty_needed=True)
    if _state().is_main_process:
        expect(out, (*parts, *([marker] if marker else [])))
        if marker is not None and not (out / marker).is_file():
            write_json(out / marker, {"format": "xdistil-run/1", "note": "a run directory written by xdistil"})
    return out


@dataclass
class Plan:
    """Where a step writes, decided by `_prepare` from what is on disk."""

    out: Path
    work: Path
    """``out`` itself, or `next_dir` when ``out`` holds a finished output from other inputs."""
    reuse: bool = False
    fresh: bool = False
    """``work`` was made by this call (a refused step removes it again)."""

    @property
    def aside(self) -> bool:
        return self.work != self.out


def _prepare(name: str, out: Path, fp: dict, kind: Kind, finished: Callable[[Path], bool],
             resume_only: bool, delegate: bool = False) -> Plan:
    """Before a step runs: where it writes (`Plan`), or ``reuse`` when ``out`` already is this
    step's output. A new or empty ``out`` is built in place; half-finished work begun from the
    same inputs is resumed in place (or in `next_dir`); a finished output from other inputs
    is rebuilt in `next_dir` and stays as it is until the new one is complete (`_swap`);
    half-finished work from other inputs is discarded, and with ``resume_only`` any work
    from other inputs is refused. ``delegate``: the implementation sorts out work from other
    inputs itself, finer than the whole folder (distillation reuses the leading stages that
    are the same). A file, a folder of other things, or foreign entries beside a step's
    output that would have to be written over are refused before anything is touched."""
    _is_file(out)
    _sync(lambda: (repair_under(out), repair_under(next_dir(out))))  # a swap a crash interrupted
    if not _holds_work(out, kind):
        if names := unproven(out):  # only what a record of ours names may be there
            raise not_ours(out, names, empty_needed=True)
        return Plan(out, out)
    done, started = digests.read(out), digests.read(out, started=True)
    if digests.same(done, fp) and finished(out):
        _say(f"{name}: reusing {out} (built from the same inputs)")
        return Plan(out, out, reuse=True)
    check_own(out)  # from here on, ``out`` is written into or replaced
    if digests.same(done, fp) or (done is None and digests.same(started, fp)):
        return Plan(out, out)  # begun (or partly removed) with the same inputs: resume it
    old = done or started
    differ = ", ".join(digests.diff(old, fp))
    if resume_only and not delegate:
        raise digests.StaleOutput(digests.stale_message(out, old, fp))
    _not_cwd(out)
    if kind.builds_aside:
        _say(f"{name}: {out} was built from other inputs ({differ} differ); recomputing it (the old one stays until "
             f"the new one is complete)")
        return Plan(out, out)
    if done is None and started is not None:  # half-finished work from other inputs
        if delegate:
            if not resume_only:
                _say(f"{name}: {out} was begun from other inputs ({differ} differ); recomputing what they change")
            return Plan(out, out)
        _sync(lambda: remove_own(out),
              f"{name}: {out} was begun from other inputs ({differ} differ); recomputing it")
        return Plan(out, out)
    return _aside(name, out, fp, kind, differ, resume_only, delegate)


def _not_cwd(out: Path) -> None:
    """A folder that holds the current directory cannot be swapped for a new one."""
    here = Path.cwd()
    if out.resolve() == here or out.resolve() in here.parents:
        raise NotOurs(f"{out} holds the current directory, which cannot be replaced: run from outside it")


def _sync(action: Callable[[], None], line: str = "") -> None:
    """``action`` on the main process only, once every process has read the folders, and
    before any goes on."""
    state = _state()
    state.wait_for_everyone()
    if state.is_main_process:
        if line:
            print(line, flush=True)
        action()
    state.wait_for_everyone()


def _aside(name: str, out: Path, fp: dict, kind: Kind, differ: str, resume_only: bool, delegate: bool) -> Plan:
    """Plan the rebuild of the finished ``out`` in `next_dir`: resumed there when it was begun
    from the same inputs, else started afresh (from a copy of ``out`` for ``kind.clone``)."""
    nxt = next_dir(out)
    _is_file(nxt)
    begun = digests.read(nxt, started=True) or digests.read(nxt)
    if digests.same(begun, fp):
        _say(f"{name}: {out} was built from other inputs ({differ} differ); resuming its replacement in {nxt}")
        return Plan(out, nxt)
    check_own(nxt)

    def start() -> None:
        remove_own(nxt)
        # named first: a killed copy is still known as ours
        expect(nxt, (*FINGERPRINTS, *kind.writes, *(_cloned(out) if kind.clone else ())))
        digests.write(nxt, fp, started=True)
        if kind.clone:
            _clone(out, nxt)

    what = "what they change" if delegate else "it"
    _sync(start, "" if resume_only else f"{name}: {out} was built from other inputs ({differ} differ); recomputing "
                                        f"{what} (the old one stays until the new one is complete)")
    return Plan(out, nxt, fresh=True)


def _cloned(src: Path) -> list[str]:
    """What `_clone` copies: every path the record of ``src`` names (checked by `_prepare`)."""
    return [n for n in (read_record(src) or {}).get("entries", {}) if n.split("/", 1)[0] not in FINGERPRINTS]


def _clone(src: Path, dst: Path) -> None:
    """A copy of the entries ``src``'s record names in ``dst`` (real copies, not hard links:
    whatever is written into the clone, the old output stays exactly as it was). Students are small."""
    named = recorded(src)
    for p in sorted(src.iterdir()):
        if p.name in FINGERPRINTS or p.name not in named:
            continue
        if p.is_dir():
            shutil.copytree(p, dst / p.name)
        else:
            shutil.copy2(p, dst / p.name)


def _started(plan: Plan, fp: dict, kind: Kind) -> None:
    if _state().is_main_process:
        expect(plan.work, (*FINGERPRINTS, *kind.writes))  # before writing them: provably ours if killed
        digests.write(plan.work, fp, started=True)


def _finished(plan: Plan, fp: dict) -> None:
    """The fingerprint, then the folder's record (`seal`: every entry a record named while the
    step ran, at every depth, with its size -- what a user put there stays out of it), then
    -- for a rebuild aside -- the swap into ``out``."""
    state = _state()
    if state.is_main_process:
        work = plan.work
        digests.write(work, fp)
        (work / digests.FILE_STARTED).unlink(missing_ok=True)
        seal(work)
        if plan.aside:  # checked again: files put into the old output since the start are not deleted
            replace_dir(work, plan.out)
    state.wait_for_everyone()  # no process fingerprints the next step before this one is written


# ---- teacher ---------------------------------------------------------------------------


def _teacher_finished(out: Path) -> bool:
    return TEACHER.marker(out)


def teacher(cfg: RunConfig, out_dir: str | Path, *, progress: bool = True, resume_only: bool = False) -> Path:
    """Fine-tune (or co-finetune) the teacher(s) into ``out_dir``; see `teachers.train_teacher`."""
    out, fp = Path(out_dir), fingerprints.teacher(cfg)
    plan = _prepare("teacher", out, fp, TEACHER, _teacher_finished, resume_only)
    if plan.reuse:
        return out
    _started(plan, fp, TEACHER)
    result = Path(teachers.train_teacher(cfg, plan.work, progress))
    _finished(plan, fp)
    return out / result.relative_to(plan.work)


# ---- label -----------------------------------------------------------------------------

def label(cfg: RunConfig, teacher_dirs: list[str | Path], out_dir: str | Path, *, progress: bool = True,
          resume_only: bool = False) -> Path:
    """Label the transfer set with ``teacher_dirs`` into ``out_dir``; see `labeling.label_transfer`.

    A finished set with the same fingerprint is reused after its chunks are verified; a
    damaged chunk is relabeled (the others are kept)."""
    dirs = [d for t in teacher_dirs for d in expand(t)]
    cfg = for_teachers(cfg, dirs)  # the labels the teachers predict (data.labels may be unset)
    out, fp = Path(out_dir), fingerprints.label(cfg, dirs)

    def finished(o: Path) -> bool:  # a damaged chunk makes the set half-finished: it is relabeled
        return (o / labeling.MANIFEST).exists() and labeling.verify_transfer(o) is None

    plan = _prepare("label", out, fp, LABEL, finished, resume_only)
    if plan.reuse:
        return out
    _started(plan, fp, LABEL)
    labeling.label_transfer(cfg, dirs, plan.work, progress, fingerprint=fp)
    _finished(plan, fp)
    return out


# ---- distill ---------------------------------------------------------------------------


class TeacherMismatch(ValueError):
    """The teacher given to distill is not the one that labeled the transfer set."""


def check_labeled_by(transfer_dir: str | Path, teacher_dir: str | Path) -> None:
    """Refuse (`TeacherMismatch`, one line) a teacher other than the one that labeled the
    transfer set: the student would learn from one teacher and be reported beside another.
    Compared by the digests the set's fingerprint records (else by the paths in its manifest)."""
    transfer = Path(transfer_dir)
    inputs = (digests.read(transfer) or {}).get("inputs") or {}
    try:
        labeled = json.loads((transfer / "manifest.json").read_text(encoding="utf-8")).get("teachers") or []
    except (OSError, ValueError):
        labeled = []
    for k, d in enumerate(teacher_dirs(teacher_dir)):
        if f"teacher{k}" in inputs:
            same = inputs[f"teacher{k}"] == digests.folder_digest(d)
        elif k < len(labeled) and labeled[k].get("path"):
            same = Path(labeled[k]["path"]).resolve() == d.resolve()
        else:
            continue
        if not same:
            by = labeled[k]["path"] if k < len(labeled) else f"teacher {k}"
            raise TeacherMismatch(f"--teacher-dir {d} did not label the transfer set {transfer} (labeled by {by}): "
                                  f"give the teacher that labeled it, or label a set with this one first "
                                  f"(xdistil label --teacher-dir {d} --out DIR)")


def distill_stages(cfg: RunConfig, transfer_dir: str | Path, teacher_dir: str | Path, out_dir: str | Path, *,
                   progress: bool = True, resume_only: bool = False) -> list[Path]:
    """Distil every stage into ``out_dir``; the student folder of every stage, in order."""
    check_labeled_by(transfer_dir, teacher_dir)
    out, fp = Path(out_dir), fingerprints.distill(cfg, transfer_dir, teacher_dir)

    def recorded_outputs(o: Path) -> list[Path]:
        return [o / name for name in (digests.read(o) or {}).get("outputs", [])]

    def finished(o: Path) -> bool:
        return bool(recorded_outputs(o)) and all(p.is_dir() for p in recorded_outputs(o))

    # stages.distill keeps the leading stages that are the same and recomputes (or, with
    # resume_only, refuses) from the first that differs
    plan = _prepare("distill", out, fp, DISTILL, finished, resume_only, delegate=True)
    if plan.reuse:
        return recorded_outputs(out)
    _started(plan, fp, DISTILL)
    try:
        dirs = [Path(p) for p in stages.distill(cfg, transfer_dir, teacher_dir, plan.work, progress,
                                                resume_only=resume_only)]
    except digests.StaleOutput:
        if plan.fresh:  # a refusal leaves nothing behind
            _sync(lambda: remove_own(plan.work))
        raise
    missing = [str(p) for p in dirs if not p.is_dir()]
    if missing or not dirs:
        raise RuntimeError(f"distill: the stages finished but {', '.join(missing) or 'no student'} was not "
                           f"written; rerun without --resume-only or use another --out")
    state = _state()
    if state.is_main_process:  # students of an earlier stage list that the record names (a user's copy stays)
        for p in plan.work.glob("stage[0-9]*-*"):
            if p.is_dir() and p not in dirs and p.name in recorded(plan.work):
                remove_own(p, within=plan.work)
        _card(cfg, teacher_dir, dirs)
    # which folders the step produced, beside the fingerprint (not part of its digest)
    _finished(plan, {**fp, "outputs": [os.path.relpath(p, plan.work) for p in dirs]})
    return [out / p.relative_to(plan.work) for p in dirs]


def _card(cfg: RunConfig, teacher_dir: str | Path, dirs: list[Path]) -> None:
    """Each student's model card names its languages and teacher (dev F1 comes with evaluation)."""
    for d in dirs:
        write_card(d, languages=list(cfg.data.languages), teacher=str(teacher_dir))


def distill(cfg: RunConfig, transfer_dir: str | Path, teacher_dir: str | Path, out_dir: str | Path, *,
            progress: bool = True, resume_only: bool = False) -> Path:
    """Distil every stage into ``out_dir``; the final student's folder (see `distill_stages`)."""
    return distill_stages(cfg, transfer_dir, teacher_dir, out_dir, progress=progress, resume_only=resume_only)[-1]


def students(out_dir: str | Path) -> list[Path]:
    """The student folders a finished distill step recorded, in stage order ([] when none)."""
    out = Path(out_dir)
    return [out / name for name in (digests.read(out) or {}).get("outputs", [])]


# ---- export ----------------------------------------------------------------------------

def export(model_dir: str | Path, out_dir: str | Path, *, resume_only: bool = False, **kwargs) -> Path:
    """Export ``model_dir`` to ONNX in ``out_dir``; ``kwargs`` go to `deployable.export_model`,
    which builds the folder aside, with this step's fingerprint, and swaps it in only when
    its checks passed: a failed export leaves the previous one as it was."""
    out, fp = Path(out_dir), fingerprints.export(model_dir, kwargs)
    if _prepare("export", out, fp, EXPORT, EXPORT.marker, resume_only).reuse:
        return out
    export_model(model_dir, out, record=fp, **kwargs)
    return out

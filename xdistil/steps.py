"""The steps of a run, one function each, between the CLI / pipeline and the code doing the work.

    step      implementation               its output
    teacher   teachers.train_teacher       a fine-tuned teacher folder (or a co-finetuned group)
    label     labeling.label_transfer      a transfer set (Arrow chunks + manifest.json)
    distill   stages.distill               one student folder per stage; returns the last one
    export    onnx_export.export_model     an ONNX export folder

Every step writes a fingerprint beside its output (`xdistil.fingerprint`): the resolved
config fields the step depends on, the fingerprints of its inputs (teacher folders, the
transfer set, the data files' bytes) and the xdistil version. On a rerun:

- the same fingerprint: the output is reused, and the step says so in one line;
- another fingerprint (or finished work without one): the output is discarded and
  recomputed -- and since every later step's fingerprint holds this one's digest, every
  later step is recomputed too; with ``resume_only`` the step refuses instead
  (`fingerprint.StaleOutput`, one line naming the fields that differ);
- half-finished work (tagged with its fingerprint when the step started) is resumed only
  when it was begun from the same inputs; otherwise it is discarded (or refused), never mixed.

Under ``accelerate launch`` every process calls the step (they are data-parallel); every
process takes the same decision, only the main one deletes or writes, between barriers.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from xdistil import fingerprint
from xdistil.config import RunConfig, to_dict
from xdistil.data.transfer import data_digests

# The entries a step leaves in its folder, finished or not: a folder holding none of them
# (nor a fingerprint) is not a step's output, and is never deleted.
TEACHER_WORK = ("xdistil_teacher.json", "xdistil_teachers.json", "checkpoint")
LABEL_WORK = ("manifest.json", "chunks")
DISTILL_WORK = ("progress.json", "checkpoint")
EXPORT_WORK = ("export_manifest.json",)


def _state():
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # Accelerator() reads ACCELERATE_USE_CPU itself; PartialState needs it said (gloo on CPU)
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def _say(line: str) -> None:
    if _state().is_main_process:
        print(line, flush=True)


def _holds_work(out: Path, work: tuple[str, ...]) -> bool:
    return (out / fingerprint.FILE).exists() or (out / fingerprint.FILE_STARTED).exists() or \
        any((out / w).exists() for w in work)


def _prepare(name: str, out: Path, fp: dict, work: tuple[str, ...], finished: Callable[[Path], bool],
             resume_only: bool, delegate: bool = False) -> bool:
    """Before a step runs: True when ``out`` already is this step's output (reuse it).
    Otherwise ``out`` is left empty or holding half-finished work begun from the same
    inputs; work from other inputs is discarded, or refused with ``resume_only``.
    ``delegate``: the implementation sorts out work from other inputs itself, finer than
    the whole folder (distillation reuses the leading stages that are the same)."""
    if not _holds_work(out, work):
        return False
    done, started = fingerprint.read(out), fingerprint.read(out, started=True)
    if fingerprint.same(done, fp) and finished(out):
        _say(f"{name}: reusing {out} (built from the same inputs)")
        return True
    if fingerprint.same(done, fp) or (done is None and fingerprint.same(started, fp)):
        return False  # begun (or partly removed) with the same inputs: resume it
    old = done or started
    if delegate:
        if not resume_only:
            _say(f"{name}: {out} was built from other inputs ({', '.join(fingerprint.diff(old, fp))} differ); "
                 f"recomputing what they change")
        return False
    if resume_only:
        raise fingerprint.StaleOutput(fingerprint.stale_message(out, old, fp))
    state = _state()
    state.wait_for_everyone()  # every process has read the folder before it goes
    if state.is_main_process:
        _say(f"{name}: {out} was built from other inputs ({', '.join(fingerprint.diff(old, fp))} differ); "
             f"recomputing it")
        shutil.rmtree(out)
    state.wait_for_everyone()
    return False


def _started(out: Path, fp: dict) -> None:
    if _state().is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        fingerprint.write(out, fp, started=True)


def _finished(out: Path, fp: dict) -> None:
    state = _state()
    if state.is_main_process:
        fingerprint.write(out, fp)
        (out / fingerprint.FILE_STARTED).unlink(missing_ok=True)
    state.wait_for_everyone()  # no process fingerprints the next step before this one is written


# ---- teacher ---------------------------------------------------------------------------

def _model_input(name: str) -> str:
    """A pretrained model named by the config: a local folder by its files, else its name."""
    return fingerprint.folder_digest(name) if Path(name).is_dir() else name


# Settings that change how a step runs or reports, not what it writes.
_NOT_OUTPUT = ("eval_batch_size", "checkpoint_every", "min_selection_f1")


def teacher_fingerprint(cfg: RunConfig) -> dict:
    t = {k: v for k, v in to_dict(cfg.teacher).items() if k not in ("model", "models", *_NOT_OUTPUT)}
    names = cfg.teacher.model_names()
    fields = {"teacher": {**t, "models": names},
              "data": {k: getattr(cfg.data, k) for k in ("languages", "labeled_budget", "val_size", "labels",
                                                         "strict")}}
    inputs = {**{f"model{k}": _model_input(n) for k, n in enumerate(names)}, **data_digests(cfg, ("train",))}
    return fingerprint.make("teacher", fields, inputs)


def _teacher_finished(out: Path) -> bool:
    return (out / TEACHER_WORK[0]).exists() or (out / TEACHER_WORK[1]).exists()


def teacher(cfg: RunConfig, out_dir: str | Path, *, progress: bool = True, resume_only: bool = False) -> Path:
    """Fine-tune (or co-finetune) the teacher(s) into ``out_dir``; see `teachers.train_teacher`."""
    from xdistil.teachers import train_teacher

    out, fp = Path(out_dir), teacher_fingerprint(cfg)
    if _prepare("teacher", out, fp, TEACHER_WORK, _teacher_finished, resume_only):
        return out
    _started(out, fp)
    result = Path(train_teacher(cfg, out, progress))
    _finished(out, fp)
    return result


# ---- label -----------------------------------------------------------------------------

def label(cfg: RunConfig, teacher_dirs: list[str | Path], out_dir: str | Path, *, progress: bool = True,
          resume_only: bool = False) -> Path:
    """Label the transfer set with ``teacher_dirs`` into ``out_dir``; see `labeling.label_transfer`.

    A finished set with the same fingerprint is reused after its chunks are verified; a
    damaged chunk is relabeled (the others are kept)."""
    from xdistil import labeling
    from xdistil.labels import for_teachers
    from xdistil.teachers import teacher_dirs as expand

    dirs = [d for t in teacher_dirs for d in expand(t)]
    cfg = for_teachers(cfg, dirs)  # the labels the teachers predict (data.labels may be unset)
    out, fp = Path(out_dir), labeling.label_fingerprint(cfg, dirs)

    def finished(o: Path) -> bool:  # a damaged chunk makes the set half-finished: it is relabeled
        return (o / labeling.MANIFEST).exists() and labeling.verify_transfer(o) is None

    if _prepare("label", out, fp, LABEL_WORK, finished, resume_only):
        return out
    _started(out, fp)
    result = labeling.label_transfer(cfg, dirs, out, progress, fingerprint=fp)
    _finished(out, fp)
    return result


# ---- distill ---------------------------------------------------------------------------

def distill_fingerprint(cfg: RunConfig, transfer_dir: str | Path, teacher_dir: str | Path) -> dict:
    d = {k: v for k, v in to_dict(cfg.distill).items() if k not in ("stages", *_NOT_OUTPUT)}
    fields = {"student": to_dict(cfg.student),
              "distill": {**d, "stages": [to_dict(s) for s in cfg.distill.resolved_stages()]},
              "data": {"languages": cfg.data.languages,
                       **({"transfer_languages": cfg.transfer.languages} if cfg.transfer.languages else {})}}
    inputs = {"transfer": fingerprint.folder_digest(transfer_dir), "teacher": fingerprint.folder_digest(teacher_dir)}
    if cfg.distill.init_from:
        inputs["init_from"] = fingerprint.folder_digest(cfg.distill.init_from)
    return fingerprint.make("distill", fields, inputs)


def distill_stages(cfg: RunConfig, transfer_dir: str | Path, teacher_dir: str | Path, out_dir: str | Path, *,
                   progress: bool = True, resume_only: bool = False) -> list[Path]:
    """Distil every stage into ``out_dir``; the student folder of every stage, in order."""
    from xdistil import stages

    out, fp = Path(out_dir), distill_fingerprint(cfg, transfer_dir, teacher_dir)

    def recorded(o: Path) -> list[Path]:
        return [o / name for name in (fingerprint.read(o) or {}).get("outputs", [])]

    def finished(o: Path) -> bool:
        return bool(recorded(o)) and all(p.is_dir() for p in recorded(o))

    # stages.distill keeps the leading stages that are the same and recomputes (or, with
    # resume_only, refuses) from the first that differs
    if _prepare("distill", out, fp, DISTILL_WORK, finished, resume_only, delegate=True):
        return recorded(out)
    _started(out, fp)
    dirs = [Path(p) for p in stages.distill(cfg, transfer_dir, teacher_dir, out, progress, resume_only=resume_only)]
    missing = [str(p) for p in dirs if not p.is_dir()]
    if missing or not dirs:
        raise RuntimeError(f"distill: the stages finished but {', '.join(missing) or 'no student'} was not "
                           f"written; rerun without --resume-only or use another --out")
    state = _state()
    if state.is_main_process:  # students of an earlier stage list: the folder holds what the record names
        for p in out.glob("stage*"):
            if p.is_dir() and p not in dirs:
                shutil.rmtree(p)
    # which folders the step produced, beside the fingerprint (not part of its digest)
    _finished(out, {**fp, "outputs": [os.path.relpath(p, out) for p in dirs]})
    return dirs


def distill(cfg: RunConfig, transfer_dir: str | Path, teacher_dir: str | Path, out_dir: str | Path, *,
            progress: bool = True, resume_only: bool = False) -> Path:
    """Distil every stage into ``out_dir``; the final student's folder (see `distill_stages`)."""
    return distill_stages(cfg, transfer_dir, teacher_dir, out_dir, progress=progress, resume_only=resume_only)[-1]


def students(out_dir: str | Path) -> list[Path]:
    """The student folders a finished distill step recorded, in stage order ([] when none)."""
    out = Path(out_dir)
    return [out / name for name in (fingerprint.read(out) or {}).get("outputs", [])]


# ---- export ----------------------------------------------------------------------------

def export(model_dir: str | Path, out_dir: str | Path, *, resume_only: bool = False, **kwargs) -> Path:
    """Export ``model_dir`` to ONNX in ``out_dir``; ``kwargs`` go to `onnx_export.export_model`."""
    from xdistil.onnx_export import export_model

    fields = {k: v for k, v in kwargs.items() if k not in ("dev_file", "parity_sentences")}
    inputs = {"model": fingerprint.folder_digest(model_dir)}
    if kwargs.get("dev_file"):
        inputs["dev_file"] = fingerprint.file_digest(kwargs["dev_file"])
    if kwargs.get("parity_sentences") is not None:
        inputs["parity_sentences"] = fingerprint.make("parity", {"s": kwargs["parity_sentences"]})["digest"]
    out, fp = Path(out_dir), fingerprint.make("export", fields, inputs)
    if _prepare("export", out, fp, EXPORT_WORK, lambda o: (o / EXPORT_WORK[0]).exists(), resume_only):
        return out
    export_model(model_dir, out, **kwargs)  # builds the folder aside and renames it into place
    _finished(out, fp)
    return out


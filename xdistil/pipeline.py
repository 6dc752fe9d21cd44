"""The whole pipeline as resumable steps in one run directory: teacher -> label -> distill
-> evaluate (`run`), the run's summary and its score table.

The folder's layout is `xdistil.run.RunDir`'s; what ``metrics.json`` holds is
`xdistil.run.RunRecord`. Each step writes its output atomically, beside a fingerprint of
what it was built from (`xdistil.steps`, `xdistil.run.fingerprints`): rerunning the same
command after an interruption continues where it stopped, and rerunning with a changed
config recomputes exactly the steps it changes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from accelerate import PartialState
from accelerate.utils import parse_flag_from_env

from xdistil import steps
from xdistil.cards import write_card
from xdistil.config import RunConfig, to_dict
from xdistil.evaluate import DevScorer
from xdistil.provenance import provenance
from xdistil.results import ModelScores, Provenance, Summary, stage_of
from xdistil.run import RunDir, RunRecord, fingerprints
from xdistil.run.layout import RUN_MARKER
from xdistil.run.record import Recorder
from xdistil.runner import Runner

log = logging.getLogger(__name__)



def run(cfg: RunConfig, run_dir: str | Path, progress: bool = True, command: str | None = None,
        resume_only: bool = False, reuse: Sequence[str | Path] = ()) -> RunRecord:
    """teacher -> label -> distill -> evaluate (the steps of ``cfg.steps``), through the step
    runner (`xdistil.runner`): a step whose fingerprint matches is reused, a step whose inputs
    changed is recomputed, and so is every later one (each fingerprint holds the digests of
    the steps before it). With ``resume_only`` a changed step is refused instead
    (`digests.StaleOutput`). ``reuse``: other run folders (or folders of runs) whose
    finished step outputs with the same fingerprints are linked in rather than recomputed.

    The run's record (``metrics.json``, `RunRecord`) describes only what is on disk: a step's
    timing and provenance stay while the output they were measured on is there, a model's
    scores while that very model is (`score_models`). ``command``: the command line recorded
    with each step. Returns the record."""
    rd = RunDir(run_dir)
    # a new or empty folder, or a run directory already: never a folder of other things
    steps.claim(rd.root, ("teacher", "transfer", "distill"), marker=RUN_MARKER)
    # under `accelerate launch` every process runs the steps; only the main one writes the record and scores
    main = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).is_main_process
    rec = Recorder(rd, json.loads(json.dumps(to_dict(cfg))), command, main, resume_only)
    with _logging_to(rd.log if main else None):
        got = Runner(cfg, rd, reuse=reuse, recorder=rec, progress=progress, resume_only=resume_only).run(cfg.steps)
        if main:
            score_models(rec, cfg, got.teachers, got.students, progress, evaluate="evaluate" in cfg.steps)
            rec.finish(summary(rec.record, cfg).to_dict())
            print(summary_table(rec.record, cfg))
    return rec.record


@contextmanager
def _logging_to(path: Path | None) -> Iterator[None]:
    """The log of every invocation, appended to ``path`` (None: nowhere) while the block runs."""
    handler = logging.FileHandler(path, encoding="utf-8") if path is not None else logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def score_models(rec: Recorder, cfg: RunConfig, teachers: list[Path], students: list[Path], progress: bool,
                 evaluate: bool = True) -> None:
    """Dev scores of every teacher and student in the record, each beside the fingerprint of
    the model and dev files it was measured on: a score whose model is gone or changed is
    dropped, a missing one measured (``evaluate``). A student's model card gets its dev F1.
    With co-finetuned teachers the reference of "% of the teacher" is the best member."""
    record, several = rec.record, len(teachers) > 1
    kept = {"teachers": {d.name for d in teachers} if several else set(), "students": {d.name for d in students}}
    for store in ("teachers", "students"):  # models no longer on disk
        for name in [n for n in getattr(record, store) if n not in kept[store]]:
            del getattr(record, store)[name]
    score = DevScorer(cfg, progress)
    todo = [("teachers" if several else "teacher", d.name if several else "teacher", d) for d in teachers] + \
        [("students", d.name, d) for d in students]
    for store, name, path in todo:
        fp = fingerprints.evaluate(cfg, path)
        old = record.teacher if store == "teacher" else getattr(record, store).get(name)
        if fp is not None and (old or {}).get("fingerprint") == fp:
            continue
        scores = None
        if fp is not None and evaluate:
            if not score.scores:
                record.provenance["evaluate"] = provenance(rec.command)
            scores = {**score(name, path), "fingerprint": fp}
        if store == "teacher":
            record.teacher = scores
        elif scores is None:
            getattr(record, store).pop(name, None)
        else:
            getattr(record, store)[name] = scores
        rec.write()
        if store == "students" and scores is not None:
            write_card(path, scores={lang: r["f1"] for lang, r in scores["dev"].items()},
                       languages=list(cfg.data.languages), teacher=str(teachers[0]), command=rec.command)
    if several:
        best = max(record.teachers, key=lambda n: record.teachers[n]["f1_avg"]) if record.teachers else None
        record.teacher = {**record.teachers[best], "member": best} if best else None
    rec.write()


def summary(record: RunRecord, cfg: RunConfig) -> Summary:
    """The run's `Summary` record (``summary.json``): protocol + one scored row per model.

    Co-finetuned teachers are one row each (group "co-finetuned"); the reference teacher of
    "% of the teacher" is the best of them. A student row carries its stage (index, name)
    from the metadata its stage saved beside it, and its folder.
    """
    if record.teachers:
        models = [ModelScores.from_eval(name, "teacher", t, arch=name, group="co-finetuned",
                                        evaluated_by="xdistil run") for name, t in record.teachers.items()]
        reference = (record.teacher or {}).get("member")
    elif record.teacher is not None:
        models = [ModelScores.from_eval("teacher", "teacher", record.teacher, arch=cfg.teacher.model,
                                        evaluated_by="xdistil run")]
        reference = "teacher"
    else:
        models, reference = [], None
    for name, m in record.students.items():
        index, stage = stage_of(m["path"]) if m.get("path") else (None, None)
        models.append(ModelScores.from_eval(name, "student", m, arch=cfg.student.arch, stage=index, stage_name=stage,
                                            evaluated_by="xdistil run"))
    stages = [st.name for st in cfg.distill.resolved_stages()]
    protocol = {"languages": list(cfg.data.languages), "labeled_budget": cfg.data.labeled_budget,
                "selection_slice": cfg.data.val_size,
                "transfer": {"sources": list(cfg.transfer.sources), "limit_per_language": cfg.transfer.limit},
                "evaluation": "dev " + (f"(first {cfg.data.dev_limit} sentences per language)" if cfg.data.dev_limit
                                        else "(whole file)"),
                "metric": "seqeval entity F1, IOB2 strict", "teacher": " + ".join(cfg.teacher.model_names()),
                "student": to_dict(cfg.student), "stages": stages}
    final = models[-1].name if models and models[-1].role == "student" else None
    return Summary(protocol, models, reference=reference, headline=final, timings=dict(record.timings),
                   provenance={k: Provenance(**v) for k, v in record.provenance.items()})


def scored(cfg: RunConfig, teachers: list[Path], students: list[Path], progress: bool = True) -> Summary:
    """Dev scores of the teacher(s) and students outside a run folder (``xdistil distill``), as a
    `Summary`; each student's model card gets its dev F1 (as `run` writes it)."""
    score = DevScorer(cfg, progress)
    several = len(teachers) > 1
    models = [ModelScores.from_eval(f"teacher{k + 1}" if several else "teacher", "teacher",
                                    score(f"teacher{k + 1}", d), arch=str(d), evaluated_by="xdistil distill")
              for k, d in enumerate(teachers)]
    for d in students:
        result = score(d.name, d)
        index, stage = stage_of(d)
        models.append(ModelScores.from_eval(d.name, "student", result, arch=cfg.student.arch, stage=index,
                                            stage_name=stage, evaluated_by="xdistil distill"))
        write_card(d, scores={lang: r["f1"] for lang, r in result["dev"].items()})
    return Summary({"languages": list(cfg.data.languages)}, models, reference=models[0].name)


def summary_table(record: RunRecord, cfg: RunConfig) -> str:
    """The run's `score_table`."""
    return score_table(summary(record, cfg), f"dev F1 per language ({' + '.join(cfg.teacher.model_names())} "
                                              f"teacher, budget {cfg.data.labeled_budget}/language)")


def score_table(s: Summary, title: str) -> str:
    """The one score table of the command line: per language the teacher's F1, each student's
    F1 and % of the teacher kept; parameters and compression."""
    if not any(m.role == "teacher" for m in s.models):
        return "(nothing evaluated yet)"
    t, langs = s.teacher, s.languages
    head = f"{'model':<26}{'params':>9}{'compr.':>8}" + "".join(f"{lang:>8}" for lang in langs) + \
        f"{'avg':>8}{'% teacher':>11}"
    lines = [title, head, "-" * len(head)]

    def pct(x: float | None, width: int) -> str:  # a zero-F1 teacher: no share to give
        return f"{'n/a':>{width}}" if x is None else f"{x:>{width - 1}.1f}%"

    for m in s.models:
        name = m.name + (" (reference)" if m.role == "teacher" and len(s.models) > 1 and m is t and m.group else "")
        f1s = "".join(f"{m.f1[lang]:>8.2f}" for lang in langs)
        lines.append(f"{name:<26}{m.params / 1e6:>8.2f}M{t.params / m.params:>7.1f}x{f1s}{m.f1_avg:>8.2f}"
                     f"{pct(m.retained(t), 11)}")
        if m.role == "student":
            lines.append(" " * 43 + "".join(pct(m.retained(t, lang), 8) for lang in langs))
    return "\n".join(lines)

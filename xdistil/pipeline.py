"""The whole pipeline as resumable steps in one run directory.

    run_dir/
      config.json        resolved config
      teacher/           fine-tuned teacher (HF folder + xdistil_teacher.json)
      transfer/          transfer set labeled by the teacher (Arrow chunks + manifest)
      distill/           one student folder per stage (stage1-hard/, ...)
      metrics.json       dev scores per model and language, parameters, timings, and where each
                         step ran (machine, library versions, command line: `xdistil.provenance`)
      summary.json       the machine-readable summary (protocol + models)
      run.log            the log of every invocation

Each step writes its output atomically, beside a fingerprint of what it was built from
(`xdistil.steps`): rerunning the same command after an interruption continues where it
stopped, and rerunning with a changed config recomputes exactly the steps it changes.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from xdistil.config import RunConfig, save_json, to_dict
from xdistil.records import ModelScores, Provenance, Summary, stage_of

log = logging.getLogger(__name__)


def _log_to(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def dev_sets(cfg: RunConfig) -> dict[str, list]:
    """Each language's dev sentences, read once for every model a run evaluates."""
    from xdistil.data.sources import dev_sentences

    return {lang: dev_sentences(lang, cfg.data) for lang in cfg.data.languages}


def evaluate_dev(model_dir: Path, cfg: RunConfig, progress: bool = True, dev: dict | None = None) -> dict:
    """Dev F1 per language of any saved model, with its parameter count."""
    from xdistil.evaluate import evaluate_tagger
    from xdistil.taggers import load_tagger

    dev = dev if dev is not None else dev_sets(cfg)
    tagger = load_tagger(model_dir)
    res = {}
    for lang in cfg.data.languages:
        res[lang] = evaluate_tagger(tagger, dev[lang], cfg.teacher.eval_batch_size, progress)
    return {"path": str(model_dir), "params": tagger.param_count(), "dev": res,
            "f1_avg": sum(r["f1"] for r in res.values()) / len(res)}


class DevScorer:
    """Dev F1 of saved models (`evaluate_dev`) over one config's dev sets, read once and only
    when a model is first scored. With ``cache`` (a JSON file) the scores persist by name,
    so a rerun of a benchmark does not evaluate again."""

    def __init__(self, cfg: RunConfig, progress: bool = True, cache: Path | None = None):
        self.cfg, self.progress, self.cache_path = cfg, progress, cache
        self.scores: dict = json.loads(cache.read_text()) if cache is not None and cache.exists() else {}
        self._dev: dict | None = None

    def __call__(self, name: str, path: Path) -> dict:
        if name not in self.scores:
            if self._dev is None:
                self._dev = dev_sets(self.cfg)
            self.scores[name] = evaluate_dev(path, self.cfg, self.progress, self._dev)
            if self.cache_path is not None:
                save_json(self.scores, self.cache_path)
        return self.scores[name]


def run(cfg: RunConfig, run_dir: str | Path, progress: bool = True, command: str | None = None,
        resume_only: bool = False) -> dict:
    """teacher -> label -> distill -> evaluate, each through `xdistil.steps`: a step whose
    fingerprint matches is reused, a step whose inputs changed is recomputed, and so is
    every later one (each fingerprint holds the digests of the steps before it). With
    ``resume_only`` a changed step is refused instead (`fingerprint.StaleOutput`).

    The run's record describes only what is on disk. ``metrics.json`` keeps a step's
    timing and provenance only while the output they were measured on is there (by its
    digest, under ``fingerprints``), and a model's scores only while that very model is
    (each score holds the fingerprint of the model and dev files it was measured on).
    ``config.json`` and ``summary.json`` are written after the steps ran; a run started
    with another config loses them first, so an interruption never leaves a record of
    models that are gone. ``command``: the command line recorded with each step.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from xdistil import fingerprint, steps
    from xdistil.data.transfer import data_digests
    from xdistil.provenance import provenance
    from xdistil.teachers import teacher_dirs

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # under `accelerate launch` every process runs the steps (they are data-parallel), but
    # only the main one writes the run's own files and evaluates
    main = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).is_main_process

    def write(obj, path: Path) -> None:
        if main:
            save_json(obj, path)

    handler = _log_to(run_dir) if main else logging.NullHandler()
    try:
        cfg_path, summary_path, metrics_path = run_dir / "config.json", run_dir / "summary.json", run_dir / "metrics.json"
        resolved = json.loads(json.dumps(to_dict(cfg)))
        if main and not resume_only and cfg_path.exists() and json.loads(cfg_path.read_text()) != resolved:
            # (with resume_only nothing is replaced: a changed step is refused instead)
            log.info("%s differs from the current config: the steps it changes are recomputed", cfg_path)
            cfg_path.unlink()
            summary_path.unlink(missing_ok=True)
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        timings = metrics.setdefault("timings", {})
        where = metrics.setdefault("provenance", {})  # step -> machine, versions, command (xdistil bench)
        built = metrics.setdefault("fingerprints", {})  # step -> digest of the output the record describes

        def step(name: str, out: Path, fn):
            before, t0 = fingerprint.digest_of(out), time.time()
            result = fn()
            after = fingerprint.digest_of(out)
            if before != after:  # this invocation built the output (or finished it)
                timings[f"{name}_s"] = round(time.time() - t0, 1)
                where[name] = provenance(command)
            elif after != built.get(name):  # reused an output that the record does not describe
                timings.pop(f"{name}_s", None)
                where.pop(name, None)
            built[name] = after
            write(metrics, metrics_path)
            return result

        teacher_dir, transfer_dir, distill_dir = run_dir / "teacher", run_dir / "transfer", run_dir / "distill"
        if "teacher" in cfg.steps:
            step("teacher", teacher_dir, lambda: steps.teacher(cfg, teacher_dir, progress=progress,
                                                               resume_only=resume_only))
        # one teacher, or the members of a co-finetuned group (MT-BERT)
        teachers = teacher_dirs(teacher_dir) if teacher_dir.exists() else [teacher_dir]
        if "label" in cfg.steps:
            step("label", transfer_dir, lambda: steps.label(cfg, teachers, transfer_dir, progress=progress,
                                                            resume_only=resume_only))
        if "distill" in cfg.steps:
            stage_dirs = step("distill", distill_dir, lambda: steps.distill_stages(
                cfg, transfer_dir, teachers[0], distill_dir, progress=progress, resume_only=resume_only))
        else:
            stage_dirs = steps.students(distill_dir)  # what an earlier invocation distilled, if anything

        if main:
            # scores stay only beside the very models (and dev files) they were measured on
            dev_inputs = data_digests(cfg, ("dev",))
            dev_fields = {"languages": cfg.data.languages, "dev_limit": cfg.data.dev_limit, "labels": cfg.data.labels}

            def measured_on(path: Path) -> str | None:
                if not path.is_dir():
                    return None
                model = {"model": fingerprint.folder_digest(path), **dev_inputs}
                return fingerprint.make("evaluate", dev_fields, model)["digest"]

            several = len(teachers) > 1
            members = metrics.setdefault("teachers", {}) if several else {}
            students = metrics.setdefault("students", {})
            todo = [(members if several else metrics, d.name if several else "teacher", d) for d in teachers] + \
                [(students, d.name, d) for d in stage_dirs]
            for store in (members, students):  # models no longer on disk
                for name in [n for n in store if n not in {n for s, n, _ in todo if s is store}]:
                    del store[name]
            if not several:
                metrics.pop("teachers", None)
            score = DevScorer(cfg, progress)
            for store, name, path in todo:
                fp = measured_on(path)
                if fp is None or store.get(name, {}).get("fingerprint") != fp:
                    store.pop(name, None)
                    if fp is not None and "evaluate" in cfg.steps:
                        if not score.scores:
                            where["evaluate"] = provenance(command)
                        store[name] = {**score(name, path), "fingerprint": fp}
                        write(metrics, metrics_path)
                        if store is students:  # the student's model card gets its dev F1
                            from xdistil.cards import write_card

                            write_card(path, scores={lang: r["f1"] for lang, r in store[name]["dev"].items()},
                                       languages=list(cfg.data.languages), teacher=str(teachers[0]),
                                       command=command)
            if several:  # the reference for "% of the teacher": the best co-finetuned teacher
                metrics.pop("teacher", None)
                if members:
                    best = max(members, key=lambda n: members[n]["f1_avg"])
                    metrics["teacher"] = {**members[best], "member": best}
            write(metrics, metrics_path)
            # the record of the run, written from what the steps left on disk
            write(resolved, cfg_path)
            write(summary(metrics, cfg).to_dict(), summary_path)
            print(summary_table(metrics, cfg))
        return metrics
    finally:
        logging.getLogger().removeHandler(handler)


def summary(metrics: dict, cfg: RunConfig) -> Summary:
    """The run's `Summary` record (``summary.json``): protocol + one scored row per model.

    Co-finetuned teachers are one row each (group "co-finetuned"); the reference teacher of
    "% of the teacher" is the best of them. A student row carries its stage (index, name)
    from the metadata its stage saved beside it, and its folder.
    """
    members = metrics.get("teachers", {})
    if members:
        models = [ModelScores.from_eval(name, "teacher", t, arch=name, group="co-finetuned",
                                        evaluated_by="xdistil run") for name, t in members.items()]
        reference = metrics.get("teacher", {}).get("member")
    elif "teacher" in metrics:
        models = [ModelScores.from_eval("teacher", "teacher", metrics["teacher"], arch=cfg.teacher.model,
                                        evaluated_by="xdistil run")]
        reference = "teacher"
    else:
        models, reference = [], None
    for name, m in metrics.get("students", {}).items():
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
    return Summary(protocol, models, reference=reference, headline=final, timings=dict(metrics.get("timings", {})),
                   provenance={k: Provenance(**v) for k, v in metrics.get("provenance", {}).items()})


def summary_table(metrics: dict, cfg: RunConfig) -> str:
    """Per language: teacher F1, each student's F1 and % of the teacher retained; params and compression."""
    s = summary(metrics, cfg)
    if not any(m.role == "teacher" for m in s.models):
        return "(nothing evaluated yet)"
    t, langs = s.teacher, s.languages
    head = f"{'model':<26}{'params':>9}{'compr.':>8}" + "".join(f"{lang:>8}" for lang in langs) + \
        f"{'avg':>8}{'% teacher':>11}"
    lines = [f"dev F1 per language ({' + '.join(cfg.teacher.model_names())} teacher, budget "
             f"{cfg.data.labeled_budget}/language)", head, "-" * len(head)]

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

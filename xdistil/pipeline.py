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

Each step writes its output atomically and is skipped when already done, so rerunning
the same command after an interruption continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from xdistil.config import RunConfig, save_json, to_dict

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


def run(cfg: RunConfig, run_dir: str | Path, progress: bool = True, command: str | None = None) -> dict:
    """teacher -> label -> distill -> evaluate, each step skipped when already done.

    ``command``: the command line recorded with each step (default: this process's).
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from xdistil.labeling import label_transfer
    from xdistil.provenance import provenance
    from xdistil.stages import distill
    from xdistil.teachers import teacher_dirs, train_teacher

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
        cfg_path = run_dir / "config.json"
        if cfg_path.exists() and json.loads(cfg_path.read_text()) != json.loads(json.dumps(to_dict(cfg))):
            log.warning("%s differs from the current config; steps already done are kept", cfg_path)
        write(to_dict(cfg), cfg_path)
        metrics_path = run_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        timings = metrics.setdefault("timings", {})
        where = metrics.setdefault("provenance", {})  # step -> machine, versions, command (xdistil bench)

        def step(name, fn):
            t0 = time.time()
            result = fn()
            if f"{name}_s" not in timings:  # recorded by the invocation that did the work
                timings[f"{name}_s"] = round(time.time() - t0, 1)
                where[name] = provenance(command)
            write(metrics, metrics_path)
            return result

        teacher_dir = run_dir / "teacher"
        if "teacher" in cfg.steps:
            step("teacher", lambda: train_teacher(cfg, teacher_dir, progress))
        # one teacher, or the members of a co-finetuned group (MT-BERT)
        teachers = teacher_dirs(teacher_dir) if teacher_dir.exists() else [teacher_dir]
        stage_dirs: list[Path] = []
        if "label" in cfg.steps:
            step("label", lambda: label_transfer(cfg, teachers, run_dir / "transfer", progress))
        if "distill" in cfg.steps:
            stage_dirs = step("distill", lambda: distill(cfg, run_dir / "transfer", teachers[0],
                                                         run_dir / "distill", progress))
        if "evaluate" in cfg.steps and main:
            score = DevScorer(cfg, progress)
            # one teacher is "teacher"; co-finetuned teachers are scored by folder name
            members = metrics.setdefault("teachers", {}) if len(teachers) > 1 else metrics
            students = metrics.setdefault("students", {})
            todo = [(members, d.name if len(teachers) > 1 else "teacher", d) for d in teachers] + \
                [(students, d.name, d) for d in stage_dirs]
            for store, name, path in todo:
                if name not in store:
                    if not score.scores:
                        where["evaluate"] = provenance(command)
                    store[name] = score(name, path)
                    write(metrics, metrics_path)
            if len(teachers) > 1:  # the reference for "% of the teacher": the best co-finetuned teacher
                best = max(members, key=lambda n: members[n]["f1_avg"])
                metrics["teacher"] = {**members[best], "member": best}
                write(metrics, metrics_path)
        write(summary(metrics, cfg), run_dir / "summary.json")
        if main:
            print(summary_table(metrics, cfg))
        return metrics
    finally:
        logging.getLogger().removeHandler(handler)


def summary(metrics: dict, cfg: RunConfig) -> dict:
    """The machine-readable summary: protocol + one entry per model."""
    models = []
    if "teacher" in metrics:
        t = metrics["teacher"]
        models.append({"name": "teacher", "role": "teacher", "arch": t.get("member", cfg.teacher.model),
                       "params": t["params"], "f1": {k: v["f1"] for k, v in t["dev"].items()},
                       "f1_avg": t["f1_avg"]})
    for name, t in metrics.get("teachers", {}).items():
        models.append({"name": name, "role": "co-finetuned teacher", "arch": name, "params": t["params"],
                       "f1": {k: v["f1"] for k, v in t["dev"].items()}, "f1_avg": t["f1_avg"]})
    for name, s in metrics.get("students", {}).items():
        models.append({"name": name, "role": "student", "arch": cfg.student.arch, "params": s["params"],
                       "f1": {k: v["f1"] for k, v in s["dev"].items()}, "f1_avg": s["f1_avg"]})
    return {"protocol": {"languages": cfg.data.languages, "labeled_budget": cfg.data.labeled_budget,
                         "selection_slice": cfg.data.val_size, "transfer_limit": cfg.transfer.limit,
                         "evaluation": "dev" + (f" (first {cfg.data.dev_limit})" if cfg.data.dev_limit else ""),
                         "metric": "seqeval entity F1, IOB2 strict"},
            "models": models, "timings": metrics.get("timings", {})}


def summary_table(metrics: dict, cfg: RunConfig) -> str:
    """Per language: teacher F1, each student's F1 and % of the teacher retained; params and compression."""
    if "teacher" not in metrics:
        return "(nothing evaluated yet)"
    t = metrics["teacher"]
    langs = list(t["dev"])
    students = metrics.get("students", {})
    head = f"{'model':<26}{'params':>9}{'compr.':>8}" + "".join(f"{lang:>8}" for lang in langs) + f"{'avg':>8}{'% teacher':>11}"
    lines = [f"dev F1 per language ({' + '.join(cfg.teacher.model_names())} teacher, budget {cfg.data.labeled_budget}/language)",
             head, "-" * len(head)]

    def row(name, m):
        comp = t["params"] / m["params"]
        f1s = "".join(f"{m['dev'][lang]['f1']:>8.2f}" for lang in langs)
        keep = 100 * m["f1_avg"] / t["f1_avg"] if t["f1_avg"] else float("nan")
        return f"{name:<26}{m['params'] / 1e6:>8.2f}M{comp:>7.1f}x{f1s}{m['f1_avg']:>8.2f}{keep:>10.1f}%"

    lines.append(row("teacher" + (f" (= {t['member']})" if "member" in t else ""), t))
    for name, m in metrics.get("teachers", {}).items():
        lines.append(row(name, m))
    for name, m in students.items():
        lines.append(row(name, m))
        lines.append(" " * 43 + "".join(
            f"{100 * m['dev'][lang]['f1'] / t['dev'][lang]['f1'] if t['dev'][lang]['f1'] else 0:>7.1f}%" for lang in langs))
    return "\n".join(lines)

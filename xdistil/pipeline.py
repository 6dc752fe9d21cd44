"""The whole pipeline as resumable steps in one run directory.

    run_dir/
      config.json        resolved config
      teacher/           fine-tuned teacher (HF folder + xdistil_teacher.json)
      metrics.json       dev scores per step and language
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


def evaluate_dev(model_dir: Path, cfg: RunConfig, progress: bool = True) -> dict:
    from xdistil.data.sources import dev_sentences
    from xdistil.evaluate import evaluate_tagger
    from xdistil.taggers import load_tagger

    tagger = load_tagger(model_dir)
    res = {}
    for lang in cfg.data.languages:
        res[lang] = evaluate_tagger(tagger, dev_sentences(lang, cfg.data), cfg.teacher.eval_batch_size, progress)
    return {"params": tagger.param_count(), "dev": res,
            "f1_avg": sum(r["f1"] for r in res.values()) / len(res)}


def run(cfg: RunConfig, run_dir: str | Path, progress: bool = True) -> dict:
    """teacher -> evaluate (later steps: label, distill, export, bench, report)."""
    from xdistil.teachers import train_teacher

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = _log_to(run_dir)
    try:
        cfg_path = run_dir / "config.json"
        if cfg_path.exists() and json.loads(cfg_path.read_text()) != json.loads(json.dumps(to_dict(cfg))):
            log.warning("%s differs from the current config; steps already done are kept", cfg_path)
        save_json(to_dict(cfg), cfg_path)
        metrics_path = run_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        t0 = time.time()
        teacher_dir = train_teacher(cfg, run_dir / "teacher", progress)
        metrics.setdefault("timings", {})["teacher_s"] = round(time.time() - t0, 1)
        if "teacher" not in metrics:
            metrics["teacher"] = evaluate_dev(teacher_dir, cfg, progress)
            save_json(metrics, metrics_path)
        save_json(metrics, metrics_path)
        print(summary_table(metrics, cfg))
        return metrics
    finally:
        logging.getLogger().removeHandler(handler)


def summary_table(metrics: dict, cfg: RunConfig) -> str:
    t = metrics["teacher"]
    lines = [f"teacher {cfg.teacher.model}: {t['params'] / 1e6:.1f}M parameters",
             f"{'lang':<6}{'dev F1':>8}{'P':>8}{'R':>8}{'sentences':>11}"]
    for lang, r in t["dev"].items():
        lines.append(f"{lang:<6}{r['f1']:>8.2f}{r['precision']:>8.2f}{r['recall']:>8.2f}{r['sentences']:>11}")
    lines.append(f"{'avg':<6}{t['f1_avg']:>8.2f}")
    return "\n".join(lines)

"""Scale benchmark: label and distil transfer sets of growing size, report peak memory.

    python -m benchmarks.scale --teacher runs/bench/teacher --run runs/scale \
        --results benchmarks/results/scale --factors 1 10 [--config benchmarks/configs/scale.yaml]

The demo's transfer set is 12,000 rows (3 languages x (1,000 gold + 3,000 transfer)).
Factor F labels ``12,000 x F`` rows over six languages with plenty of WikiANN text
(train beyond the budget, unlabeled.tokens, tatoeba), then distils a BiLSTM for one epoch
on them (soft + hidden + gold losses, so every stored column is read): the run config is
``--config``, its ``transfer.limit`` set per size. Each step runs as its own ``xdistil``
process, polled every 50 ms for its resident memory:

- ``peak_rss_mb``: the process's peak resident set (``ru_maxrss``), file pages included;
- ``peak_anon_mb``: the peak of anonymous memory (``RssAnon``): what the process itself
  allocated. Pages of the memory-mapped transfer set that the kernel keeps cached count
  in the first and never in the second; they are reclaimable, so the second is the figure
  that must stay flat as the set grows.

Each size is a run folder (``--run/xF``: ``transfer/`` and ``distill/``, as ``xdistil run`` lays
them out; the teacher is given). Every step is resumable (labeling by chunk, distillation by
step), so rerunning the same command after an interruption continues; finished steps keep
their recorded figures.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from xdistil_export.atomic import remove_own

from benchmarks import preamble
from xdistil.config import load_yaml, save_json
from xdistil.provenance import cpu_model, provenance
from xdistil.report import Heading, Para, Table, write_page
from xdistil.run import RunDir
from xdistil.run.layout import read_distill_log, read_transfer_manifest
from xdistil.runner import outputs

CONFIG = Path(__file__).resolve().parent / "configs" / "scale.yaml"


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0


def measure(cmd: list[str], log_path: Path) -> dict:
    """Run ``cmd``; its wall time, peak RSS (ru_maxrss) and polled peak anonymous memory."""
    t0 = time.time()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        peak = {"anon": 0, "rss": 0}
        done = threading.Event()

        def poll():
            while not done.is_set():
                peak["anon"] = max(peak["anon"], _status_kb(proc.pid, "RssAnon"))
                peak["rss"] = max(peak["rss"], _status_kb(proc.pid, "VmRSS"))
                done.wait(0.05)

        th = threading.Thread(target=poll, daemon=True)
        th.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        th.join()
    if proc.returncode != 0:
        raise SystemExit(f"step failed (exit {proc.returncode}): {' '.join(cmd)}; see {log_path}")
    return {"seconds": round(time.time() - t0, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "peak_anon_mb": round(peak["anon"] / 1024, 1)}


def _dir_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def config_for(factor: float, config: str | Path = CONFIG) -> tuple[dict, int]:
    """The run config of size ``factor`` (its ``transfer.limit`` set) and the demo's rows."""
    cfg = load_yaml(config)
    demo_rows = cfg.pop("demo_rows")
    per_lang = round(demo_rows * factor / len(cfg["data"]["languages"]))
    cfg["transfer"]["limit"] = per_lang - cfg["data"]["labeled_budget"]
    return cfg, demo_rows


def run(teacher: Path, run_dir: Path, results: Path, factors: list[float], quiet: bool,
        config: str | Path = CONFIG) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / "scale.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    exe = [sys.executable, "-m", "xdistil.cli"]
    for factor in factors:
        key = f"x{factor:g}"
        d = run_dir / key
        d.mkdir(exist_ok=True)
        run = RunDir(d)
        cfg_path = d / "config.yaml"
        cfg, demo_rows = config_for(factor, config)
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        entry = state.setdefault(key, {"factor": factor})
        q = ["-q"] if quiet else []
        if "label" not in entry:
            if run.transfer_manifest.exists():  # labeled, figures lost: label again to measure
                remove_own(run.transfer)
            entry["label"] = measure(exe + ["label", "--config", str(cfg_path), "--teacher-dir", str(teacher),
                                            "--out", str(run.transfer)] + q, d / "label.log")
            manifest = read_transfer_manifest(run.transfer)
            entry["rows"] = sum(sum(c.values()) for c in manifest["counts"].values())
            entry["counts"] = manifest["counts"]
            entry["words"] = manifest["throughput"]["words_labeled_this_run"]
            entry["label"]["sentences_per_s"] = manifest["throughput"]["label_sentences_per_s"]
            entry["transfer_mb"] = _dir_mb(run.transfer)
            save_json(state, state_path)
        if "distill" not in entry:
            remove_own(run.distill)
            entry["distill"] = measure(exe + ["distill", "--config", str(cfg_path), "--teacher-dir", str(teacher),
                                              "--transfer", str(run.transfer), "--out", str(d), "--no-eval"] + q,
                                       d / "distill.log")
            metrics = read_distill_log(run.distill)
            step = metrics["stages"][0]["phases"][0]
            entry["distill"]["tokens_per_s"] = step["tokens_per_s"]
            entry["distill"]["mean_loss"] = step["history"][0]["mean_loss"]
            save_json(state, state_path)
        if "student" not in entry:  # the BiLSTM's vocabulary is the word pieces the set contains
            meta = json.loads((outputs(run).students[0] / "xdistil_student.json").read_text())
            entry["student"] = {"params": meta["extra"]["params"]["total"], "vocab": meta["config"]["vocab_size"]}
            save_json(state, state_path)
        print(f"{key}: {entry['rows']} rows, label {entry['label']}, distill {entry['distill']}", flush=True)
    command = "python -m benchmarks.scale " + " ".join(sys.argv[1:])
    summary = {
        "command": command,
        "teacher": str(teacher),
        "languages": cfg["data"]["languages"],
        "demo_rows": demo_rows,
        "runs": [state[f"x{f:g}"] for f in factors],
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "provenance": provenance(command),  # versions and the rest, as every other benchmark records them
    }
    save_json(summary, results / "summary.json")
    print(write_page(blocks(summary), results).read_text(encoding="utf-8"))
    return summary


def blocks(s: dict) -> list:
    """``results.md``: one row per size, then how memory grew from the smallest to the largest."""
    base = s["runs"][0]
    rows = []
    for r in s["runs"]:
        la, di = r["label"], r["distill"]
        rows.append([f"{r['rows'] / s['demo_rows']:.3g}x demo", f"{r['rows']:,}", f"{r['words']:,}",
                     f"{r['transfer_mb']:,.0f} MB", f"{la['seconds']:,.0f}", str(la["sentences_per_s"]),
                     f"{la['peak_anon_mb']:,.0f}", f"{la['peak_rss_mb']:,.0f}", f"{di['seconds']:,.0f}",
                     f"{di['tokens_per_s']:,.0f}", f"{di['peak_anon_mb']:,.0f}", f"{di['peak_rss_mb']:,.0f}",
                     f"{r['student']['vocab']:,}", f"{r['student']['params'] / 1e6:.2f}M"])
    out = [Heading(1, "Scale benchmark: peak memory as the transfer set grows"), Para(f"Command: `{s['command']}`"),
           Para(f"Teacher `{s['teacher']}` (e5-small, 12 x 384), languages {', '.join(s['languages'])}; "
                f"the demo's transfer set has {s['demo_rows']:,} rows. Each step is its own process; "
                "`anon` is its peak anonymous memory (what it allocated), `RSS` its peak resident set "
                "including cached pages of the memory-mapped transfer set (reclaimable)."),
           Table(["size", "rows", "words", "on disk", "label s", "label sent/s", "label anon MB", "label RSS MB",
                  "distill s", "distill tok/s", "distill anon MB", "distill RSS MB", "student vocab",
                  "student params"], rows, set(range(1, 14)))]
    if len(s["runs"]) > 1:
        top = s["runs"][-1]
        out.append(Para(
            f"From {base['rows']:,} to {top['rows']:,} rows ({top['rows'] / base['rows']:.1f}x): "
            f"labeling peak anonymous memory x{top['label']['peak_anon_mb'] / base['label']['peak_anon_mb']:.2f}, "
            f"distillation x{top['distill']['peak_anon_mb'] / base['distill']['peak_anon_mb']:.2f}; "
            f"the set on disk grows x{top['transfer_mb'] / base['transfer_mb']:.1f}. The rows are not what "
            "grows: labeling holds one chunk of sentences at a time and distillation reads the memory-mapped "
            "set in batches (the RSS - anon gap is its cached pages, reclaimable). Part of distillation's growth "
            "is the student itself: the BiLSTM's vocabulary is every word piece the set contains "
            f"({base['student']['vocab']:,} -> {top['student']['vocab']:,} pieces, "
            f"{base['student']['params'] / 1e6:.2f}M -> {top['student']['params'] / 1e6:.2f}M parameters, "
            "about 16 bytes each with gradients and Adam state). The rest of the growth of both steps is "
            "not broken down yet (candidates: allocator high-water marks of Arrow's gathers over more "
            "chunks, the per-row index lists, the de-duplication keys at about 100 bytes a sentence)."))
    return out + [Para(f"Machine: {s['machine']['cpu']}, {s['machine']['cores']} cores. Times depend on the machine; "
                       "the memory figures depend on it far less.")]


def main(argv=None) -> int:
    p = preamble.parser(__doc__, quiet=False)
    p.add_argument("--teacher", default="runs/bench/teacher", help="a fine-tuned teacher directory")
    p.add_argument("--run", default="runs/scale", help="working directory (transfer sets, students, logs)")
    p.add_argument("--results", default="benchmarks/results/scale", help="where summary.json/results.md go")
    p.add_argument("--config", default=str(CONFIG), help="the run config of every size (default: %(default)s)")
    p.add_argument("--factors", type=float, nargs="+", default=[1, 10],
                   help="transfer-set sizes as multiples of the demo's 12,000 rows")
    p.add_argument("-v", "--verbose", action="store_true", help="progress bars in the step logs")
    args = p.parse_args(argv)
    if not (Path(args.teacher) / "config.json").exists():
        raise SystemExit(f"error: {args.teacher} is not a teacher directory (train one with 'xdistil teacher "
                         "train' or run 'python -m benchmarks.staged')")
    run(Path(args.teacher), Path(args.run), Path(args.results), args.factors, not args.verbose, args.config)
    return 0


if __name__ == "__main__":
    sys.exit(main())

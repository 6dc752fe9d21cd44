"""All 41 languages (issue 15): one e5-small teacher, one BiLSTM student, per-language results.

    python -m benchmarks.languages41                       # the preset: 99 min on 2 CPU cores
    python -m benchmarks.languages41 --finetune-weakest 2  # + per-language fine-tuning of the 2 weakest
    python -m benchmarks.languages41 --quick               # tiny random models, 3 languages: seconds

The run goes through `xdistil.pipeline.run` (teacher -> label -> distill -> evaluate, every
step fingerprinted and resumable: rerun the same command after an interruption), then the
final student is exported to int8 ONNX (`xdistil.steps.export`) and scored through the
torch-free runtime (`xdistil_export.runtime.Predictor`). Writes into ``--results``
(default benchmarks/results/41-languages):

- ``summary.json``: a `xdistil.results.Summary` (one f1 per language per model row; the int8
  student its own row, ``"runtime": "onnx-int8"``), with per-language extras (dataset, dev
  entities, transfer-set size, vocabulary coverage) and the compression figures;
- ``results.md``: one row per language sorted by retention; the languages without labeled
  data here listed after the table ("no labeled data here: no F1");
- ``retention.png``: retention per language.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from benchmarks import preamble
from xdistil.config import RunConfig, apply_overrides, from_dict, load_yaml, to_dict
from xdistil.run import RunDir
from xdistil.run.layout import read_distill_log, read_transfer_manifest

PRESET = Path(__file__).resolve().parents[1] / "xdistil" / "presets" / "languages41.yaml"
RESULTS = Path("benchmarks/results/41-languages")
E5_SMALL_PARAMS = 117_500_000  # the reference of the >= 35x target (the teacher's own count is used when known)
MBERT_PARAMS = 177_000_000  # an mBERT-base-sized teacher, as in XtremeDistil's 35x
TARGET_RETENTION, FLOOR_RETENTION = 97.0, 90.0
# --finetune-weakest passes over a language whose dev set has fewer gold entities than this: its
# retention is noise (UNER sv: 23), so fine-tuning it measures nothing
FINETUNE_MIN_ENTITIES = 100
# --quick: a tiny random teacher over one language of each labeled dataset, plus one without
QUICK_LANGUAGES = ["de", "da", "lv"]
QUICK = {
    "data": {"labeled_budget": 60, "val_size": 20, "dev_limit": 40},
    "teacher": {"epochs": 1, "batch_size": 16, "lr": 3e-3, "max_length": 32, "freeze_embeddings": False,
                "min_steps": 40, "min_selection_f1": 0.0},
    "transfer": {"limit": 40, "layers": [1], "chunk_size": 50, "batch_size": 16},
    "student": {"embedding_dim": 8, "hidden_dim": 16, "num_layers": 1, "max_length": 32, "max_vocab": 300},
    "distill": {"stages": [{"name": "hard", "losses": {"hard": 1.0, "gold": 1.0}, "epochs": 1, "unfreeze": False},
                           {"name": "soft", "losses": {"soft": 1.0, "gold": 1.0}, "epochs": 1, "unfreeze": False}],
                "match": {"teacher_layer": 1}, "max_steps_per_epoch": 2},
    "precision": "fp32",
}
# per-language fine-tuning: soft targets + gold of one language, from the multilingual student
FINETUNE_STAGE = {"name": "finetune", "losses": {"soft": 1.0, "gold": 1.0}, "epochs": 2, "patience": 1,
                  "unfreeze": False, "batch_size": 64}


# ---- configs -------------------------------------------------------------------------------

def load_config(path: str | Path = PRESET, languages: list[str] | None = None,
                overrides: list[str] | None = None) -> RunConfig:
    """The preset (or ``path``) with ``KEY=VALUE`` overrides. ``languages``: only these; the ones
    without labeled data here go to the transfer set only (``transfer.languages``), as do the
    six of the registry when no languages are given and the config names none."""
    raw = apply_overrides(load_yaml(path), overrides or [])
    cfg = from_dict(RunConfig, raw)
    bare = without_labeled_data(cfg)
    if languages:
        raw = apply_overrides(raw, {"data.languages": [lang for lang in languages if lang not in bare]})
        only = [lang for lang in languages if lang in bare]
    else:
        only = bare
    if "languages" not in raw.get("transfer", {}) or languages:
        raw = apply_overrides(raw, {"transfer.languages": only})
    return from_dict(RunConfig, raw)


def quick_config(cfg: RunConfig, work: Path, languages: list[str] | None = None) -> RunConfig:
    """``cfg`` shrunk to seconds: tiny sizes and a tiny random teacher built in ``work``."""
    from benchmarks.grid import tiny_teacher

    labeled = [lang for lang in languages or QUICK_LANGUAGES if lang not in without_labeled_data(cfg)]
    raw = apply_overrides(to_dict(cfg), {**QUICK, "data": {**QUICK["data"], "languages": labeled}})
    small = from_dict(RunConfig, raw)
    raw["teacher"]["model"] = str(tiny_teacher(small, work / "tiny-teacher"))
    return from_dict(RunConfig, raw)


def with_overrides(cfg: RunConfig, overrides: dict) -> RunConfig:
    return from_dict(RunConfig, apply_overrides(to_dict(cfg), overrides))


def without_labeled_data(cfg: RunConfig) -> list[str]:
    """Registry languages with no labeled train file under the data root (bs ca cs mk sl sq on these
    machines); none without a data root (the hub has them all)."""
    from xdistil_languages import load_registry

    from xdistil.data.roots import resolve_data_root

    root = resolve_data_root(cfg.data.root)
    if root is None:  # no local data at all: every registry language comes from the hub
        return []
    return [code for code, lang in load_registry().items()
            if code not in cfg.data.files and lang.find("train", kind="labeled", data_root=root) is None]


def dataset_of(lang: str, cfg: RunConfig) -> str:
    """The labeled dataset a language is scored on (wikiann, uner, newsner, or user files)."""
    from xdistil_languages import get_language

    from xdistil.data.roots import resolve_data_root

    if lang in cfg.data.files:
        return "user files"
    return get_language(lang).labeled_source(resolve_data_root(cfg.data.root)) or "hub"


def tatoeba_sentences(lang: str, cfg: RunConfig) -> int:
    """Lines of the language's Tatoeba file here (0 when absent)."""
    import gzip

    from xdistil.data.sources import unlabeled_paths

    n = 0
    for path, fmt in unlabeled_paths(lang, cfg.data):
        if fmt == "raw":
            with gzip.open(path, "rt", encoding="utf-8") if str(path).endswith(".gz") else open(path) as f:
                n += sum(1 for line in f if line.strip())
    return n


# ---- the run -------------------------------------------------------------------------------

def int8_scores(student: Path, export_dir: Path, cfg: RunConfig, progress: bool, min_agreement: float | None) -> dict:
    """The final student as int8 ONNX, scored through the runtime: `evaluate_dev`'s shape.

    The export is a fingerprinted step; the scores are cached beside it by its digest."""
    from xdistil_export.atomic import write_json
    from xdistil_export.runtime import Predictor

    from xdistil import digests, steps
    from xdistil.evaluate import dev_sets, evaluate_tagger
    from xdistil.taggers import load_tagger

    kw = {"int8": True} if min_agreement is None else {"int8": True, "int8_min_agreement": min_agreement}
    steps.export(student, export_dir, **kw)
    cache = export_dir.parent / f"{export_dir.name}-scores.json"
    digest = digests.folder_digest(export_dir)
    if cache.exists() and (old := json.loads(cache.read_text()))["export"] == digest:
        return old["scores"]
    predictor = Predictor(export_dir, precision="int8")
    dev = dev_sets(cfg)
    res = {lang: evaluate_tagger(predictor, dev[lang], cfg.distill.eval_batch_size, progress)
           for lang in cfg.data.languages}
    scores = {"path": str(export_dir), "params": load_tagger(student).param_count(), "dev": res,
              "f1_avg": sum(r["f1"] for r in res.values()) / len(res)}
    write_json(cache, {"export": digest, "scores": scores})
    return scores


def finetune(cfg: RunConfig, lang: str, student: Path, run_dir: Path, progress: bool) -> dict:
    """Continue the multilingual ``student`` on one language's transfer rows (`distill.init_from`),
    on the run's teacher and transfer set, into the run folder ``finetune-LANG``: its dev scores
    (`evaluate_dev`) and the seconds it took."""
    from xdistil.evaluate import evaluate_dev
    from xdistil.runner import Runner

    one = with_overrides(cfg, {"data": {"languages": [lang]},
                               "distill": {"init_from": str(student), "stages": [dict(FINETUNE_STAGE)]},
                               "transfer": {"languages": []}})
    if cfg.distill.max_steps_per_epoch:  # --quick
        one = with_overrides(one, {"distill": {"stages": [{**FINETUNE_STAGE, "epochs": 1}]}})
    run = RunDir(run_dir / "run")
    tuned = Runner(one, RunDir(run_dir / f"finetune-{lang}"), given={"teacher": run.teacher, "label": run.transfer},
                   progress=progress).run(only=("distill",)).student
    log = read_distill_log(tuned)
    seconds = sum(step["seconds"] or 0 for st in log["stages"] for step in st["phases"])
    return {**evaluate_dev(tuned, one, progress), "seconds": round(seconds, 1)}


def finetune_candidates(order: list[str], entities: dict[str, int], n: int,
                        min_entities: int = FINETUNE_MIN_ENTITIES) -> tuple[list[str], list[str]]:
    """The ``n`` weakest languages of ``order`` (weakest first) with at least ``min_entities``
    gold entities in their dev set, and the languages passed over for having fewer."""
    few = [lang for lang in order if (entities.get(lang) or 0) < min_entities]
    return [lang for lang in order if lang not in few][:n], few


def run(cfg: RunConfig, run_dir: str | Path, results: str | Path = RESULTS, *, finetune_weakest: int = 0,
        progress: bool = True, command: str | None = None, int8_min_agreement: float | None = None,
        finetune_min_entities: int = FINETUNE_MIN_ENTITIES):
    """The run, the int8 export, optionally per-language fine-tuning; writes ``results``. The Summary."""
    from xdistil import pipeline
    from xdistil.provenance import provenance
    from xdistil.results import ModelScores, Provenance
    from xdistil.runner import outputs

    run_dir, results = Path(run_dir), Path(results)
    record = pipeline.run(cfg, run_dir / "run", progress=progress, command=command)
    got = outputs(run_dir / "run")
    if record.teacher is None or not got.students:
        raise RuntimeError(f"{run_dir / 'run'}: the run has no evaluated teacher and student (steps: {cfg.steps})")
    final = got.student
    s = pipeline.summary(record, cfg)
    student = s.model(final.name)
    int8 = int8_scores(final, run_dir / "export-int8", cfg, progress, int8_min_agreement)
    s.models.append(ModelScores.from_eval(f"{final.name}-int8", "student", int8, arch=cfg.student.arch,
                                          runtime="onnx-int8", stage=student.stage, stage_name=student.stage_name,
                                          evaluated_by="benchmarks.languages41"))
    teacher = s.teacher
    order = sorted(s.languages, key=lambda lang: student.retained(teacher, lang) or 0.0)

    entities = {lang: teacher.languages[lang].entities for lang in s.languages}
    tuned = {}
    picked, few = finetune_candidates(order, entities, finetune_weakest, finetune_min_entities)
    for lang in picked:
        t = finetune(cfg, lang, final, run_dir, progress)
        f1 = t["dev"][lang]["f1"]
        tuned[lang] = {"f1_before": student.f1[lang], "f1_after": f1, "lift": round(f1 - student.f1[lang], 2),
                       "retained_before": student.retained(teacher, lang),
                       "retained_after": 100 * f1 / teacher.f1[lang] if teacher.f1[lang] else None,
                       "seconds": t["seconds"], "extra_params": t["params"], "folder": t["path"]}

    manifest = read_transfer_manifest(got.transfer)
    meta = json.loads((final / "xdistil_student.json").read_text())
    vocab = meta.get("vocab") or {}
    missing = without_labeled_data(cfg)
    per_language = {
        lang: {"dataset": dataset_of(lang, cfg), "dev_entities": entities[lang],
               "dev_sentences": teacher.languages[lang].sentences,
               "transfer_sentences": sum(manifest["counts"].get(lang, {}).values()),
               "transfer_only_sentences": manifest["counts"].get(lang, {}).get("transfer", 0),
               "vocab": vocab.get("languages", {}).get(lang)} for lang in s.languages}
    no_f1 = {lang: {"tatoeba_sentences": tatoeba_sentences(lang, cfg),
                    "transfer_sentences": sum(manifest["counts"].get(lang, {}).values()),
                    "vocab": vocab.get("languages", {}).get(lang)} for lang in missing}
    compression = {"teacher_params": teacher.params, "student_params": student.params,
                   "vs_teacher": teacher.params / student.params, "vs_e5_small": E5_SMALL_PARAMS / student.params,
                   "vs_mbert_base": MBERT_PARAMS / student.params}
    extra = {"per_language": per_language, "no_labeled_data": no_f1, "compression": compression,
             "vocab": {k: v for k, v in vocab.items() if k != "languages"}, "finetune": tuned, "order": order,
             "finetune_passed_over": {lang: entities[lang] for lang in few} if finetune_weakest else {},
             "finetune_min_entities": finetune_min_entities,
             "targets": {"retention_avg": TARGET_RETENTION, "retention_min": FLOOR_RETENTION, "compression": 35.0}}
    s = dataclasses.replace(
        s, title="All 41 languages: one e5-small teacher, one BiLSTM student", headline=student.name, extra=extra,
        protocol={**s.protocol, "without_labeled_data": missing,
                  "uner": "Universal NER's OTH type is dropped (OTH -> O) for da sv hr sk",
                  "transfer": {**s.protocol["transfer"], "counts": manifest["counts"]}},
        provenance={**s.provenance, "benchmark": Provenance(**provenance(command))})
    results.mkdir(parents=True, exist_ok=True)
    s.write(results / "summary.json")
    plot_retention(s, results / "retention.png")
    from xdistil.report import write_page

    write_page(blocks(s), results)
    return s


# ---- rendering ---------------------------------------------------------------------------

def _int8_row(s):
    return next((m for m in s.models if m.runtime == "onnx-int8"), None)


def blocks(s) -> list:
    """``results.md`` from the Summary alone (`xdistil.report`'s block renderer)."""
    from xdistil.report import Heading, Image, Para, Table, num, params, pct, times

    t, st, q = s.teacher, s.model(s.headline), _int8_row(s)
    e, order, c = s.extra, s.extra["order"], s.extra["compression"]
    rows = []
    for lang in order:
        p, v = e["per_language"][lang], e["per_language"][lang].get("vocab") or {}
        rows.append([lang, p["dataset"], num(t.f1[lang]), num(st.f1[lang]), num(q.f1[lang]) if q else "",
                     pct(st.retained(t, lang)), str(p["dev_entities"]), str(p["transfer_sentences"]),
                     num(v.get("teacher_pieces_per_word")), num(v.get("student_pieces_per_word"))])
    kept = [st.retained(t, lang) or 0.0 for lang in order]
    out = [
        Heading(1, s.title),
        Para(f"Command: `{(s.provenance.get('benchmark') or s.provenance.get('run')).command}`"),
        Para("Protocol: " + json.dumps({k: v for k, v in s.protocol.items() if k != "transfer"})),
        Para(f"Teacher {params(t.params)}, student `{st.name}` {params(st.params)}: {times(c['vs_teacher'])} "
             f"smaller than the teacher ({times(c['vs_e5_small'])} against e5-small's 117.5M, "
             f"{times(c['vs_mbert_base'])} against an mBERT-base-sized 177M teacher). "
             f"Average retention {pct(st.retained(t))} (target {TARGET_RETENTION:.0f} %), lowest "
             f"{pct(min(kept) if kept else None)} (floor {FLOOR_RETENTION:.0f} %); int8 ONNX costs "
             f"{num(st.f1_avg - q.f1_avg) if q else 'n/a'} F1 on average."),
        Table(["language", "data", "teacher F1", "student F1", "int8 F1", "% retained", "dev entities",
               "transfer set", "pieces/word teacher", "pieces/word student"], rows, set(range(2, 10))),
    ]
    if e["no_labeled_data"]:
        def six(lang: str, d: dict) -> str:
            v = d.get("vocab") or {}
            pieces = (f"; pieces/word {num(v['teacher_pieces_per_word'])} teacher, "
                      f"{num(v['student_pieces_per_word'])} student") if v else ""
            return f"{lang} ({d['transfer_sentences']} transfer sentences of {d['tatoeba_sentences']} Tatoeba{pieces})"

        used = any(d["transfer_sentences"] for d in e["no_labeled_data"].values())
        out.append(Para("No labeled data here: no F1 for " + ", ".join(
            six(lang, d) for lang, d in e["no_labeled_data"].items()) + (
            ". Their text is in the transfer set (transfer.languages), labeled zero-shot by the multilingual "
            "teacher." if used else ". Their text is not in this transfer set.")))
    if e["finetune"]:
        out.append(Heading(2, "Per-language fine-tuning of the weakest languages"))
        out.append(Table(["language", "student F1", "fine-tuned F1", "lift", "% retained before", "after",
                          "seconds", "extra params"],
                         [[lang, num(f["f1_before"]), num(f["f1_after"]), num(f["lift"]), pct(f["retained_before"]),
                           pct(f["retained_after"]), num(f["seconds"], 1), params(f["extra_params"])]
                          for lang, f in e["finetune"].items()], set(range(1, 8))))
        passed = e.get("finetune_passed_over") or {}
        out.append(Para("Each fine-tuned student is a separate model of the same size, continued from the "
                        "multilingual one (`distill.init_from`) on that language's transfer rows only."
                        + (f" Passed over, with fewer than {e['finetune_min_entities']} gold entities in their dev "
                           "set (a retention too noisy to rank or to measure a lift): "
                           + ", ".join(f"{lang} ({n})" for lang, n in passed.items()) + "." if passed else "")))
    out.append(Image("retention.png", "retention per language"))
    out.append(Para("Timings (seconds): " + json.dumps(s.timings)))
    return out


def plot_retention(s, path: Path) -> None:
    import io

    from matplotlib.figure import Figure
    from xdistil_export.atomic import write_bytes

    t, st = s.teacher, s.model(s.headline)
    order = s.extra["order"]
    fig = Figure(figsize=(max(6.0, 0.28 * len(order) + 2), 4.0), dpi=110)
    ax = fig.add_subplot()
    ax.bar(range(len(order)), [st.retained(t, lang) or 0.0 for lang in order], color="#4c72b0")
    for y, style in ((TARGET_RETENTION, "--"), (FLOOR_RETENTION, ":")):
        ax.axhline(y, color="black", linestyle=style, linewidth=0.8)
    ax.set_xticks(range(len(order)), order, rotation=90, fontsize=8)
    ax.set_ylabel("% of the teacher's dev F1")
    ax.set_title(f"{st.name} vs teacher, per language (lines: {TARGET_RETENTION:.0f} % target, "
                 f"{FLOOR_RETENTION:.0f} % floor)", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    write_bytes(path, buf.getvalue())


# ---- command line --------------------------------------------------------------------------

def main(argv=None) -> int:
    p = preamble.parser(__doc__)
    p.add_argument("--config", default=str(PRESET), help="default: xdistil/presets/languages41.yaml")
    p.add_argument("--languages", nargs="+", help="only these languages (default: the config's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set transfer.limit=1000 (repeatable)")
    p.add_argument("--run", type=Path, default=None, help="working folder (default runs/languages41[-quick])")
    p.add_argument("--results", type=Path, default=None, help=f"default {RESULTS} (--quick: <run>/results)")
    p.add_argument("--finetune-weakest", type=int, default=0, metavar="N",
                   help="fine-tune the multilingual student on each of the N weakest languages")
    p.add_argument("--finetune-min-entities", type=int, default=FINETUNE_MIN_ENTITIES, metavar="N",
                   help="--finetune-weakest passes over languages with fewer gold entities than this in their dev "
                        f"set: their retention is noise (default {FINETUNE_MIN_ENTITIES}; UNER sv has 23)")
    p.add_argument("--quick", action="store_true", help="tiny random models over a few languages: seconds")
    args = p.parse_args(argv)
    command = preamble.start("languages41", argv, quiet=True)  # it reports through its results and progress bars
    from xdistil.config import ConfigError

    run_dir = args.run or Path("runs/languages41-quick" if args.quick else "runs/languages41")
    results = args.results or (run_dir / "results" if args.quick else RESULTS)
    try:
        cfg = load_config(args.config, args.languages)
        if args.quick:
            cfg = quick_config(cfg, run_dir, args.languages)
        cfg = from_dict(RunConfig, apply_overrides(to_dict(cfg), args.overrides))  # after --quick's sizes
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # a barely trained --quick student has near-tied logits: int8 may flip some tags
    run(cfg, run_dir, results, finetune_weakest=args.finetune_weakest, progress=not args.quiet, command=command,
        int8_min_agreement=0.0 if args.quick else None, finetune_min_entities=args.finetune_min_entities)
    print((results / "results.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

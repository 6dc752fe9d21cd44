"""The demo recipe's grid (issue 33), in views: model selection, distillation throughput, the
transfer-set curves and fp32 against bf16.

    python -m benchmarks.demo_grid selection       # gold / teacher-margin / the recipe, 3 seeds
    python -m benchmarks.demo_grid distill-speed   # the recipe / batch 256, 2 seeds
    python -m benchmarks.demo_grid transfer-size   # 1x / 3x / 3x at equal steps / 10x augmented
    python -m benchmarks.demo_grid precision       # fp32 / bf16, one seed
    python -m benchmarks.demo_grid equal-time      # 3x / 10x augmented in 3x's CPU minutes (a transfer-size page)
        [--variants ...] [--seeds ...] [--run runs/demo-grid] [--quick] [-q]

Another grid's views run the same way (``--config``): sentences-fair.yaml's ``transfer-size``
puts the in-domain group's points beside the control's (its own page, ``in-domain.md``), and
its ``in-domain-budgets`` the same group's text at the preset's optimizer steps
(``in-domain-budgets.md``).

The variants, seeds and views are data: ``benchmarks/configs/demo_grid.yaml``, run by the grid
runner (`benchmarks.grid`), so a cell shared by two views (the recipe itself) is distilled once.
Each view writes its results (its ``results`` folder in the YAML; ``--quick``: under the run
folder): ``selection`` the ``selection`` list of ``transfer-size/summary.json`` and
``selection.md``; ``distill-speed`` its ``summary.json`` and ``results.md``; ``transfer-size``
the ``rows`` of ``transfer-size/summary.json`` (the issue's schema), ``results.md`` and two plots;
``precision`` ``precision.md``. Other keys of a summary.json (written by other benchmarks) are kept.
A view's ``kind`` (default: its name) says which of these it is, so a view ``equal-time`` of kind
``transfer-size`` writes its own page (``page``) and its variants' rows beside the curve's.

A run folder does not outlive its session: every finished cell is also recorded in
``benchmarks/results/cells/GRID.json.gz`` (commit it; `grid.Carry`), and a later session on the
same kind of CPU takes the recorded cells of the same config and teacher instead of distilling
them again, so a view's seeds can be run over several sessions (``--no-carry``: build them all).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

from xdistil_export.atomic import write_json, write_text

from benchmarks import grid, preamble
from xdistil.provenance import cpu_name

CONFIG = Path(__file__).resolve().parent / "configs" / "demo_grid.yaml"


def split_of(key: str) -> tuple[str, str]:
    """(language, split) of a score key: "de:dev" -> (de, dev), "lv:newsner/lv/test" -> (lv, test)."""
    lang, test = key.split(":", 1)
    return lang, test.rsplit("/", 1)[-1]


def f1s(scores: dict) -> dict[str, dict[str, float]]:
    """Split (dev, test) -> language -> F1, plus "avg" over the languages."""
    out: dict[str, dict[str, float]] = {}
    for key, s in scores.items():
        lang, test = split_of(key)
        out.setdefault(test, {})[lang] = float(s["f1"])
    return {t: {**v, "avg": statistics.fmean(v.values())} for t, v in out.items()}


def cells(g: grid.Grid, done: dict, variants: list[str], seeds: list, group: str | None = None) -> list[dict]:
    """Every finished cell of ``variants`` x ``seeds`` in ``group`` (default: the grid's first):
    its record, F1 and retention per test. A variant that is another's seed (``seed_of``) counts
    as that variant."""
    entry = done[group or next(iter(g.groups))]
    teacher = f1s(entry["teacher"])
    out = []
    for name in variants:
        for seed in seeds:
            c = entry["variants"].get(grid.cell_name(name, seed))
            if c is not None:
                f1 = f1s(c["scores"])
                out.append({**c, "variant": g.variants[name].get("seed_of") or name, "f1": f1, "teacher_f1": teacher,
                            "teacher_scores": entry["teacher"], "retention": {t: ratio(f1[t]["avg"], teacher[t]["avg"]) for t in f1}})
    return out


def ratio(student: float, teacher: float) -> float:
    """Retention, student / teacher F1; NaN where the teacher finds nothing (--quick's tiny one):
    undefined, not a division error."""
    return student / teacher if teacher else math.nan


def spread(xs: list[float]) -> str:
    return f"{100 * statistics.fmean(xs):.1f} % ({100 * (max(xs) - min(xs)):.1f})"


# ---- views --------------------------------------------------------------------------------------


def selection(rows: list[dict], out: Path, command: str, machine: dict) -> str:
    items = []
    for r in rows:
        last = _last_stage(r)
        items.append({"method": r["variant"], "seed": r["seed"], "retention_dev": r["retention"]["dev"],
                      "retention_test": r["retention"]["test"], "retention": r["retention"]["test"],
                      "student_f1": r["f1"], "distill_s": r["distill_s"], **last})
    teacher = rows[0]["teacher_f1"] if rows else {}
    update_summary(out / "summary.json", {"selection": items, "selection_protocol": {
        "teacher_f1": teacher, "slices": {"dev": [0, 500], "test": [500, 1000]}, "machine": machine,
        "command": command}})
    lines = [f"# Model selection over seeds (the demo recipe, {cpu_name(machine)}, {machine['threads']} threads)", "",
             f"Command: `{command}`", "", _teacher_line(teacher), "",
             "| method | seed | last stage: epochs run, weights kept | dev retention | test retention | training s |",
             "|---|---:|---|---:|---:|---:|"]
    for i in items:
        kept = "the stage before's" if i["last_stage_kept_start"] else "its own best"
        lines.append(f"| {i['method']} | {i['seed']} | {i['last_stage_epochs']}, {kept} | "
                     f"{100 * i['retention_dev']:.1f} % | {100 * i['retention_test']:.1f} % | {i['distill_s']:.0f} |")
    lines += ["", "| method | seeds | dev mean (spread) | test mean (spread) | dev: worst - best seed [95 % CI] | "
              "test: worst - best seed [95 % CI] |", "|---|---:|---:|---:|---:|---:|"]
    for m in dict.fromkeys(i["method"] for i in items):
        mine = [i for i in items if i["method"] == m]
        gaps = [seed_gap([r for r in rows if r["variant"] == m], part) for part in ("dev", "test")]
        lines.append(f"| {m} | {len(mine)} | {spread([i['retention_dev'] for i in mine])} | "
                     f"{spread([i['retention_test'] for i in mine])} | "
                     + " | ".join("–" if g is None else f"{g['diff']:+.2f} [{g['low']:+.2f}, {g['high']:+.2f}]"
                                  for g in gaps) + " |")
    lines += ["", "Spread = max - min of the final retention over the seeds, in points (target: <= 1). Worst - best "
              "seed: the same gap as a paired bootstrap over the split's sentences (`grid.bootstrap`): how far the two "
              "seeds' students differ on sentences like these, not only on these. Training s: "
              "the stages' fits summed (selection evaluations included); not a speed comparison, since cells may have run "
              "beside other jobs (the distill-speed view times them alone).", ""]
    return _page(out / "selection.md", lines)


def distill_speed(rows: list[dict], out: Path, command: str, machine: dict) -> str:
    variants = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        sents = [sum(s["steps"] * s["batch_size"] for s in r["stages"]) for r in mine]
        secs = [sum(s["seconds"] for s in r["stages"]) for r in mine]
        sel = [sum(s["select_s"] for s in r["stages"]) if _times_selection(r) else None for r in mine]
        timed = [(n, s, x) for n, s, x in zip(sents, secs, sel, strict=True) if x is not None]
        variants.append({
            "variant": name, "seeds": [r["seed"] for r in mine],
            "sentences_per_s": round(statistics.fmean(n / s for n, s in zip(sents, secs, strict=True)), 1),
            # None where no cell's fits timed their selection (fits before that field)
            "train_sentences_per_s": round(statistics.fmean(n / (s - x) for n, s, x in timed), 1) if timed else None,
            "select_share": round(statistics.fmean(x / s for _, s, x in timed), 3) if timed else None,
            "fit_s": round(statistics.fmean(secs), 1),
            "retention_dev_by_seed": [round(r["retention"]["dev"], 4) for r in mine],
            "retention_test_by_seed": [round(r["retention"]["test"], 4) for r in mine],
            "stages": {r["seed"]: r["stages"] for r in mine}})
    for v in variants[1:]:  # equal F1? the retention against the first variant's, with its interval
        v["vs_" + variants[0]["variant"]] = {t: difference(rows, v["variant"], variants[0]["variant"], t)
                                             for t in ("dev", "test")}
    write_json(out / "summary.json", {"variants": variants, "teacher_f1": rows[0]["teacher_f1"] if rows else {},
                                      "machine": machine, "command": command})
    lines = [f"# Distillation throughput ({cpu_name(machine)}, {machine['threads']} threads)", "", f"Command: `{command}`",
             "", "| variant | seeds | sentences/s (fit) | without selection | selection share | fit s | "
             "dev retention (by seed) | test retention (by seed) | test: points vs the first [95 % CI] |",
             "|---|---|---:|---:|---:|---:|---|---|---:|"]
    base = variants[0]["variant"] if variants else None
    for v in variants:
        ratio = f" ({v['sentences_per_s'] / variants[0]['sentences_per_s']:.2f}x)" if v is not variants[0] else ""
        ci = grid.interval(v.get("vs_" + base, {}).get("test"))
        lines.append(f"| {v['variant']} | {', '.join(map(str, v['seeds']))} | {v['sentences_per_s']:.0f}{ratio} | "
                     + ("n/a | n/a" if v["select_share"] is None else
                        f"{v['train_sentences_per_s']:.0f} | {100 * v['select_share']:.1f} %") + f" | {v['fit_s']:.0f} | "
                     + " | ".join(", ".join(f"{100 * x:.1f}" for x in v[f"retention_{t}_by_seed"]) for t in ("dev", "test"))
                     + f" | {ci} |")
    lines += ["", f"Points vs {base}: the difference in test retention over the seeds both ran, with a paired bootstrap "
              "95 % interval over test sentences (`benchmarks.grid.bootstrap`); * marks one that excludes 0. Sentences/s: "
              "the stages' training sentences over their fits' seconds, each cell timed alone on the machine above "
              "(cells linked from earlier runs keep that run's seconds).", ""]
    return _page(out / "results.md", lines)


def transfer_size(rows: list[dict], out: Path, command: str, machine: dict, g: grid.Grid, group: str,
                  page: str = "results") -> str:
    """The issue's rows (one per cell, language and test) and the curves, averaged over seeds.
    Every row and difference names its group and page; this page's replace its own in the
    summary, other pages' stay (a page of a few points beside the curve, from another run, keeps
    its own cells' rows: a variant on two pages has rows on both). The page is
    ``{page}.md`` with its plots (``curve.png`` and ``minutes.png``, prefixed ``{page}-`` for any
    page but ``results``)."""
    table = []
    for r in rows:
        budget = g.budget(r["variant"])[0]
        cpu = (r["label_s"] or 0) + r["distill_s"]
        for test, f1 in r["f1"].items():
            for lang, s in f1.items():
                if lang != "avg":
                    t = r["teacher_f1"][test][lang]
                    table.append({"group": group, "page": page, "variant": r["variant"], "language": lang, "test": test,
                                  "domain": g.groups[group].get("domain", "in"),
                                  "transfer_sentences": r["transfer_per_language"][lang], "budget": budget,
                                  "seed": r["seed"], "teacher_f1": round(t, 2), "student_f1": round(s, 2),
                                  "retention": grid.ratio(s, t), "cpu_s": round(cpu, 1)})
    old = _read(out / "summary.json")
    key = group if page == "results" else f"{group}/{page}"  # this page's rows replace its own, others stay
    protocol = {**(old.get("rows_protocol") or {}), key: {"command": command, "machine": machine}}
    update_summary(out / "summary.json", {"rows": [r for r in old.get("rows", []) if _page_of(r) != (group, page)]
                                          + table, "rows_protocol": protocol})
    points = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        budget, of = g.budget(name)
        points.append({"variant": name, "budget": budget, "of": of,
                       "sentences": statistics.fmean(statistics.fmean(r["transfer_per_language"].values()) for r in mine),
                       "seeds": [r["seed"] for r in mine], "dev": [r["retention"]["dev"] for r in mine],
                       "test": [r["retention"]["test"] for r in mine],
                       "label_min": statistics.fmean((r["label_s"] or 0) / 60 for r in mine),
                       "distill_min": statistics.fmean(r["distill_s"] / 60 for r in mine)})
    base = points[0]["variant"] if points else None
    for p in points[1:]:
        p["vs_" + base] = {t: difference(rows, p["variant"], base, t) for t in ("dev", "test")}
    kept = [d for d in old.get("differences", []) if _page_of(d) != (group, page)]
    update_summary(out / "summary.json", {"differences": kept + [
        {"group": group, "page": page, "variant": p["variant"], "against": base, **p["vs_" + base]}
        for p in points[1:]]})
    prefix = "" if page == "results" else f"{page}-"
    _plot(points, out, prefix)
    lines = [f"# Transfer-set size: retention against distinct teacher-labeled sentences ({cpu_name(machine)}, "
             f"{machine['threads']} threads)", "", f"Command: `{command}`", "",
             _teacher_line(rows[0]["teacher_f1"]) if group == "control" else _group_line(rows[0], group), "",
             "| variant | budget | transfer sentences a language | seeds | dev retention (spread) | "
             f"test retention (spread) | test: points vs {base} [95 % CI] | labeling min | distillation min |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for p in points:
        ci = grid.interval(p.get("vs_" + base, {}).get("test"))
        budget = p["budget"] + (f" of {p['of']}" if p["of"] else "")
        lines.append(f"| {p['variant']} | {budget} | {p['sentences']:,.0f} | {', '.join(map(str, p['seeds']))} | "
                     f"{spread(p['dev'])} | {spread(p['test'])} | {ci} | {p['label_min']:.1f} | {p['distill_min']:.1f} |")
    lines += ["", f"Points vs {base}: the difference in test retention (averaged over the seeds both ran, then over "
              "the languages) with a paired bootstrap 95 % interval over test sentences (`benchmarks.grid.bootstrap`, "
              "1,000 samples); * marks an interval that excludes 0, the only differences counted as a lever's.",
              "", "Budget *epochs*: the recipe's epochs, so the optimizer steps grow with the data; *steps of X*: every "
              "stage's epochs scaled so that the student takes variant X's optimizer steps (`steps_of`); *wall of X*: "
              "scaled so that labeling + distillation take X's CPU seconds, this transfer set's own labeling "
              "first (`wall_of`; the distillation seconds at X's rows a second, so the minutes show how close). "
              "Minutes are each cell's own (labeling: the transfer set's, shared by the cells that use it).",
              "", f"![retention against transfer sentences]({prefix}curve.png)", "",
              f"![retention against CPU minutes]({prefix}minutes.png)", ""]
    return _page(out / f"{page}.md", lines)


def _page_of(row: dict) -> tuple[str, str]:
    """(group, page) of a summary row or difference: the page that wrote it (``results`` where
    a row predates pages)."""
    group = row.get("group", "control")
    return group, row.get("page") or "results"


def seed_gap(rows: list[dict], test: str) -> dict | None:
    """The worst seed's student against the best seed's on ``test`` (rows of one variant),
    with its paired bootstrap interval; None with fewer than two seeds."""
    if len(rows) < 2:
        return None
    worst, best = sorted(rows, key=lambda r: r["retention"][test])[:: len(rows) - 1]
    keys = [k for k in best["scores"] if split_of(k)[1] == test]
    return grid.bootstrap({k: (best["teacher_scores"][k]["counts"], [worst["scores"][k]["counts"]],
                               [best["scores"][k]["counts"]]) for k in keys})


def difference(rows: list[dict], a: str, b: str, test: str) -> dict:
    """Variant ``a`` against ``b`` on ``test`` over the seeds both ran: `grid.bootstrap`."""
    by = {(r["variant"], r["seed"]): r for r in rows}
    seeds = sorted({s for v, s in by if v == a} & {s for v, s in by if v == b})
    keys = [k for k in by[(a, seeds[0])]["scores"] if split_of(k)[1] == test]
    return grid.bootstrap({k: (by[(a, seeds[0])]["teacher_scores"][k]["counts"],
                               [by[(a, s)]["scores"][k]["counts"] for s in seeds],
                               [by[(b, s)]["scores"][k]["counts"] for s in seeds]) for k in keys})


def precision(rows: list[dict], out: Path, command: str, machine: dict) -> str:
    lines = [f"# fp32 against bf16, the demo recipe ({cpu_name(machine)}, {machine['threads']} threads)", "",
             f"Command: `{command}`", "", "| variant | seed | dev retention | test retention | distillation s |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['variant']} | {r['seed']} | {100 * r['retention']['dev']:.1f} % | "
              f"{100 * r['retention']['test']:.1f} % | {r['distill_s']:.0f} |" for r in rows]
    return _page(out / "precision.md", lines)


def _plot(points: list[dict], out: Path, prefix: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # one line per budget: the recipe's epochs, and each fixed budget with the variant it is taken from
    series = {"epochs (the steps grow with the data)": [p for p in points if p["budget"] == "epochs"]}
    what = {"steps": "the optimizer steps", "wall": "the CPU seconds"}
    for budget, base in dict.fromkeys((p["budget"], p["of"]) for p in points if p["of"]):
        series[f"{what[budget]} of {base}"] = [p for p in points if p["variant"] == base
                                               or (p["budget"], p["of"]) == (budget, base)]
    for x, name, label in ((lambda p: p["sentences"], "curve.png", "distinct transfer sentences a language"),
                           (lambda p: p["label_min"] + p["distill_min"], "minutes.png", "CPU minutes (labeling + distillation)")):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for (budget, ps), marker in zip(series.items(), ("o-", "s--", "^:", "d-."), strict=False):
            ps = sorted(ps, key=x)
            if ps:
                ax.errorbar([x(p) for p in ps], [100 * statistics.fmean(p["test"]) for p in ps],
                            yerr=[[100 * (statistics.fmean(p["test"]) - min(p["test"])) for p in ps],
                                  [100 * (max(p["test"]) - statistics.fmean(p["test"])) for p in ps]],
                            fmt=marker, capsize=3, label=f"budget: {budget}")
        for p in points:
            ax.annotate(p["variant"], (x(p), 100 * statistics.fmean(p["test"])), fontsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel("test retention, % of the teacher (seed range)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{prefix}{name}", dpi=110)
        plt.close(fig)


def _log(r: dict) -> dict:
    """The cell's distillation log: in its record (cells since the carry, `grid.Carry`), else beside its student."""
    from xdistil.run.layout import read_distill_log

    return r.get("log") or read_distill_log(r["student_path"])


def _times_selection(r: dict) -> bool:
    """Whether the cell's fits recorded their selection seconds (``select_s``: fits since issue 33 step 1)."""
    return all("select_s" in ph for st in _log(r)["stages"] for ph in st["phases"])


def _last_stage(r: dict) -> dict:
    last = _log(r)["stages"][-1]["phases"][-1]
    return {"last_stage_epochs": len(last["history"]), "last_stage_kept_start": last["best_epoch"] == 0}


def _teacher_line(t: dict) -> str:
    return (f"Teacher average F1: dev {t['dev']['avg']:.2f}, test {t['test']['avg']:.2f} (dev = WikiANN dev sentences "
            "0-499 a language, test = 500-999; de ar hi).") if t else ""


def _group_line(row: dict, group: str) -> str:
    t = row["teacher_f1"]
    return (f"Group {group}: teacher average F1 " + ", ".join(f"{test} {v['avg']:.2f}" for test, v in t.items())
            + " over " + " ".join(k for k in next(iter(t.values())) if k != "avg") + ". Retention here, as for the "
            "control: the student's F1 averaged over the languages / the teacher's, every test counted (the sentence "
            "benchmark's pages average each test's ratio and leave out tests with too few gold entities, so their "
            "figures differ by tenths of a point).")


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def update_summary(path: Path, changes: dict) -> None:
    """Set ``changes`` in the summary.json at ``path``, keeping what other benchmarks wrote there."""
    summary = _read(path)
    summary.update(changes)
    for key in ("rows", "selection", "labeling", "peer"):
        summary.setdefault(key, [])
    write_json(path, summary)


def _page(path: Path, lines: list[str]) -> str:
    text = "\n".join(lines) + "\n"
    write_text(path, text)
    return text


VIEWS = {"selection": selection, "distill-speed": distill_speed, "transfer-size": transfer_size,
         "precision": precision}


def main(argv=None) -> int:
    p = preamble.parser(__doc__)
    p.add_argument("view", help="a view of --config's YAML (the demo grid's: "
                   + ", ".join(grid.Grid.load(CONFIG).keys["views"]) + ")"
                   + " (a view's 'kind' names which of " + ", ".join(VIEWS) + " it is; default: its name)")
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--run", type=Path, default=Path("runs/demo-grid"))
    p.add_argument("--variants", nargs="+", help="only these of the view's")
    p.add_argument("--seeds", nargs="+", type=int, help="only these of the view's")
    p.add_argument("--reuse", nargs="*", type=Path, default=[], help="more runs to link finished steps from")
    p.add_argument("--quick", action="store_true", help="tiny random models, a few sentences: a smoke test")
    p.add_argument("--results", type=Path, help="instead of the view's results folder")
    grid.carry_arguments(p)
    args = p.parse_args(argv)
    command = preamble.start("demo_grid", argv, args.quiet)
    g = grid.Grid.load(args.config)
    views = g.keys.get("views") or {}
    if args.view not in views:
        p.error(f"{args.config} has no view {args.view!r}; it has: {', '.join(views) or 'none'}")
    view = views[args.view]
    kind = view.get("kind") or args.view
    if kind not in VIEWS:
        p.error(f"view {args.view!r}: kind {kind!r} is not one of {', '.join(VIEWS)}")
    variants = args.variants or view["variants"]
    seeds = args.seeds or view.get("seeds") or g.seeds
    groups = [view["group"]] if view.get("group") else None
    done = grid.run(g, args.run, variants, groups, args.quick, not args.quiet, command, args.reuse, seeds,
                    grid.carry_of(args, args.config))
    out = args.results or (args.run / "results" if args.quick else Path(view["results"]))
    out.mkdir(parents=True, exist_ok=True)
    from xdistil.provenance import machine, usable_cpus

    group = view.get("group") or next(iter(g.groups))
    rows = cells(g, done, variants, seeds, group)
    extra = (g, group, view.get("page") or "results") if kind == "transfer-size" else ()
    print(VIEWS[kind](rows, out, command, machine(usable_cpus()), *extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sentence-level benchmark (issue 23): where does a >= 35x student lose its teacher on real sentences?

    python -m benchmarks.sentences [--groups in out control] [--variants baseline shape ...] \
        [--config benchmarks/configs/sentences-full.yaml] [--run runs/sentences-full] \
        [--results benchmarks/results/sentences] [--quick] [-q]
    python -m benchmarks.sentences --refresh [--results ...]   # rewrite the results, run nothing

The default config runs at the 41-language preset's sizes; ``benchmarks/configs/sentences.yaml``
is the small-data screen (its results: ``benchmarks/results/sentences/screen``).

Three *groups*, each one teacher fine-tuned on its languages and one set of tests:

- ``in``: the sentence-level corpora (news NER lv no, UNER da hr sk sv): teacher and students
  trained, distilled and scored on their own corpus, on its dev and test splits (tune on dev,
  report test);
- ``out``: a teacher trained on WikiANN en and pt, no UNER text anywhere (unless a variant
  adds it), scored on UNER en and pt dev/test (OTH -> O);
- ``control`` (``control: true``): WikiANN de ar hi dev, to show that fragments do not get worse.

*Variants* are lever settings, each a config override (`xdistil.config.apply_overrides`) of
the group's config; a variant's ``groups: {<group>: {...}}`` adds overrides for one group only
(e.g. a vocabulary cap that scales with the group's languages). The levers are documented
config keys: ``student.factor_dim``, ``shape_dim`` and ``ngram_dim`` (`xdistil.students.bilstm`),
``student.max_vocab``, ``student.embedding_dim`` / ``hidden_dim``, ``distill.match`` with
``transfer.layers`` (which teacher layer the hidden loss matches), the stage list (loss
weights, soft epochs), ``transfer.sources`` / ``extra_sources`` / ``limit`` (transfer text)
and ``student.max_length`` (windows).

The grid (groups, variants, seeds) runs through `benchmarks.grid`: one teacher per group for
all variants, one transfer set per distinct transfer section, scores cached beside the models,
and ``done.json`` records each finished (group, variant), so the benchmark runs in pieces (one
group or one variant per invocation) and every invocation rewrites the results from everything
finished so far. ``--quick`` runs the same on tiny random models (seconds; numbers mean
nothing): the test of this script.

Writes ``summary.json``, exactly::

    {"chosen": "<variant>" | null, "compression": <teacher params / chosen student params> | null,
     "rows": [{"variant", "language", "test", "domain": "in" | "out",
               "teacher_f1", "student_f1", "retention"}]}

(retention = student F1 / teacher F1 on the same test, a fraction; the control group's rows
are domain "in"), ``details.json`` (per entity type, parameters, seconds, protocol,
provenance) and ``results.md``. Nothing is chosen (null) where no group steers (only a control
or groups whose teacher is under ``steer_min_teacher_f1``). The chosen variant is the one with the best mean retention on
the sentence-level *dev* rows (in and out of domain, each test's retention averaged over the
variant's seeds) among those at >= 35x compression measured in every sentence-level group with
as many seeds as the most-measured variant there; tests
with fewer gold entities than ``min_entities`` (sv dev has 10 in its first 300 sentences) are
reported but left out of the verdicts and the choice.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from xdistil_export.atomic import write_json

from benchmarks import grid, preamble
from xdistil.provenance import provenance
from xdistil.report import Heading, Para, Table, num, pct, write_page

FORMAT = "xdistil-sentences/1"
# Issue 23's targets.
TARGET_IN_AVG, TARGET_IN_MIN, TARGET_OUT, TARGET_ORG, TARGET_COMPRESSION = 0.95, 0.93, 0.90, 0.80, 35.0


def load(config: str | Path | dict) -> grid.Grid:
    g = grid.Grid.load(config)
    if set(g.groups) == {"all"}:
        raise ValueError("sentences config: needs groups (name -> {domain, config, tests})")
    return g


def bench_of(g: grid.Grid) -> dict:
    """The grid as the results are built from it: groups, variants and the other keys."""
    return {"groups": g.groups, "variants": g.variants, **g.keys}


# ---- the run ---------------------------------------------------------------------------------


def run(config: str | Path | dict, run_dir: Path, results: Path, variants: list[str] | None = None,
        groups: list[str] | None = None, quick: bool = False, progress: bool = True,
        command: str | None = None, carry: grid.Carry | None = None) -> dict:
    """Build and score what ``groups`` x ``variants`` still lack (`benchmarks.grid`; ``carry``:
    cells carried from an earlier session, `grid.Carry`), then write the results of everything
    finished so far (``run_dir/done.json``)."""
    g = load(config)
    command = command or preamble.start("sentences", sys.argv[1:])
    done = grid.run(g, run_dir, variants, groups, quick, progress, command, carry=carry)
    summary, details = build(bench_of(g), done, provenance(command))
    write_json(results / "summary.json", summary)
    write_json(results / "details.json", details)
    write_page(blocks(summary, details), results)
    return summary


# ---- results ---------------------------------------------------------------------------------


def build(bench: dict, done: dict, prov: dict) -> tuple[dict, dict]:
    """(summary.json, details.json) from every finished (group, variant), in the config's order."""
    rows, org, params, seconds = [], [], {}, {}
    groups = [g for g in bench["groups"] if g in done]
    # tests with fewer gold entities than this are reported but left out of the verdicts
    few = {tuple(key.split(":", 1)) for g in groups for key, t in done[g]["teacher"].items()
           if t.get("support", 0) < (bench.get("min_entities") or 0)}
    for g in groups:
        domain, entry = bench["groups"][g]["domain"], done[g]
        teacher = entry["teacher"]
        for name in bench["variants"]:
            v = entry["variants"].get(name)
            if v is None:
                continue
            seconds.setdefault(name, {})[g] = {k: v[k] for k in ("label_s", "distill_s", "wall_s")}
            for key, s in v["scores"].items():
                lang, test = key.split(":", 1)
                t = teacher[key]
                params.setdefault(name, {})[g] = s["params"]
                params.setdefault("teacher", {})[g] = t["params"]
                rows.append({"variant": name, "language": lang, "test": test, "domain": domain,
                             "teacher_f1": round(float(t["f1"]), 2), "student_f1": round(float(s["f1"]), 2),
                             "retention": grid.ratio(s["f1"], t["f1"])})
                to, so = t["per_type"].get("ORG", {}), s["per_type"].get("ORG", {})
                if to:
                    org.append({"variant": name, "group": g, "language": lang, "test": test, "domain": domain,
                                "teacher_f1": round(float(to["f1"]), 2), "student_f1": round(float(so.get("f1", 0)), 2),
                                "retention": grid.ratio(so.get("f1", 0.0), to["f1"]), "entities": to.get("support", 0)})
    group_of = {(lang, g) for g in groups for lang in done[g].get("languages", [])}
    control = {g for g in groups if bench["groups"][g].get("control")}
    teacher_dev = {g: _mean([t["f1"] for k, t in done[g]["teacher"].items() if k.endswith("dev")]) for g in groups}
    # groups whose teacher is too weak to say what a student should keep: reported, never steering
    weak = {g for g in groups if (bench.get("steer_min_teacher_f1") or 0) > (teacher_dev[g] or 0)}
    steering = [g for g in groups if g not in control | weak]

    def in_group(r, gs):
        return any((r["language"], g) in group_of for g in gs)

    def verdict(mine: list[dict], orgs: list[dict], comp: float | None) -> dict:
        mine = [r for r in mine if r["retention"] is not None and (r["language"], r["test"]) not in few]
        split = {}
        for part in ("dev", "test"):
            sel = [r for r in mine if r["test"].endswith(part)]
            ins = [r["retention"] for r in sel if r["domain"] == "in" and not in_group(r, control)]
            outs = [r["retention"] for r in sel if r["domain"] == "out"]
            ctrl = [r["retention"] for r in sel if in_group(r, control)]
            org_out = [o["retention"] for o in orgs if o["domain"] == "out" and o["entities"] >= 10
                       and o["test"].endswith(part) and o["retention"] is not None]
            split[part] = {"in_avg": _mean(ins), "in_min": min(ins) if ins else None,
                           "out_min": min(outs) if outs else None, "out_avg": _mean(outs),
                           "org_out_min": min(org_out) if org_out else None, "control_avg": _mean(ctrl),
                           "sentences_avg": _mean([r["retention"] for r in sel if in_group(r, steering)])}
        return {"compression": comp, **split}

    verdicts = {name: verdict([r for r in rows if r["variant"] == name], [o for o in org if o["variant"] == name],
                              _compression(params, name))
                for name in dict.fromkeys(r["variant"] for r in rows)}
    # seeds of a variant (``seed_of``) are pooled with it: the mean retention of each test over
    # the seeds measured there; the choice is made on the pooled figures
    pooled = {}
    for name in verdicts:
        if bench["variants"][name].get("seed_of"):
            continue
        seeds = [name] + [n for n in verdicts if bench["variants"][n].get("seed_of") == name]
        pooled[name] = {**verdict(pool(rows, seeds), pool(org, seeds), verdicts[name]["compression"]),
                        "seeds": seeds,
                        "runs_per_group": _runs_per_group(seeds, seconds, groups)}
    chosen = choose(pooled, steering, fallback=next(iter(verdicts), None))
    summary = {"chosen": chosen, "compression": verdicts[chosen]["compression"] if chosen else None, "rows": rows}
    details = {
        "format": FORMAT, "org": org, "params": params, "seconds": seconds,
        "teacher_s": {g: done[g].get("teacher_s") for g in groups},
        "verdicts": verdicts, "pooled": pooled,
        "targets": {"in_avg": TARGET_IN_AVG, "in_min": TARGET_IN_MIN, "out": TARGET_OUT, "org_out": TARGET_ORG,
                    "compression": TARGET_COMPRESSION},
        "vocab": {g: {n: v.get("vocab") for n, v in done[g]["variants"].items()} for g in groups},
        "variants": {n: bench["variants"][n] for n in verdicts},
        "groups": {g: {"domain": bench["groups"][g]["domain"], "config": bench["groups"][g].get("config"),
                       "tests": bench["groups"][g].get("tests")} for g in groups},
        "test_limit": bench.get("test_limit"), "notes": bench.get("notes"),
        "left_out_of_verdicts": sorted(f"{lang}:{test}" for lang, test in few),
        "teacher_dev_f1": teacher_dev, "not_steering": sorted(weak),
        "steer_min_teacher_f1": bench.get("steer_min_teacher_f1"),
        "differences": differences(done, pooled, groups),
        "commands": done.get("commands", []), "provenance": prov,
    }
    return summary, details


def differences(done: dict, pooled: dict, groups: list[str]) -> dict:
    """Every pooled variant against the first, per group and split: the paired bootstrap 95 %
    interval over test sentences of the difference in average retention, in points
    (`benchmarks.grid.bootstrap`), each variant's seeds (``pooled[name]["seeds"]``) averaged;
    a lever counts where the interval excludes 0."""
    names = list(pooled)
    out: dict = {}
    for name in names[1:]:
        for g in groups:
            cells, teacher = done[g]["variants"], done[g]["teacher"]
            a, b = ([n for n in pooled[v]["seeds"] if n in cells] for v in (name, names[0]))
            if not (a and b):
                continue
            for part in ("dev", "test"):
                keys = [k for k in cells[a[0]]["scores"] if k.endswith(part) and "counts" in teacher[k]]
                if keys:
                    out.setdefault(name, {}).setdefault(g, {})[part] = {
                        **grid.bootstrap({k: (teacher[k]["counts"], [cells[n]["scores"][k]["counts"] for n in a],
                                              [cells[n]["scores"][k]["counts"] for n in b]) for k in keys}),
                        "seeds": [len(a), len(b)]}
    return out


def choose(pooled: dict, sentence_groups: list[str], fallback: str | None = None) -> str | None:
    """The pooled variant with the best mean dev retention on sentences, among those at >= 35x
    measured in every sentence-level group with as many seeds there as the most-measured
    variant (a lucky seed cannot win against a mean of four); ``fallback`` when none
    qualifies; None when no group steers (every one a control or under steer_min_teacher_f1)."""
    if not sentence_groups:
        return None
    most = {g: max((v["runs_per_group"].get(g, 0) for v in pooled.values()), default=0) for g in sentence_groups}
    eligible = [n for n, v in pooled.items() if v["compression"] and v["compression"] >= TARGET_COMPRESSION
                and all(v["runs_per_group"].get(g, 0) == most[g] for g in sentence_groups)]
    return max(eligible, key=lambda n: pooled[n]["dev"]["sentences_avg"]) if eligible else fallback


def refresh(config: str | Path | dict, results: Path, command: str | None = None) -> dict:
    """Rewrite ``results`` (summary.json, details.json, results.md) from its own details.json,
    re-applying `choose` and the page layout, with no run directory: for a change of the rule
    or the page after the runs' working files are gone (``config`` says which group is the
    control). An older details.json without seeds per group gets them from its seconds."""
    bench = bench_of(load(config))
    summary = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    details = json.loads((results / "details.json").read_text(encoding="utf-8"))
    if details.get("format") != FORMAT:
        raise ValueError(f"{results / 'details.json'}: format {details.get('format')!r}, expected {FORMAT!r}")
    if "pooled" not in details:
        raise ValueError(f"{results / 'details.json'}: made before seeds were pooled (no 'pooled'); rerun the "
                         "commands it lists instead of refreshing it")
    details["notes"] = bench.get("notes")
    if command and command not in details.setdefault("commands", []):
        details["commands"].append(command)
    for v in details["pooled"].values():
        v.setdefault("runs_per_group", _runs_per_group(v["seeds"], details["seconds"], details["groups"]))
    sentence_groups = [g for g in details["groups"] if not bench["groups"].get(g, {}).get("control")
                       and g not in details.get("not_steering", [])]
    summary["chosen"] = choose(details["pooled"], sentence_groups, fallback=summary["chosen"])
    summary["compression"] = details["verdicts"][summary["chosen"]]["compression"] if summary["chosen"] else None
    write_json(results / "summary.json", summary)
    write_json(results / "details.json", details)
    write_page(blocks(summary, details), results)
    return summary


def pool(rows: list[dict], names: list[str]) -> list[dict]:
    """Rows (or ORG rows) of ``names`` merged per (language, test): the mean retention over the
    names measured there, the entities of the first."""
    acc: dict[tuple, dict] = {}
    for r in rows:
        if r["variant"] in names and r["retention"] is not None:
            a = acc.setdefault((r["language"], r["test"]), {**r, "variant": names[0], "all": []})
            a["all"].append(r["retention"])
    return [{**{k: v for k, v in a.items() if k != "all"}, "retention": sum(a["all"]) / len(a["all"])}
            for a in acc.values()]


def _compression(params: dict, name: str) -> float | None:
    """Teacher / student parameters, the lowest over the groups (the largest student)."""
    ratios = [params["teacher"][g] / p for g, p in params.get(name, {}).items() if p]
    return round(min(ratios), 2) if ratios else None


def _runs_per_group(seeds: list[str], seconds: dict, groups) -> dict[str, int]:
    """How many of ``seeds`` finished in each group: ``seconds`` has an entry per finished
    (variant, group), in `build` and in a committed details.json alike."""
    return {g: sum(g in seconds.get(n, {}) for n in seeds) for g in groups}


def _runs(pooled: dict) -> str:
    """``in 2, out 4``: how many of a pooled variant's seeds finished in each group."""
    return ", ".join(f"{g} {n}" for g, n in pooled.get("runs_per_group", {}).items())


def _mean(xs: list) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def _pc(x: float | None) -> float | None:
    return None if x is None else 100 * x


def blocks(s: dict, d: dict) -> list:
    """``results.md``: one table per variant (teacher / student / retention per language and
    test, ORG beside it), then the verdicts against the targets and the seconds."""
    org = {(o["variant"], o["language"], o["test"]): o for o in d["org"]}
    out = [
        Heading(1, "Sentence-level benchmark (issue 23)"),
        Para("Commands (the pieces that built these results, in order): "
             + "; ".join(f"`{c}`" for c in d["commands"] or [d["provenance"]["command"]])),
        Para("Groups: " + "; ".join(f"**{g}** ({v['domain']} domain) `{json.dumps(v['config'])}`"
                                    for g, v in d["groups"].items())
             + f". At most {d['test_limit']} sentences a test. Retention = student F1 / teacher F1 on the same test "
               "(seqeval entity F1, IOB2 strict). Tune on dev, report test."),
        *([Para(d["notes"])] if d.get("notes") else []),
        Para(f"Chosen: **{s['chosen']}** (best mean dev retention on sentences, in and out of domain, at >= "
             f"{TARGET_COMPRESSION:.0f}x, each test's retention averaged over the variant's seeds; only variants "
             "with as many seeds in every sentence-level group as the most-measured one compete), "
             f"compression {s['compression']}x." if s["chosen"] else
             "Chosen: none. No group here steers the choice (a control group, or one whose teacher averages "
             f"under {d.get('steer_min_teacher_f1') or 0:g} dev F1: `steer_min_teacher_f1`), so these results "
             "are a report only."),
    ]
    for name in d["verdicts"]:
        rows = []
        for r in (r for r in s["rows"] if r["variant"] == name):
            o = org.get((name, r["language"], r["test"]), {})
            rows.append([r["language"], r["test"], r["domain"], num(r["teacher_f1"]), num(r["student_f1"]),
                         pct(_pc(r["retention"])), num(o.get("teacher_f1")), num(o.get("student_f1")),
                         pct(_pc(o.get("retention")))])
        p = d["params"].get(name, {})
        out += [Heading(2, f"Variant {name}"),
                Para(f"Overrides `{json.dumps(d['variants'][name])}`; student parameters "
                     + ", ".join(f"{g} {n:,}" for g, n in p.items()) + f"; compression {d['verdicts'][name]['compression']}x; "
                     "seconds " + json.dumps(d["seconds"].get(name, {}))),
                Table(["lang", "test", "domain", "teacher", "student", "kept", "teacher ORG", "student ORG",
                       "kept ORG"], rows, set(range(3, 9)))]
    t = d["targets"]

    def mark(x, target):
        return "–" if x is None else pct(_pc(x)) + ("" if x >= target else " ✗")

    verdict_rows = []
    for name, v in d["verdicts"].items():
        for part in ("dev", "test"):
            q = v[part]
            verdict_rows.append([name, part, mark(q["in_avg"], t["in_avg"]), mark(q["in_min"], t["in_min"]),
                                 mark(q["out_min"], t["out"]), mark(q["org_out_min"], t["org_out"]),
                                 pct(_pc(q["control_avg"])), f"{v['compression']}x"])
    out += [Heading(2, "Targets"),
            Para(f"Sentence-level in domain: average retention >= {t['in_avg']:.0%}, none below {t['in_min']:.0%}; "
                 f"out of domain (UNER en/pt) >= {t['out']:.0%} and ORG >= {t['org_out']:.0%} of the teacher's ORG; "
                 f"the WikiANN control not below the baseline's; compression >= {t['compression']:.0f}x. "
                 "✗ marks a miss. Left out of these (fewer gold entities than the config's min_entities): "
                 + (", ".join(d["left_out_of_verdicts"]) or "none") + "."),
            Table(["variant", "split", "in avg", "in min", "out min", "ORG out min", "control avg", "compression"],
                  verdict_rows, {2, 3, 4, 5, 6}),
            Para("Teacher seconds per group: " + json.dumps(d["teacher_s"]))]
    diff_rows = [[name, g, part, f"{x['seeds'][0]} / {x['seeds'][1]}",
                  grid.interval(x)]
                 for name, per in d.get("differences", {}).items() for g, parts in per.items()
                 for part, x in parts.items()]
    if diff_rows:
        ref = next(iter(d["pooled"]))
        out += [Heading(2, f"Each variant against {ref}"),
                Para("Difference in average retention over the group's tests, in points, with its paired bootstrap "
                     "95 % interval over test sentences (1,000 samples; each variant's seeds averaged). * : the "
                     "interval excludes 0, the lever counts. Groups whose teacher averages under "
                     f"{d.get('steer_min_teacher_f1') or 'the config minimum'} dev F1 never steer the choice: "
                     + (", ".join(d.get("not_steering", [])) or "none") + "."),
                Table(["variant", "group", "split", f"seeds (variant / {ref})", "difference [95 % CI]"],
                      diff_rows, {4})]
    pooled_rows = [[name, ", ".join(v["seeds"]), _runs(v), part, pct(_pc(v[part]["in_avg"])), pct(_pc(v[part]["out_avg"])),
                    pct(_pc(v[part]["control_avg"])), pct(_pc(v[part]["sentences_avg"]))]
                   for name, v in d.get("pooled", {}).items() for part in ("dev", "test")]
    out += [Heading(2, "Pooled over seeds (what the choice reads)"),
            Para("Each test's retention averaged over the runs of a variant with different seeds (variants with "
                 "`seed_of`), then averaged as above; a group where only one seed ran contributes that one."),
            Table(["variant", "runs", "seeds per group", "split", "in avg", "out avg", "control avg",
                   "sentences avg"], pooled_rows, {4, 5, 6, 7})]
    return out


def main(argv=None) -> int:
    p = preamble.parser(__doc__)
    p.add_argument("--config", default="benchmarks/configs/sentences-full.yaml")
    p.add_argument("--run", default="runs/sentences-full", help="working directory (teachers, transfer sets, students)")
    p.add_argument("--results", default="benchmarks/results/sentences", help="where summary.json/results.md go")
    p.add_argument("--variants", nargs="*", help="which variants (default: the config's default_variants)")
    p.add_argument("--groups", nargs="*", help="which groups (default: the config's default_groups)")
    p.add_argument("--quick", action="store_true", help="tiny random models, a few sentences: a smoke test")
    p.add_argument("--refresh", action="store_true",
                   help="run nothing: rewrite --results from its own details.json (the choice rule and the page "
                        "as this version has them), for when the run directory is gone")
    grid.carry_arguments(p)
    args = p.parse_args(argv)
    try:
        return _main(p, args, argv)
    except ValueError as e:  # a bad grid, variant or results folder: one line, no traceback
        raise SystemExit(f"benchmarks.sentences: {e}") from None


def _main(p, args, argv) -> int:
    if args.refresh:
        refresh(args.config, Path(args.results), preamble.start("sentences", argv))
        print((Path(args.results) / "results.md").read_text(encoding="utf-8"))
        return 0
    command = preamble.start("sentences", argv)
    run_dir, results = Path(args.run), Path(args.results)
    if args.quick and args.run == p.get_default("run"):
        run_dir = run_dir.with_name(run_dir.name + "-quick")
    if args.quick and args.results == p.get_default("results"):
        results = Path("runs/sentences-quick/results")  # never over the committed results
    run(args.config, run_dir, results, args.variants, args.groups, args.quick, not args.quiet, command,
        grid.carry_of(args, args.config))
    print((results / "results.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

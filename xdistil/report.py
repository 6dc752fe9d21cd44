"""``xdistil report``: a Markdown report, the same as HTML, and PNG plots from benchmarked runs.

Inputs are run directories with a ``bench.json`` (``xdistil bench``). A directory (or
file) with only a ``summary.json`` -- the one ``xdistil run`` writes, or the staged
benchmark's (``benchmarks/staged.py``) -- also works and gives the quality figures.

The report opens with a verdict per run: the share of the teacher's F1 its student keeps,
against the target, with its compression and speedup, so a reader sees at once whether
the student is good enough to deploy. Then the protocol, quality per language, the
published XtremeDistil figures beside ours, stage-by-stage F1, latency, throughput,
memory, and where every figure was measured.

The content is built once as a list of blocks (headings, paragraphs, tables, images) and
rendered twice, so the Markdown and the HTML cannot drift apart. Plots use matplotlib's
object API (``Figure``, Agg canvas): no pyplot state, no display needed.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xdistil.bench import BENCH_FILE, FORMAT

TARGET_RETAINED = 95.0  # % of the teacher's F1 the student must keep (XtremeDistil's kept 94-95 %)
SPEEDUP_BATCH = 32  # XtremeDistil's batch speedup was measured at batch 32

# XtremeDistil (Mukherjee & Hassan Awadallah, ACL 2020): Table 5 (WikiANN, 41 languages) and
# Table 16 (the E=50, H=200 BiLSTM student against mBERT-base).
ANCHORS = {
    "teacher_f1": 91.86,  # mBERT jointly fine-tuned, average over 41 languages
    "best_student_f1": 88.64,
    "student_f1": 86.46,  # E=50, H=200 BiLSTM
    "student_params": 5.1e6,
    "compression": 35.1,
    "batch_speedup": 51.0,  # GPU, batch 32
    "online_speedup": 16.0,  # CPU, batch 1
}
PLOTS = {"f1_retained": "f1_retained.png", "f1_vs_params": "f1_vs_params.png", "latency": "latency.png",
         "stages": "stages.png"}
_STAGE = re.compile(r"stage(\d+)-(.+)$")


# ---- inputs -----------------------------------------------------------------------------


@dataclass
class Source:
    """One input: its models (teacher first) and, from ``bench.json``, everything else."""

    label: str
    path: Path
    protocol: dict
    models: list[dict]  # name, role, params, f1 {lang: F1}, f1_avg, stage (number or None)
    headline: str  # the student the verdict is about
    bench: dict | None = None
    languages: list[str] = field(default_factory=list)

    @property
    def teacher(self) -> dict:
        return next(m for m in self.models if m["role"] == "teacher")

    @property
    def students(self) -> list[dict]:
        return [m for m in self.models if m["role"] == "student"]

    def model(self, name: str) -> dict:
        return next(m for m in self.models if m["name"] == name)

    def retained(self, m: dict, lang: str | None = None) -> float | None:
        """% of the teacher's F1 that ``m`` keeps (average over languages, or one language)."""
        t = self.teacher["f1_avg"] if lang is None else self.teacher["f1"].get(lang)
        s = m["f1_avg"] if lang is None else m["f1"].get(lang)
        return 100 * s / t if t and s is not None else None

    def compression(self, m: dict) -> float:
        return self.teacher["params"] / m["params"]


def load_source(path: str | Path) -> Source:
    """A run directory (``bench.json``, else ``summary.json``) or one of those files."""
    p = Path(path)
    if p.is_dir():
        f = next((p / n for n in (BENCH_FILE, "summary.json") if (p / n).is_file()), None)
        if f is None:
            raise FileNotFoundError(f"{p}: no {BENCH_FILE} (run 'xdistil bench {p}' first) and no summary.json")
        label = p.resolve().name
    elif p.is_file():
        f, label = p, p.resolve().parent.name
    else:
        raise FileNotFoundError(f"{p}: no such file or directory")
    data = json.loads(f.read_text(encoding="utf-8"))
    if data.get("format") == FORMAT:
        q = data["quality"]
        models = [{"name": m["name"], "role": m["role"], "params": m["params"], "f1": m["f1"],
                   "f1_avg": m["f1_avg"], "stage": m.get("stage")} for m in q["models"]]
        return Source(label, f, data["protocol"], models, q["final"], data, list(q["languages"]))
    if "protocol" in data and "models" in data:
        models = [{"name": m["name"], "role": m["role"], "params": m["params"], "f1": m["f1"], "f1_avg": m["f1_avg"],
                   "stage": _stage(m["name"])} for m in data["models"]]
        students = [m for m in models if m["role"] == "student"]
        if not students or not any(m["role"] == "teacher" for m in models):
            raise ValueError(f"{f}: needs a teacher and at least one student")
        best = max(students, key=lambda m: m["f1_avg"])["name"]  # no deployed one: the best one
        langs = list(data["protocol"].get("languages") or models[0]["f1"])
        return Source(label, f, data["protocol"], models, best, None, langs)
    raise ValueError(f"{f}: neither a bench.json nor a summary.json (protocol + models)")


def _stage(name: str) -> int | None:
    m = _STAGE.search(name.rsplit("/", 1)[-1])
    return int(m.group(1)) if m else None


def _group(name: str) -> str:
    """Students of one staged sequence: ``variant/stageN-x`` -> ``variant``; plain stage names -> ``""``."""
    return name.rsplit("/", 1)[0] if "/" in name else ""


def _unique_labels(sources: list[Source]) -> None:
    seen: dict[str, int] = {}
    for s in sources:
        seen[s.label] = seen.get(s.label, 0) + 1
    for s in sources:
        if seen[s.label] > 1:
            s.label = f"{s.path.resolve().parent.parent.name}/{s.label}"


# ---- formatting -------------------------------------------------------------------------


def _n(count, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _num(x: float | None, nd: int = 2) -> str:
    return "–" if x is None else f"{x:,.{nd}f}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f} %"


def _params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _ms(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if x < 1 else f"{x:,.2f}" if x < 100 else f"{x:,.0f}"


def _x(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}x" if x < 100 else f"{x:,.0f}x"


def _mb(x: float | None) -> str:
    return "–" if x is None else f"{x:,.2f} MB" if x < 10 else f"{x:,.0f} MB"


# ---- content blocks, rendered to Markdown and HTML ----------------------------------------


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str  # inline **bold** and `code` only


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    right: set[int] = field(default_factory=set)  # right-aligned (numeric) columns


@dataclass
class Image:
    file: str
    alt: str


Block = Heading | Para | Table | Image


def to_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.file})")
        else:
            def cells(row):
                return "| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |"

            out.append("\n".join([cells(b.header),
                                  "|" + "|".join("---:" if i in b.right else "---" for i in range(len(b.header)))
                                  + "|"] + [cells(r) for r in b.rows]))
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    """HTML of a Markdown line with **bold** and `code` (the only inline marks the report uses)."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(part)))
    return "".join(out)


_CSS = """body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.25rem .6rem}
th{background:#f3f3f3}td.r,th.r{text-align:right}img{max-width:100%}code{background:#f3f3f3;padding:0 .2rem}"""


def _html_table(t: Table) -> str:
    def row(cells, tag):
        attrs = [' class="r"' if i in t.right else "" for i in range(len(cells))]
        return "<tr>" + "".join(f"<{tag}{a}>{_inline(str(c))}</{tag}>" for a, c in zip(attrs, cells, strict=True)) \
            + "</tr>"

    return "<table>\n" + "\n".join([row(t.header, "th")] + [row(r, "td") for r in t.rows]) + "\n</table>"


def to_html(blocks: Sequence[Block], title: str) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
           f"<style>{_CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Image):
            out.append(f'<p><img src="{html.escape(b.file)}" alt="{html.escape(b.alt)}"></p>')
        else:
            out.append(_html_table(b))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---- figures from a source ----------------------------------------------------------------


def _results(s: Source) -> list[dict]:
    return s.bench["latency"]["results"] if s.bench else []


def best_speedup(s: Source, batch: int) -> dict | None:
    """The fastest student cell against the teacher in PyTorch fp32 at ``batch`` (None: not measured)."""
    rows = [x for x in (s.bench["latency"]["speedups"] if s.bench else []) if x["batch"] == batch]
    return max(rows, key=lambda x: x["speedup"], default=None)


def _speedup_batch(s: Source) -> int | None:
    """Batch 32 (XtremeDistil's) when measured, else the measured batch closest to it."""
    batches = sorted({x["batch"] for x in (s.bench["latency"]["speedups"] if s.bench else [])})
    return min(batches, key=lambda b: (abs(b - SPEEDUP_BATCH), b), default=None)


def verdict(s: Source, target: float) -> str:
    m = s.model(s.headline)
    kept = s.retained(m)
    langs = [lang for lang in s.languages if s.retained(m, lang) is not None]
    weakest = min(langs, key=lambda lang: s.retained(m, lang), default=None)
    who = "final student" if s.bench else "best student"
    text = (f"**{s.label}**: the {who} `{m['name']}` keeps **{_pct(kept)}** of the teacher's F1 "
            f"({m['f1_avg']:.2f} vs {s.teacher['f1_avg']:.2f}, average over {', '.join(s.languages)}) with "
            f"**{_x(s.compression(m))}** fewer parameters")
    b = _speedup_batch(s)
    sp = best_speedup(s, b) if b is not None else None
    if sp:
        text += (f" and is **{_x(sp['speedup'])}** faster than the teacher at batch {b} "
                 f"({sp['runtime']} {sp['precision']} against PyTorch fp32, on this machine's CPU)")
    met = kept is not None and kept >= target
    text += (f": **{'meets' if met else 'misses'} the ≥ {target:g} % target**"
             + (f" (weakest language: {weakest}, {_pct(s.retained(m, weakest))})" if weakest and len(langs) > 1
                else "") + ".")
    return text


# ---- plots ------------------------------------------------------------------------------


def _figure(width: float = 8.0, height: float = 4.5):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    return fig, fig.add_subplot()


def _save(fig, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fig.tight_layout()
    fig.savefig(tmp, format="png", metadata={"Software": None})  # no version stamp: reruns diff cleanly
    os.replace(tmp, path)


def plot_f1_retained(sources: list[Source], path: Path) -> None:
    """Bars per language: each teacher (grey, the reference) and each headline student, % kept on top."""
    import numpy as np

    langs = list(dict.fromkeys(lang for s in sources for lang in s.languages)) + ["avg"]
    series = []  # (label, values, teacher?, kept %)
    teachers_seen = []
    for s in sources:
        t = s.teacher
        if t["f1"] not in teachers_seen:
            teachers_seen.append(t["f1"])
            name = "teacher" if len(sources) == 1 else f"teacher ({s.label})"
            series.append((name, [t["f1"].get(lang, t["f1_avg"] if lang == "avg" else None) for lang in langs],
                           True, None))
        m = s.model(s.headline)
        name = m["name"] if len(sources) == 1 else f"{s.label}: {m['name']}"
        series.append((name, [m["f1"].get(lang, m["f1_avg"] if lang == "avg" else None) for lang in langs], False,
                       [s.retained(m, None if lang == "avg" else lang) for lang in langs]))
    fig, ax = _figure(min(14.0, max(7.0, 0.35 * len(langs) * len(series) + 3)))
    x = np.arange(len(langs))
    width = 0.8 / len(series)
    for i, (name, vals, is_teacher, kept) in enumerate(series):
        ys = [np.nan if v is None else v for v in vals]
        bars = ax.bar(x - 0.4 + width * (i + 0.5), ys, width, label=name,
                      color="0.75" if is_teacher else None, edgecolor="0.3" if is_teacher else None)
        if kept:
            for bar, k in zip(bars, kept, strict=True):
                if k is not None:
                    ax.annotate(f"{k:.0f}%", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x, langs)
    ax.set_ylabel("dev F1")
    ax.set_title("F1 per language against the teacher (grey); % of the teacher's F1 on the bars", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_ylim(0, 105)
    _save(fig, path)


def plot_f1_vs_params(sources: list[Source], path: Path, target: float) -> None:
    """Every model as a point: average F1 against parameters (log scale)."""
    fig, ax = _figure()
    for k, s in enumerate(sources):
        color = f"C{k}"
        same_size: dict[int, list[dict]] = {}
        for m in s.models:
            same_size.setdefault(m["params"], []).append(m)
        for m in s.models:
            teacher = m["role"] == "teacher"
            ax.scatter(m["params"], m["f1_avg"], marker="s" if teacher else "o", s=60 if teacher else 30,
                       color=color, edgecolors="black" if m["name"] == s.headline else "none",
                       label=s.label if m is s.models[0] and len(sources) > 1 else None)
        for group in same_size.values():  # many students of one size: name the best, count the rest
            shown = group if len(group) <= 3 else [max(group, key=lambda m: m["f1_avg"])]
            for m in shown:
                more = f" (+{len(group) - 1} more)" if len(shown) < len(group) else ""
                ax.annotate(m["name"] + more, (m["params"], m["f1_avg"]), fontsize=7, xytext=(4, 2),
                            textcoords="offset points")
        ax.axhline(s.teacher["f1_avg"] * target / 100, color=color, linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("dev F1 (average over languages)")
    ax.set_title(f"F1 against size (squares: teachers; dotted: {target:g} % of the teacher)")
    if len(sources) > 1:
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_latency(sources: list[Source], path: Path) -> None:
    """Median ms per call against batch size, log-log, one line per model and runtime."""
    fig, ax = _figure()
    batches: set[int] = set()
    for s in sources:
        rows = _results(s)
        batches |= {r["batch"] for r in rows}
        for key in dict.fromkeys((r["model"], r["runtime"], r["precision"]) for r in rows):
            pts = sorted((r["batch"], r["median_ms"]) for r in rows if (r["model"], r["runtime"], r["precision"]) == key)
            label = " ".join(key) if len(sources) == 1 else f"{s.label}: {' '.join(key)}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                    linestyle="--" if key[0] == "teacher" else "-", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted(batches), [str(b) for b in sorted(batches)])  # the measured sizes, not powers of 10
    ax.minorticks_off()
    ax.set_xlabel("batch size (sentences per call)")
    ax.set_ylabel("median ms per call")
    ax.set_title("Latency against batch size (CPU; dashed: teacher)")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_stages(sources: list[Source], path: Path) -> None:
    """Average F1 after every stage, one line per staged sequence; the teacher dashed."""
    fig, ax = _figure()
    k = 0
    for s in sources:
        groups: dict[str, list[dict]] = {}
        for m in s.students:
            if m["stage"] is not None:
                groups.setdefault(_group(m["name"]), []).append(m)
        for g, ms in groups.items():
            ms = sorted(ms, key=lambda m: m["stage"])
            label = " / ".join(x for x in (s.label if len(sources) > 1 else "", g) if x) or "student"
            ax.plot([m["stage"] for m in ms], [m["f1_avg"] for m in ms], marker="o", color=f"C{k % 10}", label=label)
            single = len(sources) == 1 and len(groups) == 1
            for m in ms if single else []:  # with several lines the legend names them
                ax.annotate(m["name"].rsplit("/", 1)[-1], (m["stage"], m["f1_avg"]), fontsize=7, xytext=(3, -10),
                            textcoords="offset points")
            if single and len(s.languages) > 1:
                for j, lang in enumerate(s.languages):
                    ax.plot([m["stage"] for m in ms], [m["f1"][lang] for m in ms], linewidth=0.8, alpha=0.6,
                            color=f"C{(j + 1) % 10}", label=lang)
            k += 1
        ax.axhline(s.teacher["f1_avg"], color="0.4", linestyle="--", linewidth=1,
                   label="teacher" if len(sources) == 1 else f"teacher ({s.label})")
    ax.set_xlabel("stage")
    ax.set_ylabel("dev F1")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title("F1 after each stage (thick: average over languages)")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


# ---- the report ---------------------------------------------------------------------------


def _machine_text(prov: dict | None) -> str:
    m = (prov or {}).get("machine")
    if not m:
        return "not recorded"
    return f"{m['cpu']}, {_n(m['usable_cpus'], 'usable core')}, {_n(m['threads'], 'thread')}"


def _versions_text(prov: dict | None) -> str:
    v = (prov or {}).get("versions")
    return ", ".join(f"{k} {x}" for k, x in v.items() if x) if v else "not recorded"


def _protocol_table(sources: list[Source]) -> Table:
    def transfer(p):
        t = p.get("transfer")
        if isinstance(t, dict) and t.get("counts"):
            total = t.get("sentences") or sum(sum(c.values()) for c in t["counts"].values())
            unl = t.get("unlabeled_sentences") or sum(c.get("transfer", 0) for c in t["counts"].values())
            return f"{total:,} sentences ({unl:,} unlabeled + the labeled budget)"
        limit = p.get("transfer_limit", (t or {}).get("limit_per_language") if isinstance(t, dict) else None)
        return "all available" if limit is None else f"at most {limit:,} per language"

    def student(p):
        st = p.get("student")
        if not st:
            return "–"
        shape = f"E={st['embedding_dim']}, H={st['hidden_dim']}, {st['num_layers']} layer(s)" \
            if st.get("arch") == "bilstm" else f"{st.get('transformer_layers')} layers"
        return f"{st.get('arch')} ({shape}); stages {', '.join(p.get('stages', []))}"

    def sel(p):
        v = p.get("selection_slice")
        return f"last {v} sentences of the budget" if isinstance(v, int) else str(v or "–")

    fields = [("languages", lambda s, p: ", ".join(s.languages)),
              ("labeled budget", lambda s, p: f"{p.get('labeled_budget', '–')} sentences per language"),
              ("selection slice", lambda s, p: sel(p)),
              ("transfer set", lambda s, p: transfer(p)),
              ("evaluation split", lambda s, p: p.get("evaluation", "–")),
              ("metric", lambda s, p: p.get("metric", "–")),
              ("teacher", lambda s, p: f"{p.get('teacher') or s.teacher['name']} ({_params(s.teacher['params'])})"),
              ("student", lambda s, p: student(p))]
    return Table(["", *[s.label for s in sources]], [[f, *[fn(s, s.protocol) for s in sources]] for f, fn in fields])


def _quality_table(s: Source) -> Table:
    header = ["model", "params", "compression", *s.languages, "avg", "% of teacher"]
    rows = []
    for m in s.models:
        cells = [_num(m["f1"].get(lang)) + ("" if m["role"] == "teacher" else f" ({_pct(s.retained(m, lang))})")
                 for lang in s.languages]
        row = [m["name"], _params(m["params"]), _x(s.compression(m)), *cells, _num(m["f1_avg"]),
               _pct(s.retained(m))]
        rows.append([f"**{c}**" for c in row] if m["name"] == s.headline else row)
    return Table(header, rows, set(range(1, len(header))))


def _anchor_table(sources: list[Source]) -> Table:
    a = ANCHORS

    def ours(fn):
        return [fn(s) for s in sources]

    def speed(s, b):
        sp = best_speedup(s, b)
        return f"{_x(sp['speedup'])} (CPU, batch {b}, {sp['runtime']} {sp['precision']})" if sp else "not measured"

    def best(s):
        return max(s.students, key=lambda m: m["f1_avg"])

    rows = [
        ["teacher F1", f"{a['teacher_f1']:.2f} (mBERT, 41 languages, Table 5)",
         *ours(lambda s: f"{s.teacher['f1_avg']:.2f} ({s.protocol.get('teacher') or 'teacher'}, "
                         f"{_n(len(s.languages), 'language')})")],
        ["best student F1", f"{a['best_student_f1']:.2f} (Table 5)",
         *ours(lambda s: f"{best(s)['f1_avg']:.2f} ({best(s)['name']})")],
        ["student F1", f"{a['student_f1']:.2f} (BiLSTM E=50, H=200, Table 16)",
         *ours(lambda s: f"{s.model(s.headline)['f1_avg']:.2f} ({s.headline})")],
        ["share of the teacher's F1 kept",
         f"{_pct(100 * a['student_f1'] / a['teacher_f1'])} (best: {_pct(100 * a['best_student_f1'] / a['teacher_f1'])})",
         *ours(lambda s: f"{_pct(s.retained(s.model(s.headline)))} (best: {_pct(s.retained(best(s)))})")],
        ["student parameters", _params(int(a["student_params"])), *ours(lambda s: _params(s.model(s.headline)["params"]))],
        ["compression", _x(a["compression"]), *ours(lambda s: _x(s.compression(s.model(s.headline))))],
        ["batch speedup", f"{_x(a['batch_speedup'])} (GPU, batch 32)", *ours(lambda s: speed(s, SPEEDUP_BATCH))],
        ["online speedup", f"{_x(a['online_speedup'])} (CPU, batch 1)", *ours(lambda s: speed(s, 1))],
    ]
    return Table(["", "XtremeDistil (published)", *[s.label for s in sources]], rows)


def _latency_blocks(s: Source) -> list[Block]:
    lat = s.bench["latency"]
    st = lat["settings"]
    batches = st["batch_sizes"]
    cell = {(r["model"], r["runtime"], r["precision"], r["batch"]): r["median_ms"] for r in lat["results"]}
    keys = list(dict.fromkeys((r["model"], r["runtime"], r["precision"]) for r in lat["results"]))
    params = {m["name"]: m["params"] for m in lat["models"]}
    times = Table(["model", "params", "runtime", "precision", *[f"batch {b}" for b in batches]],
                  [[k[0], _params(params[k[0]]), k[1], k[2], *[_ms(cell.get((*k, b))) for b in batches]] for k in keys],
                  {1, *range(4, 4 + len(batches))})
    speed = {(x["model"], x["runtime"], x["precision"], x["batch"]): x["speedup"] for x in lat["speedups"]}
    skeys = list(dict.fromkeys((x["model"], x["runtime"], x["precision"]) for x in lat["speedups"]))
    speeds = Table(["student", "runtime", "precision", *[f"batch {b}" for b in batches]],
                   [[*k, *[_x(speed.get((*k, b))) for b in batches]] for k in skeys], set(range(3, 3 + len(batches))))
    sizes = s.bench["size"].get("exports", {})
    size_text = "; ".join(f"{name}: " + ", ".join(f"{p} {_mb(v)}" for p, v in files.items())
                          for name, files in sizes.items())
    prov = lat.get("provenance", {})
    return [
        Para(f"Median ms per call, {st['seq']} word pieces per row ({st['inputs']}); "
             f"{_n(st['warmup'], 'warm-up call')} at most, then at least {_n(st['min_repeats'], 'timed call')}"
             + (f" and {st['cell_seconds']:g} s" if st["cell_seconds"] else "") + " per cell; "
             f"{_n(st['threads'], 'intra-op thread')} for PyTorch and ONNX Runtime alike; all in one process, on "
             f"{_machine_text(prov)}. Whole latency run: {st['wall_s']} s."),
        times,
        Para("Speedup of the student over the teacher in PyTorch fp32, at the same batch size:"),
        speeds,
        *([Para(f"ONNX files: {size_text}.")] if size_text else []),
    ]


def _throughput_blocks(sources: list[Source]) -> list[Block]:
    benched = [s for s in sources if s.bench]
    lab_rows = []
    for s in benched:
        lab = s.bench["labeling"]
        if lab.get("source"):
            lab_rows.append([s.label, f"{lab['sentences'] or 0:,}", _num(lab["label_sentences_per_s"], 1),
                             _num(lab["forward_sentences_per_s"], 1), _num(lab["overhead"], 3),
                             str(lab.get("processes", 1)), str(lab.get("batch_size", "–"))])
    blocks: list[Block] = [
        Heading(3, "Labeling the transfer set"),
        Para("End to end (reading, windowing, the teacher's forward pass, writing the Arrow chunks) against the "
             "teacher's bare forward pass; overhead = end-to-end time / forward time."),
        Table(["run", "sentences", "end to end (sent/s)", "forward alone (sent/s)", "overhead", "processes",
               "batch"], lab_rows, set(range(1, 7))) if lab_rows else Para("No labeling figures recorded."),
        Heading(3, "Distillation"),
        Para("Tokens (real word pieces) per second of training, per stage, over all its unfreezing steps "
             "(the per-epoch scoring of the selection slice included)."),
    ]
    for s in benched:
        d = s.bench["distillation"]
        rows = [[st["stage"], st["student"] or "–", str(len(st["steps"])), str(st["epochs"]), _num(st["seconds"], 1),
                 _num(st["tokens_per_s"], 0)] for st in d.get("stages", [])]
        if rows:
            rows.append(["**all**", "", "", "", f"**{_num(d['seconds'], 1)}**", f"**{_num(d['tokens_per_s'], 0)}**"])
            blocks += ([Para(f"**{s.label}**")] if len(benched) > 1 else []) + [
                Table(["stage", "student", "steps", "epochs", "seconds", "tokens/s"], rows, {2, 3, 4, 5})]
    return blocks


def _memory_table(sources: list[Source]) -> Table:
    rows = []
    for s in sources:
        if not s.bench:
            continue
        mem = s.bench["memory"]
        lab, tr = mem["labeling"], mem["training"]
        per = ", ".join(f"{p['stage']} {_mb(p['peak_rss_mb'])}" for p in tr.get("per_stage", []) if p["peak_rss_mb"])
        rows.append([s.label, _mb(lab["peak_rss_mb"]), _mb(tr["peak_rss_mb"]), per or "–",
                     tr.get("scope") or lab.get("scope") or "–"])
    return Table(["run", "labeling peak", "training peak", "training peak per stage", "scope"], rows, {1, 2})


def _provenance_table(sources: list[Source]) -> Table:
    rows = []
    for s in sources:
        if not s.bench:
            continue
        b = s.bench
        for section, prov in (("latency (xdistil bench)", b["latency"].get("provenance")),
                              ("quality (dev evaluation)", b["quality"].get("provenance")),
                              ("labeling", b["labeling"].get("provenance")),
                              ("distillation", b["distillation"].get("provenance"))):
            cmd = (prov or {}).get("command")
            rows.append([s.label, section, _machine_text(prov), _versions_text(prov),
                         f"`{cmd}`" if cmd else "not recorded"])
    return Table(["run", "figures", "machine", "versions", "command"], rows)


def build(sources: list[Source], target: float = TARGET_RETAINED, plots: dict[str, str] | None = None,
          data: Sequence[str] = ()) -> list[Block]:
    """The report's blocks; ``plots``: the plot files written (key -> file name); ``data``: the JSON copies."""
    plots = plots or {}
    benched = [s for s in sources if s.bench]
    blocks: list[Block] = [Heading(1, "xdistil benchmark report")]
    blocks += [Para(verdict(s, target)) for s in sources]
    glance = []
    for s in sources:
        m = s.model(s.headline)
        b = _speedup_batch(s)
        sp, on = (best_speedup(s, b) if b else None), best_speedup(s, 1)
        int8 = (s.bench["size"].get("exports", {}).get(s.headline, {}).get("int8") if s.bench else None)
        glance.append([s.label, m["name"], _pct(s.retained(m)), _x(s.compression(m)),
                       f"{_x(sp['speedup'])} (batch {b})" if sp else "–", _x(on["speedup"]) if on else "–",
                       _mb(int8), "**yes**" if (s.retained(m) or 0) >= target else "**no**"])
    blocks.append(Table(["run", "student", "F1 kept", "compression", "speedup", "speedup batch 1",
                         "int8 ONNX", f"≥ {target:g} % kept"], glance, {2, 3, 4, 5, 6}))
    if benched:
        machines = sorted({_machine_text(s.bench["latency"].get("provenance")) for s in benched})
        blocks.append(Para("Timings depend on the machine: the latencies here were measured on "
                           f"{'; '.join(machines)}, under whatever else was running (load average in `bench.json`). "
                           "Run `xdistil bench RUN_DIR` to measure on yours. F1 does not depend on the machine."))
    if data:
        blocks.append(Para("Data: " + ", ".join(f"`{d}`" for d in data) + " (every figure below, machine-readable)."))
    missing = [s.label for s in sources if not s.bench]
    if missing:
        blocks.append(Para(f"Quality only (no bench.json) for: {', '.join(missing)}."))

    blocks += [Heading(2, "Protocol"), _protocol_table(sources)]

    blocks += [Heading(2, "Quality per language"),
               Para("Dev F1 (seqeval, entity level, IOB2 strict) per language; in brackets the share of the "
                    "teacher's F1 on that language. Compression: teacher parameters / student parameters. "
                    "The student in bold is the one the verdict is about.")]
    for s in sources:
        blocks += ([Heading(3, s.label)] if len(sources) > 1 else []) + [_quality_table(s)]
    for key, alt in (("f1_retained", "F1 retained per language"), ("f1_vs_params", "F1 against parameters")):
        if key in plots:
            blocks.append(Image(plots[key], alt))

    blocks += [Heading(2, "Published anchors"),
               Para("XtremeDistil (Mukherjee & Hassan Awadallah, ACL 2020) distilled mBERT on WikiANN over 41 "
                    "languages; its speedups are against mBERT-base in PyTorch, the batch one on a GPU. Ours are "
                    "against this run's teacher on this machine's CPU, over the languages above. Compare the "
                    "ratios (share kept, compression, speedup); absolute F1 depends on the teacher, the languages "
                    "and the data."),
               _anchor_table(sources)]

    if "stages" in plots:
        blocks += [Heading(2, "Stage by stage"),
                   Para("Average dev F1 after each distillation stage (each stage restores its best checkpoint); "
                        "per-stage figures per language are in the quality table."),
                   Image(plots["stages"], "F1 after each stage")]

    if benched:
        blocks.append(Heading(2, "Latency"))
        for s in benched:
            blocks += ([Heading(3, s.label)] if len(benched) > 1 else []) + _latency_blocks(s)
        if "latency" in plots:
            blocks.append(Image(plots["latency"], "latency against batch size"))
        blocks += [Heading(2, "Throughput"), *_throughput_blocks(sources)]
        blocks += [Heading(2, "Memory"),
                   Para("Peak resident memory (RSS) of labeling and of training; scope `step`: the high-water "
                        "mark reset when the work started, so loading earlier steps is not counted."),
                   _memory_table(sources)]
        blocks += [Heading(2, "Where the figures were measured"), _provenance_table(sources)]
    return blocks


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path, target: float = TARGET_RETAINED) -> dict:
    """Write ``report.md``, ``report.html``, the PNG plots and a copy of each ``bench.json`` into ``out_dir``.

    Returns ``{"markdown": path, "html": path, "plots": [paths], "data": [paths]}``.
    """
    if not run_dirs:
        raise ValueError("give at least one run directory")
    sources = [load_source(p) for p in run_dirs]
    _unique_labels(sources)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    plots: dict[str, str] = {}
    makers = {"f1_retained": lambda p: plot_f1_retained(sources, p),
              "f1_vs_params": lambda p: plot_f1_vs_params(sources, p, target),
              "latency": lambda p: plot_latency(sources, p),
              "stages": lambda p: plot_stages(sources, p)}
    for key, make in makers.items():
        if key == "latency" and not any(_results(s) for s in sources):
            continue
        if key == "stages" and not any(m["stage"] is not None for s in sources for m in s.students):
            continue
        make(out / PLOTS[key])
        plots[key] = PLOTS[key]

    data = []
    for s in sources:  # the figures behind the report travel with it
        if s.bench:
            dest = out / (BENCH_FILE if len(sources) == 1 else f"{s.label.replace('/', '-')}.{BENCH_FILE}")
            if dest.resolve() != s.path.resolve():
                shutil.copyfile(s.path, dest.with_name(dest.name + ".tmp"))
                os.replace(dest.with_name(dest.name + ".tmp"), dest)
            data.append(dest)
    blocks = build(sources, target, plots, [d.name for d in data])
    _write_text(out / "report.md", to_markdown(blocks))
    _write_text(out / "report.html", to_html(blocks, "xdistil benchmark report"))
    return {"markdown": out / "report.md", "html": out / "report.html", "plots": [out / f for f in plots.values()],
            "data": data}

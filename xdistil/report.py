"""``xdistil report``: a Markdown report, the same as HTML, and PNG plots from result records.

Inputs are `xdistil.results` files: a run directory's ``bench.json`` (`Bench`, from
``xdistil bench``) or, with quality figures only, a ``summary.json`` (`Summary`, from
``xdistil run`` or a benchmark). Nothing else is read: a file of another format is a
one-line error.

The report opens with a verdict per run (the share of the teacher's F1 its student keeps
against the target, with compression and speedup), then the protocol, quality per
language and per entity type, the published XtremeDistil figures where the run's
languages overlap the paper's, stage-by-stage F1, the F1-against-latency frontier,
latency, throughput, memory and where every figure was measured.

Content is a list of blocks (`Heading`, `Para`, `Table`, `Image`) rendered twice, so the
Markdown and the HTML cannot drift apart; every benchmark's ``results.md`` goes through
the same renderer (`write_page`). Plots use matplotlib's object API (no pyplot state).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xdistil_export.atomic import NotOurs, copy_file, listing, write_bytes, write_json, write_text

from xdistil.provenance import cpu_name
from xdistil.results import Bench, LatencyCell, ModelScores, RecordError, Summary, read
from xdistil.run.layout import BENCH_NAME, SUMMARY_NAME

TARGET_RETAINED = 95.0  # % of the teacher's F1 the student must keep (XtremeDistil's kept 94-95 %)
SPEEDUP_BATCH = 32  # XtremeDistil's batch speedup was measured at batch 32

# XtremeDistil (Mukherjee & Hassan Awadallah, ACL 2020): Table 5 (WikiANN, 41 languages) and
# Table 16 (the E=50, H=200 BiLSTM student against mBERT-base).
ANCHORS = {"teacher_f1": 91.86, "best_student_f1": 88.64, "student_f1": 86.46, "student_params": 5.1e6,
           "compression": 35.1, "batch_speedup": 51.0, "online_speedup": 16.0}
PAPER_LANGUAGES = frozenset(
    "af ar bg bn bs ca cs da de el en es et fa fi fr he hi hr hu id it lt lv mk ms nl no pl pt ro ru sk sl sq sv ta "
    "tl tr uk vi".split())
PLOTS = {"f1_retained": "f1_retained.png", "f1_vs_params": "f1_vs_params.png", "frontier": "f1_vs_latency.png",
         "latency": "latency.png", "stages": "stages.png"}


# ---- blocks, rendered to Markdown and HTML --------------------------------------------------


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
    """HTML of a Markdown line with **bold** and `code` (the only inline marks used)."""
    out = []
    for part in re.split(r"(`[^`]*`)", text):
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(part)))
    return "".join(out)


_CSS = """body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.25rem .6rem}
th{background:#f3f3f3}td.r,th.r{text-align:right}img{max-width:100%}code{background:#f3f3f3;padding:0 .2rem}"""


def to_html(blocks: Sequence[Block], title: str) -> str:
    def row(t: Table, cells, tag):
        attr = [' class="r"' if i in t.right else "" for i in range(len(cells))]
        return "<tr>" + "".join(f"<{tag}{a}>{_inline(str(c))}</{tag}>" for a, c in zip(attr, cells, strict=True)) \
            + "</tr>"

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
            out.append("<table>\n" + "\n".join([row(b, b.header, "th")] + [row(b, r, "td") for r in b.rows])
                       + "\n</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_page(blocks: Sequence[Block], folder: str | Path, name: str = "results", html_too: bool = False) -> Path:
    """``folder/name.md`` (and ``name.html``) from ``blocks``, atomically: the benchmarks' results pages."""
    folder = Path(folder)
    md = write_text(folder / f"{name}.md", to_markdown(blocks))
    if html_too:
        title = next((b.text for b in blocks if isinstance(b, Heading)), name)
        write_text(folder / f"{name}.html", to_html(blocks, title))
    return md


# ---- formatting -------------------------------------------------------------------------


def n_(count, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def num(x: float | None, nd: int = 2) -> str:
    return "–" if x is None else f"{x:,.{nd}f}"


def pct(x: float | None) -> str:
    """A share in %; None (e.g. a teacher whose F1 is 0) is "n/a", never "nan%"."""
    return "n/a" if x is None else f"{x:.1f} %"


def params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def ms(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if x < 1 else f"{x:,.2f}" if x < 100 else f"{x:,.0f}"


def times(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}x" if x < 100 else f"{x:,.0f}x"


def mb(x: float | None) -> str:
    return "–" if x is None else f"{x:,.2f} MB" if x < 10 else f"{x:,.0f} MB"


def machine_text(prov) -> str:
    m = prov.machine if prov else None
    if not m:
        return "not recorded"
    return f"{cpu_name(m)}, {n_(m['usable_cpus'], 'usable core')}, {n_(m['threads'], 'thread')}"


def versions_text(prov) -> str:
    v = prov.versions if prov else None
    return ", ".join(f"{k} {x}" for k, x in v.items() if x) if v else "not recorded"


# ---- inputs -----------------------------------------------------------------------------


@dataclass
class Source:
    """One input: its quality `Summary` and, from ``bench.json``, the `Bench` around it."""

    label: str
    path: Path
    summary: Summary
    bench: Bench | None = None

    @property
    def teacher(self) -> ModelScores:
        return self.summary.teacher

    @property
    def languages(self) -> list[str]:
        return self.summary.languages

    @property
    def headline(self) -> ModelScores:
        final = self.summary.final
        if final is None:
            raise RecordError(f"{self.path}: no student to report on")
        return final

    def kept(self, m: ModelScores, lang: str | None = None) -> float | None:
        return m.retained(self.teacher, lang)

    def compression(self, m: ModelScores) -> float:
        return self.teacher.params / m.params


def load_source(path: str | Path) -> Source:
    """A run directory (``bench.json``, else ``summary.json``) or one of those files."""
    p = Path(path)
    if p.is_dir():
        f = next((p / n for n in (BENCH_NAME, SUMMARY_NAME) if (p / n).is_file()), None)
        if f is None:
            raise FileNotFoundError(f"{p}: no {BENCH_NAME} (run 'xdistil bench {p}' first) and no summary.json")
        label = p.resolve().name
    elif p.is_file():  # runs/demo/bench.json -> "demo"; results/demo.bench.json -> "demo"
        stem = p.name.split(".")[0]
        f, label = p, stem if stem not in ("bench", "summary") else p.resolve().parent.name
    else:
        raise FileNotFoundError(f"{p}: no such file or directory")
    rec = read(f)
    if isinstance(rec, Bench):
        src = Source(label, f, rec.quality, rec)
    elif isinstance(rec, Summary):
        src = Source(label, f, rec)
    else:
        raise RecordError(f"{f}: a {rec.format()} record; the report reads bench.json or summary.json")
    if not src.summary.students or not any(m.role == "teacher" for m in src.summary.models):
        raise RecordError(f"{f}: needs a teacher and at least one student")
    return src


def _unique_labels(sources: list[Source]) -> None:
    labels = [s.label for s in sources]
    for s in sources:
        if labels.count(s.label) > 1:
            s.label = f"{s.path.resolve().parent.parent.name}/{s.label}"


def _group(m: ModelScores) -> str:
    """The staged sequence (benchmark variant) a student belongs to; "" for a run's one sequence."""
    return m.group or ""


# ---- figures from a source ----------------------------------------------------------------


def best_speedup(s: Source, batch: int):
    """The fastest student cell against the teacher in PyTorch fp32 at ``batch`` (None: not measured)."""
    rows = [x for x in (s.bench.speedups if s.bench else []) if x.batch == batch]
    return max(rows, key=lambda x: x.speedup, default=None)


def _speedup_batch(s: Source) -> int | None:
    """Batch 32 (XtremeDistil's) when measured, else the measured batch closest to it."""
    batches = sorted({x.batch for x in (s.bench.speedups if s.bench else [])})
    return min(batches, key=lambda b: (abs(b - SPEEDUP_BATCH), b), default=None)


def verdict(s: Source, target: float) -> str:
    m = s.headline
    kept = s.kept(m)
    who = "final student" if s.bench or s.summary.headline else "best student"
    text = (f"**{s.label}**: the {who} `{m.name}` keeps **{pct(kept)}** of the teacher's F1 "
            f"({m.f1_avg:.2f} vs {s.teacher.f1_avg:.2f}, average over {', '.join(s.languages)}) with "
            f"**{times(s.compression(m))}** fewer parameters")
    b = _speedup_batch(s)
    sp = best_speedup(s, b) if b is not None else None
    if sp:
        text += (f" and is **{times(sp.speedup)}** faster than the teacher at batch {b} "
                 f"({sp.runtime} {sp.precision} against PyTorch fp32, on this machine's CPU)")
    if kept is None:
        return text + ": **no verdict**: the teacher's F1 is 0, so there is no share to keep (n/a)."
    langs = [lang for lang in s.languages if s.kept(m, lang) is not None]
    weakest = min(langs, key=lambda lang: s.kept(m, lang), default=None)
    return text + (f": **{'meets' if kept >= target else 'misses'} the ≥ {target:g} % target**"
                   + (f" (weakest language: {weakest}, {pct(s.kept(m, weakest))})" if weakest and len(langs) > 1
                      else "") + ".")


def _cost(s: Source, batch: int) -> dict[str, list[LatencyCell]]:
    """Model name -> its latency cells at ``batch``. A stage student of the timed student's
    architecture and size costs what the timed one does (same graph, same shapes)."""
    cells = [c for c in (s.bench.cells if s.bench else []) if c.batch == batch]
    by_model: dict[str, list[LatencyCell]] = {}
    for c in cells:
        by_model.setdefault(c.model, []).append(c)
    if "teacher" in by_model:  # bench times the reference teacher as "teacher" (co-finetuned: a member)
        by_model.setdefault(s.teacher.name, by_model["teacher"])
    timed = {m.name: m for m in s.summary.models if m.name in by_model}
    for m in s.summary.models:
        twin = next((t for t in timed.values() if t.role == m.role and t.params == m.params and t.arch == m.arch), None)
        if m.name not in by_model and twin is not None:
            by_model[m.name] = by_model[twin.name]
    return by_model


# ---- plots ------------------------------------------------------------------------------


def _figure(width: float = 8.0, height: float = 4.5):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    return fig, fig.add_subplot()


def _save(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    # bbox "tight": legends placed outside the axes are kept, never drawn over the data
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})  # reruns diff cleanly
    write_bytes(path, buf.getvalue())


def _legend_below(ax, n: int) -> None:
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=min(4, max(1, n)), frameon=False)


def plot_f1_retained(sources: list[Source], path: Path) -> None:
    """Bars per language: each teacher (grey, the reference) and each headline student, % kept on top."""
    import numpy as np

    langs = list(dict.fromkeys(lang for s in sources for lang in s.languages)) + ["avg"]
    series = []  # (label, values, teacher?, kept %)
    for s in sources:
        for m, is_teacher in ((s.teacher, True), (s.headline, False)):
            name = m.name if len(sources) == 1 else f"{s.label}: {m.name}"
            vals = [m.f1_avg if lang == "avg" else m.f1.get(lang) for lang in langs]
            kept = None if is_teacher else [s.kept(m, None if lang == "avg" else lang) for lang in langs]
            series.append((name, vals, is_teacher, kept))
    fig, ax = _figure(min(14.0, max(7.0, 0.35 * len(langs) * len(series) + 3)))
    x = np.arange(len(langs))
    width = 0.8 / len(series)
    for i, (name, vals, is_teacher, kept) in enumerate(series):
        bars = ax.bar(x - 0.4 + width * (i + 0.5), [np.nan if v is None else v for v in vals], width, label=name,
                      color="0.75" if is_teacher else f"C{i}", edgecolor="0.3" if is_teacher else None)
        for bar, k in zip(bars, kept or [], strict=False):
            if k is not None:
                ax.annotate(f"{k:.0f}%", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                            va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x, langs)
    ax.set_ylabel("dev F1")
    ax.set_title("F1 per language against the teacher (grey); % of the teacher's F1 on the bars", fontsize=10)
    ax.set_ylim(0, 110)
    _legend_below(ax, len(series))
    _save(fig, path)


def plot_f1_vs_params(sources: list[Source], path: Path, target: float) -> None:
    """Every model as a point: average F1 against parameters (log scale); colour = staged sequence.

    Points are named by the legend (one entry per sequence), not by labels on the plot, so
    many students of one size do not write over each other."""
    fig, ax = _figure()
    k = 0
    for j, s in enumerate(sources):
        groups: dict[str, list[ModelScores]] = {}
        for m in s.summary.models:
            groups.setdefault("teacher" if m.role == "teacher" else _group(m) or "student", []).append(m)
        for g, ms_ in groups.items():
            teacher = g == "teacher"
            ax.scatter([m.params for m in ms_], [m.f1_avg for m in ms_], marker="sD^v"[j % 4] if teacher else "o",
                       s=60 if teacher else 30, color="0.45" if teacher else f"C{k % 10}", alpha=0.85,
                       label=g if len(sources) == 1 else f"{s.label}: {g}", edgecolors="none")
            k += 0 if teacher else 1
        ax.scatter([s.headline.params], [s.headline.f1_avg], s=150, facecolors="none", edgecolors="black",
                   linewidths=1.2)
        ax.axhline(s.teacher.f1_avg * target / 100, color="0.5", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("dev F1 (average over languages)")
    ax.set_title(f"F1 against size (grey: teachers; ringed: the verdict's student; dotted: {target:g} % "
                 "of the teacher)", fontsize=9)
    _legend_below(ax, k + len(sources))
    _save(fig, path)


def frontier_points(s: Source, batch: int) -> list[tuple[str, str, float, float]]:
    """(model, "runtime precision", ms per sentence, average F1) of every model of a run in every runtime."""
    return [(m.name, f"{c.runtime} {c.precision}", c.median_ms / c.batch, m.f1_avg)
            for m in s.summary.models for c in _cost(s, batch).get(m.name, [])]


def plot_frontier(sources: list[Source], path: Path) -> None:
    """Average F1 against ms per sentence (log) for every model and runtime; the frontier drawn and named."""
    fig, ax = _figure()
    for k, s in enumerate(sources):
        pts = frontier_points(s, _speedup_batch(s) or SPEEDUP_BATCH)
        for rt, marker in zip(sorted({p[1] for p in pts}), "os^DvP", strict=False):
            sel = [p for p in pts if p[1] == rt]
            ax.scatter([p[2] for p in sel], [p[3] for p in sel], marker=marker, color=f"C{k}", alpha=0.8,
                       label=rt if len(sources) == 1 else f"{s.label}: {rt}")
        front: list[tuple] = []
        for p in sorted(pts, key=lambda p: (p[2], -p[3])):  # fastest first: keep each gain in F1
            if not front or p[3] > front[-1][3]:
                front.append(p)
        if front:
            ax.step([p[2] for p in front], [p[3] for p in front], where="post", color=f"C{k}", linewidth=1,
                    label="frontier" if len(sources) == 1 else f"{s.label}: frontier")
        for p in front:  # few points, each faster and more accurate than the last: names do not collide
            ax.annotate(f"{p[0]} ({p[1]})", (p[2], p[3]), fontsize=7, xytext=(4, -10), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(f"median ms per sentence at batch {SPEEDUP_BATCH} (log scale, CPU)")
    ax.set_ylabel("dev F1 (average over languages)")
    ax.set_title("F1 against latency: every model of the run in every runtime (step line: the frontier)",
                 fontsize=9)
    _legend_below(ax, len(ax.get_legend_handles_labels()[0]))
    _save(fig, path)


def plot_latency(sources: list[Source], path: Path) -> None:
    """Median ms per call against batch size, log-log, one line per model and runtime."""
    fig, ax = _figure()
    batches: set[int] = set()
    n = 0
    for s in sources:
        cells = s.bench.cells if s.bench else []
        batches |= {c.batch for c in cells}
        for key in dict.fromkeys(c.key for c in cells):
            pts = sorted((c.batch, c.median_ms) for c in cells if c.key == key)
            label = " ".join(key) if len(sources) == 1 else f"{s.label}: {' '.join(key)}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                    linestyle="--" if key[0] == "teacher" else "-", label=label)
            n += 1
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted(batches), [str(b) for b in sorted(batches)])  # the measured sizes, not powers of 10
    ax.minorticks_off()
    ax.set_xlabel("batch size (sentences per call)")
    ax.set_ylabel("median ms per call")
    ax.set_title("Latency against batch size (CPU; dashed: teacher)")
    _legend_below(ax, n)
    _save(fig, path)


def plot_stages(sources: list[Source], path: Path) -> None:
    """Average F1 after every stage, one line per staged sequence; the teacher dashed."""
    fig, ax = _figure()
    k = 0
    for s in sources:
        groups: dict[str, list[ModelScores]] = {}
        for m in s.summary.students:
            if m.stage is not None:
                groups.setdefault(_group(m), []).append(m)
        for g, ms_ in groups.items():
            ms_ = sorted(ms_, key=lambda m: m.stage)
            label = " / ".join(x for x in (s.label if len(sources) > 1 else "", g) if x) or "student (average)"
            ax.plot([m.stage for m in ms_], [m.f1_avg for m in ms_], marker="o", color=f"C{k % 10}", label=label,
                    linewidth=2)
            if len(sources) == 1 and len(groups) == 1 and len(s.languages) > 1:
                for j, lang in enumerate(s.languages):
                    ax.plot([m.stage for m in ms_], [m.f1[lang] for m in ms_], linewidth=0.8, alpha=0.6,
                            color=f"C{(j + 1) % 10}", label=lang)
            k += 1
        ax.axhline(s.teacher.f1_avg, color="0.4", linestyle="--", linewidth=1,
                   label="teacher" if len(sources) == 1 else f"teacher ({s.label})")
    ax.set_xlabel("stage")
    ax.set_ylabel("dev F1")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title("F1 after each stage (thick: average over languages)")
    _legend_below(ax, len(ax.get_legend_handles_labels()[0]))
    _save(fig, path)


# ---- tables -------------------------------------------------------------------------------


def _describe_student(st: dict | None) -> str:
    if not st:
        return "–"
    from xdistil.students import registry

    arch = st.get("arch", "?")
    try:
        return f"{arch} ({registry.get(arch).describe(st)})"
    except (ValueError, TypeError, KeyError):
        return arch


def transfer_protocol(p: dict) -> str:
    """The protocol's transfer-set line: its sentences, the unlabeled ones and the entity-augmented
    variants (``augmented``, `xdistil.labeling`) counted apart from the labeled budget."""
    t = p.get("transfer") if isinstance(p.get("transfer"), dict) else {}
    if t.get("counts"):
        total = sum(sum(c.values()) for c in t["counts"].values())
        unl = sum(c.get("transfer", 0) for c in t["counts"].values())
        aug = sum(c.get("augmented", 0) for c in t["counts"].values())
        return (f"{total:,} sentences ({unl:,} unlabeled + "
                + (f"{aug:,} entity-augmented variants + " if aug else "") + "the labeled budget)")
    limit = t.get("limit_per_language", p.get("transfer_limit"))
    return "all available" if limit is None else f"at most {limit:,} per language"


def _protocol_table(sources: list[Source]) -> Table:

    def sel(p):
        v = p.get("selection_slice")
        return f"last {v} sentences of the budget" if isinstance(v, int) else str(v or "–")

    fields = [("languages", lambda s, p: ", ".join(s.languages)),
              ("labeled budget", lambda s, p: f"{p.get('labeled_budget', '–')} sentences per language"),
              ("selection slice", lambda s, p: sel(p)),
              ("transfer set", lambda s, p: transfer_protocol(p)),
              ("evaluation split", lambda s, p: p.get("evaluation", "–")),
              ("metric", lambda s, p: p.get("metric", "–")),
              ("teacher", lambda s, p: f"{p.get('teacher') or s.teacher.arch or s.teacher.name} "
                                       f"({params(s.teacher.params)})"),
              ("student", lambda s, p: _describe_student(p.get("student"))
               + (f"; stages {', '.join(p['stages'])}" if p.get("stages") else ""))]
    return Table(["", *[s.label for s in sources]],
                 [[f, *[fn(s, s.summary.protocol) for s in sources]] for f, fn in fields])


def _quality_table(s: Source) -> Table:
    header = ["model", "params", "compression", *s.languages, "avg", "% of teacher"]
    rows = []
    for m in s.summary.models:
        cells = [num(m.f1.get(lang)) + ("" if m.role == "teacher" else f" ({pct(s.kept(m, lang))})")
                 for lang in s.languages]
        row = [m.name, params(m.params), times(s.compression(m)), *cells, num(m.f1_avg), pct(s.kept(m))]
        rows.append([f"**{c}**" for c in row] if m is s.headline else row)
    return Table(header, rows, set(range(1, len(header))))


def _per_type_blocks(s: Source) -> list[Block]:
    """F1 / precision / recall per language and entity type of the teacher and the verdict's student."""
    pair = [s.teacher, s.headline]
    if not any(ls.per_type for m in pair for ls in m.languages.values()):
        return [Para(f"Per-type scores: not recorded in `{s.path.name}` (written before xdistil kept them; "
                     "rerun the evaluation for them).")]
    header = ["language", "type"] + [f"{m.name} {x}" for m in pair for x in ("F1", "P", "R")] + ["gold entities"]
    rows = []
    for lang in s.languages:
        types = sorted({t for m in pair for t in m.languages[lang].per_type} | {"all"}, key=lambda t: (t == "all", t))
        for t in types:
            row, gold = [lang, "**all**" if t == "all" else t], None
            for m in pair:
                ls = m.languages[lang]
                sc = ls if t == "all" else ls.per_type.get(t)
                row += [num(sc.f1), num(sc.precision), num(sc.recall)] if sc else ["–"] * 3
                gold = gold if gold is not None else (sc.entities if sc else None)
            rows.append(row + ["–" if gold is None else f"{gold:,}"])
    return [Table(header, rows, set(range(2, len(header))))]


def _anchor_blocks(sources: list[Source]) -> list[Block]:
    """The published figures beside ours, only for runs whose languages overlap the paper's 41."""
    ours = [s for s in sources if PAPER_LANGUAGES & set(s.languages)]
    if not ours:
        return [Para("XtremeDistil's figures are over WikiANN's 41 languages; none of this report's runs uses one "
                     "of them, so its anchors are left out.")]
    a = ANCHORS

    def speed(s, b):
        sp = best_speedup(s, b)
        return f"{times(sp.speedup)} (CPU, batch {b}, {sp.runtime} {sp.precision})" if sp else "not measured"

    def best(s):
        return max(s.summary.students, key=lambda m: m.f1_avg)

    def row(name, paper, fn):
        return [name, paper, *[fn(s) for s in ours]]

    overlap = sorted({lang for s in ours for lang in s.languages} & PAPER_LANGUAGES)
    rows = [
        row("teacher F1", f"{a['teacher_f1']:.2f} (mBERT, 41 languages, Table 5)",
            lambda s: f"{s.teacher.f1_avg:.2f} ({s.summary.protocol.get('teacher') or 'teacher'}, "
                      f"{n_(len(s.languages), 'language')})"),
        row("best student F1", f"{a['best_student_f1']:.2f} (Table 5)",
            lambda s: f"{best(s).f1_avg:.2f} ({best(s).name})"),
        row("student F1", f"{a['student_f1']:.2f} (BiLSTM E=50, H=200, Table 16)",
            lambda s: f"{s.headline.f1_avg:.2f} ({s.headline.name})"),
        row("share of the teacher's F1 kept",
            f"{pct(100 * a['student_f1'] / a['teacher_f1'])} (best: {pct(100 * a['best_student_f1'] / a['teacher_f1'])})",
            lambda s: f"{pct(s.kept(s.headline))} (best: {pct(s.kept(best(s)))})"),
        row("student parameters", params(int(a["student_params"])), lambda s: params(s.headline.params)),
        row("compression", times(a["compression"]), lambda s: times(s.compression(s.headline))),
        row("batch speedup", f"{times(a['batch_speedup'])} (GPU, batch 32)", lambda s: speed(s, SPEEDUP_BATCH)),
        row("online speedup", f"{times(a['online_speedup'])} (CPU, batch 1)", lambda s: speed(s, 1)),
    ]
    left_out = [s.label for s in sources if s not in ours]
    return [Para("XtremeDistil (Mukherjee & Hassan Awadallah, ACL 2020) distilled mBERT on WikiANN over 41 "
                 f"languages, {', '.join(overlap)} among them; its speedups are against mBERT-base in PyTorch, the "
                 "batch one on a GPU. Ours are against each run's teacher on this machine's CPU, over the run's "
                 "languages. Compare the ratios (share kept, compression, speedup); absolute F1 depends on the "
                 "teacher, the languages and the data."
                 + (f" Left out (no language in common with the paper): {', '.join(left_out)}." if left_out else "")),
            Table(["", "XtremeDistil (published)", *[s.label for s in ours]], rows)]


def _latency_blocks(b: Bench) -> list[Block]:
    st = b.latency_settings
    batches = st["batch_sizes"]
    cell = {(*c.key, c.batch): c.median_ms for c in b.cells}
    keys = list(dict.fromkeys(c.key for c in b.cells))
    size = {m["name"]: m["params"] for m in b.latency_models}
    timed = Table(["model", "params", "runtime", "precision", *[f"batch {x}" for x in batches]],
                  [[k[0], params(size[k[0]]), k[1], k[2], *[ms(cell.get((*k, x))) for x in batches]] for k in keys],
                  {1, *range(4, 4 + len(batches))})
    speed = {(x.model, x.runtime, x.precision, x.batch): x.speedup for x in b.speedups}
    skeys = list(dict.fromkeys((x.model, x.runtime, x.precision) for x in b.speedups))
    speeds = Table(["student", "runtime", "precision", *[f"batch {x}" for x in batches]],
                   [[*k, *[times(speed.get((*k, x))) for x in batches]] for k in skeys], set(range(3, 3 + len(batches))))
    files = "; ".join(f"{name}: " + ", ".join(f"{p} {mb(v)}" for p, v in f.items()) for name, f in b.exports.items())
    return [
        Para(f"Median ms per call, {st['seq']} word pieces per row ({st['inputs']}); "
             f"{n_(st['warmup'], 'warm-up call')} at most, then at least {n_(st['min_repeats'], 'timed call')}"
             + (f" and {st['cell_seconds']:g} s" if st["cell_seconds"] else "") + " per cell; "
             f"{n_(st['threads'], 'intra-op thread')} for PyTorch and ONNX Runtime alike; all in one process, on "
             f"{machine_text(b.provenance)}. Whole latency run: {st['wall_s']} s."),
        timed,
        Para("Speedup of the student over the teacher in PyTorch fp32, at the same batch size:"),
        speeds,
        *([Para(f"ONNX files: {files}.")] if files else []),
    ]


def _throughput_blocks(benched: list[Source]) -> list[Block]:
    many = len(benched) > 1
    e2e = [[s.label, t.name, t.runtime or "–", f"{t.sentences:,}", f"{t.words:,}", num(t.seconds, 2),
            num(t.words_per_s, 0), num(t.sentences_per_s, 1)] for s in benched for t in s.bench.end_to_end]
    lab = [[s.label, f"{t.sentences or 0:,}", num(t.sentences_per_s, 1), num(t.extra.get("forward_sentences_per_s"), 1),
            num(t.extra.get("overhead"), 3), str(t.extra.get("processes", 1)), str(t.extra.get("batch_size", "–"))]
           for s in benched if (t := s.bench.labeling)]
    blocks: list[Block] = [
        Heading(3, "Tagging raw text end to end"),
        Para("Words per second tagging the same raw dev text: the torch-free runtime (`Predictor.predict`: "
             "tokenisation, windows, ONNX Runtime, decoding) on the student's exports, and the teacher through the "
             "Hugging Face token-classification pipeline. One warm-up batch, then one timed pass over all texts."),
        Table(["run", "model", "runtime", "sentences", "words", "seconds", "words/s", "sentences/s"], e2e,
              set(range(3, 8))) if e2e else Para("Not measured (bench.json without end-to-end figures)."),
        Heading(3, "Labeling the transfer set"),
        Para("End to end (reading, windowing, the teacher's forward pass, writing the Arrow chunks) against the "
             "teacher's bare forward pass; overhead = end-to-end time / forward time."),
        Table(["run", "sentences", "end to end (sent/s)", "forward alone (sent/s)", "overhead", "processes",
               "batch"], lab, set(range(1, 7))) if lab else Para("No labeling figures recorded."),
        Heading(3, "Distillation"),
        Para("Tokens (real word pieces) per second of training, per stage, over all its unfreezing phases "
             "(the per-epoch scoring of the selection slice included)."),
    ]
    for s in benched:
        stages: dict[tuple, list] = {}
        for st in s.bench.phases:
            stages.setdefault((st.stage_index, st.stage, st.student), []).append(st)
        rows = []
        for (_, stage, student), phases in stages.items():
            sec = sum(x.seconds or 0 for x in phases)
            rows.append([stage, student or "–", str(len(phases)), str(sum(x.epochs for x in phases)), num(sec, 1),
                         num(sum(x.tokens for x in phases) / sec if sec else None, 0)])
        if rows:
            sec = sum(x.seconds or 0 for x in s.bench.phases)
            tok = sum(x.tokens for x in s.bench.phases)
            rows.append(["**all**", "", "", "", f"**{num(sec, 1)}**", f"**{num(tok / sec if sec else None, 0)}**"])
            blocks += ([Para(f"**{s.label}**")] if many else []) + [
                Table(["stage", "student", "phases", "epochs", "seconds", "tokens/s"], rows, {2, 3, 4, 5})]
    return blocks


def _memory_table(benched: list[Source]) -> Table:
    rows = []
    for s in benched:
        lab, tr = s.bench.memory.get("labeling", {}), s.bench.memory.get("training", {})
        per = ", ".join(f"{k} {mb(v)}" for k, v in tr.get("per_stage", {}).items() if v)
        rows.append([s.label, mb(lab.get("peak_rss_mb")), mb(tr.get("peak_rss_mb")), per or "–",
                     tr.get("scope") or lab.get("scope") or "–"])
    return Table(["run", "labeling peak", "training peak", "training peak per stage", "scope"], rows, {1, 2})


def _provenance_table(benched: list[Source]) -> Table:
    rows = []
    for s in benched:
        for section, prov in s.bench.sections.items():
            rows.append([s.label, section, machine_text(prov), versions_text(prov),
                         f"`{prov.command}`" if prov.command else "not recorded"])
    return Table(["run", "figures", "machine", "versions", "command"], rows)


# ---- the report ---------------------------------------------------------------------------


def build(sources: list[Source], target: float = TARGET_RETAINED, plots: dict[str, str] | None = None,
          data: Sequence[str] = ()) -> list[Block]:
    """The report's blocks; ``plots``: the plot files written (key -> file name); ``data``: the JSON copies."""
    plots = plots or {}
    benched = [s for s in sources if s.bench]
    blocks: list[Block] = [Heading(1, REPORT_TITLE), *[Para(verdict(s, target)) for s in sources]]
    glance = []
    for s in sources:
        m, b = s.headline, _speedup_batch(s)
        sp, on = (best_speedup(s, b) if b else None), best_speedup(s, 1)
        kept = s.kept(m)
        glance.append([s.label, m.name, pct(kept), times(s.compression(m)),
                       f"{times(sp.speedup)} (batch {b})" if sp else "–", times(on.speedup) if on else "–",
                       mb(s.bench.exports.get(m.name, {}).get("int8") if s.bench else None),
                       "n/a" if kept is None else "**yes**" if kept >= target else "**no**"])
    blocks.append(Table(["run", "student", "F1 kept", "compression", "speedup", "speedup batch 1", "int8 ONNX",
                         f"≥ {target:g} % kept"], glance, {2, 3, 4, 5, 6}))
    if benched:
        machines = sorted({machine_text(s.bench.provenance) for s in benched})
        blocks.append(Para("Timings depend on the machine: the latencies here were measured on "
                           f"{'; '.join(machines)}, under whatever else was running (load average in `bench.json`). "
                           "Run `xdistil bench RUN_DIR` to measure on yours. F1 does not depend on the machine."))
    if data:
        blocks.append(Para("Data: " + ", ".join(f"`{d}`" for d in data) + " (every figure below, machine-readable)."))
    if missing := [s.label for s in sources if not s.bench]:
        blocks.append(Para(f"Quality only (no bench.json) for: {', '.join(missing)}."))

    blocks += [Heading(2, "Protocol"), _protocol_table(sources),
               Heading(2, "Quality per language"),
               Para("Dev F1 (seqeval, entity level, IOB2 strict) per language; in brackets the share of the "
                    "teacher's F1 on that language (n/a where the teacher's F1 is 0). Compression: teacher "
                    "parameters / student parameters. The student in bold is the one the verdict is about.")]
    for s in sources:
        blocks += ([Heading(3, s.label)] if len(sources) > 1 else []) + [_quality_table(s)]
    blocks += [Image(plots[k], alt) for k, alt in (("f1_retained", "F1 retained per language"),
                                                   ("f1_vs_params", "F1 against parameters")) if k in plots]
    blocks += [Heading(2, "Per entity type"),
               Para("Entity-level F1, precision (P) and recall (R) per language and type (PER / LOC / ORG) of the "
                    "teacher and of the student the verdict is about; **all**: every type (micro average).")]
    for s in sources:
        blocks += ([Heading(3, s.label)] if len(sources) > 1 else []) + _per_type_blocks(s)
    blocks += [Heading(2, "Published anchors"), *_anchor_blocks(sources)]
    if "stages" in plots:
        blocks += [Heading(2, "Stage by stage"),
                   Para("Average dev F1 after each distillation stage (each stage restores its best checkpoint); "
                        "per-stage figures per language are in the quality table."),
                   Image(plots["stages"], "F1 after each stage")]
    if benched:
        blocks.append(Heading(2, "F1 against latency"))
        blocks.append(Para(f"Every model of the run in every runtime it was timed in, at batch {SPEEDUP_BATCH} "
                           "(or the measured batch closest to it); a stage student of the final student's "
                           "architecture and size is placed at the final student's cost (the same graph). The step "
                           "line is the frontier: no model left of it is more accurate."))
        if "frontier" in plots:
            blocks.append(Image(plots["frontier"], "F1 against latency"))
        blocks.append(Heading(2, "Latency"))
        for s in benched:
            blocks += ([Heading(3, s.label)] if len(benched) > 1 else []) + _latency_blocks(s.bench)
        if "latency" in plots:
            blocks.append(Image(plots["latency"], "latency against batch size"))
        blocks += [Heading(2, "Throughput"), *_throughput_blocks(benched),
                   Heading(2, "Memory"),
                   Para("Peak resident memory (RSS) of labeling and of training; scope `step`: the high-water "
                        "mark reset when the work started, so loading earlier steps is not counted."),
                   _memory_table(benched),
                   Heading(2, "Where the figures were measured"), _provenance_table(benched)]
    return blocks


REPORT_RECORD = "report.files.json"
"""Beside a report: the names `write_report` wrote into its folder, the ones it may overwrite."""
REPORT_TITLE = "xdistil benchmark report"


def _claim(out: Path, names: list[str]) -> None:
    """Make sure ``out`` holds none of ``names`` that xdistil did not write (`NotOurs` naming
    them otherwise: a report never overwrites a user's file), then record them as ours. Ours:
    the names the folder's record lists, or every report name in a folder whose report.md is
    one of ours from before the record existed."""
    before = json.loads((out / REPORT_RECORD).read_text(encoding="utf-8")).get("entries", []) \
        if (out / REPORT_RECORD).is_file() else []
    legacy = out / "report.md"
    if not before and legacy.is_file() and legacy.read_text(encoding="utf-8", errors="replace").startswith(
            f"# {REPORT_TITLE}\n"):
        before = [*names, *PLOTS.values()]
    if clash := sorted(n for n in names if (out / n).exists() and n not in before):
        raise NotOurs(f"{out} holds {listing(clash)}, which xdistil did not write and never overwrites: move "
                      f"{'them' if len(clash) > 1 else 'it'} away, or pass another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / REPORT_RECORD, {"entries": sorted({*before, *names})})


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path, target: float = TARGET_RETAINED) -> dict:
    """Write ``report.md``, ``report.html``, the PNG plots and a copy of each ``bench.json`` into ``out_dir``.

    Returns ``{"markdown": path, "html": path, "plots": [paths], "data": [paths]}``.
    """
    if not run_dirs:
        raise ValueError("give at least one run directory")
    sources = [load_source(p) for p in run_dirs]
    _unique_labels(sources)
    out = Path(out_dir)
    timed = any(s.bench and s.bench.cells for s in sources)
    makers = {"f1_retained": (True, lambda p: plot_f1_retained(sources, p)),
              "f1_vs_params": (True, lambda p: plot_f1_vs_params(sources, p, target)),
              "frontier": (timed, lambda p: plot_frontier(sources, p)),
              "latency": (timed, lambda p: plot_latency(sources, p)),
              "stages": (any(m.stage is not None for s in sources for m in s.summary.students),
                         lambda p: plot_stages(sources, p))}
    plots = {key: PLOTS[key] for key, (wanted, _) in makers.items() if wanted}
    benched = [s for s in sources if s.bench]  # their figures travel with the report
    data = [out / (BENCH_NAME if len(sources) == 1 else f"{s.label.replace('/', '-')}.{BENCH_NAME}") for s in benched]
    copies = {d: s.path for d, s in zip(data, benched, strict=True) if d.resolve() != s.path.resolve()}
    _claim(out, ["report.md", "report.html", *plots.values(), *(d.name for d in copies)])
    for key, name in plots.items():
        makers[key][1](out / name)
    for dest, src in copies.items():
        copy_file(src, dest)
    blocks = build(sources, target, plots, [d.name for d in data])
    write_text(out / "report.md", to_markdown(blocks))
    write_text(out / "report.html", to_html(blocks, REPORT_TITLE))
    return {"markdown": out / "report.md", "html": out / "report.html", "plots": [out / f for f in plots.values()],
            "data": data}

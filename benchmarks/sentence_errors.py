"""What the student gets wrong on sentences that its teacher gets right (issue 23, item 6).

    python -m benchmarks.sentence_errors [--config benchmarks/configs/sentences-full.yaml] \
        [--run runs/sentences-full] [--groups in out] [--variants baseline] \
        [--out benchmarks/results/sentences]

Reads what `benchmarks.sentences` built (one teacher per group, one student per variant) and
tags every test of the group with both. Each gold entity the *teacher* finds exactly (span and
type) is a chance for the student; the student **keeps** it when it finds it exactly too.
Where it does not, the failure is one of:

- ``missed``: no student entity overlaps the gold one;
- ``type``: the same words, another type;
- ``boundary``: an overlapping entity of the same type with other boundaries;
- ``boundary+type``: an overlapping entity of another type and other boundaries.

The keep rate is broken down by what the entity and its sentence look like: type, length in
words, casing (a name with a lower-case word, as in UNER's web text), whether it opens the
sentence, the sentence's length (fragments against sentences *within* one test), and whether
the student's capped vocabulary splits its words into more pieces than the teacher's. The
student's own false positives (entities neither gold nor the teacher has) are counted beside.

Writes ``errors.json`` and ``errors.md`` into ``--out``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from xdistil_export.atomic import write_json
from xdistil_export.runtime import spans_from_tags
from xdistil_export.windows import word_pieces

from benchmarks import preamble
from benchmarks.sentences import load
from xdistil.report import Heading, Para, Table, write_page

FAILURES = ("missed", "type", "boundary", "boundary+type")
SENT_BUCKETS = ((1, 10, "1-10 words"), (11, 25, "11-25 words"), (26, 10**9, "26+ words"))


def failure(gold: tuple[str, int, int], pred: list[tuple[str, int, int]]) -> str | None:
    """None when ``pred`` holds ``gold`` exactly, else the kind of miss (see the module doc)."""
    if gold in pred:
        return None
    typ, s, e = gold
    over = [p for p in pred if p[1] < e and s < p[2]]
    if not over:
        return "missed"
    if any(p[1] == s and p[2] == e for p in over):
        return "type"
    return "boundary" if any(p[0] == typ for p in over) else "boundary+type"


def casing(words: list[str]) -> str:
    """``lower`` when a word of the name starts with a lower-case letter, ``upper`` for all
    capitals, ``title`` otherwise."""
    alpha = [w for w in words if w[:1].isalpha()]
    if any(w[0].islower() for w in alpha):
        return "lower"
    if alpha and all(w.isupper() and len(w) > 1 for w in alpha):
        return "upper"
    return "title"


def piece_counts(tokenizer, sentences: list[list[str]]) -> list[list[int]]:
    """Pieces per word, per sentence, as the windows cut them (`xdistil_export.windows.word_pieces`:
    a word with none counts one; which id stands in for it does not matter to a count)."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    return [[len(p) for p in word_pieces(backend, words, unk_id=0)] for words in sentences]


def analyse(sentences, gold_tags, teacher_tags, student_tags, teacher_pieces, student_pieces) -> dict:
    """Counts over one test (see the module doc): per attribute value, [teacher-right, kept]."""
    by: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    fails: Counter = Counter()
    fails_by_type: dict[str, Counter] = defaultdict(Counter)
    spurious = {"student": 0, "teacher": 0}
    examples: list[dict] = []
    for i, words in enumerate(sentences):
        g, t, s = (spans_from_tags(x[i]) for x in (gold_tags, teacher_tags, student_tags))
        spurious["student"] += sum(1 for p in s if p not in g and p not in t)
        spurious["teacher"] += sum(1 for p in t if p not in g)
        n = len(words)
        bucket = next(label for lo, hi, label in SENT_BUCKETS if lo <= n <= hi)
        for ent in g:
            if ent not in t:
                continue
            typ, a, b = ent
            miss = failure(ent, s)
            more = sum(student_pieces[i][a:b]) > sum(teacher_pieces[i][a:b])
            attrs = {"type": typ, "length": str(min(b - a, 3)) + ("+" if b - a >= 3 else ""),
                     "casing": casing(words[a:b]), "position": "first word" if a == 0 else "later",
                     "sentence": bucket, "pieces": "student splits more" if more else "same pieces"}
            for k, v in attrs.items():
                row = by[k][v]
                row[0] += 1
                row[1] += miss is None
            if miss is not None:
                fails[miss] += 1
                fails_by_type[typ][miss] += 1
                if len(examples) < 12:
                    examples.append({"words": " ".join(words), "entity": " ".join(words[a:b]), "type": typ,
                                     "failure": miss,
                                     "student": [(p[0], " ".join(words[p[1]:p[2]])) for p in s
                                                 if p[1] < b and a < p[2]]})
    return {"by": {k: dict(v) for k, v in by.items()}, "failures": dict(fails),
            "failures_by_type": {k: dict(v) for k, v in fails_by_type.items()},
            "spurious": spurious, "examples": examples}


def merge(parts: list[dict]) -> dict:
    """Sum the counts of several tests."""
    by: dict = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    fails, fbt, spur = Counter(), defaultdict(Counter), Counter()
    for p in parts:
        for k, vals in p["by"].items():
            for v, (n, kept) in vals.items():
                by[k][v][0] += n
                by[k][v][1] += kept
        fails.update(p["failures"])
        for t, c in p["failures_by_type"].items():
            fbt[t].update(c)
        spur.update(p["spurious"])
    return {"by": {k: dict(v) for k, v in by.items()}, "failures": dict(fails),
            "failures_by_type": {k: dict(v) for k, v in fbt.items()}, "spurious": dict(spur)}


def run(config: str | Path | dict, run_dir: Path, out: Path, groups: list[str] | None, variants: list[str],
        command: str = "") -> dict:
    from xdistil.runner import outputs
    from xdistil.taggers import load_tagger, predict_tags

    grid = load(config)
    result: dict = {"command": command, "groups": {}}
    for g in groups or list(grid.groups):
        built = {name: outputs(run_dir / g / name) for name in variants}
        built = {name: o for name, o in built.items() if o.student is not None}  # distilled (yet)
        if not built:
            continue
        base = grid.config(g)
        teacher = load_tagger(next(iter(built.values())).teacher)
        flat = {key: t["sentences"] for key, t in
                grid.flat_tests(base, g, {lab[2:] for lab in teacher.labels if lab != "O"}).items()}
        t_tags = {k: predict_tags(teacher, s, base.teacher.eval_batch_size) for k, s in flat.items()}
        for name, o in built.items():
            student = load_tagger(o.student)
            per_test = {}
            for key, sents in flat.items():
                words = [s.words for s in sents]
                s_tags = predict_tags(student, sents, 64)
                per_test[key] = analyse(words, [s.tags for s in sents], t_tags[key], s_tags,
                                        piece_counts(teacher.tokenizer, words), piece_counts(student.tokenizer, words))
            result["groups"].setdefault(g, {})[name] = {
                "tests": per_test, "all": merge(list(per_test.values())),
                "domain": grid.groups[g]["domain"]}
    write_json(out / "errors.json", result)
    write_page(blocks(result), out, name="errors")
    return result


def _pct(kept: int, n: int) -> str:
    return f"{100 * kept / n:.1f} %" if n else "n/a"


def blocks(result: dict) -> list:
    out = [Heading(1, "Where the student loses entities its teacher finds (issue 23)"),
           Para(f"Command: `{result['command']}`. Per group and "
                "variant, over all of the group's tests: of the gold entities the teacher finds exactly, "
                "how many the student finds exactly too (kept), by what the entity looks like; then how "
                "the student fails on the others. Spurious: entities the student predicts that neither "
                "gold nor the teacher has (the teacher's own false positives beside).")]
    for g, variants in result["groups"].items():
        for name, r in variants.items():
            a = r["all"]
            out.append(Heading(2, f"Group {g} ({r['domain']} domain), variant {name}"))
            rows = []
            for attr, vals in a["by"].items():
                for v, (n, kept) in sorted(vals.items()):
                    rows.append([attr, v, n, kept, _pct(kept, n)])
            out.append(Table(["attribute", "value", "teacher right", "student keeps", "kept"], rows))
            total = sum(a["failures"].values())
            frows = [[f, a["failures"].get(f, 0), _pct(a["failures"].get(f, 0), total)]
                     + [a["failures_by_type"].get(t, {}).get(f, 0) for t in sorted(a["failures_by_type"])]
                     for f in FAILURES]
            out.append(Table(["failure", "entities", "share"] + sorted(a["failures_by_type"]), frows))
            out.append(Para(f"Spurious entities: student {a['spurious'].get('student', 0)}, "
                            f"teacher {a['spurious'].get('teacher', 0)}."))
    return out


def main(argv=None) -> int:
    p = preamble.parser(__doc__, quiet=False)
    p.add_argument("--config", default="benchmarks/configs/sentences-full.yaml")
    p.add_argument("--run", default="runs/sentences-full", help="the benchmark's working directory")
    p.add_argument("--groups", nargs="*", help="which groups (default: all that are built)")
    p.add_argument("--variants", nargs="*", default=["baseline"], help="which variants (default: baseline)")
    p.add_argument("--out", default="benchmarks/results/sentences", help="where errors.json/errors.md go")
    args = p.parse_args(argv)
    command = preamble.start("sentence_errors", argv, quiet=True)
    run(args.config, Path(args.run), Path(args.out), args.groups, args.variants, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The peer a user would pick instead (issue 33, step 7): spaCy's CPU NER trained on the same
teacher-labeled transfer set as a distilled student, scored on the same tests.

    python -m benchmarks.peer [--run runs/demo-grid] [--cell demo-s13] [--out runs/peer] \
        [--results benchmarks/results/transfer-size] [--quick] [-q]
    python -m benchmarks.peer --config benchmarks/configs/sentences-fair.yaml --group in \
        --run runs/sentences-fair --cell preset      # the in-domain sentence group's student

The cell is one of a grid's (`benchmarks.demo_grid`'s by default; run it first): its transfer set gives spaCy its
training data -- every transfer sentence's words with the teacher's hard tags, and the labeled
budget's gold sentences -- and its final student is the one compared. spaCy trains a blank
``xx`` pipeline with only ``ner`` (``spacy init config --optimize efficiency``: hash
embeddings + a CNN tok2vec) to its own stopping point (``training.patience``), with the gold
selection slice as its dev set, exactly as the student selects on the same labeled data.
Both are scored with seqeval (IOB2 strict) on the grid's tests, word for word (spaCy gets the
words as they are, no tokenizer of its own). The held-out transfer sentences the student
selects on are left out of spaCy's training too.

Writes the ``peer`` list of ``summary.json`` in ``--results`` (``{"group", "test",
"spacy_silver_f1", "student_f1"}`` per language and test, plus the teacher's F1; ``group`` is
``<grid file stem>/<group>``, and the rows of other groups are kept) and ``peer.md``; the
other keys of that file are kept. spaCy is not a dependency of xdistil: ``pip install spacy``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from xdistil_export.atomic import write_json, write_text

from benchmarks import demo_grid, grid, preamble
from xdistil.provenance import cpu_name


def iob2(tags: list[str]) -> list[str]:
    """Tags as valid IOB2: an I-X that does not continue an X (a teacher's argmax can say so)
    begins one, as seqeval reads it."""
    out = []
    for t in tags:
        if t.startswith("I-") and (not out or out[-1] == "O" or out[-1][2:] != t[2:]):
            t = "B-" + t[2:]
        out.append(t)
    return out


def docbin(nlp, rows: list[tuple[list[str], list[str]]], path: Path) -> int:
    """Gold-standard Docs (words and IOB2 tags) as a spaCy DocBin at ``path``; the count."""
    from spacy.tokens import Doc, DocBin

    db = DocBin()
    for words, tags in rows:
        db.add(Doc(nlp.vocab, words=words, ents=iob2(tags)))
    db.to_disk(path)
    return len(rows)


def training_rows(transfer: Path, select_size: int) -> tuple[list, list]:
    """(train, dev) as (words, tags): transfer rows with the teacher's tags, labeled rows with
    gold, less the rows the student's selection holds out (`xdistil.stages.held_out`); the gold
    selection slice (split "val") is the dev set."""
    from xdistil.labeling import load_transfer, scan_transfer
    from xdistil.stages import held_out

    ds, manifest = load_transfer(transfer)
    labels = manifest["labels"]
    _, split_rows = scan_transfer(ds)
    held, variants = held_out(ds, split_rows, select_size)
    skip = set(held) | set(variants)
    train, dev = [], []
    for i, r in enumerate(ds.select_columns(["words", "split", "gold", "t0_tags"])):
        if r["split"] == "val":
            dev.append((r["words"], [labels[t] for t in r["gold"]]))
        elif r["split"] == "labeled":
            train.append((r["words"], [labels[t] for t in r["gold"]]))
        elif i not in skip:
            train.append((r["words"], [labels[t] for t in r["t0_tags"]]))
    return train, dev


def train_spacy(train: list, dev: list, out: Path, seed: int, max_steps: int | None) -> tuple[Path, float]:
    import spacy

    nlp = spacy.blank("xx")
    out.mkdir(parents=True, exist_ok=True)
    docbin(nlp, train, out / "train.spacy")
    docbin(nlp, dev, out / "dev.spacy")
    cfg = out / "config.cfg"
    if not cfg.is_file():
        subprocess.run([sys.executable, "-m", "spacy", "init", "config", str(cfg), "--lang", "xx", "--pipeline",
                        "ner", "--optimize", "efficiency", "--force"], check=True, capture_output=True)
    best, timing = out / "model" / "model-best", out / "train_s.json"
    if not (best / "meta.json").is_file() or not timing.is_file():  # trained and timed once, then reused
        args = ["--paths.train", str(out / "train.spacy"), "--paths.dev", str(out / "dev.spacy"),
                "--system.seed", str(seed)]
        if max_steps:
            args += ["--training.max_steps", str(max_steps), "--training.eval_frequency", str(max(1, max_steps // 2))]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "spacy", "train", str(cfg), "--output", str(out / "model"), *args],
                       check=True)
        write_json(timing, {"seconds": round(time.perf_counter() - t0, 1)})
    return best, json.loads(timing.read_text())["seconds"]


def spacy_scores(model: Path, tests: dict[str, list]) -> dict[str, dict]:
    import spacy
    from spacy.tokens import Doc

    from xdistil.evaluate import score

    nlp = spacy.load(model)
    out = {}
    for key, sents in tests.items():
        docs = nlp.pipe(Doc(nlp.vocab, words=s.words) for s in sents)
        pred = [[(t.ent_iob_ + "-" + t.ent_type_) if t.ent_iob_ in ("B", "I") else "O" for t in d] for d in docs]
        out[key] = score([s.tags for s in sents], pred)
    return out


LEGACY_GROUP = "demo_grid/control"  # the group of rows written before rows named their grid and group


def merge(summary: Path, key: str, rows: list[dict], protocol: dict) -> tuple[list[dict], dict]:
    """The ``peer`` rows and protocols of ``summary`` with those of grid group ``key`` replaced
    (rows of other groups are kept): several grids' peers share one results file."""
    old = json.loads(summary.read_text()) if summary.is_file() else {}
    protocols = old.get("peer_protocol") or {}
    if "cell" in protocols:  # one protocol, from before groups were named
        protocols = {LEGACY_GROUP: protocols}
    kept = [{"group": LEGACY_GROUP, **r} for r in old.get("peer", []) if r.get("group", LEGACY_GROUP) != key]
    return kept + rows, {**protocols, key: protocol}


def page(rows: list[dict], protocols: dict) -> str:
    """peer.md: one table per grid group (each with the machine it ran on), and where the student
    is not ahead."""
    lines = ["# The peer: spaCy trained on the same teacher-labeled transfer set", ""]
    for key, pr in protocols.items():
        mine = [r for r in rows if r["group"] == key]
        ahead = [r for r in mine if r["student_f1"] > r["spacy_silver_f1"]]
        m = pr.get("machine") or {}
        where = f" ({cpu_name(m)}, {m['threads']} threads)" if m else ""
        lines += [f"## {key}{where}", "", f"Command: `{pr['command']}`", "",
                  f"spaCy {pr['spacy']}, blank `xx`, `ner` only, `--optimize efficiency`, trained on "
                  f"{pr['train_sentences']:,} sentences (the transfer set with the teacher's tags, plus the gold "
                  f"budget) to its own stopping point in {pr['spacy_train_s']:.0f} s, dev = the "
                  f"{pr['dev_sentences']} gold selection sentences. The student is the grid cell `{pr['cell']}`'s "
                  "final one.", "",
                  "| test | teacher F1 | spaCy (silver) F1 | student F1 | student - spaCy |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['test']} | {r['teacher_f1']:.2f} | {r['spacy_silver_f1']:.2f} | {r['student_f1']:.2f} | "
                  f"{r['student_f1'] - r['spacy_silver_f1']:+.2f} |" for r in mine]
        lines += ["", f"The student is ahead on {len(ahead)} of {len(mine)} tests"
                  + ("." if len(ahead) == len(mine) else "; **not** on: "
                     + ", ".join(r["test"] for r in mine if r not in ahead) + "."), ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = preamble.parser(__doc__)
    p.add_argument("--config", type=Path, default=demo_grid.CONFIG,
                   help="the grid the cell belongs to (default: the demo grid; e.g. benchmarks/configs/sentences-fair.yaml)")
    p.add_argument("--group", help="the cell's group in that grid (default: its first)")
    p.add_argument("--run", type=Path, default=Path("runs/demo-grid"), help="the grid's run folder")
    p.add_argument("--cell", default="demo-s13", help="the grid cell whose transfer set and student are used")
    p.add_argument("--out", type=Path, default=Path("runs/peer"))
    p.add_argument("--results", type=Path, default=Path("benchmarks/results/transfer-size"))
    p.add_argument("--quick", action="store_true", help="a few spaCy steps (the test of this script)")
    args = p.parse_args(argv)
    try:
        import spacy  # noqa: F401
    except ImportError:
        raise SystemExit("benchmarks.peer needs spaCy: pip install spacy") from None
    command = preamble.start("peer", argv, args.quiet)
    from xdistil.provenance import machine, usable_cpus
    from xdistil.runner import outputs

    g = grid.Grid.load(args.config)
    group = args.group or next(iter(g.groups))
    if group not in g.groups:
        raise SystemExit(f"{args.config}: no group {group!r}; it has {', '.join(g.groups)}")
    cell = outputs(args.run / group / args.cell)
    if cell.student is None:
        raise SystemExit(f"{args.run / group / args.cell}: no student; run the grid's benchmark first")
    done = json.loads((args.run / "done.json").read_text())[group]
    seed = done["variants"][args.cell]["seed"]
    train, dev = training_rows(cell.transfer, g.config(group).distill.select_size)
    model, train_s = train_spacy(train, dev, args.out / group / args.cell, seed, 20 if args.quick else None)
    tests = g.tests(g.config(group), group, {"PER", "LOC", "ORG"})
    flat = {f"{lang}:{n}": t["sentences"] for lang, ts in tests.items() for n, t in ts.items()}
    if args.quick:
        flat = {k: v[:30] for k, v in flat.items()}
    spacy_f1 = spacy_scores(model, flat)
    student = done["variants"][args.cell]["scores"]
    key = f"{args.config.stem}/{group}"
    rows = [{"group": key, "test": k, "spacy_silver_f1": round(float(spacy_f1[k]["f1"]), 2),
             "student_f1": round(float(student[k]["f1"]), 2),
             "teacher_f1": round(float(done["teacher"][k]["f1"]), 2)} for k in flat]
    protocol = {"cell": args.cell, "train_sentences": len(train), "dev_sentences": len(dev), "spacy_train_s": train_s,
                "spacy": spacy.__version__, "machine": machine(usable_cpus()), "command": command}
    rows, protocols = merge(args.results / "summary.json", key, rows, protocol)
    demo_grid.update_summary(args.results / "summary.json", {"peer": rows, "peer_protocol": protocols})
    text = page(rows, protocols)
    write_text(args.results / "peer.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

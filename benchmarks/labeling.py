"""Labeling engines side by side: sentences/s and word-tag agreement with torch fp32 on the same sentences.

    python -m benchmarks.labeling --teacher runs/demo/teacher --transfer-config demo [--sentences N]
                                  [--rounds 3] [--results DIR]

The sentences are those `xdistil label` labels for the config (`iter_transfer` over its
transfer languages, labeled and val rows included: the demo's 11,700), the first N with
``--sentences``. Every engine labels them exactly as labeling does (`xdistil.labeling.label_chunk`:
chunks of transfer.chunk_size, batches of transfer.batch_size sorted by length, the hidden
states of transfer.layers): torch fp32, torch bf16 (autocast), ORT fp32 and ORT int8
(`xdistil.engines`; the graphs are exported into its cache first, outside the timing). The
engines take turns chunk by chunk (the order rotating), so a machine that slows down meanwhile
touches all of them alike; each first labels one batch to warm up; ``--rounds`` passes over all
the sentences, sentences/s is the median over them. The agreement is the share of words whose
hard tag equals torch fp32's (first pass), beside the hidden states' relative error and the
largest logit difference. ``auto`` applies its rule (`xdistil.engines.choose`, against torch in
the precision ``precision: auto`` resolves to here) to these figures.

Writes the ``labeling`` list (and ``labeling_protocol``) of
``benchmarks/results/transfer-size/summary.json`` (other keys kept) and ``labeling.md`` beside it.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import time
from functools import partial
from pathlib import Path

from xdistil_export.atomic import write_text

from benchmarks import preamble, timing
from xdistil.provenance import cpu_name
from xdistil.report import Heading, Para, Table, to_markdown

RESULTS = Path(__file__).resolve().parent / "results" / "transfer-size"
ENGINES = {"torch-fp32": ("torch", "fp32"), "torch-bf16": ("torch", "bf16"),
           "ort-fp32": ("ort", "fp32"), "ort-int8": ("ort-int8", "fp32")}
"""Row name -> (engine, precision of its forward pass)."""


def rows_of(cfg, n: int | None) -> list:
    """The first ``n`` transfer rows (all: None) of the config, as labeling reads them."""
    from xdistil.data.transfer import iter_transfer, transfer_languages

    rows: list = []
    for lang in transfer_languages(cfg):
        if n is not None and len(rows) >= n:
            break
        rows += itertools.islice(iter_transfer(cfg, lang), None if n is None else n - len(rows))
    return rows


def _chunks(rows: list, size: int) -> list[list]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def measure(tagger, cfg, rows: list, rounds: int) -> list[dict]:
    """One row per engine: median sentences/s over ``rounds`` passes, agreement with torch fp32."""
    import torch

    from xdistil import engines
    from xdistil.labeling import TimedModule, label_chunk

    tc = cfg.transfer
    sample = [r.words for r in rows[: engines.PROBE_SENTENCES]]
    modules = {"torch": tagger.module, **{e: engines.module(tagger, e, tc.layers, sample) for e in engines.ORT_ENGINES}}
    taggers = {name: dataclasses.replace(tagger, module=TimedModule(modules[e])) for name, (e, _) in ENGINES.items()}

    def run(name: str, chunk: list) -> dict:
        with torch.no_grad():
            return label_chunk([taggers[name]], chunk, cfg.data.labels, tc.layers, tc.batch_size, tc.hidden_dtype,
                               ENGINES[name][1])

    for name in ENGINES:  # warm-up: kernels chosen, memory allocated
        run(name, rows[: tc.batch_size])
        taggers[name].module.seconds = 0.0
    names = list(ENGINES)
    seconds = {name: [0.0] * rounds for name in names}
    compared = {name: {"same": 0, "words": 0, "diff": 0.0, "err": {}, "norm": {}} for name in names}
    for rnd in range(rounds):
        for i, chunk in enumerate(_chunks(rows, tc.chunk_size)):  # the engines in turn, from engine i
            got = timing.interleave({name: partial(timing.timed, run, name, chunk) for name in names}, 1, first=i)
            for name, [(sec, cols)] in got.items():
                seconds[name][rnd] += sec
                if rnd == 0:
                    _compare(compared[name], got["torch-fp32"][0][1], cols, tc.layers)
    forward = {name: taggers[name].module.seconds / rounds for name in names}
    out = []
    for name in names:
        c, sps = compared[name], len(rows) / statistics.median(seconds[name])
        out.append({"engine": name, "sentences_per_s": round(sps, 1),
                    "tag_agreement": c["same"] / max(c["words"], 1),
                    "forward_sentences_per_s": round(len(rows) / forward[name], 1) if forward[name] else None,
                    "round_s": [round(s, 2) for s in seconds[name]], "max_abs_logit_diff": c["diff"],
                    "hidden_rel_err": {f"h{layer}": (c["err"][layer] / c["norm"][layer]) ** 0.5 if c["norm"][layer] else 0.0
                                       for layer in tc.layers},
                    "sentences": len(rows), "words": c["words"]})
    base = out[0]["sentences_per_s"]
    for r in out:
        r["speedup"] = round(r["sentences_per_s"] / base, 3)
    return out


def _compare(acc: dict, ref: dict, got: dict, layers) -> None:
    """Add one chunk's word-level comparison of ``got`` with ``ref`` (label_chunk columns) to ``acc``."""
    import numpy as np

    for a, b in zip(ref["t0_tags"], got["t0_tags"], strict=True):
        acc["same"] += int(np.sum(np.asarray(a) == np.asarray(b)))
        acc["words"] += len(a)
    for a, b in zip(ref["t0_logits"], got["t0_logits"], strict=True):
        if len(a):
            acc["diff"] = max(acc["diff"], float(np.abs(a - b).max()))
    for layer in layers:
        x = np.concatenate(ref[f"t0_h{layer}"]).astype(np.float64)
        y = np.concatenate(got[f"t0_h{layer}"]).astype(np.float64)
        acc["err"][layer] = acc["err"].get(layer, 0.0) + float(np.sum((x - y) ** 2))
        acc["norm"][layer] = acc["norm"].get(layer, 0.0) + float(np.sum(x**2))


def auto_pick(rows: list[dict]) -> tuple[str, str]:
    """What ``transfer.engine: auto`` would take from these figures: (torch's precision here, row name)."""
    from xdistil import engines
    from xdistil.precision import resolve

    precision = resolve("auto", "cpu")
    by = {r["engine"]: r for r in rows}
    figures = {"torch": by[f"torch-{precision}"], "ort": by["ort-fp32"], "ort-int8": by["ort-int8"]}
    pick = engines.choose(figures)
    return precision, {"torch": f"torch-{precision}", "ort": "ort-fp32", "ort-int8": "ort-int8"}[pick]


def markdown(rows: list[dict], protocol: dict) -> str:
    m = protocol["machine"]
    cells = [[r["engine"], f"{r['sentences_per_s']:.1f}", f"{r['speedup']:.2f}", r["forward_sentences_per_s"],
              f"{100 * r['tag_agreement']:.2f} %", ", ".join(f"{k} {v:.1e}" for k, v in r["hidden_rel_err"].items()),
              f"{r['max_abs_logit_diff']:.2e}"] for r in rows]
    return to_markdown([
        Heading(1, f"Labeling engines on {cpu_name(m)} ({m['threads']} threads)"),
        Para(f"{protocol['date']}: {protocol['sentences']} transfer sentences ({rows[0]['words']} words) of "
             f"`{protocol['transfer_config']}` labeled by `{protocol['teacher']}` as `xdistil label` does (chunks of "
             f"{protocol['chunk_size']}, batches of {protocol['batch_size']}, hidden layers {protocol['layers']}), "
             f"each engine in turn chunk by chunk, {protocol['rounds']} round(s); sentences/s is the median."),
        Table(["engine", "sentences/s", "x torch fp32", "forward alone, sent/s", "tag agreement with torch fp32",
               "hidden rel. error", "max logit diff"], cells, set(range(1, 7))),
        Para(f"`transfer.engine: auto` here: torch runs in {protocol['auto']['precision']} (`precision: auto`), and "
             f"the rule (>= 99 % of the words' tags, >= 1.1x torch) picks **{protocol['auto']['pick']}**."),
        Para(f"Reproduce: `{protocol['command']}`")])


def run(teacher: Path, transfer_config: str, sentences: int | None, rounds: int, results: Path, command: str) -> dict:
    from xdistil.config import load_config
    from xdistil.provenance import machine
    from xdistil.taggers import load_tagger
    from xdistil.tagsets import for_teachers

    cfg = for_teachers(load_config(transfer_config), [teacher])
    tagger = load_tagger(teacher)
    rows = rows_of(cfg, sentences)
    if not rows:
        raise SystemExit(f"{transfer_config}: no transfer sentences")
    out = measure(tagger, cfg, rows, rounds)
    precision, pick = auto_pick(out)
    for r in out:
        r["auto_pick"] = r["engine"] == pick
    tc = cfg.transfer
    protocol = {"teacher": str(teacher), "transfer_config": transfer_config, "sentences": len(rows), "rounds": rounds,
                "chunk_size": tc.chunk_size, "batch_size": tc.batch_size, "layers": list(tc.layers),
                "auto": {"precision": precision, "pick": pick}, "machine": machine(), "command": command,
                "date": time.strftime("%Y-%m-%d")}
    timing.merge_json(results / "summary.json", {"labeling": out, "labeling_protocol": protocol})
    write_text(results / "labeling.md", markdown(out, protocol))
    return {"rows": out, "protocol": protocol}


def main(argv=None) -> int:
    p = preamble.parser(__doc__)
    p.add_argument("--teacher", type=Path, default=Path("runs/demo/teacher"))
    p.add_argument("--transfer-config", default="demo", help="a config file or preset whose transfer set is labeled")
    p.add_argument("--sentences", type=int, default=None, help="the first N transfer sentences (default: all)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    command = preamble.start("labeling", argv, args.quiet)
    done = run(args.teacher, args.transfer_config, args.sentences, args.rounds, args.results, command)
    print(markdown(done["rows"], done["protocol"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

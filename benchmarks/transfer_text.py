"""The text there is (issue 33, step 3): distinct transfer sentences per language without a cap.

    python -m benchmarks.transfer_text [--config languages41]

For every language of the config (its labeled languages and transfer-only ones), the transfer
set `xdistil label` would build with ``transfer.limit: null`` and every other labeled corpus
of the language's registry entry as ``transfer.extra_sources`` (UNER, news NER: their train
text, tags dropped), counted by where each sentence comes from: WikiANN train beyond the
labeled budget (``train_rest``), WikiANN's unlabeled token fragments, Tatoeba sentences, the
extra corpora. Duplicates and the labeled sentences are already left out, as labeling does.
Beside it, what the config's own ``transfer.limit`` keeps. Writes ``text.json`` and
``text.md`` to ``--out`` (default benchmarks/results/transfer-size).
"""

from __future__ import annotations

import collections
from pathlib import Path

from xdistil_export.atomic import write_json, write_text

from benchmarks import preamble

RESULTS = Path(__file__).resolve().parent / "results" / "transfer-size"
KINDS = ("train_rest", "unlabeled", "tatoeba", "extra")


def extra_corpora(lang: str, data_root: Path | None) -> list[str]:
    """The language's labeled corpora other than the one its labeled budget comes from that have a
    train file here."""
    from xdistil_languages import get_language

    language = get_language(lang)
    main = language.labeled_source(data_root)
    names = dict.fromkeys(s.name for s in language.sources if s.kind == "labeled" and s.split == "train")
    return [n for n in names if n != main and language.find("train", data_root=data_root, source=n) is not None]


def kind_of(row, main_train: Path | None) -> str:
    """Where a transfer row came from: its source is ``FILE:LINE`` (or a source name)."""
    where = Path(row.source.rsplit(":", 1)[0])
    if row.source == "train_rest" or (main_train is not None and where == main_train):
        return "train_rest"
    if where.name.startswith("unlabeled"):
        return "unlabeled"
    return "tatoeba" if "tatoeba" in where.parts else "extra"


def count(config: str, data_root: Path | None) -> list[dict]:
    from xdistil_languages import get_language

    from xdistil.config import RunConfig, apply_overrides, from_dict, load_yaml
    from xdistil.data.transfer import iter_transfer, transfer_languages

    raw = load_yaml(config)
    capped_cfg = from_dict(RunConfig, raw)
    rows = []
    for lang in transfer_languages(capped_cfg):
        extra = extra_corpora(lang, data_root) if lang in capped_cfg.data.languages else []
        cfg = from_dict(RunConfig, apply_overrides(raw, {"transfer": {"limit": None,
                                                                      "extra_sources": {lang: extra} if extra else {}}}))
        main = get_language(lang).find("train", data_root=data_root) if lang in cfg.data.languages else None
        kinds = collections.Counter(kind_of(r, main) for r in iter_transfer(cfg, lang) if r.split == "transfer")
        capped = sum(r.split == "transfer" for r in iter_transfer(capped_cfg, lang))
        rows.append({"language": lang, **{k: kinds.get(k, 0) for k in KINDS}, "total": sum(kinds.values()),
                     "extra_corpora": extra, "capped": capped})
        print(f"{lang}: {rows[-1]['total']:,} sentences ({capped:,} under the cap)", flush=True)
    return rows


def markdown(rows: list[dict], config: str, limit, command: str) -> str:
    lines = [f"# Transfer text per language (the {config} preset, no cap)", "", f"Command: `{command}`", "",
             f"Distinct transfer sentences `xdistil label` finds per language with `transfer.limit: null` and the "
             f"language's other labeled corpora as `transfer.extra_sources` (tags dropped); the preset keeps "
             f"{limit if limit is not None else 'all'} a language.", "",
             "| language | WikiANN train beyond the budget | WikiANN fragments | Tatoeba | extra corpora | total | "
             "under the preset's cap |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        extra = f"{r['extra']:,} ({', '.join(r['extra_corpora'])})" if r["extra_corpora"] else f"{r['extra']:,}"
        lines.append(f"| {r['language']} | {r['train_rest']:,} | {r['unlabeled']:,} | {r['tatoeba']:,} | {extra} | "
                     f"{r['total']:,} | {r['capped']:,} |")
    total, capped = sum(r["total"] for r in rows), sum(r["capped"] for r in rows)
    lines.append(f"| all {len(rows)} | | | | | {total:,} | {capped:,} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = preamble.parser(__doc__)
    p.add_argument("--config", default="languages41", help="preset or YAML file (default languages41)")
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    command = preamble.start("transfer_text", argv, args.quiet)
    from xdistil.config import load_config

    rows = count(args.config, args.data)
    limit = load_config(args.config).transfer.limit
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "text.json", {"config": args.config, "limit": limit, "rows": rows, "command": command})
    write_text(args.out / "text.md", markdown(rows, args.config, limit, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

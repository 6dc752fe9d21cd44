"""Entity-level evaluation with seqeval (IOB2, strict), overall and per entity type; dev
scoring of saved models per language (`evaluate_dev`, `DevScorer`)."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

from seqeval.metrics import classification_report
from seqeval.scheme import IOB2, Entities

from xdistil.config import RunConfig, save_json
from xdistil.data.sources import dev_sentences
from xdistil.taggers import load_tagger, predict_tags

_IOB2 = re.compile(r"^(?:O|[BI]-\S+)$")


def score(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], counts: bool = False) -> dict:
    """F1 / precision / recall (in %) overall (micro) and per entity type; with ``counts``, also
    each sentence's entity counts (`sentence_counts`).

    Raises if a sentence's prediction has a different length than its gold tags:
    a dropped word would otherwise go unnoticed.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predictions")
    # seqeval would say only "Invalid token is found: E-LOC"; say which side holds it
    for side, seqs in (("gold", gold), ("predicted", pred)):
        if bad := next((t for seq in seqs for t in seq if not _IOB2.match(t)), None):
            raise ValueError(f"{side} tag {bad!r} is not IOB2 (O, B-TYPE, I-TYPE): entity scores need IOB2 tags")
    with warnings.catch_warnings():  # no entity at all: seqeval's macro average is a mean of nothing (unused)
        warnings.simplefilter("ignore", RuntimeWarning)
        rep = classification_report(list(map(list, gold)), list(map(list, pred)), mode="strict", scheme=IOB2,
                                    output_dict=True, zero_division=0)
    micro = rep.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0})
    per_type = {
        k: {"f1": 100 * v["f1-score"], "precision": 100 * v["precision"], "recall": 100 * v["recall"],
            "support": int(v["support"])}
        for k, v in rep.items()
        if k not in ("micro avg", "macro avg", "weighted avg")
    }
    return {
        "f1": 100 * micro["f1-score"],
        "precision": 100 * micro["precision"],
        "recall": 100 * micro["recall"],
        "support": int(micro["support"]),
        "sentences": len(gold),
        "per_type": per_type,
        **({"counts": sentence_counts(gold, pred)} if counts else {}),
    }


def sentence_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> list[list[int]]:
    """Per sentence [true positives, false positives, false negatives] of entities, matched
    as seqeval's strict IOB2 mode matches them (type and both boundaries): their sums give
    the micro F1 of `score`, and resampling sentences gives its bootstrap intervals."""
    g = Entities([list(x) for x in gold], IOB2).entities
    p = Entities([list(x) for x in pred], IOB2).entities
    out = []
    for gs, ps in zip(g, p, strict=True):
        gset, pset = {e.to_tuple()[1:] for e in gs}, {e.to_tuple()[1:] for e in ps}
        tp = len(gset & pset)
        out.append([tp, len(pset) - tp, len(gset) - tp])
    return out


def selection_average(scores: dict[str, dict]) -> float:
    """The average F1 over the languages of a selection slice that hold a gold entity. A slice
    without entities scores 0 F1 whatever the model does (e.g. UNER sv: its train file's first
    1,000 sentences hold no entity from sentence 900 on), so it would only pull the average
    down; none left: 0.0."""
    kept = [m["f1"] for m in scores.values() if m["support"] > 0]
    return sum(kept) / len(kept) if kept else 0.0


def evaluate_tagger(tagger, sentences, batch_size: int = 32, progress: bool = False, counts: bool = False) -> dict:
    """Score a loaded `Tagger` (or export predictor) on labeled sentences (`score`)."""
    if hasattr(tagger, "predict_words"):  # the ONNX runtime predictor
        pred = tagger.predict_words([s.words for s in sentences], batch_size=batch_size)
    else:

        pred = predict_tags(tagger, sentences, batch_size, progress)
    return score([s.tags for s in sentences], pred, counts)


def format_scores(name: str, m: dict) -> str:
    lines = [f"{name}: F1 {m['f1']:.2f}  P {m['precision']:.2f}  R {m['recall']:.2f}  "
             f"({m['support']} entities, {m['sentences']} sentences)"]
    for t, v in sorted(m["per_type"].items()):
        lines.append(f"  {t:<6} F1 {v['f1']:.2f}  P {v['precision']:.2f}  R {v['recall']:.2f}  n={v['support']}")
    return "\n".join(lines)


def dev_sets(cfg: RunConfig) -> dict[str, list]:
    """Each language's dev sentences, read once for every model a run evaluates."""
    return {lang: dev_sentences(lang, cfg.data) for lang in cfg.data.languages}


def evaluate_dev(model_dir: Path, cfg: RunConfig, progress: bool = True, dev: dict | None = None) -> dict:
    """Dev F1 per language of any saved model, with its parameter count."""
    dev = dev if dev is not None else dev_sets(cfg)
    tagger = load_tagger(model_dir)
    res = {}
    for lang in cfg.data.languages:
        res[lang] = evaluate_tagger(tagger, dev[lang], cfg.teacher.eval_batch_size, progress)
    return {"path": str(model_dir), "params": tagger.param_count(), "dev": res,
            "f1_avg": sum(r["f1"] for r in res.values()) / len(res)}


class DevScorer:
    """Dev F1 of saved models (`evaluate_dev`) over one config's dev sets, read once and only
    when a model is first scored. With ``cache`` (a JSON file) the scores persist by name,
    so a rerun of a benchmark does not evaluate again."""

    def __init__(self, cfg: RunConfig, progress: bool = True, cache: Path | None = None):
        self.cfg, self.progress, self.cache_path = cfg, progress, cache
        self.scores: dict = json.loads(cache.read_text()) if cache is not None and cache.exists() else {}
        self._dev: dict | None = None

    def __call__(self, name: str, path: Path) -> dict:
        if name not in self.scores:
            if self._dev is None:
                self._dev = dev_sets(self.cfg)
            self.scores[name] = evaluate_dev(path, self.cfg, self.progress, self._dev)
            if self.cache_path is not None:
                save_json(self.scores, self.cache_path)
        return self.scores[name]

"""Entity-level evaluation with seqeval (IOB2, strict), overall and per entity type."""

from __future__ import annotations

from collections.abc import Sequence

from seqeval.metrics import classification_report
from seqeval.scheme import IOB2


def score(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """F1 / precision / recall (in %) overall (micro) and per entity type.

    Raises if a sentence's prediction has a different length than its gold tags:
    a dropped word would otherwise go unnoticed.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predictions")
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
    }


def selection_average(scores: dict[str, dict]) -> float:
    """The average F1 over the languages of a selection slice that hold a gold entity. A slice
    without entities scores 0 F1 whatever the model does (e.g. UNER sv: its train file's first
    1,000 sentences hold no entity from sentence 900 on), so it would only pull the average
    down; none left: 0.0."""
    kept = [m["f1"] for m in scores.values() if m["support"] > 0]
    return sum(kept) / len(kept) if kept else 0.0


def evaluate_tagger(tagger, sentences, batch_size: int = 32, progress: bool = False) -> dict:
    """Score a loaded `Tagger` (or export predictor) on labeled sentences."""
    if hasattr(tagger, "predict_words"):  # the ONNX runtime predictor
        pred = tagger.predict_words([s.words for s in sentences], batch_size=batch_size)
    else:
        from xdistil.taggers import predict_tags

        pred = predict_tags(tagger, sentences, batch_size, progress)
    return score([s.tags for s in sentences], pred)


def format_scores(name: str, m: dict) -> str:
    lines = [f"{name}: F1 {m['f1']:.2f}  P {m['precision']:.2f}  R {m['recall']:.2f}  "
             f"({m['support']} entities, {m['sentences']} sentences)"]
    for t, v in sorted(m["per_type"].items()):
        lines.append(f"  {t:<6} F1 {v['f1']:.2f}  P {v['precision']:.2f}  R {v['recall']:.2f}  n={v['support']}")
    return "\n".join(lines)

"""The label set of a run, and a teacher's head mapped onto it by label name.

Where the labels come from, in order:

1. an explicit ``data.labels`` (``--data.labels``);
2. the teacher's own ``id2label`` when it has a token-classification head;
3. the tags of the labeled files (train budget + dev), as O, B-X, I-X per type.

With a teacher head, entity types in the data that the teacher lacks get *new head rows*
(logged; they start untrained), and rows the teacher has keep their weights whatever
their position: a teacher that said B-ORG says B-ORG after `remap_head`, even when the
run's order differs. The set is resolved once, when the teacher is trained
(`resolve_run`), and recorded with it (its config's ``id2label`` and
``xdistil_teacher.json``); labeling, distillation, students and exports read it from
there (`for_teachers`).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from xdistil import DEFAULT_LABELS
from xdistil.data.sources import validate_labeled
from xdistil.models import head_scheme, load_model_config, resolve_model_path

log = logging.getLogger(__name__)

_LABEL = re.compile(r"^(?:O|[BI]-\S+)$")
_PREFIX = re.compile(r"^[A-Z]-")  # B-, I- (and E-, S-, L-, U- of BIOES / BILOU)
_UNNAMED = re.compile(r"^LABEL_\d+$")  # what transformers puts in a config without labels
# WikiANN's types first, in xdistil's historical order, so PER/LOC/ORG data keeps its old ids
_KNOWN_ORDER = [lab[2:] for lab in DEFAULT_LABELS if lab.startswith("B-")]


class LabelError(ValueError):
    """A label set that cannot be used (not IOB2, or at odds with a teacher)."""


def check_labels(labels: Sequence[str], where: str = "data.labels") -> list[str]:
    """``labels`` as a list after checking it is an IOB2 label set (O, B-X, I-X, no repeats)."""
    labels = list(labels)
    bad = [lab for lab in labels if not isinstance(lab, str) or not _LABEL.match(lab)]
    if bad:
        raise LabelError(f"{where}: {bad[:3]} not IOB2 labels (O, B-TYPE, I-TYPE)")
    if "O" not in labels:
        raise LabelError(f"{where}: the label list must contain 'O'")
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise LabelError(f"{where}: repeated labels {dup}")
    return labels


def types_of(labels: Iterable[str]) -> list[str]:
    """Entity types in order of first appearance (``B-PER, I-PER, B-ORG`` -> PER, ORG; a label
    without a prefix is its own type: ``PER`` -> PER, never the letters after two of them)."""
    out: list[str] = []
    for lab in labels:
        typ = lab[2:] if _PREFIX.match(lab) else lab
        if lab != "O" and typ not in out:
            out.append(typ)
    return out


def labels_for_types(types: Iterable[str]) -> list[str]:
    """O, then B-X and I-X per type; PER, LOC, ORG first (xdistil's historical order), then the rest sorted."""
    types = set(types)
    ordered = [t for t in _KNOWN_ORDER if t in types] + sorted(types - set(_KNOWN_ORDER))
    return ["O"] + [f"{p}-{t}" for t in ordered for p in "BI"]


def head_labels(config) -> list[str] | None:
    """The named labels of a Hugging Face token-classification head, or None.

    None for a bare encoder (``BertModel``, ``XLMRobertaModel``) and for a head whose labels
    are transformers' placeholders (LABEL_0, LABEL_1, ...): those rows cannot be named.
    """
    archs = getattr(config, "architectures", None) or []
    if not any(a.endswith("ForTokenClassification") for a in archs):
        return None
    id2label = getattr(config, "id2label", None) or {}
    labels = [id2label.get(i, id2label.get(str(i))) for i in range(len(id2label))]
    if not labels or any(lab is None or _UNNAMED.match(str(lab)) for lab in labels):
        return None
    return [str(lab) for lab in labels]


@dataclass(frozen=True)
class Resolution:
    labels: list[str]
    source: str  # "config" | "teacher" | "data" | "default"
    added: list[str]  # labels the teacher's head lacked (new rows)


def resolve(explicit: Sequence[str] | None, teacher: Sequence[str] | None,
            data_tags: Iterable[str] = (), teacher_name: str = "the teacher") -> Resolution:
    """The run's label list from an explicit list, the teacher's head labels and the data's tags.

    Explicit labels win (the data was checked against them when read). Otherwise the teacher's
    labels, in its own order, plus B-/I- rows for data types it lacks (logged). Otherwise the
    data's types; with nothing at all, WikiANN's PER/LOC/ORG.
    """
    data_types = types_of(data_tags)
    if explicit is not None:
        labels = check_labels(explicit)
        added = [lab for lab in labels if teacher is not None and lab not in teacher]
        return Resolution(labels, "config", added)
    if teacher is not None:
        try:
            base = check_labels(teacher, f"{teacher_name}'s id2label")
        except LabelError as e:  # e.g. a BIOES head: its B-/I- rows can still be mapped by name
            raise LabelError(f"{e}; give data.labels (IOB2) to map its B-/I- rows by name") from None
        missing = [t for t in data_types if t not in types_of(base)]
        added = [f"{p}-{t}" for t in missing for p in "BI"]
        if added:
            log.warning("%s has no head rows for %s (in the labeled data): adding new, untrained rows for %s",
                        teacher_name, ", ".join(missing), ", ".join(added))
        return Resolution(base + added, "teacher", added)
    if data_types:
        return Resolution(labels_for_types(data_types), "data", [])
    log.warning("no label list, teacher head or local labeled file to read labels from: using %s",
                ", ".join(DEFAULT_LABELS))
    return Resolution(list(DEFAULT_LABELS), "default", [])


def remap_head(model, labels: Sequence[str]) -> dict[str, list[str]]:
    """Rebuild ``model.classifier`` so that row i predicts ``labels[i]``, copying each row the
    teacher already has *by name*; labels it lacks get freshly initialised rows, and rows
    for labels not in ``labels`` are dropped. Updates ``config.id2label/label2id``.

    Returns {"kept": [...], "added": [...], "dropped": [...]}.
    """
    import torch
    from torch import nn

    old = head_labels(model.config)
    head = getattr(model, "classifier", None)
    if old is None or not isinstance(head, nn.Linear):
        raise LabelError(f"{type(model).__name__}: no named linear token-classification head to map by label name")
    labels = list(labels)
    new = nn.Linear(head.in_features, len(labels), bias=head.bias is not None).to(head.weight)
    std = float(getattr(model.config, "initializer_range", 0.02) or 0.02)
    with torch.no_grad():
        new.weight.normal_(0.0, std)  # as Hugging Face initialises a new head
        if new.bias is not None:
            new.bias.zero_()
        for i, lab in enumerate(labels):
            if lab in old:
                j = old.index(lab)
                new.weight[i] = head.weight[j]
                if new.bias is not None:
                    new.bias[i] = head.bias[j]
    model.classifier = new
    model.num_labels = len(labels)
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {lab: i for i, lab in enumerate(labels)}
    return {"kept": [lab for lab in labels if lab in old], "added": [lab for lab in labels if lab not in old],
            "dropped": [lab for lab in old if lab not in labels]}


def _head_of(name: str) -> list[str] | None:

    return head_labels(load_model_config(resolve_model_path(name)))


def resolve_run(cfg):
    """``cfg`` (a RunConfig) with ``data.labels`` resolved for teacher training.

    Validates every local labeled file first (`xdistil.data.sources.validate_labeled`), so a
    bad dev file fails before the teacher trains, and reads the teachers' configs only (no
    weights). Co-finetuned teachers share one head: the first teacher with a named head sets
    the order, the others' and the data's extra types are added.
    """

    dc = cfg.data
    if dc.labels is not None:
        check_labels(dc.labels)
    tags = validate_labeled(dc)
    names = cfg.teacher.model_names()
    heads = [(n, _head_of(n)) for n in names]
    named = [(n, h) for n, h in heads if h is not None]
    first_name, first = named[0] if named else (names[0], None)
    extra = [f"B-{t}" for _, h in named[1:] for t in types_of(h)]
    res = resolve(dc.labels, first, [*extra, *tags], teacher_name=first_name)
    log.info("labels (%s): %s", {"config": "data.labels", "teacher": f"{first_name}'s head",
                                 "data": "the labeled files", "default": "default"}[res.source],
             " ".join(res.labels))
    return dataclasses.replace(cfg, data=dataclasses.replace(dc, labels=res.labels))


def teacher_labels(path: str | Path) -> list[str]:
    """The IOB2 label list a fine-tuned teacher folder predicts: its head's id2label, a BIOES/BILOU
    or prefix-less (PER, ORG) head converted as `xdistil.taggers.load_tagger` converts its logits."""

    labels = head_labels(load_model_config(str(path)))
    if labels is None:
        raise LabelError(f"{path}: not a token classifier with named labels (train it with 'xdistil teacher train')")
    return list(head_scheme(labels, f"teacher {path}").labels)


def for_teachers(cfg, teacher_dirs: Sequence[str | Path], labels_of: Mapping[str, Sequence[str]] | None = None):
    """``cfg`` with ``data.labels`` set to what the teachers predict, for labeling and distillation.

    Unset labels are read from the teachers. Explicit labels must name the same set (any order:
    the teachers' order is used). Several teachers must predict the same list in the same order
    (co-finetuned ones do).
    """
    dirs = [str(d) for d in teacher_dirs]
    if not dirs:
        return cfg
    sets = {d: list(labels_of[d]) if labels_of and d in labels_of else teacher_labels(d) for d in dirs}
    first = sets[dirs[0]]
    for d in dirs[1:]:
        if sets[d] != first:
            raise LabelError(f"teachers {dirs[0]} and {d} predict different label lists ({' '.join(first)} vs "
                             f"{' '.join(sets[d])}): co-finetune them, or train both with the same data.labels")
    explicit = cfg.data.labels
    if explicit is not None and set(explicit) != set(first):
        raise LabelError(f"data.labels is {' '.join(explicit)} but teacher {dirs[0]} predicts {' '.join(first)}: "
                         "leave data.labels unset to use the teacher's")
    if explicit == first:
        return cfg
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, labels=list(first)))
